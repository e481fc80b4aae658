"""The checks the Python API makes on its arguments, so a notebook gets the CLI's one-line ``InputError`` for a
common mistake instead of a raw library error deep inside a stage (docs/validation.md, "The Python API").

Each function takes one argument of an API call and returns it (possibly converted) or raises ``InputError``
naming the argument, the value and what was expected.
"""

from __future__ import annotations

import numbers
from typing import Any

import polars as pl

from entrainment.errors import InputError
from entrainment.store.schema import MEASUREMENTS, PROMPTS, check_frame


def model(value: Any) -> Any:
    """A Model from ``en.load_model`` (not a model name, not a transformers model).

    Args:
        value: the `model` argument.
    Returns:
        The value, unchanged.
    """
    if not (hasattr(value, "loaded") and hasattr(value, "bos")):
        shown = value if isinstance(value, str) else type(value).__name__
        raise InputError("en", "model", shown, "expected a Model: load it once with en.load_model(...) and pass that")
    return value


PROMPT_COLUMNS = (
    "prompt_id",
    "relation",
    "condition",
    "split",
    "subject",
    "gold",
    "distractor",
    "text_ctx",
    "text_base",
)


def frame(value: Any, name: str, table=PROMPTS, need: tuple[str, ...] = PROMPT_COLUMNS) -> pl.DataFrame:
    """A non-empty polars frame with a table's columns and rules (a pyarrow Table or pandas frame is refused with
    the conversion to use).

    Args:
        value: the argument.
        name: its name in the call (`prompts`, `measurements`).
        table: the schema Table whose columns and rules it must have.
        need: columns that must be present (default: those every stage reads of a prompts frame).
    Returns:
        The frame.
    """
    if not isinstance(value, pl.DataFrame):
        kind = type(value).__name__
        hint = {"Table": "pl.from_arrow(table)", "DataFrame": "pl.from_pandas(df)"}.get(kind, "a polars DataFrame")
        raise InputError("en", name, kind, f"expected a polars DataFrame (convert with {hint})")
    if value.is_empty():
        raise InputError("en", name, "0 rows", "an empty frame: nothing to compute on")
    missing = [c for c in need if c not in value.columns]
    if missing:
        raise InputError("en", f"{name}.{missing[0]}", None, f"missing column (expected {table.file}'s columns)")
    bad = check_frame(table, value)
    if bad:
        raise InputError("en", name, bad.split(":")[0], bad)
    return value


def head_pairs(value: Any) -> tuple[tuple[int, int], ...]:
    """[(layer, head), ...] of non-negative integers: (0, 1) alone (not a list of pairs) and floats such as
    (0.9, 1.7) are refused, never truncated.

    Args:
        value: the `heads` argument when it is a sequence.
    Returns:
        The sorted distinct pairs.
    """
    try:
        pairs = list(value)
    except TypeError:
        raise InputError(
            "en", "heads", repr(value), "expected [(layer, head), ...], a heads frame or '3.4,10.7'"
        ) from None
    out = set()
    for p in pairs:
        ok = (
            isinstance(p, (tuple, list))
            and len(p) == 2
            and all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in p)
        )
        if not ok:
            raise InputError(
                "en",
                "heads",
                repr(value)[:80],
                f"{p!r} is not a (layer, head) pair of integers; give a list of pairs, e.g. [(0, 1)]",
            )
        if p[0] < 0 or p[1] < 0:
            raise InputError("en", "heads", repr(p), "layer and head indices start at 0")
        out.add((int(p[0]), int(p[1])))
    if not out:
        raise InputError("en", "heads", repr(value), "no heads given")
    return tuple(sorted(out))


def heads_frame(value: Any) -> pl.DataFrame | None:
    """None or a heads frame (the `heads` argument of scan)."""
    if value is not None and not isinstance(value, pl.DataFrame):
        raise InputError("en", "heads", repr(value)[:80], "expected a heads frame from en.discover(...).heads, or None")
    return value


def prompt_row(value: Any) -> dict:
    """One prompts row as a dict with the fields a prompt is scored by."""
    need = ("text_ctx", "text_base", "gold", "distractor")
    if not isinstance(value, dict):
        raise InputError(
            "en", "row", type(value).__name__, "expected one prompts row as a dict (prompts.row(0, named=True))"
        )
    missing = [f for f in need if not isinstance(value.get(f), str)]
    if missing:
        raise InputError(
            "en",
            f"row.{missing[0]}",
            value.get(missing[0]),
            "missing or not a string (expected a prompts row: prompts.row(0, named=True))",
        )
    return value


def same_prompts(measurements: pl.DataFrame, prompts: pl.DataFrame) -> None:
    """Measurements of exactly these prompts (as the CLI refuses stale measurements): every measured prompt id is
    in the prompts (a frame of other prompts would be tested on the shared ids only).

    Args:
        measurements: a measurements frame.
        prompts: the prompts frame given with it.
    """
    frame(measurements, "measurements", MEASUREMENTS, ("prompt_id", "ablation"))
    frame(prompts, "prompts")
    ids = set(prompts["prompt_id"].to_list())
    measured = measurements["prompt_id"].unique().to_list()
    stray = [p for p in measured if p not in ids]
    if stray:
        raise InputError(
            "en",
            "measurements",
            stray[0],
            f"measures a prompt not in these prompts ({len(stray)} of "
            f"{len(measured)} ids); measure these prompts again",
        )


def relation(value: str | None, prompts: pl.DataFrame) -> str | None:
    """None or a relation present in the prompts."""
    if value is None:
        return None
    present = sorted(prompts["relation"].unique())
    if value not in present:
        raise InputError("en", "relation", value, f"not in the prompts (they hold: {', '.join(present[:20])})")
    return value


def has_train(prompts: pl.DataFrame, relations: list[str], what: str) -> None:
    """Each relation has train rows (a mask search trains on them; a mean reference is their average)."""
    have = set(prompts.filter(pl.col("split") == "train")["relation"].unique())
    for r in relations:
        if r not in have:
            raise InputError("en", "prompts", r, f"relation has no train rows, needed for {what}")
