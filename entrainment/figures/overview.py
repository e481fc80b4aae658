"""The report's first panels: shifts per condition (a), the top-10 example (b), removed heads (c), the ablation
effect (d), the discovery curve (e) and the statistics table (f).

Each function takes tables (polars frames) and returns a PNG data URI (or HTML), or None when there is nothing to
show.
"""

from __future__ import annotations

import html

import numpy as np
import polars as pl

from entrainment.ablation.summaries import pooled_variants
from entrainment.figures.base import CONDITION_ORDER, plt, png

VARIANT_ORDER = ["original", "ablated", "random_heads", "no_context", "prompted"]
VARIANT_LABEL = {
    "original": "original\n(with context)",
    "ablated": "heads removed\n(with context)",
    "random_heads": "random heads\nremoved",
    "no_context": "original\n(no context)",
    "prompted": "prompting\nbaseline",
}
STATS_COLUMNS = [
    "relation",
    "condition",
    "target",
    "metric",
    "n",
    "mean_ctx",
    "mean_base",
    "mean_diff",
    "ci_low",
    "ci_high",
    "t",
    "p_value",
    "p_adjusted",
    "effect_size",
    "note",
]


_SUBJECT_UNIT = ("subject_mean_diff", "subject_ci_low", "subject_ci_high")
_PROMPT_UNIT = ("mean_diff", "ci_low", "ci_high")


def _interval(row: dict, cols: tuple[str, str, str]) -> tuple[float, float, float]:
    """(mean, low, high) of one stats.parquet row; NaN where a value is missing (too few units for an interval)."""
    return tuple(np.nan if row.get(c) is None else float(row[c]) for c in cols)  # type: ignore[return-value]


