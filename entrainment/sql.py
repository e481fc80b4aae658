"""DuckDB over the tables in an output folder: one view per Parquet file present."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from entrainment.errors import InputError
from entrainment.schema import TABLES


def connect(out: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table found in `out`."""
    con = duckdb.connect()
    for name, table in TABLES.items():
        path = Path(out) / table.file
        if path.exists():
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path.as_posix()}')")
    if (Path(out) / "measurements.parquet").exists() and (Path(out) / "prompts.parquet").exists():
        from entrainment.stats import shifts_sql

        con.execute(f"CREATE VIEW shifts AS {shifts_sql()}")  # long format used by the stats stage
    return con


def query(out: Path, sql: str) -> pl.DataFrame:
    """Run one query; a SQL error becomes a one-line InputError."""
    con = connect(out)
    try:
        rel = con.sql(sql)
        return rel.pl() if rel is not None else pl.DataFrame()
    except duckdb.Error as e:
        first = str(e).splitlines()[0]
        raise InputError(Path(out), "query", sql, first) from None
    finally:
        con.close()
