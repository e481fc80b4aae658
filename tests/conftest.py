"""Shared fixtures: a Prefect test server (session-wide), tiny relation files, tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# One torch thread per parallel worker (`make test`: two workers on a 2-core machine), inherited by every CLI run the
# worker starts (loading.prepare reads OMP_NUM_THREADS). Two workers of two threads each put four spinning OpenMP
# threads on two cores: tiny-model passes then stall on each other's barriers (a 5 s benchmark quick mode took 74 s
# in the suite), and far worse beside other busy processes. A single process (TEST_WORKERS=0) keeps every core.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:  # already imported (by a plugin): its thread pool may have read the old value
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

import tasks  # noqa: E402, F401  (project-local Prefect env before prefect is imported)
from tests.toy_data import toy_lre

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_sessionfinish(session, exitstatus):
    """Stop the Prefect server the session's CLI commands shared (tests/helpers.command_server_url)."""
    from tests.helpers import stop_command_server

    stop_command_server()


# The files whose shared fixtures run a whole pipeline (minutes each), measured with --durations: collected first,
# so that under `-n 2 --dist loadfile` the two workers start on them and the many short files fill the gaps after
# (collected last, a 4-minute file would run alone at the end). The order within a file is kept.
HEAVY_FIRST = (
    "test_end_to_end.py",
    "test_pipeline.py",
    "test_models.py",
    "test_concurrency.py",
    "test_stale.py",
    "test_api.py",
    "test_notebook.py",
    "test_hardening.py",
)


def pytest_collection_modifyitems(session, config, items):
    """Heavy files first (HEAVY_FIRST order), the rest in their usual order (a stable sort: deterministic, as
    pytest-xdist needs every worker to collect the same order)."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect server for every test that runs flows (about 7 s once)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def lre_dir(tmp_path: Path) -> Path:
    """A data dir with two small clean relations."""
    return toy_lre(tmp_path / "lre")
