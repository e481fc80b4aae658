"""Report figures that compare models: shifts side by side, heads removed per model, the scaling fit.

Each function takes tables (polars frames) and returns a PNG data URI, or None when there is nothing to
compare (fewer than two models; the scaling plot needs scaling.parquet, i.e. >= 3 models).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from entrainment.figures.base import COLORS, CONDITION_ORDER, plt, png
from entrainment.model.sources import short_name


def _label(model: str, sizes: dict[str, int]) -> str:
    short = short_name(model)
    return (
        f"{short} ({sizes[model] / 1e6:.0f}M)"
        if model in sizes and sizes[model] >= 1e6
        else f"{short} ({sizes[model]:,} params)"
        if model in sizes
        else short
    )


def _sizes(models: pl.DataFrame) -> dict[str, int]:
    return dict(zip(models["model"], models["n_params"])) if not models.is_empty() else {}


def comparison_plot(stats: pl.DataFrame, models: pl.DataFrame, metric: str = "logit") -> str | None:
    """Mean shift (with context − without) per condition, one bar per model, distractor and gold side by side."""
    rows = stats.filter(
        (pl.col("relation") == "ALL")
        & (pl.col("ablation") == "none")
        & (pl.col("metric") == metric)
        & pl.col("position").is_null()
    )
    sizes = _sizes(models)
    names = sorted(rows["model"].unique(), key=lambda m: (sizes.get(m, 0), m)) if not rows.is_empty() else []
    if len(names) < 2:
        return None
    conds = [c for c in CONDITION_ORDER if c in set(rows["condition"])]
    width = 0.8 / len(names)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=False)
    for ax, target in zip(axes, ("distractor", "gold")):
        for i, model in enumerate(names):
            g = {
                r["condition"]: r
                for r in rows.filter((pl.col("model") == model) & (pl.col("target") == target)).iter_rows(named=True)
            }
            x = np.arange(len(conds)) + (i - (len(names) - 1) / 2) * width
            mean = np.array([g[c]["mean_diff"] if c in g else np.nan for c in conds])
            lo = np.array([g[c]["ci_low"] if c in g else np.nan for c in conds])
            hi = np.array([g[c]["ci_high"] if c in g else np.nan for c in conds])
            ax.bar(
                x,
                mean,
                width,
                yerr=[mean - lo, hi - mean],
                capsize=2,
                color=COLORS[i % len(COLORS)],
                label=_label(model, sizes),
            )
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(range(len(conds)), conds)
        ax.set_ylabel(f"{metric} shift (context − none)")
        ax.set_title(f"{target}: ℓ({target[0]} | ctx) − ℓ({target[0]} | ∅), pooled over relations", fontsize=9)
    axes[0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return png(fig)


def heads_share_plot(heads: pl.DataFrame, models: pl.DataFrame) -> str | None:
    """Heads removed by each model's learned masks, as a share of all its heads (mean over seeds, per relation)."""
    if heads.is_empty() or heads["model"].n_unique() < 2:
        return None
    heads = heads.filter(pl.col("seed") >= 0)
    per = (
        heads.group_by("model", "relation", "seed")
        .agg(pl.col("removed").sum().alias("removed"), pl.len().alias("total"))
        .group_by("model", "relation")
        .agg(
            (pl.col("removed") / pl.col("total")).mean().alias("share"),
            pl.col("removed").mean().alias("k"),
            pl.col("total").first().alias("total"),
            pl.len().alias("seeds"),
        )
    )
    sizes = _sizes(models)
    names = sorted(per["model"].unique(), key=lambda m: (sizes.get(m, 0), m))
    rels = sorted(per["relation"].unique())
    width = 0.8 / len(rels)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(names) * max(1, len(rels) / 2)), 3.4))
    for j, rel in enumerate(rels):
        g = {r["model"]: r for r in per.filter(pl.col("relation") == rel).iter_rows(named=True)}
        x = np.arange(len(names)) + (j - (len(rels) - 1) / 2) * width
        share = [100 * g[m]["share"] if m in g else np.nan for m in names]
        ax.bar(x, share, width, color=COLORS[j % len(COLORS)], label=rel)
        for xi, m in zip(x, names):
            if m in g:
                ax.text(
                    xi, 100 * g[m]["share"], f"{g[m]['k']:.3g}/{g[m]['total']}", ha="center", va="bottom", fontsize=7
                )
    ax.set_xticks(range(len(names)), [_label(m, sizes) for m in names], fontsize=8)
    ax.set_ylabel("heads removed (% of all heads)")
    ax.set_title(
        "Learned masks: share of heads removed per model (mean over seeds; labels: heads removed / all)", fontsize=9
    )
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return png(fig)


def scaling_plot(
    stats: pl.DataFrame, scaling: pl.DataFrame, models: pl.DataFrame, metric: str = "logit", target: str = "distractor"
) -> str | None:
    """log|mean shift| against log N (total parameters), one line per condition with its fitted exponent b."""
    if scaling.is_empty() or models.is_empty():
        return None
    fits = scaling.filter(
        (pl.col("size") == "n_params")
        & (pl.col("metric") == metric)
        & (pl.col("target") == target)
        & (pl.col("kind") == "raw")
    )
    rows = stats.filter(
        (pl.col("relation") == "ALL")
        & (pl.col("ablation") == "none")
        & (pl.col("metric") == metric)
        & (pl.col("target") == target)
        & pl.col("position").is_null()
    )
    if fits.is_empty():
        return None
    sizes = _sizes(models)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, cond in enumerate(c for c in CONDITION_ORDER if c in set(fits["condition"])):
        f = fits.filter(pl.col("condition") == cond).row(0, named=True)
        g = rows.filter(pl.col("condition") == cond)
        n = np.array([sizes[m] for m in g["model"] if m in sizes], float)
        v = np.array([abs(d) for m, d in zip(g["model"], g["mean_diff"]) if m in sizes])
        color = COLORS[i % len(COLORS)]
        ax.scatter(n, v, color=color)
        grid = np.geomspace(n.min(), n.max(), 50)
        ax.plot(
            grid,
            f["a"] * grid ** f["b"],
            color=color,
            label=f"{cond}: b = {f['b']:+.2f} [{f['b_ci_low']:+.2f}, {f['b_ci_high']:+.2f}], R² {f['r2']:.2f}, p "
            f"{f['p_value']:.2g}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters N (models.parquet n_params)")
    ax.set_ylabel(f"|mean {metric} shift| of the {target}")
    ax.set_title(
        f"Scaling: E(N) = a·N^b fitted by OLS in log-log over {int(fits['n_models'].max())} models", fontsize=9
    )
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)
