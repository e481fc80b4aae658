"""Bad input through the real command line: exit status 2 and exactly one line naming what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-500:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _valid_prompts(folder: Path, lre: Path) -> None:
    from entrainment import prompts, tables

    tables.write_table(prompts.build(lre, ("toy capital",), 0, 4, (0.6, 0.2, 0.2)), folder, "prompts")


def test_unknown_model(tmp_path, lre_dir):
    _valid_prompts(tmp_path, lre_dir)
    one_line_error(cli("measure", "--out", str(tmp_path), "--model", "no-such-org/no-such-model"),
                   "no-such-org/no-such-model", "embedded name")


def test_missing_gguf_and_dir(tmp_path):
    one_line_error(cli("run", "--out", str(tmp_path), "--model", str(tmp_path / "x.gguf")), "x.gguf", "no such .gguf file")
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
    one_line_error(cli("run", "--out", str(tmp_path), "--discover-relations", "company hq"), "company hq", "--relations")


def test_bad_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_pairs = 10\nwhatever = 3\n")
    one_line_error(cli("generate", "--out", str(tmp_path), "--config", str(cfg)), "c.toml", "whatever", "unknown option")
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


@pytest.mark.parametrize("cmd", ["generate", "measure", "stats", "discover", "ablate", "report", "run", "sql", "models"])
def test_every_command_has_help(cmd):
    r = cli(cmd, "--help")
    assert r.returncode == 0 and "--out" in r.stdout or cmd == "models"
