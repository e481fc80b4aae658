"""Searches that converge and agree (issue #31): per-row Gumbel samples, equal-size batches, a step budget with a
convergence test, the one-standard-error selection rule, subject half-samples, chance-corrected agreement, the
Meinshausen-Buehlmann bound, and many searches in one batched pass."""

from __future__ import annotations

import importlib
import itertools
import random

import numpy as np
import pytest
import torch

from entrainment.heads import random_heads, search, stability
from entrainment.heads.search import SearchParams
from entrainment.model.tokens import Item
from tests import tiny
from tests.tiny import copy_head_model
from tests.toy_data import search_items


def test_gumbel_samples_differ_across_rows_and_repeat_with_the_seed():
    logits = torch.zeros(3, 4)
    a = search.gumbel_sigmoid_st(logits, 1.0, torch.Generator().manual_seed(5), rows=16)
    b = search.gumbel_sigmoid_st(logits, 1.0, torch.Generator().manual_seed(5), rows=16)
    c = search.gumbel_sigmoid_st(logits, 1.0, torch.Generator().manual_seed(6), rows=16)
    assert a.shape == (16, 3, 4) and torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(r.flatten().tolist()) for r in a}) == 16  # every row its own mask
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    # the per-row rate follows sigmoid(l / tau): logit 2 keeps ~88% of the heads across rows
    keep = search.gumbel_sigmoid_st(torch.full((4, 8), 2.0), 1.0, torch.Generator().manual_seed(0), rows=2000)
    assert float(keep.mean()) == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))), abs=0.01)


def test_search_hands_the_hook_one_mask_per_row(monkeypatch):
    m = tiny.model("llama")
    seen = []
    real = search.step_losses

    def spy(loaded, batches, scales, *a, **k):
        seen.append([tuple(s.shape) for s in scales])
        return real(loaded, batches, scales, *a, **k)

    monkeypatch.setattr(search, "step_losses", spy)
    items = search_items(m, 10)
    search.search(m, items, items[:4], SearchParams(epochs=1, batch_size=4, max_steps=3, converge_steps=100))
    assert seen and all(s == [(4, m.info.n_layers, m.info.n_heads)] for s in seen)


