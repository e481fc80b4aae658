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
    assert len(t) == 2 * 2 * 3 and set(t["kind"]) == {"raw", "normalised", "no_context"}
    shifts = t.filter(pl.col("kind") != "no_context")
    assert shifts["b"].to_numpy() == pytest.approx(np.full(len(shifts), -0.3), abs=1e-9)
    # the control: the no-context value itself (-5 in every model here: no trend with size)
    assert t.filter(pl.col("kind") == "no_context")["b"].to_numpy() == pytest.approx(np.zeros(4), abs=1e-9)


def _sentence_stats(sizes: dict[str, float], sign: dict[str, float] | None = None) -> pl.DataFrame:
    rows = []
    for m, size in sizes.items():
        for measure, b in (("self", -0.2), ("net", 0.1)):
            for ablation in ("stable:r:abc", "none"):
                rows.append(
                    {
                        "model": m,
                        "relation": "ALL",
                        "condition": "related",
                        "measure": measure,
                        "ablation": ablation,
                        "mean": (sign or {}).get(m, 1.0) * 0.5 * size**b * (1 if ablation == "none" else 9),
                    }
                )
        rows.append(dict(rows[-2], relation="r1", mean=123.0))  # an intact per-relation row: never fitted
    return pl.DataFrame(rows)


def test_sentence_measures_are_fitted_per_condition_and_measure():
    sizes = {"a": 1e8, "b": 1e9}
    assert scaling.sentence_table(_sentence_stats(sizes), sizes) is None  # two models: no fit
    sizes["c"] = 1e10
    t = scaling.sentence_table(_sentence_stats(sizes), sizes).sort("measure")
    assert t["measure"].to_list() == ["net", "self"] and set(t["n_models"]) == {3}
    assert t["b"].to_list() == pytest.approx([0.1, -0.2], abs=1e-9)  # the intact rows only: ablated ones differ
    assert t["same_sign"].all() and t["models"][0] == "a,b,c"
    mixed = scaling.sentence_table(_sentence_stats(sizes, {"b": -1.0}), sizes)
    assert not mixed["same_sign"].any()  # |mean| fits, flagged: the signs differ across models
    models = pl.DataFrame({"model": list(sizes), "n_params": [1, 2, 3], "n_params_non_embedding": [1e8, 1e9, 1e10]})
    both = scaling.sentence_tables_for(_sentence_stats(sizes), models)
    assert set(both["size"]) == {"n_params", "n_params_non_embedding"}
    ne = both.filter((pl.col("size") == "n_params_non_embedding") & (pl.col("measure") == "self"))
    assert ne["b"][0] == pytest.approx(-0.2, abs=1e-9)
