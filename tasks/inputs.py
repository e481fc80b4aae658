"""What the stage tasks share: reading their input rows, identifying them, and naming their shard files.

Every shard, cache and resume folder is named by ``shard_name``: a readable prefix plus a hash of the full
identity (model spec, head-set id, relation name), so two distinct inputs can never share a file, however long
or similar their names.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import polars as pl

from entrainment.config import Config
from entrainment.model import loading, sources
from entrainment.store import tables


def shard_name(text: str, width: int = 40) -> str:
    """A file-name-safe, collision-free name for `text`: its slug (at most `width` characters) + 10 hex digits of
    its sha1 (``country_capital_city-1a2b3c4d5e``)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.")[:width] or "x"
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def relation_rows(out: Path, relation: str | tuple[str, ...]) -> pl.DataFrame:
    """The prompt rows of one relation (or of several, for the shared mask)."""
    df = tables.read_table(out, "prompts")
    return df.filter(pl.col("relation").is_in([relation] if isinstance(relation, str) else list(relation)))


def rows_hash(df: pl.DataFrame) -> str:
    """Content hash of a frame's rows (16 hex digits)."""
    return hashlib.sha256(df.write_csv().encode()).hexdigest()[:16]


def model_key(cfg: Config) -> dict:
    """What identifies the model a task runs: spec, content identity, device class, dtype."""
    src = sources.resolve(cfg.model)
    dev = loading.pick_device(cfg.device)
    return {
        "spec": src.spec,
        "identity": src.identity,
        "device": dev.split(":")[0],
        "dtype": str(loading.pick_dtype(cfg.dtype, dev)),
    }


def stage_relations(cfg: Config, only: tuple[str, ...] | None) -> list[str]:
    """Relations present in prompts.parquet (optionally restricted to `only`)."""
    present = sorted(tables.read_table(cfg.out, "prompts")["relation"].unique())
    return [r for r in present if not only or r in only]


def discover_relations(cfg: Config, only: tuple[str, ...] | None) -> list[str]:
    """The relations to search heads for: `only`, else the configured discovery relations (with own items whose
    relations are not among them and --discover-relations not given: every relation of the items file)."""
    from entrainment.config import default
    from entrainment.stages.discover import discovery_relations

    fallback = not only and cfg.items is not None and cfg.discover_relations == default("discover_relations")
    return discovery_relations(
        stage_relations(cfg, None), only or cfg.discover_relations, fallback, cfg.out / "prompts.parquet"
    )
