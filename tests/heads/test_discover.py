"""Mask search: straight-through gradients, lambda extremes, a planted copy head, selection rule, resume."""

from __future__ import annotations

import pytest
import torch

from entrainment.heads import search, stability
from entrainment.heads.search import SearchParams
from tests import tiny
from tests.tiny import copy_head_model
from tests.toy_data import search_items


def test_gumbel_sigmoid_is_hard_forward_soft_backward():
    logits = torch.zeros(3, 4, requires_grad=True)
    m = search.gumbel_sigmoid_st(logits, 1.0, torch.Generator().manual_seed(0))
    assert set(m.detach().unique().tolist()) <= {0.0, 1.0}
    m.sum().backward()
    assert (logits.grad > 0).all()


def test_gradient_reaches_only_the_mask_logits():
    m = tiny.model("llama")
    logits = torch.nn.Parameter(torch.full((m.info.n_layers, m.info.n_heads), 3.0))
    scale = search.gumbel_sigmoid_st(logits, 1.0, torch.Generator().manual_seed(0))
    loss, _ = search.step_loss(m, search_items(m, 4), scale, logits, 1.0)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in m.model.parameters())


def test_large_lambda_keeps_every_head():
    m = tiny.model("llama")
    items = search_items(m)
    rows, hist = search.search(m, items, items, SearchParams(epochs=3, batch_size=4, lam=1000.0, init=0.0))
    assert rows[-1]["n_removed"] == 0 and bool((hist[-1] > 0).all())


def test_planted_copy_head_is_removed_with_lambda_zero():
    m = copy_head_model()
    items = search_items(m, 16)
    keep_all = torch.ones(1, 2)
    only_copy_off = torch.tensor([[0.0, 1.0]])
    before, _ = search.evaluate(m, items, keep_all)
    after, _ = search.evaluate(m, items, only_copy_off)
    assert after > before + 1.0  # the planted head really promotes the distractor
    rows, hist = search.search(m, items, items, SearchParams(epochs=4, batch_size=8, lam=0.0, init=3.0))
    final = hist[-1]
    assert final[0, 0] <= 0 and final[0, 1] > 0  # the copy head is removed, the idle head kept
    assert rows[-1]["n_removed"] == 1


def test_selection_rule_on_a_synthetic_log():
    log = [
        {"epoch": 0, "dev_delta": 8.0, "n_removed": 0},
        {"epoch": 1, "dev_delta": 9.0, "n_removed": 4},
        {"epoch": 2, "dev_delta": 10.0, "n_removed": 30},  # best
        {"epoch": 3, "dev_delta": 9.6, "n_removed": 12},  # within 5% of 10.0
        {"epoch": 4, "dev_delta": 9.5, "n_removed": 12},  # within 5%, same count, later
        {"epoch": 5, "dev_delta": 9.4, "n_removed": 2},
    ]  # outside 5%
    assert search.select_epoch(log, rule="within_5pct") == 3
    assert search.select_epoch([{"epoch": 0, "dev_delta": 8.0, "n_removed": 0}]) == 0
    # a search that only makes dev worse than the intact model selects the intact model (no heads)
    worse = [
        {"epoch": 0, "dev_delta": 7.6, "n_removed": 0},
        {"epoch": 1, "dev_delta": 7.0, "n_removed": 45},
        {"epoch": 2, "dev_delta": 6.0, "n_removed": 80},
    ]
    assert search.select_epoch(worse) == 0
    # a start that already removes heads (the paper's N(0, 0.01)) is never a candidate itself
    assert (
        search.select_epoch(
            [{"epoch": 0, "dev_delta": 9.0, "n_removed": 130}, {"epoch": 1, "dev_delta": 5.0, "n_removed": 100}]
        )
        == 1
    )


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    m = tiny.model("qwen3")
    items = search_items(m, 12)
    p = SearchParams(epochs=4, batch_size=4, lam=0.5, init=1.0, seed=3)
    rows_a, hist_a = search.search(m, items, items[:6], p)
    ckpt = tmp_path / "ck.pt"
    real = search.make_batches
    calls = []

    def crash_in_epoch_3(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated")
        return real(*a, **k)

    monkeypatch.setattr(search, "make_batches", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        search.search(m, items, items[:6], p, ckpt)
    monkeypatch.setattr(search, "make_batches", real)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    rows_b, hist_b = search.search(m, items, items[:6], p, ckpt)
    assert [r["epoch"] for r in rows_b] == [0, 1, 2, 3, 4]
    for ra, rb in zip(rows_a, rows_b):
        assert {k: v for k, v in ra.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in rb.items() if k != "seconds"}, nan_ok=True
        )
    assert all(torch.equal(a, b) for a, b in zip(hist_a, hist_b))


def test_jaccard():
    assert stability.jaccard({(1, 2), (3, 4)}, {(1, 2)}) == 0.5
    assert stability.jaccard(set(), set()) == 1.0


def test_keep_logit_rank_correlation_in_the_overlap_table():
    import numpy as np
    from scipy.stats import spearmanr

    from entrainment.stages.discover import overlap

    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = x + rng.normal(scale=0.5, size=12)
    assert stability.rank_correlation(x, x) == 1.0 and stability.rank_correlation(x, -x) == -1.0
    assert abs(stability.rank_correlation(x, y) - spearmanr(x, y).statistic) < 1e-12
    assert np.isnan(stability.rank_correlation(x, np.zeros(12)))  # a constant mask ranks nothing
    keys = [("m", "r", 0, 0), ("m", "r", 1, 0), ("m", "r", 0, 1)]
    sets = {keys[0]: {(0, 1)}, keys[1]: {(0, 1)}, keys[2]: set()}
    ov = overlap(sets, {"m": (3, 4)}, {keys[0]: x, keys[1]: y, keys[2]: -x}).sort("seed_a", "resample_a", "seed_b")
    got = {(r["seed_a"], r["resample_a"], r["seed_b"], r["resample_b"]): r["spearman_logits"] for r in ov.to_dicts()}
    assert abs(got[(0, 0, 1, 0)] - spearmanr(x, y).statistic) < 1e-12 and got[(0, 0, 0, 1)] == -1.0
    assert overlap(sets, {"m": (3, 4)})["spearman_logits"].is_nan().all()  # no logits given: NaN, not a guess
