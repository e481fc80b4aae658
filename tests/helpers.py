"""Shared test helpers: run a command the way a user does, and tell a slow run from a hung one.

A subprocess test on a busy laptop can take many times its quiet time, so no wall-clock limit decides whether a
command failed. ``run_watched`` watches for *progress* instead: new bytes on stdout or stderr, or CPU time used by
the process and its children (at least 5% of one core over the window: a watchdog's or an idle server's polling
stays below that). A command that shows neither for ``idle`` seconds is hung: its process group is
killed and the test fails with ``Hang``. A slow but healthy command (it computes, so its CPU time grows; or it
prints) is never killed, however loaded the machine is. ``ceiling`` is a last-resort bound for a command that spins
without output (one hour by default: far above any test command's time on a machine loaded 3x).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
IDLE_S = 300.0  # no output and no CPU use for 5 minutes: hung (a healthy stage is never that still)
CEILING_S = 3600.0
# prompts of several lengths (padding matters) shared by the scoring tests
TEXTS = [
    "The capital of France is the city of",
    "window. The capital of Germany is the city of",
    "On the outside, bananas are",
    "Rome.",
    "The capital city of Italy is Rome. The capital of Peru is",
]
MIN_CPU_SHARE = 0.05  # below 5% of one core over the idle window counts as "no CPU use" (a watchdog's or an idle
# server's polling stays under it; a healthy run on a machine loaded 10x gets more)


class Hang(AssertionError):
    """A command stopped making progress (no output, no CPU use) and was killed."""


def _cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of a process and all its live descendants (0 for one that is gone)."""
    total = 0.0
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in family:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _pump(stream, sink: list[bytes], stamp: list[float]) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        sink.append(chunk)
        stamp[0] = time.monotonic()


def run_watched(
    cmd: Sequence[str],
    *,
    cwd: Path = ROOT,
    env: dict | None = None,
    input: str | None = None,
    idle: float = IDLE_S,
    ceiling: float = CEILING_S,
    poll: float = 1.0,
) -> subprocess.CompletedProcess:
    """Run `cmd` to completion unless it hangs.

    Args:
        cmd: the command and its arguments.
        cwd: working folder.
        env: environment (default: this process's).
        input: text written to stdin (then closed).
        idle: seconds without new output and without CPU use after which the command counts as hung.
        ceiling: seconds after which even a busy command is stopped (a spin without output).
        poll: seconds between progress checks.

    Returns:
        The CompletedProcess with text stdout and stderr.

    Raises:
        Hang: the command made no progress for `idle` seconds, or ran past `ceiling`; it was killed.
    """
    p = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    out: list[bytes] = []
    err: list[bytes] = []
    stamp = [time.monotonic()]
    pumps = [
        threading.Thread(target=_pump, args=(s, b, stamp), daemon=True) for s, b in ((p.stdout, out), (p.stderr, err))
    ]
    for t in pumps:
        t.start()
    if input is not None:
        p.stdin.write(input.encode())
        p.stdin.close()
    watched = psutil.Process(p.pid)
    start = time.monotonic()
    samples: deque[tuple[float, float]] = deque([(start, 0.0)])  # (time, CPU seconds of the process tree)
    why = None
    while p.poll() is None:
        time.sleep(poll)
        now = time.monotonic()
        samples.append((now, _cpu_seconds(watched)))
        while len(samples) > 2 and samples[1][0] <= now - idle:
            samples.popleft()  # keep one sample at least `idle` seconds old
        then, cpu_then = samples[0]
        quiet = now - max(stamp[0], start) > idle and now - then >= idle
        if quiet and (samples[-1][1] - cpu_then) / (now - then) < MIN_CPU_SHARE:
            why = f"no output and no CPU use for {idle:.0f} s"
        elif now - start > ceiling:
            why = f"still running after {ceiling:.0f} s"
        if why:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
            break
    for t in pumps:
        t.join(timeout=10)
    stdout = b"".join(out).decode(errors="replace")
    stderr = b"".join(err).decode(errors="replace")
    if why:
        raise Hang(f"hang: {why}: {' '.join(map(str, cmd))[:300]}\nlast output: {(stdout + stderr)[-1500:]}")
    return subprocess.CompletedProcess(list(cmd), p.returncode, stdout, stderr)


