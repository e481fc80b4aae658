"""Report figures that compare models: shifts side by side, heads removed per model and where they sit by relative
depth, the scaling fit with its no-context control, and the sentence-level scaling fit.

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
    stats: pl.DataFrame,
    scaling: pl.DataFrame,
    models: pl.DataFrame,
    metric: str = "logit",
    target: str = "distractor",
    size: str = "n_params_non_embedding",
) -> str | None:
    """log|mean shift| against log N, one line per condition with its fitted exponent b; beside it the control:
    the no-context gold value against N (kind no_context), which moves with size on its own.

    Args:
        stats: stats.parquet rows.
        scaling: scaling.parquet rows.
        models: models.parquet rows.
        metric: logit | logprob.
        target: distractor | gold (the shifts drawn on the left).
        size: n_params_non_embedding (default, the follow-up's N) | n_params.
    Returns:
        A PNG data URI, or None without fits.
    """
    if scaling.is_empty() or models.is_empty():
        return None
    fits = scaling.filter((pl.col("size") == size) & (pl.col("metric") == metric))
    rows = stats.filter(
        (pl.col("relation") == "ALL")
        & (pl.col("ablation") == "none")
        & (pl.col("metric") == metric)
        & pl.col("position").is_null()
    )
    shifts = fits.filter((pl.col("target") == target) & (pl.col("kind") == "raw"))
    if shifts.is_empty():
        return None
    sizes = dict(zip(models["model"], models[size]))
    control = fits.filter((pl.col("target") == "gold") & (pl.col("kind") == "no_context"))
    fig, axes = plt.subplots(1, 2 if len(control) else 1, figsize=(13 if len(control) else 7, 4.2), squeeze=False)
    ax = axes[0][0]
    for i, cond in enumerate(c for c in CONDITION_ORDER if c in set(shifts["condition"])):
        f = shifts.filter(pl.col("condition") == cond).row(0, named=True)
        g = rows.filter((pl.col("condition") == cond) & (pl.col("target") == target))
        _fit_line(ax, g, "mean_diff", f, sizes, COLORS[i % len(COLORS)], cond)
    ax.set_ylabel(f"|mean {metric} shift| of the {target}")
    ax.set_title(
        f"Scaling: E(N) = a·N^b fitted by OLS in log-log over {int(shifts['n_models'].max())} models", fontsize=9
    )
    if len(control):
        bx = axes[0][1]
        pick = control.filter(pl.col("condition") == "related")  # one condition's queries: one line
        f = (pick if len(pick) else control).row(0, named=True)
        g = rows.filter((pl.col("condition") == f["condition"]) & (pl.col("target") == "gold"))
        _fit_line(bx, g, "mean_base", f, sizes, "#444", "no context")
        bx.set_ylabel(f"|mean {metric} of the gold without context|")
        bx.set_title("The control: the no-context gold value against size (kind no_context)", fontsize=9)
    for a in axes[0]:
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel(f"parameters N (models.parquet {size})")
        a.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)


def _fit_line(ax, g: pl.DataFrame, col: str, f: dict, sizes: dict, color: str, label: str) -> None:
    """The models' |col| against N as points, and the fitted a·N^b over their range."""
    n = np.array([sizes[m] for m in g["model"] if m in sizes], float)
    v = np.array([abs(d) for m, d in zip(g["model"], g[col]) if m in sizes])
    if not len(n):
        return
    ax.scatter(n, v, color=color)
    grid = np.geomspace(n.min(), n.max(), 50)
    ax.plot(
        grid,
        f["a"] * grid ** f["b"],
        color=color,
        label=f"{label}: b = {f['b']:+.2f} [{f['b_ci_low']:+.2f}, {f['b_ci_high']:+.2f}], R² {f['r2']:.2f}, "
        f"p {f['p_value']:.2g}",
    )


def depth_plot(heads: pl.DataFrame, models: pl.DataFrame) -> str | None:
    """Where each model's removed heads sit, by relative depth (layer + 0.5) / n_layers: one row per model, one point
    per (mask, head), so models of different depths compare. Masks: seed searches, cross-fitted folds, stable sets.

    Args:
        heads: heads.parquet rows.
        models: models.parquet rows (n_layers; without it the deepest layer seen + 1).
    Returns:
        A PNG data URI, or None with fewer than two models.
    """
    if heads.is_empty() or heads["model"].n_unique() < 2:
        return None
    removed = heads.filter(pl.col("removed"))
    layers = dict(zip(models["model"], models["n_layers"])) if not models.is_empty() else {}
    sizes = _sizes(models)
    names = sorted(heads["model"].unique(), key=lambda m: (sizes.get(m, 0), m))
    kinds = (("mask:", "seed searches", "o"), ("crossfit:", "cross-fitted folds", "s"), ("stable:", "stable set", "*"))
    fig, ax = plt.subplots(figsize=(8, 0.8 * len(names) + 1.8))
    rng = np.random.default_rng(0)  # vertical jitter only, so overlapping heads stay visible
    labelled: set[str] = set()
    for y, model in enumerate(names):
        g = removed.filter(pl.col("model") == model)
        n_layers = layers.get(model) or int(heads.filter(pl.col("model") == model)["layer"].max()) + 1
        for j, (prefix, label, marker) in enumerate(kinds):
            k = g.filter(pl.col("ablation_label").str.starts_with(prefix))
            if len(k):
                depth = (k["layer"].to_numpy() + 0.5) / n_layers
                ax.scatter(
                    depth,
                    y + (j - 1) * 0.22 + rng.uniform(-0.06, 0.06, len(k)),
                    marker=marker,
                    s=40 if marker == "*" else 14,
                    color=COLORS[j],
                    alpha=0.7,
                    label=None if label in labelled else label,
                )
                labelled.add(label)
    ax.set_yticks(range(len(names)), [_label(m, sizes) for m in names], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("relative depth of a removed head: (layer + 0.5) / layers")
    ax.set_title("Where the learned masks' heads sit, per model (heads.parquet)", fontsize=9)
    if labelled:
        ax.legend(frameon=False, fontsize=7, loc="upper right")
    else:
        ax.text(0.5, len(names) / 2 - 0.5, "no model's masks remove a head", ha="center", fontsize=9)
    fig.tight_layout()
    return png(fig)


def sentence_scaling_plot(sentence_stats: pl.DataFrame, fits: pl.DataFrame, models: pl.DataFrame) -> str | None:
    """|Δ_self| and |Δ_net| (pooled, intact) against non-embedding parameters, one line per condition and measure.

    Args:
        sentence_stats: sentence_stats.parquet rows.
        fits: sentence_scaling.parquet rows.
        models: models.parquet rows.
    Returns:
        A PNG data URI, or None without fits.
    """
    size = "n_params_non_embedding"
    if fits.is_empty() or models.is_empty():
        return None
    fits = fits.filter(pl.col("size") == size)
    if fits.is_empty() or sentence_stats.is_empty():
        return None
    rows = sentence_stats.filter((pl.col("relation") == "ALL") & (pl.col("ablation") == "none"))
    sizes = dict(zip(models["model"], models[size]))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), squeeze=False)
    for ax, measure in zip(axes[0], ("self", "net")):
        f_m = fits.filter(pl.col("measure") == measure)
        for i, cond in enumerate(sorted(f_m["condition"].unique())):
            f = f_m.filter(pl.col("condition") == cond).row(0, named=True)
            g = rows.filter((pl.col("condition") == cond) & (pl.col("measure") == measure))
            label = cond + ("" if f["same_sign"] else " (signs differ)")
            _fit_line(ax, g, "mean", f, sizes, COLORS[i % len(COLORS)], label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"parameters N (models.parquet {size})")
        ax.set_ylabel(f"|Δ_{measure}| (nats per token, mean over subjects)")
        ax.set_title(f"Sentence level: Δ_{measure} against size (sentence_scaling.parquet)", fontsize=9)
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)
