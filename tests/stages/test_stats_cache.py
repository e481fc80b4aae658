"""A change to the stats code recomputes stats without re-measuring."""

from __future__ import annotations

from entrainment.config import Config
from tests import tiny
from tests.helpers import state_names


def test_stats_code_change_reruns_only_stats(prefect_api, tmp_path, lre_dir, monkeypatch, request):
    from flows.generate import generate_flow
    from flows.measure import measure_flow
    from flows.stats import stats_flow

    cfg = Config(
        out=tmp_path / "out",
        data_dir=lre_dir,
        relations=("toy capital", "toy color"),
        max_pairs=6,
        model=tiny.save("llama", tmp_path / "model"),
    )
    generate_flow(cfg)
    measure_flow(cfg)
    assert state_names(stats_flow(cfg, return_state=True)) == ["Completed"]
    assert state_names(stats_flow(cfg, return_state=True)) == ["Cached"]

    import tasks.cache as cache

    real = cache.imports.module_files
    copy = tmp_path / "stats_edited.py"

    def edited(root):  # the project as it would be with one line added to entrainment/stats.py
        files = dict(real(root))
        copy.write_text(files["entrainment.stages.stats"].read_text() + "\n# an edit to the stats code\n")
        return files | {"entrainment.stages.stats": copy}

    monkeypatch.setattr(cache.imports, "module_files", edited)
    cache.code_hash.cache_clear()
    request.addfinalizer(cache.code_hash.cache_clear)
    m_state = measure_flow(cfg, return_state=True)
    assert set(state_names(m_state)) == {"Cached"}
    assert state_names(stats_flow(cfg, return_state=True)) == ["Completed"]
