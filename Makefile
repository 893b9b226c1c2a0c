# Two commands from a clean clone: `make run` (the demo on an embedded broker), `make test`
# (ruff, mypy, the docs build, pytest).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint docs bench bench-peers clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/streamapp demo $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check streamapp tests
	$(BIN)/ruff format --check streamapp tests
	$(BIN)/mypy
	@$(MAKE) --no-print-directory docs
	@# the broker of the integration tests: Apache Kafka (jars resolved once), or one line
	@# saying why noida-db stands in; under CI a missing Java or Maven fails here
	$(BIN)/python -m streamapp.kafka.apache check
	@# pytest exits 5 when nothing was collected (e.g. a -k filter); not a failure
	$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo 'no tests collected'; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check streamapp tests
	$(BIN)/ruff format --check streamapp tests
	$(BIN)/mypy

# The docs site (mkdocs.yml, docs/): the generated pages must be current, and the build strict.
docs: $(STAMP)
	$(BIN)/python -m streamapp.docs_gen --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -d .streamapp/site

bench: $(STAMP)
	$(BIN)/streamapp bench $(ARGS)

# The Quix Streams peer of `streamapp bench throughput` (streamapp/bench/quix_peer.py): its pins
# conflict with ours (quixstreams wants confluent-kafka<2.13), so it gets a virtualenv of its own;
# torch==2.13.0 resolves like the main venv's (pip's find-links: the same local CPU build).
PEERS_VENV ?= .peers-venv
bench-peers: $(PEERS_VENV)/.installed

$(PEERS_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q torch==2.13.0 quixstreams==3.28.1 numpy
	touch $@

clean:
	rm -rf $(VENV) $(PEERS_VENV) .pytest_cache .ruff_cache .streamapp
