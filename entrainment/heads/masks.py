"""Head sets: named lists of heads to remove, parsed from the command line or read from heads.parquet.

``learned_masks`` is the one reader of learned masks: every stage that needs them (measure with a heads.parquet,
scan's agreement, ablate, the stable set) gets them from here, as ``LearnedMask`` records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from entrainment.config import Config
from entrainment.errors import InputError


@dataclass(frozen=True)
class HeadSet:
    """A named set of heads to remove: ``id`` goes into the `ablation` column and identifies the heads
    (a mask's id ends in a hash of its sorted head list); ``label`` is the readable name."""

    id: str
    heads: tuple[tuple[int, int], ...]
    label: str = ""

    def mask(self, n_layers: int, n_heads: int) -> torch.Tensor:
        """A keep-mask [n_layers, n_heads]: 0 for removed heads, 1 elsewhere."""
        m = torch.ones(n_layers, n_heads)
        for layer, head in self.heads:
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise InputError(
                    "--ablation-heads",
                    "head",
                    f"{layer}.{head}",
                    f"outside the model's {n_layers} layers x {n_heads} heads",
                )
            m[layer, head] = 0.0
        return m


def parse_head_list(text: str) -> HeadSet:
    """``"3.4,10.7"`` -> HeadSet("heads-3.4,10.7", ((3, 4), (10, 7)))."""
    heads = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            layer, head = (int(x) for x in part.split("."))
        except ValueError:
            raise InputError("--ablation-heads", "head", part, "expected layer.head, e.g. 3.4") from None
        if layer < 0 or head < 0:
            raise InputError("--ablation-heads", "head", part, "layer and head indices start at 0")
        heads.append((layer, head))
    if not heads:
        raise InputError("--ablation-heads", "heads", text, "no heads given")
    heads = sorted(set(heads))
    name = "heads-" + ",".join(f"{a}.{b}" for a, b in heads)
    return HeadSet(name, tuple(heads), name)


def mask_label(relation: str, seed: int) -> str:
    """The readable name of a learned mask (the `ablation_label` column); seed -1 is the stable set."""
    return f"stable:{relation}" if seed == STABLE_SEED else f"mask:{relation}:seed{seed}"


SHARED = "shared"  # the mask_relation of a mask trained on the union of the discovery relations' items
STABLE_SEED = -1  # heads.parquet's `seed` of the stable set (stability selection over all searches)


def heads_digest(heads: tuple[tuple[int, int], ...]) -> str:
    """8 hex digits identifying a sorted head list."""
    return hashlib.sha1(",".join(f"{a}.{b}" for a, b in sorted(heads)).encode()).hexdigest()[:8]


def mask_set(relation: str, seed: int, heads: tuple[tuple[int, int], ...]) -> HeadSet:
    """A learned mask as a HeadSet whose id identifies its heads: ``<label>:<sha1 of heads>``."""
    heads = tuple(sorted(heads))
    return HeadSet(f"{mask_label(relation, seed)}:{heads_digest(heads)}", heads, mask_label(relation, seed))


@dataclass(frozen=True)
class LearnedMask:
    """One mask of heads.parquet: its relation, seed (-1 = the stable set), keep-logits [L, H] and head set."""

    model: str
    relation: str
    seed: int
    logits: np.ndarray
    head_set: HeadSet
    fold: int | None = None  # the cross-fitted verdict's per-fold masks: the fold it never saw (else None)


def crossfit_label(relation: str, fold: int | None = None) -> str:
    """The cross-fitted verdict's label (`crossfit:<relation>`), or one fold's mask (`crossfit:<relation>:fold<f>`)."""
    return f"crossfit:{relation}" if fold is None else f"crossfit:{relation}:fold{fold}"


def learned_masks(df, model: str | None = None, where: object = "heads.parquet") -> list[LearnedMask]:
    """Every mask in a heads table (optionally of one model), sorted by (model, relation, seed).

    Args:
        df: heads.parquet rows (polars frame).
        model: keep only this model's masks; a model with none is a one-line InputError naming `where`.
        where: the file named in that error.
    Returns:
        One LearnedMask per (model, relation, seed[, fold]): the per-fold masks of the cross-fitted verdict (rows
        with a `fold`) are masks of their own, labelled `crossfit:<relation>:fold<f>`.
    """
    import polars as pl

    if "fold" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.Int64).alias("fold"))
    if model is not None:
        if model not in set(df["model"]):
            found = ", ".join(sorted(set(df["model"]))) or "none"
            raise InputError(where, "model", model, f"no mask for this model in the file (masks for: {found})")
        df = df.filter(pl.col("model") == model)
    out = []
    groups = df.group_by("model", "relation", "seed", "fold")
    order = lambda kv: (kv[0][:3], -1 if kv[0][3] is None else kv[0][3])  # noqa: E731  (non-fold masks first)
    for (m, relation, seed, fold), g in sorted(groups, key=order):
        n_l, n_h = int(g["layer"].max()) + 1, int(g["head"].max()) + 1
        logits = np.zeros((n_l, n_h))
        logits[g["layer"].to_numpy(), g["head"].to_numpy()] = g["mask_logit"].to_numpy()
        removed = g.filter(pl.col("removed")).sort("layer", "head")
        heads = tuple(zip(removed["layer"].to_list(), removed["head"].to_list()))
        if fold is None:
            hs = mask_set(relation, int(seed), heads)
        else:
            label = crossfit_label(relation, int(fold))
            hs = HeadSet(f"{label}:{heads_digest(heads)}", tuple(sorted(heads)), label)
        out.append(LearnedMask(m, relation, int(seed), logits, hs, None if fold is None else int(fold)))
    return out


def head_sets_from_parquet(path: Path, model: str | None = None) -> list[HeadSet]:
    """One HeadSet per (relation, seed) mask in a heads.parquet (optionally for one model)."""
    from entrainment.store.schema import HEADS
    from entrainment.store.tables import read_parquet

    out = [m.head_set for m in learned_masks(read_parquet(path, HEADS), model, path)]
    if not out:
        raise InputError(path, "heads", 0, "no masks in this heads.parquet")
    return out


def parse_ablation(text: str | None, model: str | None = None) -> list[HeadSet]:
    """--ablation-heads: a heads.parquet path or a layer.head list; None -> []."""
    if not text:
        return []
    if text.endswith(".parquet") or Path(text).is_file():
        return head_sets_from_parquet(Path(text), model)
    return [parse_head_list(text)]


def source_relations(cfg: Config, relation: str) -> str | tuple[str, ...]:
    """The relation(s) whose items train a mask: itself, or every discovery relation for the shared mask."""
    return cfg.discover_relations if relation == SHARED else relation
