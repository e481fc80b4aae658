"""Head sets you can trust: processor-independent numerics, stability selection, scan CIs, held-out templates."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from entrainment.config import Config
from entrainment.data import lre_prompts, relations
from entrainment.heads import maps, search, stability
from entrainment.heads.search import SearchParams
from entrainment.model import loading
from entrainment.paths import LRE_DIR
from entrainment.stages import discover, generate, scan
from tests import tiny
from tests.tiny import copy_head_model
from tests.toy_data import search_items


def test_search_dtype_auto_is_float32_on_every_cpu(monkeypatch):
    from pathlib import Path

    real = Path.read_text
    monkeypatch.setattr(
        Path,
        "read_text",
        lambda self, *a, **k: (
            "flags : fpu avx512_bf16 amx_bf16 amx_tile" if str(self) == "/proc/cpuinfo" else real(self, *a, **k)
        ),
    )
    assert loading.search_bf16("auto", "cpu") is False  # whatever the CPU claims
    assert loading.search_bf16("auto", "cuda") is True and loading.search_bf16("auto", "cuda:1") is True
    assert loading.search_bf16("bfloat16", "cpu") is True and loading.search_bf16("float32", "cuda") is False
    assert loading.search_bf16("auto", "mps") is False


def test_wilson_interval_equals_a_direct_computation():
    for k, n in ((0, 6), (3, 6), (6, 6), (17, 40)):
        z = sps.norm.ppf(0.975)
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = stability.wilson(k, n)
        assert lo == pytest.approx(max(0, centre - half), abs=1e-12) and hi == pytest.approx(
            min(1, centre + half), abs=1e-12
        )


def test_the_planted_copy_head_is_in_every_search_and_the_stable_set():
    m = copy_head_model()
    rows = []
    for split, n in (("train", 16), ("dev", 8)):
        for i, it in enumerate(search_items(m, n, seed=1 if split == "dev" else 0)):
            rows.append({"split": split, "condition": "related", "relation": "copy", "it": it, "i": i})
    found = []  # six searches: three seeds, each on the training items and on one bootstrap resample of them
    for seed in (0, 1, 2):
        for r in range(2):
            train = search.bootstrap([x["it"] for x in rows if x["split"] == "train"], r, seed)
            dev = [x["it"] for x in rows if x["split"] == "dev"]
            log_rows, hist = search.search(
                m, train, dev, SearchParams(epochs=4, batch_size=8, lam=0.0, init=3.0, seed=seed)
            )
            e = search.select_epoch(log_rows)
            found.append(set(search.removed_heads(hist[e])))
    rows_ = stability.inclusion(found, 1, 2, threshold=0.5)
    copy = next(r for r in rows_ if (r["layer"], r["head"]) == (0, 0))
    idle = next(r for r in rows_ if (r["layer"], r["head"]) == (0, 1))
    assert copy["searches"] == 6 and copy["selected"] == 6 and copy["frequency"] == 1.0 and copy["stable"]
    assert (copy["ci_low"], copy["ci_high"]) == pytest.approx(stability.wilson(6, 6))
    assert idle["frequency"] == 0.0 and not idle["stable"]
    assert stability.stable_set(rows_) == ((0, 0),)
    assert stability.mean_jaccard(found)[0] == 1.0


def test_bootstrap_resamples_are_seeded_resamples_of_the_training_items():
    items = list(range(40))
    assert search.bootstrap(items, 0, 5) == items
    a, b = search.bootstrap(items, 1, 5), search.bootstrap(items, 1, 5)
    assert a == b and len(a) == 40 and set(a) <= set(items) and len(set(a)) < 40
    assert search.bootstrap(items, 2, 5) != a and search.bootstrap(items, 1, 6) != a


def test_mean_jaccard_and_its_bootstrap_ci():
    sets = [{(0, 1)}, {(0, 1), (2, 3)}, {(2, 3)}, set()]
    mean, lo, hi = stability.mean_jaccard(sets)
    pairs = [stability.jaccard(a, b) for i, a in enumerate(sets) for b in sets[i + 1 :]]
    assert mean == pytest.approx(np.mean(pairs)) and 0 <= lo <= hi <= 1
    assert np.isnan(stability.mean_jaccard([{(0, 1)}])[0])


def test_scan_bootstrap_ci_equals_a_recomputation_from_the_stored_effects(tmp_path):
    from tasks.scan import save_effects

    m = tiny.model("llama")
    from tests.toy_data import toy_lre

    lre = toy_lre(tmp_path / "lre")
    p = lre_prompts.build(
        lre, ("toy capital",), 0, 4, (0.6, 0.2, 0.2), ("toy capital",), lre_prompts.SearchData((3, 3, 3))
    )
    cfg = Config(scan_items=0, relations=("toy capital",), discover_relations=("toy capital",))
    df, effects, _ = scan.score_heads(m, p, "toy capital", "zero", cfg)
    path = save_effects(effects, tmp_path / "effects.npy")
    stored = np.load(path)
    assert np.array_equal(stored, effects) and stored.shape == (m.info.n_total_heads, df["n"][0])
    boot = maps.bootstrap_ranks(stored, seed=cfg.seed)
    s = df.filter(pl.col("method") == "scan").sort("layer", "head")
    assert s["score"].to_numpy() == pytest.approx(stored.mean(axis=1), abs=1e-12)
    assert s["score_ci_low"].to_numpy() == pytest.approx(boot["score_ci_low"], abs=1e-12)
    assert s["score_ci_high"].to_numpy() == pytest.approx(boot["score_ci_high"], abs=1e-12)
    assert (s["rank_low"].to_numpy() == boot["rank_low"]).all() and (
        s["rank_high"].to_numpy() == boot["rank_high"]
    ).all()
    assert (s["score_ci_low"] <= s["score"]).all() and (s["score"] <= s["score_ci_high"]).all()
    assert (s["rank_low"] <= s["rank"]).all() and (s["rank"] <= s["rank_high"]).all()
    # a direct recomputation of one head's percentile CI from the same resampling weights
    n = stored.shape[1]
    w = np.random.default_rng(cfg.seed).multinomial(n, np.full(n, 1 / n), size=1000).T / n
    assert np.percentile(stored[0] @ w, 2.5) == pytest.approx(boot["score_ci_low"][0], abs=1e-12)
    # the subject-level CI: the cluster bootstrap over the scored items' query subjects
    dev = p.filter((pl.col("split") == "dev") & (pl.col("condition") == "related"))
    assert s["n_subjects"][0] == dev["subject"].n_unique() >= 2
    assert (s["subject_ci_low"] <= s["subject_ci_high"]).all()
    assert df.filter(pl.col("method") == "atp")["subject_ci_low"].is_nan().all()


def test_the_subject_bootstrap_resamples_whole_subjects():
    """Two subjects, one item with effect 0 and three with effect 1: every cluster resample's mean is 0 (subject A
    twice), 1 (B twice) or 3/4 (one each), never an item-level mixture such as 1/2; 2.5% / 97.5% are 0 and 1."""
    effects = np.array([[0.0, 1.0, 1.0, 1.0]])
    groups = np.array([0, 1, 1, 1])
    boot = maps.bootstrap_ranks(effects, draws=2000, seed=3, groups=groups)
    assert boot["score_ci_low"][0] == 0.0 and boot["score_ci_high"][0] == 1.0
    g = 2
    drawn = np.random.default_rng(3).multinomial(g, np.full(g, 1 / g), size=2000).T
    means = (effects @ drawn[groups]) / drawn[groups].sum(axis=0)
    assert set(np.round(means[0], 12)) <= {0.0, 0.75, 1.0}
    items = maps.bootstrap_ranks(effects, draws=2000, seed=3)  # the item bootstrap mixes items: a narrower CI
    assert items["score_ci_low"][0] > 0.0


def test_template_holdout_keeps_one_query_template_out_of_train_and_dev():
    cfg = Config(relations=("country capital city",))
    df = generate.from_config(cfg)
    rel = relations.load_relations(LRE_DIR, ("country capital city",))[0]
    held = lre_prompts.held_out_template(rel)
    assert held is not None and held in rel.query_templates
    assert not len(df.filter(pl.col("split").is_in(["train", "dev"]) & (pl.col("query_template") == held)))
    test = df.filter((pl.col("split") == "test") & (pl.col("condition") == "related"))
    assert set(test["query_template"]) == set(rel.query_templates)  # test keeps both: seen and unseen
    formatted = [t.format(subj) for t, subj in zip(df["query_template"], df["subject"])]
    assert df["query"].to_list() == formatted
    off = generate.from_config(cfg.replace(template_holdout=False))
    assert held in set(off.filter(pl.col("split") == "train")["query_template"])


def test_discovery_tables_record_the_dtype_and_every_search(tmp_path):
    from tests.toy_data import toy_lre

    m = tiny.model("llama")
    lre = toy_lre(tmp_path / "lre")
    p = lre_prompts.build(
        lre, ("toy capital",), 0, 4, (0.6, 0.2, 0.2), ("toy capital",), lre_prompts.SearchData((3, 2, 3))
    )
    cfg = Config(
        seeds=(0, 1),
        search_resamples=2,
        epochs=2,
        discover_batch_size=4,
        relations=("toy capital",),
        discover_relations=("toy capital",),
    )
    found = [discover.one_search(m, p, "toy capital", s, r, cfg) for s in cfg.seeds for r in range(2)]
    t = discover.tables(found, cfg)
    assert set(t["discovery"]["search_dtype"]) == {"float32"}
    assert set(zip(t["discovery"]["seed"], t["discovery"]["resample"])) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert len(t["head_overlap"]) == 6 and t["head_overlap"]["mean_jaccard"].n_unique() == 1
    st = t["head_stability"]
    assert len(st) == m.info.n_total_heads and (st["searches"] == 4).all()
    assert set(t["heads"]["seed"]) == {0, 1, -1}  # each seed's full-split search and the stable set
    assert set(t["heads"].filter(pl.col("seed") == -1)["ablation_label"]) == {"stable:toy capital"}
