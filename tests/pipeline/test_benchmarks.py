"""Benchmarks that cannot rot: every script in benchmarks/ runs its ``--quick`` mode (a tiny random model, a handful of
items, seconds) as a user runs it, so a library call that changed under a benchmark fails the suite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import run_watched

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
# what each benchmark's quick mode must print: its result line, so a run that silently skipped its work fails too
EXPECT = {
    "ablation_memory": "chunked KL (pipeline)",
    "discovery_bf16": "ratio:",
    "discovery_epochs": "step budget",
    "discovery_init": "init 3: selected epoch",
    "head_scan": "ratio:",
    "measure_throughput": "ratio:",
    "null_draws": "ratio:",
    "rerun_latency": "fast-path check",
    "scale": "total",
    "batched_searches": "ratio",
    "learning_curve": "corrected Jaccard",
    "discovery_step_size": "seeds' agreement, last masks",
}


def test_the_folder_holds_the_benchmarks_the_docs_document():
    """Every known benchmark is in the folder and its command line is in docs/."""
    names = {p.stem for p in SCRIPTS}
    assert set(EXPECT) <= names, set(EXPECT) - names
    docs = "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    assert all(f"benchmarks/{n}.py" in docs for n in EXPECT), [n for n in EXPECT if f"benchmarks/{n}.py" not in docs]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_quick_mode_runs(script: Path, tmp_path):
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", TMPDIR=str(tmp_path))
    r = run_watched([sys.executable, str(script), "--quick"], env=env)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    assert EXPECT.get(script.stem, "") in r.stdout, r.stdout[-2000:]


@pytest.mark.parametrize("arms", ["1:x", "1", "1:0:1:2", "0.3:2.5"])
def test_step_size_arms_that_are_not_numbers_get_one_line_and_exit_2(arms):
    """A malformed --arms value is refused before any model loads: one line naming the arm, exit 2, no traceback."""
    script = ROOT / "benchmarks" / "discovery_step_size.py"
    r = run_watched([sys.executable, str(script), "--arms", arms], env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"--arms: {arms!r} is not lr:warm-up[:lambda]" in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]