@pytest.mark.parametrize("n,bs", [(50, 16), (48, 16), (7, 16), (17, 4)])
def test_batches_have_equal_size_and_cover_every_item(n, bs):
    items = [Item(tuple(range(1 + i % 5)), i, i + 1000) for i in range(n)]
    for epoch in range(3):
        batches = search.make_batches(items, bs, random.Random(f"e{epoch}"))
        b = min(bs, n)
        assert {len(x) for x in batches} == {b} and len(batches) == -(-n // b)
        seen = [it for x in batches for it in x]
        assert set(seen) == set(items) and len(seen) - n < b  # every item once, the remainder filled up
    assert search.make_batches(items, bs, random.Random(1)) == search.make_batches(items, bs, random.Random(1))


def test_convergence_test_on_a_synthetic_mask_sequence():
    z = torch.zeros(2, 2, dtype=torch.bool)
    a, b = torch.tensor([[1, 0], [0, 0]]).bool(), torch.tensor([[1, 1], [0, 0]]).bool()
    # unchanged start (never moved) does not converge; then a, b, b, b, b
    seq = [z, z, z, z, a, b, b, b, b]
    assert search.converged_at(seq[:4], 2) is None
    assert search.converged_at(seq, 3) == 8 and search.converged_at(seq, 2) == 7 and search.converged_at(seq, 4) is None


def test_the_convergence_test_stops_where_the_mask_stops_changing():
    m = copy_head_model()
    items = search_items(m, 8)
    # batch = every item: one step per epoch, so the history holds the mask after every step
    base = dict(batch_size=8, lam=0.0, init=1.0, epochs=1000, seed=2)
    free_rows, free = search.search(m, items, items, SearchParams(max_steps=40, converge_steps=10**6, **base))
    assert not free_rows[-1]["converged"] and free_rows[-1]["step"] == 40
    masks = [h <= 0 for h in free]
    stop = search.converged_at(masks, 5)
    assert stop is not None and stop < 40
    rows, hist = search.search(m, items, items, SearchParams(max_steps=40, converge_steps=5, **base))
    assert rows[-1]["converged"] and rows[-1]["step"] == stop and len(hist) == stop + 1
    assert all(torch.equal(x, y) for x, y in zip(hist, free))  # the same trajectory, stopped there
    assert not any(r["converged"] for r in rows[:-1])


def test_the_budget_is_counted_in_optimiser_steps():
    m = tiny.model("llama")
    items = search_items(m, 10)  # batches of 4: 3 steps per epoch
    rows, _ = search.search(m, items, items[:4], SearchParams(epochs=100, batch_size=4, max_steps=7, converge_steps=99))
    assert [r["step"] for r in rows] == [0, 3, 6, 7] and [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert not rows[-1]["converged"]


def test_warm_up_scales_the_first_steps_and_then_runs_at_lr():
    p = SearchParams(lr=0.5, warmup_steps=4)
    assert [search.step_lr(p, t) for t in (1, 2, 4, 9)] == [0.125, 0.25, 0.5, 0.5]
    assert search.step_lr(SearchParams(lr=0.5), 1) == 0.5
    m = copy_head_model()
    items = search_items(m, 8)
    base = dict(batch_size=8, lam=0.0, init=1.0, epochs=1000, seed=2, max_steps=1, converge_steps=10**6)
    # batch = every item: one step per epoch; Adam's first step moves every logit with a gradient by about lr
    _, cold = search.search(m, items, items, SearchParams(lr=0.5, **base))
    _, warm = search.search(m, items, items, SearchParams(lr=0.5, warmup_steps=10, **base))
    cold_move, warm_move = [(h[1] - h[0]).abs() for h in (cold, warm)]
    moved = cold_move > 1e-3
    assert moved.any()
    assert torch.allclose(cold_move[moved], torch.full_like(cold_move[moved], 0.5), atol=1e-3)
    assert torch.allclose(warm_move[moved], torch.full_like(warm_move[moved], 0.05), atol=1e-4)


def _trajectory(means: list[float], removed: list[int], sd: float, n_subjects: int, seed: int = 0) -> list[dict]:
    """Log rows whose dev Δ is the mean over n_subjects subjects (4 items each) of N(mean, sd) subject effects."""
    rng = np.random.default_rng(seed)
    groups = [f"s{i}" for i in range(n_subjects) for _ in range(4)]
    z = rng.normal(0, 1, n_subjects)
    subject = sd * (z - z.mean()) / z.std(ddof=1)  # subject effects with sample sd exactly `sd`
    rows = []
    for e, (mu, k) in enumerate(zip(means, removed)):
        vals = mu + np.repeat(subject, 4) + rng.normal(0, 0.01, len(groups))
        vals += mu - vals.mean()  # the epoch's dev Δ is exactly mu
        rows.append(
            {"epoch": e, "dev_delta": float(vals.mean()), "n_removed": k, "dev_se": search.subject_se(vals, groups)}
        )
    return rows


def test_one_se_rule_picks_the_expected_epoch_under_known_noise():
    means = [6.0, 6.2, 7.1, 7.3, 7.35, 7.0]
    removed = [0, 0, 1, 4, 9, 2]
    quiet = _trajectory(means, removed, sd=0.05, n_subjects=30)  # SE ~ 0.01: only the best epoch is within reach
    assert quiet[4]["dev_se"] == pytest.approx(0.05 / np.sqrt(30), rel=0.35)
    assert search.select_epoch(quiet) == 4
    mid = _trajectory(means, removed, sd=0.8, n_subjects=30)  # SE ~ 0.15: 7.3 (4 heads) and 7.1 are not, 7.3 is
    assert 0.1 < mid[4]["dev_se"] < 0.2 and search.select_epoch(mid) == 3
    noisy = _trajectory(means, removed, sd=4.0, n_subjects=5)  # SE ~ 1.6: the intact model is as good
    assert noisy[4]["dev_se"] > 1.4 and search.select_epoch(noisy) == 0
    # the old rule ignores the noise: 5% of 7.35 always admits the one-head epoch 2
    assert search.select_epoch(quiet, rule="within_5pct") == search.select_epoch(noisy, rule="within_5pct") == 2
    with pytest.raises(ValueError):
        search.select_epoch(quiet, rule="nope")


def test_subject_se_resamples_subjects_not_items():
    rng = np.random.default_rng(1)
    subject = rng.normal(0, 1.0, 40)
    vals = np.repeat(subject, 10) + rng.normal(0, 0.1, 400)  # 10 near-identical items per subject
    groups = [f"s{i}" for i in range(40) for _ in range(10)]
    by_subject = search.subject_se(vals, groups)
    by_item = search.subject_se(vals, [str(i) for i in range(400)])
    assert by_subject == pytest.approx(subject.std(ddof=1) / np.sqrt(40), rel=0.25)
    assert by_subject > 2.5 * by_item  # items of one subject are not independent evidence
    assert np.isnan(search.subject_se(vals[:10], groups[:10]))  # one subject: no standard error


def _subject_items(n_subjects: int, per: int) -> list[Item]:
    return [Item((s, j), s, 999, f"subj{s}") for s in range(n_subjects) for j in range(per)]


def test_half_samples_are_subject_disjoint_complementary_halves():
    items = _subject_items(11, 3)
    subjects = lambda xs: {it.subject for it in xs}  # noqa: E731
    assert search.half_sample(items, 0, 4) == items
    for seed, pair in itertools.product((0, 7), (1, 2)):
        a, b = search.half_sample(items, 2 * pair - 1, seed), search.half_sample(items, 2 * pair, seed)
        assert not subjects(a) & subjects(b) and subjects(a) | subjects(b) == subjects(items)
        assert len(subjects(a)) == 5 and len(subjects(b)) == 6  # without replacement: each subject once
        assert all(sum(x is it for x in a + b) == 1 for it in items)  # every item in exactly one half
    draws = {frozenset(subjects(search.half_sample(items, 1, seed))) for seed in range(6)}
    assert len(draws) > 1  # seeded, different splits for different seeds
    assert search.half_sample(items, 3, 0) != search.half_sample(items, 1, 0)  # a new split for each pair
    assert search.resample_items(items, 1, 0, "bootstrap") == search.bootstrap(items, 1, 0)


def test_expected_jaccard_equals_a_simulation():
    rng = random.Random(0)
    for a, b, n in ((1, 13, 270), (5, 5, 30), (34, 2, 270), (60, 96, 1024), (0, 4, 20), (10, 10, 12)):
        sim = []
        for _ in range(20000):
            x, y = set(rng.sample(range(n), a)), set(rng.sample(range(n), b))
            sim.append(stability.jaccard(x, y))
        assert stability.expected_jaccard(a, b, n) == pytest.approx(np.mean(sim), abs=1e-2)
    assert stability.expected_jaccard(0, 0, 10) == 1.0 and stability.expected_jaccard(10, 10, 10) == pytest.approx(1.0)


def test_corrected_jaccard_overlap_and_the_false_selection_bound():
    assert stability.corrected_jaccard(0.5, 0.5) == 0.0 and stability.corrected_jaccard(1.0, 0.2) == 1.0
    assert np.isnan(stability.corrected_jaccard(1.0, 1.0))
    assert stability.overlap_coefficient({1, 2}, {2, 3, 4, 5}) == 0.5
    assert stability.overlap_coefficient(set(), set()) == 1.0 and np.isnan(stability.overlap_coefficient({1}, set()))
    assert stability.pfer_bound(4.0, 270, 0.75) == pytest.approx(16 / (0.5 * 270))
    assert stability.pfer_bound(4.0, 270, 0.5) == float("inf")


def test_overlap_and_stability_rows_carry_the_new_columns():
    from entrainment.stages import discover

    sets = {("m", "r", 0, 0): {(0, 0), (0, 1)}, ("m", "r", 0, 1): {(0, 0)}, ("m", "r", 1, 0): {(1, 1), (0, 0)}}
    ov = discover.overlap(sets, {"m": (2, 2)})
    row = ov.filter((ov["seed_a"] == 0) & (ov["resample_a"] == 0) & (ov["resample_b"] == 1)).row(0, named=True)
    assert row["jaccard"] == 0.5 and row["overlap"] == 1.0
    assert row["jaccard_chance"] == pytest.approx(stability.expected_jaccard(2, 1, 4))
    assert row["jaccard_corrected"] == pytest.approx((0.5 - row["jaccard_chance"]) / (1 - row["jaccard_chance"]))
    st = discover.stability_rows(sets, {"m": (2, 2)}, 0.75, "zero")
    assert set(st["half_samples"]) == {1} and set(st["searches"]) == {3}
    assert st["pfer_bound"][0] == pytest.approx((5 / 3) ** 2 / (0.5 * 4))
    assert set(discover.stability_rows(sets, {"m": (2, 2)}, 0.75, "zero", "bootstrap")["half_samples"]) == {0}


def test_every_agreement_measure_has_its_mean_and_a_ci_over_the_searches():
    from entrainment.stages import discover

    sets = {
        ("m", "r", 0, 0): {(0, 0), (0, 1)},
        ("m", "r", 0, 1): {(0, 0)},
        ("m", "r", 1, 0): {(1, 1), (0, 0)},
        ("m", "r", 1, 1): set(),  # overlap with it is NaN: skipped, never counted as 0
    }
    ov = discover.overlap(sets, {"m": (2, 2)})
    r = ov.row(0, named=True)
    for measure in ("jaccard", "jaccard_corrected", "overlap"):
        vals = ov[measure].to_numpy()
        assert r[f"mean_{measure}"] == pytest.approx(np.nanmean(vals))
        assert r[f"mean_{measure}_ci_low"] <= r[f"mean_{measure}"] <= r[f"mean_{measure}_ci_high"]
        assert ov[f"mean_{measure}"].n_unique() == 1
    assert ov["overlap"].is_nan().sum() == 3 and np.isnan(r["mean_spearman_logits"])  # no logits given: NaN
    mean, lo, hi = stability.mean_jaccard(list(sets.values()), key="jaccard|m|r")
    assert (r["mean_jaccard"], r["mean_jaccard_ci_low"], r["mean_jaccard_ci_high"]) == pytest.approx((mean, lo, hi))


def test_the_pairwise_bootstrap_resamples_searches_not_pairs():
    pair = np.array([[0, 0.2, 0.4], [0.2, 0, np.nan], [0.4, np.nan, 0]])
    mean, lo, hi = stability.mean_pairwise(pair, draws=400, key="k")
    assert mean == pytest.approx(0.3) and 0.2 <= lo <= mean <= hi <= 0.4
    assert stability.mean_pairwise(pair, draws=400, key="k") == (mean, lo, hi)  # seeded by its key
    assert all(np.isnan(stability.mean_pairwise(np.full((2, 2), np.nan))))
    assert all(np.isnan(stability.mean_pairwise(np.zeros((1, 1)))))


def test_kcurve_random_sets_come_from_the_one_generator():
    every = [(layer, head) for layer in range(3) for head in range(4)]
    rng = random.Random("kcurve|5|3")
    old = [tuple(sorted(rng.sample(every, 3))) for _ in range(6)]  # the removed agreement.random_k_sets
    new = random_heads.random_sets(3, 3, 4, 6, 5, key="kcurve|5|3")
    assert [s.heads for s in new] == old
    assert not hasattr(importlib.import_module("entrainment.heads.agreement"), "random_k_sets")


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_batched_searches_follow_the_separate_trajectories(arch):
    m = tiny.model(arch)
    items = search_items(m, 12)
    for i, it in enumerate(items):
        items[i] = Item(it.prompt[: 4 + i % 5] + it.prompt[-3:], it.gold, it.distractor, f"s{i % 6}")  # mixed lengths
    trains = [items, search.half_sample(items, 1, 0), search.half_sample(items, 2, 0), items[:7]]
    params = [
        SearchParams(epochs=50, batch_size=4, max_steps=9, converge_steps=100, lam=0.3, init=0.5, seed=s)
        for s in (0, 1, 2, 3)
    ]
    batched = search.search_many(m, trains, items[:5], params)
    for (rows_b, hist_b), train, p in zip(batched, trains, params):
        rows_s, hist_s = search.search(m, train, items[:5], p)
        assert [r["step"] for r in rows_b] == [r["step"] for r in rows_s]
        assert len(hist_b) == len(hist_s)
        for a, b in zip(hist_b, hist_s):
            assert torch.allclose(a, b, atol=1e-4, rtol=0)
        assert [r["n_removed"] for r in rows_b] == [r["n_removed"] for r in rows_s]


def test_the_paper_preset_file_is_the_named_preset():
    from pathlib import Path

    from entrainment.config import make_config

    cfg = make_config(Path(__file__).parents[2] / "configs" / "search-paper.toml")
    assert {k: getattr(cfg, k) for k in search.PRESETS["paper"]} == search.PRESETS["paper"]
    assert cfg.max_steps >= 100 and cfg.epochs >= cfg.max_steps  # run to convergence, not cut by epochs


def test_the_verdict_configuration_runs_twenty_half_samples_with_a_finite_bound():
    from pathlib import Path

    from entrainment.config import make_config

    cfg = make_config(Path(__file__).parents[2] / "configs" / "heads.toml")
    assert cfg.search_resampling == "half" and len(cfg.seeds) * (cfg.search_resamples - 1) >= 20
    assert cfg.stability_threshold > 0.5 and cfg.selection_rule == "one_se"


def test_discovery_tables_report_steps_convergence_rule_and_chance(tmp_path):
    from entrainment.config import Config
    from entrainment.data import lre_prompts
    from entrainment.stages import discover
    from entrainment.store.schema import DISCOVERY, HEAD_OVERLAP, HEAD_STABILITY, check_frame
    from tests.toy_data import toy_lre

    m = tiny.model("llama")
    p = lre_prompts.build(
        toy_lre(tmp_path / "lre"),
        ("toy capital",),
        0,
        4,
        (0.6, 0.2, 0.2),
        ("toy capital",),
        lre_prompts.SearchData((4, 2, 3)),
    )
    cfg = Config(
        seeds=(0, 1),
        search_resamples=3,
        max_steps=5,
        discover_batch_size=4,
        lam=0.0,
        init=0.5,
        relations=("toy capital",),
        discover_relations=("toy capital",),
    )
    found = discover.many_searches(m, p, "toy capital", [(s, r) for s in cfg.seeds for r in range(3)], cfg)
    t = discover.tables(found, cfg)
    d = t["discovery"]
    assert check_frame(DISCOVERY, d) is None and set(d["selection_rule"]) == {"one_se"}
    for _, g in d.group_by("seed", "resample"):
        g = g.sort("epoch")
        assert g["step"].to_list()[0] == 0 and g["step"].is_sorted() and g["step"][-1] <= 5
        assert not g["converged"][:-1].any()  # only the last row may say converged
        assert g["step"][-1] == 5 or g["converged"][-1]
    ov, st = t["head_overlap"], t["head_stability"]
    assert check_frame(HEAD_OVERLAP, ov) is None and check_frame(HEAD_STABILITY, st) is None
    assert len(ov) == 15 and ov["jaccard_chance"].is_between(0, 1).all()
    assert set(st["half_samples"]) == {4} and set(st["searches"]) == {6}
    half = [f for f in found if f.facts["resample"] >= 1]
    assert all(f.facts["n_train"] < found[0].facts["n_train"] for f in half)
    for seed in cfg.seeds:  # a complementary pair of half-samples partitions the training items
        n = {f.facts["resample"]: f.facts["n_train"] for f in found if f.facts["seed"] == seed}
        assert n[1] + n[2] == n[0]


def test_search_passes_group_one_relations_searches_in_job_order():
    from entrainment.config import Config
    from entrainment.stages.discover import search_passes

    jobs = [("a", s, r) for s in (0, 1) for r in range(3)] + [("b", 0, 0), ("b", 0, 1)]
    cut = search_passes(Config(searches_per_pass=4), jobs, "cpu")
    assert cut == [("a", ((0, 0), (0, 1), (0, 2), (1, 0))), ("a", ((1, 1), (1, 2))), ("b", ((0, 0), (0, 1)))]
    assert [len(p) for _, p in search_passes(Config(), jobs, "cpu")] == [1] * 8  # auto: one at a time on a CPU
    assert [len(p) for _, p in search_passes(Config(), jobs, "cuda:0")] == [6, 2]  # auto: up to 8 on a GPU
