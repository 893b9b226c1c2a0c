"""Every bundle error reaches the operator as one line on stderr and exit status 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_bundle import BREAKERS

# (command, breaker): the in-process tests in test_bundle.py cover every kind; these check
# what the operator sees, once per failure mode (each run starts a Python with torch)
CASES = [
    ("verify", "object_head"),  # was an uncaught traceback, exit 1
    ("verify", "pickled_backbone"),  # was refused, but in 3-5 lines
    ("verify", "protocol4_pickle_backbone"),  # was refused after two lines of torch's warning
    ("verify", "code_pickle_backbone"),  # was refused without its reason (torch 2.13's wording)
    ("verify", "nan_head"),  # was accepted
    ("run", "object_head"),
    ("run", "nan_backbone"),
]


def streamapp(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMAPP_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        [sys.executable, "-m", "streamapp", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("command", "kind"), CASES)
def test_a_bad_bundle_is_one_line_and_exit_2(
    digits_bundle: Path, tmp_path: Path, command: str, kind: str
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle, bundle)
    breaker, expected = BREAKERS[kind]
    breaker(bundle)
    if command == "verify":
        result = streamapp("models", "verify", str(bundle))
    else:  # the bundle is loaded before any broker is contacted
        result = streamapp("run", "--bundle", str(bundle), "-b", "127.0.0.1:9")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert result.stdout == ""
