"""The ablate stage as library functions: evaluate each distinct learned head set, and label its rows per mask.

``evaluate_relation`` -> ablation and null_draws rows of one head set on one relation's test split (the search
method everywhere, every compared method on the mask's own relation); ``side_effect_rows`` -> side_effects rows;
``tables`` labels the rows of every mask (masks with the same heads share one evaluation) and finishes the tables.
The Prefect tasks (tasks/ablate.py) and the Python API call the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl

from entrainment.ablation import evaluate, side_effects
from entrainment.ablation.summaries import with_holm
from entrainment.config import Config
from entrainment.data import relations
from entrainment.heads.masks import SHARED, HeadSet, LearnedMask, heads_digest, source_relations
from entrainment.heads.random_heads import NullPlan, random_sets
from entrainment.model import loading
from entrainment.model.loading import Loaded
from entrainment.model.tokens import Tokens
from entrainment.statistics import verdict
from entrainment.store.schema import NULL_DRAWS

PLACEHOLDER = {"seed": -2, "ablation_label": ""}  # rows of a head set before `tables` labels them per mask


def head_set(mask_relation: str, heads: tuple[tuple[int, int], ...]) -> HeadSet:
    """The evaluated head set: identified by its relation and heads only (not by which mask found it)."""
    return HeadSet(f"heads:{mask_relation}:{heads_digest(heads)}", tuple(sorted(heads)), "")


def own(cfg: Config, mask_relation: str, relation: str) -> bool:
    """Whether `relation` is the mask's own (for the shared mask: any discovery relation)."""
    return relation == mask_relation or (mask_relation == SHARED and relation in cfg.discover_relations)


def seen_templates(prompts: pl.DataFrame, cfg: Config, mask_relation: str) -> frozenset[str]:
    """Query templates of the items the mask's search trained and selected on (train and dev)."""
    src = source_relations(cfg, mask_relation)
    rows = prompts.filter(
        pl.col("relation").is_in([src] if isinstance(src, str) else list(src))
        & pl.col("split").is_in(["train", "dev"])
        & pl.col("condition").is_in(list(cfg.train_conditions))
    )
    return frozenset(t for t in rows["query_template"].to_list() if t is not None)


