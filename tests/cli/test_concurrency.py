"""Runs that cannot collide or corrupt: a folder lock (real subprocesses), stale locks from kill -9, and kill -9
at a random moment of measure, discover and ablate followed by a rerun that gives the uninterrupted tables."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from entrainment.errors import InputError
from entrainment.store.lock import folder_lock, holder
from tests import tiny
from tests.helpers import CEILING_S, ROOT, cli
from tests.toy_data import CONFIG

pytestmark = pytest.mark.slow


def test_lock_is_exclusive_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = (
        f"from entrainment.store.lock import folder_lock\nimport time\nwith folder_lock({str(tmp_path)!r}):\n    "
        f"print('held', flush=True)\n    time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    with pytest.raises(InputError) as e:
        with folder_lock(tmp_path):
            pass
    assert f"pid {p.pid}" in str(e.value) and "in use" in str(e.value) and "\n" not in str(e.value)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert f"pid {p.pid}" in holder(tmp_path)  # the dead holder's note is still there...
    with folder_lock(tmp_path):  # ...but the kernel released its lock: taken at once
        assert f"pid {os.getpid()}" in holder(tmp_path)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from tests.toy_data import toy_lre

    d = tmp_path_factory.mktemp("conc")
    lre = toy_lre(d / "lre")
    (d / "c.toml").write_text(CONFIG.replace("epochs = 2", "epochs = 6") + f"data_dir = {str(lre)!r}\n")  # every stage
    args = ["--model", tiny.save("llama", d / "model"), "--config", str(d / "c.toml")]
    ref = d / "ref"
    r = cli("run", "--out", str(ref), "--data-dir", str(lre), *args)
    assert r.returncode == 0, r.stderr[-1500:]
    return d, lre, args, ref


def test_two_concurrent_runs_on_one_out(project):
    d, lre, args, ref = project
    out = d / "both"
    cmd = [sys.executable, "-m", "cli.app", "run", "--out", str(out), "--data-dir", str(lre), *args]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and f"pid {first.pid}" not in holder(out):
        time.sleep(0.2)
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=CEILING_S)
    _, err = first.communicate(timeout=CEILING_S)
    assert first.returncode == 0, err[-1500:]
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert "in use by another entrainment process" in second.stderr and f"pid {first.pid}" in second.stderr
    for name in ("prompts", "measurements", "stats", "heads", "discovery", "ablation", "null_draws"):
        assert (out / f"{name}.parquet").read_bytes() == (ref / f"{name}.parquet").read_bytes(), name


def _kill_during(cmd: list[str], marker: str, log: Path) -> None:
    """Start cmd, wait for `marker` in its output, kill -9 it at a random moment soon after."""
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline and marker not in log.read_text() and p.poll() is None:
            time.sleep(0.1)
        time.sleep(random.uniform(0.0, 1.5))
        p.send_signal(signal.SIGKILL)
        p.wait()


@pytest.mark.parametrize(
    "stage, marker, tables",
    [
        ("measure", "measuring", ("measurements",)),
        ("discover", "mask search", ("heads", "discovery", "discovery_masks", "head_overlap")),
        ("ablate", "ablation: mask", ("ablation", "side_effects", "null_draws")),
    ],
)
def test_kill_9_then_rerun_gives_the_uninterrupted_tables(project, stage, marker, tables):
    d, lre, args, ref = project
    out = d / f"killed-{stage}"
    shutil.rmtree(out, ignore_errors=True)
    before = {
        "measure": ["prompts"],
        "discover": ["prompts", "measurements", "stats", "contrasts"],
        "ablate": [
            "prompts",
            "measurements",
            "stats",
            "contrasts",
            "heads",
            "discovery",
            "discovery_masks",
            "head_overlap",
        ],
    }[stage]
    out.mkdir()
    for name in before:  # the stage's inputs, as the uninterrupted run made them
        shutil.copy(ref / f"{name}.parquet", out / f"{name}.parquet")
    cmd = [sys.executable, "-m", "cli.app", stage, "--out", str(out), *args]
    _kill_during(cmd, marker, d / f"{stage}.log")
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=CEILING_S)
    assert r.returncode == 0, r.stderr[-1500:]
    for name in tables:
        assert (out / f"{name}.parquet").read_bytes() == (ref / f"{name}.parquet").read_bytes(), name


@pytest.mark.parametrize(
    "stage, before, tables",
    [
        ("discover", ["prompts", "measurements", "stats", "contrasts"], ("heads", "discovery", "head_overlap")),
        (
            "scan",
            ["prompts", "measurements", "stats", "contrasts", "heads", "discovery", "discovery_masks", "head_overlap"],
            ("head_scores", "head_agreement"),
        ),
    ],
)
def test_a_disk_that_fills_in_a_model_stage_is_one_line_and_loses_nothing(project, tmp_path, stage, before, tables):
    """discover (its resume checkpoint, its shards) and scan on a tmpfs filled up after their inputs were copied
    there: one line naming the cause, exit 1, no traceback; after freeing space a rerun gives the uninterrupted
    tables. The door check (free space >= 64 MB) is switched off so the stage itself meets the full disk."""
    from tests.helpers import one_line_failure, run_watched, tmpfs

    d, lre, args, ref = project
    with tmpfs(tmp_path / "small", "size=2m") as small:
        out = small / "out"
        out.mkdir()
        for name in before:  # the stage's inputs, as the uninterrupted run made them
            shutil.copy(ref / f"{name}.parquet", out / f"{name}.parquet")
        filler = small / "filler"
        with open(filler, "wb", buffering=0) as f:  # leave ~8 KB: enough to start, not to finish
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        os.truncate(filler, max(0, filler.stat().st_size - 8192))
        code = (
            "import sys; import cli.preflight as p; p.MIN_FREE_MB = 0; from cli.app import main; "
            "sys.argv = ['entrainment'] + sys.argv[1:]; main()"
        )
        r = run_watched([sys.executable, "-c", code, stage, "--out", str(out), *args], cwd=ROOT)
        one_line_failure(r, "no space left", str(out))  # names the file it could not write
        filler.unlink()  # space again: the rerun finishes from what was kept
        r = run_watched([sys.executable, "-c", code, stage, "--out", str(out), *args], cwd=ROOT)  # 2 MB disk
        assert r.returncode == 0, r.stderr[-1500:]
        for name in tables:
            assert (out / f"{name}.parquet").read_bytes() == (ref / f"{name}.parquet").read_bytes(), name
