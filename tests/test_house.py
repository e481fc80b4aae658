"""The cache-key walk sees every library file, in subfolders too, and stays bounded (issue 29)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cli import fastpath
from entrainment import imports
from tasks.cache import code_hash

ROOT = Path(__file__).resolve().parent.parent


def _all_py(root: Path) -> set[Path]:
    """Every .py file of the project packages, found independently of the code under test."""
    return {
        p
        for pkg in imports.PACKAGES
        for p in (root / pkg).rglob("*.py")
        if "__pycache__" not in p.parts and p.is_file()
    }


def _copy(tmp_path: Path) -> Path:
    for pkg in imports.PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_every_library_file_of_the_tree_is_in_both_cache_key_walks():
    files = _all_py(ROOT)
    assert {p for p in files if p.parts[-2] == "entrainment"} and {p for p in files if p.parts[-2] == "tasks"}
    assert set(imports.module_files(ROOT).values()) == files
    assert {line.rsplit(":", 1)[0] for line in fastpath._code(ROOT)} == {str(p.relative_to(ROOT)) for p in files}


def test_a_module_in_a_subfolder_is_hashed_and_its_edit_changes_the_stage_key(tmp_path):
    """A module moved into a subfolder (entrainment/house/deep.py, tasks/sub/more.py) is walked by the stage keys and
    the fast path; editing it changes the code hash of a task that reaches it (relative and absolute imports)."""
    root = _copy(tmp_path)
    sub = root / "entrainment" / "house"
    sub.mkdir()
    (sub / "__init__.py").write_text("from . import deep  # noqa: F401\n")
    (sub / "deep.py").write_text("from ..data.text import visible  # noqa: F401\nX = 1\n")
    (root / "tasks" / "sub").mkdir()
    (root / "tasks" / "sub" / "more.py").write_text("import entrainment.house.deep  # noqa: F401\n")
    oom = root / "entrainment" / "model" / "oom.py"
    oom.write_text(oom.read_text() + "\nfrom entrainment.house import deep as _deep  # noqa: E402,F401\n")

    files = imports.module_files(root)
    assert set(files.values()) == _all_py(root)  # nothing missing, the new files included
    assert files["entrainment.house.deep"] == sub / "deep.py" and files["entrainment.house"] == sub / "__init__.py"
    assert "tasks.sub.more" in files
    g = imports.graph(root)
    assert g["entrainment.house"] == {"entrainment.house.deep"}
    assert g["entrainment.house.deep"] == {"entrainment.data.text"}  # two dots: one package up
    assert {"entrainment", "entrainment.house", "entrainment.house.deep"} <= g["tasks.sub.more"]
    assert imports.cycles(root) == [] and imports.upward(root) == []
    assert "entrainment.house.deep" in imports.reachable(root, "tasks.report")  # through scoring -> oom -> house
    coded = {line.rsplit(":", 1)[0] for line in fastpath._code(root)}
    assert {"entrainment/house/deep.py", "entrainment/house/__init__.py", "tasks/sub/more.py"} <= coded

    code_hash.cache_clear()
    try:
        before, fast_before = code_hash("tasks.report", str(root)), fastpath._code(root)
        (sub / "deep.py").write_text((sub / "deep.py").read_text() + "X = 2\n")
        code_hash.cache_clear()
        imports._graph.cache_clear()
        assert code_hash("tasks.report", str(root)) != before
        assert fastpath._code(root) != fast_before
    finally:
        code_hash.cache_clear()
        imports._graph.cache_clear()


def test_the_walk_is_bounded_and_survives_a_symlink_loop(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "a").mkdir(parents=True)
    (pkg / "a" / "m.py").write_text("")
    (pkg / "top.py").write_text("")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "junk.py").write_text("")
    os.symlink(pkg, pkg / "a" / "loop")  # a folder link back to the top: not entered
    os.symlink(pkg / "top.py", pkg / "alias.py")  # a link to a file is a file
    os.symlink(tmp_path / "gone.py", pkg / "dangling.py")  # a broken link is no file
    assert imports.python_files(pkg) == [pkg / "a" / "m.py", pkg / "alias.py", pkg / "top.py"]

    deep = pkg / "b"
    for i in range(imports.MAX_DEPTH):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "x.py").write_text("")
    with pytest.raises(RuntimeError, match="nested more than"):  # too deep: an error, never a shorter key
        imports.python_files(pkg)
    assert imports.python_files(pkg, max_depth=imports.MAX_DEPTH + 1)[-1].name == "top.py"


def test_a_module_name_given_by_two_files_is_an_error(tmp_path):
    root = _copy(tmp_path)
    (root / "entrainment" / "heads" / "masks").mkdir()  # a package folder beside masks.py: one would shadow the other
    (root / "entrainment" / "heads" / "masks" / "__init__.py").write_text("")
    with pytest.raises(RuntimeError, match="both module entrainment.heads.masks"):
        imports.module_files(root)


def test_the_ablation_reports_its_progress_per_head_set_method_and_null(tmp_path):
    """The ablate stage's evaluation calls plan.progress as it goes: rows scored rise to exactly the total, and the
    labels name each head set and method and each null group."""
    import polars as pl
    import torch

    from entrainment.ablation import evaluate
    from entrainment.data import lre_prompts
    from entrainment.heads.masks import HeadSet
    from entrainment.heads.random_heads import NullPlan
    from tests import tiny
    from tests.toy_data import toy_lre

    lre = toy_lre(tmp_path / "lre")
    items = lre_prompts.build(lre, ("toy capital",), 0, 8, (0.5, 0.25, 0.25)).filter(pl.col("split") == "test")
    calls: list[tuple[str, int, int]] = []
    model = tiny.model("llama")
    info = model.info
    mean = torch.zeros(info.n_layers, info.n_heads, model.model.config.hidden_size // info.n_heads)
    plan = evaluate.Plan(
        methods=("zero", "mean"),
        mean=mean,
        random_draws=2,
        seed=0,
        chunk=5,
        null=NullPlan(draws=3, items=4, conditions=("related",)),
        progress=lambda what, done, total: calls.append((what, done, total)),
    )
    sets = [HeadSet("mask:a", ((1, 0),)), HeadSet("mask:b", ((0, 1), (1, 2)))]
    key = {"mask_relation": "toy capital", "seed": 0, "ablation_label": "x"}
    evaluate.evaluate_masks(model, items, sets, key, plan)
    done = [c[1] for c in calls]
    assert done == sorted(done) and len({c[2] for c in calls}) == 1 and done[-1] == calls[-1][2] > 0
    labels = {c[0] for c in calls}
    assert {"head set 1/2 (mask:a), zero", "head set 2/2 (mask:b), mean"} <= labels
    assert any(w.startswith("null: 1 heads, zero, related/") for w in labels)
    assert any(w.startswith("null: 2 heads, zero, related/") for w in labels)


def test_one_rule_for_the_discover_stage_jobs_and_relations():
    """discover.search_jobs / discovery_relations: what the flow and en.discover both run."""
    from entrainment.config import Config
    from entrainment.errors import InputError
    from entrainment.heads.masks import SHARED
    from entrainment.stages.discover import discovery_relations, search_jobs

    cfg = Config(
        relations=("a", "b"), discover_relations=("a", "b"), seeds=(0, 1), search_resamples=2, shared_mask=True
    )
    jobs = search_jobs(cfg, ["a", "b"])
    assert jobs[:2] == [("a", 0, 0), ("a", 0, 1)] and len(jobs) == 3 * 2 * 2
    assert {j[0] for j in jobs} == {"a", "b", SHARED}
    assert SHARED not in {j[0] for j in search_jobs(cfg, ["a"], only=True)}  # a restricted stage: no shared mask
    assert SHARED not in {j[0] for j in search_jobs(cfg.replace(shared_mask=False), ["a", "b"])}
    assert SHARED not in {j[0] for j in search_jobs(cfg.replace(discover_relations=("a",)), ["a"])}

    assert discovery_relations(["c", "a", "b"], ("b", "a", "x"), False, "prompts") == ["a", "b"]
    assert discovery_relations(["c", "d"], ("a",), True, "prompts") == ["c", "d"]  # the fallback: every one present
    with pytest.raises(InputError, match="not in prompts.parquet"):
        discovery_relations(["c"], ("a",), False, Path("out/prompts.parquet"))


def test_one_plan_for_the_ablate_stage_and_the_scan_and_fold_jobs():
    """stages.ablate.plan, scan.jobs and discover.fold_jobs: the fan-out the flows and the API both run. Masks with
    the same heads share one evaluation job; per-fold masks go to the cross-fitted verdict; every mask maps back to
    the job holding its rows."""
    import numpy as np

    from entrainment.config import Config
    from entrainment.heads.masks import SHARED, HeadSet, LearnedMask
    from entrainment.stages import ablate, discover, scan

    def mask(rel: str, seed: int, heads: tuple, fold: int | None = None) -> LearnedMask:
        return LearnedMask("m", rel, seed, np.zeros((2, 2)), HeadSet(f"{rel}:{seed}", heads), fold)

    a0, a1, stable = mask("a", 0, ((0, 1),)), mask("a", 1, ((1, 0),)), mask("a", -1, ((0, 1),))
    shared = mask(SHARED, 0, ((1, 1),))
    folds = [mask("a", 0, ((0, 0),), fold=1), mask("a", 0, ((1, 1),), fold=0)]
    p = ablate.plan([a0, a1, stable, shared, *folds], ["b", "a"])
    assert p.relations == ("a", "b") and p.masks == (a0, a1, stable, shared)
    assert p.sets == {"a": (((0, 1),), ((1, 0),)), SHARED: (((1, 1),),)}  # seed 0 and the stable set: one set
    assert p.evals == [
        ("a", p.sets["a"], "a"),
        ("a", p.sets["a"], "b"),
        (SHARED, p.sets[SHARED], "a"),
        (SHARED, p.sets[SHARED], "b"),
    ]
    assert p.sides == [("a", p.sets["a"]), (SHARED, p.sets[SHARED])]
    assert p.fits == (("a", ((1, ((0, 0),)), (0, ((1, 1),)))),)
    ev, sd = p.labelled()
    assert len(ev) == 4 * 2 and {key for _, _, key in ev} == set(p.evals)
    assert all(key[0] == m.relation and key[2] == rel for m, rel, key in ev)
    assert [key for _, key in sd] == [("a", p.sets["a"])] * 3 + [(SHARED, p.sets[SHARED])]

    cfg = Config(compare_methods=("zero", "mean"), crossfit_folds=3)
    assert scan.jobs(cfg, ["a", "b"]) == [(r, m) for r in ("a", "b") for m in cfg.methods()]
    assert discover.fold_jobs(cfg, ["a", SHARED]) == [("a", 0), ("a", 1), ("a", 2)]
    assert discover.fold_jobs(cfg.replace(crossfit_folds=0), ["a"]) == []


def test_no_option_lives_only_in_the_prefect_layer():
    """Every Config field or method that flows/ and tasks/ read is also read by the library (entrainment/), which the
    Python API runs, except the few that steer the orchestration itself. An option honoured only by a flow or task
    (as the shared mask once was) would give the CLI and `import entrainment` different tables. Read through the
    AST: attributes of the names the code gives a Config (cfg, m, base)."""
    import ast

    from entrainment.config import Config

    known = set(Config.model_fields) | {n for n in dir(Config) if not n.startswith("_")}

    def read(paths) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id in ("cfg", "m", "base")
                    and node.attr in known
                ):
                    found.setdefault(node.attr, set()).add(str(path.relative_to(ROOT)))
        return found

    orchestration = {  # where and how jobs run, never what they compute
        "runner": "Prefect's task runner (sequential or Dask)",
        "dask_address": "the Dask scheduler",
        "refresh": "ignore the Prefect caches",
        "per_model": "one Config per model of a multi-model run (the API takes one loaded model per call)",
        "stage_params": "the fields in a stage's cache key",
        "smoke": "the report's smoke-run banner (the API writes no report)",
        "out": "the output folder (the API returns frames and writes none)",
        "scan": "whether `run` includes the scan stage (in the API: call en.scan or not)",
        "head_types": "whether `run` includes the head-types stage",
        "sentences": "whether `run` includes the sentences stage",
    }
    from entrainment.api import ELSEWHERE

    orchestration |= ELSEWHERE  # given another way in the API, and refused there as an option (tested below)
    files = imports.module_files(ROOT)
    # what the Python API runs: the modules it reaches, less the Config itself (it defines every field)
    api = [files[m] for m in imports.reachable(ROOT, "entrainment.api") if m != "entrainment.config"]
    library = read(api)
    prefect_only = {
        name: sorted(paths)
        for name, paths in read([p for p in _all_py(ROOT) if p.parts[-2] in ("flows", "tasks")]).items()
        if name not in library and name not in orchestration
    }
    assert not prefect_only, prefect_only
    assert {"shared_mask", "crossfit_folds", "seeds", "search_resamples", "methods"} <= set(library)


def test_an_option_the_api_takes_another_way_is_refused_not_ignored(tmp_path):
    import entrainment as en
    from entrainment.errors import InputError
    from tests import tiny
    from tests.toy_data import toy_lre

    model = en.Model(tiny.model("llama"))
    p = en.prompts(relations=["toy capital"], max_pairs=2, data_dir=str(toy_lre(tmp_path / "lre")))
    with pytest.raises(InputError, match="ablation_heads.*heads="):
        en.measure(model, p, ablation_heads="0.1")  # the CLI's option: refused here, never silently ignored
    assert len(en.measure(model, p, heads=[(0, 1)])) == 2 * len(p)  # the API's way
