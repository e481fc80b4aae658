"""Issue #25, "Nothing lost, nothing silently wrong": every hostile or careless-user case, through the real CLI.

Organised by the issue's numbered mechanisms: (1) `sql` is read-only, (2) shard and cache names never collide and
`--out` is a literal path, (3) a model's identity follows its content, (4) inputs are validated at the door,
(5) hand-edited or damaged tables are refused, (6) stray entries in the data folder are skipped, never a hang,
(7) stdout, disk and Prefect failures end in one line. Bad input: exit status 2 and exactly one stderr line without
a traceback; a failure outside the input (full stdout or disk, no Prefect server): exit status 1, the same.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from entrainment.errors import InputError
from entrainment.store import tables
from tests.helpers import CEILING_S, ROOT, cli, one_line_error, one_line_failure, run_watched, tmpfs
from tests.toy_data import toy_lre, write_relation


def write_prompts(
    folder: Path, lre: Path, relations: tuple[str, ...] = ("toy capital",), max_pairs: int = 2
) -> pl.DataFrame:
    from entrainment.data.lre_prompts import build

    folder.mkdir(parents=True, exist_ok=True)
    df = build(lre, relations, 0, max_pairs, (0.5, 0.25, 0.25))
    tables.write_table(df, folder, "prompts")
    return df


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def edit_table(path: Path, change) -> None:
    """Hand-edit a Parquet table the way a user would: its rows change, its metadata (provenance) stays."""
    t = pq.read_table(path)
    pq.write_table(change(t).replace_schema_metadata(t.schema.metadata), path)


@pytest.fixture(scope="module")
def lre(tmp_path_factory) -> Path:
    return toy_lre(tmp_path_factory.mktemp("lre"))


@pytest.fixture(scope="module")
def measured_dir(tmp_path_factory, lre) -> Path:
    """prompts.parquet and measurements.parquet (with their provenance), written by the library on a tiny model."""
    from entrainment.stages.measure import measure_frame
    from tests import tiny

    out = tmp_path_factory.mktemp("measured")
    p = write_prompts(out, lre)
    tables.write_table(measure_frame(tiny.model("llama"), p, batch_size=8), out, "measurements")
    return out


@pytest.fixture
def measured(measured_dir, tmp_path) -> Path:
    """A fresh copy of measured_dir to damage."""
    return Path(shutil.copytree(measured_dir, tmp_path / "out"))


# ---- 1. sql is read-only ------------------------------------------------------------------------------------------


def _writes(out: Path) -> list[str]:
    target = out / "prompts.parquet"
    return [
        f"EXPLAIN ANALYZE COPY (select 1 as x) TO '{target}' (FORMAT parquet)",
        "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1 AS x",
        "EXPLAIN SELECT 1",
        f"COPY (select 1 as x) TO '{target}' (FORMAT parquet)",
        f"select 1; COPY (select 1 as x) TO '{target}' (FORMAT parquet)",
        "CREATE TABLE t AS SELECT 1 AS x",
        "CREATE OR REPLACE VIEW prompts AS SELECT 1 AS x",
        f"ATTACH '{out / 'x.db'}' AS x",
        "INSTALL httpfs",
        "SET enable_external_access = true",
        "PRAGMA version",
    ]


@pytest.mark.parametrize("i", range(11))
def test_sql_refuses_every_statement_but_select_and_changes_no_table(tmp_path, lre, i):
    write_prompts(tmp_path, lre)
    before = snapshot(tmp_path)
    r = cli("sql", "--out", str(tmp_path), _writes(tmp_path)[i])
    one_line_error(r, "query")
    assert snapshot(tmp_path) == before  # no table replaced, no file added


@pytest.mark.parametrize(
    "query",
    [
        "select * from read_parquet('{p}')",
        "select * from read_csv('/etc/passwd')",
        "with a as (select 1) select * from read_text('{p}')",
    ],
)
def test_sql_has_no_file_access(tmp_path, lre, query):
    write_prompts(tmp_path, lre)
    r = cli("sql", "--out", str(tmp_path), query.format(p=tmp_path / "prompts.parquet"))
    one_line_error(r, "disabled")


def test_sql_select_and_with_select_still_work(tmp_path, lre):
    n = len(write_prompts(tmp_path, lre))
    r = cli(
        "sql", "--out", str(tmp_path), "--format", "csv", "with a as (select * from prompts) select count(*) n from a"
    )
    assert r.returncode == 0 and r.stdout.split() == ["n", str(n)], r.stderr


# ---- 2. collision-free shard, cache and resume names; --out taken literally ------------------------------------


def test_shard_names_never_collide():
    from tasks.inputs import shard_name

    long = "/data/" + "experiment_" + "x" * 100
    heads = ",".join(f"{layer}.{head}" for layer in range(30) for head in range(9))
    pairs = [
        (f"{long}/checkpoint-1000", f"{long}/checkpoint-2000"),
        (f"heads-{heads},29.7", f"heads-{heads},29.8"),
        ("country capital city", "country, capital city"),
        ("toy capital!", "toy capital?"),
        ("T", "T/"),
    ]
    for a, b in pairs:
        assert shard_name(a) != shard_name(b), (a, b)
        assert len(shard_name(a)) <= 60 and all(c.isalnum() or c in "._-" for c in shard_name(a))


def test_two_long_model_paths_and_punctuation_relations_give_every_set_of_rows(tmp_path):
    """Two checkpoints under one long experiment folder (their first 80+ characters equal) and two relations whose
    names differ only in punctuation: four shards, all rows."""
    from tests import tiny

    write_relation(tmp_path / "punct" / "a", "a.json", "toy capital!")
    write_relation(tmp_path / "punct" / "b", "b.json", "toy capital?")
    long = tmp_path / ("experiment_" + "x" * 100)
    specs = [tiny.save("llama", long / name) for name in ("checkpoint-1000", "checkpoint-2000")]
    w = long / "checkpoint-2000" / "model.safetensors"
    w.write_bytes(_other_weights(w.parent))  # tiny models are seeded: make the second checkpoint another model
    p = write_prompts(tmp_path / "out", tmp_path / "punct", ("toy capital!", "toy capital?"))
    r = cli("measure", "--out", str(tmp_path / "out"), "--models", ",".join(specs), "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    m = pl.read_parquet(tmp_path / "out" / "measurements.parquet")
    counts = {(model, rel): n for model, rel, n in m.group_by("model", "relation").len().iter_rows()}
    per_relation = dict(p.group_by("relation").len().iter_rows())
    assert counts == {(str(Path(s).resolve()), rel): per_relation[rel] for s in specs for rel in per_relation}
    a, b = (m.filter(pl.col("model") == str(Path(s).resolve())).sort("prompt_id") for s in specs)
    assert a["gold_logit_ctx"].to_list() != b["gold_logit_ctx"].to_list()  # two models measured, not one twice


def test_long_head_lists_sharing_a_prefix_give_two_sets_of_rows(tmp_path, lre):
    from tests import tiny

    model = tiny.save("llama", tmp_path / "wide", num_hidden_layers=4, num_attention_heads=8)  # 32 heads
    common = ",".join(f"{layer}.{head}" for layer in range(4) for head in range(8))[: -len(",3.6,3.7")]
    n = len(write_prompts(tmp_path / "out", lre))
    for last in ("3.6", "3.7"):  # 31 heads each, the first 30 shared
        r = cli(
            "measure",
            "--out",
            str(tmp_path / "out"),
            "--model",
            model,
            "--device",
            "cpu",
            "--ablation-heads",
            f"{common},{last}",
        )
        assert r.returncode == 0, r.stderr[-2000:]
    m = pl.read_parquet(tmp_path / "out" / "measurements.parquet")
    sizes = dict(m.group_by("ablation").len().iter_rows())
    assert len(sizes) == 3 and set(sizes.values()) == {n}, sizes  # none + two distinct head sets
    assert {a.endswith(("3.6", "3.7")) for a in sizes if a != "none"} == {True}


def test_the_same_model_twice_is_refused(tmp_path, lre):
    from tests import tiny

    write_prompts(tmp_path / "out", lre)
    model = tiny.save("llama", tmp_path / "T")
    for twice in (f"{model},{model}/", f"{model},{tmp_path}/../{tmp_path.name}/T"):
        one_line_error(cli("measure", "--out", str(tmp_path / "out"), "--models", twice), "names the same model")


def test_out_is_a_literal_path_not_a_glob_pattern(tmp_path, lre):
    """`--out 'results[1]'` is that folder, never `results1/` (which a glob pattern would match)."""
    write_prompts(tmp_path / "results1", lre, max_pairs=3)
    shutil.copy(Path(__file__).parents[1] / "conftest.py", tmp_path / "results1" / "measurements.parquet")  # a decoy
    n = len(write_prompts(tmp_path / "results[1]", lre, max_pairs=2))
    r = cli("sql", "--out", str(tmp_path / "results[1]"), "--format", "csv", "select count(*) n from prompts")
    assert r.returncode == 0 and r.stdout.split() == ["n", str(n)], r.stderr
    one_line_error(cli("stats", "--out", str(tmp_path / "results[1]")), "results[1]/measurements.parquet", "not found")


# ---- 3. a model's identity follows its content ---------------------------------------------------------------------


def _other_weights(model: Path, factor: float = 1.5) -> bytes:
    """The model's safetensors file with every weight multiplied by `factor`: other weights, the very same size."""
    import numpy as np

    raw = (model / "model.safetensors").read_bytes()
    start = 8 + int.from_bytes(raw[:8], "little")  # 8-byte header length, JSON header, then the tensors
    assert set(v["dtype"] for k, v in json.loads(raw[8:start]).items() if k != "__metadata__") == {"F32"}
    return raw[:start] + (np.frombuffer(raw[start:], dtype=np.float32) * factor).astype(np.float32).tobytes()


