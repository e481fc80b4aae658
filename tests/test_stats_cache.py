"""A change to the stats code recomputes stats without re-measuring."""

from __future__ import annotations

import inspect


from entrainment.config import Config
from tests import tiny
from tests.test_generate_cache import _state_names


def test_stats_code_change_reruns_only_stats(prefect_api, tmp_path, lre_dir, monkeypatch):
    from flows.generate import generate_flow
    from flows.measure import measure_flow
    from flows.stats import stats_flow

    cfg = Config(out=tmp_path / "out", data_dir=lre_dir, relations=("toy capital", "toy color"), max_pairs=6,
                 model=tiny.save("llama", tmp_path / "model"))
    generate_flow(cfg)
    measure_flow(cfg)
    assert _state_names(stats_flow(cfg, return_state=True)) == ["Completed"]
    assert _state_names(stats_flow(cfg, return_state=True)) == ["Cached"]

    import entrainment.stats

    real = inspect.getsource

    def edited(obj):
        src = real(obj)
        return src + "\n# an edit to the stats code\n" if obj is entrainment.stats else src

    monkeypatch.setattr("tasks.cache.inspect.getsource", edited)
    m_state = measure_flow(cfg, return_state=True)
    assert set(_state_names(m_state)) == {"Cached"}
    assert _state_names(stats_flow(cfg, return_state=True)) == ["Completed"]
