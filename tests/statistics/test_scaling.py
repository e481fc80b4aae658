"""The scaling fit: equals scipy's linregress on log-log, recovers a planted power law, needs >= 3 models."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from entrainment.statistics import scaling


def test_fit_equals_linregress_on_log_log():
    n = np.array([1.1e8, 4.1e8, 1.4e9, 2.8e9, 6.9e9])
    v = np.array([2.1, 1.7, -1.2, 1.05, 0.8])  # the sign is dropped: |mean shift|
    got = scaling.fit(n, v)
    ref = sps.linregress(np.log(n), np.log(np.abs(v)))
    assert got["b"] == pytest.approx(ref.slope, abs=1e-9) and got["p_value"] == pytest.approx(ref.pvalue, abs=1e-9)
    assert got["r2"] == pytest.approx(ref.rvalue**2, abs=1e-9) and got["n_models"] == 5
    half = sps.t.ppf(0.975, 3) * ref.stderr
    assert (got["b_ci_low"], got["b_ci_high"]) == (
        pytest.approx(ref.slope - half, abs=1e-9),
        pytest.approx(ref.slope + half, abs=1e-9),
    )


def test_planted_power_law_is_recovered():
    rng = np.random.default_rng(0)
    n = np.geomspace(1e8, 1e10, 6)
    for b in (-0.33, 0.22):
        v = 3.0 * n**b * np.exp(rng.normal(0, 0.01, len(n)))
        got = scaling.fit(n, v)
        assert got["b"] == pytest.approx(b, abs=0.02) and got["b_ci_low"] < b < got["b_ci_high"] and got["r2"] > 0.99


def _stats(models: dict[str, float]) -> pl.DataFrame:
    rows = []
    for m, size in models.items():
        for cond in ("related", "random"):
            for target in ("gold", "distractor"):
                rows.append(
                    {
                        "model": m,
                        "ablation": "none",
                        "relation": "ALL",
                        "condition": cond,
                        "target": target,
                        "metric": "logprob",
                        "mean_diff": 2.0 * size**-0.3,
                        "mean_base": -5.0,
                    }
                )
    return pl.DataFrame(rows)


def test_table_needs_three_models_and_fits_each_group():
    sizes = {"a": 1e8, "b": 1e9}
    assert scaling.scaling_table(_stats(sizes), sizes) is None
    sizes["c"] = 1e10
    t = scaling.scaling_table(_stats(sizes), sizes)
    assert len(t) == 2 * 2 * 2 and set(t["kind"]) == {"raw", "normalised"}
    assert t["b"].to_numpy() == pytest.approx(np.full(len(t), -0.3), abs=1e-9)
