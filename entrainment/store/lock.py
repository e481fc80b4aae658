"""One writer per output folder: an OS file lock on ``<out>/.lock``.

``folder_lock(out)`` takes an exclusive POSIX record lock (``fcntl.lockf``) on ``<out>/.lock`` and writes the
holder's pid and command into it. A second process asking for the same folder either waits (``wait=True``; it
then finds every stage cached) or gets a one-line InputError naming the holder. The kernel releases the lock
when its holder dies, kill -9 included, so a lock left by a killed process is never stale: the next process
simply takes it (the old pid still written in the file is just overwritten). A record lock belongs to the
process, so children forked by a library (which inherit its file descriptors) never keep it alive after the
holder exits, as a ``flock`` would. Re-entrant within one process (the CLI and the flow it runs both ask for it);
the holding process never opens the file a second time (closing any descriptor of it would drop the lock).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from entrainment.errors import InputError

_HELD: dict[Path, int] = {}  # folder -> depth, for re-entrant use in one process


def holder(out: Path) -> str:
    """What the lock file says about its last holder ('pid N: command'), or ''."""
    if Path(out).resolve() in _HELD:  # ours: reading would open (and close) the file, dropping the lock
        return f"pid {os.getpid()}: {' '.join(sys.argv[:2]) or 'python'}"
    try:
        return (Path(out) / ".lock").read_text().strip()
    except OSError:
        return ""


@contextmanager
def folder_lock(out: Path, wait: bool = False, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the folder's lock for the block (wait for it, or fail with a one-line InputError)."""
    out = Path(out).resolve()
    if out in _HELD:
        _HELD[out] += 1
        try:
            yield
        finally:
            _HELD[out] -= 1
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise InputError(out, "--out", str(out), f"cannot write to the output folder ({e.strerror})") from None
    try:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:  # EAGAIN / EACCES: held by another process
                if not wait:
                    raise InputError(
                        out,
                        "--out",
                        str(out),
                        f"in use by another entrainment process ({holder(out) or 'unknown'}); "
                        "wait for it to finish or use another --out",
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv[:2]) or 'python'}\n".encode())
        _HELD[out] = 1
        try:
            yield
        finally:
            del _HELD[out]
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
