"""How the command line ends: one line on stderr for every known kind of failure, never a traceback.

Exit status 2: bad input (``InputError``, a usage error). Exit status 1: a failure with a known cause outside the
input -- a full disk, a closed or full stdout, an unreachable Prefect API. 130: interrupted.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from entrainment.errors import InputError
from entrainment.store.files import no_space


def _say(text: str) -> None:
    try:
        print(f"entrainment: {text}", file=sys.stderr)
    except OSError:  # stderr is gone too: nothing left to tell
        pass


def _quiet_stdout() -> None:
    """After stdout failed, point it at /dev/null so the interpreter's final flush cannot raise again."""
    if sys.stdout is None:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _cause(e: BaseException) -> BaseException:
    """The innermost exception of a chain (Prefect wraps task failures)."""
    seen = set()
    while (e.__cause__ or e.__context__) is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return e


def known_failure(e: BaseException) -> str | None:
    """A one-line description of a failure whose cause is known, else None."""
    from cli.output import StdoutError

    chain, seen = [], set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:  # the whole chain: Prefect wraps the cause in its own errors
        seen.add(id(x))
        chain.append(x)
        x = x.__cause__ or x.__context__
    for x in chain:
        if isinstance(x, StdoutError):
            return f"{x}: its output was not printed (any table the command wrote is saved)"
        if isinstance(x, BrokenPipeError):
            return "stdout was closed before the output was written"
        full, filename = no_space(x)  # ENOSPC, or PyTorch's failed write under torch.save
        if full:
            where = f" ({filename})" if filename else ""
            return (
                f"no space left on the device while writing{where}; free some space and rerun "
                "(finished shards are kept)"
            )
        names = {c.__name__ for c in type(x).__mro__}
        if names & {"ConnectError", "ConnectTimeout", "PrefectHTTPStatusError"} or (
            isinstance(x, RuntimeError)
            and "api" in str(x).lower()
            and any(w in str(x).lower() for w in ("connect", "reach"))
        ):  # "Failed to reach API at ..."
            url = os.environ.get("PREFECT_API_URL", "")
            return (
                f"cannot reach the Prefect API{' at ' + url if url else ''} ({type(x).__name__}); start that "
                "server or unset PREFECT_API_URL"
            )
    return None


def _hold_closed_std_fds() -> None:
    """A standard descriptor (0, 1, 2) the command was started without is pointed at /dev/null, so that no file opened
    later (a table, the Prefect database) gets its number and receives output meant for the terminal (a child process
    inherits it as its stdout). ``sys.stdout`` stays None: printing the result then fails with one line."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                held = os.open(os.devnull, os.O_RDWR)
                if held != fd:
                    os.dup2(held, fd)
                    os.close(held)
            except OSError:
                pass


def run_main(app: Any) -> None:
    """Run the typer app with the exit codes above."""
    from cli.output import GuardedStdout, StdoutError

    _hold_closed_std_fds()
    if sys.stdout is not None and not isinstance(sys.stdout, GuardedStdout):
        sys.stdout = GuardedStdout(sys.stdout)
    if len(sys.argv) > 1 and sys.argv[1] not in ("sql", "models", "server", "plan", "--help", "-h"):
        from cli.watchdog import start

        start()  # Prefect's temporary server must not outlive this process, even after kill -9
    if len(sys.argv) == 1:
        app()  # no arguments: the help text
    try:
        code = app(standalone_mode=False)
    except InputError as e:
        _say(f"error: {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        _say("interrupted")
        sys.exit(130)
    except Exception as e:  # click's (or typer's vendored click's) usage errors: one line, not a box
        kinds = {c.__name__ for c in type(e).__mro__}
        if "UsageError" in kinds:
            hint = f" (see: entrainment {sys.argv[1]} --help)" if len(sys.argv) > 1 else ""
            _say(f"error: {' '.join(e.format_message().split())}{hint}")
            sys.exit(2)
        if "Abort" in kinds:
            _say("interrupted")
            sys.exit(130)
        inner = _cause(e)
        if isinstance(inner, InputError):
            _say(f"error: {inner}")
            sys.exit(2)
        why = known_failure(e)
        if why is None:
            raise
        if "stdout" in why:
            _quiet_stdout()  # the interpreter's final flush must not raise again
        _say(f"error: {why}")
        sys.exit(1)
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, StdoutError) as e:
        _quiet_stdout()
        _say(f"error: {known_failure(e) or e}")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
