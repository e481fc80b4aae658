"""Issue #35: nothing silently wrong. Each class of bad input (a field given twice, pairs across relations, a mean
reference from nothing, options that do nothing, API mistakes, hand edits, full disks, path loops, runaway inputs,
unclear messages) is refused in one line (exit 2 / InputError), or handled and said; every test here fails on the
code before the fix. CLI cases run as real subprocesses, API cases in-process (docs/validation.md)."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import polars as pl
import pytest

import entrainment as en
from entrainment.data import items
from entrainment.errors import InputError
from entrainment.store import tables
from tests import tiny
from tests.helpers import cli, one_line_error
from tests.toy_data import toy_lre

ITEM = {
    "relation": "capitals",
    "query": "The capital of France is",
    "gold": "Paris",
    "distractor": "Rome",
    "context": "The capital of Italy is Rome.",
    "condition": "related",
}
FIELDS = list(ITEM)


def _item(**over) -> dict:
    return dict(ITEM, **over)


def _queries(n: int, relation: str = "capitals", conditions=("related",), **over) -> list[dict]:
    """n distinct queries of one relation, one item per condition each."""
    out = []
    for i in range(n):
        for c in conditions:
            ctx = "The capital of Italy is Rome." if c == "related" else "The capital of France is Rome."
            out.append(
                _item(relation=relation, query=f"The capital of country {i} is", condition=c, context=ctx, **over)
            )
    return out


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _csv(path: Path, rows: list[dict]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(rows[0]))
    for r in rows:
        w.writerow([r[h] for h in rows[0]])
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lre(tmp_path_factory) -> Path:
    return toy_lre(tmp_path_factory.mktemp("lre"))


@pytest.fixture(scope="module")
def model():
    return en.Model(tiny.model("llama"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return tiny.save("llama", tmp_path_factory.mktemp("model"))


# ---- silently wrong: a field given twice ---------------------------------------------------------------------------


def test_a_csv_header_naming_gold_twice_is_refused(tmp_path):
    text = (
        "relation,query,gold,distractor,context,condition,gold\n"
        "capitals,The capital of France is,Paris,Rome,The capital of Italy is Rome.,related,WRONG\n"
    )
    (tmp_path / "i.csv").write_text(text)
    one_line_error(
        cli("generate", "--out", str(tmp_path / "o"), "--items", str(tmp_path / "i.csv")), "i.csv", "gold", "twice"
    )


def test_a_json_record_naming_gold_twice_is_refused(tmp_path):
    line = json.dumps(ITEM)[:-1] + ', "gold": "WRONG"}'
    (tmp_path / "i.jsonl").write_text(line + "\n")
    with pytest.raises(InputError, match="line 1: gold.*twice"):
        items.read_items(tmp_path / "i.jsonl")
    one_line_error(
        cli("generate", "--out", str(tmp_path / "o"), "--items", str(tmp_path / "i.jsonl")), "line 1: gold", "twice"
    )


# ---- silently wrong: pairs are scoped by relation ------------------------------------------------------------------


def _paired_items(relation: str, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        q = f"The capital of {relation} land {i} is"
        rows.append(_item(relation=relation, query=q, condition="related", pair_id=str(i + 1), split="test"))
        rows.append(
            _item(
                relation=relation,
                query=q,
                condition="counterfactual",
                pair_id=str(i + 1),
                split="test",
                context=f"The capital of {relation} land {i} is Rome.",
            )
        )
    return rows


def test_pair_ids_numbered_in_each_relation_pair_within_the_relation(tmp_path):
    path = _jsonl(tmp_path / "i.jsonl", _paired_items("alpha", 6) + _paired_items("beta", 2))
    r = cli("generate", "--out", str(tmp_path / "o"), "--items", str(path))
    assert r.returncode == 0, r.stderr[-2000:]
    p = tables.read_table(tmp_path / "o", "prompts")
    rel = p.filter(pl.col("condition") == "related")
    cf = p.filter(pl.col("condition") == "counterfactual")
    matched = rel.join(cf, on="pair_id", suffix="_cf")  # exactly how the paired contrast matches
    assert (matched["relation"] == matched["relation_cf"]).all()
    assert (matched["query"] == matched["query_cf"]).all()
    n = dict(matched.group_by("relation").len().iter_rows())
    assert n == {"alpha": 6, "beta": 2}


def test_the_paired_contrast_never_pairs_across_relations(model, tmp_path):
    """Pair ids that repeat across relations (a hand-built or API prompts frame, without the items file's
    relation prefix) are still paired within their relation by the stats stage."""
    p = items.build_items(_jsonl(tmp_path / "i.jsonl", _paired_items("alpha", 6) + _paired_items("beta", 2)))
    p = p.with_columns(pl.col("pair_id").str.split(":").list.last())  # 1, 2, ... in each relation
    assert (
        p.filter(pl.col("relation") == "alpha")["pair_id"]
        .is_in(p.filter(pl.col("relation") == "beta")["pair_id"])
        .any()
    )
    c = en.stats(en.measure(model, p), p).contrasts.filter(
        pl.col("paired")
        & (pl.col("ablation") == "none")
        & (pl.col("target") == "distractor")
        & (pl.col("metric") == "logprob")
    )
    assert dict(c.select("relation", "n").iter_rows()) == {"alpha": 6, "beta": 2, "ALL": 8}


def test_a_pair_id_naming_two_couples_is_refused(tmp_path):
    rows = _paired_items("alpha", 2)
    rows[2]["pair_id"] = rows[3]["pair_id"] = "1"  # the second query's couple reuses pair id 1
    path = _jsonl(tmp_path / "i.jsonl", rows)
    one_line_error(
        cli("generate", "--out", str(tmp_path / "o"), "--items", str(path)),
        "line 3: pair_id",
        "'1'",
        "already names a related item",
    )


# ---- silently wrong: a mean reference from nothing ------------------------------------------------------------------


def test_api_mean_ablation_without_train_rows_is_refused(model, tmp_path):
    p = items.build_items(_jsonl(tmp_path / "i.jsonl", _queries(2)))  # 2 queries: all test
    assert set(p["split"]) == {"test"}
    with pytest.raises(InputError, match="no train rows.*mean"):
        en.measure(model, p, [(0, 1)], ablation_method="mean")
    assert len(en.measure(model, p, [(0, 1)], ablation_method="zero")) == 2 * len(p)


def test_pipeline_mean_reference_without_train_items_is_refused(tmp_path, model_dir):
    from entrainment.config import make
    from tasks.means import reference

    out = tmp_path / "o"
    tables.write_table(items.build_items(_jsonl(tmp_path / "i.jsonl", _queries(2))), out, "prompts")
    cfg = make(out=str(out), model=model_dir, ablation_method="mean")
    with pytest.raises(InputError, match="capitals.*no train items"):
        reference(cfg, tiny.model("llama"), "capitals")


def test_measure_with_mean_ablation_on_a_relation_without_train_items_is_one_line(tmp_path, model_dir):
    path = _jsonl(tmp_path / "i.jsonl", _queries(2))
    out = tmp_path / "o"
    tables.write_table(items.build_items(path), out, "prompts")
    r = cli("measure", "--out", str(out), "--model", model_dir, "--ablation-heads", "0.1", "--ablation-method", "mean")
    one_line_error(r, "capitals", "no train items", "mean")


# ---- silently wrong: options that do nothing -----------------------------------------------------------------------


def test_ablate_refuses_stability_threshold(tmp_path):
    one_line_error(cli("ablate", "--out", str(tmp_path), "--stability-threshold", "0.25"), "--stability-threshold")


def test_too_many_passages_for_the_relation_is_one_line(tmp_path, lre):
    r = cli(
        "generate",
        "--out",
        str(tmp_path / "o"),
        "--data-dir",
        str(lre),
        "--relations",
        "toy capital",
        "--discover-relations",
        "toy capital",
        "--n-passages",
        "50",
    )
    one_line_error(r, "n_passages", "50", "toy capital", "too few subjects")


def test_template_holdout_on_one_template_says_it_holds_nothing_out(tmp_path, lre):
    r = cli(
        "generate",
        "--out",
        str(tmp_path / "o"),
        "--data-dir",
        str(lre),
        "--relations",
        "toy capital",
        "--discover-relations",
        "toy capital",
        "--max-pairs",
        "2",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "template_holdout holds nothing out" in r.stdout, r.stdout


def test_relations_with_items_is_refused(tmp_path):
    path = _jsonl(tmp_path / "i.jsonl", _queries(4))
    one_line_error(
        cli("generate", "--out", str(tmp_path / "o"), "--items", str(path), "--relations", "nowhere"),
        "--relations",
        "nowhere",
        "--items",
    )


def test_run_with_items_refuses_a_misspelt_discovery_relation(tmp_path):
    path = _jsonl(tmp_path / "i.jsonl", _queries(6, relation="capital city"))
    one_line_error(
        cli("run", "--out", str(tmp_path / "o"), "--items", str(path), "--discover-relations", "capital cty"),
        "--discover-relations",
        "capital cty",
    )


# ---- silently wrong: the API makes the CLI's checks -----------------------------------------------------------------


@pytest.fixture(scope="module")
def small(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    p = items.build_items(_jsonl(d / "i.jsonl", _queries(6, conditions=("related", "counterfactual"))))
    return p, en.measure(model, p)


def test_api_stats_refuses_measurements_of_other_prompts(small, tmp_path):
    p, m = small
    other = items.build_items(
        _jsonl(
            tmp_path / "j.jsonl",
            _queries(6, conditions=("related", "counterfactual"))[:8] + _queries(2, relation="other"),
        )
    )
    with pytest.raises(InputError, match="measurements.*not in these prompts"):
        en.stats(m, other)
    assert len(en.stats(m, p).stats) > 0


def test_api_stats_refuses_zero_measurement_rows(small):
    p, m = small
    with pytest.raises(InputError, match="empty frame"):
        en.stats(m.head(0), p)


@pytest.mark.parametrize("heads", [[(0.9, 1.7)], (0, 1), [(0, 1, 2)], [(True, 1)], [(-1, 0)]])
def test_api_heads_must_be_integer_pairs(model, small, heads):
    p, _ = small
    with pytest.raises(InputError, match="heads"):
        en.measure(model, p, heads)


def test_api_ablate_refuses_an_unknown_relation(model, small):
    p, _ = small
    with pytest.raises(InputError, match="relation.*no such relation.*not in the prompts"):
        en.ablate(model, p, [(0, 1)], relation="no such relation", side_effects=False)


# ---- silently wrong: hand edits -------------------------------------------------------------------------------------


def test_a_hand_edited_mean_reference_cache_is_recomputed(tmp_path, model_dir):
    from entrainment.config import make
    from tasks import means

    out = tmp_path / "o"
    tables.write_table(items.build_items(_jsonl(tmp_path / "i.jsonl", _queries(6))), out, "prompts")
    cfg = make(out=str(out), model=model_dir, ablation_method="mean")
    loaded = tiny.model("llama")
    first = means.reference_frame(cfg, loaded, "capitals")
    (cache,) = [p for p in (out / "shards" / "means").rglob("*.parquet")]
    edited = first.with_columns(pl.col("mean").list.eval(pl.element() * 0))
    tables.write_parquet(edited, cache, means.HEAD_MEANS)
    again = means.reference_frame(cfg, loaded, "capitals")
    assert again["mean"].to_list() == first["mean"].to_list()
    assert again["mean"].to_list() != edited["mean"].to_list()


def test_results_never_serve_a_deleted_table(tmp_path):
    out = tmp_path / "o"
    tables.write_table(items.build_items(_jsonl(tmp_path / "i.jsonl", _queries(6))), out, "prompts")
    r = en.results(out)
    assert len(r.prompts) == 6
    (out / "prompts.parquet").unlink()
    with pytest.raises(InputError, match="prompts"):
        r.prompts


def _edit(path: Path, change) -> None:
    """A hand edit that keeps the file's metadata (provenance and all), as tests/cli/test_hardening.py's edit_table."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    pq.write_table(change(t).replace_schema_metadata(t.schema.metadata), path)


