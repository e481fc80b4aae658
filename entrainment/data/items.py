"""Your own items: a JSONL, CSV or Parquet file of prompts -> prompts.parquet rows that every stage accepts.

One row per item with the fields ``relation`` (any label), ``query``, ``gold``, ``distractor``, ``context``
(empty only for condition ``none``: measured without context) and ``condition`` (related, irrelevant, random,
counterfactual, passages or none), and optionally ``split`` (train | dev | test) and ``pair_id`` (items of one
relation that share it are matched, e.g. a related/counterfactual pair; prompts.parquet stores it as
``<relation>:<pair_id>``, so pairs never match across relations, and a pair id naming two items of one condition
is refused). The model input is ``context + " " + query`` with context and
``query`` without; the no-context baseline therefore comes from the same queries. Items without a split are
assigned one by query (all items of a query share a split; seeded, per relation, like the LRE subjects).

Every problem is one ``InputError`` naming the file, the line (JSONL, CSV: line numbers of the file, where a
record starts) or row (Parquet: 0-based) and the field: a missing, extra or twice-given field (a CSV header or a
JSON object naming one field twice), an empty or non-string value, two spellings of one relation or query,
gold equal to the distractor (after Unicode normalisation, ``text.answer_key``), an unknown condition, a duplicate
item, a pair id naming two items of one condition, a context without the distractor, a file that is not what its
extension says.
"""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import polars as pl

from entrainment.data import item_files
from entrainment.data.lre_prompts import SPLITS, prompt_id, prompted_text, split_subjects
from entrainment.data.text import answer_key, visible
from entrainment.errors import InputError
from entrainment.store.schema import PROMPTS
from entrainment.vocabulary import ALL_CONDITIONS

REQUIRED = ("relation", "query", "gold", "distractor", "context", "condition")
OPTIONAL = ("split", "pair_id")
LABELS = ("relation", "condition", "split", "pair_id")
CONDITIONS = ALL_CONDITIONS


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
    for f in LABELS:  # labels are compared as typed, so they are stored normalised (NFKC, no invisible characters)
        if out[f] is not None:
            out[f] = visible(unicodedata.normalize("NFKC", out[f]))
    for f in ("condition", "split"):  # fixed vocabularies: case does not matter
        if out[f] is not None:
            out[f] = out[f].casefold()
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
    elif not has_word(ctx, out["distractor"]):
        raise InputError(
            path,
            f"{where}: context",
            ctx,
            f"holds the distractor {out['distractor']!r} only inside another word; it must appear as a word of its own",
        )
    out["context"] = ctx
    return out


# Scripts written without spaces between words: no character of theirs continues a word (Thai, Lao, Tibetan,
# Myanmar, Khmer; CJK, kana and everything from U+2E80 on).
_SPACELESS = ((0x0E00, 0x0FFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x2E80, 0x10FFFF))


def _word_char(ch: str) -> bool:
    """A letter, digit or combining mark of a script that separates words with spaces."""
    cp = ord(ch)
    if any(lo <= cp <= hi for lo, hi in _SPACELESS):
        return False
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


def has_word(text: str, word: str) -> bool:
    """Whether `word` occurs in `text` as a word of its own: some occurrence is not continued by a letter or digit
    on either side ("Rome" is in "... is Rome." but not in "... is Romeo.").

    Args:
        text: the context.
        word: the distractor.
    Returns:
        True if some occurrence stands alone.
    """
    start = text.find(word)
    while start >= 0:
        end = start + len(word)
        before = start > 0 and _word_char(text[start - 1]) and _word_char(word[0])
        after = end < len(text) and _word_char(text[end]) and _word_char(word[-1])
        if not before and not after:
            return True
        start = text.find(word, start + 1)
    return False