def _replace_weights(model: Path) -> None:
    """Overwrite model's weights with others in place (same file, same size), then restore its modification time."""
    w = model / "model.safetensors"
    st = w.stat()
    data = _other_weights(model)
    assert len(data) == st.st_size and data != w.read_bytes()
    with open(w, "r+b") as f:  # in place: same inode
        f.write(data)
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (w.stat().st_size, w.stat().st_mtime_ns, w.stat().st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_replaced_weights_of_the_same_size_and_mtime_change_the_identity(tmp_path):
    from entrainment.model.sources import resolve
    from tests import tiny

    model = Path(tiny.save("llama", tmp_path / "m"))
    before = resolve(str(model)).identity
    assert resolve(str(model)).identity == before  # stable while nothing changes
    _replace_weights(model)
    assert resolve(str(model)).identity != before
    assert subprocess.run(
        [
            sys.executable,
            "-c",
            f"from entrainment.model.sources import resolve; print(resolve({str(model)!r}).identity)",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=CEILING_S,
    ).stdout.strip() not in ("", before)  # the on-disk memo agrees


def test_replaced_weights_are_measured_again(tmp_path, lre):
    from tests import tiny

    model = Path(tiny.save("llama", tmp_path / "m"))
    out = tmp_path / "out"
    write_prompts(out, lre)
    args = ("measure", "--out", str(out), "--model", str(model), "--device", "cpu")
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    first = pl.read_parquet(out / "measurements.parquet").sort("prompt_id")["gold_logit_ctx"].to_list()
    _replace_weights(model)
    r = cli(*args)
    assert r.returncode == 0 and "nothing changed" not in r.stdout, r.stderr[-2000:]
    again = pl.read_parquet(out / "measurements.parquet").sort("prompt_id")["gold_logit_ctx"].to_list()
    assert again != first and len(again) == len(first)


# ---- 4. validation at the door ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needles",
    [
        (("discover", "--lr", "nan"), ("lr", "finite")),
        (("discover", "--lr", "-1"), ("lr", "positive")),
        (("discover", "--lr", "0"), ("lr", "positive")),
        (("discover", "--weight-decay", "-0.01"), ("weight_decay", ">= 0")),
        (("discover", "--lambda", "inf"), ("lam", "finite")),
        (("discover", "--lambda", "-1"), ("lam", ">= 0")),
        (("discover", "--tau", "inf"), ("tau", "finite")),
        (("discover", "--tau", "0"), ("tau", "positive")),
        (("discover", "--seeds", str(2**63)), ("seeds", "2**63 - 1")),
        (("discover", "--seeds", "-1"), ("seeds", "2**63 - 1")),
        (("generate", "--seed", str(2**63)), ("seed", "2**63 - 1")),
        (("generate", "--seed", str(-(2**63) - 1)), ("seed",)),
        (("generate", "--split", "1,0,0"), ("split", "dev and test")),
        (("generate", "--split", "0.8,0.2,0"), ("split", "dev and test")),
        (("generate", "--split", "0.5,0.5,0.5"), ("split", "summing to 1")),
        (("measure", "--device", "cuda:abc"), ("device", "cuda:abc")),
        (("generate", "--out", ""), ("--out", "empty")),
        (("generate", "--out", "  "), ("--out", "empty")),
        (("sql", "--out", "", "select 1"), ("--out", "empty")),
    ],
)
def test_bad_option_values_are_one_line(tmp_path, args, needles):
    cmd, *rest = args
    if "--out" not in rest:
        rest = ["--out", str(tmp_path / "o"), *rest]
    one_line_error(cli(cmd, *rest, cwd=tmp_path), *needles)
    assert not any(tmp_path.iterdir())  # nothing written, in the cwd (`--out ""`) or anywhere else


@pytest.mark.parametrize(
    "line, needle",
    [
        ("lr = nan", "lr"),
        ("tau = inf", "tau"),
        ("lambda = inf", "lam"),
        ("weight_decay = -1.0", "weight_decay"),
        ('device = "cuda:abc"', "device"),
        (f"seed = {2**63 - 1}\nseeds = [0, {2**63}]", "seeds"),
    ],
)
def test_bad_values_in_a_config_file_are_one_line(tmp_path, line, needle):
    (tmp_path / "c.toml").write_text(line + "\n")
    one_line_error(cli("discover", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "c.toml")), needle)


