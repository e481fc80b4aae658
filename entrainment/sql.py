"""DuckDB over the tables in an output folder: one view per Parquet file present, read-only by default.

Views are made with DuckDB's Python relation API (``con.read_parquet(path).create_view(name)``), so no path
is ever spliced into SQL text. A corrupt table makes only its own view fail, with one warning line. By
default only SELECT statements run, and DuckDB's file access is limited to the output folder (no COPY TO,
no reading other files, no ATTACH or extension installs); ``unsafe=True`` lifts both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import duckdb
import polars as pl

from entrainment.errors import InputError
from entrainment.schema import TABLES

READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(out: Path, warn: Callable[[str], None] | None = None, unsafe: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per readable table in `out` (and the `shifts` view).

    `warn` gets one line per table that is unreadable or stale (made from other input tables than the current ones).
    """
    from entrainment.provenance import why_stale

    out = Path(out)
    con = duckdb.connect()
    made = set()
    for name, table in TABLES.items():
        path = out / table.file
        if not path.exists():
            continue
        try:
            con.read_parquet(str(path)).create_view(name)
            made.add(name)
        except duckdb.Error as e:
            if warn:
                warn(f"view {name} unavailable: {path} is unreadable ({str(e).splitlines()[0][:100]})")
            continue
        reason = why_stale(out, name)
        if reason and warn:
            warn(f"view {name} is stale: {reason}")
    if {"measurements", "prompts"} <= made:
        from entrainment.stats import shifts_sql

        con.execute(f"CREATE VIEW shifts AS {shifts_sql()}")  # long format used by the stats stage
    if not unsafe:
        con.execute(f"SET allowed_directories = [{_quote_literal(str(out.resolve()) + '/')}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


def query(out: Path, sql: str, warn: Callable[[str], None] | None = None, unsafe: bool = False) -> pl.DataFrame:
    """Run one query; a SQL error (or, unless `unsafe`, a statement that is not a SELECT) is a one-line InputError."""
    con = connect(out, warn, unsafe)
    try:
        statements = con.extract_statements(sql)
        if not unsafe:
            for st in statements:
                if st.type not in READ_ONLY:
                    raise InputError(Path(out), "query", sql, f"only SELECT queries are allowed here "
                                     f"(found {st.type.name}); --unsafe lifts this")
        rel = con.sql(sql)
        return rel.pl() if rel is not None else pl.DataFrame()
    except duckdb.Error as e:
        first = str(e).splitlines()[0]
        raise InputError(Path(out), "query", sql, first) from None
    finally:
        con.close()
