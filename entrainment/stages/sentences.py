"""Sentence-level entrainment: does a model raise the probability of a whole sentence it has just read?

The stage's one entry function ``run`` (shared by the Prefect task and the Python API) builds the items
(``sentence_items``), scores every (item, target sentence, arm) teacher-forced (``sentence_scoring``) and
summarises them:

- Δ_self = mean_logprob(y | present) − mean_logprob(y | absent) for the item's own sentence (measure ``self``);
- Δ_net = Δ_self − Δ_control, the same difference for a length-matched same-relation sentence that is nowhere in
  the prompt (measure ``net``: what the context does to *its own* sentence beyond what it does to any sentence of
  the kind -- the fix for baselines that move with the model);
- gap = [ℓ(self_cf) − ℓ(gold)]_present − [ℓ(self_cf) − ℓ(gold)]_absent on the self_cf items (measure ``gap``: how
  far a counterfactual statement about the query's own subject, once read, overtakes the true one).

The subject is the unit: per (relation, condition, measure) the mean over query subjects of their items' mean, a
t CI and p over subjects; pooled ``ALL`` rows weight relations equally (a stratified mean, Welch–Satterthwaite
df); Holm within each (model, ablation, measure) family. Heads: the same measures with the stable set of each
discovery relation removed (zero ablation, on that relation's items), against ``sentence_draws`` random head sets
of the same size (``null_mean``, ``null_p``: the share of random sets that lower the measure at least as much).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl

from entrainment.data.lre_prompts import load_facts, load_words
from entrainment.data.relations import Relation, index, load_relations
from entrainment.data.sentence_items import SentenceItem, build_items
from entrainment.heads.masks import STABLE_SEED, HeadSet, learned_masks
from entrainment.heads.random_heads import random_sets
from entrainment.model.sentence_scoring import encode, score
from entrainment.model.tokens import Tokens, context_window
from entrainment.paths import FACTS_FILE, WORDS_FILE
from entrainment.statistics.null import empirical_p
from entrainment.statistics.sentence_stats import item_effects, subject_stats


@dataclass
class Result:
    """What ``run`` returns: the two tables, the log lines and the seconds spent."""

    scores: pl.DataFrame
    stats: pl.DataFrame
    summary: list[str] = field(default_factory=list)
    seconds: float = 0.0


def lre_names(data_dir, names: list[str]) -> list[str]:
    """Those of `names` that are LRE relations in data_dir (own-item labels are not)."""
    known = index(data_dir)
    return [n for n in names if n in known]


def lre_relations(data_dir, names: list[str]) -> dict[str, Relation]:
    """The cleaned LRE relations among `names` that exist in data_dir (own-item labels are simply absent)."""
    found = lre_names(data_dir, names)
    return {r.name: r for r in load_relations(data_dir, found)} if found else {}


def score_items(
    loaded,
    items: list[SentenceItem],
    tokens: Tokens,
    absent: str = "drop",
    batch_size: int = 32,
    keep=None,
    ablation: str = "none",
    progress: Callable[[int], None] | None = None,
) -> pl.DataFrame:
    """sentence_scores rows of every (item, target, arm), identical sequences scored once.

    Args:
        loaded: a loading.Loaded.
        items: from sentence_items.build_items.
        tokens: the model's Tokens front end.
        absent: drop | neutral (sentence_items.SentenceItem.prompt).
        batch_size: sequences per forward pass.
        keep: keep-mask [L, H] (zero ablation) or None.
        ablation: the value of the `ablation` column.
        progress: called with the number of sequences finished.
    Returns:
        The rows (sentence_scores' columns).
    """
    rows, seqs, where = [], [], {}
    for it in items:
        for target, sentence in it.sentences:
            for arm in ("present", "absent"):
                prompt = it.prompt(arm, absent)
                enc = encode(tokens, prompt, sentence)
                tokens.fits(len(enc.ids), prompt + " " + sentence, "sentence", "prompt")
                if enc.ids not in where:
                    where[enc.ids] = len(seqs)
                    seqs.append(enc)
                rows.append(
                    {
                        "model": loaded.info.spec,
                        "relation": it.relation,
                        "condition": it.condition,
                        "item": it.item,
                        "subject": it.subject,
                        "target": target,
                        "arm": arm,
                        "ablation": ablation,
                        "prompt": prompt,
                        "sentence": sentence,
                        "boundary_ok": enc.boundary_ok,
                        "_seq": where[enc.ids],
                    }
                )
    res = score(loaded.model, seqs, loaded.tokenizer.pad_token_id, batch_size, keep=keep, progress=progress)
    for r in rows:
        s = res[r.pop("_seq")]
        r.update(
            n_tokens=s.n_tokens, sum_logprob=s.sum_logprob, mean_logprob=s.mean_logprob, first_logprob=s.first_logprob
        )
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def stable_sets(heads: pl.DataFrame | None, model: str, relations: list[str]) -> list[HeadSet]:
    """The non-empty stable sets (seed -1) of `model` for relations among `relations` (none without heads)."""
    if heads is None or heads.is_empty() or model not in set(heads["model"]):
        return []
    return [
        m.head_set
        for m in learned_masks(heads, model)
        if m.seed == STABLE_SEED and m.relation in relations and m.head_set.heads
    ]


def _means(scores: pl.DataFrame, level: float) -> pl.DataFrame:
    return subject_stats(item_effects(scores), level).select("relation", "condition", "measure", "mean")


def head_stats(
    loaded,
    items: list[SentenceItem],
    tokens: Tokens,
    intact: pl.DataFrame,
    hs: HeadSet,
    draws: int,
    seed: int,
    absent: str,
    batch_size: int,
    level: float,
    progress: Callable[[int], None] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Scores and stats with `hs` removed (zero ablation) on its relation's items, plus the random-set null.

    Args:
        intact: the intact model's sentence_scores rows of these items.
        hs: the head set; draws: random sets of its size; seed: their seed.
    Returns:
        (sentence_scores rows of the ablated model, sentence_stats rows with null_draws, null_mean, null_p).
    """
    info = loaded.info
    run = lambda keep, name: score_items(loaded, items, tokens, absent, batch_size, keep, name, progress)  # noqa: E731
    ablated = run(hs.mask(info.n_layers, info.n_heads), hs.id)
    stats = subject_stats(item_effects(ablated), level)
    base = _means(intact, level).rename({"mean": "base"})
    null = []
    for d in random_sets(len(hs.heads), info.n_layers, info.n_heads, draws, seed, frozenset({tuple(hs.heads)})):
        null.append(
            _means(run(d.mask(info.n_layers, info.n_heads), d.id), level).with_columns(pl.lit(d.id).alias("draw"))
        )
    keys = ("relation", "condition", "measure")
    base_of = {tuple(r[k] for k in keys): r["base"] for r in base.to_dicts()}
    draws_of: dict[tuple, list[float]] = {}
    for r in pl.concat(null).to_dicts() if null else []:
        draws_of.setdefault(tuple(r[k] for k in keys), []).append(r["mean"])
    extra = []
    for r in stats.to_dicts():
        key = tuple(r[k] for k in keys)
        got, b = np.array(draws_of.get(key, []), float), base_of.get(key)
        ok = len(got) > 0 and b is not None
        extra.append(
            {
                "null_draws": len(got),
                "null_mean": float(got.mean()) if ok else None,
                "null_p": empirical_p(b - r["mean"], b - got) if ok else None,
            }
        )
    stats = pl.concat(
        [stats, pl.DataFrame(extra, schema={"null_draws": pl.Int64, "null_mean": pl.Float64, "null_p": pl.Float64})],
        how="horizontal",
    )
    stats = stats.with_columns(pl.lit(len(hs.heads), pl.Int64).alias("heads"))
    return ablated, stats


def _line(r: dict) -> str:
    ci = f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if np.isfinite(r["ci_low"]) else "[no CI]"
    return f"{r['mean']:+.3f} {ci}"


def summary(stats: pl.DataFrame) -> list[str]:
    """One line per (model, ablation, condition): pooled Δ_self and Δ_net (and the gap) with CIs."""
    lines = []
    pooled = stats.filter(pl.col("relation") == "ALL")
    for (model, ablation, cond), g in sorted(pooled.group_by("model", "ablation", "condition"), key=lambda kv: kv[0]):
        by = {r["measure"]: r for r in g.to_dicts()}
        parts = [
            f"{name} {_line(by[m])}" for m, name in (("self", "Δ_self"), ("net", "Δ_net"), ("gap", "gap")) if m in by
        ]
        n = max(r["n_subjects"] for r in by.values())
        extra = ""
        if ablation != "none" and "net" in by and by["net"].get("null_p") is not None:
            extra = (
                f"; vs {by['net']['null_draws']} random sets: null_p(self) {by['self']['null_p']:.3f}, "
                f"null_p(net) {by['net']['null_p']:.3f}"
            )
        lines.append(f"sentences {model} [{ablation}] {cond}: {'; '.join(parts)} (n_subjects {n}){extra}")
    return lines


def run(
    loaded,
    prompts: pl.DataFrame,
    cfg,
    heads: pl.DataFrame | None = None,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> Result:
    """The sentences stage for one model: items, scores (intact, and with each stable set removed), stats.

    Args:
        loaded: a loading.Loaded.
        prompts: prompts.parquet rows.
        cfg: the Config (sentence_items, sentence_absent, sentence_draws, seed, batch_size, bos, confidence,
            discover_relations, data_dir).
        heads: heads.parquet rows (None: no heads part).
        progress: called with the number of sequences finished.
        total: called once with the number of sequences to score (for a progress bar), before scoring.
    Returns:
        Result(scores, stats, summary, seconds).
    """
    t0 = time.perf_counter()
    tokens = Tokens(loaded.tokenizer, cfg.bos, max_len=context_window(loaded.model))
    n_tok = lambda s: len(loaded.tokenizer(" " + s, add_special_tokens=False).input_ids)  # noqa: E731
    rels = sorted(prompts["relation"].unique())
    lre = lre_relations(cfg.data_dir, rels) if cfg.items is None else {}
    items, dropped = build_items(
        prompts,
        lre,
        load_words(WORDS_FILE),
        n_tok,
        cfg.sentence_items,
        cfg.seed,
        tuple(cfg.discover_relations),
        load_facts(FACTS_FILE),
    )
    sets = stable_sets(heads, loaded.info.spec, rels)
    per_item = lambda its: sum(2 * len(i.sentences) for i in its)  # noqa: E731
    if total:
        total(
            per_item(items)
            + sum(
                (1 + cfg.sentence_draws) * per_item([i for i in items if i.relation == h.label.split(":", 1)[1]])
                for h in sets
            )
        )
    if not items:  # e.g. own items with no context conditions: empty tables, said in one line
        from entrainment.store.schema import SENTENCE_SCORES, SENTENCE_STATS

        return Result(
            pl.DataFrame(schema=SENTENCE_SCORES.polars_schema()),
            pl.DataFrame(schema=SENTENCE_STATS.polars_schema()),
            [f"sentences {loaded.info.spec}: no sentence items (no context condition with a control)"],
            time.perf_counter() - t0,
        )
    scores = score_items(loaded, items, tokens, cfg.sentence_absent, cfg.batch_size, progress=progress)
    stats = subject_stats(item_effects(scores), cfg.confidence).with_columns(
        pl.lit(0, pl.Int64).alias("heads"),
        pl.lit(0, pl.Int64).alias("null_draws"),
        pl.lit(None, pl.Float64).alias("null_mean"),
        pl.lit(None, pl.Float64).alias("null_p"),
    )
    all_scores, all_stats = [scores], [stats]
    for hs in sets:
        rel = hs.label.split(":", 1)[1]
        mine = [i for i in items if i.relation == rel]
        ablated, st = head_stats(
            loaded,
            mine,
            tokens,
            scores.filter(pl.col("relation") == rel),
            hs,
            cfg.sentence_draws,
            cfg.seed,
            cfg.sentence_absent,
            cfg.batch_size,
            cfg.confidence,
            progress,
        )
        all_scores.append(ablated)
        all_stats.append(st.select(stats.columns))
    lines = summary(pl.concat(all_stats))
    if dropped:
        lines.append(
            "sentences: items dropped for want of a length-matched control: "
            + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
        )
    if heads is not None and not sets:
        lines.append(f"sentences {loaded.info.spec}: no non-empty stable set in heads.parquet; heads part skipped")
    scores = pl.concat(all_scores, how="vertical_relaxed").sort(
        "model", "relation", "condition", "item", "target", "arm", "ablation"
    )
    stats = pl.concat(all_stats, how="vertical_relaxed").sort("model", "ablation", "measure", "relation", "condition")
    return Result(scores, stats, lines, time.perf_counter() - t0)
