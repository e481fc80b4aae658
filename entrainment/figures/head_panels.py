"""Report figures for the head evidence: the random-head null, mask transfer, head-importance maps, k-curves,
stability across searches and faithfulness per ablation method.

Each function takes tables (polars frames) and returns a PNG data URI, or None when there is nothing to show.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from entrainment.figures.base import plt, png


def null_plot(draws: pl.DataFrame, abl: pl.DataFrame) -> str | None:
    """Histogram of the random draws' mean gains per mask (own relation), the observed gain marked."""
    if draws.is_empty():
        return None
    keys = sorted(
        set(zip(draws["mask_relation"], draws["seed"], draws["relation"], draws["condition"], draws["ablation_method"]))
    )[:6]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, (mrel, seed, rel, cond, method) in zip(axes[0], keys):
        sel = (
            (pl.col("mask_relation") == mrel)
            & (pl.col("seed") == seed)
            & (pl.col("relation") == rel)
            & (pl.col("condition") == cond)
            & (pl.col("ablation_method") == method)
        )
        g = draws.filter(sel)["gain"].to_numpy()
        row = abl.filter(sel & (pl.col("variant") == "ablated") & (pl.col("templates") == "all")).row(0, named=True)
        ax.hist(g, bins=20, color="#ff7f0e", alpha=0.8, label=f"{len(g)} random {row['n_heads_removed']}-head sets")
        ax.axvline(row["null_gain"], color="#2ca02c", lw=2.5, label=f"learned heads: {row['null_gain']:+.2f}")
        ax.set_xlabel("mean gain in Δ (ablated − original)")
        title = f"{mrel}, {'stable set' if seed < 0 else f'seed {seed}'} [{method}]" + (
            "" if rel == mrel else f"\non {rel}"
        )
        ax.set_title(
            f"{title} ({cond}, n = {row['null_items']})\nempirical p = {row['null_p']:.3g}, z = {row['null_z']:.1f}",
            fontsize=9,
        )
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)


def transfer_plot(abl: pl.DataFrame) -> str | None:
    """Heatmap: mask trained on relation A (rows) x mean gain on relation B's test split (columns), seeds pooled."""
    rows = abl.filter((pl.col("variant") == "ablated") & (pl.col("templates") == "all"))
    searched = abl.filter(pl.col("variant") == "random_heads")["ablation_method"].unique().to_list()
    rows = rows.filter(pl.col("ablation_method").is_in(searched[:1]))
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
    return png(fig)


