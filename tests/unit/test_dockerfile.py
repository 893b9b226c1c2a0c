"""The Dockerfile cannot be built here (no Docker engine); check its layers and inputs."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", "", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def position(predicate: Callable[[str, str], bool]) -> int:
    matches = [i for i, step in enumerate(instructions()) if predicate(*step)]
    assert len(matches) == 1, matches
    return matches[0]


def args() -> dict[str, str]:
    return dict(rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG")


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    dependency_files = ["pyproject.toml", "constraints.txt"]
    copy_deps = position(lambda k, r: k == "COPY" and r.split()[:-1] == dependency_files)
    install_deps = position(lambda k, r: k == "RUN" and "-r /tmp/requirements.txt" in r)
    copy_code = position(lambda k, r: k == "COPY" and r.startswith("streamapp "))
    install_code = position(lambda k, r: k == "RUN" and "pip install" in r and "--no-deps ." in r)
    assert copy_deps < install_deps < copy_code < install_code
    first_code_copy = min(
        i
        for i, (k, r) in enumerate(instructions())
        if k == "COPY" and not r.startswith("pyproject.toml")
    )
    assert first_code_copy > install_deps  # nothing but the dependency files before the install


def test_torch_comes_from_the_cpu_index_under_the_constraints_pin() -> None:
    [install] = [r for k, r in instructions() if k == "RUN" and "-r /tmp/requirements.txt" in r]
    words = shlex.split(install)
    assert words[words.index("--extra-index-url") + 1] == "${TORCH_INDEX_URL}"
    assert words[words.index("-c") + 1] == "constraints.txt"
    assert args()["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert re.search(r"^torch==\S+$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)


def test_the_requirements_are_the_projects_and_the_faust_and_onnx_extras() -> None:
    extras = args()["EXTRAS"].split(",")
    assert {"faust", "onnx"} <= set(extras)
    [step] = [r for k, r in instructions() if k == "RUN" and r.startswith("python -c")]
    code = shlex.split(step.split(">", 1)[0].replace("\\\n", ""))[2]  # python -c '<code>'
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "EXTRAS": args()["EXTRAS"]},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = list(project["dependencies"])
    for extra in extras:
        expected += project["optional-dependencies"][extra]
    assert result.stdout.split() == expected
    assert any(r.startswith("faust-streaming") for r in expected)
    assert any(r.startswith("onnxruntime") for r in expected)


def ignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or path.split("/")[0] == p for p in patterns)


def test_the_dockerignore_keeps_the_context_to_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for heavy in (".git", ".venv", "tests", "models", "**/__pycache__"):
        assert heavy in patterns
    copied = [
        source
        for keyword, rest in instructions()
        if keyword == "COPY"
        for source in rest.split()[:-1]
    ]
    assert copied and not [source for source in copied if ignored(source, patterns)]
