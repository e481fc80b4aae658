"""Writing a result frame to stdout as a table, CSV or JSON, whatever its column types.

CSV and JSON take only plain values: nested (list/struct), binary and 128-bit integer columns are converted to
text first (lists and structs as JSON, bytes as hex, huge integers as decimal strings), so no query result ends
in a traceback. A closed or full stdout is handled by cli/errors.py (exit 1, one line).
"""

from __future__ import annotations

import json
import sys

import polars as pl


def _json_default(v: object) -> object:
    return bytes(v).hex() if isinstance(v, (bytes, bytearray, memoryview)) else str(v)


# column types CSV and JSON take as they are; every other type is converted to text
_SCALARS = (
    pl.String,
    pl.Boolean,
    pl.Date,
    pl.Datetime,
    pl.Time,
    pl.Duration,
    pl.Categorical,
    pl.Enum,
    pl.Null,
    pl.Int8,
    pl.Int16,
    pl.Int32,
    pl.Int64,
    pl.UInt8,
    pl.UInt16,
    pl.UInt32,
    pl.UInt64,
    pl.Float32,
    pl.Float64,
)


def _plain(df: pl.DataFrame) -> pl.DataFrame:
    """Nested columns as JSON text, binary ones as hex, 128-bit integers, decimals and any other type as text."""
    out = []
    for name, dtype in df.schema.items():
        col = df[name]
        if isinstance(dtype, (pl.List, pl.Array, pl.Struct)):
            col = pl.Series(
                name, [None if v is None else json.dumps(v, default=_json_default) for v in col.to_list()], pl.String
            )
        elif dtype == pl.Binary:
            col = pl.Series(name, [None if v is None else v.hex() for v in col.to_list()], pl.String)
        elif isinstance(dtype, pl.Decimal):
            col = col.cast(pl.String)
        elif not isinstance(dtype, _SCALARS):  # Int128, Object, Map, extension types, ...
            col = pl.Series(name, [None if v is None else str(_json_default(v)) for v in col.to_list()], pl.String)
        out.append(col)
    return pl.DataFrame(out) if out else df


class StdoutError(Exception):
    """Writing to stdout failed (closed pipe, full device): the command's work is done, its output is lost."""


def stdout_error(e: OSError) -> StdoutError:
    """The StdoutError of a failed write to stdout."""
    return StdoutError(
        "stdout was closed"
        if isinstance(e, BrokenPipeError)
        else f"cannot write to stdout ({e.strerror or type(e).__name__})"
    )


class GuardedStdout:
    """sys.stdout for the command line: a write or flush that fails raises StdoutError, whoever prints (rich tables,
    click, print), so cli/errors.py can tell a full or closed stdout from a full disk. All else is the stream's."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as e:
            raise stdout_error(e) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            raise stdout_error(e) from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def emit(text: str) -> None:
    """Write text (plus a newline) to stdout and flush; a failure becomes StdoutError."""
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        raise StdoutError("stdout is closed")
    try:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    except OSError as e:
        raise stdout_error(e) from None


def write_frame(df: pl.DataFrame, fmt: str) -> None:
    """Print `df` to stdout as `table` (rich), `csv` or `json` (one JSON array of row objects)."""
    if fmt == "csv":
        emit(_plain(df).write_csv())
    elif fmt == "json":
        emit(_plain(df).write_json())
    else:
        import io

        from rich.console import Console
        from rich.table import Table

        t = Table(*df.columns)
        for row in df.iter_rows():
            t.add_row(*[("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row])
        buf = io.StringIO()
        Console(file=buf, width=max(100, 20 * len(df.columns))).print(t)
        emit(buf.getvalue())
