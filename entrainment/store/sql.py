"""DuckDB over the tables in an output folder: one view per Parquet file present, read-only by default.

Views are Arrow datasets registered with DuckDB (``con.register``): no path is spliced into SQL text or read as a
glob pattern (a folder named ``results[1]`` is that folder). A corrupt table makes only its own view fail, with one
warning line; a stale one (made from other input tables) gets a warning. By default only plain ``SELECT`` /
``WITH ... SELECT`` statements run (DuckDB parses the text; EXPLAIN, which with ANALYZE executes its statement, and
every other statement type are refused), and DuckDB's file access is switched off entirely, so no query can read or
write any file, ``--out`` included; ``unsafe=True`` lifts both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import duckdb
import polars as pl

from entrainment.errors import InputError
from entrainment.store.schema import TABLES
from entrainment.vocabulary import METRICS, TARGETS

READ_ONLY = {duckdb.StatementType.SELECT}


def connect(out: Path, warn: Callable[[str], None] | None = None, unsafe: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per readable table in `out` (and the `shifts` view).

    `warn` gets one line per table that is unreadable, stale (made from other input tables than the current ones)
    or edited by hand (its rows are not the ones its stage wrote).
    """
    from entrainment.store.provenance import why_stale
    from entrainment.store.tables import arrow_dataset, check_unedited

    out = Path(out)
    con = duckdb.connect()
    made = set()
    for name, table in TABLES.items():
        path = out / table.file
        if not path.exists():
            continue
        try:
            con.register(name, arrow_dataset(path))
            con.sql(f"SELECT * FROM {name} LIMIT 0")
            made.add(name)
        except Exception as e:  # noqa: BLE001 -- arrow or duckdb: either way this one view is unavailable
            con.unregister(name)
            if warn:
                warn(f"view {name} unavailable: {path} is unreadable ({str(e).splitlines()[0][:100]})")
            continue
        reason = why_stale(out, name)
        if reason and warn:
            warn(f"view {name} is stale: {reason}")
        if warn and not reason:  # one warning per table: a stale one is already named
            try:  # rows changed by hand since their stage wrote them: served, but never silently
                check_unedited(out, name)
            except InputError as e:
                warn(f"view {name} was edited by hand: {e}")
            except Exception as e:  # noqa: BLE001 -- a data page polars cannot decode: the query may still fail on it
                warn(f"view {name}: {path} could not be read to check its rows ({str(e).splitlines()[0][:100]})")
    if {"measurements", "prompts"} <= made:
        from entrainment.store.sql import shifts_sql

        try:
            con.execute(f"CREATE VIEW shifts AS {shifts_sql()}")  # long format used by the stats stage
        except duckdb.Error as e:
            if warn:
                warn(f"view shifts unavailable ({str(e).splitlines()[0][:100]})")
    if not unsafe:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


# DuckDB types that Arrow/polars take lossily or not at all (UHUGEINT above 2**127 came back as -1; MAP, UNION,

# INTERVAL, BIT and VARINT fail or arrive as opaque bytes): such columns are rendered as text by DuckDB itself
_LOSSY = re.compile(r"\b(U?HUGEINT|VARINT|BIGNUM|BIT|BITSTRING|INTERVAL|UNION|MAP)\b")


def _as_text_where_lossy(rel: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """The relation with every column of a lossy type (``_LOSSY``, also nested) cast to VARCHAR."""
    types = [str(t).upper() for t in rel.types]
    if not any(_LOSSY.search(t) for t in types) or len(set(rel.columns)) < len(rel.columns):
        return rel
    quoted = ['"' + c.replace('"', '""') + '"' for c in rel.columns]
    try:
        return rel.project(
            ", ".join(f"CAST({q} AS VARCHAR) AS {q}" if _LOSSY.search(t) else q for q, t in zip(quoted, types))
        )
    except duckdb.Error:
        return rel


def _text(v: object) -> str | None:
    """A value as text: bytes as hex, None kept."""
    if v is None:
        return None
    return bytes(v).hex() if isinstance(v, (bytes, bytearray, memoryview)) else str(v)


def query(out: Path, sql: str, warn: Callable[[str], None] | None = None, unsafe: bool = False) -> pl.DataFrame:
    """Run one query; a SQL error (or, unless `unsafe`, a statement that is not a plain SELECT) is a one-line
    InputError."""
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(Path(out), "query", sql.encode("utf-8", "replace").decode(), "not valid UTF-8 text") from None
    con = connect(out, warn, unsafe)
    try:
        statements = con.extract_statements(sql)
        if not statements:
            raise InputError(Path(out), "query", sql, "no SQL statement")
        if not unsafe:
            for st in statements:
                if st.type not in READ_ONLY:
                    raise InputError(
                        Path(out),
                        "query",
                        sql,
                        f"only SELECT queries are allowed here (found {st.type.name}); --unsafe lifts this",
                    )
        rel = con.sql(sql)
        if rel is None:
            return pl.DataFrame()
        rel = _as_text_where_lossy(rel)
        try:
            return rel.pl()
        except Exception:  # noqa: BLE001 -- a type polars cannot take: as text
            return pl.DataFrame([[_text(v) for v in row] for row in rel.fetchall()], schema=rel.columns, orient="row")
    except duckdb.Error as e:
        first = str(e).splitlines()[0]
        raise InputError(Path(out), "query", sql, first) from None
    finally:
        con.close()


def _metric_sql(target: str, metric: str, arm: str) -> str:
    if metric == "prob":
        return f"exp({target}_logprob_{arm})"
    return f"CAST({target}_{metric}_{arm} AS DOUBLE)"


def shifts_sql() -> str:
    """The long-format view over measurements joined to prompts (for pair_id)."""
    parts = [
        f"SELECT m.model, m.ablation, m.relation, m.condition, m.split, m.prompt_id, p.pair_id, p.position, "
        f"p.subject, "
        f"m.collision, "
        f"'{t}' AS target, '{k}' AS metric, {_metric_sql(t, k, 'ctx')} AS ctx, {_metric_sql(t, k, 'base')} AS base "
        f"FROM measurements m JOIN prompts p USING (prompt_id)"
        for t in TARGETS
        for k in METRICS
    ]
    return "SELECT *, ctx - base AS diff FROM (\n" + "\nUNION ALL\n".join(parts) + "\n)"