def evaluate_relation(
    loaded: Loaded,
    prompts: pl.DataFrame,
    mask_relation: str,
    heads_sets: list[tuple],
    relation: str,
    cfg: Config,
    mean=None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    """(ablation rows, null_draws rows) of each head set on one relation's test split, unlabelled (PLACEHOLDER
    seed); the intact passes run once for all of them.

    Args:
        loaded: the model.
        prompts: prompts.parquet rows (every relation: the seen templates come from the mask's own relation).
        mask_relation: the relation the head sets were learned on.
        heads_sets: the head sets (each a tuple of (layer, head)).
        relation: the evaluated relation.
        cfg: methods, random draws, null, seed, batch size, bos.
        mean: the mask relation's reference means [L, H, D] (mean, resample).
        progress: called with (what is running, rows scored, rows in all) as the passes and the null run.
    Returns:
        One (ablation rows, null_draws rows, per-item rows for subject_gains) per head set, in order; the per-item
        rows are the training conditions' items on the mask's own relation (empty elsewhere).
    """
    items = prompts.filter((pl.col("relation") == relation) & (pl.col("split") == "test"))
    is_own = own(cfg, mask_relation, relation)
    methods = cfg.methods() if is_own or cfg.compare_everywhere else (cfg.ablation_method,)
    null = (
        NullPlan(
            cfg.null_draws,
            cfg.null_items,
            cfg.train_conditions,
            loading.search_bf16(cfg.search_dtype, loaded.info.device),
        )
        if is_own
        else None
    )
    plan = evaluate.Plan(
        methods,
        mean,
        cfg.random_draws,
        cfg.seed,
        null,
        seen_templates(prompts, cfg, mask_relation) if is_own else None,
        cfg.compare_everywhere,
        cfg.batch_size,
        subject_conditions=cfg.train_conditions if relation == mask_relation else (),
        progress=progress,
    )
    done = evaluate.evaluate_masks(
        loaded,
        items,
        [head_set(mask_relation, h) for h in heads_sets],
        {"mask_relation": mask_relation} | PLACEHOLDER,
        plan,
        Tokens(loaded.tokenizer, cfg.bos),
    )
    return [
        (df, pl.DataFrame(draws, schema=NULL_DRAWS.polars_schema()), item_frame(items_)) for df, draws, items_ in done
    ]


ITEM_SCHEMA = {
    "model": pl.String,
    "mask_relation": pl.String,
    "seed": pl.Int64,
    "ablation_label": pl.String,
    "relation": pl.String,
    "condition": pl.String,
    "split": pl.String,
    "templates": pl.String,
    "ablation_method": pl.String,
    "prompt_id": pl.String,
    "subject": pl.String,
    "delta_original": pl.Float64,
    "delta_ablated": pl.Float64,
    "delta_noctx": pl.Float64,
    "delta_noctx_ablated": pl.Float64,
}


def item_frame(rows: list[dict]) -> pl.DataFrame:
    """The per-item rows of evaluate.subject_items as a frame (an internal shard, not a table)."""
    return pl.DataFrame([{k: r.get(k) for k in ITEM_SCHEMA} for r in rows], schema=ITEM_SCHEMA)


def side_tasks(cfg: Config, mask_relation: str, icl_dir: Path) -> tuple[dict[str, list[tuple[str, str]]], set[str]]:
    """Factual recall on the other eligible relations in --data-dir (relations.side_relations: side_relations of them,
    side_items subjects each), plus the ICL tasks in data/icl (side_icl_items of each; 0 = all)."""
    out = {
        rel.name: side_effects.recall_prompts(rel, cfg.side_items, cfg.seed)
        for rel in relations.side_relations(cfg.data_dir, mask_relation, cfg.side_relations)
    }
    icl = {
        name: side_effects.icl_prompts(items, cfg.seed)[: cfg.side_icl_items or None]
        for name, items in side_effects.load_icl(icl_dir).items()
    }
    return out | {f"icl:{k}": v for k, v in icl.items()}, {f"icl:{k}" for k in icl}


def side_effect_rows(
    loaded: Loaded, mask_relation: str, heads_sets: list[tuple], cfg: Config, icl_dir: Path, mean=None
) -> list[pl.DataFrame]:
    """side_effects rows of each head set (search method; every method with compare_everywhere), unlabelled; the
    intact passes run once, and head sets of one size share their random control."""
    sets = [head_set(mask_relation, h) for h in heads_sets]
    tasks_, icl = side_tasks(cfg, mask_relation, icl_dir)
    n = cfg.side_random_draws
    rand = {
        k: random_sets(
            k,
            loaded.info.n_layers,
            loaded.info.n_heads,
            n,
            cfg.seed,
            frozenset(tuple(s.heads) for s in sets if len(s.heads) == k),
        )
        for k in {len(s.heads) for s in sets}
    }
    methods = cfg.methods() if cfg.compare_everywhere else (cfg.ablation_method,)
    tk = Tokens(loaded.tokenizer, cfg.bos)
    per_method = [
        side_effects.side_effects(
            loaded, tasks_, icl, sets, rand, mask_relation, PLACEHOLDER["seed"], cfg.batch_size, tk, m, mean, cfg.seed
        )
        for m in methods
    ]
    return [pl.concat([frames[i] for frames in per_method]) for i in range(len(sets))]


@dataclass(frozen=True)
class Plan:
    """The ablate stage's fan-out, written once for the Prefect flow and the Python API.

    Masks with the same heads share one evaluation: ``evals`` holds one job per (mask relation, its distinct head
    sets, evaluated relation), ``sides`` one per (mask relation, its distinct head sets), ``fits`` one cross-fitted
    verdict per relation with per-fold masks; ``labelled`` maps each mask back to the job whose rows are its own.
    """

    masks: tuple[LearnedMask, ...]
    relations: tuple[str, ...]
    sets: dict[str, tuple[tuple, ...]]  # mask relation -> its distinct head sets, in first-seen order
    fits: tuple[tuple[str, tuple], ...]  # (relation, ((fold, heads), ...)) per relation with per-fold masks

    @property
    def evals(self) -> list[tuple[str, tuple, str]]:
        """(mask relation, head sets, evaluated relation): one job each."""
        return [(mrel, hs, rel) for mrel, hs in self.sets.items() for rel in self.relations]

    @property
    def sides(self) -> list[tuple[str, tuple]]:
        """(mask relation, head sets): one side-effects job each."""
        return list(self.sets.items())

    def labelled(self) -> tuple[list[tuple[LearnedMask, str, tuple]], list[tuple[LearnedMask, tuple]]]:
        """Each mask with the key of the job holding its rows: [(mask, relation, eval key)] per evaluated relation,
        [(mask, side key)] (keys as in ``evals`` / ``sides``)."""
        ev = [(m, rel, (m.relation, self.sets[m.relation], rel)) for m in self.masks for rel in self.relations]
        return ev, [(m, (m.relation, self.sets[m.relation])) for m in self.masks]


def plan(masks: list[LearnedMask], measured: list[str]) -> Plan:
    """The ablate stage's jobs for one model's masks (heads.parquet rows; per-fold masks go to the cross-fitted
    verdict) on every relation in `measured`.

    Args:
        masks: the model's learned masks, per-fold ones included.
        measured: the relations whose test splits are evaluated (every relation measured).
    Returns:
        The Plan.
    """
    whole = tuple(m for m in masks if m.fold is None)
    sets: dict[str, list[tuple]] = {}
    for m in whole:
        seen = sets.setdefault(m.relation, [])
        if m.head_set.heads not in seen:
            seen.append(m.head_set.heads)
    folds: dict[str, list[tuple]] = {}
    for m in masks:
        if m.fold is not None:
            folds.setdefault(m.relation, []).append((m.fold, m.head_set.heads))
    return Plan(
        whole,
        tuple(sorted(measured)),
        {r: tuple(hs) for r, hs in sets.items()},
        tuple((r, tuple(f)) for r, f in sorted(folds.items())),
    )


def label(df: pl.DataFrame, mask: LearnedMask) -> pl.DataFrame:
    """A head set's rows as one mask's: its seed, and (where the table has one) its label."""
    cols = [pl.lit(mask.seed, pl.Int64).alias("seed")]
    if "ablation_label" in df.columns:
        cols.append(pl.lit(mask.head_set.label).alias("ablation_label"))
    return df.with_columns(cols).select(df.columns)


def tables(
    evals: list[tuple],
    sides: list[tuple[LearnedMask, pl.DataFrame]],
    cfg: Config | None = None,
    crossfit: list[tuple[pl.DataFrame, dict]] | None = None,
) -> dict[str, pl.DataFrame]:
    """ablation, null_draws, side_effects, subject_gains and verdict: every mask's rows from the evaluation of its
    head set, labelled.

    Args:
        evals: (mask, ablation rows, null_draws rows[, per-item rows]) per mask and evaluated relation.
        sides: (mask, side_effects rows) per mask.
        cfg: its train_conditions choose the null behind each verdict row (default: related).
        crossfit: (labelled per-item rows, verdict facts) of each cross-fitted verdict (entrainment.stages.crossfit).
    Returns:
        The five tables.
    """
    abl = with_holm(
        pl.concat([label(e[1], e[0]) for e in evals]).sort(
            "model",
            "mask_relation",
            "seed",
            "ablation_method",
            "relation",
            "condition",
            "split",
            "templates",
            "variant",
        )
    )
    draws = pl.concat([label(e[2], e[0]) for e in evals]).sort(
        "model", "mask_relation", "seed", "ablation_method", "relation", "condition", "split", "draw"
    )
    side = pl.concat([label(s, m) for m, s in sides]).sort(
        "model", "mask_relation", "seed", "ablation_method", "task", "metric"
    )
    conditions = cfg.train_conditions if cfg is not None else ("related",)
    items = [label(e[3], e[0]) for e in evals if len(e) > 3 and len(e[3])]
    items_df = pl.concat(items).with_columns(pl.lit(None, pl.Int64).alias("fold")) if items else pl.DataFrame()
    null_p, n_heads = verdict.null_from_ablation(abl, conditions), verdict.heads_of(abl)
    for rows, facts in crossfit or []:
        items_df = pl.concat([items_df, rows.select(items_df.columns)]) if len(items_df) else rows
        null_p[facts["key"]] = (facts["null_p"], facts["null_draws"])
        n_heads[facts["key"]] = facts["n_heads"]
    sg = verdict.subject_gains(items_df)
    return {
        "ablation": abl,
        "null_draws": draws,
        "side_effects": side,
        "subject_gains": sg,
        "verdict": verdict.verdict_rows(sg, null_p, n_heads),
    }
