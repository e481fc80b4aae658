"""Ablation evaluation: what removing a head set does to the model's answers, against controls.

ablation.parquet, per evaluated (relation, condition, split, templates), ablation method and variant:
  original      all heads, with context           ablated    the head set removed, with context
  random_heads  the same number of heads drawn at random (seeded; never the selected set), with context; means
                over the draws, plus the 95th percentile of the per-draw delta
  no_context    all heads, without context        prompted   all heads, with the prompting baseline's instruction
                                                             between context and query (``text_prompted``)
Each method of ``Plan.methods`` removes the heads its way (``hooks.Ablation``: zero, mean with the mask relation's
reference means, resample with donors drawn among the evaluated items of the same relation and condition); the
intact passes are shared by all methods. The first method is the search method: only it gets the random heads and
the null unless ``Plan.random_all`` asks for them under every method.
KL(variant || original-with-context) and KL(variant || intact-without-context) use the full next-token
distributions at the last real token, computed chunk by chunk (memory does not grow with the number of items).

Evidence on `ablated` (and `random_heads`, `prompted`) rows: the per-item paired gain in Δ and in top-1
correctness vs original (mean, 95% t CI, paired-t p; for 0/1 correctness that is the paired t-test on the 0/1
differences) and, for the mask's own relation, its null conditions and the search method, the random-head null
(``random_heads.null_gains_many``) on a fixed seeded subsample: empirical p and z. ``templates`` = seen / unseen rows
split the mask's own relation by whether its search saw the item's query template.

Every score comes from ``scoring.score`` (the measurement stage's path) with the method's keep-mask.

First-token collisions (gold and distractor share their first token, so Δ ≡ 0 under every variant) are left out of
every evaluation (``without_collisions``), as the mask search and the scan leave them out
(``search.items_with_rows``): the gains, CIs and nulls are over the items where Δ can move; ``n`` counts those.

Longer than 300 lines on purpose: one evaluation (the passes, their per-item arrays and the summaries and evidence
of those arrays) kept in one place, so a reader follows one head set from its passes to its ablation.parquet rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl
import torch

from entrainment.ablation.donors import ablation_for
from entrainment.heads.masks import HeadSet
from entrainment.heads.random_heads import NullPlan, null_gains_many, null_subsample, random_sets
from entrainment.model.hooks import ZERO, Ablation
from entrainment.model.loading import Loaded
from entrainment.model.scoring import kl, run_pass
from entrainment.model.tokens import Tokens
from entrainment.statistics.null import null_summary, paired_gain
from entrainment.store.schema import ABLATION


@dataclass
class PerItem:
    """Per-item results of one variant over all items (KLs computed chunk by chunk, distributions dropped)."""

    gold: np.ndarray
    distractor: np.ndarray
    rank: np.ndarray
    top1: np.ndarray
    kl_orig: np.ndarray
    kl_noctx: np.ndarray

    def sub(self, idx: np.ndarray) -> "PerItem":
        return PerItem(*(getattr(self, f)[idx] for f in FIELDS))

    @property
    def delta(self) -> np.ndarray:
        return self.gold - self.distractor


FIELDS = ("gold", "distractor", "rank", "top1", "kl_orig", "kl_noctx")


@dataclass(frozen=True)
class Pass:
    """One variant's pass: which input (ctx | base | prompted) and which heads removed how (None = intact)."""

    text: str = "ctx"
    keep: torch.Tensor | None = None
    ablation: Ablation = ZERO


