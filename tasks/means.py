"""Mean-ablation references, cached per (model, relations, bos) and shared by every stage that removes heads.

Each cache file has a ``.sha256`` beside it: a file whose content is not what was written (edited by hand) is
recomputed, never used."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from entrainment.config import Config
from entrainment.errors import InputError
from entrainment.model import means
from entrainment.model.loading import Loaded
from entrainment.model.tokens import Tokens
from entrainment.store import tables
from entrainment.store.files import atomic_write_bytes, file_sha256, json_sha256
from entrainment.store.schema import HEAD_MEANS
from tasks.cache import code_hash
from tasks.inputs import model_key, relation_rows, shard_name

SHARDS = Path("shards") / "means"


def _path(cfg: Config, relations: tuple[str, ...], prompts: list[tuple[int, ...]]) -> Path:
    key = json_sha256(model_key(cfg), relations, prompts, cfg.bos, code_hash(__name__))[:16]
    return cfg.out / SHARDS / shard_name(model_key(cfg)["spec"]) / f"{shard_name(','.join(relations))}-{key}.parquet"


def reference_frame(cfg: Config, loaded: Loaded, relations: str | tuple[str, ...]) -> pl.DataFrame:
    """head_means rows of these relations' no-context train prompts (computed once, then read from the cache)."""
    relations = (relations,) if isinstance(relations, str) else tuple(sorted(relations))
    prompts = means.reference_prompts(relation_rows(cfg.out, relations), Tokens(loaded.tokenizer, cfg.bos))
    path = _path(cfg, relations, prompts)
    digest = path.with_name(path.name + ".sha256")  # the cache file's content as written: a hand edit is recomputed
    if (
        path.exists()
        and digest.is_file()
        and tables.is_valid_parquet(path)
        and digest.read_text().strip() == file_sha256(path)
    ):
        return tables.read_parquet(path, HEAD_MEANS)
    mu, n = means.head_means(loaded, prompts, cfg.batch_size)
    df = means.to_frame(loaded.info.spec, ",".join(relations), cfg.bos, mu, n)
    tables.write_parquet(df, path, HEAD_MEANS)
    atomic_write_bytes(digest, file_sha256(path).encode())
    return df


def reference(cfg: Config, loaded: Loaded, relations: str | tuple[str, ...]) -> torch.Tensor:
    """mu [n_layers, n_heads, head_dim] of these relations (see reference_frame); a reference from no train prompt
    (a relation without train items) is refused, never a silent zero ablation labelled `mean`."""
    df = reference_frame(cfg, loaded, relations)
    if df.is_empty() or int(df["n_tokens"].max()) == 0:
        names = (relations,) if isinstance(relations, str) else tuple(relations)
        raise InputError(
            cfg.out / "prompts.parquet",
            "relation",
            ",".join(names),
            f"no train items, so no mean-ablation reference (--ablation-method {cfg.ablation_method}, "
            "--compare-methods); give it train items or use zero ablation only",
        )
    return means.from_frame(df)
