"""The house plan, checked: the import graph, the one declaration of the stage graph, cache keys that follow the
imports, the linter, and a library that never imports Prefect."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from entrainment import imports, stage_graph
from entrainment.store.schema import TABLES
from tests.helpers import CEILING_S, run_watched

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_cycle_and_no_upward_import():
    assert imports.cycles(ROOT) == []
    assert imports.upward(ROOT) == []  # entrainment < tasks < flows < cli / deployments
    assert imports.upward_folders(ROOT) == []  # root < store < data, model < statistics < heads < ablation < ... < api
    folders = {p.name for p in (ROOT / "entrainment").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(imports.FOLDER_LAYERS) - {"root", "api"}, folders  # every folder has its place in the rule
    g = imports.graph(ROOT)
    assert not any(
        b.startswith(("tasks", "flows", "cli")) for a, bs in g.items() if a.startswith("entrainment") for b in bs
    )


def test_the_graph_reader_sees_function_level_imports(tmp_path):
    for pkg in imports.PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "entrainment" / "a.py").write_text("def f():\n    from entrainment import b\n")
    (tmp_path / "entrainment" / "b.py").write_text("import entrainment.a\n")
    assert imports.cycles(tmp_path) == [["entrainment.a", "entrainment.b"]]


def test_flows_hold_only_flows():
    for path in sorted((ROOT / "flows").glob("*.py")):
        tree = ast.parse(path.read_text())
        if path.stem in ("__init__", "runners"):
            continue  # the package marker; the task-runner choice every flow shares
        flows = [
            n
            for n in tree.body
            if isinstance(n, ast.FunctionDef) and any("flow" in ast.unparse(d) for d in n.decorator_list)
        ]
        assert flows, f"{path.name} defines no flow"
        others = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n not in flows]
        assert not others, f"{path.name} holds non-flow code: {others}"


def test_modules_are_small_or_say_why():
    for pkg in imports.PACKAGES:
        for path in imports.python_files(ROOT / pkg):
            lines = path.read_text().count("\n")
            if lines > 320:
                doc = ast.get_docstring(ast.parse(path.read_text())) or ""
                assert "longer than" in doc or "one place" in doc, f"{path} has {lines} lines and no stated reason"


def test_every_table_has_exactly_one_producing_stage_and_inputs_that_exist():
    producers: dict[str, list[str]] = {}
    for s in stage_graph.STAGES:
        for t in s.writes:
            producers.setdefault(t, []).append(s.name)
    assert set(producers) == set(TABLES), set(producers) ^ set(TABLES)
    assert all(len(v) == 1 for v in producers.values()), producers
    for s in stage_graph.STAGES:
        for t, made_from in s.writes.items():
            assert set(made_from) <= set(TABLES) and set(made_from) <= set(s.reads) | set(s.writes), (s.name, t)
        assert set(s.reads) <= set(TABLES)


def test_the_derived_maps_equal_the_old_hand_written_ones():
    """The five maps that were written by hand before the stage graph was declared once (HEAD 5923434)."""
    old_inputs = {
        "measurements": ("prompts",),
        "stats": ("measurements", "prompts"),
        "contrasts": ("measurements", "prompts"),
        "heads": ("prompts",),
        "discovery": ("prompts",),
        "discovery_masks": ("prompts",),
        "head_overlap": ("prompts",),
        "ablation": ("heads", "prompts"),
        "side_effects": ("heads", "prompts"),
        "null_draws": ("heads", "prompts"),
        "head_scores": ("prompts",),
        "head_agreement": ("head_scores", "heads", "prompts"),
        "models": ("prompts",),
        "scaling": ("measurements", "prompts", "models"),
    }
    old_refresh = {
        "prompts": "generate",
        "measurements": "measure",
        "stats": "stats",
        "contrasts": "stats",
        "heads": "discover",
        "discovery": "discover",
        "discovery_masks": "discover",
        "head_overlap": "discover",
        "ablation": "ablate",
        "side_effects": "ablate",
        "null_draws": "ablate",
        "head_scores": "scan",
        "head_agreement": "scan",
        "models": "measure",
        "scaling": "stats",
    }
    old_reads = {
        "generate": (),
        "measure": ("prompts", "heads"),
        "stats": ("measurements", "prompts", "models"),
        "discover": ("prompts",),
        "scan": ("prompts", "heads"),
        "ablate": ("prompts", "heads"),
        "run": (),
    }
    old_report = (
        "prompts",
        "measurements",
        "stats",
        "contrasts",
        "heads",
        "discovery",
        "ablation",
        "side_effects",
        "null_draws",
        "head_scores",
        "head_agreement",
        "models",
        "scaling",
    )
    old_fields = {
        "generate": (
            "relations",
            "seed",
            "max_pairs",
            "split",
            "discover_relations",
            "search_pairs",
            "train_conditions",
        ),
        "measure": ("model", "device", "dtype", "batch_size", "ablation_heads", "bos"),
        "stats": ("confidence",),
        "discover": (
            "model",
            "device",
            "dtype",
            "discover_relations",
            "epochs",
            "discover_batch_size",
            "lr",
            "lam",
            "tau",
            "weight_decay",
            "init",
            "seeds",
            "train_conditions",
            "bos",
            "search_dtype",
        ),
        "ablate": (
            "model",
            "device",
            "dtype",
            "batch_size",
            "random_draws",
            "seed",
            "bos",
            "null_draws",
            "null_items",
            "train_conditions",
            "search_dtype",
        ),
        "scan": (
            "model",
            "device",
            "dtype",
            "bos",
            "train_conditions",
            "discover_batch_size",
            "batch_size",
            "scan_k",
            "random_draws",
            "null_items",
            "seed",
            "search_dtype",
        ),
    }
    for t, made_from in old_inputs.items():
        assert stage_graph.inputs_of(t) == made_from, t
    for t, cmd in old_refresh.items():
        assert stage_graph.producer(t) == cmd, t
    for cmd, reads in old_reads.items():
        assert stage_graph.reads(cmd) == reads, cmd
    assert set(old_report) <= set(stage_graph.reads("report"))
    for stage, fields in old_fields.items():  # this round added fields; none was dropped
        assert set(fields) <= set(stage_graph.fields(stage)), stage


def test_cache_key_follows_an_edit_to_a_module_reached_only_indirectly(tmp_path):
    """tasks.report reaches entrainment.model.oom only through scoring (the example's scoring path): editing it in a
    copy of the package changes the report task's code hash; an edit to a module it cannot reach does not."""
    from tasks.cache import code_hash

    for pkg in imports.PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    assert "entrainment.model.oom" not in imports.graph(tmp_path)["tasks.report"]  # not imported directly...
    assert "entrainment.model.oom" in imports.reachable(tmp_path, "tasks.report")  # ...but reached
    before = code_hash("tasks.report", str(tmp_path))
    assert before == code_hash("tasks.report", str(ROOT))  # a faithful copy hashes the same
    p = tmp_path / "entrainment" / "model" / "oom.py"
    p.write_text(p.read_text() + "\n# an edit to the out-of-memory policy\n")
    code_hash.cache_clear()
    try:
        assert code_hash("tasks.report", str(tmp_path)) != before
        assert "entrainment.statistics.scaling" not in imports.reachable(tmp_path, "tasks.generate")
        k = code_hash("tasks.generate", str(tmp_path))
        q = tmp_path / "entrainment" / "statistics" / "scaling.py"
        q.write_text(q.read_text() + "\n# unrelated to generating prompts\n")
        code_hash.cache_clear()
        assert code_hash("tasks.generate", str(tmp_path)) == k
    finally:
        code_hash.cache_clear()


def test_importing_the_library_and_the_api_loads_no_prefect():
    code = (
        "import sys, entrainment as en\n"
        "from entrainment import api\n"
        "from entrainment.ablation import evaluate\n"
        "from entrainment.heads import maps, search\n"
        "from entrainment.stages import ablate, discover, measure, report, scan, stats\n"
        "en.prompts\n"
        "assert not [m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')], 'prefect imported'\n"
        "print('ok')\n"
    )
    r = run_watched([sys.executable, "-c", code])
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_linter_and_formatter_pass_on_the_tree():
    """`ruff check` (pyflakes, pycodestyle, import order) and `ruff format --check` (one code style)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed (it is in the dev extra)")
    for args in (["check", "."], ["format", "--check", "."]):
        r = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True, timeout=CEILING_S)
        assert r.returncode == 0, (args, r.stdout[-3000:])


def test_cli_help_defaults_come_from_the_config():
    from cli import options
    from entrainment.config import default

    assert str(default("scan_k")) in options.help_text("scan_k")
    assert str(default("epochs")) in options.help_text("epochs")
    run_fields = {p.name for p in options.parameters("run")}
    assert {"epochs", "seeds", "ablation_method", "search_resamples", "template_holdout", "items"} <= run_fields


def test_the_folder_rule_catches_a_lower_folder_importing_a_higher_one(tmp_path):
    for pkg in imports.PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for folder in ("store", "stages"):
        (tmp_path / "entrainment" / folder).mkdir()
        (tmp_path / "entrainment" / folder / "__init__.py").write_text("")
    (tmp_path / "entrainment" / "stages" / "measure.py").write_text("from entrainment.store import tables\n")
    (tmp_path / "entrainment" / "store" / "tables.py").write_text(
        "def f():\n    from entrainment.stages import measure\n"
    )
    assert imports.upward_folders(tmp_path) == [("entrainment.store.tables", "entrainment.stages.measure")]