def variant_passes(
    loaded: Loaded,
    inputs: dict[str, list],
    gold: list[int],
    dist: list[int],
    passes: dict[str, Pass],
    batch_size: int,
    chunk: int = 64,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, PerItem]:
    """Every pass over every item. `inputs` maps ctx / base / prompted to each item's prompt ids; `original` (intact,
    ctx) and `no_context` (intact, base) are always computed (KL references). Items are processed `chunk` at a time
    and each chunk's next-token distributions are dropped once its KLs are computed; `progress(pass name, rows)` is
    called after each pass over each chunk."""
    names = ["original", "no_context"] + [n for n in passes if n not in ("original", "no_context")]
    parts: dict[str, list[PerItem]] = {name: [] for name in names}
    n = len(inputs["ctx"])
    if n == 0:  # e.g. every item a first-token collision: nothing to score
        return {name: PerItem(*(np.array([]) for _ in FIELDS)) for name in names}
    for lo in range(0, n, chunk):
        sl = slice(lo, lo + chunk)
        g, d = gold[sl], dist[sl]
        ref = {
            "original": run_pass(loaded, inputs["ctx"][sl], g, d, None, batch_size, keep_dist=True),
            "no_context": run_pass(loaded, inputs["base"][sl], g, d, None, batch_size, keep_dist=True),
        }
        for name in names:
            p = passes.get(name, Pass())
            s = ref.get(name)
            if s is None and p.keep is None and p.text in ("ctx", "base"):  # intact: a reference pass already
                s = ref["original" if p.text == "ctx" else "no_context"]
            if s is None:
                s = run_pass(loaded, inputs[p.text][sl], g, d, p.keep, batch_size, keep_dist=True, ablation=p.ablation)
            parts[name].append(
                PerItem(
                    s.gold,
                    s.distractor,
                    s.rank,
                    (s.gold_rank == 1).astype(float),
                    kl(s.dist, ref["original"].dist),
                    kl(s.dist, ref["no_context"].dist),
                )
            )
            if progress is not None:
                progress(name, len(g))
    return {name: PerItem(*(np.concatenate([getattr(x, f) for x in p]) for f in FIELDS)) for name, p in parts.items()}


def _summary(s: PerItem, n_removed: int) -> dict:
    delta = s.delta
    return {
        "n": len(delta),
        "n_heads_removed": n_removed,
        "ell_gold": float(s.gold.mean()),
        "ell_distractor": float(s.distractor.mean()),
        "delta": float(delta.mean()),
        "delta_p95": float(delta.mean()),
        "distractor_rank": float(s.rank.mean()),
        "acc": float((delta > 0).mean()),
        "kl_to_original": float(s.kl_orig.mean()),
        "kl_to_no_context": float(s.kl_noctx.mean()),
        "top1_acc": float(s.top1.mean()),
    }


NO_GAIN = {
    "gain": float("nan"),
    "gain_ci_low": float("nan"),
    "gain_ci_high": float("nan"),
    "gain_p": float("nan"),
    "null_draws": 0,
    "null_items": 0,
    "null_gain": float("nan"),
    "null_mean": float("nan"),
    "null_p": float("nan"),
    "null_z": float("nan"),
    "null_p_holm": float("nan"),
    "top1_gain": float("nan"),
    "top1_gain_ci_low": float("nan"),
    "top1_gain_ci_high": float("nan"),
    "top1_gain_p": float("nan"),
}


def _top1_gain(variant: np.ndarray, original: np.ndarray) -> dict:
    g = paired_gain(variant, original)
    return {
        "top1_gain": g["gain"],
        "top1_gain_ci_low": g["gain_ci_low"],
        "top1_gain_ci_high": g["gain_ci_high"],
        "top1_gain_p": g["gain_p"],
    }


@dataclass(frozen=True)
class Plan:
    """What to evaluate a head set under.

    Attributes:
        methods: ablation methods, the search method first (it gets the random heads and the null).
        mean: the mask relation's reference means (needed by mean and resample).
        random_draws: random head sets averaged in the random_heads rows.
        seed: the sampling seed (random heads, donors).
        null: the random-head null (only for the mask's own relation(s); None elsewhere).
        seen_templates: query templates the mask's search saw (own relation only: seen / unseen rows).
        random_all: random heads (and the null) under every method, not only the first.
        subject_conditions: conditions whose items (templates all) also get per-item rows for subject_gains: Δ with
            and without context, intact and with the heads removed (the no-context arm runs once more, heads removed;
            the mask's own relation only).
    """

    methods: tuple[str, ...] = ("zero",)
    mean: torch.Tensor | None = None
    random_draws: int = 3
    seed: int = 0
    null: NullPlan | None = None
    seen_templates: frozenset[str] | None = None
    random_all: bool = False
    batch_size: int = 32
    chunk: int = 64
    draws_out: list[dict] | None = field(default=None, compare=False)
    subject_conditions: tuple[str, ...] = ()
    # progress(what is running, rows scored so far, rows in all): the passes of every head set / method, then the nulls
    progress: Callable[[str, int, int], None] | None = field(default=None, compare=False)