def head_maps_plot(scores: pl.DataFrame, heads: pl.DataFrame) -> str | None:
    """Three heatmaps side by side per relation: learned keep-logits (first seed), scan, atp."""
    if scores.is_empty():
        return None
    keys = sorted(set(zip(scores["model"], scores["relation"])))[:3]
    fig, axes = plt.subplots(len(keys), 3, figsize=(12, 4.2 * len(keys)), squeeze=False)
    for row, (model, rel) in zip(axes, keys):
        s = scores.filter((pl.col("model") == model) & (pl.col("relation") == rel))
        s = s.filter(pl.col("ablation_method") == s["ablation_method"][0])
        n_l, n_h = int(s["layer"].max()) + 1, int(s["head"].max()) + 1
        grids = []
        h = (
            heads.filter((pl.col("model") == model) & (pl.col("relation") == rel) & (pl.col("seed") >= 0))
            if not heads.is_empty()
            else heads
        )
        if not h.is_empty():
            h = h.filter(pl.col("seed") == h["seed"].min())
            g = np.zeros((n_l, n_h))
            for r in h.iter_rows(named=True):
                g[r["layer"], r["head"]] = min(3.0, max(-3.0, -r["mask_logit"]))  # clipped: > 0 = removed
            grids.append(
                (f"learned mask (−keep logit clipped to ±3, seed {h['seed'][0]}); {int(h['removed'].sum())} removed", g)
            )
        else:
            grids.append(("learned mask: none", np.zeros((n_l, n_h))))
        marks: list[np.ndarray] = [np.empty((0, 2))]
        for method in ("scan", "atp"):
            m = s.filter(pl.col("method") == method).sort("layer", "head")
            g = m["score"].to_numpy().reshape(n_l, n_h)
            title = f"{method} ({s['ablation_method'][0]}): Δ(head removed) − Δ"
            marks.append(_subject_significant(m))
            if len(marks[-1]):
                title += f"\n• {len(marks[-1])} heads whose 95% CI over subjects excludes 0"
            grids.append((title, g))
        for ax, (title, g), points in zip(row, grids, marks):
            lim = max(1e-9, float(np.abs(g).max()))
            im = ax.imshow(g, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
            if len(points):
                ax.scatter(points[:, 1], points[:, 0], s=10, color="black", marker="o")
            ax.set_title(f"{rel}\n{title}", fontsize=8)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return png(fig)


def _subject_significant(scores: pl.DataFrame) -> np.ndarray:
    """(layer, head) of the heads whose subject-level CI excludes 0; empty without those columns (or for atp)."""
    if "subject_ci_low" not in scores.columns:
        return np.empty((0, 2))
    lo, hi = pl.col("subject_ci_low").fill_nan(None), pl.col("subject_ci_high").fill_nan(None)  # NaN sorts above 0
    sig = scores.filter((lo > 0) | (hi < 0))
    return sig.select("layer", "head").to_numpy().reshape(-1, 2)


def k_curve_plot(agree: pl.DataFrame) -> str | None:
    """Change in test Δ after removing the top-k heads under each ranking, k = 0..K, per relation.

    The subject is the unit: each point is the mean over query subjects of the subject's mean per-item gain, with its
    95% t CI over the subjects as an error bar (tables written before those columns fall back to the prompt-level gain).

    Args:
        agree: head_agreement.parquet rows.
    Returns:
        A PNG data URI, or None without rows.
    """
    if agree.is_empty():
        return None
    subject_level = "subject_gain" in agree.columns and not agree["subject_gain"].is_nan().all()
    col = "subject_gain" if subject_level else "gain"
    keys = sorted(set(zip(agree["model"], agree["relation"])))[:3]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.8), squeeze=False)
    for ax, (model, rel) in zip(axes[0], keys):
        g = agree.filter((pl.col("model") == model) & (pl.col("relation") == rel))
        g = g.filter(pl.col("ablation_method") == g["ablation_method"][0])
        for shift, method in enumerate(("scan", "atp", "mask", "random")):
            c = g.filter(pl.col("method") == method).sort("k")
            if not len(c):
                continue
            color, ls = STYLE[method]
            x = c["k"].to_numpy() + (shift - 1.5) * 0.08  # nudged apart so the error bars do not overlap
            mean = c[col].to_numpy()
            err = np.nan_to_num(
                np.vstack([mean - c[f"{col}_ci_low"].to_numpy(), c[f"{col}_ci_high"].to_numpy() - mean])
            )
            ax.errorbar(x, mean, yerr=np.clip(err, 0, None), fmt=ls, color=color, ms=4, capsize=2, label=method)
        ax.axhline(0, color="#444", lw=0.6)
        ax.set_xlabel("heads removed (top-k of each ranking)")
        ax.set_ylabel(
            "change in Δ, mean over subjects (95% CI over subjects)" if subject_level else "change in Δ (prompt level)"
        )
        r = g.row(0, named=True)
        unit = f"{r['n_subjects']} subjects, " if subject_level else ""
        ax.set_title(
            f"{rel} [{r['ablation_method']}] ({unit}n = {r['n']}; intact Δ {r['delta'] - r['gain']:.2f})"
            f"\nSpearman(atp, scan) = {r['spearman_atp_scan']:.2f}",
            fontsize=9,
        )
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return png(fig)


STYLE = {"scan": ("#1f77b4", "-o"), "atp": ("#9467bd", "-s"), "mask": ("#2ca02c", "-^"), "random": ("#ff7f0e", "--")}
NIU_JACCARD = (0.32, 0.55)  # Niu et al.'s five search runs on Llama-3.1-8B (their Appendix D)