def test_cuda_without_cuda_is_one_line(tmp_path, lre):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from tests import tiny

    write_prompts(tmp_path, lre)
    model = tiny.save("llama", tmp_path / "m")
    for device in ("cuda", "cuda:1"):
        one_line_error(
            cli("measure", "--out", str(tmp_path), "--model", model, "--device", device),
            "device",
            "CUDA is not available",
        )


@pytest.mark.parametrize(
    "template",
    [
        "The capital {} of { is",
        "The capital of {} is }",
        "The capital of {country} is",
        "The capital of {0} is",
        "The {} capital of {} is",
        "The capital of {!r} is",
        "The capital of {:>9} is",
        "The capital of {{}} is",
    ],
)
def test_templates_need_exactly_one_plain_field(tmp_path, template):
    from entrainment.data.relations import load_relation

    path = write_relation(tmp_path, "bad.json", "bad", prompt_templates=[template])
    with pytest.raises(InputError) as e:
        load_relation(path)
    assert "bad.json" in str(e.value) and "prompt_templates[0]" in str(e.value) and "\n" not in str(e.value)


def test_a_stray_brace_in_a_template_is_one_line_through_the_cli(tmp_path):
    write_relation(tmp_path / "lre", "bad.json", "bad", prompt_templates=["The capital {} of { is"])
    r = cli("generate", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "lre"), "--relations", "bad")
    one_line_error(r, "bad.json", "prompt_templates[0]", "exactly one {}")


