"""model.torch_threads=0 (the default) picks the intra-op threads by what the backbone costs."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from streamapp.assembly import build_pipeline, torch_threads
from streamapp.model.bundle import load_bundle
from streamapp.settings import Settings


def _mlp(*widths: int) -> torch.nn.Module:
    layers = [torch.nn.Linear(a, b) for a, b in itertools.pairwise(widths)]
    return torch.nn.Sequential(*layers)


def test_the_default_is_auto() -> None:
    assert Settings().model.torch_threads == 0


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_a_small_backbone_gets_one_thread_on_any_machine(cores: int) -> None:
    assert torch_threads(0, _mlp(64, 64, 32), cores=cores) == 1


def test_a_heavy_backbone_gets_all_cores_but_one() -> None:
    heavy = _mlp(64, 4096, 4096, 256)  # the 64->4096->4096->256
    assert torch_threads(0, heavy, cores=16) == 15
    assert torch_threads(0, heavy, cores=2) == 1  # the broker client keeps its core


def test_threads_grow_with_the_backbone_up_to_the_cores() -> None:
    widths = [256, 512, 1024, 2048]
    chosen = [torch_threads(0, _mlp(64, w, w), cores=64) for w in widths]
    assert chosen == sorted(chosen) and chosen[0] < chosen[-1] <= 63


def test_an_explicit_setting_wins() -> None:
    assert torch_threads(3, _mlp(64, 64), cores=16) == 3
    assert torch_threads(1, _mlp(64, 4096, 4096), cores=16) == 1


def test_the_pipeline_applies_the_choice(digits_bundle: Path) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        build_pipeline(Settings(model={"bundle": digits_bundle}), load_bundle(digits_bundle))
        assert torch.get_num_threads() == 1  # the demo MLP: one thread
        build_pipeline(
            Settings(model={"bundle": digits_bundle, "torch_threads": 2}),
            load_bundle(digits_bundle),
        )
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
