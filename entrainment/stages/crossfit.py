"""Cross-fitting over subjects: every query subject of a discovery relation is tested by a mask that never saw it.

- ``assign_folds``: the query subjects of each discovery relation are shuffled (seeded by (seed, relation)) and dealt
  into K folds; every prompt row of the relation gets its subject's ``fold`` (prompts.parquet).
- ``fold_rows``: the rows one fold's search trains on. The other folds' subjects are split by subject into train and
  dev (the dev share is split[1] / (split[0] + split[1]), at least one subject), the held-out query template stays out
  of train and dev as in the default search (template_holdout), and seeded subsamples cap them at
  ``crossfit_items``; the fold's own subjects become the `test` rows. No subject of the fold is in its train or dev.
- ``fold_search``: one search (``discover.one_search``, the first seed, the full training split) on those rows; its
  mask is `crossfit:<relation>:fold<f>` in heads.parquet, with `fold`.
- ``evaluate``: each fold's mask on the fold's training-condition items (every split; first-token collisions left
  out), search method: Δ intact and heads removed, with and without context, per item (subject_gains rows), and a
  null where each draw removes a random set of each fold's size on that fold and the statistic is the mean subject
  gain over all folds (``crossfit_draws`` draws on up to ``null_items`` items per fold).

The Prefect tasks (tasks/discover.py, tasks/ablate.py) and the Python API call these functions. Longer than 320
lines because the folds, the fold searches and their evaluation are one design, read in one place.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from entrainment.config import Config

if TYPE_CHECKING:  # the dataset stage imports this module: no torch at import time
    from entrainment.model.loading import Loaded


def subject_folds(subjects: list[str], k: int, key: str) -> dict[str, int]:
    """subject -> fold in 0..k-1: a seeded shuffle of the sorted subjects dealt round-robin (fold sizes differ by at
    most one).

    Args:
        subjects: the query subjects (repeats ignored).
        k: folds (>= 2).
        key: the seed string.
    Returns:
        Each subject's fold.
    """
    order = sorted(set(subjects))
    random.Random(key).shuffle(order)
    return {s: i % k for i, s in enumerate(order)}


def assign_folds(prompts: pl.DataFrame, relations: tuple[str, ...], k: int, seed: int) -> pl.DataFrame:
    """prompts with `fold` set on the rows of the discovery `relations` (null elsewhere; all null when k = 0).

    Args:
        prompts: prompt rows.
        relations: the discovery relations.
        k: crossfit_folds (0 = off).
        seed: the sampling seed.
    Returns:
        The same rows with the fold column.
    """
    folds: dict[tuple[str, str], int] = {}
    if k >= 2:
        for rel in sorted(set(prompts["relation"].unique()) & set(relations)):
            subs = prompts.filter(pl.col("relation") == rel)["subject"].drop_nulls().to_list()
            folds.update({(rel, s): f for s, f in subject_folds(subs, k, f"crossfit|{seed}|{rel}").items()})
    col = [folds.get((r, s)) for r, s in zip(prompts["relation"].to_list(), prompts["subject"].to_list())]
    return prompts.with_columns(pl.Series("fold", col, dtype=pl.Int64))


def _sample(rows: pl.DataFrame, n: int, key: str) -> pl.DataFrame:
    if len(rows) <= n:
        return rows
    keep = sorted(random.Random(key).sample(range(len(rows)), n))
    return rows[keep]


def fold_rows(rows: pl.DataFrame, relation: str, fold: int, cfg: Config) -> pl.DataFrame:
    """One fold's search data: the relation's training-condition rows with `split` rewritten (module docstring).

    Args:
        rows: the relation's prompt rows, with `fold`.
        relation: the relation.
        fold: the held-out fold.
        cfg: train_conditions, split, crossfit_items, seed, template_holdout.
    Returns:
        Rows with split train / dev (other folds' subjects) and test (the fold's subjects).
    """
    rows = rows.filter(
        (pl.col("relation") == relation)
        & pl.col("condition").is_in(list(cfg.train_conditions))
        & pl.col("fold").is_not_null()
    )
    other = rows.filter(pl.col("fold") != fold)
    seen = set(rows.filter(pl.col("split").is_in(["train", "dev"]))["query_template"].drop_nulls().to_list())
    if seen and cfg.template_holdout:
        other = other.filter(pl.col("query_template").is_in(sorted(seen)) | pl.col("query_template").is_null())
    subjects = sorted(set(other["subject"].to_list()))
    random.Random(f"crossfit-dev|{cfg.seed}|{relation}|{fold}").shuffle(subjects)
    share = cfg.split[1] / (cfg.split[0] + cfg.split[1])
    n_dev = min(max(1, math.ceil(len(subjects) * share - 1e-9)), max(len(subjects) - 1, 0))
    dev_subjects = set(subjects[:n_dev])
    train = other.filter(~pl.col("subject").is_in(sorted(dev_subjects)))
    dev = other.filter(pl.col("subject").is_in(sorted(dev_subjects)))
    key = f"crossfit-items|{cfg.seed}|{relation}|{fold}"
    return pl.concat(
        [
            _sample(train, cfg.crossfit_items[0], key + "|train").with_columns(pl.lit("train").alias("split")),
            _sample(dev, cfg.crossfit_items[1], key + "|dev").with_columns(pl.lit("dev").alias("split")),
            rows.filter(pl.col("fold") == fold).with_columns(pl.lit("test").alias("split")),
        ]
    )


def fold_gap(prompts: pl.DataFrame, relations: list[str], cfg: Config) -> tuple[str, int, str] | None:
    """The first (relation, fold, split) whose fold search would have no train or dev items (fold_search would refuse
    it mid-run); None when every fold can be searched (cross-fitting off: always None). Cheap: no model, so the CLI
    checks it before any stage starts.

    Args:
        prompts: prompt rows with `fold` (generate.from_config).
        relations: the discovery relations.
        cfg: crossfit_folds and the fold_rows options.
    Returns:
        The gap, or None.
    """
    if cfg.crossfit_folds < 2:
        return None
    for rel in relations:
        rows = prompts.filter(pl.col("relation") == rel)
        for fold in range(cfg.crossfit_folds):
            data = fold_rows(rows, rel, fold, cfg)
            for split in ("train", "dev"):  # a fold without test items is evaluated on none: allowed
                if not data.filter(pl.col("split") == split).height:
                    return rel, fold, split
    return None


def fold_search(
    loaded: Loaded,
    rows: pl.DataFrame,
    relation: str,
    fold: int,
    cfg: Config,
    mean=None,
    checkpoint: Path | None = None,
    progress=None,
):
    """One fold's mask search (the first seed, the full training split of ``fold_rows``), its heads rows labelled
    `crossfit:<relation>:fold<f>` with `fold`.

    Args:
        loaded: the model.
        rows: the relation's prompt rows (with `fold`).
        relation: the discovery relation.
        fold: the fold it leaves out.
        cfg: search options.
        mean: reference means (mean / resample).
        checkpoint: resume file.
        progress: per-epoch callback.
    Returns:
        discover.Search whose heads carry the fold and whose facts carry `fold` and the fold's subjects.
    """
    from entrainment.heads.masks import crossfit_label
    from entrainment.stages import discover

    data = fold_rows(rows, relation, fold, cfg)
    for split in ("train", "dev"):
        if not data.filter(pl.col("split") == split).height:
            from entrainment.errors import InputError

            raise InputError(
                "config",
                "crossfit_folds",
                cfg.crossfit_folds,
                f"fold {fold} of {relation} leaves no {split} items for its search: use fewer folds or 0 (off)",
            )
    s = discover.one_search(loaded, data, relation, cfg.seeds[0], 0, cfg, mean, checkpoint, progress)
    s.heads = s.heads.with_columns(
        pl.lit(crossfit_label(relation, fold)).alias("ablation_label"), pl.lit(fold, pl.Int64).alias("fold")
    )
    s.facts = dict(s.facts, fold=fold, test_subjects=sorted(set(data.filter(pl.col("split") == "test")["subject"])))
    return s


def with_fold_heads(heads: pl.DataFrame, fold_heads: list[pl.DataFrame]) -> pl.DataFrame:
    """heads.parquet rows with the per-fold masks added (sorted; the fold masks after their relation's others)."""
    if not fold_heads:
        return heads
    return pl.concat([heads, *fold_heads], how="vertical_relaxed").sort(
        "model", "relation", "seed", "fold", "layer", "head", nulls_last=False
    )


def summary(facts: list[dict]) -> list[str]:
    """One line per fold search: the mask it selected and what it never saw."""
    return [
        f"{f['relation']} crossfit fold {f['fold']} (searched without {len(f['test_subjects'])} subjects, "
        f"{f['n_train']} train / {f['n_dev']} dev items): removes {f['n_removed']} heads, dev delta "
        f"{f['dev_delta_start']:.2f} -> {f['dev_delta']:.2f}"
        for f in sorted(facts, key=lambda f: (f["model"], f["relation"], f["fold"]))
    ]


def _delta_matrix(
    loaded: Loaded, prompts: list, gold: list[int], dist: list[int], sets: list[tuple], cfg: Config, ablation
) -> np.ndarray:
    """Δ [sets, items] with each head set removed (() = intact), in batched multi-mask passes."""
    from entrainment.model import loading
    from entrainment.model.multimask import head_masks, probe_logits

    info = loaded.info
    logits = probe_logits(
        loaded,
        prompts,
        list(zip(gold, dist)),
        head_masks(sets, info.n_layers, info.n_heads),
        max(cfg.batch_size, 64),
        bf16=loading.search_bf16(cfg.search_dtype, info.device),
        ablation=ablation,
    )
    return logits[..., 0] - logits[..., 1]


def evaluate(
    loaded: Loaded, prompts: pl.DataFrame, relation: str, folds: list[tuple[int, tuple]], cfg: Config, mean=None
) -> tuple[pl.DataFrame, dict]:
    """The cross-fitted verdict's per-item rows and its random-head null (module docstring).

    Args:
        loaded: the model.
        prompts: prompts.parquet rows (with `fold`).
        relation: the discovery relation.
        folds: (fold, its mask's heads) per fold.
        cfg: the search method, train_conditions, crossfit_draws, null_items, seed, batch_size, bos.
        mean: reference means (mean / resample).
    Returns:
        (per-item rows labelled `crossfit:<relation>` with `fold`, facts: key, null_p, null_draws, n_heads).
    """
    from entrainment.ablation.donors import ablation_for
    from entrainment.ablation.evaluate import without_collisions
    from entrainment.heads.masks import crossfit_label
    from entrainment.heads.random_heads import null_subsample, random_sets
    from entrainment.model.tokens import Tokens
    from entrainment.stages.ablate import ITEM_SCHEMA
    from entrainment.statistics.verdict import empirical_null, subject_mean_gain

    info = loaded.info
    tk = Tokens(loaded.tokenizer, cfg.bos)
    method = cfg.ablation_method
    label = crossfit_label(relation)
    rows_out: list[dict] = []
    null_parts: list[tuple[list, np.ndarray, np.ndarray]] = []  # (subjects, observed gains, draw gains [d, n])
    for fold, heads in folds:
        items = without_collisions(
            prompts.filter(
                (pl.col("relation") == relation)
                & (pl.col("fold") == fold)
                & pl.col("condition").is_in(list(cfg.train_conditions))
            ),
            tk,
        )
        if items.is_empty():
            continue
        rows = items.to_dicts()
        gold = [tk.answer(r["text_base"], r["gold"])[0] for r in rows]
        dist = [tk.answer(r["text_base"], r["distractor"])[0] for r in rows]
        ctx = [tk.prompt(r["text_ctx"]) for r in rows]
        base = [tk.prompt(r["text_base"]) for r in rows]
        groups = [(r["relation"], r["condition"]) for r in rows]
        how = ablation_for(method, mean, ctx, groups, f"donors|{cfg.seed}|{relation}")
        how_base = ablation_for(method, mean, base, groups, f"donors-base|{cfg.seed}|{relation}")
        d_ctx = _delta_matrix(loaded, ctx, gold, dist, [(), tuple(heads)], cfg, how)
        d_base = _delta_matrix(loaded, base, gold, dist, [(), tuple(heads)], cfg, how_base)
        key = {
            "model": info.spec,
            "mask_relation": relation,
            "seed": cfg.seeds[0],
            "ablation_label": label,
            "relation": relation,
            "templates": "all",
            "ablation_method": method,
        }
        rows_out += [
            key
            | {
                "condition": r["condition"],
                "split": r["split"],
                "prompt_id": r["prompt_id"],
                "subject": r["subject"],
                "delta_original": float(d_ctx[0, i]),
                "delta_ablated": float(d_ctx[1, i]),
                "delta_noctx": float(d_base[0, i]),
                "delta_noctx_ablated": float(d_base[1, i]),
                "fold": fold,
            }
            for i, r in enumerate(rows)
        ]
        if cfg.crossfit_draws and heads:
            sub = null_subsample(np.arange(len(rows)), cfg.null_items, f"crossfit-null|{cfg.seed}|{relation}|{fold}")
            draws = random_sets(
                len(heads), info.n_layers, info.n_heads, cfg.crossfit_draws, cfg.seed, frozenset({tuple(sorted(heads))})
            )
            d = _delta_matrix(
                loaded,
                [ctx[i] for i in sub],
                [gold[i] for i in sub],
                [dist[i] for i in sub],
                [(), tuple(heads)] + [hs.heads for hs in draws],
                cfg,
                how,
            )
            null_parts.append(([rows[i]["subject"] for i in sub], d[1] - d[0], d[2:] - d[0]))
    schema = ITEM_SCHEMA | {"fold": pl.Int64}
    out = pl.DataFrame(rows_out, schema=schema)
    n_heads = round(float(np.mean([len(h) for _, h in folds]))) if folds else 0
    facts = {"key": (info.spec, relation, label, method), "null_p": float("nan"), "null_draws": 0, "n_heads": n_heads}
    if null_parts and len(null_parts) == len([f for f, h in folds if h]):
        subjects = [s for part in null_parts for s in part[0]]
        observed = subject_mean_gain(subjects, np.concatenate([p[1] for p in null_parts]))
        draws = np.concatenate([p[2] for p in null_parts], axis=1)  # [draws, all subsampled items]
        stats = np.array([subject_mean_gain(subjects, row) for row in draws])
        facts |= {"null_p": empirical_null(observed, stats), "null_draws": len(stats)}
    return out, facts


def write_result(rows: pl.DataFrame, facts: dict, stem: Path) -> list[Path]:
    """The shard files of one cross-fitted verdict: its per-item rows and its facts."""
    from entrainment.store import files, tables

    p1 = Path(tables.write_parquet(rows, stem.with_name(stem.name + ".items.parquet")))
    p2 = stem.with_name(stem.name + ".json")
    files.atomic_write_bytes(p2, json.dumps(facts | {"key": list(facts["key"]), "items": str(p1)}).encode())
    return [p1, p2]


def read_result(path: Path) -> tuple[pl.DataFrame, dict]:
    """(per-item rows, facts) of one cross-fitted verdict from its .json shard."""
    from entrainment.store import tables

    facts = json.loads(Path(path).read_text())
    facts["key"] = tuple(facts["key"])
    return tables.read_parquet(Path(facts["items"])), facts


__all__ = [
    "assign_folds",
    "evaluate",
    "fold_gap",
    "fold_rows",
    "fold_search",
    "read_result",
    "subject_folds",
    "summary",
    "with_fold_heads",
    "write_result",
]
