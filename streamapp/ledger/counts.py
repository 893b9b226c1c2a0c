"""The ledger's counters: how labels ended and how scored events left without one."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EventCounts", "LabelCounts"]


@dataclass(slots=True)
class LabelCounts:
    """Cumulative outcomes of the labels joined against the ledger.

    Every label ends in exactly one of these; a label still parked (waiting for its event)
    is in none yet, so ``joined + late + orphan + duplicate + parked`` is every label seen.
    """

    joined: int = 0
    late: int = 0
    orphan: int = 0
    duplicate: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class EventCounts:
    """Cumulative scored events that left the ledger without a label."""

    expired: int = 0
    evicted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
