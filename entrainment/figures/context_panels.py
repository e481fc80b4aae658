"""Report figures for misleading contexts: does removing the heads make answers right, and where in a multi-passage
context the distractor pulls hardest.

Each function takes tables (polars frames) and returns a PNG data URI, or None when there is nothing to show.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from entrainment.figures.base import COLORS, METHOD_COLORS, plt, png

VARIANTS = [
    ("original", "intact"),
    ("ablated", "heads removed"),
    ("random_heads", "random heads"),
    ("prompted", "prompting baseline"),
    ("no_context", "no context"),
]


def accuracy_plot(abl: pl.DataFrame) -> str | None:
    """Top-1 accuracy of the gold under counterfactual and passages contexts, per mask (search method), with the
    95% CI of the change vs intact."""
    rows = abl.filter(
        (pl.col("relation") == pl.col("mask_relation"))
        & (pl.col("templates") == "all")
        & pl.col("condition").is_in(["counterfactual", "passages"])
    )
    searched = (
        abl.filter(pl.col("variant") == "random_heads")
        .select("model", "mask_relation", "seed", "ablation_method")
        .unique()
    )
    rows = rows.join(searched, on=["model", "mask_relation", "seed", "ablation_method"], how="semi")
    if rows.is_empty():
        return None
    keys = sorted(
        set(zip(rows["model"], rows["mask_relation"], rows["seed"], rows["ablation_method"])),
        key=lambda k: (k[0], k[1], k[2] < 0, k[2]),
    )[:4]
    conds = [c for c in ("counterfactual", "passages") if c in set(rows["condition"])]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.8), squeeze=False, sharey=True)
    for ax, (model, mrel, seed, method) in zip(axes[0], keys):
        g = rows.filter(
            (pl.col("model") == model)
            & (pl.col("mask_relation") == mrel)
            & (pl.col("seed") == seed)
            & (pl.col("ablation_method") == method)
        )
        width = 0.8 / len(VARIANTS)
        for j, (variant, label) in enumerate(VARIANTS):
            v = {r["condition"]: r for r in g.filter(pl.col("variant") == variant).iter_rows(named=True)}
            x = np.arange(len(conds)) + (j - (len(VARIANTS) - 1) / 2) * width
            acc = [v[c]["top1_acc"] if c in v else np.nan for c in conds]
            lo = [
                v[c]["top1_gain"] - v[c]["top1_gain_ci_low"] if c in v and np.isfinite(v[c]["top1_gain"]) else 0
                for c in conds
            ]
            hi = [
                v[c]["top1_gain_ci_high"] - v[c]["top1_gain"] if c in v and np.isfinite(v[c]["top1_gain"]) else 0
                for c in conds
            ]
            ax.bar(x, acc, width, yerr=[lo, hi], capsize=2, color=COLORS[j % len(COLORS)], label=label)
        n = {r["condition"]: r["n"] for r in g.filter(pl.col("variant") == "original").iter_rows(named=True)}
        ax.set_xticks(range(len(conds)), [f"{c}\n(n = {n.get(c, 0)})" for c in conds])
        ax.set_ylim(0, 1)
        name = "stable set" if seed < 0 else f"seed {seed}"
        ax.set_title(f"{mrel}, {name} [{method}]", fontsize=9)
    axes[0][0].set_ylabel("top-1 accuracy of the gold (error bars: 95% CI of the change vs intact)")
    axes[0][-1].legend(frameon=False, fontsize=7, loc="upper right")
    fig.tight_layout()
    return png(fig)


def position_plot(stats: pl.DataFrame, metric: str = "logprob") -> str | None:
    """The distractor's context-induced shift by the position of the distractor passage (passages condition)."""
    if "position" not in stats.columns:
        return None
    rows = stats.filter(
        (pl.col("relation") == "ALL")
        & (pl.col("ablation") == "none")
        & (pl.col("metric") == metric)
        & pl.col("position").is_not_null()
    )
    if rows.is_empty():
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (model, target) in enumerate(sorted(set(zip(rows["model"], rows["target"])))):
        g = rows.filter((pl.col("model") == model) & (pl.col("target") == target)).sort("position")
        color = "#d62728" if target == "distractor" else "#1f77b4"
        ax.errorbar(
            g["position"] + (0.06 if target == "gold" else 0),
            g["mean_diff"],
            yerr=[g["mean_diff"] - g["ci_low"], g["ci_high"] - g["mean_diff"]],
            fmt="-o",
            capsize=3,
            color=color,
            label=f"{target} ({model})" if rows["model"].n_unique() > 1 else target,
        )
    n_pass = int(rows["position"].max())
    ax.axhline(0, color="#444", lw=0.7)
    ax.set_xticks(
        range(1, n_pass + 1), [f"{p}{' (nearest the query)' if p == n_pass else ''}" for p in range(1, n_pass + 1)]
    )
    ax.set_xlabel("position of the distractor passage")
    ax.set_ylabel(f"{metric} with context − without")
    ax.set_title("Multi-passage contexts: shift by where the misleading passage sits (95% CI)", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return png(fig)


def methods_plot(abl: pl.DataFrame) -> str | None:
    """The gain in Δ of each mask under every ablation method (own relation, training condition rows)."""
    rows = abl.filter(
        (pl.col("relation") == pl.col("mask_relation"))
        & (pl.col("templates") == "all")
        & (pl.col("variant") == "ablated")
        & (pl.col("condition") == "related")
    )
    if rows.is_empty() or rows["ablation_method"].n_unique() < 2:
        return None
    masks = sorted(set(zip(rows["mask_relation"], rows["seed"])), key=lambda k: (k[0], k[1] < 0, k[1]))
    methods = [m for m in METHOD_COLORS if m in set(rows["ablation_method"])]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(masks) + 2), 3.6))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        v = {
            (r["mask_relation"], r["seed"]): r
            for r in rows.filter(pl.col("ablation_method") == m).iter_rows(named=True)
        }
        x = np.arange(len(masks)) + (j - (len(methods) - 1) / 2) * width
        gain = [v[k]["gain"] if k in v else np.nan for k in masks]
        lo = [v[k]["gain"] - v[k]["gain_ci_low"] if k in v and np.isfinite(v[k]["gain_ci_low"]) else 0 for k in masks]
        hi = [v[k]["gain_ci_high"] - v[k]["gain"] if k in v and np.isfinite(v[k]["gain_ci_high"]) else 0 for k in masks]
        ax.bar(x, gain, width, yerr=[lo, hi], capsize=2, color=METHOD_COLORS[m], label=m)
    ax.axhline(0, color="#444", lw=0.7)
    ax.set_xticks(range(len(masks)), [f"{r}\n{'stable' if s < 0 else f'seed {s}'}" for r, s in masks], fontsize=8)
    ax.set_ylabel("gain in Δ on test (related), 95% CI")
    ax.set_title("The same heads removed three ways: zero, mean, resample ablation", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return png(fig)
