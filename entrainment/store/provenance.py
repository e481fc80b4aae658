"""Where each table came from: the content hashes of the input tables it was made from.

Every stage writes, into the Parquet key-value metadata of each table, a ``source`` record
``{input table name: sha256 prefix of that file}`` (e.g. measurements <- prompts; stats <- measurements,
prompts; ablation <- heads, prompts). A table is **stale** when an input it records has changed since, or
is itself stale. Stages run alone refuse stale inputs with one line naming the table and the command that
refreshes it; ``entrainment sql`` warns. Hashes, never paths or times, so identical runs write identical bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from entrainment import stage_graph
from entrainment.errors import InputError
from entrainment.store.files import SOURCE_KEY, file_sha256


def table_hash(path: Path) -> str:
    """Content hash of one table file (16 hex digits)."""
    return file_sha256(path)[:16]


def source_record(out: Path, table: str) -> dict[str, str]:
    """The `source` record a stage writes into `table`: the current hashes of its input tables."""
    return {name: table_hash(Path(out) / f"{name}.parquet") for name in stage_graph.inputs_of(table)}


def read_source(path: Path) -> dict[str, str] | None:
    """The `source` record stored in a table, or None (no record, or unreadable file)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 -- a corrupt file has no provenance
        return None
    raw = meta.get(SOURCE_KEY)
    if not raw:
        return None
    try:
        rec = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return CORRUPT
    ok = isinstance(rec, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in rec.items())
    return rec if ok else CORRUPT


# what read_source returns for a record that is not a {table: hash} JSON object (hand-edited or damaged)
CORRUPT: dict[str, str] = {"": "corrupt"}


def why_stale(out: Path, table: str, _seen: frozenset[str] = frozenset()) -> str | None:
    """None if `table` in `out` was made from the current input tables (recursively), else the reason."""
    out = Path(out)
    if not stage_graph.inputs_of(table) or table in _seen:
        return None
    path = out / f"{table}.parquet"
    recorded = read_source(path)
    if recorded is None:
        return f"{path.name} records no source tables (written by an older version)"
    if recorded is CORRUPT:
        return f"{path.name} has unreadable provenance metadata ({SOURCE_KEY.decode()} is not a JSON object of hashes)"
    for name in stage_graph.inputs_of(table):
        inp = out / f"{name}.parquet"
        if not inp.exists():
            return f"{path.name} was made from a {name}.parquet that no longer exists"
        if recorded.get(name) != table_hash(inp):
            return f"{path.name} was made from another {name}.parquet"
        deeper = why_stale(out, name, _seen | {table})
        if deeper:
            return deeper
    return None


def require_fresh(out: Path, table: str) -> None:
    """Raise a one-line InputError if `table` is stale, naming the command that refreshes it."""
    reason = why_stale(out, table)
    if reason:
        culprit = reason.split(".parquet", 1)[0].split()[-1] if reason else table
        cmd = stage_graph.producer(culprit) if culprit in stage_graph.TABLES else stage_graph.producer(table)
        raise InputError(
            Path(out) / f"{table}.parquet",
            "source",
            culprit,
            f"{reason}; refresh it with: entrainment {cmd} --out {out}  (or run the whole pipeline: entrainment run)",
        )
