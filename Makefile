# Two commands from a clean clone: `make run` (the demo on an embedded broker), `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/streamapp demo $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check streamapp tests
	@# pytest exits 5 when nothing was collected (e.g. a -k filter); not a failure
	$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo 'no tests collected'; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check streamapp tests
	$(BIN)/ruff format --check streamapp tests

bench: $(STAMP)
	$(BIN)/streamapp bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .streamapp