def _groups(items: pl.DataFrame, seen: frozenset[str] | None) -> list[tuple[dict, np.ndarray]]:
    """(group key, item indices) per (relation, condition, split) and templates all / seen / unseen."""
    df = items.with_row_index("i")
    out = []
    for g in (
        df.group_by("relation", "condition", "split", maintain_order=True)
        .agg(pl.col("i"), pl.col("query_template"))
        .iter_rows(named=True)
    ):
        key = {"relation": g["relation"], "condition": g["condition"], "split": g["split"]}
        idx = np.array(g["i"])
        out.append((key | {"templates": "all"}, idx))
        if seen:
            is_seen = np.array([t in seen for t in g["query_template"]])
            for name, m in (("seen", is_seen), ("unseen", ~is_seen)):
                if m.any() and not m.all():
                    out.append((key | {"templates": name}, idx[m]))
    return out


def without_collisions(items: pl.DataFrame, tk: Tokens) -> pl.DataFrame:
    """The prompt rows whose gold and distractor first tokens differ (the search's rule: a collision has Δ ≡ 0).

    Args:
        items: prompt rows (prompts.parquet schema).
        tk: the tokenizer front end.
    Returns:
        The rows without first-token collisions, in order.
    """
    if items.is_empty():
        return items
    keep = [
        tk.answer(r["text_base"], r["gold"])[0] != tk.answer(r["text_base"], r["distractor"])[0]
        for r in items.select("text_base", "gold", "distractor").iter_rows(named=True)
    ]
    return items.filter(pl.Series(keep, dtype=pl.Boolean))


def evaluate_mask(
    loaded: Loaded, items: pl.DataFrame, selected: HeadSet, mask_key: dict, plan: Plan, tokens: Tokens | None = None
) -> pl.DataFrame:
    """ablation.parquet rows for one head set over the given prompt rows (any relations/conditions/splits).

    Args:
        loaded: the model.
        items: prompt rows (prompts.parquet schema) to evaluate on.
        selected: the head set.
        mask_key: the rows' identity columns: model, mask_relation, seed, ablation_label.
        plan: methods, controls and null (``Plan``).
        tokens: the tokenizer front end (its --bos convention).
    Returns:
        ablation.parquet rows; each null draw's mean gain is appended to plan.draws_out (null_draws rows).
    """
    df, draws, _ = evaluate_masks(loaded, items, [selected], mask_key, plan, tokens)[0]
    if plan.draws_out is not None:
        plan.draws_out.extend(draws)
    return df


def _pass_label(name: str, selected: list[HeadSet]) -> str:
    """A variant pass's readable name: ``0|ablated|mean`` -> ``head set 1/2 (<id>), mean``."""
    parts = name.split("|")
    if len(parts) < 3:
        return f"intact ({name})"
    if parts[1] == "ablated":
        s = int(parts[0])
        return f"head set {s + 1}/{len(selected)} ({selected[s].id}), {parts[2]}"
    return f"random {parts[0][1:]} heads, {parts[2]}"


def _reporter(
    plan: Plan, items: pl.DataFrame, selected: list[HeadSet], sizes: list[int], n_passes: int, n_null: int
) -> Callable[[str, int], None]:
    """report(what, rows) for plan.progress, counting rows scored against every pass and null draw's rows."""
    null_rows = 0
    if plan.null and n_null and plan.progress is not None and len(items):
        methods = len(plan.methods) if plan.random_all else 1
        counts = (
            items.filter(pl.col("condition").is_in(list(plan.null.conditions)))
            .group_by("condition", "split")
            .len()["len"]
            .to_list()
        )
        null_rows = sum(1 for k in sizes if k) * methods * n_null * sum(min(c, plan.null.items) for c in counts)
    total = n_passes * len(items) + null_rows
    done = [0]

    def report(what: str, rows: int) -> None:
        done[0] += rows
        if plan.progress is not None:
            plan.progress(what, min(done[0], total), total)

    return report


