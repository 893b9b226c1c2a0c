# The streamapp worker image (CPU). Used by docker-compose.yml for the worker, the model
# trainer and the scenario producer.
FROM python:3.11-slim

# torch from the CPU wheel index: the default PyPI wheel for Linux bundles CUDA (several GB)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY schemas ./schemas
COPY streamapp ./streamapp
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" -c constraints.txt . \
 && useradd --create-home streamapp && mkdir /models && chown streamapp /models
USER streamapp
ENTRYPOINT ["streamapp"]
CMD ["run"]
