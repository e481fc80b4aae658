"""The project's background Prefect server: `entrainment server start|stop|status`.

Without it every command starts Prefect's temporary server (several seconds). With it, commands talk to a
server that is already up: ``use_running()`` points PREFECT_API_URL at it when it answers its health check
(and the user has not set PREFECT_API_URL). It runs with ``--no-services`` (the CLI needs no scheduler; use
`prefect server start` for scheduled deployments) on 127.0.0.1, its database in the project's PREFECT_HOME.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from entrainment.paths import PROJECT_ROOT

PORT = int(os.environ.get("ENTRAINMENT_SERVER_PORT", "4210"))
URL = f"http://127.0.0.1:{PORT}/api"


def healthy(timeout: float = 0.3) -> bool:
    try:
        with urllib.request.urlopen(f"{URL}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def use_running() -> bool:
    """Point this process at the project's server if it is up (and PREFECT_API_URL is not set already).

    Without one, the command's temporary server runs without its task-run recorder service: nothing reads task-run
    records of a temporary server, and the service's SQLite writes racing the API's were measured to stall a default
    run for 60 s (SQLite's busy timeout) twice (``database is locked``, PrefectHQ/prefect#15170, #10188)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if healthy():
        os.environ["PREFECT_API_URL"] = URL
        return True
    os.environ.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED", "false")
    return False


def _prefect(*args: str) -> subprocess.CompletedProcess:
    import tasks  # noqa: F401  (project-local PREFECT_HOME)

    exe = Path(sys.executable).with_name("prefect")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]
    return subprocess.run(cmd + list(args), cwd=PROJECT_ROOT, capture_output=True, text=True)


def start(wait_s: float = 60) -> str:
    if healthy():
        return f"already running at {URL}"
    r = _prefect("server", "start", "--background", "--no-services", "--host", "127.0.0.1", "--port", str(PORT))
    deadline = time.time() + wait_s
    while time.time() < deadline and not healthy(1.0):
        time.sleep(0.5)
    if not healthy(1.0):
        return "failed to start: " + " ".join((r.stderr or r.stdout).split())[:300]
    return f"running at {URL} (commands use it automatically; stop with: entrainment server stop)"


def stop() -> str:
    r = _prefect("server", "stop")
    return "stopped" if not healthy() else "still running: " + " ".join((r.stderr or r.stdout).split())[:300]


def status() -> str:
    return f"running at {URL}" if healthy() else "not running (commands start a temporary server each time)"