def evaluate_masks(
    loaded: Loaded,
    items: pl.DataFrame,
    selected: list[HeadSet],
    mask_key: dict,
    plan: Plan,
    tokens: Tokens | None = None,
) -> list[tuple[pl.DataFrame, list[dict], list[dict]]]:
    """evaluate_mask for several head sets on the same items at once. Shared work: the intact passes (original, no
    context, prompted) run once; head sets of one size share their random head sets (drawn never equal to any of
    them), so their random_heads passes and the null's draws run once per size. Returns (ablation rows, null_draws
    rows, per-item rows of plan.subject_conditions: ``subject_items``) per head set, in order."""
    info = loaded.info
    tk = tokens or Tokens(loaded.tokenizer)
    items = without_collisions(items, tk)
    rows = items.to_dicts()
    gold = [tk.answer(r["text_base"], r["gold"])[0] for r in rows]
    dist = [tk.answer(r["text_base"], r["distractor"])[0] for r in rows]
    inputs = {k: [tk.prompt(r[f"text_{k}"]) for r in rows] for k in ("ctx", "base", "prompted")}
    n_null = plan.null.draws if plan.null else 0
    groups = [(r["relation"], r["condition"]) for r in rows]
    sizes = sorted({len(hs.heads) for hs in selected})
    draws_of = {
        k: random_sets(
            k,
            info.n_layers,
            info.n_heads,
            max(plan.random_draws, n_null),
            plan.seed,
            frozenset(tuple(hs.heads) for hs in selected if len(hs.heads) == k),
        )
        for k in sizes
    }
    # one donor map for every head set: donors depend on the items only
    how = {
        m: ablation_for(m, plan.mean, inputs["ctx"], groups, f"donors|{plan.seed}|{mask_key.get('mask_relation')}")
        for m in plan.methods
    }
    mask = lambda x: x.mask(info.n_layers, info.n_heads) if x.heads else None  # noqa: E731  (no head: intact)
    passes: dict[str, Pass] = {"prompted": Pass("prompted")}
    for j, m in enumerate(plan.methods):
        for s, hs in enumerate(selected):
            passes[f"{s}|ablated|{m}"] = Pass("ctx", mask(hs), how[m])
        if j == 0 or plan.random_all:
            passes |= {
                f"k{k}|random-{i}|{m}": Pass("ctx", mask(r), how[m])
                for k in sizes
                for i, r in enumerate(draws_of[k][: plan.random_draws])
            }
    report = _reporter(plan, items, selected, sizes, len(passes) + 2, n_null)
    per = variant_passes(
        loaded,
        inputs,
        gold,
        dist,
        passes,
        plan.batch_size,
        plan.chunk,
        lambda name, n: report(_pass_label(name, selected), n),
    )
    nulls: dict[tuple, tuple[dict, np.ndarray, int]] = {}  # (size, method, condition, split) -> observed, draws, n

    def null_for(k: int, m: str, gkey: dict, idx: np.ndarray) -> tuple[dict, np.ndarray, int]:
        key = (k, m, gkey["condition"], gkey["split"])
        if key not in nulls:
            sub = null_subsample(idx, plan.null.items, f"null|{plan.seed}|{gkey['condition']}|{gkey['split']}")
            same = [hs for hs in selected if len(hs.heads) == k]
            observed, gains = null_gains_many(
                loaded,
                [inputs["ctx"][i] for i in sub],
                [gold[i] for i in sub],
                [dist[i] for i in sub],
                same,
                draws_of[k][:n_null],
                plan.batch_size,
                plan.null.bf16,
                how[m],
            )
            nulls[key] = ({hs.id: o for hs, o in zip(same, observed)}, gains, len(sub))
            report(f"null: {k} heads, {m}, {gkey['condition']}/{gkey['split']}", n_null * len(sub))
        return nulls[key]

    results = []
    for s, hs in enumerate(selected):
        k = len(hs.heads)
        out, draws_out, item_rows = [], [], []
        for gkey, idx in _groups(items, plan.seen_templates):
            orig = per["original"].sub(idx)
            base = mask_key | {"model": info.spec} | gkey
            for j, m in enumerate(plan.methods):
                key = base | {"ablation_method": m}
                abl = per[f"{s}|ablated|{m}"].sub(idx)
                if gkey["templates"] == "all" and gkey["condition"] in plan.subject_conditions:
                    item_rows += subject_items(
                        loaded,
                        rows,
                        idx,
                        inputs["base"],
                        gold,
                        dist,
                        mask(hs),
                        m,
                        plan,
                        orig.delta,
                        abl.delta,
                        per["no_context"].sub(idx).delta,
                        key | {"model": info.spec},
                    )
                gain = dict(NO_GAIN) | paired_gain(abl.delta, orig.delta) | _top1_gain(abl.top1, orig.top1)
                with_null = (
                    plan.null
                    and n_null
                    and hs.heads
                    and (j == 0 or plan.random_all)
                    and gkey["condition"] in plan.null.conditions
                    and gkey["templates"] == "all"
                )
                if with_null:  # no heads: nothing to test
                    observed, draw_gains, n_sub = null_for(k, m, gkey, idx)
                    gain |= {"null_items": n_sub, "null_gain": observed[hs.id]} | null_summary(
                        observed[hs.id], draw_gains
                    )
                    draws_out.extend(key | {"draw": i, "gain": float(x)} for i, x in enumerate(draw_gains))
                out.append(key | {"variant": "original"} | _summary(orig, 0) | NO_GAIN)
                out.append(key | {"variant": "ablated"} | _summary(abl, k) | gain)
                draws = [
                    per[f"k{k}|random-{i}|{m}"].sub(idx)
                    for i in range(plan.random_draws)
                    if f"k{k}|random-{i}|{m}" in per
                ]
                if draws:
                    per_draw = [_summary(d, k) for d in draws]
                    mean = {c: float(np.mean([d[c] for d in per_draw])) for c in per_draw[0]}
                    mean.update(
                        n=per_draw[0]["n"],
                        n_heads_removed=k,
                        delta_p95=float(np.percentile([d["delta"] for d in per_draw], 95)),
                    )
                    top1 = np.mean([d.top1 for d in draws], axis=0)
                    out.append(key | {"variant": "random_heads"} | mean | NO_GAIN | _top1_gain(top1, orig.top1))
                out.append(key | {"variant": "no_context"} | _summary(per["no_context"].sub(idx), 0) | NO_GAIN)
                pr = per["prompted"].sub(idx)
                out.append(
                    key
                    | {"variant": "prompted"}
                    | _summary(pr, 0)
                    | NO_GAIN
                    | paired_gain(pr.delta, orig.delta)
                    | _top1_gain(pr.top1, orig.top1)
                )
        results.append((pl.DataFrame(out, schema=ABLATION.polars_schema()), draws_out, item_rows))
    return results


