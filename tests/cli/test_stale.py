"""No silently stale or wrong tables: provenance checks, mask ids, quoted paths, no orphan server, INFO logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from entrainment.data import lre_prompts
from entrainment.heads import masks
from entrainment.stages import measure
from entrainment.store import provenance, sql, tables
from tests import tiny
from tests.helpers import ROOT, cli, one_line_error
from tests.toy_data import CONFIG


def _measured(out: Path, lre: Path, max_pairs: int) -> None:
    """prompts.parquet and measurements.parquet (with its source record) written by the library."""
    p = lre_prompts.build(lre, ("toy capital",), 0, max_pairs, (0.6, 0.2, 0.2))
    tables.write_table(p, out, "prompts")
    tables.write_table(measure.measure_frame(tiny.model("llama"), p, batch_size=8), out, "measurements")


def test_stats_refuses_measurements_of_other_prompts(tmp_path, lre_dir):
    _measured(tmp_path, lre_dir, 6)
    assert provenance.why_stale(tmp_path, "measurements") is None
    p = lre_prompts.build(lre_dir, ("toy capital",), 0, 2, (0.6, 0.2, 0.2))  # generate again with fewer pairs
    tables.write_table(p, tmp_path, "prompts")
    assert "another prompts.parquet" in provenance.why_stale(tmp_path, "measurements")
    one_line_error(
        cli("stats", "--out", str(tmp_path)), "measurements.parquet", "another prompts.parquet", "entrainment measure"
    )
    warnings: list[str] = []
    sql.query(tmp_path, "select count(*) from measurements", warn=warnings.append)
    assert len(warnings) == 1 and "stale" in warnings[0] and "measurements" in warnings[0]


def test_mask_of_another_model_is_refused(tmp_path, lre_dir):
    _measured(tmp_path, lre_dir, 4)
    pl.DataFrame(
        {
            "model": ["gemma3-270m"] * 2,
            "relation": ["toy capital"] * 2,
            "seed": [0, 0],
            "layer": [0, 1],
            "head": [1, 2],
            "mask_logit": [-1.0, 2.0],
            "removed": [True, False],
            "ablation_label": ["mask:toy capital:seed0"] * 2,
            "ablation_method": ["zero"] * 2,
            "fold": pl.Series([None] * 2, dtype=pl.Int64),  # not a cross-fitting fold's mask
        }
    ).write_parquet(tmp_path / "heads.parquet")
    with pytest.raises(Exception, match="no mask for this model"):
        masks.head_sets_from_parquet(tmp_path / "heads.parquet", "smollm2-135m")
    model = tiny.save("llama", tmp_path / "model")
    one_line_error(
        cli("measure", "--out", str(tmp_path), "--model", model, "--ablation-heads", str(tmp_path / "heads.parquet")),
        "heads.parquet",
        "no mask for this model",
        "gemma3-270m",
    )


def test_mask_ids_identify_their_heads():
    a = masks.mask_set("r", 0, ((1, 2), (0, 3)))
    b = masks.mask_set("r", 0, ((0, 3), (1, 2)))
    c = masks.mask_set("r", 0, ((0, 3),))
    assert a.id == b.id != c.id and a.label == c.label == "mask:r:seed0" and a.id.startswith("mask:r:seed0:")


def test_rediscovery_drops_rows_of_the_outdated_mask(prefect_api, tmp_path, lre_dir):
    from entrainment.config import Config
    from flows.measure import measure_flow

    model = tiny.save("llama", tmp_path / "model")
    cfg = Config(
        out=tmp_path / "out",
        data_dir=lre_dir,
        relations=("toy capital",),
        max_pairs=3,
        model=model,
        ablation_heads=str(tmp_path / "out" / "heads.parquet"),
    )
    tables.write_table(lre_prompts.build(lre_dir, ("toy capital",), 0, 3, (0.6, 0.2, 0.2)), cfg.out, "prompts")

    def heads_file(removed: list[bool]) -> None:
        spec = str(Path(model).resolve())
        tables.write_table(
            pl.DataFrame(
                {
                    "model": [spec] * 3,
                    "relation": ["toy capital"] * 3,
                    "seed": [0] * 3,
                    "layer": [0, 0, 1],
                    "head": [0, 1, 2],
                    "mask_logit": [0.0] * 3,
                    "removed": removed,
                    "ablation_label": ["mask:toy capital:seed0"] * 3,
                    "ablation_method": ["zero"] * 3,
                    "fold": pl.Series([None] * 3, dtype=pl.Int64),
                }
            ),
            cfg.out,
            "heads",
        )

    heads_file([True, False, False])
    measure_flow(cfg)
    first = set(pl.read_parquet(cfg.out / "measurements.parquet")["ablation"])
    heads_file([False, True, True])  # a new discovery changed the mask of (toy capital, seed 0)
    measure_flow(cfg)
    df = pl.read_parquet(cfg.out / "measurements.parquet")
    ids = set(df["ablation"])
    assert len(ids) == 2 and "none" in ids and not (ids - {"none"}) & first
    assert set(df["ablation_label"]) == {"none", "mask:toy capital:seed0"}
    assert df.group_by("ablation").len()["len"].n_unique() == 1  # no duplicated rows


def test_sql_is_read_only_and_isolates_a_corrupt_table(tmp_path, lre_dir):
    out = tmp_path / "o'brien"
    _measured(out, lre_dir, 3)
    (out / "stats.parquet").write_bytes(b"corrupt")
    warnings: list[str] = []
    n = sql.query(out, "select count(*) n from measurements", warn=warnings.append)["n"][0]
    assert n > 0 and len(warnings) == 1 and "stats" in warnings[0] and "unreadable" in warnings[0]
    for bad in (
        f"COPY measurements TO '{tmp_path}/x.csv'",
        "select * from read_csv('/etc/passwd')",
        f"ATTACH '{tmp_path}/y.db'",
        "CREATE OR REPLACE VIEW prompts AS SELECT 1",
    ):
        with pytest.raises(Exception) as e:
            sql.query(out, bad)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.db").exists()
    assert sql.query(out, "select count(*) n from prompts", unsafe=True)["n"][0] > 0
    r = cli("sql", "--out", str(out), "COPY prompts TO '/tmp/never.csv'")
    one_line_error_lines = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert r.returncode == 2 and len(one_line_error_lines) == 1 and "only SELECT" in one_line_error_lines[0]


@pytest.fixture(scope="module")
def apostrophe_run(tmp_path_factory):
    """`entrainment run` through the real CLI into an --out with an apostrophe, on a tiny model, dirty data."""
    from tests.toy_data import CAPITALS, toy_lre, write_relation

    d = tmp_path_factory.mktemp("apos")
    lre = toy_lre(d / "lre")
    write_relation(
        lre / "factual",
        "capitals.json",
        "toy capital",
        [{"subject": s, "object": o} for s, o in CAPITALS + [("France", "Paris")]],
    )  # one duplicate pair: the loader cleans it and says so
    (d / "c.toml").write_text(CONFIG + f"data_dir = {str(lre)!r}\n")  # every stage reads the same relation files
    common = ["--out", str(d / "o'brien"), "--model", tiny.save("llama", d / "model")]
    r = cli("run", *common, "--data-dir", str(lre), "--config", str(d / "c.toml"))
    assert r.returncode == 0, r.stderr[-2000:]
    return d, common, r


def test_apostrophe_out_works_for_every_command(apostrophe_run):
    d, common, r = apostrophe_run
    out = d / "o'brien"
    for name in ("prompts", "measurements", "stats", "heads", "ablation"):
        assert provenance.why_stale(out, name) is None, name
    cfg = ["--config", str(d / "c.toml")]
    for cmd, extra in (
        ("generate", ["--data-dir", str(d / "lre")]),
        ("measure", []),
        ("stats", []),
        ("discover", []),
        ("ablate", []),
        ("report", []),
    ):
        args = common[:2] if cmd in ("generate", "stats") else common
        rr = cli(cmd, *args, *extra, *(cfg if cmd != "report" else []))
        assert rr.returncode == 0, (cmd, rr.stderr[-1500:])
        if cmd in ("measure", "discover", "ablate"):
            assert "cache hit" in rr.stdout + rr.stderr, cmd  # INFO: what was served from the cache
    rr = cli("sql", "--out", str(out), "select count(*) as n from ablation")
    assert rr.returncode == 0 and "Traceback" not in rr.stderr


def test_logs_promised_by_readme_appear(apostrophe_run):
    _, _, r = apostrophe_run
    text = r.stdout + r.stderr
    assert "cleaned" in text and "duplicate" in text  # the loader's fix, at INFO, on the console


def test_kill_9_leaves_no_temporary_server(tmp_path, lre_dir):
    import psutil

    (tmp_path / "c.toml").write_text(CONFIG.replace("epochs = 2", "epochs = 50"))
    model = tiny.save("llama", tmp_path / "model")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.app",
            "run",
            "--out",
            str(tmp_path / "out"),
            "--model",
            model,
            "--data-dir",
            str(lre_dir),
            "--config",
            str(tmp_path / "c.toml"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = None
    deadline = time.time() + 120
    while time.time() < deadline and server is None:
        time.sleep(0.5)
        kids = psutil.Process(proc.pid).children(recursive=True)
        server = next((k for k in kids if "uvicorn" in " ".join(k.cmdline())), None)
    assert server is not None, "no temporary Prefect server seen"
    time.sleep(1.5)  # the watchdog has recorded it
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.3)
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE


def test_no_change_rerun_takes_the_fast_path_and_any_change_does_not(apostrophe_run):
    import time as _t

    d, common, _ = apostrophe_run
    out = d / "o'brien"
    args = ["run", *common, "--data-dir", str(d / "lre"), "--config", str(d / "c.toml")]
    t0 = _t.perf_counter()
    r = cli(*args)
    assert r.returncode == 0 and "nothing changed since the last run" in r.stdout, r.stderr[-800:]
    assert "Beginning flow run" not in r.stdout + r.stderr  # Prefect never started
    assert _t.perf_counter() - t0 < 15
    (out / "stats.parquet").unlink()  # an output gone: the normal path, which recomputes it
    r = cli(*args)
    assert r.returncode == 0 and "nothing changed" not in r.stdout and (out / "stats.parquet").exists()
    r = cli(*args[:-2], "--config", str(d / "c.toml"), "--null-draws", "6")  # a changed option: normal path
    assert r.returncode == 0 and "nothing changed" not in r.stdout