@pytest.mark.parametrize("edit", ["cut to half", "value changed"])
def test_results_refuse_a_table_edited_by_hand(tmp_path, edit):
    import pyarrow as pa

    out = tmp_path / "o"
    tables.write_table(items.build_items(_jsonl(tmp_path / "i.jsonl", _queries(6))), out, "prompts")
    assert len(en.results(out).prompts) == 6
    if edit == "cut to half":
        _edit(out / "prompts.parquet", lambda t: t.slice(0, 3))
    else:
        _edit(
            out / "prompts.parquet",
            lambda t: t.set_column(t.schema.get_field_index("gold"), "gold", pa.array(["WRONG"] * len(t))),
        )
    with pytest.raises(InputError, match="prompts.*edited by hand"):
        en.results(out).prompts


def test_sql_names_a_table_edited_by_hand(tmp_path):
    """`entrainment sql` and Results.sql still answer over an edited table, but never silently: one warning line
    naming the table (the CLI on stderr, the API as a Python warning)."""
    out = tmp_path / "o"
    tables.write_table(items.build_items(_jsonl(tmp_path / "i.jsonl", _queries(6))), out, "prompts")
    r = cli("sql", "--out", str(out), "select count(*) as n from prompts", "--format", "csv")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    _edit(out / "prompts.parquet", lambda t: t.slice(0, 3))
    r = cli("sql", "--out", str(out), "select count(*) as n from prompts", "--format", "csv")
    assert r.returncode == 0 and r.stdout.split() == ["n", "3"], r.stdout
    warned = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert len(warned) == 1 and "view prompts was edited by hand" in warned[0], r.stderr
    with pytest.warns(UserWarning, match="view prompts was edited by hand"):
        en.results(out).sql("select count(*) from prompts")


