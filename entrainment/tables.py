"""Reading and writing the pipeline's Parquet tables: atomic, deterministic, schema-checked."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from entrainment.errors import InputError
from entrainment.schema import TABLES, Table


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, then rename (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_arrow(df: pl.DataFrame, table: Table) -> pa.Table:
    """Cast a frame to the table's schema, in schema order (extra columns are kept after them)."""
    missing = [c for c in table.names if c not in df.columns]
    if missing:
        raise ValueError(f"{table.file}: missing columns {missing}")
    extra = [c for c in df.columns if c not in table.names]
    arrow = df.select(table.names + extra).to_arrow()
    fields = list(table.arrow_schema()) + [arrow.schema.field(c) for c in extra]
    return arrow.cast(pa.schema(fields))


def write_parquet(df: pl.DataFrame | pa.Table, path: Path, table: Table | None = None,
                  source: dict[str, str] | None = None) -> Path:
    """Atomically write a deterministic Parquet file (same data -> same bytes).

    ``source`` (input table -> content hash) is stored in the key-value metadata (see provenance.py).
    """
    arrow = to_arrow(df, table) if table is not None else (df.to_arrow() if isinstance(df, pl.DataFrame) else df)
    if source:
        meta = dict(arrow.schema.metadata or {})
        meta[b"entrainment.source"] = json.dumps(source, sort_keys=True).encode()
        arrow = arrow.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    pq.write_table(arrow, sink, compression="zstd", write_statistics=True, store_schema=True)
    data = sink.getvalue().to_pybytes()
    path = Path(path)
    if not (path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data):
        atomic_write_bytes(path, data)  # identical bytes are not rewritten (mtime stays)
    return path


def write_table(df: pl.DataFrame, out_dir: Path, name: str) -> Path:
    """Write one of the named tables into out_dir under its standard file name, recording the current
    hashes of the tables it is made from (provenance.INPUTS) in its metadata."""
    from entrainment.provenance import source_record

    table = TABLES[name]
    return write_parquet(df, Path(out_dir) / table.file, table, source_record(out_dir, name))


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
        raise InputError(path, "parquet", type(e).__name__, "unreadable Parquet file (delete it and rerun the stage)") from None
    if table is not None:
        missing = [c for c in table.names if c not in df.columns]
        if missing:
            raise InputError(path, "column", missing[0], f"missing from {table.file}")
    return df


def read_table(out_dir: Path, name: str) -> pl.DataFrame:
    table = TABLES[name]
    return read_parquet(Path(out_dir) / table.file, table)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_valid_parquet(path: Path) -> bool:
    """True if the file exists and its footer and data decode."""
    try:
        pq.read_table(path)
        return True
    except Exception:  # noqa: BLE001
        return False