def subject_items(
    loaded: Loaded,
    rows: list[dict],
    idx: np.ndarray,
    base_inputs: list,
    gold: list[int],
    dist: list[int],
    keep: torch.Tensor | None,
    method: str,
    plan: Plan,
    d_orig: np.ndarray,
    d_abl: np.ndarray,
    d_noctx: np.ndarray,
    key: dict,
) -> list[dict]:
    """Per-item rows for subject_gains: Δ intact / heads removed, with context (already computed) and without context
    (the no-context prompts scored once more with the heads removed, the same method; resample donors are drawn among
    the no-context prompts of the same relation and condition).

    Args:
        loaded: the model.
        rows: every evaluated prompt row; idx: the group's item indices into it.
        base_inputs: every item's no-context prompt ids; gold, dist: every item's probe tokens.
        keep: the head set's keep-mask (None: no head removed).
        method: the ablation method; plan: its means, seed and batch size.
        d_orig, d_abl, d_noctx: the group's Δ intact with context, heads removed with context, intact without.
        key: identity columns copied onto each row.
    Returns:
        One dict per item: key, prompt_id, subject and the four Δ.
    """
    base = [base_inputs[i] for i in idx]
    how = ablation_for(
        method,
        plan.mean,
        base,
        [(rows[i]["relation"], rows[i]["condition"]) for i in idx],
        f"donors-base|{plan.seed}|{key.get('mask_relation')}",
    )
    if keep is None:
        d_noctx_abl = d_noctx
    else:
        sc = run_pass(loaded, base, [gold[i] for i in idx], [dist[i] for i in idx], keep, plan.batch_size, ablation=how)
        d_noctx_abl = sc.gold - sc.distractor
    return [
        key
        | {
            "prompt_id": rows[i]["prompt_id"],
            "subject": rows[i]["subject"],
            "delta_original": float(a),
            "delta_ablated": float(b),
            "delta_noctx": float(c),
            "delta_noctx_ablated": float(d),
        }
        for i, a, b, c, d in zip(idx, d_orig, d_abl, d_noctx, d_noctx_abl)
    ]
