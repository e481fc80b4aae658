"""Run the test suite beside a synthetic load: N busy processes (default 2, one per core here) start first, the
suite runs, the busy processes are stopped however the suite ends. Prints the suite's wall time and exit status.

    .venv/bin/python scripts/test_under_load.py                 # the whole suite beside 2 busy processes
    .venv/bin/python scripts/test_under_load.py --busy 2 -- -m "not slow" tests/cli/test_cli.py

Everything after `--` is passed to pytest. The busy processes run in their own session (as a user's other terminal
would), so the kernel's per-session CPU sharing treats them as the separate load they stand for.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = "import hashlib\nx = b'x'\nwhile True:\n    x = hashlib.sha256(x).digest()\n"


def main() -> int:
    """Start the load, run pytest, stop the load; exit with pytest's status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=2, help="busy processes beside the suite (default 2)")
    ap.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = ap.parse_args()
    load = [subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True) for _ in range(args.busy)]
    t0 = time.monotonic()
    try:
        rc = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args], cwd=ROOT
        )
    finally:
        for p in load:
            p.kill()
            p.wait()
    print(f"suite beside {args.busy} busy processes: exit {rc}, {time.monotonic() - t0:.0f} s wall", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
