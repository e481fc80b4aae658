"""Report figures for the head evidence: the random-head null, mask transfer, head-importance maps, k-curves.

Each function takes tables (polars frames) and returns a PNG data URI, or None when there is nothing to show.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from entrainment.report import _png, plt


def null_plot(draws: pl.DataFrame, abl: pl.DataFrame) -> str | None:
    """Histogram of the random draws' mean gains per mask (own relation), the observed gain marked."""
    if draws.is_empty():
        return None
    keys = sorted(set(zip(draws["mask_relation"], draws["seed"], draws["relation"], draws["condition"])))[:6]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, (mrel, seed, rel, cond) in zip(axes[0], keys):
        sel = (pl.col("mask_relation") == mrel) & (pl.col("seed") == seed) & (pl.col("relation") == rel) & (pl.col("condition") == cond)
        g = draws.filter(sel)["gain"].to_numpy()
        row = abl.filter(sel & (pl.col("variant") == "ablated")).row(0, named=True)
        ax.hist(g, bins=20, color="#ff7f0e", alpha=0.8, label=f"{len(g)} random {row['n_heads_removed']}-head sets")
        ax.axvline(row["null_gain"], color="#2ca02c", lw=2.5, label=f"learned heads: {row['null_gain']:+.2f}")
        ax.set_xlabel("mean gain in Δ (ablated − original)")
        title = f"{mrel}, seed {seed}" + ("" if rel == mrel else f"\non {rel}")
        ax.set_title(f"{title} ({cond}, n = {row['null_items']})\nempirical p = {row['null_p']:.3g}, z = {row['null_z']:.1f}",
                     fontsize=9)
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return _png(fig)


def transfer_plot(abl: pl.DataFrame) -> str | None:
    """Heatmap: mask trained on relation A (rows) x mean gain on relation B's test split (columns), seeds pooled."""
    rows = abl.filter(pl.col("variant") == "ablated")
    if rows.is_empty() or rows["mask_relation"].n_unique() < 2:
        return None
    w = (pl.col("gain") * pl.col("n")).sum() / pl.col("n").sum()
    t = rows.group_by("mask_relation", "relation").agg(w.alias("gain")).sort("mask_relation", "relation")
    masks, rels = sorted(t["mask_relation"].unique()), sorted(t["relation"].unique())
    grid = np.full((len(masks), len(rels)), np.nan)
    for r in t.iter_rows(named=True):
        grid[masks.index(r["mask_relation"]), rels.index(r["relation"])] = r["gain"]
    lim = max(1e-9, float(np.nanmax(np.abs(grid))))
    fig, ax = plt.subplots(figsize=(1.6 * len(rels) + 3, 0.6 * len(masks) + 2))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(masks)):
        for j in range(len(rels)):
            ax.text(j, i, f"{grid[i, j]:+.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(rels)), rels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(masks)), [f"mask: {m}" for m in masks], fontsize=8)
    ax.set_xlabel("evaluated relation (test split, all conditions)")
    fig.colorbar(im, ax=ax, label="mean gain in Δ")
    ax.set_title("Transfer: gain from removing a mask's heads, per evaluated relation (seeds pooled)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def head_maps_plot(scores: pl.DataFrame, heads: pl.DataFrame) -> str | None:
    """Three heatmaps side by side per relation: learned keep-logits (first seed), scan, atp."""
    if scores.is_empty():
        return None
    keys = sorted(set(zip(scores["model"], scores["relation"])))[:3]
    fig, axes = plt.subplots(len(keys), 3, figsize=(12, 4.2 * len(keys)), squeeze=False)
    for row, (model, rel) in zip(axes, keys):
        s = scores.filter((pl.col("model") == model) & (pl.col("relation") == rel))
        n_l, n_h = int(s["layer"].max()) + 1, int(s["head"].max()) + 1
        grids = []
        h = heads.filter((pl.col("model") == model) & (pl.col("relation") == rel)) if not heads.is_empty() else heads
        if not h.is_empty():
            h = h.filter(pl.col("seed") == h["seed"].min())
            g = np.zeros((n_l, n_h))
            for r in h.iter_rows(named=True):
                g[r["layer"], r["head"]] = min(3.0, max(-3.0, -r["mask_logit"]))  # clipped: > 0 = removed
            grids.append((f"learned mask (−keep logit clipped to ±3, seed {h['seed'][0]}); {int(h['removed'].sum())} removed", g))
        else:
            grids.append(("learned mask: none", np.zeros((n_l, n_h))))
        for method in ("scan", "atp"):
            g = s.filter(pl.col("method") == method).sort("layer", "head")["score"].to_numpy().reshape(n_l, n_h)
            grids.append((f"{method}: Δ(head zeroed) − Δ", g))
        for ax, (title, g) in zip(row, grids):
            lim = max(1e-9, float(np.abs(g).max()))
            im = ax.imshow(g, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
            ax.set_title(f"{rel}\n{title}", fontsize=8)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _png(fig)


def k_curve_plot(agree: pl.DataFrame) -> str | None:
    """Test Δ after removing the top-k heads under each ranking, k = 0..K, per relation."""
    if agree.is_empty():
        return None
    keys = sorted(set(zip(agree["model"], agree["relation"])))[:3]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.6), squeeze=False)
    style = {"scan": ("#1f77b4", "-o"), "atp": ("#9467bd", "-s"), "mask": ("#2ca02c", "-^"), "random": ("#ff7f0e", "--")}
    for ax, (model, rel) in zip(axes[0], keys):
        g = agree.filter((pl.col("model") == model) & (pl.col("relation") == rel))
        for method in ("scan", "atp", "mask", "random"):
            c = g.filter(pl.col("method") == method).sort("k")
            if len(c):
                color, ls = style[method]
                ax.plot(c["k"], c["delta"], ls, color=color, ms=4, label=method)
        ax.set_xlabel("heads removed (top-k of each ranking)")
        ax.set_ylabel("test Δ = ℓ(gold) − ℓ(distractor)")
        r = g.row(0, named=True)
        ax.set_title(f"{rel} (n = {r['n']}): Spearman(atp, scan) = {r['spearman_atp_scan']:.2f}", fontsize=9)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _png(fig)
