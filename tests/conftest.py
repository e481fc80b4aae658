"""Shared fixtures: a Prefect test server (session-wide), tiny relation files, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tasks  # noqa: F401  (project-local Prefect env before prefect is imported)
from tests.toy_data import toy_lre

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_sessionfinish(session, exitstatus):
    """Stop the Prefect server the session's CLI commands shared (tests/helpers.command_server_url)."""
    from tests.helpers import stop_command_server

    stop_command_server()


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
