"""Never leave Prefect's temporary server running after the CLI process dies (even by kill -9).

``start()`` spawns this module as a small separate process that watches the CLI process. While the CLI
lives, it records the CLI's descendants (the temporary uvicorn server among them) every half second; when
the CLI is gone, it terminates whatever of that record is still alive (SIGTERM, then SIGKILL after 3 s) and
exits. Processes are matched by pid *and* start time, so a reused pid is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

POLL_S = 0.5


def start() -> subprocess.Popen | None:
    """Watch this process; the watchdog exits by itself once this process is gone."""
    if os.environ.get("ENTRAINMENT_NO_WATCHDOG"):
        return None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.watchdog", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
    except OSError:
        return None


def watch(parent_pid: int) -> None:
    import psutil

    try:
        parent = psutil.Process(parent_pid)
        born = parent.create_time()
    except psutil.NoSuchProcess:
        return
    me = os.getpid()
    seen: dict[int, float] = {}
    while True:
        try:
            alive = parent.is_running() and parent.create_time() == born and parent.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if not alive:
            break
        try:
            for child in parent.children(recursive=True):
                if child.pid != me:
                    seen[child.pid] = child.create_time()
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    left = []
    for pid, t in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == t:
                p.terminate()
                left.append(p)
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(left, timeout=3)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass


if __name__ == "__main__":
    watch(int(sys.argv[1]))