def shifts_plot(stats: pl.DataFrame, metric: str = "logprob") -> str | None:
    rows = stats.filter(
        (pl.col("relation") == "ALL")
        & (pl.col("ablation") == "none")
        & (pl.col("metric") == metric)
        & pl.col("position").is_null()
    )
    if rows.is_empty():
        return None
    models = sorted(rows["model"].unique())
    conds = [c for c in CONDITION_ORDER if c in set(rows["condition"])]
    fig, axes = plt.subplots(1, len(models), figsize=(7.5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        x = np.arange(len(conds))
        # the subject as the unit (stats.parquet's subject_* columns) where every bar has it, else the prompt
        mine = rows.filter(pl.col("model") == model)
        by_subject = "subject_ci_low" in mine.columns and mine["subject_ci_low"].is_not_null().all()
        cols, unit = (_SUBJECT_UNIT, "subjects") if by_subject else (_PROMPT_UNIT, "prompts")
        for k, (target, color) in enumerate((("distractor", "#d62728"), ("gold", "#1f77b4"))):
            sub = rows.filter((pl.col("model") == model) & (pl.col("target") == target))
            vals = {r["condition"]: _interval(r, cols) for r in sub.iter_rows(named=True)}
            mean = [vals[c][0] if c in vals else np.nan for c in conds]
            err = [
                [vals[c][0] - vals[c][1] if c in vals else 0 for c in conds],
                [vals[c][2] - vals[c][0] if c in vals else 0 for c in conds],
            ]
            err = np.nan_to_num(np.array(err, float))
            ax.bar(x + (k - 0.5) * 0.38, mean, 0.38, yerr=err, capsize=3, color=color, label=f"{target} token")
        ax.axhline(0, color="#444", lw=0.8)
        ax.set_xticks(x, conds)
        ax.set_ylabel(f"{metric} with context − without (nats)")
        ax.set_title(f"{model}: context-induced shift, relations weighted equally (95% CI over {unit})")
        ax.legend(frameon=False)
    return png(fig)


def topk_plot(example: dict | None) -> str | None:
    """example: {text_ctx, text_base, gold, distractor, ctx: [(token, prob)], base: [(token, prob)]}."""
    if not example:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, arm, title in ((axes[0], "base", "without context"), (axes[1], "ctx", "with context")):
        toks = [t for t, _ in example[arm]][::-1]
        probs = [p for _, p in example[arm]][::-1]
        colors = [
            "#d62728"
            if t.strip() == example["distractor"].split()[0]
            else "#1f77b4"
            if t.strip() == example["gold"].split()[0]
            else "#999"
            for t in toks
        ]
        ax.barh(range(len(toks)), probs, color=colors)
        ax.set_yticks(range(len(toks)), [repr(t) for t in toks])
        ax.set_xlabel("next-token probability")
        ax.set_title(title)
    pg, pd = example.get("p_gold", {}), example.get("p_distractor", {})
    probs = (
        f"; p(gold) {pg['base']:.2g} → {pg['ctx']:.2g}, p(distractor) {pd['base']:.2g} → {pd['ctx']:.2g}"
        if pg and pd
        else ""
    )
    fig.suptitle(
        f"Top-10 next tokens (blue: gold '{example['gold']}', red: distractor '{example['distractor']}'{probs})",
        fontsize=10,
    )
    return png(fig)


def heads_plot(heads: pl.DataFrame) -> str | None:
    if heads.is_empty():
        return None
    masks = sorted(set(zip(heads["model"], heads["relation"], heads["seed"])))[:4]
    fig, axes = plt.subplots(1, len(masks), figsize=(4.2 * len(masks), 5.2), squeeze=False)
    for ax, (model, relation, seed) in zip(axes[0], masks):
        g = heads.filter((pl.col("model") == model) & (pl.col("relation") == relation) & (pl.col("seed") == seed))
        grid = np.zeros((g["layer"].max() + 1, g["head"].max() + 1))
        for r in g.iter_rows(named=True):
            grid[r["layer"], r["head"]] = 1.0 if r["removed"] else 0.0
        ax.imshow(grid, cmap="Reds", vmin=0, vmax=1.4, aspect="auto", interpolation="nearest")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        name = "stable set" if seed < 0 else f"seed {seed}"
        ax.set_title(f"{relation}, {name}\n{int(grid.sum())} of {grid.size} heads removed", fontsize=9)
        ax.set_xticks(range(grid.shape[1]))
    return png(fig)


def ablation_plot(abl: pl.DataFrame) -> str | None:
    if abl.is_empty():
        return None
    pooled = pooled_variants(abl)
    searched = pooled.filter(pl.col("variant") == "random_heads").select(
        "model", "mask_relation", "seed", "ablation_method"
    )
    pooled = pooled.join(searched, on=["model", "mask_relation", "seed", "ablation_method"], how="semi")
    masks = sorted(
        set(zip(pooled["model"], pooled["mask_relation"], pooled["seed"])), key=lambda k: (k[0], k[1], k[2] < 0, k[2])
    )[:4]
    fig, axes = plt.subplots(len(masks), 2, figsize=(11, 3.4 * len(masks)), squeeze=False)
    colors = {
        "original": "#7f7f7f",
        "ablated": "#2ca02c",
        "random_heads": "#ff7f0e",
        "no_context": "#1f77b4",
        "prompted": "#9467bd",
    }
    for row, (model, mrel, seed) in zip(axes, masks):
        g = {
            r["variant"]: r
            for r in pooled.filter(
                (pl.col("model") == model) & (pl.col("mask_relation") == mrel) & (pl.col("seed") == seed)
            ).iter_rows(named=True)
        }
        names = [v for v in VARIANT_ORDER if v in g]
        for ax, key, label in (
            (row[0], "delta", "Δ = ℓ(gold) − ℓ(distractor)"),
            (row[1], "distractor_rank", "mean distractor rank (1 = top)"),
        ):
            ax.bar(range(len(names)), [g[v][key] for v in names], color=[colors[v] for v in names])
            if key == "delta" and "random_heads" in g:
                i = names.index("random_heads")
                ax.plot(
                    [i - 0.4, i + 0.4],
                    [g["random_heads"]["delta_p95"]] * 2,
                    color="k",
                    lw=1.5,
                    label="random heads: 95th pct",
                )
                ax.legend(frameon=False, fontsize=8)
            ax.set_xticks(range(len(names)), [VARIANT_LABEL[v] for v in names], fontsize=8)
            ax.set_ylabel(label)
            name = "stable set" if seed < 0 else f"seed {seed}"
            ax.set_title(
                f"mask {mrel} ({name}, {g['ablated']['n_heads_removed']} heads, "
                f"{g['ablated']['ablation_method']}), test split, n = {g['original']['n']}",
                fontsize=9,
            )
    fig.tight_layout()
    return png(fig)


def discovery_plot(log: pl.DataFrame) -> str | None:
    if log.is_empty():
        return None
    log = log.filter(pl.col("resample") == 0)
    runs = sorted(set(zip(log["model"], log["relation"], log["seed"])))[:4]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax2 = ax.twinx()
    for i, (model, relation, seed) in enumerate(runs):
        g = log.filter((pl.col("model") == model) & (pl.col("relation") == relation) & (pl.col("seed") == seed)).sort(
            "epoch"
        )
        c = plt.cm.tab10(i)
        ax.plot(g["epoch"], g["dev_delta"], "-o", color=c, ms=3, label=f"dev Δ: {relation} s{seed}")
        ax2.plot(g["epoch"], g["n_removed"], "--", color=c, alpha=0.7, label=f"heads removed: {relation} s{seed}")
        sel = g.filter(pl.col("selected"))
        ax.plot(sel["epoch"], sel["dev_delta"], "*", color="k", ms=12, label="selected epoch" if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev Δ (logits)")
    ax2.set_ylabel("heads removed (dashed)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, frameon=False, fontsize=8, loc="lower right")
    ax.set_title("Mask search: dev Δ and heads removed per epoch")
    return png(fig)


def stats_table(stats: pl.DataFrame, metric: str = "logprob") -> tuple[pl.DataFrame, str]:
    """The rows shown in the report (pooled, intact model, one metric) and their HTML."""
    rows = stats.filter(
        (pl.col("relation") == "ALL")
        & (pl.col("ablation") == "none")
        & (pl.col("metric") == metric)
        & pl.col("position").is_null()
    )
    rows = rows.sort("model", "target", "condition").select(["model"] + STATS_COLUMNS)
    head = "".join(
        f'<th class="{"l" if c in ("model", "relation", "condition", "target", "metric", "note") else ""}">{c}</th>'
        for c in rows.columns
    )
    body = []
    for r in rows.iter_rows(named=True):
        cells = []
        for c in rows.columns:
            v = r[c]
            if isinstance(v, float):
                cells.append(
                    f'<td data-v="{v!r}">{v:.3g}</td>'
                    if c in ("p_value", "p_adjusted")
                    else f'<td data-v="{v!r}">{v:.3f}</td>'
                )
            else:
                cells.append(f'<td class="l">{html.escape(str(v))}</td>' if isinstance(v, str) else f"<td>{v}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return rows, f'<div class="scroll"><table id="stats-table"><tr>{head}</tr>{"".join(body)}</table></div>'
