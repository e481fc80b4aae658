"""Head evidence: paired-gain CI = scipy, empirical p / z on planted nulls, batched draws = one at a time,
on-the-fly KL = stored-distribution KL, the null columns on real rows, head-search splits, --bos."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from entrainment.ablation import evaluate
from entrainment.config import Config
from entrainment.data import lre_prompts
from entrainment.heads import random_heads
from entrainment.heads.masks import HeadSet
from entrainment.model import multimask, scoring
from entrainment.model.tokens import Tokens
from entrainment.stages import generate
from entrainment.statistics import null
from tests import tiny


def test_paired_gain_equals_scipy():
    rng = np.random.default_rng(0)
    orig = rng.normal(5, 2, 40)
    abl = orig + rng.normal(0.7, 1.5, 40)
    got = null.paired_gain(abl, orig)
    ref = sps.ttest_rel(abl, orig)
    ci = ref.confidence_interval(0.95)
    assert got["gain"] == pytest.approx(np.mean(abl - orig), rel=1e-12)
    assert got["gain_p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (got["gain_ci_low"], got["gain_ci_high"]) == (
        pytest.approx(ci.low, rel=1e-9),
        pytest.approx(ci.high, rel=1e-9),
    )
    assert np.isnan(null.paired_gain(np.ones(5), np.ones(5))["gain_p"])  # zero variance: no test


def test_empirical_p_and_z_on_planted_nulls():
    draws = np.arange(100, dtype=float)  # 0..99
    assert null.empirical_p(1000.0, draws) == pytest.approx(1 / 101)  # beats every draw: the floor, never 0
    assert null.empirical_p(-1.0, draws) == pytest.approx(101 / 101)  # beaten by every draw
    assert null.empirical_p(90.0, draws) == pytest.approx((1 + 10) / 101)  # draws 90..99 are >= 90 (ties count)
    assert null.z_score(49.5 + 2 * draws.std(ddof=1), draws) == pytest.approx(2.0)
    assert np.isnan(null.z_score(1.0, np.full(10, 3.0)))
    s = null.null_summary(5.0, np.array([1.0, 2.0, 3.0, 6.0]))
    assert s == {
        "null_draws": 4,
        "null_mean": 3.0,
        "null_p": pytest.approx(2 / 5),
        "null_z": pytest.approx((5 - 3) / np.std([1, 2, 3, 6], ddof=1)),
    }


def test_holm_matches_definition():
    got = null.holm([0.01, 0.04, float("nan"), 0.03])
    assert got[0] == pytest.approx(0.03) and got[3] == pytest.approx(0.06) and got[1] == pytest.approx(0.06)
    assert np.isnan(got[2])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.toy_data import toy_lre

    lre = toy_lre(tmp_path_factory.mktemp("ev") / "lre")
    items = lre_prompts.build(lre, ("toy capital", "toy color"), 0, 8, (0.5, 0.25, 0.25)).filter(
        pl.col("split") == "test"
    )
    return tiny.model("llama"), items


def test_batched_draws_equal_one_at_a_time(setup):
    m, items = setup
    tk = Tokens(m.tokenizer)
    rows = items.to_dicts()
    ctx = [tk.prompt(r["text_ctx"]) for r in rows]
    probes = [(tk.answer(r["text_base"], r["gold"])[0], tk.answer(r["text_base"], r["distractor"])[0]) for r in rows]
    sets = [hs.heads for hs in random_heads.random_head_sets(HeadSet("x", ((0, 1), (1, 2))), 2, 4, 7, seed=3)]
    masks = multimask.head_masks(sets, 2, 4)
    batched = multimask.probe_logits(m, ctx, probes, masks, batch_size=5)  # batches mix masks and prompt lengths
    for i, heads in enumerate(sets):
        one = scoring.run_pass(m, ctx, [g for g, _ in probes], [d for _, d in probes], masks[i], batch_size=1)
        assert (
            np.abs(batched[i, :, 0] - one.gold).max() < 1e-4 and np.abs(batched[i, :, 1] - one.distractor).max() < 1e-4
        )
    # the per-row hook really differs per row: an all-ones mask row equals the intact model
    intact = scoring.run_pass(m, ctx, [g for g, _ in probes], [d for _, d in probes], None, batch_size=3)
    mixed = multimask.probe_logits(m, ctx, probes, multimask.head_masks([(), sets[0]], 2, 4), batch_size=4)
    assert np.abs(mixed[0, :, 0] - intact.gold).max() < 1e-4 and np.abs(mixed[1] - batched[0]).max() < 1e-4


def test_on_the_fly_kl_equals_stored_distributions(setup):
    m, items = setup
    tk = Tokens(m.tokenizer)
    rows = items.to_dicts()
    ctx = [tk.prompt(r["text_ctx"]) for r in rows]
    base = [tk.prompt(r["text_base"]) for r in rows]
    g = [tk.answer(r["text_base"], r["gold"])[0] for r in rows]
    d = [tk.answer(r["text_base"], r["distractor"])[0] for r in rows]
    mask = HeadSet("x", ((1, 0), (0, 3))).mask(2, 4)
    inputs = {"ctx": ctx, "base": base, "prompted": ctx}
    per = evaluate.variant_passes(m, inputs, g, d, {"ablated": evaluate.Pass("ctx", mask)}, batch_size=4, chunk=3)
    o = scoring.run_pass(m, ctx, g, d, None, 8, keep_dist=True).dist  # every distribution kept at once
    n = scoring.run_pass(m, base, g, d, None, 8, keep_dist=True).dist
    a = scoring.run_pass(m, ctx, g, d, mask, 8, keep_dist=True).dist
    assert per["ablated"].kl_orig == pytest.approx(scoring.kl(a, o), abs=1e-6)
    assert per["ablated"].kl_noctx == pytest.approx(scoring.kl(a, n), abs=1e-6)
    assert per["no_context"].kl_orig == pytest.approx(scoring.kl(n, o), abs=1e-6)
    assert (per["original"].kl_orig == 0).all()


def test_ablated_rows_carry_gain_and_null(setup):
    m, items = setup
    hs = HeadSet("mask:x", ((0, 1), (1, 3)))
    plan = random_heads.NullPlan(draws=12, items=3, conditions=("related",))
    key = {"mask_relation": "toy capital", "seed": 0, "ablation_label": "mask:x"}
    df = evaluate.evaluate_mask(m, items, hs, key, evaluate.Plan(random_draws=2, seed=0, batch_size=4, null=plan))
    abl = df.filter(pl.col("variant") == "ablated")
    orig = df.filter(pl.col("variant") == "original")
    for a, o in zip(abl.iter_rows(named=True), orig.iter_rows(named=True)):
        assert a["gain"] == pytest.approx(a["delta"] - o["delta"], abs=1e-9)
        assert a["gain_ci_low"] <= a["gain"] <= a["gain_ci_high"] or np.isnan(a["gain_p"])
        if a["condition"] == "related":
            assert a["null_draws"] == 12 and a["null_items"] == min(3, a["n"]) and 1 / 13 <= a["null_p"] <= 1
        else:
            assert a["null_draws"] == 0 and np.isnan(a["null_p"])
    assert orig["null_draws"].sum() == 0 and orig["gain"].is_nan().all()
    # the observed subsample gain and the null's draws are recomputed identically (seeded subsample and draws)
    again = evaluate.evaluate_mask(m, items, hs, key, evaluate.Plan(random_draws=2, seed=0, batch_size=2, null=plan))
    a2 = again.filter(pl.col("variant") == "ablated")
    assert a2["null_p"].to_list() == pytest.approx(abl["null_p"].to_list(), nan_ok=True)
    assert a2["null_gain"].to_list() == pytest.approx(abl["null_gain"].to_list(), abs=1e-5, nan_ok=True)


def test_head_search_splits_are_subject_disjoint_at_the_new_sizes():
    cfg = Config(relations=("country capital city",))
    df = generate.from_config(cfg)
    rel = df.filter(pl.col("condition") == "related")
    n = dict(rel.group_by("split").len().iter_rows())
    assert n["test"] >= 150 and n["dev"] >= 20 and n["train"] >= 50
    subjects = {s: set(rel.filter(pl.col("split") == s)["subject"]) for s in ("train", "dev", "test")}
    assert not subjects["train"] & subjects["dev"] and not subjects["train"] & subjects["test"]
    assert not subjects["dev"] & subjects["test"]
    # every related search item has its template siblings: 2 context x 2 query templates per (query, context) pair
    # on test; train and dev hold one query template out (template_holdout): 2 context x 1 query template
    test = rel.filter(pl.col("split") == "test")
    assert (test.group_by("subject", "context_subject").len()["len"] == 4).all()
    assert (rel.filter(pl.col("split") != "test").group_by("subject", "context_subject").len()["len"] == 2).all()
    # counterfactuals stay matched to related items
    cf = df.filter(pl.col("condition") == "counterfactual")
    assert set(cf["pair_id"]) <= set(rel["pair_id"])


def test_bos_always_changes_prompt_ids_and_cache_key():
    from tasks.cache import stage_key

    tok = tiny.tokenizer()
    auto, always, never = (Tokens(tok, b).prompt("The capital of France is") for b in ("auto", "always", "never"))
    assert always[0] == tok.bos_token_id and always[1:] == auto and never == auto
    assert Tokens(tok, "never").prompt("<bos> The capital")[0] != tok.bos_token_id
    cfg = Config()
    for stage in ("measure", "discover", "ablate"):
        assert stage_key(stage, "tasks.cache", cfg, {}) != stage_key(
            stage, "tasks.cache", cfg.replace(bos="always"), {}
        )
    assert stage_key("stats", "tasks.cache", cfg, {}) == stage_key(
        "stats", "tasks.cache", cfg.replace(bos="always"), {}
    )
