"""README and docs/ stay true: every relative link resolves, the README stays a front page, every `entrainment ...`
command in a code block parses with the real CLI, every script command names a file (and flags it has), and the
generated pages match what scripts/make_docs.py writes."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from entrainment.errors import InputError
from tests.helpers import CEILING_S, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
PLACEHOLDER = re.compile(r"\.\.\.|<[^>]*>|…")


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))  # links inside code blocks are not links
    return [m.group(1) for m in LINK.finditer(text)]


def _commands(page: Path) -> list[str]:
    """The shell lines of a page's fenced code blocks, continuation lines joined."""
    out = []
    for block in FENCE.findall(page.read_text(encoding="utf-8")):
        line = ""
        for raw in block.splitlines():
            line += raw.rstrip()
            if line.endswith("\\"):
                line = line[:-1] + " "
                continue
            if line.strip():
                out.append(line.strip().removeprefix("$ "))
            line = ""
    return out


def _argv(line: str) -> list[str] | None:
    """A command line's words up to a pipe, && or & (comments dropped, VAR=value prefixes skipped); None: not shell."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    for i, w in enumerate(words):
        if w in ("|", "||", "&&", "&", ";", ">", ">>", "2>&1"):
            words = words[:i]
            break
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    return words


def _is_cli(word: str) -> bool:
    """`entrainment` or `.venv/bin/entrainment` (not the folder `entrainment/`)."""
    return word == "entrainment" or word.endswith("/bin/entrainment")


def test_pages_exist():
    names = {p.name for p in PAGES}
    assert {
        "README.md",
        "method.md",
        "pipeline.md",
        "options.md",
        "tables.md",
        "results.md",
        "reproducibility.md",
        "own-items.md",
        "scheduling.md",
        "benchmarks.md",
        "api.md",
    } <= names, names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    bad = []
    for target in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            bad.append(target)
    assert not bad, f"{page.name}: links to missing files: {bad}"


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for needed in (
        "make run",
        "make test",
        "docs/example.ipynb",
        "docs/method.md",
        "docs/results.md",
        "docs/options.md",
        "docs/api.md",
    ):
        assert needed in text, needed


def test_entrainment_commands_parse_with_the_cli():
    import typer.main

    import cli.app

    group = typer.main.get_command(cli.app.app)  # typer's own click: its Context class and exceptions
    seen = 0
    for page in PAGES:
        for line in _commands(page):
            words = _argv(line)
            if not words or not _is_cli(words[0]) or PLACEHOLDER.search(line):
                continue
            assert len(words) > 1, (page.name, line)
            ctx = group.context_class(group, info_name="entrainment")
            sub = group.get_command(ctx, words[1])
            assert sub is not None, f"{page.name}: unknown command in {line!r}"
            try:
                sub.make_context(words[1], words[2:], parent=ctx)
            except Exception as e:  # a usage error: unknown option, bad value, missing argument
                message = e.format_message() if hasattr(e, "format_message") else repr(e)
                pytest.fail(f"{page.name}: {line!r} does not parse: {message}")
            seen += 1
    assert seen >= 10, seen  # the pages do show commands


def test_script_commands_name_existing_files_and_flags():
    seen = 0
    for page in PAGES:
        for line in _commands(page):
            words = _argv(line)
            if not words or not Path(words[0]).name.startswith("python"):
                continue
            if words[1:2] == ["-m"]:
                module = words[2]
                root = ROOT / Path(*module.split("."))
                assert (
                    root.with_suffix(".py").exists()
                    or (root / "__main__.py").exists()
                    or importlib.util.find_spec(module) is not None
                ), f"{page.name}: no module {module} ({line!r})"
                seen += 1
                continue
            script = next((w for w in words[1:] if w.endswith(".py")), None)
            if script is None:
                continue
            path = ROOT / script
            assert path.exists(), f"{page.name}: {line!r} names a missing file"
            source = path.read_text(encoding="utf-8")
            for helper in re.findall(r"^import (_\w+)", source, flags=re.M):  # options shared by benchmarks/_*.py
                source += (path.parent / f"{helper}.py").read_text(encoding="utf-8")
            for flag in (w.split("=", 1)[0] for w in words if w.startswith("--")):
                assert f'"{flag}"' in source, f"{page.name}: {script} has no option {flag}"
            seen += 1
    assert seen >= 5, seen


def test_generated_pages_are_current():
    r = subprocess.run(
        [sys.executable, "scripts/make_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=CEILING_S
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_enumerated_option_names_its_values_at_the_field_in_help_and_in_the_docs():
    from cli.options import help_text
    from entrainment.config import Config, choices, make

    enumerated = [f for f in Config.model_fields if choices(f)]
    assert {"ablation_method", "compare_methods", "dtype", "bos", "selection_rule", "train_conditions"} <= set(
        enumerated
    )
    options_md = (ROOT / "docs" / "options.md").read_text()
    for name in enumerated:
        allowed = ", ".join(choices(name))
        assert f"One of: {allowed}." in help_text(name), name
        row = next(line for line in options_md.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"One of: {allowed}." in row, name
        bad = ["nonsense"] if isinstance(Config.model_fields[name].default, tuple) else "nonsense"
        with pytest.raises(InputError) as e:
            make(**{name: bad})
        assert name in str(e.value) and "nonsense" in str(e.value) and "\n" not in str(e.value), str(e.value)
        assert all(f"'{v}'" in str(e.value) for v in choices(name)), str(e.value)