def test_the_same_answer_is_never_a_distractor_of_itself(tmp_path):
    """'Paris', 'PARIS', fullwidth 'Ｐａｒｉｓ', 'Straße'/'STRASSE', 'Mos\\u200bcow': one answer per spelling class."""
    from entrainment.data.lre_prompts import build
    from entrainment.data.relations import load_relation
    from entrainment.data.text import answer_key

    objs = [
        ("France", "Paris"),
        ("Germany", "PARIS"),
        ("Italy", "Ｐａｒｉｓ"),
        ("Spain", "Madrid"),
        ("Japan", "Tokyo"),
        ("Egypt", "Cairo"),
        ("Peru", "Lima"),
        ("Russia", "Mos\u200bcow"),
        ("Chile", "Straße"),
        ("Cuba", "STRASSE"),
    ]
    write_relation(tmp_path / "lre", "same.json", "same", [{"subject": s, "object": o} for s, o in objs])
    rel = load_relation(tmp_path / "lre" / "same.json")
    assert rel.objects == ("Cairo", "Lima", "Madrid", "Moscow", "Paris", "Straße", "Tokyo")
    assert rel.gold["Germany"] == rel.gold["Italy"] == "Paris" and rel.gold["Cuba"] == "Straße"
    df = build(tmp_path / "lre", ("same",), 0, 20, (0.5, 0.25, 0.25))
    assert len(df) and all(answer_key(g) != answer_key(d) for g, d in df.select("gold", "distractor").iter_rows())


