"""Ablation: ablated == manual zeroing, random draws seeded and never the selected set, KL, accuracies."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from entrainment.ablation import evaluate, side_effects
from entrainment.data import lre_prompts
from entrainment.heads import random_heads
from entrainment.heads.masks import HeadSet
from entrainment.model import scoring
from entrainment.model.hooks import scaled_heads
from entrainment.model.scoring import Request, score
from entrainment.model.tokens import Tokens
from tests import tiny


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.toy_data import toy_lre

    lre = toy_lre(tmp_path_factory.mktemp("abl") / "lre")
    items = lre_prompts.build(lre, ("toy capital", "toy color"), 0, 8, (0.5, 0.25, 0.25)).filter(
        pl.col("split") == "test"
    )
    return tiny.model("gpt_neox"), items


KEY = {"mask_relation": "toy capital", "seed": 0, "ablation_label": "mask:x"}


def test_ablated_variant_equals_manual_zeroing(setup):
    m, items = setup
    hs = HeadSet("mask:x", ((0, 1), (1, 3)))
    df = evaluate.evaluate_mask(m, items, hs, KEY, evaluate.Plan(random_draws=3, seed=0, batch_size=4))
    assert set(df["variant"]) == {"original", "ablated", "random_heads", "no_context", "prompted"}
    assert set(df["templates"]) == {"all"} and set(df["ablation_method"]) == {"zero"}
    tk = Tokens(m.tokenizer)
    rows = items.to_dicts()
    reqs = [Request(tk.prompt(r["text_ctx"])) for r in rows]
    probes = [(tk.answer(r["text_base"], r["gold"])[0], tk.answer(r["text_base"], r["distractor"])[0]) for r in rows]
    manual = torch.ones(2, 4)
    manual[0, 1] = manual[1, 3] = 0
    with scaled_heads(m.model, manual):
        res = score(m.model, reqs, probes, m.tokenizer.pad_token_id, batch_size=1)
    by_group = {}
    for r, s in zip(rows, res):
        by_group.setdefault((r["relation"], r["condition"]), []).append((s.probe_logit, s.probe_rank[1]))
    ablated = df.filter(pl.col("variant") == "ablated")
    for row in ablated.iter_rows(named=True):
        got = by_group[(row["relation"], row["condition"])]
        assert row["ell_gold"] == pytest.approx(np.mean([g[0][0] for g in got]), abs=1e-5)
        assert row["ell_distractor"] == pytest.approx(np.mean([g[0][1] for g in got]), abs=1e-5)
        assert row["delta"] == pytest.approx(np.mean([g[0][0] - g[0][1] for g in got]), abs=1e-5)
        assert row["distractor_rank"] == pytest.approx(np.mean([g[1] for g in got]))
        assert row["n_heads_removed"] == 2 and row["n"] == len(got)


def test_kl_is_zero_against_itself_and_positive_otherwise(setup):
    m, items = setup
    df = evaluate.evaluate_mask(m, items, HeadSet("mask:x", ((1, 0),)), KEY, evaluate.Plan(random_draws=2, seed=0))
    orig = df.filter(pl.col("variant") == "original")
    noctx = df.filter(pl.col("variant") == "no_context")
    assert (orig["kl_to_original"] == 0).all() and (noctx["kl_to_no_context"] == 0).all()
    assert (orig["kl_to_no_context"] > 0).all() and (
        df.filter(pl.col("variant") == "ablated")["kl_to_original"] > 0
    ).all()
    p = [torch.log_softmax(torch.randn(50), -1) for _ in range(3)]
    q = [torch.log_softmax(torch.randn(50), -1) for _ in range(3)]
    ref = [float(torch.nn.functional.kl_div(b, a, log_target=True, reduction="sum")) for a, b in zip(p, q)]
    assert scoring.kl(p, q) == pytest.approx(ref, rel=1e-6)


def test_random_heads_are_seeded_and_never_the_selected_set():
    sel = HeadSet("mask:r", ((0, 0), (1, 1)))
    a = random_heads.random_head_sets(sel, 2, 2, 50, seed=0)
    b = random_heads.random_head_sets(sel, 2, 2, 50, seed=0)
    assert [h.heads for h in a] == [h.heads for h in b]
    assert all(len(h.heads) == 2 and h.heads != sel.heads for h in a)  # 6 possible pairs, one excluded
    assert [h.heads for h in random_heads.random_head_sets(sel, 2, 2, 50, seed=1)] != [h.heads for h in a]
    every = HeadSet("mask:all", ((0, 0), (0, 1), (1, 0), (1, 1)))
    assert all(h.heads == every.heads for h in random_heads.random_head_sets(every, 2, 2, 3, seed=0))


def test_accuracy_definitions_on_crafted_ranks():
    s = scoring.Scored(
        gold=np.zeros(4), distractor=np.zeros(4), rank=np.ones(4), gold_rank=np.array([1, 2, 5, 6]), dist=None
    )
    assert side_effects.accuracy(s) == {"strict_acc": 0.25, "credulous_acc": 0.75}


def test_accuracy_definitions_on_crafted_logits():
    """A fake model whose next-token logits are fixed: gold top-1, then 3rd, then 7th."""
    m = tiny.model("llama")
    v = len(m.tokenizer)
    logits = torch.linspace(10, 0, v)  # token 0 is top-1, token 2 is 3rd, token 6 is 7th

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))
            self.config = m.model.config

        def forward(self, input_ids, logits_to_keep=1, **_):
            out = logits.expand(input_ids.shape[0], logits_to_keep, v)
            return type("O", (), {"logits": out})()

    fake = type(m)(Fixed(), m.tokenizer, m.info, m.source)
    s = scoring.run_pass(fake, [(5, 6), (5, 7), (5, 8)], [0, 2, 6], [1, 1, 1], None, 8)
    assert list(s.gold_rank) == [1, 3, 7]
    assert side_effects.accuracy(s) == {"strict_acc": pytest.approx(1 / 3), "credulous_acc": pytest.approx(2 / 3)}


def test_icl_prompts_are_few_shot_and_seeded():
    items = [{"input": f"{i} + 1", "output": str(i + 1)} for i in range(10)]
    a = side_effects.icl_prompts(items, seed=0)
    assert a == side_effects.icl_prompts(items, seed=0)
    prompt, answer = a[3]
    assert prompt.endswith("3 + 1 ->") and answer == "4" and prompt.count("\n") == side_effects.ICL_SHOTS
    assert "3 + 1 -> 4" not in prompt  # the item itself is never a shot
