"""The discovery stage as library functions: one mask search as table rows, and the tables made from all searches.

``one_search`` runs a search (a seed on the full training split or on a subject half-sample of it) and returns
its rows (``many_searches`` runs several in one batched pass); ``tables`` turns every search's rows into
heads.parquet (each seed's search on the full training split, plus the stable set), discovery.parquet,
discovery_masks.parquet, head_overlap.parquet and head_stability.parquet. The Prefect tasks (tasks/discover.py) and
the Python API call the same functions.

Longer than 300 lines on purpose: every discovery table (search logs, masks, overlap, stability, the stable set, the
summary) is built from the same search rows, so they stay in one place.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import polars as pl

from entrainment.ablation import donors
from entrainment.config import Config
from entrainment.errors import InputError
from entrainment.heads import disagreement, search, stability
from entrainment.heads.masks import SHARED, STABLE_SEED, mask_label
from entrainment.model import loading, tokens
from entrainment.model.loading import Loaded, model_prefix
from entrainment.model.tokens import Tokens
from entrainment.store.schema import (
    DISCOVERY,
    DISCOVERY_MASKS,
    HEAD_DISAGREEMENT,
    HEAD_OVERLAP,
    HEAD_STABILITY,
    HEADS,
)


def discovery_relations(
    present: Iterable[str], wanted: Iterable[str], every_if_none: bool, where: object, field: str = "relation"
) -> list[str]:
    """The relations a discovery-side stage searches (the CLI's tasks and the Python API share this rule).

    Args:
        present: the relations of the prompt rows.
        wanted: the relations asked for (--discover-relations, or a stage's `only`).
        every_if_none: when none of `wanted` is present, take every present relation instead (the caller decides:
            own items with the default discovery relations, or an API call without a discover_relations option).
        where: the input named in the error (prompts.parquet's path, or "prompts").
        field: the field named in the error.
    Returns:
        The wanted relations that are present, sorted.
    Raises:
        InputError: none of them is present (and no fallback applies).
    """
    present, wanted = sorted(set(present)), tuple(wanted)
    rels = [r for r in present if r in wanted]
    if not rels and every_if_none:
        rels = present
    if not rels:
        raise InputError(
            where,
            field,
            ", ".join(wanted),
            f"not in {Path(str(where)).name} (it holds: {', '.join(present) or 'no relation'})",
        )
    return rels


def search_jobs(cfg: Config, relations: list[str], only: bool = False) -> list[tuple[str, int, int]]:
    """Every mask search of the discover stage: (mask relation, seed, resample) for each relation, plus the shared
    mask (``SHARED``, trained on the union of the discovery relations) with --shared-mask and several discovery
    relations, unless the stage was restricted to some relations (`only`).

    Args:
        cfg: the run's Config (seeds, search_resamples, shared_mask, discover_relations).
        relations: the relations searched (``discovery_relations``).
        only: the stage runs for a subset of relations only (no shared mask then).
    Returns:
        The jobs, relation-major, in the order the tables list them.
    """
    rels = list(relations)
    if cfg.shared_mask and len(cfg.discover_relations) > 1 and not only:
        rels.append(SHARED)
    return [(rel, seed, r) for rel in rels for seed in cfg.seeds for r in range(cfg.search_resamples)]


def search_passes(cfg: Config, jobs: list[tuple[str, int, int]], device: str) -> list[tuple[str, tuple]]:
    """The search jobs cut into batched passes (``many_searches``): consecutive jobs of one relation, at most
    ``searches_per_pass`` per pass (0 = auto: 8 on a GPU, 1 on a CPU, where one at a time is faster).

    Args:
        cfg: the run's Config (searches_per_pass).
        jobs: (mask relation, seed, resample) of every search (``search_jobs``).
        device: the device the searches run on ("cpu", "cuda", ...).
    Returns:
        (mask relation, ((seed, resample), ...)) per pass, in job order.
    """
    n = cfg.searches_per_pass or (1 if device == "cpu" else 8)
    passes: list[tuple[str, tuple]] = []
    for rel, group in itertools.groupby(jobs, key=lambda j: j[0]):
        pairs = [(seed, r) for _, seed, r in group]
        passes += [(rel, tuple(pairs[i : i + n])) for i in range(0, len(pairs), n)]
    return passes


def fold_jobs(cfg: Config, relations: list[str]) -> list[tuple[str, int]]:
    """The cross-fitted verdict's searches (entrainment.stages.crossfit): (relation, fold) for each searched
    relation and each of its ``crossfit_folds`` folds (none for the shared mask; none with crossfit_folds = 0).

    Args:
        cfg: the run's Config.
        relations: the relations searched (``discovery_relations``).
    Returns:
        The jobs, relation-major.
    """
    return [(rel, f) for rel in relations if rel != SHARED for f in range(cfg.crossfit_folds)]


def params(cfg: Config, seed: int, device: str) -> search.SearchParams:
    """The search hyper-parameters of a Config."""
    return search.SearchParams(
        epochs=cfg.epochs,
        batch_size=cfg.discover_batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        lam=cfg.lam,
        tau=cfg.tau,
        weight_decay=cfg.weight_decay,
        init=cfg.init,
        seed=seed,
        bf16=loading.search_bf16(cfg.search_dtype, device),
        max_steps=cfg.max_steps,
        converge_steps=cfg.converge_steps,
        selection_rule=cfg.selection_rule,
    )


@dataclass
class Search:
    """One search's rows: log (with `seconds`), every epoch's mask, the selected mask, and a few facts."""

    log: pl.DataFrame
    masks: pl.DataFrame
    heads: pl.DataFrame
    facts: dict


def search_items(loaded: Loaded, rows: pl.DataFrame, relation: str, cfg: Config, mean=None) -> tuple:
    """The items a search of this relation trains and selects on.

    Args:
        loaded: the model (its tokenizer builds the items).
        rows: prompt rows of the mask's source relation(s), all splits.
        relation: the mask relation (names the ablation's donor draw).
        cfg: the train conditions, seed, ablation method.
        mean: the reference means [L, H, D] (mean and resample methods).
    Returns:
        (training items of the full split, dev items, the ablation)."""
    rows = rows.filter(pl.col("condition").is_in(list(cfg.train_conditions)))
    tk = Tokens(loaded.tokenizer, cfg.bos)
    train_pairs = tokens.items_with_rows(rows.filter(pl.col("split") == "train"), tk)
    dev_pairs = tokens.items_with_rows(rows.filter(pl.col("split") == "dev"), tk)
    pairs = train_pairs + dev_pairs
    ablation = donors.ablation_for(
        cfg.ablation_method,
        mean,
        [it.prompt for it, _ in pairs],
        [(r["relation"], r["condition"]) for _, r in pairs],
        f"donors|{cfg.seed}|{relation}",
    )
    return [it for it, _ in train_pairs], [it for it, _ in dev_pairs], ablation


def one_search(
    loaded: Loaded,
    rows: pl.DataFrame,
    relation: str,
    seed: int,
    resample: int,
    cfg: Config,
    mean=None,
    checkpoint: Path | None = None,
    progress: Callable[[dict], None] | None = None,
) -> Search:
    """Run one mask search on these prompt rows (the mask relation's, all splits) and return its rows.

    Args:
        loaded: the model.
        rows: prompt rows of the mask's source relation(s).
        relation: the mask relation (a relation name, or `shared`).
        seed: the search seed.
        resample: 0 = the full training split; r >= 1 = the r-th half-sample (or bootstrap resample) of it.
        cfg: search options (budget, lr, lambda, tau, method, convergence, selection rule, ...).
        mean: the reference means [L, H, D] (mean and resample methods).
        checkpoint: resume file (saved after every epoch).
        progress: called with each epoch's log row.
    Returns:
        The search's rows (Search).
    """
    return many_searches(
        loaded,
        rows,
        relation,
        [(seed, resample)],
        cfg,
        mean,
        checkpoint,
        (lambda _i, r: progress(r)) if progress else None,
    )[0]


def many_searches(
    loaded: Loaded,
    rows: pl.DataFrame,
    relation: str,
    jobs: list[tuple[int, int]],
    cfg: Config,
    mean=None,
    checkpoint: Path | None = None,
    progress: Callable[[int, dict], None] | None = None,
) -> list[Search]:
    """Several mask searches, (seed, resample) each, batched on the batch axis of one pass
    (search.search_many); each search's rows equal those of one_search up to floating-point order.

    Args:
        loaded: the model.
        rows: prompt rows of the mask's source relation(s).
        relation: the mask relation.
        jobs: the (seed, resample) of every search.
        cfg: search options.
        mean: the reference means (mean and resample methods).
        checkpoint: resume file.
        progress: called with (job index, log row) after each logged epoch.
    Returns:
        One Search per job, in order.
    """
    full, dev, ablation = search_items(loaded, rows, relation, cfg, mean)
    trains = [search.resample_items(full, r, seed, cfg.search_resampling) for seed, r in jobs]
    ps = [params(cfg, seed, loaded.info.device) for seed, _ in jobs]
    found = search.search_many(loaded, trains, dev, ps, checkpoint, progress, ablation)
    return [
        _search_rows(loaded, relation, seed, r, cfg, p, lr, hist, len(t), len(dev))
        for (seed, r), p, (lr, hist), t in zip(jobs, ps, found, trains)
    ]


def _search_rows(
    loaded: Loaded,
    relation: str,
    seed: int,
    resample: int,
    cfg: Config,
    p: search.SearchParams,
    log_rows: list[dict],
    history: list,
    n_train: int,
    n_dev: int,
) -> Search:
    chosen = search.select_epoch(log_rows, rule=p.selection_rule)
    spec = loaded.info.spec
    dtype = "bfloat16" if p.bf16 else "float32"
    key = {"model": spec, "relation": relation, "seed": seed, "resample": resample}
    last = log_rows[-1]["epoch"]
    log_df = pl.DataFrame(
        [
            dict(
                r,
                **key,
                converged=bool(r["converged"]) and r["epoch"] == last,
                selected=r["epoch"] == chosen,
                selection_rule=p.selection_rule,
                search_dtype=dtype,
                ablation_method=cfg.ablation_method,
            )
            for r in log_rows
        ]
    )
    masks = pl.DataFrame(
        [
            key
            | {
                "epoch": e,
                "layer": layer,
                "head": h,
                "mask_logit": float(m[layer, h]),
                "removed": bool(m[layer, h] <= 0),
            }
            for e, m in enumerate(history)
            for layer in range(m.shape[0])
            for h in range(m.shape[1])
        ],
        schema=DISCOVERY_MASKS.polars_schema(),
    )
    sel = (
        masks.filter(pl.col("epoch") == chosen)
        .drop("epoch", "resample")
        .with_columns(
            pl.lit(mask_label(relation, seed)).alias("ablation_label"),
            pl.lit(cfg.ablation_method).alias("ablation_method"),
            pl.lit(None, pl.Int64).alias("fold"),  # the cross-fitted masks set it (entrainment.stages.crossfit)
        )
    )
    r0, rs = log_rows[0], log_rows[chosen]
    facts = {
        "model": spec,
        "relation": relation,
        "seed": seed,
        "resample": resample,
        "epoch": chosen,
        "n_removed": rs["n_removed"],
        "dev_delta_start": r0["dev_delta"],
        "dev_delta": rs["dev_delta"],
        "epochs_run": last,
        "steps_run": log_rows[-1]["step"],
        "converged": bool(log_rows[-1]["converged"]),
        "search_dtype": dtype,
        "n_train": n_train,
        "n_dev": n_dev,
    }
    return Search(log_df, masks, sel.select(HEADS.names), facts)


def _sets(selected: pl.DataFrame) -> dict[tuple, set]:
    """(model, relation, seed, resample) -> the removed heads of that search's selected mask."""
    out: dict[tuple, set] = {}
    for k, g in selected.group_by("model", "relation", "seed", "resample"):
        r = g.filter(pl.col("removed"))
        out[tuple(k)] = set(zip(r["layer"].to_list(), r["head"].to_list()))
    return out


def _logits(selected: pl.DataFrame) -> dict[tuple, np.ndarray]:
    """(model, relation, seed, resample) -> the keep-logits of that search's selected mask, every head in (layer,
    head) order."""
    return {
        tuple(k): g.sort("layer", "head")["mask_logit"].to_numpy()
        for k, g in selected.group_by("model", "relation", "seed", "resample")
    }


def overlap(
    sets: dict[tuple, set],
    shapes: dict[str, tuple[int, int]] | None = None,
    logits: dict[tuple, np.ndarray] | None = None,
) -> pl.DataFrame:
    """Pairwise agreement of every pair of searches per (model, relation): Jaccard, its chance level for random
    sets of the same sizes (shapes: model -> (layers, heads); without it the chance columns are NaN), the
    chance-corrected Jaccard, the overlap coefficient, the Spearman correlation of the keep-logits (logits: search
    -> keep-logits; NaN without), and each measure's mean over the pairs with a bootstrap CI over the searches."""
    logits = logits or {}
    rows = []
    for (model, relation), keys in itertools.groupby(sorted(sets), key=lambda k: k[:2]):
        keys = list(keys)
        n_heads = shapes[model][0] * shapes[model][1] if shapes and model in shapes else 0
        pairs = []
        for a, b in itertools.combinations(keys, 2):
            j = stability.jaccard(sets[a], sets[b])
            chance = stability.expected_jaccard(len(sets[a]), len(sets[b]), n_heads) if n_heads else float("nan")
            pairs.append(
                {
                    "model": model,
                    "relation": relation,
                    "seed_a": a[2],
                    "resample_a": a[3],
                    "seed_b": b[2],
                    "resample_b": b[3],
                    "n_removed_a": len(sets[a]),
                    "n_removed_b": len(sets[b]),
                    "n_shared": len(sets[a] & sets[b]),
                    "jaccard": j,
                    "jaccard_chance": chance,
                    "jaccard_corrected": stability.corrected_jaccard(j, chance),
                    "overlap": stability.overlap_coefficient(sets[a], sets[b]),
                    "spearman_logits": stability.rank_correlation(logits.get(a), logits.get(b)),
                }
            )
        means = _pair_means(pairs, len(keys), f"{model}|{relation}")
        rows += [{**p, **means} for p in pairs]
    return pl.DataFrame(rows, schema=HEAD_OVERLAP.polars_schema())


AGREEMENT_MEASURES = ("jaccard", "jaccard_corrected", "overlap", "spearman_logits")


def _pair_means(pairs: list[dict], n: int, key: str) -> dict[str, float]:
    """Each agreement measure's mean over the pairs with its bootstrap CI over the searches (mean_<measure>,
    mean_<measure>_ci_low, mean_<measure>_ci_high); ``pairs`` in itertools.combinations order of n searches."""
    out: dict[str, float] = {}
    upper = np.triu_indices(n, 1)  # row-major, the order of itertools.combinations(range(n), 2)
    for measure in AGREEMENT_MEASURES:
        m = np.full((n, n), np.nan)
        m[upper] = [p[measure] for p in pairs]
        m.T[upper] = m[upper]
        mean, lo, hi = stability.mean_pairwise(m, key=f"{measure}|{key}")
        out |= {f"mean_{measure}": mean, f"mean_{measure}_ci_low": lo, f"mean_{measure}_ci_high": hi}
    return out


def stability_rows(
    sets: dict[tuple, set],
    shapes: dict[str, tuple[int, int]],
    threshold: float,
    method: str,
    resampling: str = "half",
) -> pl.DataFrame:
    """head_stability rows per (model, relation) over all its searches, with the number of half-sample searches
    among them and the Meinshausen-Buehlmann bound at `threshold` (the keys' last element is the resample;
    resample >= 1 is a half-sample when `resampling` is half)."""
    out = []
    for (model, relation), keys in itertools.groupby(sorted(sets), key=lambda k: k[:2]):
        keys = list(keys)
        n_l, n_h = shapes[model]
        rows = stability.inclusion([sets[k] for k in keys], n_l, n_h, threshold)
        q = sum(len(sets[k]) for k in keys) / len(keys)
        extra = {
            "half_samples": sum(k[3] >= 1 for k in keys) if resampling == "half" else 0,
            "pfer_bound": stability.pfer_bound(q, n_l * n_h, threshold),
        }
        out += [{"model": model, "relation": relation, "ablation_method": method} | r | extra for r in rows]
    return pl.DataFrame(out, schema=HEAD_STABILITY.polars_schema())


def stable_heads(stab: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """heads.parquet rows of the stable sets (seed -1, mask_logit = threshold - frequency)."""
    return stab.select(
        "model",
        "relation",
        pl.lit(STABLE_SEED, pl.Int64).alias("seed"),
        "layer",
        "head",
        (pl.lit(threshold) - pl.col("frequency")).alias("mask_logit"),
        pl.col("stable").alias("removed"),
        pl.format("stable:{}", pl.col("relation")).alias("ablation_label"),
        "ablation_method",
        pl.lit(None, pl.Int64).alias("fold"),
    )


def _selected(searches: list[Search]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(every epoch's masks, the logs, the selected epoch's masks) of the searches, sorted."""
    masks = pl.concat([s.masks for s in searches]).sort(
        "model", "relation", "seed", "resample", "epoch", "layer", "head"
    )
    log_df = pl.concat([s.log for s in searches]).sort("model", "relation", "seed", "resample", "epoch")
    chosen = log_df.filter(pl.col("selected")).select("model", "relation", "seed", "resample", "epoch")
    return masks, log_df, masks.join(chosen, on=["model", "relation", "seed", "resample", "epoch"])


def agreement(searches: list[Search]) -> pl.DataFrame:
    """head_overlap's frame for any set of searches (every pair's agreement and the mean_* columns with CIs), as
    `tables` computes it; for searches outside a stage run (benchmarks/learning_curve.py).

    Args:
        searches: one_search / many_searches results.
    Returns:
        The head_overlap frame.
    """
    masks, _, picked = _selected(searches)
    shapes = {m: (int(g["layer"].max()) + 1, int(g["head"].max()) + 1) for (m,), g in masks.group_by("model")}
    return overlap(_sets(picked), shapes, _logits(picked))


def _reselect(rows: list[dict], rule: str) -> int:
    """The selection rule a search ran under, applied to (redrawn) log rows: head_disagreement's selection part."""
    return search.select_epoch(rows, rule=rule)


def tables(searches: list[Search], cfg: Config) -> dict[str, pl.DataFrame]:
    """Every discovery table from the searches' rows (module docstring); `timings` holds the per-epoch seconds."""
    masks, log_df, picked = _selected(searches)
    sets = _sets(picked)
    shapes = {m: (int(g["layer"].max()) + 1, int(g["head"].max()) + 1) for (m,), g in masks.group_by("model")}
    stab = stability_rows(sets, shapes, cfg.stability_threshold, cfg.ablation_method, cfg.search_resampling).sort(
        "model", "relation", "layer", "head"
    )
    seeds = pl.concat([s.heads for s in searches if s.facts["resample"] == 0])
    heads = pl.concat([seeds, stable_heads(stab, cfg.stability_threshold).select(seeds.columns)]).sort(
        "model", "relation", "seed", "layer", "head"
    )
    timings = log_df.select("model", pl.lit("discover").alias("stage"), "relation", "seed", "epoch", "seconds")
    return {
        "heads": heads,
        "discovery": log_df.drop("seconds").select(DISCOVERY.names),
        "discovery_masks": masks,
        "head_overlap": overlap(sets, shapes, _logits(picked)),
        "head_disagreement": pl.DataFrame(
            disagreement.decompose(
                log_df, masks, {m: a * b for m, (a, b) in shapes.items()}, _reselect, resampling=cfg.search_resampling
            ),
            schema=HEAD_DISAGREEMENT.polars_schema(),
        ),
        "head_stability": stab,
        "timings": timings,
    }


def disagreement_lines(d: pl.DataFrame) -> list[str]:
    """One line per (model, relation): the agreement of each disagreement component (head_disagreement)."""
    multi = d["model"].n_unique() > 1 if len(d) else False
    lines = []
    for (model, relation), g in sorted(d.group_by("model", "relation"), key=lambda kv: kv[0]):
        parts = [
            f"{r['component']} (n {r['n']}) {r['jaccard_corrected']:.2f}"
            + (f" [{r['jaccard_corrected_ci_low']:.2f}, {r['jaccard_corrected_ci_high']:.2f}]" if r["n"] > 1 else "")
            for r in g.sort("component").iter_rows(named=True)
        ]
        lines.append(
            f"{model_prefix(model, multi)}{relation}: chance-corrected agreement by source: " + ", ".join(parts)
        )
    return lines


def summary(facts: list[dict], ov: pl.DataFrame, stab: pl.DataFrame) -> list[str]:
    """The lines `discover` and `run` print: every search, the overlap between searches, the stable set."""
    multi = len({m["model"] for m in facts}) > 1
    lines = [
        f"{model_prefix(m['model'], multi)}{m['relation']} seed {m['seed']}"
        + (f" resample {m['resample']}" if m["resample"] else "")
        + f": epoch {m['epoch']} of {m['epochs_run']} run ({m.get('steps_run', '?')} steps, "
        + ("converged" if m.get("converged") else "not converged")
        + f") removes {m['n_removed']} heads, "
        f"dev delta {m['dev_delta_start']:.2f} -> {m['dev_delta']:.2f} ({m['search_dtype']})"
        + ("  (no head found: try more --epochs, a lower --lambda or a lower --init)" if m["n_removed"] == 0 else "")
        for m in sorted(facts, key=lambda m: (m["model"], m["relation"], m["seed"], m["resample"]))
    ]
    for (model, relation), g in sorted(ov.group_by("model", "relation"), key=lambda kv: kv[0]):
        r = g.row(0, named=True)
        lines.append(
            f"{model_prefix(model, multi)}{relation}: {len(g)} pairs of searches, mean Jaccard "
            f"{r['mean_jaccard']:.2f} [95% CI {r['mean_jaccard_ci_low']:.2f}, {r['mean_jaccard_ci_high']:.2f}], "
            f"chance {g['jaccard_chance'].mean():.2f}, chance-corrected {r['mean_jaccard_corrected']:.2f} "
            f"[{r['mean_jaccard_corrected_ci_low']:.2f}, {r['mean_jaccard_corrected_ci_high']:.2f}], "
            f"overlap {r['mean_overlap']:.2f}, keep-logit Spearman {r['mean_spearman_logits']:.2f} "
            "(Niu et al.: 0.32-0.55 raw)"
        )
    for (model, relation), g in sorted(stab.group_by("model", "relation"), key=lambda kv: kv[0]):
        top = g.filter(pl.col("selected") > 0).sort(["frequency", "layer", "head"], descending=[True, False, False])
        stable = g.filter(pl.col("stable")).sort("layer", "head")
        heads = ", ".join(f"L{r['layer']}.H{r['head']}" for r in stable.iter_rows(named=True)) or "none"
        freq = ", ".join(
            f"L{r['layer']}.H{r['head']} {r['selected']}/{r['searches']}" for r in top.head(5).iter_rows(named=True)
        )
        bound = g["pfer_bound"][0] if "pfer_bound" in g.columns and len(g) else float("inf")
        lines.append(
            f"{model_prefix(model, multi)}{relation}: stable set ({len(stable)} heads): {heads}; "
            f"most often removed: {freq or 'none'}; expected false selections <= "
            + (f"{bound:.2f}" if bound == bound and bound != float("inf") else "n/a (threshold <= 0.5)")
        )
    return lines