def test_report_refuses_a_table_edited_by_hand(tmp_path, lre):
    import pyarrow.compute as pc

    from entrainment.data.lre_prompts import build
    from entrainment.stages.measure import measure_frame

    out = tmp_path / "o"
    p = build(lre, ("toy capital",), 0, 2, (0.5, 0.25, 0.25))
    tables.write_table(p, out, "prompts")
    tables.write_table(measure_frame(tiny.model("llama"), p, batch_size=8), out, "measurements")
    i = tables.read_table(out, "measurements").columns.index("gold_logit_ctx")
    _edit(out / "measurements.parquet", lambda t: t.set_column(i, "gold_logit_ctx", pc.multiply(t.column(i), 2.0)))
    one_line_error(
        cli("report", "--out", str(out), "--model", tiny.save("llama", tmp_path / "m")),
        "measurements.parquet",
        "edited by hand",
    )


@pytest.mark.parametrize(
    "command,table",
    [("measure", "prompts"), ("stats", "measurements"), ("discover", "prompts"), ("ablate", "prompts")],
)
def test_every_stage_refuses_an_input_table_edited_by_hand(tmp_path, lre, command, table):
    """A stage never computes on rows its producer did not write: the same check as the report's, at every stage's
    door (cli/preflight.fresh), for a value changed with the table's metadata kept."""
    import pyarrow.compute as pc

    from entrainment.data.lre_prompts import build
    from entrainment.stages.measure import measure_frame

    out = tmp_path / "o"
    p = build(lre, ("toy capital",), 0, 2, (0.5, 0.25, 0.25))
    tables.write_table(p, out, "prompts")
    tables.write_table(measure_frame(tiny.model("llama"), p, batch_size=8), out, "measurements")
    column = {"prompts": "gold", "measurements": "gold_logit_ctx"}[table]
    i = tables.read_table(out, table).columns.index(column)
    change = (
        (lambda c: pc.binary_join_element_wise(c, "x", "")) if table == "prompts" else (lambda c: pc.multiply(c, 2.0))
    )
    _edit(out / f"{table}.parquet", lambda t: t.set_column(i, column, change(t.column(i))))
    model = [] if command == "stats" else ["--model", tiny.save("llama", tmp_path / "m")]
    one_line_error(cli(command, "--out", str(out), *model), f"{table}.parquet", "edited by hand")


