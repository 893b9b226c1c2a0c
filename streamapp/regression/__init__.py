"""Numeric targets (issue 34): what a regression bundle is served with.

:mod:`~streamapp.regression.pipeline` (the classifiers' pipeline with values instead of
classes), its head (:mod:`~streamapp.regression.head`, with the standardized inputs beside the
embedding: :mod:`~streamapp.regression.inputs`; fine-tuning: :mod:`~streamapp.regression.finetune`),
its guard (:mod:`~streamapp.regression.guard`: Wilcoxon on paired absolute errors), its drift
monitor (:mod:`~streamapp.regression.monitor`: MAE, RMSE, R², residual and prediction drift),
MAE / RMSE / R² over windows (:mod:`~streamapp.regression.metrics`) and the ``friedman-shift``
data (:mod:`~streamapp.regression.scenario`). The composition root builds them from a bundle
whose manifest says ``task: regression``.
"""

__all__: list[str] = []
