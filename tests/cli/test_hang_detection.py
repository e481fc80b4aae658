"""The suite's subprocess runner tells a hung command from a slow one (tests/helpers.run_watched)."""

from __future__ import annotations

import sys
import time

import pytest

from tests.helpers import Hang, run_watched


def test_a_silent_idle_process_is_killed_and_reported_as_a_hang():
    code = "print('started', flush=True); import time; time.sleep(600)"
    t0 = time.monotonic()
    with pytest.raises(Hang) as e:
        run_watched([sys.executable, "-c", code], idle=3, poll=0.2)
    assert time.monotonic() - t0 < 60  # killed soon after 3 idle seconds, not after 600
    assert "no output and no CPU use for 3 s" in str(e.value) and "started" in str(e.value)


def test_a_child_that_hangs_is_killed_with_its_parent():
    """The whole process group goes: a hung grandchild cannot keep the test waiting on its pipes."""
    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(600)'])"
    t0 = time.monotonic()
    with pytest.raises(Hang):
        run_watched([sys.executable, "-c", code], idle=3, poll=0.2)
    assert time.monotonic() - t0 < 60


def test_a_polling_helper_does_not_hide_a_hang():
    """The CLI's watchdog and Prefect's idle server poll a little: a hung command beside them is still a hang."""
    poller = "import time\nwhile True:\n    sum(range(2000)); time.sleep(0.2)"
    code = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {poller!r}]); time.sleep(600)"
    with pytest.raises(Hang):
        run_watched([sys.executable, "-c", code], idle=4, poll=0.2)


def test_a_slow_but_busy_process_is_not_killed():
    """Six seconds of silent computation with idle = 2: its CPU time grows, so it is making progress."""
    code = "import time\nt = time.time()\nwhile time.time() - t < 6: pass\nprint('done')"
    r = run_watched([sys.executable, "-c", code], idle=2, poll=0.2)
    assert r.returncode == 0 and r.stdout.strip() == "done"


def test_a_process_that_keeps_printing_is_not_killed():
    """Sleeping between lines (no CPU) but printing every second with idle = 2: progress."""
    code = "import time\nfor i in range(6):\n    print(i, flush=True); time.sleep(1)"
    r = run_watched([sys.executable, "-c", code], idle=2.5, poll=0.2)
    assert r.returncode == 0 and r.stdout.split() == [str(i) for i in range(6)]


def test_output_stdin_and_exit_status_pass_through():
    code = "import sys; data = sys.stdin.read(); print(data.upper()); print('err', file=sys.stderr); sys.exit(3)"
    r = run_watched([sys.executable, "-c", code], input="abc")
    assert (r.returncode, r.stdout.strip(), r.stderr.strip()) == (3, "ABC", "err")


def test_a_ceiling_stops_a_spinning_process():
    code = "while True: pass"
    with pytest.raises(Hang) as e:
        run_watched([sys.executable, "-c", code], idle=60, ceiling=3, poll=0.2)
    assert "still running after 3 s" in str(e.value)