# ---- silently wrong: text fields are normalised ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,variant",
    [
        ("relation", "Capitals"),
        ("relation", "CAPITALS"),
        ("query", "The capital of country 0 is\u200b"),
        ("query", "THE CAPITAL OF COUNTRY 0 IS"),
    ],
)
def test_two_spellings_of_one_relation_or_query_are_refused(tmp_path, field, variant):
    rows = _queries(4)
    rows[1] = dict(rows[0], **{field: variant}, context="The capital of Italy is Rome. More.")
    path = _jsonl(tmp_path / "i.jsonl", rows)
    with pytest.raises(InputError, match=f"line 2: {field}.*another spelling"):
        items.read_items(path)


def test_a_distractor_only_inside_another_word_is_refused(tmp_path):
    rows = _queries(3)
    rows[1] = dict(rows[1], distractor="Rome", context="The capital of Italy is Romeo.")
    one_line_error(
        cli("generate", "--out", str(tmp_path / "o"), "--items", str(_jsonl(tmp_path / "i.jsonl", rows))),
        "i.jsonl",
        "line 2: context",
        "only inside another word",
    )
    assert items.has_word("Capital: Rome, Italy.", "Rome") and items.has_word("Romeo or Rome.", "Rome")
    assert not items.has_word("Romeo.", "Rome") and not items.has_word("ARome", "Rome")
    assert items.has_word("首都は東京です。", "東京")  # scripts without spaces: no word boundary to ask for
    assert items.has_word("เมืองหลวงของไทยคือกรุงเทพ", "กรุงเทพ")  # Thai is written without spaces too
    assert not items.has_word("The singer is Jose\u0301.", "Jose")  # a combining accent continues the word
    assert items.has_word("It is l'Italie, Rome-Nord.", "Rome")
    assert items.has_word("It costs $5.", "$5")


