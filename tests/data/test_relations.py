"""The LRE loader: each cleaning fix, each malformed-input error (one line, exit 2)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from entrainment.data.relations import eligible_names, load_relation, load_relations
from entrainment.errors import InputError
from entrainment.paths import LRE_DIR
from tests.helpers import CEILING_S
from tests.toy_data import write_relation


def test_shipped_dirt_is_cleaned_and_reported(caplog):
    caplog.set_level(logging.INFO, logger="entrainment")
    rel = load_relation(LRE_DIR / "factual" / "country_capital_city.json")
    assert rel.gold["Brazil"] == "Brasília" and rel.gold["Colombia"] == "Bogotá"
    assert rel.fixes == {"unicode_escapes": 2}
    assert any("country_capital_city.json: unicode_escapes x2" in r.getMessage() for r in caplog.records)


def test_shipped_whitespace_and_duplicates(caplog):
    caplog.set_level(logging.INFO, logger="entrainment")
    rel = load_relation(LRE_DIR / "factual" / "presidents_birth_year.json")
    assert "Jimmy Carter" in rel.gold and all(s == s.strip() for s, _ in rel.pairs)
    assert rel.fixes["whitespace"] == 1 and rel.fixes["duplicate_pairs"] == 1
    prod = load_relation(LRE_DIR / "factual" / "product_by_company.json")
    assert prod.fixes["duplicate_pairs"] == 20
    assert len({s for s, _ in prod.pairs}) == len(prod.pairs)


def test_each_fix_on_crafted_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="entrainment")
    samples = [
        {"subject": "  Brazil ", "object": "Bras\\u00edlia"},
        {"subject": "Brazil", "object": "Brasília"},
        {"subject": "Peru", "object": "Lima"},
        {"subject": "Peru", "object": "Lima"},
        {"subject": "Georgia", "object": "Tbilisi"},
        {"subject": "Georgia", "object": "Atlanta"},
    ]
    rel = load_relation(write_relation(tmp_path, "r.json", "toy", samples))
    assert rel.pairs == (("Brazil", "Brasília"), ("Peru", "Lima"))
    assert rel.fixes == {"unicode_escapes": 1, "whitespace": 1, "duplicate_pairs": 2, "ambiguous_subjects_dropped": 1}
    messages = "\n".join(r.getMessage() for r in caplog.records)
    for kind in rel.fixes:
        assert f"r.json: {kind} x" in messages


def test_default_eligible_set_matches_paper_code():
    names = eligible_names(LRE_DIR)
    assert len(names) == 16
    assert "country capital city" in names and "company CEO" not in names and "word sentiment" not in names


def test_relation_order_does_not_matter():
    a = load_relations(LRE_DIR, ["fruit inside color", "country capital city"])
    b = load_relations(LRE_DIR, ["country capital city", "fruit inside color"])
    assert a == b


MALFORMED = [
    ("invalid json", lambda d: (d / "x.json").write_text("{not json"), "invalid JSON"),
    (
        "missing field",
        lambda d: write_relation(d, "x.json", "toy", samples=None).write_text(
            json.dumps({k: v for k, v in json.loads((d / "x.json").read_text()).items() if k != "prompt_templates_zs"})
        ),
        "prompt_templates_zs",
    ),
    (
        "template without {}",
        lambda d: write_relation(d, "x.json", "toy", prompt_templates=["no slot here"]),
        "prompt_templates[0]",
    ),
    ("empty samples", lambda d: write_relation(d, "x.json", "toy", samples=[]), "empty sample list"),
]


@pytest.mark.parametrize("case,make,needle", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_raises_input_error(tmp_path, case, make, needle):
    make(tmp_path)
    with pytest.raises(InputError) as e:
        load_relation(tmp_path / "x.json")
    assert "x.json" in str(e.value) and needle in str(e.value) and "\n" not in str(e.value)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.app", *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=CEILING_S,
    )


@pytest.mark.parametrize("case,make,needle", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_cli_exit_2_one_line(tmp_path, case, make, needle):
    (tmp_path / "lre").mkdir()
    make(tmp_path / "lre")
    # the broken file has name "toy" unless it is unparsable; ask for "toy" either way
    r = _cli("generate", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "lre"), "--relations", "toy")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "x.json" in lines[0] and needle in lines[0]


def test_unknown_relation_cli_exit_2(tmp_path):
    r = _cli("generate", "--out", str(tmp_path), "--relations", "country capitol city")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "'country capitol city'" in r.stderr and "unknown relation" in r.stderr
