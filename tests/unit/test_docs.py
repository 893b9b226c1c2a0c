"""The README stays a front door and the docs stay true: generated pages current, every setting
described, every relative link resolving, every command in a ``bash`` block a real one."""

from __future__ import annotations

import importlib.util
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamapp import docs_gen
from streamapp.bench import SUITES
from streamapp.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

# programs a docs command may run besides streamapp, make and python (checked below)
OTHER_PROGRAMS = {"docker", "kcat", "curl", "pre-commit", ".venv/bin/pre-commit"}
SHELL_WORDS = {"for", "do", "done", "cd", "export"}


def test_every_setting_has_a_description() -> None:
    assert docs_gen.missing_descriptions() == []


@pytest.mark.parametrize("page", sorted(docs_gen.PAGES))
def test_generated_pages_are_current(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    assert text == docs_gen.PAGES[page](), f"docs/{page} is stale: run python -m streamapp.docs_gen"


def test_the_configuration_page_names_every_setting_and_its_env_var() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for group, model in docs_gen.settings_groups():
        for name in model.model_fields:
            dotted = f"{group}.{name}" if group else name
            if group == "" and dict(docs_gen.settings_groups()).get(name):
                continue  # a group: its own section
            env = "STREAMAPP_" + dotted.replace(".", "__").upper()
            assert f"| `{dotted}` | `{env}` |" in text


def test_the_cli_page_names_every_command() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for path in _commands(build_parser(), "streamapp"):
        assert f"`{path}`" in text


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details to docs/"
    top = lines[:12]
    assert any(line.startswith("make run") for line in top), "README starts with `make run`"
    assert any(line.startswith("make test") for line in top), "README starts with `make test`"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    text = _without_code(page.read_text(encoding="utf-8"))
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_commands_in_the_docs_are_real(page: Path) -> None:
    targets = _make_targets()
    parser = build_parser()
    for line, heredoc in _bash_commands(page.read_text(encoding="utf-8")):
        for words in _simple_commands(line):
            program, args = words[0], words[1:]
            if program == "streamapp":
                try:
                    parsed = parser.parse_args(args)
                except SystemExit:
                    pytest.fail(f"{page.name}: not a valid streamapp command: {line}")
                if parsed.command == "bench":  # suites are checked by the command, not argparse
                    assert set(parsed.suites) <= set(SUITES), f"{page.name}: {line}"
            elif program == "make":
                unknown = [a for a in args if "=" not in a and a not in targets]
                assert unknown == [], f"{page.name}: no make target {unknown}: {line}"
            elif program in ("python", "python3", ".venv/bin/python"):
                _check_python(page, line, args, heredoc)
            else:
                assert program in OTHER_PROGRAMS | SHELL_WORDS, (
                    f"{page.name}: a command no test checks: {line}"
                )


def _check_python(page: Path, line: str, args: list[str], heredoc: str | None) -> None:
    if args[:1] == ["-m"]:
        module = args[1]
        assert importlib.util.find_spec(module) is not None, f"{page.name}: no module {module}"
    elif args[:1] == ["-"]:
        assert heredoc is not None, f"{page.name}: python - without a heredoc: {line}"
        compile(heredoc, f"{page.name} heredoc", "exec")
    else:
        pytest.fail(f"{page.name}: a python command no test checks: {line}")


def _commands(parser: object, path: str) -> Iterator[str]:
    for name, _, sub in docs_gen.subcommands(parser):  # type: ignore[arg-type]
        yield f"{path} {name}"
        yield from _commands(sub, f"{path} {name}")


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.MULTILINE))


def _without_code(text: str) -> str:
    """Markdown without fenced blocks and inline code, where brackets are not links."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def _bash_commands(text: str) -> Iterator[tuple[str, str | None]]:
    """Each logical line of the ``bash`` blocks (continuations joined), with the body of the
    heredoc it starts, if any."""
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        lines = iter(block.splitlines())
        for raw in lines:
            line = raw
            while line.endswith("\\"):
                line = line[:-1] + next(lines, "")
            heredoc = None
            marker = re.search(r"<<-?\s*'?(\w+)'?", line)
            if marker:
                body = []
                for body_line in lines:
                    if body_line.strip() == marker.group(1):
                        break
                    body.append(body_line)
                heredoc = "\n".join(body) + "\n"
                line = line[: marker.start()]
            if line.strip() and not line.lstrip().startswith("#"):
                yield line.strip(), heredoc


def _simple_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line: split at ``;``, ``&&``, ``||``, ``|`` and ``&``,
    comments and leading ``VAR=value`` assignments dropped, ``$var`` read as 0."""
    line = re.sub(r"\$\{?\w+\}?", "0", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    for token in [*lexer, ";"]:
        if token and set(token) <= set(";&|"):
            while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                words.pop(0)
            if words:
                yield words
            words = []
        else:
            words.append(token)


def test_a_bench_run_replaces_the_latest_results(tmp_path: Path) -> None:
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    assert page.count(docs_gen.BENCH_START) == page.count(docs_gen.BENCH_END) == 1
    (tmp_path / "benchmarks.md").write_text(page, encoding="utf-8")
    bench_md = tmp_path / "bench.md"
    bench_md.write_text("Measured on a test machine.\n\n| loop | events/s |\n", encoding="utf-8")
    assert docs_gen.main(["--bench", str(bench_md), "--docs-dir", str(tmp_path)]) == 0
    text = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert "Measured on a test machine." in text
    assert "155,039" not in text  # the old run is gone
    assert text.split(docs_gen.BENCH_START)[0] == page.split(docs_gen.BENCH_START)[0]
    assert text.split(docs_gen.BENCH_END)[1] == page.split(docs_gen.BENCH_END)[1]
