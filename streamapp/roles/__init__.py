"""The scale-out roles' channel: the learner and the head updates it publishes.

:mod:`streamapp.roles.learner` is the learner role (``role=learner``): it learns from the
scorers' training examples and publishes head snapshots. :mod:`streamapp.roles.head_updates`
owns those snapshots on the compacted ``model-updates`` topic: their format, the newest one
(a restarted learner's starting point) and the follower every scorer polls. The scorer role
itself is the worker (:mod:`streamapp.worker`), which follows the head between batches.
"""

from __future__ import annotations

import logging

from streamapp.roles.head_updates import HeadFollower, HeadSnapshot, read_latest_head
from streamapp.roles.learner import Learner

__all__ = ["HeadFollower", "HeadSnapshot", "Learner", "read_latest_head"]

logger = logging.getLogger(__name__)
