"""Your own items and retrieval-style contexts: bad items at the door, own items through every stage, multi-passage
contexts, accuracy under misleading contexts and the prompting baseline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from entrainment.config import Config
from entrainment.data import items, lre_prompts
from entrainment.errors import InputError
from entrainment.stages import generate
from tests import tiny
from tests.helpers import cli, one_line_error

GOOD = [
    {
        "relation": "capitals",
        "query": "The capital of France is",
        "gold": "Paris",
        "distractor": "Rome",
        "context": "The capital of Italy is Rome.",
        "condition": "related",
    },
    {
        "relation": "capitals",
        "query": "The capital of France is",
        "gold": "Paris",
        "distractor": "Berlin",
        "context": "The capital of France is Berlin.",
        "condition": "counterfactual",
    },
    {
        "relation": "capitals",
        "query": "The capital of Spain is",
        "gold": "Madrid",
        "distractor": "window",
        "context": " window.",
        "condition": "random",
    },
    {
        "relation": "capitals",
        "query": "The capital of Spain is",
        "gold": "Madrid",
        "distractor": "Lima",
        "context": "Peru has mountains. The capital of Spain is Lima. Chile is long.",
        "condition": "passages",
    },
    {
        "relation": "capitals",
        "query": "The capital of Japan is",
        "gold": "Tokyo",
        "distractor": "Cairo",
        "context": "The capital of Egypt is Cairo.",
        "condition": "related",
    },
    {
        "relation": "capitals",
        "query": "The capital of Japan is",
        "gold": "Tokyo",
        "distractor": "Rome",
        "context": "",
        "condition": "none",
    },
    {
        "relation": "capitals",
        "query": "The capital of Peru is",
        "gold": "Lima",
        "distractor": "Tokyo",
        "context": "The capital of Japan is Tokyo.",
        "condition": "related",
    },
    {
        "relation": "capitals",
        "query": "The capital of Chile is",
        "gold": "Santiago",
        "distractor": "Madrid",
        "context": "The capital of Spain is Madrid.",
        "condition": "related",
    },
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _bad(tmp_path: Path, name: str, rows: list[dict] | None = None, text: str | bytes | None = None) -> Path:
    p = tmp_path / name
    if rows is not None:
        _jsonl(p, rows)
    elif isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text or "")
    return p


def _with(i: int, **change) -> list[dict]:
    rows = [dict(r) for r in GOOD]
    rows[i] = {k: v for k, v in (rows[i] | change).items() if v is not ...}
    return rows


BAD = [
    ("missing field", lambda d: _bad(d, "a.jsonl", _with(2, gold=...)), ["line 3", "gold", "missing field"]),
    ("extra field", lambda d: _bad(d, "a.jsonl", _with(1, colour="red")), ["line 2", "colour", "unknown field"]),
    ("empty value", lambda d: _bad(d, "a.jsonl", _with(0, query="  ")), ["line 1", "query", "empty"]),
    ("invisible value", lambda d: _bad(d, "a.jsonl", _with(0, gold="\u200b")), ["line 1", "gold", "invisible"]),
    ("non-string value", lambda d: _bad(d, "a.jsonl", _with(4, gold=7)), ["line 5", "gold", "expected a string"]),
    (
        "gold equals distractor",
        lambda d: _bad(d, "a.jsonl", _with(0, distractor="ＰＡＲＩＳ", context="ＰＡＲＩＳ.")),
        ["line 1", "distractor", "same answer as gold"],
    ),
    ("unknown condition", lambda d: _bad(d, "a.jsonl", _with(3, condition="rag")), ["line 4", "condition", "rag"]),
    ("duplicate item", lambda d: _bad(d, "a.jsonl", GOOD + [GOOD[1]]), ["line 9", "duplicate item", "line 2"]),
    (
        "context without distractor",
        lambda d: _bad(d, "a.jsonl", _with(0, context="The capital of Italy is big.")),
        ["line 1", "context", "does not contain the distractor"],
    ),
    ("empty context", lambda d: _bad(d, "a.jsonl", _with(0, context="")), ["line 1", "context", "condition none"]),
    ("binary jsonl", lambda d: _bad(d, "a.jsonl", text=b"\x89PNG\r\n\x1a\n\x00\xff"), ["a.jsonl", "UTF-8"]),
    ("json in a csv", lambda d: _bad(d, "a.csv", text=json.dumps(GOOD[0]) + "\n"), ["a.csv", "looks like JSON"]),
    ("text in a parquet", lambda d: _bad(d, "a.parquet", text="relation,query\n"), ["a.parquet", "not a Parquet"]),
    ("not a json object", lambda d: _bad(d, "a.jsonl", text='{"relation": "x"\n'), ["line 1", "not a JSON object"]),
    ("unknown extension", lambda d: _bad(d, "a.txt", text="x"), ["a.txt", ".jsonl, .csv or .parquet"]),
    ("empty file", lambda d: _bad(d, "a.jsonl", text=""), ["a.jsonl", "no items"]),
    (
        "csv row with extra values",
        lambda d: _bad(
            d, "a.csv", text="relation,query,gold,distractor,context,condition\nr,q,g,d,the d.,related,oops\n"
        ),
        ["line 2", "more values"],
    ),
    (
        "query with two splits",
        lambda d: _bad(d, "a.jsonl", [dict(GOOD[0], split="train"), dict(GOOD[1], split="test")] + GOOD[2:]),
        ["line 2", "split", "share one split"],
    ),
]


@pytest.mark.parametrize("case,make,needles", BAD, ids=[b[0] for b in BAD])
def test_bad_items_are_one_line_and_exit_2(tmp_path, case, make, needles):
    path = make(tmp_path)
    with pytest.raises(InputError) as e:
        items.build_items(path)
    assert "\n" not in str(e.value) and all(n in str(e.value) for n in needles), str(e.value)
    one_line_error(cli("generate", "--out", str(tmp_path / "out"), "--items", str(path)), *needles)
    assert not (tmp_path / "out" / "prompts.parquet").exists()


def test_items_in_every_format_give_the_same_prompts(tmp_path):
    a = items.build_items(_jsonl(tmp_path / "i.jsonl", GOOD), seed=3)
    pl.DataFrame(GOOD).write_csv(tmp_path / "i.csv")
    pl.DataFrame(GOOD).write_parquet(tmp_path / "i.parquet")
    assert a.equals(items.build_items(tmp_path / "i.csv", seed=3))
    assert a.equals(items.build_items(tmp_path / "i.parquet", seed=3))
    assert (a["text_base"] == a["query"]).all()
    with_ctx = a.filter(pl.col("condition") != "none")
    assert (with_ctx["text_ctx"] == with_ctx["context"] + " " + with_ctx["query"]).all()
    assert (
        a.filter(pl.col("condition") == "none")["text_ctx"] == a.filter(pl.col("condition") == "none")["query"]
    ).all()
    # splits by query: all items of a query share one split
    assert (a.group_by("query").agg(pl.col("split").n_unique())["split"] == 1).all()


def test_given_splits_are_kept(tmp_path):
    rows = [dict(r, split="test") if r["query"].endswith("France is") else dict(r) for r in GOOD]
    df = items.build_items(_jsonl(tmp_path / "i.jsonl", rows))
    assert set(df.filter(pl.col("query") == "The capital of France is")["split"]) == {"test"}


def test_the_shipped_example_items_file_is_valid():
    path = Path(__file__).resolve().parents[2] / "data" / "items_example.jsonl"
    if not path.exists():
        pytest.fail("data/items_example.jsonl is missing")
    df = items.build_items(path)
    assert len(df) >= 10 and df["relation"].n_unique() >= 1


def test_own_items_run_through_every_stage(tmp_path):
    model = tiny.save("llama", tmp_path / "model")
    path = _jsonl(tmp_path / "items.jsonl", GOOD)
    toml = tmp_path / "c.toml"
    toml.write_text(
        "max_pairs = 4\nepochs = 2\nseeds = [0]\nsearch_resamples = 2\ndiscover_batch_size = 4\n"
        "random_draws = 1\nnull_draws = 3\nnull_items = 3\nscan_items = 2\nscan_k = 2\n"
        'compare_methods = ["zero", "mean"]\ncrossfit_folds = 0\n'  # 3 queries: too few subjects to cross-fit
    )
    out = tmp_path / "out"
    r = cli("run", "--out", str(out), "--model", model, "--items", str(path), "--config", str(toml))
    assert r.returncode == 0, r.stderr[-3000:]
    p = pl.read_parquet(out / "prompts.parquet")
    assert set(p["relation"]) == {"capitals"} and len(p) == len(GOOD)
    m = pl.read_parquet(out / "measurements.parquet")
    assert set(m["prompt_id"]) == set(p["prompt_id"])
    for name in ("stats", "heads", "discovery", "head_stability", "head_scores", "ablation", "report"):
        assert (out / (f"{name}.html" if name == "report" else f"{name}.parquet")).exists(), name
    assert set(pl.read_parquet(out / "heads.parquet")["relation"]) == {"capitals"}
    r = cli(
        "sql", "--out", str(out), "select count(*) as n from prompts where relation = 'capitals'", "--format", "csv"
    )
    assert r.returncode == 0 and r.stdout.split() == ["n", str(len(GOOD))]
    # the Python API on the same items file and options gives the same tables (the items option on both paths)
    import entrainment as en

    opts = dict(max_pairs=4, epochs=2, seeds=[0], search_resamples=2, discover_batch_size=4, crossfit_folds=0)
    pa = en.prompts(items=path, **opts)
    mdl = en.load_model(model)
    frames = {"prompts": pa, "measurements": en.measure(mdl, pa), **en.discover(mdl, pa, **opts)}
    for name in ("prompts", "measurements", "heads", "discovery"):
        table = pl.read_parquet(out / f"{name}.parquet")
        assert_frame_equal(
            frames[name].select(table.columns), table, check_exact=False, abs_tol=1e-6, check_dtypes=False
        )


def test_passages_put_the_distractor_passage_at_every_position_once_and_never_the_gold():
    cfg = Config(relations=("country capital city",), passage_items=6, n_passages=4)
    df = generate.from_config(cfg).filter(pl.col("condition") == "passages")
    assert len(df) and set(df["n_passages"]) == {4}
    for pair, g in df.group_by("pair_id"):
        assert sorted(g["position"].to_list()) == [1, 2, 3, 4]  # every position exactly once
        first = g.row(0, named=True)
        passages = [re.split(r"(?<=\.) ", r["context"]) for r in g.iter_rows(named=True)]
        assert all(len(x) == 4 for x in passages)
        for r, ps in zip(g.iter_rows(named=True), passages):
            assert first["distractor"] in ps[r["position"] - 1]  # the distractor passage sits at `position`
            assert sum(first["distractor"] in x for x in ps) == 1
            assert not any(re.search(rf"\b{re.escape(r['gold'])}\b", x) for x in ps)  # no passage holds the gold
            assert r["text_ctx"] == r["context"] + " " + r["query"]
        assert sorted(map(sorted, passages)) == [sorted(passages[0])] * 4  # the same passages, reordered
    n = dict(df.group_by("split").len().iter_rows())
    assert n["train"] == n["test"] == 4 * 6  # 6 queries each; dev has only 3 subjects x 1 template (holdout)
    assert 0 < n["dev"] <= 4 * 6


def test_the_prompting_baseline_differs_only_by_the_instruction():
    cfg = Config(relations=("country capital city", "fruit inside color"), prompt_instruction="Careful: maybe false.")
    df = generate.from_config(cfg)
    assert (df["text_prompted"] == df["context"] + " Careful: maybe false. " + df["query"]).all()
    assert (df["text_ctx"] == df["context"] + " " + df["query"]).all()
    assert (df["text_prompted"].str.replace(" Careful: maybe false.", "", literal=True) == df["text_ctx"]).all()


def test_counterfactuals_of_the_discovery_relation_are_enough_for_accuracy():
    df = generate.from_config(Config(relations=("country capital city",)))
    cf = df.filter((pl.col("condition") == "counterfactual") & (pl.col("split") == "test"))
    assert len(cf) >= 24 and set(cf["pair_id"]) <= set(df.filter(pl.col("condition") == "related")["pair_id"])
    assert not len(df.filter(pl.col("gold") == pl.col("distractor")))


def test_stats_group_the_passages_shift_by_position(tmp_path, lre_dir):
    from entrainment.stages import measure, stats
    from entrainment.store import tables

    p = lre_prompts.build(
        lre_dir,
        ("toy capital",),
        0,
        4,
        (0.6, 0.2, 0.2),
        ("toy capital",),
        lre_prompts.SearchData((3, 2, 3), passage_items=2, n_passages=3),
    )
    tables.write_table(p, tmp_path, "prompts")
    m = measure.measure_frame(tiny.model("llama"), p, batch_size=8)
    tables.write_table(m, tmp_path, "measurements")
    s, _ = stats.compute(tmp_path / "measurements.parquet", tmp_path / "prompts.parquet")
    pos = s.filter(
        pl.col("position").is_not_null()
        & (pl.col("relation") == "ALL")
        & (pl.col("target") == "distractor")
        & (pl.col("metric") == "logprob")
    )
    assert sorted(pos["position"].to_list()) == [1, 2, 3] and set(pos["condition"]) == {"passages"}
    joined = m.join(p.select("prompt_id", "position"), on="prompt_id").filter(pl.col("position") == 2)
    diff = joined["distractor_logprob_ctx"] - joined["distractor_logprob_base"]
    assert pos.filter(pl.col("position") == 2)["mean_diff"][0] == pytest.approx(diff.mean(), abs=1e-9)
    assert pos.filter(pl.col("position") == 2)["n"][0] == len(joined)
    # the per-condition rows are unchanged by the position rows
    plain = s.filter(
        pl.col("position").is_null()
        & (pl.col("condition") == "passages")
        & (pl.col("relation") == "ALL")
        & (pl.col("target") == "distractor")
        & (pl.col("metric") == "logprob")
    )
    assert plain["n"][0] == len(p.filter(pl.col("condition") == "passages"))


def test_too_few_subjects_to_cross_fit_are_refused_at_the_door(tmp_path):
    """3 query subjects cannot fill 2 folds' train, dev and test: one line naming crossfit_folds, before any stage."""
    path = _jsonl(tmp_path / "items.jsonl", GOOD)
    toml = tmp_path / "c.toml"
    toml.write_text("crossfit_folds = 2\n")
    out = tmp_path / "out"
    r = cli(
        "run",
        "--out",
        str(out),
        "--model",
        tiny.save("llama", tmp_path / "model"),
        "--items",
        str(path),
        "--config",
        str(toml),
    )
    one_line_error(r, "crossfit_folds", "capitals", "subjects", str(path))
    assert not (out / "prompts.parquet").exists()  # refused before the dataset stage wrote anything


def test_twenty_thousand_relations_print_a_bounded_summary(tmp_path):
    """40,000 items in 20,000 relations (the runaway input of the hardening round): generate finishes and its
    console output stays a screenful (at most 20 lines per kind, then "... and N more"), not a line per relation."""
    rows = []
    for i in range(20_000):
        for cond, ctx in (("related", f"Item {i} is red."), ("counterfactual", f"The colour of thing {i} is red.")):
            rows.append(
                {
                    "relation": f"colour {i}",
                    "query": f"The colour of thing {i} is",
                    "gold": "blue",
                    "distractor": "red",
                    "context": ctx,
                    "condition": cond,
                }
            )
    path = _jsonl(tmp_path / "many.jsonl", rows)
    out = tmp_path / "out"
    r = cli("generate", "--out", str(out), "--items", str(path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert pl.read_parquet(out / "prompts.parquet")["relation"].n_unique() == 20_000
    lines = (r.stdout + r.stderr).splitlines()
    assert len(lines) < 150, len(lines)
    assert any("more" in ln for ln in lines), lines[-30:]
