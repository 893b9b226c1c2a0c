"""Changes to the served model at runtime, without a restart.

Who owns what:

- :mod:`streamapp.serving.hotswap` follows the ``model-control`` topic, loads a promoted (or
  rolled-back) bundle in the background and hands it to the worker, which swaps it in between
  two batches; it also publishes control events (``streamapp models promote``, auto-promotion).
- :mod:`streamapp.serving.challenger` runs a challenger in shadow beside the champion and
  promotes it through the registry once it wins (the comparison's statistics are
  :mod:`streamapp.drift.challenger`).
- The registry's storage (versions, aliases, verified copies) stays in the model store,
  :mod:`streamapp.model.registry`, which the CLI shares: the watcher loads versions from it,
  the challenger moves an alias in it.
- The learner's head updates (a newer head, not a newer bundle) are
  :mod:`streamapp.roles.head_updates`.
"""

from __future__ import annotations

import logging

from streamapp.serving.challenger import Shadow
from streamapp.serving.hotswap import ControlEvent, ModelWatcher, publish_control_event

__all__ = ["ControlEvent", "ModelWatcher", "Shadow", "publish_control_event"]

logger = logging.getLogger(__name__)