def test_labels_are_normalised(tmp_path):
    rows = _queries(3) + [
        _item(relation="ｃａｐｉｔａｌｓ", query="The capital of Spain is", condition="Related", split="TEST"),
        _item(relation="capi\u200btals", query="The capital of Peru is"),
    ]
    p = items.build_items(_jsonl(tmp_path / "i.jsonl", rows))
    assert set(p["relation"]) == {"capitals"} and set(p["condition"]) == {"related"}
    assert p.filter(pl.col("query") == "The capital of Spain is")["split"].to_list() == ["test"]


# ---- tracebacks: full disk ------------------------------------------------------------------------------------------


def test_a_full_disk_under_torch_save_is_one_line():
    import logging

    import torch

    import tasks  # noqa: F401  (the Prefect log filter)
    from cli.errors import known_failure

    try:
        try:
            torch.save({"x": torch.zeros(100_000)}, "/dev/full")
        except RuntimeError as inner:
            raise RuntimeError("Task run encountered an exception") from inner  # as Prefect wraps it
    except RuntimeError as e:
        caught = e
    why = known_failure(caught)
    assert why is not None and "no space left" in why and "\n" not in why
    record = logging.LogRecord("prefect.task_runs", logging.ERROR, "x", 1, "failed", None, (type(caught), caught, None))
    # a record is dropped when any of the logger's filters rejects it (other filters may be attached in a long suite)
    assert not logging.getLogger("prefect.task_runs").filter(record)


# ---- tracebacks: own items without train or dev items ---------------------------------------------------------------


@pytest.mark.parametrize(
    "case,rows,needle",
    [
        ("no train", _queries(4, split="test"), "no train"),
        ("no dev", [dict(r, split="train") for r in _queries(4)], "no dev"),
        ("only none", [_item(query=f"q{i} is", condition="none", context="") for i in range(6)], "no train"),
    ],
)
def test_items_that_cannot_be_searched_are_refused_at_the_door(tmp_path, case, rows, needle):
    path = _jsonl(tmp_path / "i.jsonl", rows)
    one_line_error(cli("run", "--out", str(tmp_path / "o"), "--items", str(path)), "capitals", needle)
    r = cli("generate", "--out", str(tmp_path / "g"), "--items", str(path))  # the prompts alone are fine...
    assert r.returncode == 0, r.stderr[-2000:]
    d = cli("discover", "--out", str(tmp_path / "g"), "--discover-relations", "capitals")
    one_line_error(d, "capitals", needle)  # ...discover's door refuses them


# ---- tracebacks: path edge cases ------------------------------------------------------------------------------------


