"""Rerun latency: a no-change `entrainment run` and a cached single stage (`entrainment stats`), as a user feels
them, in three set-ups measured side by side: the fast path (default), no fast path with Prefect's temporary
server, and no fast path with the project's background server (`entrainment server start`).

Needs a finished run in --out (e.g. after `make run`). Prints the median of --repeats wall times per case and
a breakdown: Python + CLI imports, the fast-path check, Prefect + torch imports, the rest (server start, flow
bookkeeping, cache lookups).

    .venv/bin/python benchmarks/rerun_latency.py [--out results] [--repeats 3] [--config run.toml]
    .venv/bin/python benchmarks/rerun_latency.py --quick     # the breakdown only, once, on an empty folder (seconds;
                                                              # the test suite runs this)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-1500:]}")
    return time.perf_counter() - t


def median(cmd: list[str], env: dict, n: int) -> float:
    return statistics.median(wall(cmd, env) for _ in range(n))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", default=None, help="TOML passed to both commands (model, data_dir, ...)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: only the import and fast-path-check breakdown, "
        "once, on a fresh folder (no finished run needed, no server started)",
    )
    a = ap.parse_args(argv)
    if a.quick:
        import tempfile

        a.repeats, a.out = 1, str(Path(tempfile.mkdtemp(prefix="bench-rerun-")) / "results")
    py, cli = sys.executable, str(Path(sys.executable).with_name("entrainment"))
    base = dict(os.environ)
    base.pop("PREFECT_API_URL", None)
    slow = base | {"ENTRAINMENT_NO_FASTPATH": "1"}
    extra = ["--config", a.config] if a.config else []
    run, stats = [cli, "run", "--out", a.out, *extra], [cli, "stats", "--out", a.out, *extra]
    if not a.quick:
        wall(run, base)  # make sure the fast-path records exist
        wall(stats, base)
    rows = {}
    imports = median([py, "-c", "import cli.app"], base, a.repeats)
    heavy = median([py, "-c", "import cli.app, prefect, torch, transformers, tasks.measure"], base, a.repeats)
    check = median(
        [
            py,
            "-c",
            f"from cli import fastpath; from entrainment.config import Config; "
            f"fastpath.lookup('run', Config(out={a.out!r}))",
        ],
        base,
        a.repeats,
    )
    if a.quick:
        print(
            f"python + CLI imports {imports:.2f} s; + fast-path check of `run` {check - imports:+.2f} s; "
            f"prefect + torch + transformers imports {heavy - imports:.2f} s (quick: breakdown only)"
        )
        return
    rows["fast path (default)"] = (median(run, base, a.repeats), median(stats, base, a.repeats))
    rows["no fast path, temporary server"] = (median(run, slow, a.repeats), median(stats, slow, a.repeats))
    subprocess.run([cli, "server", "start"], cwd=ROOT, env=base, capture_output=True)
    try:
        rows["no fast path, background server"] = (median(run, slow, a.repeats), median(stats, slow, a.repeats))
        rows["fast path, background server"] = (median(run, base, a.repeats), median(stats, base, a.repeats))
    finally:
        subprocess.run([cli, "server", "stop"], cwd=ROOT, env=base, capture_output=True)
    print(f"median of {a.repeats} wall times, seconds (out = {a.out})")
    print(f"{'set-up':34s} {'no-change run':>14s} {'cached stats':>13s}")
    for name, (r, s) in rows.items():
        print(f"{name:34s} {r:14.2f} {s:13.2f}")
    print(
        f"breakdown: python + CLI imports {imports:.2f} s; + fast-path check of `run` {check - imports:+.2f} s; "
        f"prefect + torch + transformers imports {heavy - imports:.2f} s; the rest of the slow path is Prefect's "
        f"server start, flow bookkeeping and cache lookups"
    )


if __name__ == "__main__":
    main()
