"""Ablation evaluation: what removing the discovered heads does, against controls, and what else it breaks.

Main table (ablation.parquet), per evaluated (relation, condition, split) and variant:
  original      all heads, with context          ablated   the selected heads zeroed, with context
  random_heads  the same number of heads, drawn at random (seeded; never the selected set), with
                context; means over the draws, plus the 95th percentile of the per-draw delta
  no_context    all heads, without context
The mask is evaluated on its own relation and on every other measured relation (transfer).
KL(variant || original-with-context) and KL(variant || intact-without-context) use the full
next-token distributions at the last real token.

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
from entrainment.models import Loaded
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
    (unless the selected set is every head, or empty)."""
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


def _summary(s: Scored, n_removed: int, kl_orig: np.ndarray, kl_noctx: np.ndarray) -> dict:
    delta = s.gold - s.distractor
    return {"n": len(delta), "n_heads_removed": n_removed, "ell_gold": float(s.gold.mean()),
            "ell_distractor": float(s.distractor.mean()), "delta": float(delta.mean()),
            "delta_p95": float(delta.mean()), "distractor_rank": float(s.rank.mean()),
            "acc": float((delta > 0).mean()), "kl_to_original": float(kl_orig.mean()),
            "kl_to_no_context": float(kl_noctx.mean())}


def evaluate_mask(loaded: Loaded, items: pl.DataFrame, selected: HeadSet, mask_relation: str, mask_seed: int,
                  draws: int, seed: int, batch_size: int = 32) -> pl.DataFrame:
    """ablation.parquet rows for one mask over the given prompt rows (any relations/conditions/splits)."""
    info = loaded.info
    tk = Tokens(loaded.tokenizer)
    rows = items.to_dicts()
    gold = [tk.answer(r["text_base"], r["gold"])[0] for r in rows]
    dist = [tk.answer(r["text_base"], r["distractor"])[0] for r in rows]
    ctx = [tk.prompt(r["text_ctx"]) for r in rows]
    base = [tk.prompt(r["text_base"]) for r in rows]
    original = run_pass(loaded, ctx, gold, dist, None, batch_size, keep_dist=True)
    no_context = run_pass(loaded, base, gold, dist, None, batch_size, keep_dist=True)
    ablated = run_pass(loaded, ctx, gold, dist, selected.mask(info.n_layers, info.n_heads), batch_size, keep_dist=True)
    randoms = []
    for hs in random_head_sets(selected, info.n_layers, info.n_heads, draws, seed):
        r = run_pass(loaded, ctx, gold, dist, hs.mask(info.n_layers, info.n_heads), batch_size, keep_dist=True)
        randoms.append((r, kl(r.dist, original.dist), kl(r.dist, no_context.dist)))
        r.dist = None  # keep memory bounded: only the KLs are needed
    groups = items.select("relation", "condition", "split").with_row_index("i").group_by(
        "relation", "condition", "split", maintain_order=True).agg(pl.col("i"))
    out = []
    for g in groups.iter_rows(named=True):
        idx = np.array(g["i"])
        sub = lambda s: Scored(s.gold[idx], s.distractor[idx], s.rank[idx], s.gold_rank[idx], None)  # noqa: E731
        pick = lambda lst: [lst[i] for i in idx]  # noqa: E731
        key = {"model": info.spec, "mask_relation": mask_relation, "seed": mask_seed, "relation": g["relation"],
               "condition": g["condition"], "split": g["split"]}
        o_d, n_d, a_d = pick(original.dist), pick(no_context.dist), pick(ablated.dist)
        out.append(key | {"variant": "original"} | _summary(sub(original), 0, kl(o_d, o_d), kl(o_d, n_d)))
        out.append(key | {"variant": "ablated"} | _summary(sub(ablated), len(selected.heads), kl(a_d, o_d), kl(a_d, n_d)))
        per_draw = [_summary(sub(r), len(selected.heads), ko[idx], kn[idx]) for r, ko, kn in randoms]
        mean = {k: float(np.mean([d[k] for d in per_draw])) for k in per_draw[0]}
        mean.update(n=per_draw[0]["n"], n_heads_removed=len(selected.heads),
                    delta_p95=float(np.percentile([d["delta"] for d in per_draw], 95)))
        out.append(key | {"variant": "random_heads"} | mean)
        out.append(key | {"variant": "no_context"} | _summary(sub(no_context), 0, kl(n_d, o_d), kl(n_d, n_d)))
    return pl.DataFrame(out, schema=ABLATION.polars_schema())


def pooled_variants(abl: pl.DataFrame) -> pl.DataFrame:
    """Per (model, mask_relation, seed, variant) on the mask's own relation, pooled over conditions (n-weighted)."""
    own = abl.filter(pl.col("relation") == pl.col("mask_relation"))
    w = lambda c: ((pl.col(c) * pl.col("n")).sum() / pl.col("n").sum()).alias(c)  # noqa: E731
    return own.group_by("model", "mask_relation", "seed", "variant").agg(
        w("ell_gold"), w("ell_distractor"), w("delta"), w("delta_p95"), w("distractor_rank"), w("acc"),
        w("kl_to_original"), w("kl_to_no_context"), pl.col("n").sum(), pl.col("n_heads_removed").first())


def summary_lines(abl: pl.DataFrame) -> list[str]:
    """The paper's main table per mask on its own relation (pooled over conditions): delta and rank."""
    pooled = pooled_variants(abl)
    lines = []
    for (mrel, seed), g in sorted(pooled.group_by("mask_relation", "seed"), key=lambda kv: kv[0]):
        v = {r["variant"]: r for r in g.iter_rows(named=True)}
        lines.append(f"{mrel} (seed {seed}, {v['ablated']['n_heads_removed']} heads, test split): delta "
                     f"original {v['original']['delta']:.2f} | ablated {v['ablated']['delta']:.2f} | "
                     f"random heads {v['random_heads']['delta']:.2f} (p95 {v['random_heads']['delta_p95']:.2f}) | "
                     f"no context {v['no_context']['delta']:.2f}; distractor rank "
                     f"{v['original']['distractor_rank']:.0f} -> {v['ablated']['distractor_rank']:.0f} "
                     f"(random {v['random_heads']['distractor_rank']:.0f})")
    return lines


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
                 random_sets: list[HeadSet], mask_relation: str, mask_seed: int, batch_size: int = 32) -> pl.DataFrame:
    """side_effects.parquet rows: each task scored intact, ablated and with each random head set."""
    info = loaded.info
    tk = Tokens(loaded.tokenizer)
    variants = {"original": None, "ablated": selected.mask(info.n_layers, info.n_heads)}
    out = []
    for task_name, pairs in tasks.items():
        prompts = [tk.prompt(p) for p, _ in pairs]
        gold = [tk.answer(p, a)[0] for p, a in pairs]
        res = {v: accuracy(run_pass(loaded, prompts, gold, gold, m, batch_size)) for v, m in variants.items()}
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