def test_symlink_loops_are_one_line(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    one_line_error(cli("generate", "--out", str(loop)), "out", "symlink loop")
    path = _jsonl(tmp_path / "i.jsonl", _queries(4))
    one_line_error(cli("generate", "--out", str(tmp_path / "o"), "--items", str(loop)), "items", "symlink loop")
    assert path.exists()
    with pytest.raises(InputError, match="symlink loop"):
        en.results(loop)


def _remove_chain(top: Path, depth: int) -> None:
    """Remove a chain of `depth` folders named d under top without recursion (shutil.rmtree, and so pytest's
    clean-up of old temporary folders, would hit the recursion limit)."""
    for level in range(depth, 0, -1):
        folder = top / "/".join(["d"] * level)
        for entry in folder.iterdir():
            entry.unlink()  # only the link we made
        folder.rmdir()


def test_a_deep_folder_chain_in_the_data_dir_does_not_break_the_fast_path(tmp_path, lre):
    import shutil

    data = Path(shutil.copytree(lre, tmp_path / "lre"))
    depth = 1200
    fd = os.open(data, os.O_RDONLY)
    for _ in range(depth):  # a 1200-deep folder chain, made without recursion
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)
    (data / "d" / "d" / "loop").symlink_to(data / "d")
    try:
        args = (
            "generate",
            "--out",
            str(tmp_path / "o"),
            "--data-dir",
            str(data),
            "--relations",
            "toy capital",
            "--discover-relations",
            "toy capital",
            "--max-pairs",
            "2",
        )
        r = cli(*args)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
        r = cli(*args)  # up to date: the fast path's key walks the data dir again
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    finally:
        _remove_chain(data, depth)


# ---- tracebacks: the API's common mistakes --------------------------------------------------------------------------


def test_api_common_mistakes_are_input_errors(model, small):
    import pyarrow as pa

    p, m = small
    with pytest.raises(InputError, match="expected a Model"):
        en.measure("smollm2-135m", p)
    with pytest.raises(InputError, match="empty frame"):
        en.measure(model, p.head(0))
    with pytest.raises(InputError, match="pl.from_arrow"):
        en.measure(model, pa.table({"a": [1]}))
    with pytest.raises(InputError, match="heads frame"):
        en.scan(model, p, heads="0.1")
    with pytest.raises(InputError, match="row.text_ctx"):
        en.top_tokens(model, {})
    with pytest.raises(InputError, match="no train rows"):
        en.discover(model, p.filter(pl.col("split") != "train"), seeds=[0], search_resamples=1, epochs=1)


# ---- runaway inputs -------------------------------------------------------------------------------------------------


def _many_relations(path: Path, n_relations: int) -> Path:
    with open(path, "w") as f:
        for r in range(n_relations):
            for i in range(2):
                f.write(json.dumps(_item(relation=f"rel {r}", query=f"Query {r} number {i} is")) + "\n")
    return path


def _seconds(path: Path) -> float:
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        items.build_items(path)
        best = min(best, time.perf_counter() - t)
    return best


def test_split_assignment_is_linear_in_the_relations(tmp_path):
    small_s = _seconds(_many_relations(tmp_path / "a.jsonl", 1000))
    large_s = _seconds(_many_relations(tmp_path / "b.jsonl", 8000))
    assert large_s / small_s < 20, (small_s, large_s)  # linear: about 8; the quadratic assignment: about 64


def test_many_relations_print_a_bounded_summary(tmp_path):
    path = _many_relations(tmp_path / "i.jsonl", 300)
    r = cli("generate", "--out", str(tmp_path / "o"), "--items", str(path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout.splitlines()) < 40, len(r.stdout.splitlines())
    assert len(r.stderr.splitlines()) < 80, len(r.stderr.splitlines())


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--search-resamples", "100000"], "search_resamples"),
        (["--seeds", ",".join(map(str, range(600))), "--search-resamples", "2"], "1200 searches"),
        (["--epochs", "1000000"], "epochs"),
    ],
)
def test_runaway_option_values_are_refused(tmp_path, args, needle):
    one_line_error(cli("plan", "--out", str(tmp_path), *args), needle, "at most")


