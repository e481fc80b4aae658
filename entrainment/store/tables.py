"""Reading and writing the pipeline's Parquet tables: atomic, deterministic, schema-checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from entrainment.errors import InputError
from entrainment.stage_graph import producer
from entrainment.store.files import SOURCE_KEY, atomic_write_bytes
from entrainment.store.provenance import source_record
from entrainment.store.schema import TABLES, Table, check_frame


def to_arrow(df: pl.DataFrame, table: Table) -> pa.Table:
    """Cast a frame to the table's schema, in schema order (extra columns are kept after them)."""
    missing = [c for c in table.names if c not in df.columns]
    if missing:
        raise ValueError(f"{table.file}: missing columns {missing}")
    extra = [c for c in df.columns if c not in table.names]
    arrow = df.select(table.names + extra).to_arrow()
    fields = list(table.arrow_schema()) + [arrow.schema.field(c) for c in extra]
    return arrow.cast(pa.schema(fields))


def write_parquet(
    df: pl.DataFrame | pa.Table, path: Path, table: Table | None = None, source: dict[str, str] | None = None
) -> Path:
    """Atomically write a deterministic Parquet file (same data -> same bytes).

    ``source`` (input table -> content hash) is stored in the key-value metadata (see provenance.py).
    """
    arrow = to_arrow(df, table) if table is not None else (df.to_arrow() if isinstance(df, pl.DataFrame) else df)
    if source:
        meta = dict(arrow.schema.metadata or {})
        meta[SOURCE_KEY] = json.dumps(source, sort_keys=True).encode()
        arrow = arrow.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    pq.write_table(arrow, sink, compression="zstd", write_statistics=True, store_schema=True)
    data = sink.getvalue().to_pybytes()
    path = Path(path)
    if not (path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data):
        atomic_write_bytes(path, data)  # identical bytes are not rewritten (mtime stays)
    return path


ROWS_KEY = b"entrainment.rows"  # metadata: the digest of the rows as written (rows_digest)


def rows_digest(df: pl.DataFrame) -> str:
    """sha256 of a frame's column names and types and its seeded row hashes, in row order: equal for the rows
    written and read back, different after a row is cut, added or changed."""
    h = hashlib.sha256(json.dumps([[c, str(t)] for c, t in df.schema.items()]).encode())
    if len(df) and df.width:
        h.update(df.hash_rows(seed=0).to_numpy().tobytes())
    return h.hexdigest()


def write_table(df: pl.DataFrame, out_dir: Path, name: str) -> Path:
    """Write one of the named tables into out_dir under its standard file name, recording the current
    hashes of the tables it is made from (stages.inputs_of) and the digest of its own rows in its metadata."""
    table = TABLES[name]
    arrow = to_arrow(df, table)
    arrow = arrow.replace_schema_metadata({ROWS_KEY: rows_digest(pl.from_arrow(arrow)).encode()})
    return write_parquet(arrow, Path(out_dir) / table.file, None, source_record(out_dir, name))


def check_unedited(out_dir: Path, name: str, df: pl.DataFrame | None = None) -> None:
    """A table whose rows are not the ones its stage wrote (edited by hand: rows cut, values changed, even with
    its metadata kept) is refused in one line naming the stage that rewrites it. Tables written before the digest
    was recorded pass.

    Args:
        out_dir: the output folder.
        name: the table's name.
        df: its rows as ``read_table`` just read them (read again here when not given).
    """
    path = Path(out_dir) / TABLES[name].file
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 -- read_table names an unreadable file
        return
    want = meta.get(ROWS_KEY)
    if want is not None and want.decode() != rows_digest(pl.read_parquet(path) if df is None else df):
        raise InputError(
            path,
            "table",
            name,
            f"its rows are not the ones entrainment {producer(name)} wrote "
            f"(edited by hand?): regenerate it with entrainment {producer(name)} "
            "(or entrainment run)",
        )


def write_table_file(df: pl.DataFrame, path: Path, name: str) -> Path:
    """Write a named table's rows to another path (a shard), checked against its schema."""
    return write_parquet(df, path, TABLES[name])


def read_parquet(path: Path, table: Table | None = None) -> pl.DataFrame:
    """Read a Parquet file; a missing, unreadable or incomplete file raises InputError naming it."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file", str(path), "not found (run the stage that writes it first)")
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # noqa: BLE001 -- any decode failure is a corrupt file
        raise InputError(
            path, "parquet", type(e).__name__, "unreadable Parquet file (delete it and rerun the stage)"
        ) from None
    if table is not None:
        missing = [c for c in table.names if c not in df.columns]
        if missing:
            raise InputError(path, "column", missing[0], f"missing from {table.file}")
    return df


def read_table(out_dir: Path, name: str) -> pl.DataFrame:
    """A named table of an output folder, validated against the schema module (unique keys, known values, no
    nulls where a stage needs a value); a violation is a one-line InputError naming the table, column and row."""
    table = TABLES[name]
    path = Path(out_dir) / table.file
    df = read_parquet(path, table)
    problem = check_frame(table, df)
    if problem:
        raise InputError(
            path,
            "table",
            name,
            f"{problem}; it was edited or damaged: regenerate it with "
            f"entrainment {producer(name)} (or entrainment run)",
        )
    if name == "measurements" and df.is_empty():
        raise InputError(path, "table", name, "has no rows: rerun entrainment measure")
    return df


def arrow_dataset(path: Path):
    """A lazy Arrow dataset over one Parquet file, for DuckDB (``con.register``): the path is taken literally, never
    as a glob pattern (a folder named ``results[1]`` is a folder, not a pattern)."""
    import pyarrow.dataset as ds

    return ds.dataset(str(path), format="parquet")


def is_valid_parquet(path: Path) -> bool:
    """True if the file exists and its footer and data decode."""
    try:
        pq.read_table(path)
        return True
    except Exception:  # noqa: BLE001
        return False