@pytest.mark.parametrize("obj", ["\u200b", "\u200b\u200d\u2060", "\ufeff", "\u00ad"])
def test_an_invisible_answer_is_one_line(tmp_path, obj):
    samples = [
        {"subject": s, "object": o}
        for s, o in [("France", "Paris"), ("Spain", "Madrid"), ("Peru", "Lima"), ("Chile", obj)]
    ]
    write_relation(tmp_path / "lre", "inv.json", "inv", samples)
    r = cli("generate", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "lre"), "--relations", "inv")
    one_line_error(r, "inv.json", "samples[3]", "empty")


def test_a_prompt_longer_than_the_context_window_is_one_line_naming_it(tmp_path):
    from tests import tiny

    lre = tmp_path / "lre"
    long = " ".join(["Berlin"] * 300)  # every subject: ~300 tokens, more than the model's 128 positions
    pairs = [
        ("France", "Paris"),
        ("Germany", "Berlin"),
        ("Italy", "Rome"),
        ("Spain", "Madrid"),
        ("Japan", "Tokyo"),
        ("Egypt", "Cairo"),
    ]
    write_relation(lre, "long.json", "toy long", [{"subject": f"{s} {long}", "object": o} for s, o in pairs])
    p = write_prompts(tmp_path / "out", lre, ("toy long",))
    model = tiny.save("gpt2", tmp_path / "gpt2")  # 128 positions: an IndexError inside the model before
    r = cli("measure", "--out", str(tmp_path / "out"), "--model", model, "--device", "cpu")
    one_line_error(r, "prompts.parquet", "prompt_id", "context window", "128 tokens")
    bad = r.stderr.split("prompt_id ", 1)[1].split(",", 1)[0]
    assert "Berlin Berlin" in p.filter(pl.col("prompt_id") == bad)["text_ctx"][0]
    assert not (tmp_path / "out" / "measurements.parquet").exists()


def test_tokens_refuse_a_prompt_longer_than_max_len():
    from entrainment.model.tokens import Tokens, context_window
    from tests import tiny

    m = tiny.model("gpt2")
    assert context_window(m.model) == 128
    tk = Tokens(m.tokenizer, max_len=context_window(m.model))
    assert len(tk.prompt("The capital of France is")) < 128
    with pytest.raises(InputError) as e:
        tk.prompt("Berlin " * 300, "prompts.parquet (prompt_id x)", "text_ctx")
    assert "prompt_id x" in str(e.value) and "text_ctx" in str(e.value) and "context window" in str(e.value)


# ---- 5. hand-edited or damaged tables -------------------------------------------------------------------------------


def test_the_undamaged_tables_pass(measured):
    from cli import preflight
    from entrainment.config import make_config

    preflight.check_stats(make_config(None, out=str(measured)))


def test_duplicated_prompt_rows_are_refused(measured):
    edit_table(measured / "prompts.parquet", lambda t: pa.concat_tables([t, t.slice(3, 1)]))
    one_line_error(cli("measure", "--out", str(measured)), "prompts.parquet", "prompt_id", "duplicate", "row")
    one_line_error(cli("stats", "--out", str(measured)), "prompts.parquet")


def test_duplicated_measurement_rows_are_refused(measured):
    edit_table(measured / "measurements.parquet", lambda t: pa.concat_tables([t, t.slice(0, 2)]))
    one_line_error(cli("stats", "--out", str(measured)), "measurements.parquet", "duplicate", "row")


def test_a_measurements_table_cut_to_no_rows_is_refused(measured):
    edit_table(measured / "measurements.parquet", lambda t: t.slice(0, 0))
    one_line_error(cli("stats", "--out", str(measured)), "measurements.parquet", "no rows")