def _same_spelling(path: Path, it: dict, field: str, scope: tuple, seen: dict[tuple, tuple[str, str]]) -> None:
    """Two spellings of one text (equal after NFKC, case folding and invisible characters removed) are refused:
    they would silently count as two relations, or two queries with different splits."""
    key = scope + (answer_key(it[field]),)
    first = seen.setdefault(key, (it[field], it["_where"]))
    if first[0] != it[field]:
        raise InputError(
            path,
            f"{it['_where']}: {field}",
            it[field],
            f"another spelling of {first[0]!r} ({first[1]}); use one spelling (compared after Unicode "
            "normalisation, case folding and invisible characters removed)",
        )


def _pairs(path: Path, items: list[dict]) -> None:
    """A pair id (scoped by relation) names at most one related/counterfactual couple: at most one item of each
    condition."""
    seen: dict[tuple, str] = {}
    scoped: dict[str, tuple[str, str]] = {}
    for it in items:
        if it["pair_id"] is None:
            continue
        sid = scoped_pair_id(it["relation"], it["pair_id"])
        if scoped.setdefault(sid, (it["relation"], it["pair_id"])) != (it["relation"], it["pair_id"]):
            raise InputError(
                path,
                f"{it['_where']}: pair_id",
                it["pair_id"],
                f"with relation {it['relation']!r} it reads as {sid!r}, the same as a pair of "
                f"relation {scoped[sid][0]!r}; choose another pair id",
            )
        key = (it["relation"], it["pair_id"], it["condition"])
        if key in seen:
            raise InputError(
                path,
                f"{it['_where']}: pair_id",
                it["pair_id"],
                f"already names a {it['condition']} item of relation {it['relation']!r} ({seen[key]}); a pair id "
                "names one related/counterfactual couple (one item per condition)",
            )
        seen[key] = it["_where"]


def read_items(path: Path) -> list[dict]:
    """The validated items of a file, in file order (InputError on the first problem)."""
    path = Path(path)
    items = []
    seen: dict[tuple, str] = {}
    spellings: dict[tuple, tuple[str, str]] = {}
    for where, rec in item_files.records(path):
        it = _check(path, where, rec) | {"_where": where}
        _same_spelling(path, it, "relation", ("relation",), spellings)
        _same_spelling(path, it, "query", ("query", it["relation"]), spellings)
        key = (it["relation"], it["condition"], it["query"], it["context"], it["gold"], it["distractor"])
        if key in seen:
            raise InputError(path, where, it["query"], f"duplicate item (same as {seen[key]})")
        seen[key] = where
        items.append(it)
    if not items:
        raise InputError(path, "--items", str(path), "holds no items")
    _pairs(path, items)
    return items


def _splits(path: Path, items: list[dict], seed: int, fractions: tuple[float, float, float]) -> dict[tuple, str]:
    """(relation, query) -> split: the given ones (consistent per query), the rest assigned by query (linear in
    the number of items: each relation's queries are collected in one pass)."""
    given: dict[tuple, tuple[str, str]] = {}
    queries: dict[str, set[str]] = {}
    for it in items:
        queries.setdefault(it["relation"], set()).add(it["query"])
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
    for relation in sorted(queries):
        free = sorted(q for q in queries[relation] if (relation, q) not in out)
        if free:
            rng = random.Random(f"{seed}|{relation}|items")
            if len(free) >= 3:
                out.update({(relation, q): s for q, s in split_subjects(free, fractions, rng, str(path)).items()})
            else:  # too few to split three ways: all test (they can still be measured and evaluated)
                out.update({(relation, q): "test" for q in free})
    return out


def scoped_pair_id(relation: str, pair_id: str | None) -> str | None:
    """The pair_id prompts.parquet stores for an own item: ``<relation>:<pair_id>``, so pairs never match across
    relations (pair ids 1, 2, ... in each relation stay apart)."""
    return None if pair_id is None else f"{relation}:{pair_id}"


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
                "pair_id": scoped_pair_id(it["relation"], it["pair_id"]),
                "context_subject": "",
                "query_template": None,
                "position": None,
                "n_passages": None,
                "text_prompted": prompted_text(ctx, instruction, q),
            }
        )
    df = pl.DataFrame(rows, schema=PROMPTS.polars_schema())
    return df.with_row_index("_i").sort("relation", "_i").drop("_i")
