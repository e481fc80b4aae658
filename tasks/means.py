"""Mean-ablation references, cached per (model, relations, bos) and shared by every stage that removes heads."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from entrainment import means, tables
from entrainment.config import Config
from entrainment.models import Loaded
from entrainment.schema import HEAD_MEANS
from entrainment.tokens import Tokens
from tasks.cache import code_hash, sha
from tasks.inputs import model_key, relation_rows, shard_name

SHARDS = Path("shards") / "means"


def _path(cfg: Config, relations: tuple[str, ...], prompts: list[tuple[int, ...]]) -> Path:
    key = sha(model_key(cfg), relations, prompts, cfg.bos, code_hash(__name__))[:16]
    return cfg.out / SHARDS / shard_name(model_key(cfg)["spec"]) / f"{shard_name(','.join(relations))}-{key}.parquet"


def reference_frame(cfg: Config, loaded: Loaded, relations: str | tuple[str, ...]) -> pl.DataFrame:
    """head_means rows of these relations' no-context train prompts (computed once, then read from the cache)."""
    relations = (relations,) if isinstance(relations, str) else tuple(sorted(relations))
    prompts = means.reference_prompts(relation_rows(cfg.out, relations), Tokens(loaded.tokenizer, cfg.bos))
    path = _path(cfg, relations, prompts)
    if path.exists() and tables.is_valid_parquet(path):
        return tables.read_parquet(path, HEAD_MEANS)
    mu, n = means.head_means(loaded, prompts, cfg.batch_size)
    df = means.to_frame(loaded.info.spec, ",".join(relations), cfg.bos, mu, n)
    tables.write_parquet(df, path, HEAD_MEANS)
    return df


def reference(cfg: Config, loaded: Loaded, relations: str | tuple[str, ...]) -> torch.Tensor:
    """mu [n_layers, n_heads, head_dim] of these relations (see reference_frame)."""
    return means.from_frame(reference_frame(cfg, loaded, relations))
