"""The example notebook (docs/example.ipynb, rendered from docs/example.py) runs offline, every cell, and the number it
prints is the one the API computes from the same inputs; the notebook is in sync with its jupytext source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests import tiny
from tests.helpers import CEILING_S, ROOT, cli

NOTEBOOK = ROOT / "docs" / "example.ipynb"
SOURCE = ROOT / "docs" / "example.py"
PRINTED = re.compile(r"related distractor shift: (-?\d+\.\d+|nan)")

# small settings for the results folder the notebook opens (the pipeline on toy relations)
CONFIG = """relations = ["toy capital", "toy color"]
discover_relations = ["toy capital"]
max_pairs = 4
search_pairs = [3, 2, 3]
passage_items = 1
epochs = 2
seeds = [0]
search_resamples = 1
discover_batch_size = 4
random_draws = 2
null_draws = 4
null_items = 4
scan_items = 4
scan_k = 2
compare_methods = ["zero"]
"""


def _prompt_options() -> dict:
    """The notebook's `PROMPTS = dict(...)`, read from its source (so the test recomputes exactly its inputs)."""
    for node in ast.walk(ast.parse(SOURCE.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PROMPTS" for t in node.targets):
            call = node.value
            assert isinstance(call, ast.Call) and getattr(call.func, "id", "") == "dict", "PROMPTS must be dict(...)"
            return {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    raise AssertionError("docs/example.py has no PROMPTS = dict(...)")


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    """A tiny local model folder (2 layers) and a results folder written by `entrainment run` with it."""
    from tests.toy_data import toy_lre

    d = tmp_path_factory.mktemp("notebook")
    lre = toy_lre(d / "lre")
    model = tiny.save("llama", d / "model", num_hidden_layers=2)
    (d / "c.toml").write_text(CONFIG + f"data_dir = {str(lre)!r}\n")
    out = d / "out"
    r = cli("run", "--out", str(out), "--model", model, "--config", str(d / "c.toml"))
    assert r.returncode == 0, r.stderr[-3000:]
    return model, out


def _execute(model: str, results: Path, monkeypatch) -> list[str]:
    """Run every cell of the notebook in a fresh kernel (this interpreter); returns each code cell's stdout."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("ENTRAINMENT_EXAMPLE_MODEL", model)
    monkeypatch.setenv("ENTRAINMENT_EXAMPLE_RESULTS", str(results))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb,
        timeout=CEILING_S,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(ROOT / "docs")}},
    ).execute()  # raises on a failing cell
    texts = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            for o in cell.get("outputs", []):
                assert o.get("output_type") != "error", o
            outputs = cell.get("outputs", [])
            texts.append("".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream"))
    return texts


def _check_printed(texts: list[str], model: str) -> None:
    import polars as pl

    import entrainment as en

    found = [m.group(1) for t in texts for m in PRINTED.finditer(t)]
    assert len(found) == 1, found
    loaded = en.load_model(model)
    p = en.prompts(**_prompt_options())
    s = en.stats(en.measure(loaded, p), p).stats
    row = s.filter(
        (pl.col("relation") == "ALL")
        & (pl.col("ablation") == "none")
        & (pl.col("target") == "distractor")
        & (pl.col("metric") == "logprob")
        & pl.col("position").is_null()
        & (pl.col("condition") == "related")
    )
    assert len(row) == 1
    assert abs(float(found[0]) - row["mean_diff"][0]) <= 1e-6, (found[0], row["mean_diff"][0])


def test_notebook_runs_on_a_tiny_model(tiny_project, monkeypatch):
    model, out = tiny_project
    texts = _execute(model, out, monkeypatch)
    _check_printed(texts, model)
    joined = "\n".join(texts)
    assert "delta before" in joined and "delta after" in joined  # the ablation's before/after table
    assert "'stats'" in joined and "related" in joined  # the results folder's tables and the SQL query's rows


@pytest.mark.slow
def test_notebook_runs_on_the_embedded_model(tiny_project, monkeypatch):
    _, out = tiny_project
    _check_printed(_execute("smollm2-135m", out, monkeypatch), "smollm2-135m")


def test_notebook_is_rendered_from_its_source():
    import jupytext
    import nbformat

    rendered = jupytext.read(SOURCE)
    stored = nbformat.read(NOTEBOOK, as_version=4)

    def cells(nb):
        return [(c.cell_type, c.source.strip()) for c in nb.cells]

    assert cells(stored) == cells(rendered), "docs/example.ipynb is out of date: jupytext --to ipynb docs/example.py"
    code_cells = [c for c in stored.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") for c in code_cells), "commit the notebook without outputs"


def _python_blocks(page: Path) -> str:
    return "\n".join(re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S))


@pytest.mark.parametrize("page", ["README.md", "docs/api.md"])
def test_python_examples_in_the_docs_run(tiny_project, page, tmp_path):
    """README's ten lines and docs/api.md's blocks (one script, in order) run on the tiny model and results folder."""
    import subprocess
    import sys

    model, out = tiny_project
    code = _python_blocks(ROOT / page)
    assert "en.load_model(" in code
    code = (
        code.replace('"smollm2-135m"', repr(model)).replace('"results"', repr(str(out))).replace("(10, 3)", "(1, 3)")
    )  # the tiny model has 2 layers x 4 heads
    script = tmp_path / "example.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


def test_sql_queries_in_the_docs_run(tiny_project):
    """Every `entrainment sql --out ... "query"` in a code block of README and docs/ runs on a results folder."""
    import shlex

    import entrainment as en

    _, out = tiny_project
    r = en.results(out)
    seen = 0
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"^```[^\n]*\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True) if "entrainment sql" in line else []
                if (
                    len(words) < 3
                    or not (words[0] == "entrainment" or words[0].endswith("/bin/entrainment"))
                    or words[1] != "sql"
                ):
                    continue
                query = next(w for w in words[2:] if w.lower().lstrip("( ").startswith(("select", "with", "from")))
                r.sql(query)  # raises on an unknown table or column
                seen += 1
    assert seen >= 3, seen
