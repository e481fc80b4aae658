"""Ablation methods: zero, mean and resample are one hook; their edge cases are exact and the batched multi-mask
passes equal one head set at a time on every architecture family."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from entrainment.ablation import donors
from entrainment.data import lre_prompts
from entrainment.heads.masks import HeadSet
from entrainment.model import means, multimask, scoring
from entrainment.model.hooks import Ablation, out_projections
from entrainment.model.tokens import Tokens
from tests import tiny


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from tests.toy_data import toy_lre

    lre = toy_lre(tmp_path_factory.mktemp("methods") / "lre")
    return lre_prompts.build(lre, ("toy capital", "toy color"), 0, 8, (0.5, 0.25, 0.25))


def _items(m, rows: pl.DataFrame):
    tk = Tokens(m.tokenizer)
    r = rows.to_dicts()
    ctx = [tk.prompt(x["text_ctx"]) for x in r]
    gold = [tk.answer(x["text_base"], x["gold"])[0] for x in r]
    dist = [tk.answer(x["text_base"], x["distractor"])[0] for x in r]
    return ctx, gold, dist, [(x["relation"], x["condition"]) for x in r]


def _mean(m, rows):
    mu, n = means.head_means(m, means.reference_prompts(rows, Tokens(m.tokenizer)))
    assert n > 0
    return mu


MASK = ((0, 1), (1, 2))


def test_mean_with_an_all_zero_reference_equals_zero_ablation_exactly(toy):
    m = tiny.model("llama")
    ctx, g, d, _ = _items(m, toy.filter(pl.col("split") == "test"))
    keep = HeadSet("x", MASK).mask(2, 4)
    zero = scoring.run_pass(m, ctx, g, d, keep, 4)
    mean0 = scoring.run_pass(m, ctx, g, d, keep, 4, ablation=Ablation("mean", torch.zeros(2, 4, 8)))
    assert np.array_equal(zero.gold, mean0.gold) and np.array_equal(zero.distractor, mean0.distractor)
    masks = multimask.head_masks([MASK], 2, 4)
    a = multimask.probe_logits(m, ctx, list(zip(g, d)), masks, 8)
    b = multimask.probe_logits(m, ctx, list(zip(g, d)), masks, 8, ablation=Ablation("mean", torch.zeros(2, 4, 8)))
    assert np.array_equal(a, b)


def test_resample_with_every_item_its_own_donor_equals_the_intact_model(toy):
    m = tiny.model("llama")
    ctx, g, d, _ = _items(m, toy.filter(pl.col("split") == "test"))
    mu = _mean(m, toy)
    self_donors = Ablation("resample", mu, {p: p for p in ctx})
    every = torch.zeros(2, 4)  # remove every head: each is replaced by its own slice
    intact = scoring.run_pass(m, ctx, g, d, None, 4)
    own = scoring.run_pass(m, ctx, g, d, every, 4, ablation=self_donors)
    assert np.abs(own.gold - intact.gold).max() < 1e-5 and np.abs(own.distractor - intact.distractor).max() < 1e-5
    batched = multimask.probe_logits(m, ctx, list(zip(g, d)), every[None], 8, ablation=self_donors)
    assert np.abs(batched[0, :, 0] - intact.gold).max() < 1e-5


def _replace_all(model, value):
    """Hooks that overwrite every head's z with `value` [L, H, D] at every position (the m = 0 reference)."""
    projs, n_heads, head_dim = out_projections(model)

    def make(layer):
        def hook(_m, args):
            x = args[0]
            z = value[layer].to(x.dtype).reshape(1, 1, n_heads * head_dim).expand_as(x)
            return (z.contiguous(),) + tuple(args[1:])

        return hook

    return [p.register_forward_pre_hook(make(i)) for i, p in enumerate(projs)]


