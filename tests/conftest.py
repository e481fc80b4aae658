"""Shared fixtures: a Prefect test server (session-wide), tiny relation files, tiny models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import tasks  # noqa: F401  (project-local Prefect env before prefect is imported)

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


def write_relation(folder: Path, fname: str, name: str, samples: list[dict] | None = None, **over) -> Path:
    """A relation file in LRE format; `over` replaces top-level fields."""
    data = {
        "name": name,
        "prompt_templates": ["The capital city of {} is"],
        "prompt_templates_zs": ["The capital of {} is the city of"],
        "properties": {"relation_type": "factual", "domain_name": "country", "range_name": "city", "symmetric": False},
        "samples": samples
        if samples is not None
        else [
            {"subject": s, "object": o}
            for s, o in [
                ("France", "Paris"),
                ("Germany", "Berlin"),
                ("Italy", "Rome"),
                ("Spain", "Madrid"),
                ("Japan", "Tokyo"),
                ("Egypt", "Cairo"),
                ("Peru", "Lima"),
                ("Chile", "Santiago"),
                ("Russia", "Moscow"),
                ("China", "Beijing"),
            ]
        ],
    }
    data.update(over)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / fname
    path.write_text(json.dumps(data, indent=1))
    return path


def toy_lre(d: Path) -> Path:
    """Two small clean relations, `toy capital` and `toy color`, under d."""
    write_relation(d / "factual", "capitals.json", "toy capital")
    write_relation(
        d / "commonsense",
        "colors.json",
        "toy color",
        [
            {"subject": s, "object": o}
            for s, o in [
                ("bananas", "yellow"),
                ("limes", "green"),
                ("plums", "purple"),
                ("cherries", "red"),
                ("oranges", "orange"),
                ("kiwis", "brown"),
                ("grapes", "green"),
                ("tomatoes", "red"),
            ]
        ],
        prompt_templates=["On the outside, {} are"],
        prompt_templates_zs=["What color are {}? They are"],
        properties={"relation_type": "commonsense", "domain_name": "fruit", "range_name": "color"},
    )
    return d


@pytest.fixture
def lre_dir(tmp_path: Path) -> Path:
    """A data dir with two small clean relations."""
    return toy_lre(tmp_path / "lre")
