"""Benchmarks: the worker against simpler loops, latency, learning, variants, memory."""

from streamapp.bench.suite import DEFAULT_SUITES, SUITES, render_markdown, run_bench

__all__ = ["DEFAULT_SUITES", "SUITES", "render_markdown", "run_bench"]