# ---- unclear messages -----------------------------------------------------------------------------------------------


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path):
    path = _csv(tmp_path / "i.csv", _queries(4))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(items.read_items(path)) == 4
    r = cli("generate", "--out", str(tmp_path / "o"), "--items", str(path))  # and the command reads it too
    assert r.returncode == 0, r.stderr[-1500:]
    assert set(tables.read_table(tmp_path / "o", "prompts")["relation"]) == {"capitals"}


def test_csv_errors_name_the_file_line_after_a_quoted_newline(tmp_path):
    rows = _queries(3)
    rows[0]["context"] = "The capital of Italy\nis Rome."
    rows[2]["gold"] = ""
    path = _csv(tmp_path / "i.csv", rows)
    with pytest.raises(InputError, match="line 5: gold"):  # header 1, record 1 on lines 2-3, then 4, 5
        items.read_items(path)
    one_line_error(cli("generate", "--out", str(tmp_path / "o"), "--items", str(path)), "i.csv", "line 5: gold")


@pytest.mark.parametrize("char", ["\u2028", "\u0085", "\u2029"])
def test_jsonl_with_a_raw_line_separator_inside_a_string_is_read(tmp_path, char):
    rows = _queries(4)
    rows[0]["context"] = f"The capital of Italy{char}is Rome."
    path = tmp_path / "i.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert char in path.read_text(encoding="utf-8")
    assert len(items.read_items(path)) == 4
    r = cli("generate", "--out", str(tmp_path / "o"), "--items", str(path))
    assert r.returncode == 0, r.stderr[-1500:]
    assert any(char in c for c in tables.read_table(tmp_path / "o", "prompts")["context"].to_list())


def test_a_folder_or_fifo_named_jsonl_is_named_as_such(tmp_path):
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        items.read_items(tmp_path / "d.jsonl")
    one_line_error(
        cli("generate", "--out", str(tmp_path / "o"), "--items", str(tmp_path / "d.jsonl")), "d.jsonl", "is a folder"
    )
    os.mkfifo(tmp_path / "f.jsonl")
    one_line_error(
        cli("generate", "--out", str(tmp_path / "o"), "--items", str(tmp_path / "f.jsonl")),
        "f.jsonl",
        "not a regular file",
    )


def test_a_bad_value_on_the_command_line_is_blamed_on_the_command_line(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("max_pairs = 5\n")
    r = cli("discover", "--out", str(tmp_path / "o"), "--config", str(toml), "--stability-threshold", "nan")
    one_line_error(r, "command line", "stability_threshold", "nan")
    assert "c.toml" not in r.stderr


def test_report_for_a_model_the_tables_do_not_hold_names_it(tmp_path, lre):
    from entrainment.data.lre_prompts import build
    from entrainment.stages.measure import measure_frame

    out = tmp_path / "o"
    p = build(lre, ("toy capital",), 0, 2, (0.5, 0.25, 0.25))
    tables.write_table(p, out, "prompts")
    tables.write_table(measure_frame(tiny.model("llama"), p, batch_size=8), out, "measurements")
    other = tiny.save("llama", tmp_path / "other")
    one_line_error(
        cli("report", "--out", str(out), "--model", other),
        "measurements.parquet",
        "no rows of this model",
        "tiny-llama",
    )


# ---- TOML: one option under two spellings ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["max-pairs = 5\nmax_pairs = 7\n", "lambda = 1.0\nlam = 2.0\n"])
def test_a_toml_key_given_twice_under_two_spellings_is_refused(tmp_path, text):
    toml = tmp_path / "c.toml"
    toml.write_text(text)
    one_line_error(cli("plan", "--out", str(tmp_path / "o"), "--config", str(toml)), "c.toml", "same option")


def test_a_full_disk_during_an_atomic_write_names_the_file(tmp_path):
    from cli.errors import known_failure
    from entrainment.store.files import atomic_write_bytes
    from tests.helpers import tmpfs

    with tmpfs(tmp_path / "small", "size=64k") as disk:
        target = disk / "table.parquet"
        with pytest.raises(OSError) as info:
            atomic_write_bytes(target, b"x" * 1_000_000)
        assert not list(disk.iterdir())  # no partial file left behind
    why = known_failure(info.value)
    assert why is not None and "no space left" in why and str(target) in why
