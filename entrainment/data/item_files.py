"""Reading an items file into raw records (entrainment.data.items checks them): JSONL, CSV or Parquet.

Each format is read by its rules, the same way for every field: a field given twice in one record is an error (a
CSV header naming it twice, a JSON object with a repeated key), never "the last one wins"; a byte-order mark is not
part of the first field; a CSV record is named by the file line it starts on (a quoted newline spans lines); a JSONL
line ends only at ``\n`` (a raw U+2028 or U+0085 inside a JSON string is text); a folder or FIFO named like an
items file is named as such, never opened.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import polars as pl

from entrainment.errors import InputError


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """json.loads object hook: a field given twice in one record is an error, never "the last one wins"."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateField(k)
        out[k] = v
    return out


class _DuplicateField(ValueError):
    def __init__(self, field: str):
        super().__init__(field)
        self.field = field


def _text(path: Path, suffix: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(path, "--items", str(path), f"cannot read ({e.strerror})") from None
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark (Excel's CSV export) is not part of the first field
    except UnicodeDecodeError:
        raise InputError(path, "encoding", suffix, f"not a UTF-8 text file (is it really {suffix}?)") from None


def _jsonl(path: Path, text: str) -> list[tuple[str, dict]]:
    out = []
    # only \n ends a line: U+2028, U+0085 and friends are ordinary characters inside a JSON string
    for n, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            rec = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateField as e:
            raise InputError(path, f"line {n}: {e.field}", None, "field given twice in one record") from None
        except json.JSONDecodeError as e:
            raise InputError(path, f"line {n}", line[:60], f"not a JSON object ({e.msg})") from None
        if not isinstance(rec, dict):
            raise InputError(path, f"line {n}", line[:60], "expected a JSON object per line")
        out.append((f"line {n}", rec))
    return out


def _csv(path: Path, text: str) -> list[tuple[str, dict]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(path, "csv", "", "empty file (expected a header line)")
        if header and header[0].lstrip().startswith(("{", "[")):
            raise InputError(path, "csv", header[0][:40], "looks like JSON, not CSV (is it a .jsonl file?)")
        names = [h.strip() for h in header]
        twice = [h for i, h in enumerate(names) if h in names[:i]]
        if twice:
            raise InputError(path, f"line 1: {twice[0]}", None, "field given twice in the header")
        out = []
        start = reader.line_num + 1  # the file line a record starts on (a quoted newline spans lines)
        for values in reader:
            where = f"line {start}"
            start = reader.line_num + 1
            if not values:
                continue
            if len(values) > len(names):
                raise InputError(path, where, values[len(names) :], "more values than header fields")
            out.append((where, dict(zip(names, values))))
    except csv.Error as e:
        raise InputError(path, f"line {reader.line_num}", str(e)[:80], "not a valid CSV file") from None
    return out


def records(path: Path) -> list[tuple[str, dict]]:
    """The raw records of an items file, in file order.

    Args:
        path: a .jsonl, .csv or .parquet file.
    Returns:
        (where, record) per item: where = 'line N' (the file line the record starts on) or 'row N' (Parquet, 0-based).
    """
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(path, "--items", str(path), "no such file")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a FIFO, socket or device)"
        raise InputError(path, "--items", str(path), f"is {kind}; expected a .jsonl, .csv or .parquet file")
    if suffix == ".parquet":
        try:
            df = pl.read_parquet(path)
        except Exception as e:  # noqa: BLE001 -- any decode failure means "not Parquet"
            raise InputError(path, "parquet", type(e).__name__, "not a Parquet file (unreadable)") from None
        return [(f"row {i}", r) for i, r in enumerate(df.to_dicts())]
    if suffix == ".jsonl":
        return _jsonl(path, _text(path, suffix))
    if suffix == ".csv":
        return _csv(path, _text(path, suffix))
    raise InputError(path, "--items", str(path), "expected a .jsonl, .csv or .parquet file")
