"""Report figure for the head types (panel t): layers x heads maps of every head-type score beside the entrainment
scan map, and the induction/entrainment dissociation bars.

Takes tables (polars frames) and returns a PNG data URI, or None when there is nothing to show.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from entrainment.figures.base import plt, png

MAPS = (
    "prev_token",
    "duplicate_token",
    "induction",
    "copying",
    "copy_suppression",
    "distractor_attention",
    "dla_distractor",
)


def _grid(df: pl.DataFrame, column: str) -> np.ndarray:
    n_l, n_h = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    g = np.full((n_l, n_h), np.nan)
    g[df["layer"].to_numpy(), df["head"].to_numpy()] = df[column].to_numpy()
    return g


def head_types_plot(types: pl.DataFrame, scores: pl.DataFrame, agree: pl.DataFrame) -> str | None:
    """The first model's maps (heads on x, layers on y) of each score and the scan, and its dissociation rows."""
    if types.is_empty():
        return None
    model = sorted(types["model"].unique())[0]
    t = types.filter(pl.col("model") == model)
    panels = [(c, _grid(t, c)) for c in MAPS]
    s = scores.filter((pl.col("model") == model) & (pl.col("method") == "scan")) if not scores.is_empty() else scores
    if not s.is_empty():
        s = s.filter((pl.col("relation") == s["relation"][0]) & (pl.col("ablation_method") == s["ablation_method"][0]))
        panels.append((f"scan: {s['relation'][0]}", _grid(s.rename({"score": "scan"}), "scan")))
    d = agree.filter((pl.col("model") == model) & (pl.col("kind") == "dissociation")) if not agree.is_empty() else agree
    n = len(panels) + (1 if not d.is_empty() else 0)
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 3.6), squeeze=False)
    for ax, (name, g) in zip(axes[0], panels):
        lim = np.nanmax(np.abs(g)) if np.isfinite(g).any() else 1.0
        signed = np.nanmin(g) < 0 if np.isfinite(g).any() else False
        ax.imshow(
            g,
            aspect="auto",
            cmap="RdBu_r" if signed else "Reds",
            vmin=-lim if signed else 0,
            vmax=lim or 1,
            origin="lower",
            interpolation="nearest",
        )
        ax.set_title(name.replace("_", " "), fontsize=8)
        ax.set_xlabel("head", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel("layer")
    if not d.is_empty():
        ax = axes[0][-1]
        labels = [f"−{r['removed'][:4]}\n(spare {r['excluded'][:4]})" for r in d.iter_rows(named=True)]
        y = np.arange(len(labels))
        for col, off, colour in (("entrainment_gain", -0.2, "#d62728"), ("induction_loss", 0.2, "#1f77b4")):
            ax.barh(y + off, d[col].to_numpy(), 0.35, color=colour, label=col.replace("_", " "))
            ax.scatter(d[f"{col}_random"].to_numpy(), y + off, color="k", marker="|", s=60, zorder=3)
        ax.set_yticks(y, labels, fontsize=6)
        ax.axvline(0, color="#888", lw=0.8)
        ax.set_title("dissociation (| = random)", fontsize=8)
        ax.legend(frameon=False, fontsize=6)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{model}: head types", fontsize=9)
    fig.tight_layout()
    return png(fig)