# ---- one Prefect server for the session's commands -------------------------------------------------------------------
# Without PREFECT_API_URL every `entrainment` command starts Prefect's temporary server (about 8 s of a 2-core
# machine's time, most of a tiny command's run). ``cli`` points its commands at one server started on first use and
# stopped at the end of the session (conftest.py), as `entrainment server start` does for a user. Commands run with
# an explicit ``env`` and the tests that start processes themselves keep the temporary server, so that path stays
# tested; ENTRAINMENT_TEST_TEMPORARY_SERVERS=1 gives every command its own temporary server again.
_SERVER: dict = {}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1.0) as r:
            return r.status == 200
    except OSError:
        return False


def command_server_url(wait_s: float = 180.0) -> str | None:
    """The session's Prefect API URL for CLI subprocesses (the server starts on the first call); None when the
    server could not start (commands then use temporary servers) or ENTRAINMENT_TEST_TEMPORARY_SERVERS is set."""
    if os.environ.get("ENTRAINMENT_TEST_TEMPORARY_SERVERS") == "1":
        return None
    if "url" in _SERVER:
        return _SERVER["url"]
    import tempfile

    port = _free_port()
    home = Path(tempfile.mkdtemp(prefix="entrainment-test-prefect-"))
    exe = Path(sys.executable).with_name("prefect")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        cmd + ["server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services"],
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and proc.poll() is None and not _healthy(url):
        time.sleep(0.5)
    _SERVER.update(proc=proc, url=url if proc.poll() is None and _healthy(url) else None)
    if _SERVER["url"] is None:
        stop_command_server()
        _SERVER["url"] = None
    return _SERVER["url"]


def stop_command_server() -> None:
    """Stop the session's server (and its children), if one was started."""
    proc = _SERVER.pop("proc", None)
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def cli(
    *args: str, cwd: Path = ROOT, env: dict | None = None, input: str | None = None, idle: float = IDLE_S
) -> subprocess.CompletedProcess:
    """`entrainment <args>` as a real subprocess (the project's CLI module), watched for hangs.

    Args:
        args: the command line after `entrainment`.
        cwd: working folder.
        env: the environment; None = this process's, with the session's Prefect server (``command_server_url``).
        input: text for stdin.
        idle: seconds without progress that count as a hang.
    Returns:
        The CompletedProcess.
    """
    if env is None and not os.environ.get("PREFECT_API_URL"):
        url = command_server_url()
        env = dict(os.environ, PREFECT_API_URL=url) if url else None
    return run_watched([sys.executable, "-m", "cli.app", *args], cwd=cwd, env=env, input=input, idle=idle)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    """Assert a bad-input exit: status 2 and exactly one stderr line holding every needle."""
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-500:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def one_line_failure(r: subprocess.CompletedProcess, *needles: str) -> None:
    """A failure outside the input: exit 1, no traceback, one error line naming the cause (a stage's INFO log lines
    may come with it)."""
    assert r.returncode == 1, (r.returncode, r.stderr[-1500:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and errors[0].startswith("entrainment: error: "), r.stderr[-3000:]
    for n in needles:
        assert n in errors[0], (n, errors[0])


@contextmanager
def tmpfs(where: Path, options: str):
    """A small tmpfs mounted at `where` for the block (skips the test where mounting is not allowed)."""
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


def settled_task_runs(read, settle_s: float = 15.0) -> list:
    """Task runs from the Prefect API once the server's record has settled. Prefect writes task-run states to its
    server in the background, so a flow's last task can still be running there after the flow has returned (seen on
    a busy machine: the report task missing from a run's completed tasks). Reads until every run is in a final state
    and two reads 0.5 s apart agree, or `settle_s` has passed.

    Args:
        read: a call that reads the task runs (a Prefect client's ``read_task_runs`` with its filter).
        settle_s: the longest wait.
    Returns:
        The last read's task runs.
    """
    deadline, last = time.monotonic() + settle_s, None
    while True:
        runs = read()
        seen = sorted((str(r.id), r.state.name if r.state else "") for r in runs)
        if seen == last and all(r.state and r.state.is_final() for r in runs):
            return runs
        if time.monotonic() > deadline:
            open_ = sorted(
                {f"{r.name}: {r.state.name if r.state else None}" for r in runs if not (r.state and r.state.is_final())}
            )
            warnings.warn(f"task runs not settled after {settle_s:.0f} s: {open_[:5]}", stacklevel=2)
            return runs
        last = seen
        time.sleep(0.5)


def state_names(flow_state) -> list[str]:
    """The sorted state names of a flow run's task runs (read from the Prefect API once settled)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id]))
    with get_client(sync_client=True) as c:
        runs = settled_task_runs(lambda: c.read_task_runs(flow_run_filter=flow_filter))
    return sorted(r.state.name for r in runs)
