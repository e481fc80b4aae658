"""Where disagreement between searches comes from: the pairs each component compares, the selection redraws, the CIs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from entrainment.heads import disagreement, search, stability


def test_the_pairs_each_component_compares():
    keys = [("m", "r", s, r) for s in (0, 1) for r in range(5)]
    assert disagreement.pairs_of(keys, "optimiser") == [(("m", "r", 0, 0), ("m", "r", 1, 0))]  # same data only
    data = disagreement.pairs_of(keys, "data")
    assert data == [(("m", "r", s, r), ("m", "r", s, r + 1)) for s in (0, 1) for r in (1, 3)]  # complementary halves
    assert disagreement.pairs_of(keys[:2] + [("m", "q", 0, 0)], "optimiser") == []  # never across relations
    with pytest.raises(ValueError):
        disagreement.pairs_of(keys, "nope")


def test_complementary_pairs_are_subject_disjoint():
    items = [search.Item([1, 2, i], 3, 4, f"s{i % 6}") for i in range(12)]
    a, b = search.half_sample(items, 1, 0), search.half_sample(items, 2, 0)
    assert not {it.subject for it in a} & {it.subject for it in b} and len(a) + len(b) == len(items)


def test_without_noise_the_reselection_is_the_search_s_own_choice():
    log = pl.DataFrame(
        {"epoch": [0, 1, 2, 3], "dev_delta": [1.0, 3.0, 2.9, 2.0], "dev_se": [0.0] * 4, "n_removed": [0, 4, 2, 1]}
    )
    rule = lambda rows: search.select_epoch(rows, rule="one_se")  # noqa: E731
    assert set(disagreement.reselect(log, rule, 20, "k")) == {1}  # se 0: the best epoch every time
    noisy = disagreement.reselect(log.with_columns(dev_se=pl.lit(0.5)), rule, 200, "k")
    assert len(set(noisy)) > 1 and noisy == disagreement.reselect(log.with_columns(dev_se=pl.lit(0.5)), rule, 200, "k")


def _search(seed: int, resample: int, removed_per_epoch: list[set], selected: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    heads = [(layer, head) for layer in range(3) for head in range(4)]
    log, masks = [], []
    for e, rem in enumerate(removed_per_epoch):
        log.append(
            {"model": "m", "relation": "r", "seed": seed, "resample": resample, "epoch": e, "dev_delta": float(e),
             "dev_se": 0.0, "n_removed": len(rem), "selected": e == selected, "selection_rule": "one_se"}
        )  # fmt: skip
        for i, (layer, head) in enumerate(heads):
            logit = -1.0 - i / 10 if (layer, head) in rem else 1.0 + i / 10 + seed
            masks.append(
                {"model": "m", "relation": "r", "seed": seed, "resample": resample, "epoch": e, "layer": layer,
                 "head": head, "mask_logit": logit, "removed": (layer, head) in rem}
            )  # fmt: skip
    return pl.DataFrame(log), pl.DataFrame(masks)


def test_decompose_compares_the_chosen_masks_with_the_chance_correction():
    a = {(0, 0), (0, 1)}
    parts = [
        _search(0, 0, [set(), a], 1),
        _search(1, 0, [set(), {(0, 0), (2, 3)}], 1),  # same data, other seed
        _search(0, 1, [set(), {(1, 1)}], 1),
        _search(0, 2, [set(), {(1, 1), (1, 2)}], 1),  # its complementary half
    ]
    log, masks = pl.concat([p[0] for p in parts]), pl.concat([p[1] for p in parts])
    rows = disagreement.decompose(log, masks, {"m": 12}, lambda r, name: search.select_epoch(r, rule=name), draws=5)
    got = {r["component"]: r for r in rows}
    assert set(got) == {"optimiser", "data", "selection"}
    chance = stability.expected_jaccard(2, 2, 12)
    assert got["optimiser"]["jaccard_corrected"] == pytest.approx((1 / 3 - chance) / (1 - chance))
    chance_12 = stability.expected_jaccard(1, 2, 12)
    assert got["data"]["jaccard_corrected"] == pytest.approx((1 / 2 - chance_12) / (1 - chance_12))
    assert got["optimiser"]["n"] == 1 and np.isnan(got["optimiser"]["jaccard_corrected_ci_low"])  # 2 searches: no CI
    assert got["selection"]["n"] == 4 and got["selection"]["jaccard_corrected"] == pytest.approx(1.0)  # se 0: own pick


def test_identical_empty_choices_agree_and_bootstrap_resamples_have_no_data_part():
    parts = [
        _search(0, 0, [set(), {(0, 0)}], 0),  # selects the empty set (epoch 0)
        _search(1, 0, [set(), {(0, 1)}], 0),
        _search(2, 0, [set(), {(0, 2)}], 0),
        _search(0, 1, [set()], 0),
        _search(0, 2, [set()], 0),
    ]
    log, masks = pl.concat([p[0] for p in parts]), pl.concat([p[1] for p in parts])
    log = log.with_columns(dev_delta=-pl.col("epoch").cast(pl.Float64))  # the rule itself keeps epoch 0
    rule = lambda r, name: search.select_epoch(r, rule=name)  # noqa: E731
    got = {r["component"]: r for r in disagreement.decompose(log, masks, {"m": 12}, rule, draws=5)}
    # every choice is the empty set: identical, so full agreement (not 0/0 dropped, not 0)
    assert got["optimiser"]["jaccard_corrected"] == 1.0 and got["optimiser"]["n"] == 3  # 3 pairs of 3 full searches
    assert got["data"]["jaccard_corrected"] == 1.0 and got["selection"]["jaccard_corrected"] == 1.0
    boot = disagreement.decompose(log, masks, {"m": 12}, rule, draws=5, resampling="bootstrap")
    assert "data" not in {r["component"] for r in boot}  # resamples 1, 2 are not complementary halves then
