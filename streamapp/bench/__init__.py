"""Benchmarks: the worker against simpler loops, latency, learning, where the time goes,
variants, memory, delivery, scale-out."""

from streamapp.bench.suite import DEFAULT_SUITES, SUITES, render_markdown, run_bench

__all__ = ["DEFAULT_SUITES", "SUITES", "render_markdown", "run_bench"]
