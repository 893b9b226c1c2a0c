# The streamapp worker image (CPU). Used by docker-compose.yml for the worker, the model
# trainer and the scenario producer.
FROM python:3.11-slim

# torch from the CPU wheel index: the default PyPI wheel for Linux bundles CUDA (several GB).
# constraints.txt pins torch==X; the CPU index's X+cpu satisfies the pin and, carrying a local
# version label, sorts above PyPI's X, so pip takes the CPU build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# the extras the compose stack uses: --runtime faust and the ONNX backbone variant
ARG EXTRAS=faust,onnx

WORKDIR /app

# 1. dependencies only: this layer is rebuilt when pyproject.toml or constraints.txt change,
#    not on every code change (torch alone is hundreds of MB)
COPY pyproject.toml constraints.txt ./
# the requirements of [project] and of each extra in EXTRAS, read from pyproject.toml
RUN python -c 'import os, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e for e in os.environ["EXTRAS"].split(",") if e]; \
print("\n".join(p["dependencies"] + [r for e in extras for r in p["optional-dependencies"][e]]))' \
    > /tmp/requirements.txt
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" \
        -c constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# 2. the code, installed without touching the dependencies above
COPY README.md ./
COPY schemas ./schemas
COPY streamapp ./streamapp
RUN pip install --no-cache-dir --no-deps . \
 && useradd --create-home streamapp && mkdir /models && chown streamapp /models
USER streamapp
ENTRYPOINT ["streamapp"]
CMD ["run"]
