"""Numeric targets (issue 34, part 2): the pieces a regression bundle will be served with.

The online head (:mod:`~streamapp.regression.head`), MAE / RMSE / R² and the guard's paired
test on absolute errors (:mod:`~streamapp.regression.metrics`), and the ``friedman-shift``
scenario (:mod:`~streamapp.regression.scenario`). Not yet wired into bundles, the codec or the
worker: :mod:`streamapp.bench.regression` runs them prequentially, with conformal intervals.
"""

__all__: list[str] = []
