"""Ablation evaluation: what removing the discovered heads does, against controls, and what else it breaks.

Main table (ablation.parquet), per evaluated (relation, condition, split) and variant:
  original      all heads, with context          ablated   the selected heads zeroed, with context
  random_heads  the same number of heads, drawn at random (seeded; never the selected set), with
                context; means over the draws, plus the 95th percentile of the per-draw delta
  no_context    all heads, without context
The mask is evaluated on its own relation and on every other measured relation (transfer).
KL(variant || original-with-context) and KL(variant || intact-without-context) use the full
next-token distributions at the last real token, computed chunk by chunk (memory does not grow with
the number of items).

Evidence on `ablated` rows (entrainment.null): the per-item paired gain Δ_ablated − Δ_original (mean, 95% CI,
paired-t p) and, for the mask's own relation and training condition(s), a random-head null of `NullPlan.draws`
head sets of the same size scored in batched multi-mask passes (entrainment.multimask) on a fixed seeded
subsample of `NullPlan.items` items, with the observed gain on the same subsample: empirical p and z.

Side effects (side_effects.parquet), with vs without the heads (and with random heads):
  strict_acc     no context: the gold's first token is the top-1 prediction
  credulous_acc  no context: the gold's first token is among the top 5
  icl_acc        few-shot prompt: the expected answer's first token is the top-1 prediction

Every score comes from ``scoring.score`` under ``heads.scaled_heads`` -- the measurement stage's path.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from entrainment.heads import HeadSet, scaled_heads
from entrainment.models import Loaded, short_name
from entrainment.multimask import head_masks, probe_logits
from entrainment.null import null_summary, paired_gain
from entrainment.relations import Relation
from entrainment.schema import ABLATION, SIDE_EFFECTS
from entrainment.scoring import Request, score
from entrainment.tokens import Tokens

ICL_SHOTS = 3
CREDULOUS_K = 5


@dataclass
class Scored:
    """Per-item first-token results of one pass."""

    gold: np.ndarray        # logit of the gold first token
    distractor: np.ndarray  # logit of the distractor first token
    rank: np.ndarray        # rank of the distractor first token (1 = top)
    gold_rank: np.ndarray   # rank of the gold first token
    dist: list[torch.Tensor] | None  # log-probs [V] per item


def run_pass(loaded: Loaded, prompts: list[tuple[int, ...]], gold: list[int], distractor: list[int],
             mask: torch.Tensor | None, batch_size: int, keep_dist: bool = False) -> Scored:
    """Score prompts at their last token with `mask` applied (None = intact)."""
    reqs = [Request(p) for p in prompts]
    with scaled_heads(loaded.model, mask):
        res = score(loaded.model, reqs, [(g, d) for g, d in zip(gold, distractor)], loaded.tokenizer.pad_token_id,
                    batch_size, keep_dist=keep_dist)
    return Scored(np.array([r.probe_logit[0] for r in res]), np.array([r.probe_logit[1] for r in res]),
                  np.array([r.probe_rank[1] for r in res]), np.array([r.probe_rank[0] for r in res]),
                  [r.dist for r in res] if keep_dist else None)


def kl(p_log: list[torch.Tensor], q_log: list[torch.Tensor]) -> np.ndarray:
    """KL(p || q) per item from log-probs."""
    return np.array([float((a.exp() * (a - b)).sum()) for a, b in zip(p_log, q_log)])


def random_head_sets(selected: HeadSet, n_layers: int, n_heads: int, draws: int, seed: int) -> list[HeadSet]:
    """`draws` seeded sets of len(selected) heads drawn uniformly, none equal to the selected set
    (unless the selected set is every head, or empty). The first k draws do not depend on `draws`."""
    k = len(selected.heads)
    every = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    rng = random.Random(f"random-heads|{seed}|{selected.id}")
    out = []
    for i in range(draws):
        for _ in range(1000):
            pick = tuple(sorted(rng.sample(every, k)))
            if pick != selected.heads or k in (0, len(every)):
                break
        out.append(HeadSet(f"random-{i}", pick))
    return out


@dataclass(frozen=True)
class NullPlan:
    """The random-head null: `draws` head sets of the mask's size, each scored on a fixed seeded subsample of
    up to `items` test items of each (own relation, condition in `conditions`) group; `bf16`: the null's passes
    (the draws and the observed mask on the same items) run under bfloat16 autocast."""

    draws: int = 100
    items: int = 64
    conditions: tuple[str, ...] = ("related",)
    bf16: bool = False


@dataclass
class PerItem:
    """Per-item results of one variant over all items (KLs computed chunk by chunk, distributions dropped)."""

    gold: np.ndarray
    distractor: np.ndarray
    rank: np.ndarray
    kl_orig: np.ndarray
    kl_noctx: np.ndarray

    def sub(self, idx: np.ndarray) -> "PerItem":
        return PerItem(self.gold[idx], self.distractor[idx], self.rank[idx], self.kl_orig[idx], self.kl_noctx[idx])

    @property
    def delta(self) -> np.ndarray:
        return self.gold - self.distractor


def _concat(parts: list[PerItem]) -> PerItem:
    return PerItem(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("gold", "distractor", "rank", "kl_orig", "kl_noctx")))


def variant_passes(loaded: Loaded, ctx: list, base: list, gold: list[int], dist: list[int],
                   masks: dict[str, torch.Tensor | None], batch_size: int, chunk: int = 64) -> dict[str, PerItem]:
    """Every variant over every item; `masks` maps variant name -> head mask on the with-context input
    (`no_context` is added: intact, without context). Items are processed `chunk` at a time and each chunk's
    next-token distributions are dropped once its KLs are computed, so memory does not grow with the items."""
    parts: dict[str, list[PerItem]] = {name: [] for name in [*masks, "no_context"]}
    for lo in range(0, len(ctx), chunk):
        sl = slice(lo, lo + chunk)
        g, d = gold[sl], dist[sl]
        orig = run_pass(loaded, ctx[sl], g, d, None, batch_size, keep_dist=True)
        noctx = run_pass(loaded, base[sl], g, d, None, batch_size, keep_dist=True)
        for name, mask in [*masks.items(), ("no_context", "none")]:
            s = noctx if name == "no_context" else orig if mask is None else \
                run_pass(loaded, ctx[sl], g, d, mask, batch_size, keep_dist=True)
            parts[name].append(PerItem(s.gold, s.distractor, s.rank, kl(s.dist, orig.dist), kl(s.dist, noctx.dist)))
    return {name: _concat(p) for name, p in parts.items()}


def _summary(s: PerItem, n_removed: int) -> dict:
    delta = s.delta
    return {"n": len(delta), "n_heads_removed": n_removed, "ell_gold": float(s.gold.mean()),
            "ell_distractor": float(s.distractor.mean()), "delta": float(delta.mean()),
            "delta_p95": float(delta.mean()), "distractor_rank": float(s.rank.mean()),
            "acc": float((delta > 0).mean()), "kl_to_original": float(s.kl_orig.mean()),
            "kl_to_no_context": float(s.kl_noctx.mean())}


NO_GAIN = {"gain": float("nan"), "gain_ci_low": float("nan"), "gain_ci_high": float("nan"), "gain_p": float("nan"),
           "null_draws": 0, "null_items": 0, "null_gain": float("nan"), "null_mean": float("nan"),
           "null_p": float("nan"), "null_z": float("nan"), "null_p_holm": float("nan")}


def null_subsample(idx: np.ndarray, size: int, key: str) -> np.ndarray:
    """A fixed seeded subsample (sorted) of item indices."""
    if len(idx) <= size:
        return np.sort(idx)
    return np.sort(np.array(random.Random(key).sample(list(idx), size)))


def null_gains(loaded: Loaded, prompts: list, gold: list[int], dist: list[int], selected: HeadSet,
               draws: list[HeadSet], batch_size: int, bf16: bool = False) -> tuple[float, np.ndarray]:
    """(observed mean gain, mean gain of each draw) on the same items, all from one batched multi-mask pass."""
    info = loaded.info
    masks = head_masks([(), selected.heads] + [d.heads for d in draws], info.n_layers, info.n_heads)
    logits = probe_logits(loaded, prompts, list(zip(gold, dist)), masks, max(batch_size, 64), bf16=bf16)
    delta = logits[..., 0] - logits[..., 1]          # [masks, items]
    gains = (delta[1:] - delta[0]).mean(axis=1)     # selected, then each draw
    return float(gains[0]), gains[1:]


def evaluate_mask(loaded: Loaded, items: pl.DataFrame, selected: HeadSet, mask_relation: str, mask_seed: int,
                  draws: int, seed: int, batch_size: int = 32, null: NullPlan | None = None,
                  tokens: Tokens | None = None, chunk: int = 64, draws_out: list[dict] | None = None) -> pl.DataFrame:
    """ablation.parquet rows for one mask over the given prompt rows (any relations/conditions/splits).

    `ablated` rows carry the paired gain over their items and, for the mask's own relation and the null's
    conditions, the random-head null (`null`: NullPlan, given by the caller for the mask's own relation(s) only)
    on a fixed subsample of those items. Each draw's mean gain is appended to `draws_out` (null_draws.parquet rows).
    """
    info = loaded.info
    tk = tokens or Tokens(loaded.tokenizer)
    rows = items.to_dicts()
    gold = [tk.answer(r["text_base"], r["gold"])[0] for r in rows]
    dist = [tk.answer(r["text_base"], r["distractor"])[0] for r in rows]
    ctx = [tk.prompt(r["text_ctx"]) for r in rows]
    base = [tk.prompt(r["text_base"]) for r in rows]
    n_null = null.draws if null else 0
    sets = random_head_sets(selected, info.n_layers, info.n_heads, max(draws, n_null), seed)
    # a mask that removes no head leaves the model intact: its passes are the original pass (not recomputed)
    keep = (lambda hs: hs.mask(info.n_layers, info.n_heads)) if selected.heads else (lambda hs: None)
    masks: dict[str, torch.Tensor | None] = {"original": None, "ablated": keep(selected)}
    masks |= {f"random-{i}": keep(hs) for i, hs in enumerate(sets[:draws])}
    per = variant_passes(loaded, ctx, base, gold, dist, masks, batch_size, chunk)
    groups = items.select("relation", "condition", "split").with_row_index("i").group_by(
        "relation", "condition", "split", maintain_order=True).agg(pl.col("i"))
    out = []
    for g in groups.iter_rows(named=True):
        idx = np.array(g["i"])
        key = {"model": info.spec, "mask_relation": mask_relation, "seed": mask_seed, "relation": g["relation"],
               "condition": g["condition"], "split": g["split"]}
        orig, abl = per["original"].sub(idx), per["ablated"].sub(idx)
        gain = dict(NO_GAIN) | paired_gain(abl.delta, orig.delta)
        if null and n_null and selected.heads and g["condition"] in null.conditions:  # no heads: nothing to test
            sub = null_subsample(idx, null.items, f"null|{seed}|{selected.id}|{g['condition']}|{g['split']}")
            observed, draw_gains = null_gains(loaded, [ctx[i] for i in sub], [gold[i] for i in sub],
                                              [dist[i] for i in sub], selected, sets[:n_null], batch_size, null.bf16)
            gain |= {"null_items": len(sub), "null_gain": observed} | null_summary(observed, draw_gains)
            if draws_out is not None:
                draws_out.extend(key | {"draw": i, "gain": float(x)} for i, x in enumerate(draw_gains))
        out.append(key | {"variant": "original"} | _summary(orig, 0) | NO_GAIN)
        out.append(key | {"variant": "ablated"} | _summary(abl, len(selected.heads)) | gain)
        per_draw = [_summary(per[f"random-{i}"].sub(idx), len(selected.heads)) for i in range(draws)]
        if per_draw:
            mean = {k: float(np.mean([d[k] for d in per_draw])) for k in per_draw[0]}
            mean.update(n=per_draw[0]["n"], n_heads_removed=len(selected.heads),
                        delta_p95=float(np.percentile([d["delta"] for d in per_draw], 95)))
            out.append(key | {"variant": "random_heads"} | mean | NO_GAIN)
        out.append(key | {"variant": "no_context"} | _summary(per["no_context"].sub(idx), 0) | NO_GAIN)
    return pl.DataFrame(out, schema=ABLATION.polars_schema())


def pooled_variants(abl: pl.DataFrame) -> pl.DataFrame:
    """Per (model, mask_relation, seed, variant) on the mask's own relation, pooled over conditions (n-weighted)."""
    own = abl.filter(pl.col("relation") == pl.col("mask_relation"))
    w = lambda c: ((pl.col(c) * pl.col("n")).sum() / pl.col("n").sum()).alias(c)  # noqa: E731
    return own.group_by("model", "mask_relation", "seed", "variant").agg(
        w("ell_gold"), w("ell_distractor"), w("delta"), w("delta_p95"), w("distractor_rank"), w("acc"),
        w("kl_to_original"), w("kl_to_no_context"), pl.col("n").sum(), pl.col("n_heads_removed").first())


def model_prefix(model: str, multi: bool) -> str:
    """`model: ` in front of summary lines when several models are in one table (a path shows its last part)."""
    return f"[{short_name(model)}] " if multi else ""


def evidence_lines(abl: pl.DataFrame) -> list[str]:
    """Per mask, on its own relation's test split and each condition with a null: heads removed, n, mean paired
    gain with 95% CI, paired p, and the empirical p against the random-head null (Holm across relations)."""
    rows = abl.filter((pl.col("variant") == "ablated") & (pl.col("null_draws") > 0)).sort(
        "model", "mask_relation", "seed", "relation", "condition")
    multi = abl["model"].n_unique() > 1
    return [f"{model_prefix(r['model'], multi)}{r['mask_relation']}{'' if r['relation'] == r['mask_relation'] else ' on ' + r['relation']} seed {r['seed']} ({r['condition']}, {r['split']}): {r['n_heads_removed']} heads removed, "
            f"n = {r['n']}, gain {r['gain']:+.2f} [95% CI {r['gain_ci_low']:+.2f}, {r['gain_ci_high']:+.2f}], "
            f"paired p = {r['gain_p']:.2g}; vs {r['null_draws']} random {r['n_heads_removed']}-head sets on "
            f"{r['null_items']} items: gain {r['null_gain']:+.2f} vs null mean {r['null_mean']:+.2f}, "
            f"empirical p = {r['null_p']:.3g} (Holm {r['null_p_holm']:.3g}), z = {r['null_z']:.1f}"
            for r in rows.iter_rows(named=True)]


def with_holm(abl: pl.DataFrame) -> pl.DataFrame:
    """Fill null_p_holm: Holm across relations within each (model, seed, condition, split) family of `ablated` rows
    with a null (per-relation masks on their own relation form one family, the shared mask's rows another)."""
    from entrainment.null import holm

    abl = abl.with_row_index("_i")
    fam = abl.filter((pl.col("variant") == "ablated") & (pl.col("null_draws") > 0)).with_columns(
        (pl.col("relation") != pl.col("mask_relation")).alias("_shared"))
    adjusted: dict[int, float] = {}
    for _, g in fam.group_by("model", "seed", "condition", "split", "_shared"):
        adjusted.update(zip(g["_i"].to_list(), holm(g["null_p"].to_list())))
    col = pl.Series("null_p_holm", [adjusted.get(i, float("nan")) for i in abl["_i"].to_list()], dtype=pl.Float64)
    return abl.with_columns(col).drop("_i")


def summary_lines(abl: pl.DataFrame) -> list[str]:
    """The paper's main table per mask on its own relation (pooled over conditions): delta and rank; then the
    evidence lines."""
    pooled = pooled_variants(abl)
    lines = []
    multi = pooled["model"].n_unique() > 1
    for (model, mrel, seed), g in sorted(pooled.group_by("model", "mask_relation", "seed"), key=lambda kv: kv[0]):
        v = {r["variant"]: r for r in g.iter_rows(named=True)}
        lines.append(f"{model_prefix(model, multi)}{mrel} (seed {seed}, {v['ablated']['n_heads_removed']} heads, test split): delta "
                     f"original {v['original']['delta']:.2f} | ablated {v['ablated']['delta']:.2f} | "
                     f"random heads {v['random_heads']['delta']:.2f} (p95 {v['random_heads']['delta_p95']:.2f}) | "
                     f"no context {v['no_context']['delta']:.2f}; distractor rank "
                     f"{v['original']['distractor_rank']:.0f} -> {v['ablated']['distractor_rank']:.0f} "
                     f"(random {v['random_heads']['distractor_rank']:.0f})")
    return lines + evidence_lines(abl)


# ---- side effects -------------------------------------------------------------------------------------

def load_icl(folder: Path) -> dict[str, list[dict]]:
    """ICL task name -> items {input, output} (data/icl/*.json)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}


def icl_prompts(items: list[dict], seed: int, shots: int = ICL_SHOTS) -> list[tuple[str, str]]:
    """(few-shot prompt, expected answer) per item; the shots are other items, seeded."""
    rng = random.Random(f"icl|{seed}")
    out = []
    for i, it in enumerate(items):
        others = [x for j, x in enumerate(items) if j != i]
        demo = "".join(f"{x['input']} -> {x['output']}\n" for x in rng.sample(others, min(shots, len(others))))
        out.append((f"{demo}{it['input']} ->", it["output"]))
    return out


def recall_prompts(rel: Relation, limit: int, seed: int) -> list[tuple[str, str]]:
    """(zero-shot query, gold) for up to `limit` subjects of a relation, seeded."""
    pairs = sorted(rel.pairs)
    pairs = random.Random(f"recall|{seed}|{rel.name}").sample(pairs, min(limit, len(pairs)))
    return [(rel.query_templates[0].format(s), o) for s, o in pairs]


def accuracy(s: Scored) -> dict[str, float]:
    """strict = gold first token is top-1; credulous = gold first token in the top 5."""
    return {"strict_acc": float((s.gold_rank == 1).mean()), "credulous_acc": float((s.gold_rank <= CREDULOUS_K).mean())}


def side_effects(loaded: Loaded, tasks: dict[str, list[tuple[str, str]]], icl: set[str], selected: HeadSet,
                 random_sets: list[HeadSet], mask_relation: str, mask_seed: int, batch_size: int = 32,
                 tokens: Tokens | None = None) -> pl.DataFrame:
    """side_effects.parquet rows: each task scored intact, ablated and with each random head set."""
    info = loaded.info
    tk = tokens or Tokens(loaded.tokenizer)
    out = []
    for task_name, pairs in tasks.items():
        prompts = [tk.prompt(p) for p, _ in pairs]
        gold = [tk.answer(p, a)[0] for p, a in pairs]
        res = {"original": accuracy(run_pass(loaded, prompts, gold, gold, None, batch_size))}
        if not selected.heads:  # nothing removed: every variant is the intact model
            res["ablated"] = res["original"]
            rand = [res["original"] for _ in random_sets]
        else:
            res["ablated"] = accuracy(run_pass(loaded, prompts, gold, gold, selected.mask(info.n_layers, info.n_heads),
                                               batch_size))
            rand = [accuracy(run_pass(loaded, prompts, gold, gold, hs.mask(info.n_layers, info.n_heads), batch_size))
                    for hs in random_sets]
        metrics = ["icl_acc"] if task_name in icl else ["strict_acc", "credulous_acc"]
        for metric in metrics:
            src = "strict_acc" if metric == "icl_acc" else metric
            out.append({"model": info.spec, "mask_relation": mask_relation, "seed": mask_seed, "task": task_name,
                        "metric": metric,
                        "original": res["original"][src], "ablated": res["ablated"][src],
                        "random_heads": float(np.mean([r[src] for r in rand])) if rand else float("nan"),
                        "n": len(pairs)})
    return pl.DataFrame(out, schema=SIDE_EFFECTS.polars_schema())
