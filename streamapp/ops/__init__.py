"""Operating a worker: Prometheus metrics, health endpoints, structured logs."""