def test_interpolation_m1_is_intact_and_m0_is_full_replacement(toy):
    m = tiny.model("llama")
    ctx, g, d, _ = _items(m, toy.filter(pl.col("split") == "test"))
    mu = _mean(m, toy)
    how = Ablation("mean", mu)
    intact = scoring.run_pass(m, ctx, g, d, None, 4)
    ones = scoring.run_pass(m, ctx, g, d, torch.ones(2, 4), 4, ablation=how)
    assert np.abs(ones.gold - intact.gold).max() < 1e-6
    zeros = scoring.run_pass(m, ctx, g, d, torch.zeros(2, 4), 4, ablation=how)
    handles = _replace_all(m.model, mu)
    try:
        manual = scoring.run_pass(m, ctx, g, d, None, 4)
    finally:
        for h in handles:
            h.remove()
    assert np.abs(zeros.gold - manual.gold).max() < 1e-5 and np.abs(zeros.distractor - manual.distractor).max() < 1e-5
    assert np.abs(zeros.gold - intact.gold).max() > 1e-4  # the replacement matters


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
@pytest.mark.parametrize("method", ["mean", "resample"])
def test_batched_multimask_passes_equal_one_head_set_at_a_time(toy, arch, method):
    m = tiny.model(arch)
    rows = toy.filter(pl.col("split") == "test")
    ctx, g, d, groups = _items(m, rows)
    mu = _mean(m, toy)
    how = donors.ablation_for(method, mu, ctx, groups, "test")
    if method == "resample":
        assert how.donors and all(a != b for a, b in how.donors.items())  # a derangement: nobody donates to itself
    n_l, n_h = m.info.n_layers, m.info.n_heads
    sets = [((0, 1),), ((1, 0), (1, 3)), ((0, 0), (1, 2)), ()]
    masks = multimask.head_masks(sets, n_l, n_h)
    batched = multimask.probe_logits(m, ctx, list(zip(g, d)), masks, batch_size=6, chunk=4, ablation=how)
    for i in range(len(sets)):
        one = scoring.run_pass(m, ctx, g, d, masks[i] if sets[i] else None, batch_size=3, ablation=how)
        assert np.abs(batched[i, :, 0] - one.gold).max() < 1e-4, (arch, method, sets[i])
        assert np.abs(batched[i, :, 1] - one.distractor).max() < 1e-4
    zero = multimask.probe_logits(m, ctx, list(zip(g, d)), masks, batch_size=6, chunk=4)
    assert np.abs(zero[1] - batched[1]).max() > 1e-5  # the method changes the answer


def test_reference_means_use_the_no_context_train_prompts_only(toy):
    m = tiny.model("llama")
    tk = Tokens(m.tokenizer)
    ref = means.reference_prompts(toy, tk)
    train_base = {tk.prompt(t) for t in toy.filter(pl.col("split") == "train")["text_base"]}
    assert set(ref) == train_base and len(ref) == len(set(ref))
    others = {tk.prompt(t) for t in toy.filter(pl.col("split") != "train")["text_base"]}
    ctx = {tk.prompt(t) for t in toy["text_ctx"]}
    assert not (set(ref) & (others - train_base)) and not (set(ref) & ctx)
    mu, n = means.head_means(m, ref, batch_size=3)
    assert n == sum(len(p) for p in ref)  # every real token, no padding
    projs, n_heads, head_dim = out_projections(m.model)
    seen = [[] for _ in projs]
    hooks = [p.register_forward_pre_hook(lambda _m, a, i=i: seen[i].append(a[0][0])) for i, p in enumerate(projs)]
    try:
        with torch.inference_mode():
            for p in ref:  # one prompt at a time: no padding at all
                m.model(input_ids=torch.tensor([p]))
    finally:
        for h in hooks:
            h.remove()
    manual = torch.stack([torch.cat(s).mean(0) for s in seen]).reshape(len(projs), n_heads, head_dim)
    assert torch.allclose(mu, manual, atol=1e-5)


def test_derangement_has_no_fixed_point_and_stays_in_its_group():
    for n in (2, 3, 7, 50):
        perm = donors.derangement(n, f"k{n}")
        assert sorted(perm) == list(range(n)) and all(p != i for i, p in enumerate(perm))
    assert donors.derangement(1, "x") == [-1]
    prompts_ = [(1,), (2,), (3,), (4,), (5,), (1,)]
    groups = ["a", "a", "a", "b", "b", "a"]
    mp = donors.donor_map(prompts_, groups, "s")
    assert all(mp[p] != p for p in mp)
    assert {mp[(1,)], mp[(2,)], mp[(3,)]} <= {(1,), (2,), (3,)} and mp[(4,)] == (5,) and mp[(5,)] == (4,)
    assert donors.donor_map(prompts_, groups, "s") == mp  # seeded