def faithfulness_plot(agree: pl.DataFrame) -> str | None:
    """The share of the entrainment gap closed, f(k), per ranking, one panel per (relation, ablation method)."""
    if agree.is_empty() or agree["gap_closed"].is_nan().all():
        return None
    keys = sorted(set(zip(agree["model"], agree["relation"], agree["ablation_method"])))[:6]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.5), squeeze=False, sharey=True)
    for ax, (model, rel, method) in zip(axes[0], keys):
        g = agree.filter(
            (pl.col("model") == model) & (pl.col("relation") == rel) & (pl.col("ablation_method") == method)
        )
        for name in ("scan", "atp", "mask", "random"):
            c = g.filter(pl.col("method") == name).sort("k")
            if len(c):
                color, ls = STYLE[name]
                ax.plot(
                    c["k"], c["gap_closed"], ls, color=color, ms=4, label=f"{name} (area {c['gap_closed_area'][0]:.2f})"
                )
        ax.axhline(0, color="#444", lw=0.6)
        ax.axhline(1, color="#444", lw=0.6, ls=":")
        r = g.row(0, named=True)
        ax.set_title(
            f"{rel} [{method}]\nΔ_ctx {r['delta_context']:.2f} → Δ_noctx {r['delta_no_context']:.2f}", fontsize=9
        )
        ax.set_xlabel("heads removed (top-k of each ranking)")
        ax.legend(frameon=False, fontsize=7)
    axes[0][0].set_ylabel("gap closed f(k) = (Δ_k − Δ_ctx) / (Δ_noctx − Δ_ctx)")
    fig.tight_layout()
    return png(fig)


def stability_plot(stab: pl.DataFrame, overlap: pl.DataFrame) -> str | None:
    """Inclusion frequency over layers x heads (stable set outlined) and the pairwise Jaccard between searches."""
    if stab.is_empty():
        return None
    keys = sorted(set(zip(stab["model"], stab["relation"])))[:3]
    fig, axes = plt.subplots(
        len(keys), 2, figsize=(11, 4.4 * len(keys)), squeeze=False, gridspec_kw={"width_ratios": [1.4, 1]}
    )
    for (ax, bx), (model, rel) in zip(axes, keys):
        g = stab.filter((pl.col("model") == model) & (pl.col("relation") == rel)).sort("layer", "head")
        n_l, n_h = int(g["layer"].max()) + 1, int(g["head"].max()) + 1
        grid = g["frequency"].to_numpy().reshape(n_l, n_h)
        im = ax.imshow(grid, cmap="Purples", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        for r in g.filter(pl.col("stable")).iter_rows(named=True):
            ax.add_patch(plt.Rectangle((r["head"] - 0.5, r["layer"] - 0.5), 1, 1, fill=False, ec="#d62728", lw=2))
        fig.colorbar(im, ax=ax, fraction=0.046, label="inclusion frequency")
        n = int(g["searches"].max())
        ax.set_title(
            f"{rel}: share of {n} searches removing each head\n(red: stable set, {int(g['stable'].sum())} heads)",
            fontsize=9,
        )
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        o = (
            overlap.filter((pl.col("model") == model) & (pl.col("relation") == rel))
            if not overlap.is_empty()
            else overlap
        )
        if len(o):
            bx.hist(
                o["jaccard"].to_numpy(),
                bins=np.linspace(0, 1, 11),
                color="#9467bd",
                alpha=0.8,
                label=f"{len(o)} pairs of searches",
            )
            bx.axvspan(*NIU_JACCARD, color="#ff7f0e", alpha=0.2, label="Niu et al. (Llama-3.1-8B): 0.32-0.55")
            r = o.row(0, named=True)
            bx.axvline(
                r["mean_jaccard"],
                color="k",
                lw=2,
                label=f"mean {r['mean_jaccard']:.2f} [{r['mean_jaccard_ci_low']:.2f}, {r['mean_jaccard_ci_high']:.2f}]",
            )
            bx.set_xlabel("Jaccard of two searches' head sets")
            bx.set_ylabel("pairs")
            bx.legend(frameon=False, fontsize=7)
        title = "Agreement between searches (seeds x resamples)"
        if len(o) and "mean_jaccard_corrected" in o.columns:
            r = o.row(0, named=True)
            title += "\n" + ", ".join(
                f"{name} {r[f'mean_{col}']:.2f} [{r[f'mean_{col}_ci_low']:.2f}, {r[f'mean_{col}_ci_high']:.2f}]"
                for col, name in (
                    ("jaccard_corrected", "chance-corrected"),
                    ("overlap", "overlap"),
                    ("spearman_logits", "keep-logit ρ"),
                )
                if np.isfinite(r[f"mean_{col}"])
            )
        bx.set_title(title, fontsize=8)
    fig.tight_layout()
    return png(fig)
