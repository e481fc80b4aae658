"""Your own items: a JSONL, CSV or Parquet file of prompts -> prompts.parquet rows that every stage accepts.

One row per item with the fields ``relation`` (any label), ``query``, ``gold``, ``distractor``, ``context``
(empty only for condition ``none``: measured without context) and ``condition`` (related, irrelevant, random,
counterfactual, passages or none), and optionally ``split`` (train | dev | test) and ``pair_id`` (items that share
it are matched, e.g. a related/counterfactual pair). The model input is ``context + " " + query`` with context and
``query`` without; the no-context baseline therefore comes from the same queries. Items without a split are
assigned one by query (all items of a query share a split; seeded, per relation, like the LRE subjects).

Every problem is one ``InputError`` naming the file, the line (JSONL, CSV: line numbers of the file) or row
(Parquet: 0-based) and the field: a missing or extra field, an empty or non-string value, gold equal to the
distractor (after Unicode normalisation, ``text.answer_key``), an unknown condition, a duplicate item, a context
without the distractor, a file that is not what its extension says.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import polars as pl

from entrainment.errors import InputError
from entrainment.lre_prompts import SPLITS, prompt_id, prompted_text, split_subjects
from entrainment.schema import PROMPTS
from entrainment.text import answer_key, visible

REQUIRED = ("relation", "query", "gold", "distractor", "context", "condition")
OPTIONAL = ("split", "pair_id")
CONDITIONS = ("related", "irrelevant", "random", "counterfactual", "passages", "none")


def _records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) per item: where = 'line N' or 'row N'."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(path, "--items", str(path), "no such file")
    if suffix == ".parquet":
        try:
            df = pl.read_parquet(path)
        except Exception as e:  # noqa: BLE001 -- any decode failure means "not Parquet"
            raise InputError(path, "parquet", type(e).__name__, "not a Parquet file (unreadable)") from None
        return [(f"row {i}", r) for i, r in enumerate(df.to_dicts())]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "encoding", suffix, f"not a UTF-8 text file (is it really {suffix}?)") from None
    if suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(path, f"line {n}", line[:60], f"not a JSON object ({e.msg})") from None
            if not isinstance(rec, dict):
                raise InputError(path, f"line {n}", line[:60], "expected a JSON object per line")
            out.append((f"line {n}", rec))
        return out
    if suffix == ".csv":
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
            rows = list(reader)
        except csv.Error as e:
            raise InputError(path, "csv", str(e)[:80], "not a valid CSV file") from None
        if reader.fieldnames is None:
            raise InputError(path, "csv", "", "empty file (expected a header line)")
        if reader.fieldnames[0].lstrip().startswith(("{", "[")):
            raise InputError(path, "csv", reader.fieldnames[0][:40], "looks like JSON, not CSV (is it a .jsonl file?)")
        out = []
        for n, r in enumerate(rows, 2):
            if None in r:
                raise InputError(path, f"line {n}", r[None], "more values than header fields")
            out.append((f"line {n}", r))
        return out
    raise InputError(path, "--items", str(path), "expected a .jsonl, .csv or .parquet file")


def _check(path: Path, where: str, rec: dict) -> dict:
    missing = [f for f in REQUIRED if f not in rec]
    if missing:
        raise InputError(path, f"{where}: {missing[0]}", None, "missing field")
    extra = [f for f in rec if f not in REQUIRED + OPTIONAL]
    if extra:
        raise InputError(
            path,
            f"{where}: {extra[0]}",
            rec[extra[0]],
            f"unknown field (expected {', '.join(REQUIRED)}[, {', '.join(OPTIONAL)}])",
        )
    out = {}
    for f in REQUIRED + OPTIONAL:
        v = rec.get(f)
        if f in OPTIONAL and (v is None or v == ""):
            out[f] = None
            continue
        if not isinstance(v, str):
            raise InputError(path, f"{where}: {f}", v, f"expected a string, got {type(v).__name__}")
        if f != "context" and not visible(v):
            raise InputError(path, f"{where}: {f}", v, "empty (or only invisible characters)")
        out[f] = v if f in ("context",) else v.strip()
    if out["condition"] not in CONDITIONS:
        raise InputError(path, f"{where}: condition", out["condition"], f"expected one of {', '.join(CONDITIONS)}")
    if out["split"] is not None and out["split"] not in SPLITS:
        raise InputError(path, f"{where}: split", out["split"], "expected train, dev or test")
    if answer_key(out["gold"]) == answer_key(out["distractor"]):
        raise InputError(
            path,
            f"{where}: distractor",
            out["distractor"],
            f"the same answer as gold {out['gold']!r} (compared after Unicode normalisation)",
        )
    ctx = out["context"].strip()
    if out["condition"] == "none":
        if ctx:
            raise InputError(path, f"{where}: context", ctx, "condition none means no context: leave it empty")
    elif not ctx:
        raise InputError(
            path,
            f"{where}: context",
            ctx,
            f"empty, but condition {out['condition']} needs a context (use condition none for an item without context)",
        )
    elif out["distractor"] not in ctx:
        raise InputError(path, f"{where}: context", ctx, f"does not contain the distractor {out['distractor']!r}")
    out["context"] = ctx
    return out


def read_items(path: Path) -> list[dict]:
    """The validated items of a file, in file order (InputError on the first problem)."""
    path = Path(path)
    items = []
    seen: dict[tuple, str] = {}
    for where, rec in _records(path):
        it = _check(path, where, rec)
        key = (it["relation"], it["condition"], it["query"], it["context"], it["gold"], it["distractor"])
        if key in seen:
            raise InputError(path, where, it["query"], f"duplicate item (same as {seen[key]})")
        seen[key] = where
        items.append(it | {"_where": where})
    if not items:
        raise InputError(path, "--items", str(path), "holds no items")
    return items


def _splits(path: Path, items: list[dict], seed: int, fractions: tuple[float, float, float]) -> dict[tuple, str]:
    """(relation, query) -> split: the given ones (consistent per query), the rest assigned by query."""
    given: dict[tuple, tuple[str, str]] = {}
    for it in items:
        if it["split"] is not None:
            key = (it["relation"], it["query"])
            if key in given and given[key][0] != it["split"]:
                raise InputError(
                    path,
                    f"{it['_where']}: split",
                    it["split"],
                    f"the query already has split "
                    f"{given[key][0]} ({given[key][1]}); all items of a query share one split",
                )
            given.setdefault(key, (it["split"], it["_where"]))
    out = {k: v[0] for k, v in given.items()}
    for relation in sorted({it["relation"] for it in items}):
        free = sorted(
            {it["query"] for it in items if it["relation"] == relation} - {q for r, q in out if r == relation}
        )
        if free:
            rng = random.Random(f"{seed}|{relation}|items")
            if len(free) >= 3:
                out.update({(relation, q): s for q, s in split_subjects(free, fractions, rng, str(path)).items()})
            else:  # too few to split three ways: all test (they can still be measured and evaluated)
                out.update({(relation, q): "test" for q in free})
    return out


def build_items(
    path: Path,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    instruction: str = "The text above may be wrong; answer from what you know.",
) -> pl.DataFrame:
    """prompts.parquet rows from an items file (sorted by relation, then file order).

    Args:
        path: the .jsonl, .csv or .parquet file.
        seed: seeds the split of items without one.
        fractions: train/dev/test fractions of those queries.
        instruction: the prompting baseline's instruction (text_prompted).
    Returns:
        A frame with prompts.parquet's schema.
    """
    path = Path(path)
    items = read_items(path)
    split_of = _splits(path, items, seed, fractions)
    rows = []
    for it in items:
        ctx, q = it["context"], it["query"]
        rows.append(
            {
                "prompt_id": prompt_id(it["relation"], it["condition"], q, ctx, it["gold"], it["distractor"]),
                "relation": it["relation"],
                "condition": it["condition"],
                "subject": q,
                "gold": it["gold"],
                "distractor": it["distractor"],
                "context": ctx,
                "query": q,
                "text_ctx": f"{ctx} {q}" if ctx else q,
                "text_base": q,
                "split": split_of[(it["relation"], q)],
                "pair_id": it["pair_id"],
                "context_subject": "",
                "query_template": None,
                "position": None,
                "n_passages": None,
                "text_prompted": prompted_text(ctx, instruction, q),
            }
        )
    df = pl.DataFrame(rows, schema=PROMPTS.polars_schema())
    return df.with_row_index("_i").sort("relation", "_i").drop("_i")
