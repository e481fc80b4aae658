"""Report panels of the head verdict (verdict.parquet, subject_gains.parquet): the subject as the unit.

``verdict_plot``: per mask, the gain with context, the gain without context and their difference (the interaction),
each with its 95% CI over subjects, and beside it the change in the share of items
where the gold outscores the distractor (acc_gain) with its CI over subjects.
``subject_plot``: the cross-fitted verdict, one point per subject: its mean Δ
intact (x) and with its fold's heads removed (y), above the diagonal = the heads help that subject.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from entrainment.figures.base import plt, png


def verdict_plot(verdict: pl.DataFrame, method: str | None = None) -> str | None:
    """Gain, no-context gain and interaction per mask with subject-level 95% CIs (one method: the first present).

    Args:
        verdict: verdict.parquet rows.
        method: the ablation method shown (default: zero if present, else the first).
    Returns:
        A PNG data URI, or None without rows.
    """
    if verdict.is_empty():
        return None
    methods = sorted(verdict["ablation_method"].unique())
    method = method or ("zero" if "zero" in methods else methods[0])
    rows = verdict.filter(pl.col("ablation_method") == method).sort("model", "relation", "ablation_label")
    if rows.is_empty():
        return None
    labels = [
        f"{r['ablation_label']}\n{r['n_heads']} heads, {r['subjects_helped']}/{r['n_subjects']} helped"
        for r in rows.iter_rows(named=True)
    ]
    y = np.arange(len(rows))
    accuracy = "acc_gain" in rows.columns and not rows["acc_gain"].is_nan().all()
    fig, axes = plt.subplots(
        1,
        2 if accuracy else 1,
        figsize=(13 if accuracy else 9, 0.7 * len(rows) + 1.6),
        squeeze=False,
        gridspec_kw={"width_ratios": [3, 1.3]} if accuracy else None,
        sharey=True,
    )
    ax = axes[0][0]
    for k, (col, name, color) in enumerate(
        (
            ("gain", "gain with context", "#2ca02c"),
            ("gain_noctx", "gain without context", "#7f7f7f"),
            ("interaction", "interaction (difference)", "#9467bd"),
        )
    ):
        _ci_points(ax, rows, col, y + (k - 1) * 0.22, color, name)
    ax.axvline(0, color="#444", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("change in Δ = ℓ(gold) − ℓ(distractor) from removing the heads (95% CI over subjects)")
    ax.set_title(f"The head verdict, subject as the unit ({method} ablation)")
    ax.legend(frameon=False, fontsize=8, loc="best")
    if accuracy:
        acc = axes[0][1]
        _ci_points(acc, rows, "acc_gain", y, "#1f77b4", "gold above distractor")
        acc.axvline(0, color="#444", lw=0.8)
        acc.set_xlabel(
            "change in the share of items with Δ > 0\n(gold above distractor, with context; 95% CI over subjects)"
        )
        acc.set_title("Does the gold overtake the distractor?", fontsize=9)
    fig.tight_layout()
    return png(fig)


def _ci_points(ax, rows: pl.DataFrame, col: str, y: np.ndarray, color: str, label: str) -> None:
    """One point per row at ``col`` with its ``col_ci_low``/``col_ci_high`` as a horizontal error bar."""
    mean = rows[col].to_numpy()
    err = np.nan_to_num(np.vstack([mean - rows[f"{col}_ci_low"].to_numpy(), rows[f"{col}_ci_high"].to_numpy() - mean]))
    ax.errorbar(mean, y, xerr=np.clip(err, 0, None), fmt="o", color=color, capsize=3, label=label)


def subject_plot(sg: pl.DataFrame) -> str | None:
    """The cross-fitted verdict per subject: mean Δ intact vs with the fold's heads removed, coloured by fold.

    Args:
        sg: subject_gains.parquet rows.
    Returns:
        A PNG data URI, or None without cross-fitted rows.
    """
    rows = sg.filter(pl.col("ablation_label").str.starts_with("crossfit:") & pl.col("fold").is_not_null())
    if rows.is_empty():
        return None
    groups = sorted(rows.group_by("model", "relation", "ablation_method"), key=lambda kv: tuple(map(str, kv[0])))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.6), squeeze=False)
    for ax, ((model, relation, method), g) in zip(axes[0], groups):
        for fold, part in sorted(g.group_by("fold"), key=lambda kv: kv[0][0]):
            ax.scatter(
                part["delta_original"],
                part["delta_ablated"],
                s=18 + 4 * part["n_items"].to_numpy(),
                alpha=0.75,
                label=f"fold {fold[0]}",
            )
        lo = float(min(g["delta_original"].min(), g["delta_ablated"].min()))
        hi = float(max(g["delta_original"].max(), g["delta_ablated"].max()))
        ax.plot([lo, hi], [lo, hi], color="#444", lw=0.8)
        helped = int((g["gain"] > 0).sum())
        ax.set_xlabel("subject's mean Δ, intact (with context)")
        ax.set_ylabel("same, its fold's heads removed")
        ax.set_title(f"{relation} [{method}]: {helped}/{len(g)} subjects above the diagonal", fontsize=9)
        ax.legend(frameon=False, fontsize=8)
    return png(fig)
