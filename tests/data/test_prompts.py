"""Dataset stage: SPEC columns, determinism, splits, matched pairs, distractor != gold."""

from __future__ import annotations

import polars as pl
import pytest

from entrainment.config import CONDITIONS
from entrainment.data import lre_prompts
from entrainment.paths import LRE_DIR
from entrainment.store import tables
from entrainment.store.schema import PROMPTS

RELS = ("country capital city", "fruit inside color")


@pytest.fixture(scope="module")
def df() -> pl.DataFrame:
    return lre_prompts.build(LRE_DIR, RELS, seed=0, max_pairs=50, fractions=(0.8, 0.1, 0.1))


def test_columns_and_conditions(df):
    assert df.columns == PROMPTS.names
    assert set(df["condition"]) == set(CONDITIONS)
    counts = df.group_by("relation", "condition").len()
    assert counts["len"].max() <= 50 and counts.height == 8


def test_same_inputs_give_identical_bytes(tmp_path, df):
    again = lre_prompts.build(LRE_DIR, tuple(reversed(RELS)), seed=0, max_pairs=50, fractions=(0.8, 0.1, 0.1))
    a = tables.write_table(df, tmp_path / "a", "prompts").read_bytes()
    b = tables.write_table(again, tmp_path / "b", "prompts").read_bytes()
    assert a == b


def test_other_seed_differs(df):
    other = lre_prompts.build(LRE_DIR, RELS, seed=1, max_pairs=50, fractions=(0.8, 0.1, 0.1))
    assert set(other["prompt_id"]) != set(df["prompt_id"])


def test_relation_rows_do_not_depend_on_other_relations(df):
    alone = lre_prompts.build(LRE_DIR, ("fruit inside color",), seed=0, max_pairs=50, fractions=(0.8, 0.1, 0.1))
    assert alone.equals(df.filter(pl.col("relation") == "fruit inside color"))


def test_splits_disjoint_by_query_subject(df):
    per = df.group_by("relation", "subject").agg(pl.col("split").n_unique().alias("k"))
    assert per["k"].max() == 1
    assert set(df["split"]) == {"train", "dev", "test"}


def test_matched_related_counterfactual_pairs(df):
    rel = df.filter(pl.col("condition") == "related")
    cf = df.filter(pl.col("condition") == "counterfactual")
    j = rel.join(cf, on="pair_id", suffix="_cf")
    assert j.height == rel.height == cf.height
    assert (j["query"] == j["query_cf"]).all() and (j["context_subject"] == j["context_subject_cf"]).all()
    assert (j["distractor"] != j["distractor_cf"]).all()
    assert (
        df.filter(pl.col("condition").is_in(["random", "irrelevant"]))["pair_id"].null_count()
        == df.filter(pl.col("condition").is_in(["random", "irrelevant"])).height
    )


def test_distractor_never_gold_and_texts_follow_format(df):
    assert (df["distractor"] != df["gold"]).all()
    assert (df["text_ctx"] == df["context"] + " " + df["query"]).all()
    assert (df["text_base"] == df["query"]).all()
    rel = df.filter(pl.col("condition") == "related").row(0, named=True)
    assert rel["context"].endswith(f" {rel['distractor']}.")
    rnd = df.filter(pl.col("condition") == "random")
    assert (rnd["context"] == " " + rnd["distractor"] + ".").all()


def test_random_words_are_never_objects_of_the_relation(df):
    rnd = df.filter((pl.col("condition") == "random") & (pl.col("relation") == "fruit inside color"))
    objects = {o.lower() for o in df.filter(pl.col("relation") == "fruit inside color")["gold"]}
    assert not ({w.lower() for w in rnd["distractor"]} & objects)


def test_max_pairs_caps_items():
    small = lre_prompts.build(LRE_DIR, RELS, seed=0, max_pairs=10, fractions=(0.8, 0.1, 0.1))
    assert small.group_by("relation", "condition").len()["len"].max() <= 10


def test_word_list_rejects_non_words(tmp_path):
    from entrainment.errors import InputError

    p = tmp_path / "w.txt"
    p.write_text("apple\nice cream\n")
    with pytest.raises(InputError, match="ice cream"):
        lre_prompts.load_words(p)


def test_written_tables_are_readable_by_others(tmp_path, df):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = tables.write_table(df, tmp_path, "prompts")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".*.tmp"))
