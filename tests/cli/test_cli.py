"""Bad input through the real command line: exit status 2 and exactly one line naming what is wrong."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, cli, one_line_error, tmpfs  # noqa: F401  (ROOT: other modules' old import path)


def _valid_prompts(folder: Path, lre: Path) -> None:
    from entrainment.data import lre_prompts
    from entrainment.store import tables

    tables.write_table(lre_prompts.build(lre, ("toy capital",), 0, 4, (0.6, 0.2, 0.2)), folder, "prompts")


def test_unknown_model(tmp_path, lre_dir):
    _valid_prompts(tmp_path, lre_dir)
    one_line_error(
        cli("measure", "--out", str(tmp_path), "--model", "no-such-org/no-such-model"),
        "no-such-org/no-such-model",
        "embedded name",
    )


def test_missing_gguf_and_dir(tmp_path):
    one_line_error(
        cli("run", "--out", str(tmp_path), "--model", str(tmp_path / "x.gguf")), "x.gguf", "no such .gguf file"
    )
    (tmp_path / "m").mkdir()
    one_line_error(cli("run", "--out", str(tmp_path), "--model", str(tmp_path / "m")), "config.json")


def test_stage_before_its_inputs(tmp_path):
    one_line_error(cli("stats", "--out", str(tmp_path)), "measurements.parquet", "run the stage that writes it first")
    one_line_error(cli("measure", "--out", str(tmp_path)), "prompts.parquet")


def test_corrupt_input_table(tmp_path):
    (tmp_path / "prompts.parquet").write_bytes(b"not parquet")
    one_line_error(cli("measure", "--out", str(tmp_path)), "prompts.parquet", "unreadable")


def test_bad_options(tmp_path):
    one_line_error(cli("generate", "--out", str(tmp_path), "--max-pairs", "0"), "max_pairs", "at least 1")
    one_line_error(cli("discover", "--out", str(tmp_path), "--seeds", "a,b"), "--seeds", "integers")
    one_line_error(cli("sql", "--out", str(tmp_path), "select 1", "--format", "xml"), "--format", "xml")
    one_line_error(cli("sql", "--out", str(tmp_path), "select * from nowhere"), "nowhere")
    one_line_error(
        cli("run", "--out", str(tmp_path), "--discover-relations", "company hq"), "company hq", "--relations"
    )


def test_bad_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_pairs = 10\nwhatever = 3\n")
    one_line_error(
        cli("generate", "--out", str(tmp_path), "--config", str(cfg)), "c.toml", "whatever", "unknown option"
    )
    cfg.write_text("max_pairs = [")
    one_line_error(cli("generate", "--out", str(tmp_path), "--config", str(cfg)), "invalid TOML")


def test_bad_ablation_heads(tmp_path, lre_dir):
    _valid_prompts(tmp_path, lre_dir)
    one_line_error(cli("measure", "--out", str(tmp_path), "--ablation-heads", "3-4"), "3-4", "layer.head")


def test_config_toml_is_applied(tmp_path):
    from entrainment.config import make_config

    cfg = tmp_path / "c.toml"
    cfg.write_text('relations = ["fruit inside color"]\nlambda = 2.5\nseeds = "0,2"\nmax-pairs = 7\n')
    c = make_config(cfg, max_pairs=9)
    assert c.relations == ("fruit inside color",) and c.lam == 2.5 and c.seeds == (0, 2) and c.max_pairs == 9


@pytest.mark.parametrize(
    "cmd", ["generate", "measure", "stats", "discover", "ablate", "report", "run", "sql", "models"]
)
def test_every_command_has_help(cmd):
    r = cli(cmd, "--help")
    assert r.returncode == 0 and "--out" in r.stdout or cmd == "models"


# ---- the rest of the bad-input list: one line, exit 2, no traceback anywhere -----------------------------


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stdout and "Traceback" not in r.stderr


def test_relation_with_too_few_objects(tmp_path):
    from tests.toy_data import write_relation

    write_relation(
        tmp_path / "lre" / "factual",
        "two.json",
        "two objects",
        [{"subject": s, "object": o} for s, o in [("a", "x"), ("b", "y"), ("c", "x"), ("d", "y")]],
    )
    r = cli("generate", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "lre"), "--relations", "two objects")
    one_line_error(r, "two.json", "at least 3 distinct objects")
    no_traceback(r)


def test_lone_surrogate_in_a_relation_file(tmp_path):
    from tests.toy_data import write_relation

    path = write_relation(tmp_path / "lre" / "factual", "caps.json", "toy capital")
    path.write_text(path.read_text().replace('"Paris"', '"Par\\ud800is"'))
    r = cli("generate", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "lre"), "--relations", "toy capital")
    one_line_error(r, "caps.json", "surrogate")
    no_traceback(r)


def test_relations_that_name_nothing(tmp_path):
    one_line_error(cli("generate", "--out", str(tmp_path), "--relations", ",, ,"), "--relations", "names nothing")


def test_models_option_bad_input(tmp_path):
    """--models that names nothing, a --model outside --models, and a missing model among --models: one line each."""
    one_line_error(cli("run", "--out", str(tmp_path), "--models", ",, ,"), "--models", "names nothing")
    one_line_error(
        cli("run", "--out", str(tmp_path), "--model", "x", "--models", "smollm2-135m,y"), "not one of --models"
    )
    one_line_error(cli("run", "--out", str(tmp_path), "--models", f"smollm2-135m,{tmp_path / 'nope'}"), "nope")


def test_measure_relation_absent_from_prompts(tmp_path, lre_dir):
    _valid_prompts(tmp_path, lre_dir)
    r = cli("measure", "--out", str(tmp_path), "--relations", "country currency")
    one_line_error(r, "prompts.parquet", "country currency", "not in prompts.parquet")
    no_traceback(r)


@pytest.mark.parametrize(
    "line, needle",
    [
        ("epochs = 2.5", "epochs"),
        ("device = 1", "device"),
        ('split = "a"', "split"),
        ('seeds = "x"', "seeds"),
        ('seed = "3"', "seed"),
    ],
)
def test_config_values_of_the_wrong_type(tmp_path, line, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text(line + "\n")
    r = cli("generate", "--out", str(tmp_path / "o"), "--config", str(cfg))
    one_line_error(r, "c.toml", needle)
    no_traceback(r)


def test_config_that_is_binary_or_a_directory(tmp_path):
    (tmp_path / "bin.toml").write_bytes(bytes(range(256)) * 4)
    one_line_error(
        cli("generate", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "bin.toml")),
        "bin.toml",
        "invalid TOML",
    )
    one_line_error(cli("generate", "--out", str(tmp_path / "o"), "--config", str(tmp_path)), "is a directory")


def test_out_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    r = cli("generate", "--out", str(tmp_path / "f"))
    one_line_error(r, "--out", "is a file")
    no_traceback(r)


def test_broken_models(tmp_path, lre_dir):
    from tests import tiny

    _valid_prompts(tmp_path, lre_dir)
    (tmp_path / "random.gguf").write_bytes(bytes(range(256)) * 64)
    one_line_error(
        cli("measure", "--out", str(tmp_path), "--model", str(tmp_path / "random.gguf")), "random.gguf", "not a GGUF"
    )
    (tmp_path / "trunc.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(100))
    r = cli("measure", "--out", str(tmp_path), "--model", str(tmp_path / "trunc.gguf"))
    one_line_error(r, "trunc.gguf", "unreadable GGUF")
    no_traceback(r)
    model = tiny.save("llama", tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{ not json")
    one_line_error(cli("measure", "--out", str(tmp_path), "--model", model), "config.json", "invalid JSON")


def test_ablation_heads_out_of_range_or_negative(tmp_path, lre_dir):
    from tests import tiny

    _valid_prompts(tmp_path, lre_dir)
    model = tiny.save("llama", tmp_path / "m")  # 2 layers x 4 heads
    for heads, needle in (
        ("-1.2", "start at 0"),
        ("0.-3", "start at 0"),
        ("5.1", "outside the model"),
        ("1.4", "outside the model"),
    ):
        r = cli("measure", "--out", str(tmp_path), "--model", model, "--ablation-heads", heads)
        one_line_error(r, heads, needle)
        no_traceback(r)


def test_unknown_option_is_one_line_not_a_box(tmp_path):
    r = cli("generate", "--out", str(tmp_path), "--device", "bogus")
    one_line_error(r, "--device")
    r = cli("stats", "--out", str(tmp_path), "--confidence", "abc")
    one_line_error(r, "--confidence")


def test_full_disk_is_one_line(tmp_path):
    with tmpfs(tmp_path / "small", "size=1m") as small:
        r = cli("generate", "--out", str(small / "out"))
        one_line_error(r, "MB free", "need at least")
        no_traceback(r)


def test_read_only_out_is_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", "size=64m,ro") as ro:
        r = cli("generate", "--out", str(ro))
        one_line_error(r, "not writable")
        no_traceback(r)
        r = cli("generate", "--out", str(ro / "sub"))
        one_line_error(r, "cannot create")
