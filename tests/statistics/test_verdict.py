"""The head verdict (issue 30): Holm across relations, capped gap_closed, collisions left out of the gains,
subject-level statistics, subject_gains / verdict tables and cross-fitting over subjects."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from entrainment.ablation import evaluate
from entrainment.ablation.summaries import with_holm
from entrainment.heads import agreement
from entrainment.model import scoring
from entrainment.model.tokens import Tokens
from entrainment.store.schema import ABLATION
from tests import tiny


def _ablated_row(relation: str, null_p: float, seed: int = 0) -> dict:
    row = {c: None for c in ABLATION.names}
    return row | {
        "model": "m",
        "mask_relation": relation,
        "seed": seed,
        "ablation_label": f"mask:{relation}:seed{seed}",
        "ablation_method": "zero",
        "relation": relation,
        "condition": "related",
        "split": "test",
        "templates": "all",
        "variant": "ablated",
        "n": 10,
        "null_draws": 100,
        "null_p": null_p,
    }


def test_holm_family_spans_relations():
    # two relations' own masks (labels name their relation): one family of two tests, not two families of one
    abl = pl.DataFrame(
        [_ablated_row("a", 0.01), _ablated_row("b", 0.04), _ablated_row("c", 0.03, seed=1)],
        schema=ABLATION.polars_schema(),
    )
    got = dict(zip(with_holm(abl)["mask_relation"], with_holm(abl)["null_p_holm"]))
    assert got["a"] == pytest.approx(0.02)  # 2 x 0.01 (the old key left it at 0.01)
    assert got["b"] == pytest.approx(0.04)  # max(0.02, 1 x 0.04)
    assert got["c"] == pytest.approx(0.03)  # another seed: its own family


def test_gap_closed_is_capped_with_overshoot():
    assert agreement.capped(1.5) == {"gap_closed": 1.0, "overshoot": pytest.approx(0.5)}
    assert agreement.capped(0.4) == {"gap_closed": 0.4, "overshoot": 0.0}
    assert agreement.capped(-0.2) == {"gap_closed": -0.2, "overshoot": 0.0}
    nan = agreement.capped(float("nan"))
    assert np.isnan(nan["gap_closed"]) and np.isnan(nan["overshoot"])


def test_k_curve_rows_are_capped():
    m = tiny.model("llama")
    tk = Tokens(m.tokenizer)
    texts = [
        "The capital city of Germany is Berlin. The capital of France is the city of",
        "window. The capital of Spain is the city of",
        "Rome. What color are limes? They are",
    ]
    prompts = [tk.prompt(t) for t in texts]
    base = [tk.prompt(t.split(". ", 1)[1]) for t in texts]
    gold = [tk.answer(t, " Paris")[0] for t in texts]
    dist = [tk.answer(t, " Rome")[0] for t in texts]
    rng = np.random.default_rng(0)
    rows = agreement.k_curves(m, prompts, gold, dist, {"scan": rng.normal(size=(2, 4))}, 4, 2, 0, base_prompts=base)
    for r in rows:
        f = r["gap_closed"]
        assert np.isnan(f) or f <= 1.0
        assert np.isnan(r["overshoot"]) or r["overshoot"] >= 0


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from entrainment.data import lre_prompts
    from tests.toy_data import toy_lre

    lre = toy_lre(tmp_path_factory.mktemp("verdict") / "lre")
    items = lre_prompts.build(lre, ("toy capital", "toy color"), 0, 8, (0.5, 0.25, 0.25))
    return tiny.model("gpt_neox"), items


def test_collisions_are_left_out_of_the_gains(toy):
    m, items = toy
    tk = Tokens(m.tokenizer)
    test = items.filter((pl.col("split") == "test") & (pl.col("relation") == "toy capital"))
    row = test.row(0, named=True)
    # a distractor that starts with the gold's first token: Δ is 0 under every variant
    collide = dict(row, prompt_id="collision", distractor=row["gold"] + "zzq")
    assert tk.answer(row["text_base"], collide["distractor"])[0] == tk.answer(row["text_base"], row["gold"])[0]
    both = pl.concat([test, pl.DataFrame([collide], schema=test.schema)])
    assert evaluate.without_collisions(both, tk).equals(evaluate.without_collisions(test, tk))
    key = {"mask_relation": "toy capital", "seed": 0, "ablation_label": "mask:x"}
    plan = evaluate.Plan(random_draws=1, seed=0, batch_size=4)
    hs = evaluate.HeadSet("mask:x", ((0, 1),))
    a = evaluate.evaluate_mask(m, both, hs, key, plan).filter(pl.col("variant") == "ablated")
    b = evaluate.evaluate_mask(m, test, hs, key, plan).filter(pl.col("variant") == "ablated")
    assert a["n"].to_list() == b["n"].to_list()
    assert a["gain"].to_list() == pytest.approx(b["gain"].to_list())


def _subject_means(mdf: pl.DataFrame, pdf: pl.DataFrame, rel: str, cond: str) -> np.ndarray:
    sub = mdf.filter((pl.col("relation") == rel) & (pl.col("condition") == cond)).join(
        pdf.select("prompt_id", "subject"), on="prompt_id"
    )
    d = sub.with_columns((pl.col("distractor_logit_ctx") - pl.col("distractor_logit_base")).alias("d"))
    return d.group_by("subject").agg(pl.col("d").mean())["d"].to_numpy()


def test_subject_level_stats_equal_a_direct_computation(tmp_path):
    from scipy import stats as sps

    from entrainment.stages import stats
    from tests.toy_data import synthetic_tables

    mdf, pdf = synthetic_tables(tmp_path)
    s, _ = stats.compute(tmp_path / "measurements.parquet", tmp_path / "prompts.parquet")
    pick = (pl.col("target") == "distractor") & (pl.col("metric") == "logit") & pl.col("position").is_null()
    for rel in ("r1", "r2"):
        for cond in ("related", "random"):
            means = _subject_means(mdf, pdf, rel, cond)
            ref = sps.ttest_1samp(means, 0.0)
            ci = ref.confidence_interval(0.95)
            r = s.filter(pick & (pl.col("relation") == rel) & (pl.col("condition") == cond)).row(0, named=True)
            assert r["n_subjects"] == len(means) < r["n"]  # several prompts per subject
            assert r["subject_mean_diff"] == pytest.approx(means.mean(), rel=1e-9)
            assert (r["subject_ci_low"], r["subject_ci_high"]) == (
                pytest.approx(ci.low, rel=1e-9),
                pytest.approx(ci.high, rel=1e-9),
            )
            assert r["subject_p"] == pytest.approx(ref.pvalue, rel=1e-9)
            assert r["pooling"] is None
    # pooled: relations weighted equally (r3, one subject, has no variance and is left out), Welch-Satterthwaite df
    for cond in ("related", "random"):
        m = [_subject_means(mdf, pdf, rel, cond) for rel in ("r1", "r2")]
        v = np.array([x.var(ddof=1) / len(x) for x in m])
        est = np.mean([x.mean() for x in m])
        se = np.sqrt(v.sum()) / 2
        df = v.sum() ** 2 / np.sum(v**2 / np.array([len(x) - 1 for x in m]))
        half = sps.t.ppf(0.975, df) * se
        r = s.filter(pick & (pl.col("relation") == "ALL") & (pl.col("condition") == cond)).row(0, named=True)
        assert r["pooling"] == "relations_equal"
        assert r["subject_mean_diff"] == pytest.approx(est, rel=1e-9)
        assert r["subject_ci_low"] == pytest.approx(est - half, rel=1e-9)
        assert r["subject_p"] == pytest.approx(2 * sps.t.sf(abs(est / se), df), rel=1e-9)
        # the prompt-level pooled row: the mean of the two relations' item means, not the item-weighted mean
        items = {
            rel: (
                mdf.filter((pl.col("relation") == rel) & (pl.col("condition") == cond))
                .select(pl.col("distractor_logit_ctx") - pl.col("distractor_logit_base"))
                .to_series()
                .to_numpy()
            )
            for rel in ("r1", "r2")
        }
        assert r["mean_diff"] == pytest.approx(np.mean([x.mean() for x in items.values()]), rel=1e-9)
        assert r["mean_diff"] != pytest.approx(np.concatenate(list(items.values())).mean(), rel=1e-6)
        assert r["n"] == sum(len(x) for x in items.values())


def test_interaction_equals_gain_minus_noctx_per_subject(toy):
    from entrainment.statistics import verdict

    m, items = toy
    test = items.filter((pl.col("split") == "test") & (pl.col("relation") == "toy capital"))
    hs = evaluate.HeadSet("mask:x", ((0, 1), (1, 2)))
    plan = evaluate.Plan(random_draws=1, seed=0, batch_size=4, subject_conditions=("related",))
    key = {"mask_relation": "toy capital", "seed": 0, "ablation_label": "mask:x"}
    _, _, rows = evaluate.evaluate_masks(m, test, [hs], key, plan)[0]
    assert rows and {r["condition"] for r in rows} == {"related"}
    sg = verdict.subject_gains(pl.DataFrame(rows))
    assert (sg["interaction"] - (sg["gain"] - sg["gain_noctx"])).abs().max() < 1e-12
    # gain_noctx by hand: the no-context prompts scored intact and with the heads removed
    tk = Tokens(m.tokenizer)
    rel = evaluate.without_collisions(test.filter(pl.col("condition") == "related"), tk).to_dicts()
    base = [tk.prompt(r["text_base"]) for r in rel]
    g = [tk.answer(r["text_base"], r["gold"])[0] for r in rel]
    d = [tk.answer(r["text_base"], r["distractor"])[0] for r in rel]
    intact = scoring.run_pass(m, base, g, d, None, 2)
    removed = scoring.run_pass(m, base, g, d, hs.mask(2, 4), 2)
    by: dict[str, list[float]] = {}
    for r, a, b in zip(rel, intact.gold - intact.distractor, removed.gold - removed.distractor):
        by.setdefault(r["subject"], []).append(b - a)
    got = dict(zip(sg["subject"], sg["gain_noctx"]))
    assert set(got) == set(by)
    for s, v in by.items():
        assert got[s] == pytest.approx(np.mean(v), abs=1e-4)
    assert dict(zip(sg["subject"], sg["n_items"])) == {s: len(v) for s, v in by.items()}
    # subject accuracy: the share of the subject's items with Δ > 0, intact and with the heads removed
    items_df = pl.DataFrame(rows)
    for s_ in sg.iter_rows(named=True):
        own = items_df.filter(pl.col("subject") == s_["subject"])
        assert s_["acc_original"] == pytest.approx(float((own["delta_original"] > 0).mean()))
        assert s_["acc_gain"] == pytest.approx(
            float((own["delta_ablated"] > 0).mean()) - float((own["delta_original"] > 0).mean())
        )


def test_verdict_rows_use_the_subject_as_unit():
    from scipy import stats as sps

    from entrainment.statistics import verdict

    gains = [0.5, 1.5, -0.2, 0.9, 1.1]
    noctx = [0.1, 0.3, 0.0, -0.4, 0.2]
    sg = pl.DataFrame(
        {
            "model": "m",
            "relation": "r",
            "ablation_label": "mask:r:seed0",
            "ablation_method": "zero",
            "fold": None,
            "subject": [f"s{i}" for i in range(5)],
            "n_items": [3, 4, 2, 5, 6],
            "gain": gains,
            "gain_noctx": noctx,
            "interaction": [a - b for a, b in zip(gains, noctx)],
            "acc_original": [0.0, 0.5, 1.0, 0.2, 0.5],
            "acc_gain": [0.5, 0.25, 0.0, 0.4, 0.0],
        }
    ).cast({"fold": pl.Int64})
    key = ("m", "r", "mask:r:seed0", "zero")
    v = verdict.verdict_rows(sg, {key: (0.02, 100)}, {key: 2}).row(0, named=True)
    ref = sps.ttest_1samp(gains, 0.0)
    ci = ref.confidence_interval(0.95)
    assert v["n_subjects"] == 5 and v["n_items"] == 20 and v["subjects_helped"] == 4 and v["unit"] == "subject"
    assert v["gain"] == pytest.approx(np.mean(gains)) and v["gain_p"] == pytest.approx(ref.pvalue)
    assert (v["gain_ci_low"], v["gain_ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    inter = sps.ttest_1samp(np.subtract(gains, noctx), 0.0)
    assert v["interaction_p"] == pytest.approx(inter.pvalue)
    assert v["interaction"] == pytest.approx(np.mean(gains) - np.mean(noctx))
    assert v["null_p"] == 0.02 and v["null_draws"] == 100 and v["n_heads"] == 2
    acc = sps.ttest_1samp([0.5, 0.25, 0.0, 0.4, 0.0], 0.0)
    assert v["acc_gain"] == pytest.approx(0.23) and v["acc_gain_p"] == pytest.approx(acc.pvalue)
    assert v["acc_gain_ci_low"] == pytest.approx(acc.confidence_interval(0.95).low)
    assert v["acc_original"] == pytest.approx(0.44)


def test_folds_never_train_on_their_subjects_and_test_each_subject_once(toy):
    from entrainment.config import Config
    from entrainment.stages import crossfit

    _, items = toy
    cfg = Config(discover_relations=("toy capital",), crossfit_folds=3, crossfit_items=(1000, 1000))
    folded = crossfit.assign_folds(items, cfg.discover_relations, 3, cfg.seed)
    assert folded.filter(pl.col("relation") == "toy color")["fold"].is_null().all()
    cap = folded.filter(pl.col("relation") == "toy capital")
    assert set(cap["fold"]) == {0, 1, 2}
    assert cap.group_by("subject").agg(pl.col("fold").n_unique())["fold"].max() == 1  # one fold per subject
    tested: list[str] = []
    for f in range(3):
        rows = crossfit.fold_rows(folded, "toy capital", f, cfg)
        fold_subjects = set(cap.filter(pl.col("fold") == f)["subject"])
        seen = set(rows.filter(pl.col("split").is_in(["train", "dev"]))["subject"])
        assert seen and not (seen & fold_subjects)
        train, dev = (set(rows.filter(pl.col("split") == s)["subject"]) for s in ("train", "dev"))
        assert train and dev and not (train & dev)  # their own split, by subject
        test = rows.filter(pl.col("split") == "test")
        assert set(test["subject"]) <= fold_subjects
        tested += sorted(set(test["subject"]))
    related = set(cap.filter(pl.col("condition") == "related")["subject"])
    assert sorted(tested) == sorted(related)  # every subject with items tested exactly once
    small = crossfit.fold_rows(folded, "toy capital", 0, cfg.replace(crossfit_items=(2, 1)))
    assert small.filter(pl.col("split") == "train").height <= 2 and small.filter(pl.col("split") == "dev").height <= 1


def test_crossfit_verdict_tests_every_subject_once(toy):
    from entrainment.config import Config
    from entrainment.stages import crossfit
    from entrainment.statistics import verdict

    m, items = toy
    cfg = Config(discover_relations=("toy capital",), crossfit_folds=2, crossfit_draws=5, null_items=4, batch_size=4)
    folded = crossfit.assign_folds(items, cfg.discover_relations, 2, cfg.seed)
    rows, facts = crossfit.evaluate(m, folded, "toy capital", [(0, ((0, 1),)), (1, ((1, 3), (0, 0)))], cfg)
    sg = verdict.subject_gains(rows)
    tk = Tokens(m.tokenizer)
    related = evaluate.without_collisions(
        folded.filter((pl.col("relation") == "toy capital") & (pl.col("condition") == "related")), tk
    )
    assert sorted(sg["subject"]) == sorted(set(related["subject"]))  # each subject once, by its own fold
    assert set(sg["ablation_label"]) == {"crossfit:toy capital"}
    assert sg["n_items"].sum() == related.height
    assert facts["null_draws"] == 5 and 1 / 6 <= facts["null_p"] <= 1
    v = verdict.verdict_rows(
        sg, {facts["key"]: (facts["null_p"], facts["null_draws"])}, {facts["key"]: facts["n_heads"]}
    ).row(0, named=True)
    assert v["n_subjects"] == related["subject"].n_unique() and v["n_folds"] == 2 and v["null_draws"] == 5


def test_verdict_panels_draw_from_the_tables():
    from entrainment.figures import verdict_panels
    from entrainment.statistics import verdict

    rng = np.random.default_rng(1)
    n = 6
    items = pl.DataFrame(
        {
            "model": "m",
            "relation": "r",
            "ablation_label": "crossfit:r",
            "ablation_method": "zero",
            "fold": [i % 2 for i in range(2 * n)],
            "subject": [f"s{i % n}" for i in range(2 * n)],
            "delta_original": rng.normal(5, 1, 2 * n),
            "delta_ablated": rng.normal(6, 1, 2 * n),
            "delta_noctx": rng.normal(8, 1, 2 * n),
            "delta_noctx_ablated": rng.normal(8, 1, 2 * n),
        }
    )
    items = items.with_columns(pl.Series("fold", [int(s[1:]) % 2 for s in items["subject"]]))
    sg = verdict.subject_gains(items)
    assert sg.height == n and (sg["n_items"] == 2).all()
    v = verdict.verdict_rows(sg, {}, {})
    assert v["null_draws"].to_list() == [0] and np.isnan(v["null_p"][0])
    for uri in (verdict_panels.verdict_plot(v), verdict_panels.subject_plot(sg)):
        assert uri and uri.startswith("data:image/png;base64,")
    assert verdict_panels.subject_plot(sg.with_columns(pl.lit("mask:r:seed0").alias("ablation_label"))) is None
