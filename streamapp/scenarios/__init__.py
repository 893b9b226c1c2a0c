"""Reproducible source/target streams for the demo, the tests and the benchmarks.

Each scenario has a *source* dataset (to train the transfer model on) and a *target*
stream (what the deployed model sees, shifted away from the source). :func:`stream`
turns a target stream into time-ordered feature events and delayed feedback.
``friedman-shift`` has a numeric target (``task == "regression"``): its feedback carries
numbers, not class names.
"""

from collections.abc import Callable

from streamapp.scenarios.base import Record, Scenario, scenario_task, stream
from streamapp.scenarios.digits import DigitsShift
from streamapp.scenarios.friedman import FriedmanScenario
from streamapp.scenarios.hyperplane import HyperplaneDrift

__all__ = [
    "SCENARIOS",
    "DigitsShift",
    "FriedmanScenario",
    "HyperplaneDrift",
    "Record",
    "Scenario",
    "get_scenario",
    "scenario_task",
    "stream",
]

SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "digits-shift": DigitsShift,
    "hyperplane": HyperplaneDrift,
    "friedman-shift": FriedmanScenario,
}


def get_scenario(name: str, seed: int = 0) -> Scenario:
    """The scenario called ``name`` (``digits-shift``, ``hyperplane`` or ``friedman-shift``)."""
    try:
        return SCENARIOS[name](seed=seed)
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose from {sorted(SCENARIOS)}") from None
