"""The generate task's cache: a hit does not rewrite; a deleted/corrupted output is recomputed."""

from __future__ import annotations

import pytest

from entrainment.config import Config
from flows.generate import generate_flow
from tests.helpers import state_names


@pytest.fixture
def cfg(tmp_path, lre_dir):
    return Config(out=tmp_path / "out", data_dir=lre_dir, relations=("toy capital", "toy color"), max_pairs=8)


def test_cache_hit_then_recompute_after_delete_and_corruption(prefect_api, cfg, lre_dir):
    s1 = generate_flow(cfg, return_state=True)
    path = cfg.out / "prompts.parquet"
    first = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    assert state_names(s1) == ["Completed"]

    s2 = generate_flow(cfg, return_state=True)  # nothing changed: cached, file untouched
    assert state_names(s2) == ["Cached"]
    assert path.stat().st_mtime_ns == mtime

    path.unlink()  # deleted output: recomputed, same bytes
    s3 = generate_flow(cfg, return_state=True)
    assert path.read_bytes() == first and "Completed" in state_names(s3)

    path.write_bytes(b"garbage")  # corrupted output: recomputed
    generate_flow(cfg, return_state=True)
    assert path.read_bytes() == first

    # a changed input file reruns the stage
    f = lre_dir / "factual" / "capitals.json"
    f.write_text(f.read_text().replace("Paris", "Lutetia"))
    s5 = generate_flow(cfg, return_state=True)
    assert state_names(s5) == ["Completed"] and path.read_bytes() != first

    # --refresh forces a rerun
    s6 = generate_flow(cfg.replace(refresh=True), return_state=True)
    assert state_names(s6) == ["Completed"]