def test_an_unknown_condition_is_refused(measured):
    def bogus(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index("condition")
        return t.set_column(i, "condition", pa.array(["bogus"] + t["condition"].to_pylist()[1:], pa.string()))

    edit_table(measured / "measurements.parquet", bogus)
    one_line_error(cli("stats", "--out", str(measured)), "measurements.parquet", "condition", "'bogus'", "row 0")


def test_a_null_text_is_refused(measured):
    def null_text(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index("text_ctx")
        values = t["text_ctx"].to_pylist()
        return t.set_column(i, "text_ctx", pa.array(values[:2] + [None] + values[3:], pa.string()))

    edit_table(measured / "prompts.parquet", null_text)
    one_line_error(cli("measure", "--out", str(measured)), "prompts.parquet", "text_ctx", "null in row 2")


@pytest.mark.parametrize("record", [b"{not json", b"[1, 2]", b'{"prompts": 3}', b"\xff\xfe"])
def test_corrupt_provenance_metadata_is_one_line_for_stats_and_a_warning_for_sql(measured, record):
    from entrainment.store.files import SOURCE_KEY

    path = measured / "measurements.parquet"
    t = pq.read_table(path)
    pq.write_table(t.replace_schema_metadata({**t.schema.metadata, SOURCE_KEY: record}), path)
    one_line_error(cli("stats", "--out", str(measured)), "measurements.parquet", "provenance")
    r = cli("sql", "--out", str(measured), "--format", "csv", "select count(*) n from measurements")
    assert r.returncode == 0 and r.stdout.split() == ["n", str(t.num_rows)], r.stderr
    assert "Traceback" not in r.stderr and "provenance" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---- 6. the data folder -----------------------------------------------------------------------------------------


def _stray(kind: str, d: Path) -> None:
    if kind == "folder named x.json":
        (d / "factual" / "x.json").mkdir()
    elif kind == "deeply nested unrelated json file":
        deep = d.joinpath(*"abcdefgh")
        deep.mkdir(parents=True)
        (deep / "unrelated.json").write_text("[1, 2, 3]")
    elif kind == "deeply nested json content":
        (d / "nested.json").write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "unrelated json object":
        (d / "package.json").write_text(json.dumps({"name": "some-npm-package", "version": "1.0.0"}))
    elif kind == "invalid json":
        (d / "broken.json").write_text("{ not json")
    elif kind == "binary file":
        (d / "blob.json").write_bytes(bytes(range(256)) * 8)
    elif kind == "link to a device":
        os.symlink("/dev/zero", d / "zero.json")
    elif kind == "dangling link":
        os.symlink(d / "nowhere", d / "dangling.json")
    elif kind == "link loop":
        os.symlink(d, d / "factual" / "loop")
    elif kind == "fifo":
        os.mkfifo(d / "factual" / "pipe.json")


STRAYS = [
    "folder named x.json",
    "deeply nested unrelated json file",
    "deeply nested json content",
    "unrelated json object",
    "invalid json",
    "binary file",
    "link to a device",
    "dangling link",
    "link loop",
    "fifo",
]


@pytest.mark.parametrize("kind", [k for k in STRAYS if k != "fifo"])
def test_a_stray_entry_breaks_nothing(tmp_path, kind):
    from entrainment.data.relations import load_relations

    d = toy_lre(tmp_path / "lre")
    _stray(kind, d)
    rels = load_relations(d, ("toy capital", "toy color"))
    assert [r.name for r in rels] == ["toy capital", "toy color"]


def test_every_stray_entry_at_once_through_the_cli_and_no_hang(tmp_path):
    """A FIFO named x.json made `generate` wait for a writer forever; the timeout proves it no longer does."""
    d = toy_lre(tmp_path / "lre")
    for kind in STRAYS:
        _stray(kind, d)
    r = cli(
        "generate",
        "--out",
        str(tmp_path / "o"),
        "--data-dir",
        str(d),
        "--relations",
        "toy capital,toy color",
        "--max-pairs",
        "2",
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert set(pl.read_parquet(tmp_path / "o" / "prompts.parquet")["relation"]) == {"toy capital", "toy color"}


def test_data_dir_errors_name_the_data_dir(tmp_path):
    d = toy_lre(tmp_path / "lre")
    _stray("invalid json", d)
    one_line_error(
        cli("generate", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "nope")),
        "--data-dir",
        "nope",
        "not a directory",
    )
    one_line_error(
        cli("generate", "--out", str(tmp_path / "o"), "--data-dir", str(d / "factual" / "capitals.json")),
        "--data-dir",
        "capitals.json",
        "not a directory",
    )
    (tmp_path / "empty").mkdir()
    one_line_error(
        cli("generate", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "empty")),
        "--data-dir",
        "empty",
        "no relation .json files",
    )
    r = cli("generate", "--out", str(tmp_path / "o"), "--data-dir", str(d), "--relations", "no such relation")
    one_line_error(r, "--relations", "'no such relation'", "unknown relation", str(d))
    assert r.stderr.index("no such relation") < r.stderr.index("broken.json")  # the relation first, then suspects


# ---- 7. output and services ------------------------------------------------------------------------------------------

ODD = (
    "select [1, 2] as l, {'a': 1, 'b': [3]} as s, '\\xAA\\x00'::BLOB as b, "
    "170141183460469231731687303715884105727::HUGEINT as h, 1::UHUGEINT as u, 1.50::DECIMAL(38, 2) as d, "
    "map([1], ['x']) as m, interval 1 day as i, union_value(k := 1) as un, NULL::HUGEINT as nh"
)


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_sql_prints_nested_blob_and_hugeint_values(tmp_path, lre, fmt):
    write_prompts(tmp_path, lre)
    r = cli("sql", "--out", str(tmp_path), "--format", fmt, ODD)
    assert r.returncode == 0 and "Traceback" not in r.stderr and not r.stderr.strip(), r.stderr
    if fmt == "csv":
        row = next(csv.DictReader(io.StringIO(r.stdout)))
        assert json.loads(row["l"]) == [1, 2] and row["h"] == str(2**127 - 1) and row["b"] == "aa00"
    elif fmt == "json":
        row = json.loads(r.stdout)[0]
        assert json.loads(row["l"]) == [1, 2] and row["h"] == str(2**127 - 1) and row["nh"] is None
    else:
        assert "nh" in r.stdout and "[1, 2]" in r.stdout


def test_a_non_utf8_byte_in_the_query_is_one_line(tmp_path, lre):
    write_prompts(tmp_path, lre)
    r = subprocess.run(
        [sys.executable.encode(), b"-m", b"cli.app", b"sql", b"--out", str(tmp_path).encode(), b"select '\xff' as x"],
        capture_output=True,
        cwd=ROOT,
        timeout=CEILING_S,
    )
    r = subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode("utf-8", "replace"))
    one_line_error(r, "query", "not valid UTF-8")


