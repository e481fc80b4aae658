"""Report figure for sentence-level entrainment (panel u): Δ_self, Δ_net and the counterfactual-vs-gold gap per
condition with subject-level CIs, and the same with the stable heads removed beside random heads of that size.

Takes sentence_stats (a polars frame) and returns a PNG data URI, or None when there is nothing to show.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from entrainment.figures.base import COLORS, plt, png

ORDER = ["counterfactual", "related", "irrelevant", "random", "self_cf"]
MEASURES = [("self", "Δ_self"), ("net", "Δ_net"), ("gap", "gap (cf − gold)")]


def _bars(ax, rows: pl.DataFrame, groups: list[tuple[str, str, pl.Expr]], conds: list[str]) -> None:
    width = 0.8 / max(len(groups), 1)
    for k, (label, measure, where) in enumerate(groups):
        sel = rows.filter((pl.col("measure") == measure) & where)
        by = {r["condition"]: r for r in sel.to_dicts()}
        x = np.arange(len(conds)) + (k - (len(groups) - 1) / 2) * width
        mean = np.array([by[c]["mean"] if c in by else np.nan for c in conds], float)
        lo = np.array([by[c]["ci_low"] if c in by else np.nan for c in conds], float)
        hi = np.array([by[c]["ci_high"] if c in by else np.nan for c in conds], float)
        err = np.vstack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)])
        ax.bar(x, mean, width, yerr=err, capsize=2, color=COLORS[k % len(COLORS)], label=label)
    ax.axhline(0, color="#888", lw=0.8)
    ax.set_xticks(np.arange(len(conds)), conds, rotation=20)
    ax.legend(fontsize=7)


def sentence_plot(stats: pl.DataFrame) -> str | None:
    """Left: pooled (relations weighted equally) Δ_self, Δ_net and gap per condition, intact first model. Right:
    Δ_self and Δ_net on the stable set's relation, intact vs heads removed, with the random sets' mean as ticks."""
    if stats.is_empty():
        return None
    model = sorted(stats["model"].unique())[0]
    s = stats.filter(pl.col("model") == model)
    intact = s.filter((pl.col("ablation") == "none") & (pl.col("relation") == "ALL"))
    conds = [c for c in ORDER if c in set(intact["condition"])]
    ablated = s.filter(pl.col("ablation") != "none")
    fig, axes = plt.subplots(1, 2 if len(ablated) else 1, figsize=(11 if len(ablated) else 6, 3.6), squeeze=False)
    _bars(axes[0][0], intact, [(name, m, pl.lit(True)) for m, name in MEASURES], conds)
    axes[0][0].set_title(f"{model}: sentence-level entrainment (pooled)", fontsize=9)
    axes[0][0].set_ylabel("mean log-prob per token, present − absent", fontsize=8)
    if len(ablated):
        ax = axes[0][1]
        set_id = sorted(ablated["ablation"].unique())[0]
        rel = ablated.filter(pl.col("ablation") == set_id)["relation"].filter(
            ablated.filter(pl.col("ablation") == set_id)["relation"] != "ALL"
        )[0]
        both = s.filter((pl.col("relation") == rel) & pl.col("ablation").is_in(["none", set_id]))
        groups = [
            (f"{name}, {'intact' if a == 'none' else 'heads removed'}", m, pl.col("ablation") == a)
            for m, name in MEASURES[:2]
            for a in ("none", set_id)
        ]
        conds_r = [c for c in ORDER if c in set(both["condition"])]
        _bars(ax, both, groups, conds_r)
        nul = both.filter((pl.col("ablation") == set_id) & pl.col("measure").is_in(["self", "net"]))
        width = 0.8 / len(groups)
        for k, m in ((1, "self"), (3, "net")):
            by = {r["condition"]: r["null_mean"] for r in nul.filter(pl.col("measure") == m).to_dicts()}
            x = np.arange(len(conds_r)) + (k - (len(groups) - 1) / 2) * width
            ax.scatter(
                x,
                [by.get(c, np.nan) for c in conds_r],
                marker="_",
                s=120,
                color="k",
                zorder=3,
                label="random heads (mean)" if k == 1 else None,
            )
        ax.legend(fontsize=7)
        ax.set_title(f"{rel}: {set_id.split(':')[0]} set removed", fontsize=9)
    return png(fig)
