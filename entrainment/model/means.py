"""Mean-ablation references: each head's mean output slice over a reference set of prompts.

The reference set of a relation is its **no-context training prompts**: the distinct ``text_base`` of its train
split (test items never enter a reference). One recording pass (``hooks.recorded_z``) over them gives, per
(layer, head), the mean of the head's slice of ``z`` (the attention output projection's input) over every real
token (padding excluded): ``mu[layer, head]``, a ``head_dim`` vector. Mean ablation replaces a removed head's
slice by it at every position; resample ablation falls back to it where the donor has no position.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from entrainment.model.hooks import recorded_z
from entrainment.model.loading import Loaded
from entrainment.model.scoring import collate, model_device
from entrainment.model.tokens import Tokens
from entrainment.store.schema import HEAD_MEANS


def reference_prompts(rows: pl.DataFrame, tk: Tokens) -> list[tuple[int, ...]]:
    """The distinct no-context prompts of the train split of these prompt rows, tokenised, sorted."""
    texts = sorted(set(rows.filter(pl.col("split") == "train")["text_base"].to_list()))
    return sorted({tk.prompt(t) for t in texts})


def head_means(loaded: Loaded, prompts: list[tuple[int, ...]], batch_size: int = 32) -> tuple[torch.Tensor, int]:
    """(mu [n_layers, n_heads, head_dim] float32, tokens averaged) over every real token of the prompts."""
    info = loaded.info
    device = model_device(loaded.model)
    total = torch.zeros(info.n_layers, info.n_heads * info.head_dim, dtype=torch.float64)
    count = 0
    with torch.inference_mode():
        for lo in range(0, len(prompts), batch_size):
            ids, mask = collate(prompts[lo : lo + batch_size], loaded.tokenizer.pad_token_id, device)
            with recorded_z(loaded.model) as zs:
                loaded.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    logits_to_keep=1,
                    use_cache=False,
                )
            real = mask.bool()  # [B, T]
            for layer, z in enumerate(zs):  # z: [B, T, H*D]
                total[layer] += z[real].double().sum(0).cpu()
            count += int(real.sum())
    mu = (total / max(count, 1)).float().reshape(info.n_layers, info.n_heads, info.head_dim)
    return mu, count


def to_frame(model: str, relation: str, bos: str, mu: torch.Tensor, n_tokens: int) -> pl.DataFrame:
    """head_means.parquet rows: one per (layer, head), the mean vector as a list column."""
    n_l, n_h, _ = mu.shape
    arr = mu.numpy().astype(np.float64)
    return pl.DataFrame(
        {
            "model": [model] * (n_l * n_h),
            "relation": [relation] * (n_l * n_h),
            "bos": [bos] * (n_l * n_h),
            "layer": np.repeat(np.arange(n_l), n_h),
            "head": np.tile(np.arange(n_h), n_l),
            "n_tokens": [n_tokens] * (n_l * n_h),
            "mean": [arr[layer, head].tolist() for layer in range(n_l) for head in range(n_h)],
        },
        schema=HEAD_MEANS.polars_schema(),
    )


def from_frame(df: pl.DataFrame) -> torch.Tensor:
    """mu [n_layers, n_heads, head_dim] back from head_means rows of one (model, relation, bos)."""
    df = df.sort("layer", "head")
    n_l, n_h = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    return torch.tensor(np.array(df["mean"].to_list()), dtype=torch.float32).reshape(n_l, n_h, -1)
