"""Head-importance maps: the layer-reusing batched scan equals one-head-at-a-time zeroing; AtP equals a finite
difference, and the scan exactly for a model linear in the head scale; the planted copy head ranks first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from entrainment.heads import agreement, maps
from entrainment.model.hooks import scaled_heads
from entrainment.model.scoring import collate, forward_last
from entrainment.model.tokens import Tokens
from tests import tiny
from tests.tiny import copy_head_model
from tests.toy_data import search_items

TEXTS = [
    "window. The capital of France is",
    "apple bread. The capital city of Germany is the city of",
    "river.",
    "On the outside, bananas are",
]


def _data(m):
    tk = Tokens(m.tokenizer)
    return (
        [tk.prompt(t) for t in TEXTS],
        [tk.answer(t, "Madrid")[0] for t in TEXTS],
        [tk.answer(t, "bread")[0] for t in TEXTS],
    )


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "gpt_neox"])
def test_batched_scan_equals_one_head_at_a_time(arch):
    m = tiny.model(arch)
    p, g, d = _data(m)
    fast = maps.scan_scores(m, p, g, d, batch_size=6)
    slow = maps.naive_scan_scores(m, p, g, d, batch_size=1)
    assert np.abs(slow).max() > 1e-4  # the heads matter at all
    assert np.abs(fast - slow).max() < 1e-4


def _delta(m, p, g, d, scale):
    ids, attn = collate(p, m.tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad(), scaled_heads(m.model, scale):
        lg = forward_last(m.model, ids, attn, 1)[:, -1].float()
    return float((lg[torch.arange(len(p)), torch.tensor(g)] - lg[torch.arange(len(p)), torch.tensor(d)]).mean())


def test_atp_equals_a_finite_difference():
    m = tiny.model("llama")
    p, g, d = _data(m)
    atp = maps.atp_scores(m, p, g, d, batch_size=3)
    eps = 1e-2
    ones = torch.ones(m.info.n_layers, m.info.n_heads)
    for layer, head in [(0, 0), (0, 3), (1, 1), (1, 2)]:
        s_plus, s_minus = ones.clone(), ones.clone()
        s_plus[layer, head] += eps
        s_minus[layer, head] -= eps
        fd = -(_delta(m, p, g, d, s_plus) - _delta(m, p, g, d, s_minus)) / (2 * eps)  # -dΔ/dscale, central
        assert atp[layer, head] == pytest.approx(fd, rel=1e-2, abs=1e-5)


def test_atp_is_exact_for_a_model_linear_in_the_head_scale():
    """One attention layer, no MLP, no final norm: Δ is linear in each head's scale, so the first-order
    estimate of zeroing a head is its exact effect."""
    from transformers import LlamaConfig

    from entrainment.model.loading import from_config

    tok = tiny.tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    m = from_config(cfg, tok, spec="linear")
    with torch.no_grad():
        m.model.model.layers[0].mlp.down_proj.weight.zero_()
        m.model.model.layers[0].self_attn.o_proj.weight.mul_(30)  # heads that matter (random init is tiny)
    m.model.model.norm = torch.nn.Identity()
    m.model.model.layers[0].post_attention_layernorm = torch.nn.Identity()
    p, g, d = _data(m)
    exact = maps.naive_scan_scores(m, p, g, d, batch_size=2)
    atp = maps.atp_scores(m, p, g, d, batch_size=2)
    assert np.abs(exact).max() > 1e-3
    assert np.abs(atp - exact).max() < 1e-5 * max(1.0, np.abs(exact).max())


def test_planted_copy_head_ranks_first_under_scan_and_atp():
    m = copy_head_model()
    items = search_items(m, 8)
    p, g, d = [it.prompt for it in items], [it.gold for it in items], [it.distractor for it in items]
    for scores in (maps.scan_scores(m, p, g, d), maps.atp_scores(m, p, g, d)):
        r = maps.ranks(scores)
        assert r[0, 0] == 1 and scores[0, 0] > 0  # head 0 copies the context: removing it raises Δ


def test_ranks_and_agreement_summary():
    s = np.array([[0.5, -1.0], [2.0, 0.5]])
    assert maps.ranks(s).tolist() == [[2, 4], [1, 3]]
    assert agreement.top_k(s, 2) == ((0, 0), (1, 0))
    summ = agreement.summary(s, s * 2, ((1, 0), (0, 1)))
    assert summ["spearman_atp_scan"] == pytest.approx(1.0) and summ["mask_ranks"] == "1,4"
    assert summ["mask_in_scan_top_k"] == 1 and summ["mask_rank_median"] == 2.5


def test_k_curves_start_at_the_intact_model_and_match_direct_ablation():
    m = tiny.model("llama")
    p, g, d = _data(m)
    scores = maps.scan_scores(m, p, g, d)
    rows = agreement.k_curves(m, p, g, d, {"scan": scores}, max_k=3, random_draws=2, seed=0, batch_size=5)
    by = {(r["method"], r["k"]): r for r in rows}
    intact = _delta(m, p, g, d, None)
    assert by[("scan", 0)]["delta"] == pytest.approx(intact, abs=1e-5) and by[("random", 0)]["gain"] == 0
    top2 = agreement.top_k(scores, 2)
    mask = torch.ones(2, 4)
    for layer, head in top2:
        mask[layer, head] = 0
    assert by[("scan", 2)]["delta"] == pytest.approx(_delta(m, p, g, d, mask), abs=1e-4)
    assert by[("scan", 1)]["gain"] == pytest.approx(scores.max(), abs=1e-4)  # k = 1 is the best single head
    assert np.isnan(by[("scan", 2)]["subject_gain"]) and by[("scan", 2)]["n_subjects"] == 0  # no subjects given


def test_k_curve_subject_gains_are_t_intervals_over_subject_means():
    from scipy import stats as sps

    m = tiny.model("llama")
    p, g, d = _data(m)
    subjects = [f"s{i % 3}" for i in range(len(p))]  # three subjects, unequal item counts possible
    scores = maps.scan_scores(m, p, g, d)
    rows = agreement.k_curves(
        m, p, g, d, {"scan": scores}, max_k=2, random_draws=1, seed=0, batch_size=5, subjects=subjects
    )
    by = {(r["method"], r["k"]): r for r in rows}
    intact = np.array([_delta(m, [x], [a], [b], None) for x, a, b in zip(p, g, d)])
    mask = torch.ones(2, 4)
    for layer, head in agreement.top_k(scores, 2):
        mask[layer, head] = 0
    ablated = np.array([_delta(m, [x], [a], [b], mask) for x, a, b in zip(p, g, d)])
    gains = ablated - intact
    means = np.array([gains[[i for i, s in enumerate(subjects) if s == k]].mean() for k in ("s0", "s1", "s2")])
    ref = sps.ttest_1samp(means, 0.0)
    ci = ref.confidence_interval(0.95)
    r = by[("scan", 2)]
    assert r["n_subjects"] == 3
    assert r["subject_gain"] == pytest.approx(means.mean(), abs=1e-4)
    assert r["subject_gain_ci_low"] == pytest.approx(ci.low, abs=1e-3)
    assert r["subject_gain_ci_high"] == pytest.approx(ci.high, abs=1e-3)
    assert by[("scan", 0)]["subject_gain"] == 0.0
