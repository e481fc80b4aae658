"""report.html: one self-contained page (inline CSS, PNGs as data URIs, no external references).

Panels: (a) context-induced shifts per condition with 95% CIs; (b) the top-10 next tokens of one
example with vs without context (the paper's Figure 1); (c) the removed-head heatmap; (d) delta and
distractor rank for original / ablated / random heads / no context; (e) the discovery curve;
(f) the statistics table.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from entrainment.ablate import pooled_variants  # noqa: E402
from entrainment.tables import read_parquet  # noqa: E402

CONDITION_ORDER = ["counterfactual", "related", "irrelevant", "random"]
VARIANT_ORDER = ["original", "ablated", "random_heads", "no_context"]
VARIANT_LABEL = {"original": "original\n(with context)", "ablated": "heads removed\n(with context)",
                 "random_heads": "random heads\nremoved", "no_context": "original\n(no context)"}
STATS_COLUMNS = ["relation", "condition", "target", "metric", "n", "mean_ctx", "mean_base", "mean_diff",
                 "ci_low", "ci_high", "t", "p_value", "p_adjusted", "effect_size", "note"]

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
color:#222;line-height:1.45;padding:0 1em}h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;
border-bottom:1px solid #ddd;padding-bottom:.2em}.sub{color:#666}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
img{max-width:100%}table{border-collapse:collapse;font-size:.82em;margin:.5em 0}th,td{border:1px solid #ddd;
padding:3px 7px;text-align:right}th{background:#f3f3f3}td,th{white-space:nowrap}.scroll{overflow-x:auto}td.l,th.l{text-align:left}.kv td{text-align:left}
.missing{color:#a00}"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(panel: str, title: str, uri: str | None, caption: str) -> str:
    body = f'<img alt="{html.escape(title)}" src="{uri}">' if uri else '<p class="missing">not available: run the stage first</p>'
    return (f'<section id="panel-{panel}"><h2>({panel}) {html.escape(title)}</h2><figure>{body}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure></section>")


def shifts_plot(stats: pl.DataFrame, metric: str = "logprob") -> str | None:
    rows = stats.filter((pl.col("relation") == "ALL") & (pl.col("ablation") == "none") & (pl.col("metric") == metric))
    if rows.is_empty():
        return None
    models = sorted(rows["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(7.5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        x = np.arange(len(CONDITION_ORDER))
        for k, (target, color) in enumerate((("distractor", "#d62728"), ("gold", "#1f77b4"))):
            sub = rows.filter((pl.col("model") == model) & (pl.col("target") == target))
            vals = {r["condition"]: r for r in sub.iter_rows(named=True)}
            mean = [vals[c]["mean_diff"] if c in vals else np.nan for c in CONDITION_ORDER]
            err = [[vals[c]["mean_diff"] - vals[c]["ci_low"] if c in vals else 0 for c in CONDITION_ORDER],
                   [vals[c]["ci_high"] - vals[c]["mean_diff"] if c in vals else 0 for c in CONDITION_ORDER]]
            ax.bar(x + (k - 0.5) * 0.38, mean, 0.38, yerr=err, capsize=3, color=color, label=f"{target} token")
        ax.axhline(0, color="#444", lw=0.8)
        ax.set_xticks(x, CONDITION_ORDER)
        ax.set_ylabel(f"{metric} with context − without (nats)")
        ax.set_title(f"{model}: context-induced shift, pooled over relations (95% CI)")
        ax.legend(frameon=False)
    return _png(fig)


def topk_plot(example: dict | None) -> str | None:
    """example: {text_ctx, text_base, gold, distractor, ctx: [(token, prob)], base: [(token, prob)]}."""
    if not example:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, arm, title in ((axes[0], "base", "without context"), (axes[1], "ctx", "with context")):
        toks = [t for t, _ in example[arm]][::-1]
        probs = [p for _, p in example[arm]][::-1]
        colors = ["#d62728" if t.strip() == example["distractor"].split()[0] else
                  "#1f77b4" if t.strip() == example["gold"].split()[0] else "#999" for t in toks]
        ax.barh(range(len(toks)), probs, color=colors)
        ax.set_yticks(range(len(toks)), [repr(t) for t in toks])
        ax.set_xlabel("next-token probability")
        ax.set_title(title)
    pg, pd = example.get("p_gold", {}), example.get("p_distractor", {})
    probs = (f"; p(gold) {pg['base']:.2g} → {pg['ctx']:.2g}, p(distractor) {pd['base']:.2g} → {pd['ctx']:.2g}"
             if pg and pd else "")
    fig.suptitle(f"Top-10 next tokens (blue: gold '{example['gold']}', red: distractor '{example['distractor']}'{probs})",
                 fontsize=10)
    return _png(fig)


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
        ax.set_title(f"{relation}, seed {seed}\n{int(grid.sum())} of {grid.size} heads removed", fontsize=9)
        ax.set_xticks(range(grid.shape[1]))
    return _png(fig)


def ablation_plot(abl: pl.DataFrame) -> str | None:
    if abl.is_empty():
        return None
    pooled = pooled_variants(abl)
    masks = sorted(set(zip(pooled["model"], pooled["mask_relation"], pooled["seed"])))[:3]
    fig, axes = plt.subplots(len(masks), 2, figsize=(11, 3.4 * len(masks)), squeeze=False)
    colors = {"original": "#7f7f7f", "ablated": "#2ca02c", "random_heads": "#ff7f0e", "no_context": "#1f77b4"}
    for row, (model, mrel, seed) in zip(axes, masks):
        g = {r["variant"]: r for r in pooled.filter((pl.col("model") == model) & (pl.col("mask_relation") == mrel)
                                                   & (pl.col("seed") == seed)).iter_rows(named=True)}
        names = [v for v in VARIANT_ORDER if v in g]
        for ax, key, label in ((row[0], "delta", "Δ = ℓ(gold) − ℓ(distractor)"), (row[1], "distractor_rank", "mean distractor rank (1 = top)")):
            ax.bar(range(len(names)), [g[v][key] for v in names], color=[colors[v] for v in names])
            if key == "delta" and "random_heads" in g:
                i = names.index("random_heads")
                ax.plot([i - 0.4, i + 0.4], [g["random_heads"]["delta_p95"]] * 2, color="k", lw=1.5, label="random heads: 95th pct")
                ax.legend(frameon=False, fontsize=8)
            ax.set_xticks(range(len(names)), [VARIANT_LABEL[v] for v in names], fontsize=8)
            ax.set_ylabel(label)
            ax.set_title(f"mask {mrel} (seed {seed}, {g['ablated']['n_heads_removed']} heads), test split, n = {g['original']['n']}", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def discovery_plot(log: pl.DataFrame) -> str | None:
    if log.is_empty():
        return None
    runs = sorted(set(zip(log["model"], log["relation"], log["seed"])))[:4]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax2 = ax.twinx()
    for i, (model, relation, seed) in enumerate(runs):
        g = log.filter((pl.col("model") == model) & (pl.col("relation") == relation) & (pl.col("seed") == seed)).sort("epoch")
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
    return _png(fig)


def stats_table(stats: pl.DataFrame, metric: str = "logprob") -> tuple[pl.DataFrame, str]:
    """The rows shown in the report (pooled, intact model, one metric) and their HTML."""
    rows = stats.filter((pl.col("relation") == "ALL") & (pl.col("ablation") == "none") & (pl.col("metric") == metric))
    rows = rows.sort("model", "target", "condition").select(["model"] + STATS_COLUMNS)
    head = "".join(f'<th class="{"l" if c in ("model", "relation", "condition", "target", "metric", "note") else ""}">{c}</th>'
                   for c in rows.columns)
    body = []
    for r in rows.iter_rows(named=True):
        cells = []
        for c in rows.columns:
            v = r[c]
            if isinstance(v, float):
                cells.append(f'<td data-v="{v!r}">{v:.3g}</td>' if c in ("p_value", "p_adjusted") else f'<td data-v="{v!r}">{v:.3f}</td>')
            else:
                cells.append(f'<td class="l">{html.escape(str(v))}</td>' if isinstance(v, str) else f"<td>{v}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return rows, f'<div class="scroll"><table id="stats-table"><tr>{head}</tr>{"".join(body)}</table></div>'


def _read(out: Path, name: str) -> pl.DataFrame:
    p = Path(out) / f"{name}.parquet"
    return read_parquet(p) if p.exists() else pl.DataFrame()


def build(out: Path, example: dict | None = None) -> str:
    """The whole page from the tables in `out` (missing tables give 'not available' panels)."""
    stats = _read(out, "stats")
    abl = _read(out, "ablation")
    heads = _read(out, "heads")
    log = _read(out, "discovery")
    prompts = _read(out, "prompts")
    facts = []
    if not prompts.is_empty():
        facts.append(("relations", ", ".join(sorted(prompts["relation"].unique()))))
        facts.append(("prompts", f"{len(prompts)} ({', '.join(f'{k}: {v}' for k, v in prompts.group_by('split').len().sort('split').iter_rows())})"))
    if not stats.is_empty():
        facts.append(("models", ", ".join(sorted(stats["model"].unique()))))
    sections = [
        _figure("a", "Contextual entrainment: shift of the gold and distractor log-probabilities", shifts_plot(stats) if not stats.is_empty() else None,
                "Mean of (log p with context − log p without context) per condition, pooled over relations, intact model; bars are 95% CIs of the paired difference."),
        _figure("b", "One example: top-10 next tokens without and with context (the paper's Figure 1)", topk_plot(example),
                f"With context: {example['text_ctx']!r}. Without: {example['text_base']!r}." if example else ""),
        _figure("c", "Removed heads (layer × head)", heads_plot(heads) if not heads.is_empty() else None,
                "Red cells: heads zeroed by the selected mask (heads.parquet)."),
        _figure("d", "Effect of removing the heads: Δ and distractor rank on the held-out test split", ablation_plot(abl) if not abl.is_empty() else None,
                "Pooled over the four conditions of the mask's own relation. Random heads: the same number of heads drawn at random, mean over draws; the black line is the 95th percentile of Δ over draws."),
        _figure("e", "Discovery curve", discovery_plot(log) if not log.is_empty() else None,
                "Dev Δ (solid) and heads removed (dashed) after each epoch; the star marks the epoch chosen by the selection rule."),
    ]
    sections += head_sections(out, abl, heads)
    sections += model_sections(out, stats, heads)
    table = stats_table(stats)[1] if not stats.is_empty() else '<p class="missing">not available: run the stats stage first</p>'
    sections.append(f'<section id="panel-f"><h2>(f) Statistics (paired t-tests, pooled over relations, log-prob)</h2>{table}'
                    f'<p class="sub">Full table: stats.parquet (every relation and metric); contrasts.parquet compares conditions.</p></section>')
    kv = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Contextual entrainment report</title>'
            f"<style>{CSS}</style></head><body><h1>Contextual entrainment report</h1>"
            f'<p class="sub">Niu et al., "Llama See, Llama Do", ACL 2025 (arXiv 2505.09338). Output folder: {html.escape(str(out))}</p>'
            f'<table class="kv">{kv}</table>' + "".join(sections) + "</body></html>")


def head_sections(out: Path, abl: pl.DataFrame, heads: pl.DataFrame) -> list[str]:
    """Panels (g)-(j): the random-head null, transfer between relations, head maps and k-curves."""
    from entrainment import head_figures as hf

    draws, scores, agree = _read(out, "null_draws"), _read(out, "head_scores"), _read(out, "head_agreement")
    return [
        _figure("g", "Is the learned mask better than random heads? The random-head null",
                hf.null_plot(draws, abl) if not draws.is_empty() and not abl.is_empty() else None,
                "Mean gain in Δ on a fixed subsample of test items of the training condition: each orange bar counts random "
                "head sets of the mask's size; the green line is the learned mask on the same items. Empirical p = "
                "(1 + #draws ≥ observed) / (1 + draws)."),
        _figure("h", "Transfer: masks (rows) evaluated on every relation's test split (columns)",
                hf.transfer_plot(abl) if not abl.is_empty() else None,
                "Mean gain in Δ = ℓ(gold) − ℓ(distractor) from removing the mask's heads; shown when masks were learned on "
                "several relations (configs/paper.toml)."),
        _figure("i", "Head-importance maps: learned mask, exhaustive single-head scan, attribution patching",
                hf.head_maps_plot(scores, heads) if not scores.is_empty() else None,
                "Red = removing the head raises Δ (an entrainment head). Scan and AtP score each head alone on the dev items "
                "(head_scores.parquet)."),
        _figure("j", "Faithfulness curves: test Δ after removing the top-k heads of each ranking",
                hf.k_curve_plot(agree) if not agree.is_empty() else None,
                "Scan, AtP and the learned mask's logits ranked, beside random k-head sets (mean); head_agreement.parquet."),
    ]


def model_sections(out: Path, stats: pl.DataFrame, heads: pl.DataFrame) -> list[str]:
    """Panels (k)-(m), shown when several models are in --out: shifts side by side, heads removed per model,
    and the scaling fit (scaling.parquet, >= 3 models)."""
    from entrainment import model_figures as mf
    from entrainment.scaling import absent_reason

    models, scaling = _read(out, "models"), _read(out, "scaling")
    n = stats["model"].n_unique() if not stats.is_empty() else 0
    if n < 2:
        return []
    return [
        _figure("k", "Models side by side: shift of the distractor and gold logits per condition",
                mf.comparison_plot(stats, models),
                "Mean of ℓ(t | context) − ℓ(t | no context) (logits, the follow-up's Δ_t), pooled over relations, intact "
                "models, 95% CIs of the paired difference; models ordered by size (models.parquet)."),
        _figure("l", "Heads removed per model, as a share of all its heads", mf.heads_share_plot(heads, models),
                "From heads.parquet: the selected masks of each model, mean over seeds."),
        _figure("m", "Scaling: entrainment against model size (log-log)",
                mf.scaling_plot(stats, scaling, models) if not scaling.is_empty() else None,
                "Distractor logit shift per condition with the OLS power-law fit of scaling.parquet. "
                + (absent_reason(n) or "")),
    ]


def pick_example(prompts: pl.DataFrame, measurements: pl.DataFrame, model: str) -> dict | None:
    """The related-condition item whose distractor log-prob rose most (ties: smallest prompt_id)."""
    m = measurements.filter((pl.col("model") == model) & (pl.col("ablation") == "none") & (pl.col("condition") == "related"))
    if m.is_empty():
        return None
    m = m.with_columns((pl.col("distractor_logprob_ctx") - pl.col("distractor_logprob_base")).alias("shift"))
    best = m.sort(["shift", "prompt_id"], descending=[True, False]).row(0, named=True)
    return prompts.filter(pl.col("prompt_id") == best["prompt_id"]).row(0, named=True)


def example_topk(loaded, row: dict, k: int = 10) -> dict:
    """Top-k next tokens (text, probability) for one prompt row, with and without context."""
    import torch

    from entrainment.scoring import Request, score
    from entrainment.tokens import Tokens

    tk = Tokens(loaded.tokenizer)
    g, d = tk.answer(row["text_base"], row["gold"])[0], tk.answer(row["text_base"], row["distractor"])[0]
    reqs = [Request(tk.prompt(row["text_base"])), Request(tk.prompt(row["text_ctx"]))]
    res = score(loaded.model, reqs, [(g, d), (g, d)], loaded.tokenizer.pad_token_id, keep_dist=True)
    out = {key: row[key] for key in ("text_ctx", "text_base", "gold", "distractor")}
    out["p_gold"], out["p_distractor"] = {}, {}
    for arm, r in zip(("base", "ctx"), res):
        p, idx = torch.topk(r.dist.exp(), k)
        out[arm] = [(loaded.tokenizer.decode([int(i)]), float(v)) for v, i in zip(p, idx)]
        out["p_gold"][arm], out["p_distractor"][arm] = (float(torch.tensor(x).exp()) for x in r.probe_logprob)
    return out