def _to(stdout, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.app", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        timeout=CEILING_S,
        **kw,
    )


def test_a_full_stdout_is_one_line(tmp_path, lre):
    write_prompts(tmp_path, lre)
    with open("/dev/full", "w") as full:
        one_line_failure(_to(full, "sql", "--out", str(tmp_path), "select * from prompts"), "No space left")
        one_line_failure(_to(full, "models"), "No space left")
        r = _to(
            full,
            "generate",
            "--out",
            str(tmp_path / "g"),
            "--data-dir",
            str(lre),
            "--relations",
            "toy capital",
            "--max-pairs",
            "2",
        )
    one_line_failure(r, "No space left", "saved")
    assert (tmp_path / "g" / "prompts.parquet").exists()  # the work is kept


def test_a_closed_pipe_or_a_closed_stdout_is_one_line(tmp_path, lre):
    write_prompts(tmp_path, lre)
    read, write = os.pipe()
    os.close(read)  # a reader that has gone away (`| head` that exited)
    try:
        one_line_failure(
            _to(write, "sql", "--out", str(tmp_path), "--format", "csv", "select * from prompts"), "stdout"
        )
    finally:
        os.close(write)
    r = _to(None, "sql", "--out", str(tmp_path), "select 1", preexec_fn=lambda: os.close(1))  # started with `>&-`
    one_line_failure(r, "stdout")


def test_a_disk_that_fills_during_a_stage_is_one_line(tmp_path, lre):
    """The door check (free space >= 64 MB) is switched off, so the stage itself meets the full disk."""
    with tmpfs(tmp_path / "small", "size=256k") as small:
        (small / "out").mkdir()
        filler = small / "filler"
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        code = (
            "import sys; import cli.preflight as p; p.MIN_FREE_MB = 0; from cli.app import main; "
            "sys.argv = ['entrainment'] + sys.argv[1:]; main()"
        )
        r = run_watched(
            [
                sys.executable,
                "-c",
                code,
                "generate",
                "--out",
                str(small / "out"),
                "--data-dir",
                str(lre),
                "--relations",
                "toy capital",
                "--max-pairs",
                "2",
            ]
        )
        one_line_failure(r, "no space left")
        assert not (small / "out" / "prompts.parquet").exists()


def test_an_unreachable_prefect_api_is_one_line(tmp_path, lre):
    env = dict(os.environ, PREFECT_API_URL="http://127.0.0.1:9/api")
    r = cli(
        "generate",
        "--out",
        str(tmp_path / "o"),
        "--data-dir",
        str(lre),
        "--relations",
        "toy capital",
        "--max-pairs",
        "2",
        env=env,
    )
    one_line_failure(r, "Prefect API", "http://127.0.0.1:9/api")
    assert len(r.stderr.strip().splitlines()) <= 3, r.stderr  # not a 141-line traceback
