"""report.html: one self-contained page (inline CSS, PNGs as data URIs, no external references).

This module only assembles the page; every panel is drawn by a figure module (figures, head_figures,
context_figures, model_figures), all on the shared plotting base. Panels: (a) shifts per condition, (b) the
paper's Figure 1 example, (c) removed heads, (d) Δ and rank with the heads removed, (e) the discovery curve, (f) the
statistics table; (g) the random-head null, (h) transfer, (i) head maps, (j) k-curves, (n) stability across
searches, (o) faithfulness per ablation method, (p) the heads under every ablation method, (q) does removing the
heads make answers right, (r) the shift by passage position, (t) what the heads are (head types), (u) sentence-level
entrainment, (v) the head verdict with the subject as the unit, (w) the cross-fitted verdict per subject; (k)-(m)
several models.

Longer than 300 lines on purpose: every panel's title and caption is written here, in one place, in page order.
"""

from __future__ import annotations

import html
from pathlib import Path

import polars as pl

from entrainment.figures import (
    context_panels,
    head_panels,
    head_type_panels,
    model_panels,
    overview,
    sentence_panels,
    verdict_panels,
)
from entrainment.statistics.scaling import absent_reason
from entrainment.store.tables import read_parquet

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.2em;margin-top:2em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
.sub{color:#666}
figure{margin:1em 0}
figcaption{color:#555;font-size:.9em}
img{max-width:100%}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
th,td{border:1px solid #ddd;
padding:3px 7px;text-align:right}
th{background:#f3f3f3}
td,th{white-space:nowrap}
.scroll{overflow-x:auto}
td.l,th.l{text-align:left}
.kv td{text-align:left}
.missing{color:#a00}
.smoke{background:#fff3cd;border:1px solid #e0c36a;padding:.6em 1em;font-weight:bold}
"""
SMOKE_BANNER = (
    '<p class="smoke" id="smoke-run">Smoke run (the quick configuration, configs/quick.toml): every stage ran at its '
    "smallest size to check that the pipeline works. These numbers are not evidence; the head claims come from the "
    "default run and configs/heads.toml.</p>"
)


def _figure(panel: str, title: str, uri: str | None, caption: str) -> str:
    body = (
        f'<img alt="{html.escape(title)}" src="{uri}">'
        if uri
        else '<p class="missing">not available: run the stage first</p>'
    )
    return (
        f'<section id="panel-{panel}"><h2>({panel}) {html.escape(title)}</h2><figure>{body}'
        f"<figcaption>{html.escape(caption)}</figcaption></figure></section>"
    )


def _read(out: Path, name: str) -> pl.DataFrame:
    p = Path(out) / f"{name}.parquet"
    return read_parquet(p) if p.exists() else pl.DataFrame()


def _when(df: pl.DataFrame, draw, *args) -> str | None:
    return draw(df, *args) if not df.is_empty() else None


def first_sections(example: dict | None, stats, abl, heads, log) -> list[str]:
    """Panels (a)-(e)."""
    return [
        _figure(
            "a",
            "Contextual entrainment: shift of the gold and distractor log-probabilities",
            _when(stats, overview.shifts_plot),
            "Mean of (log p with context − log p without context) per condition, pooled over relations, intact model; "
            "bars are 95% CIs of the paired difference.",
        ),
        _figure(
            "b",
            "One example: top-10 next tokens without and with context (the paper's Figure 1)",
            overview.topk_plot(example),
            f"With context: {example['text_ctx']!r}. Without: {example['text_base']!r}." if example else "",
        ),
        _figure(
            "c",
            "Removed heads (layer × head)",
            _when(heads, overview.heads_plot),
            "Red cells: heads removed by each seed's selected mask and by the stable set (heads.parquet).",
        ),
        _figure(
            "d",
            "Effect of removing the heads: Δ and distractor rank on the held-out test split",
            _when(abl, overview.ablation_plot),
            "Pooled over the conditions of the mask's own relation, the search's ablation method. Random heads: the "
            "same number of heads drawn at random, mean over draws; the black line is the 95th percentile of Δ over "
            "draws; prompting baseline: the intact model with an instruction before the query.",
        ),
        _figure(
            "e",
            "Discovery curve",
            _when(log, overview.discovery_plot),
            "Dev Δ (solid) and heads removed (dashed) after each epoch of each seed's search on the full training "
            "split; the star marks the epoch chosen by the selection rule.",
        ),
    ]


def head_sections(out: Path, abl: pl.DataFrame, heads: pl.DataFrame) -> list[str]:
    """Panels (g)-(j), (n)-(p): the null, transfer, head maps, k-curves, stability, faithfulness, methods."""
    draws, scores, agree = _read(out, "null_draws"), _read(out, "head_scores"), _read(out, "head_agreement")
    stab, overlap = _read(out, "head_stability"), _read(out, "head_overlap")
    return [
        _figure(
            "g",
            "Is the learned mask better than random heads? The random-head null",
            head_panels.null_plot(draws, abl) if not draws.is_empty() and not abl.is_empty() else None,
            "Mean gain in Δ on a fixed subsample of test items of the training condition: each orange bar counts "
            "random "
            "head sets of the mask's size; the green line is the learned mask on the same items. Empirical p = "
            "(1 + #draws ≥ observed) / (1 + draws).",
        ),
        _figure(
            "h",
            "Transfer: masks (rows) evaluated on every relation's test split (columns)",
            _when(abl, head_panels.transfer_plot),
            "Mean gain in Δ = ℓ(gold) − ℓ(distractor) from removing the mask's heads; shown when masks were learned on "
            "several relations (configs/paper.toml).",
        ),
        _figure(
            "i",
            "Head-importance maps: learned mask, exhaustive single-head scan, attribution patching",
            head_panels.head_maps_plot(scores, heads) if not scores.is_empty() else None,
            "Red = removing the head raises Δ (an entrainment head). Scan and AtP score each head alone on the dev "
            "items "
            "(head_scores.parquet), under the search's ablation method.",
        ),
        _figure(
            "j",
            "k-curves: test Δ after removing the top-k heads of each ranking",
            _when(agree, head_panels.k_curve_plot),
            "Scan, AtP and the learned mask's logits ranked, beside random k-head sets (mean); head_agreement.parquet.",
        ),
        _figure(
            "n",
            "Stability: which heads every search removes",
            head_panels.stability_plot(stab, overlap) if not stab.is_empty() else None,
            "Left: inclusion frequency of each head over all searches (seeds × bootstrap resamples of the training "
            "items), the stable set outlined. Right: pairwise Jaccard of the searches' head sets beside Niu et al.'s "
            "0.32-0.55 on Llama-3.1-8B (head_stability.parquet, head_overlap.parquet).",
        ),
        _figure(
            "o",
            "Faithfulness: the share of the entrainment gap closed by removing the top-k heads, per ablation method",
            _when(agree, head_panels.faithfulness_plot),
            "f(k) = (Δ_k − Δ_ctx) / (Δ_noctx − Δ_ctx) on the test subsample: 0 = as with context, 1 = as without "
            "context; the legend gives each ranking's normalised area over k = 0..K.",
        ),
        _figure(
            "p",
            "The same heads, removed three ways",
            _when(abl, context_panels.methods_plot),
            "Gain in Δ on the test split (training condition) with the mask's heads zeroed, replaced by their mean "
            "over the no-context training prompts, or replaced by a donor item's activations (resample).",
        ),
    ]


def context_sections(stats: pl.DataFrame, abl: pl.DataFrame) -> list[str]:
    """Panels (q)-(r): accuracy under misleading contexts, and the shift by passage position."""
    return [
        _figure(
            "q",
            "Does removing the heads help? Top-1 accuracy under misleading contexts",
            _when(abl, context_panels.accuracy_plot),
            "Share of test items whose gold first token is the top-1 prediction, with a counterfactual sentence or "
            "several passages one of which misleads: intact, heads removed, random heads, the prompting baseline "
            "(an instruction before the query), and without context. Error bars: 95% CI of the change vs intact "
            "(paired t-test on the 0/1 differences).",
        ),
        _figure(
            "r",
            "Multi-passage contexts: entrainment by the position of the misleading passage",
            _when(stats, context_panels.position_plot),
            "Context-induced shift of the distractor (red) and gold (blue) log-probability with the distractor passage "
            "at each position (stats.parquet rows with a position).",
        ),
    ]


def verdict_sections(out: Path) -> list[str]:
    """Panels (v)-(w): the head verdict with the subject as the unit, and the cross-fitted verdict per subject."""
    ver, sg = _read(out, "verdict"), _read(out, "subject_gains")
    return [
        _figure(
            "v",
            "The head verdict: gain with and without context, and their difference, per subject",
            _when(ver, verdict_panels.verdict_plot),
            "verdict.parquet: per mask on its own relation's test items (crossfit: every subject, each tested by the "
            "fold mask that never saw it), the mean over query subjects of each subject's mean change in Δ when the "
            "heads are removed, with context (green), without context (grey, heads removed in both arms) and their "
            "difference (purple: the context-specific part). Error bars: 95% t CI over subjects (df = subjects − 1).",
        ),
        _figure(
            "w",
            "Cross-fitted verdict: one point per subject, intact vs its fold's heads removed",
            _when(sg, verdict_panels.subject_plot),
            "subject_gains.parquet rows of `crossfit:<relation>`: each subject's mean Δ with context, intact (x) and "
            "with the heads its fold's search found without it removed (y); above the diagonal = the heads help that "
            "subject; point size grows with its items.",
        ),
    ]


def type_sections(out: Path) -> list[str]:
    """Panel (t): what the entrainment heads are (head_types.parquet, head_type_agreement.parquet)."""
    types, scores, agree = _read(out, "head_types"), _read(out, "head_scores"), _read(out, "head_type_agreement")
    return [
        _figure(
            "t",
            "What the entrainment heads are: head-type scores and the induction dissociation",
            head_type_panels.head_types_plot(types, scores, agree) if not types.is_empty() else None,
            "Layers × heads maps (first model): previous-token, duplicate-token and induction attention on repeated "
            "random tokens, OV copying (eigenvalue positivity) and copy suppression, attention to the distractor and "
            "its direct logit attribution (context minus none), beside the scan's entrainment map. Right: removing "
            "the top induction / copying heads outside the entrainment heads, and the entrainment heads outside "
            "them; bars = entrainment gain (Δ change) and induction loss (nats), ticks = random sets of the same "
            "size (head_type_agreement.parquet; docs/head-types.md).",
        ),
    ]


def sentence_sections(out: Path) -> list[str]:
    """Panel (u): sentence-level entrainment (sentence_stats.parquet)."""
    st = _read(out, "sentence_stats")
    return [
        _figure(
            "u",
            "Sentence-level entrainment: a whole sentence read in the context, scored again",
            _when(st, sentence_panels.sentence_plot),
            "Mean log-prob per token of a sentence with its context present minus absent (the query alone), pooled "
            "over relations (weighted equally), 95% CIs over query subjects. Δ_self: the context sentence itself; "
            "Δ_net: Δ_self minus the same for a length-matched true sentence of the relation that is nowhere in the "
            "prompt; gap: a counterfactual statement about the query's own subject vs the true one, after reading "
            "the counterfactual. Right: on the stable set's relation, intact vs the stable heads removed (zero "
            "ablation); ticks = the mean over random head sets of the same size (sentence_stats.parquet; "
            "docs/sentences.md).",
        ),
    ]


def model_sections(out: Path, stats: pl.DataFrame, heads: pl.DataFrame) -> list[str]:
    """Panels (k)-(m), (x), (y), shown when several models are in --out: shifts side by side, heads removed per
    model, the scaling fit (scaling.parquet, >= 3 models), heads by relative depth, the sentence-level scaling fit."""
    models, scaling = _read(out, "models"), _read(out, "scaling")
    sentence_stats, sentence_fits = _read(out, "sentence_stats"), _read(out, "sentence_scaling")
    n = stats["model"].n_unique() if not stats.is_empty() else 0
    if n < 2:
        return []
    return [
        _figure(
            "k",
            "Models side by side: shift of the distractor and gold logits per condition",
            model_panels.comparison_plot(stats, models),
            "Mean of ℓ(t | context) − ℓ(t | no context) (logits, the follow-up's Δ_t), pooled over relations, intact "
            "models, 95% CIs of the paired difference; models ordered by size (models.parquet).",
        ),
        _figure(
            "l",
            "Heads removed per model, as a share of all its heads",
            model_panels.heads_share_plot(heads, models),
            "From heads.parquet: the selected masks of each model, mean over seeds.",
        ),
        _figure(
            "m",
            "Scaling: entrainment against model size (log-log)",
            model_panels.scaling_plot(stats, scaling, models) if not scaling.is_empty() else None,
            "Distractor logit shift per condition against non-embedding parameters with the OLS power-law fit of "
            "scaling.parquet; right, the control: the gold's logit without context against the same N (a raw shift "
            "is confounded when the baselines move with size). " + (absent_reason(n) or ""),
        ),
        _figure(
            "x",
            "Heads by relative depth, per model",
            model_panels.depth_plot(heads, models),
            "Every removed head of every learned mask (seed searches, cross-fitted folds, stable sets) at (layer + "
            "0.5) / layers, so models of 18 to 30 layers compare (heads.parquet).",
        ),
        _figure(
            "y",
            "Sentence-level entrainment against model size",
            model_panels.sentence_scaling_plot(sentence_stats, sentence_fits, models)
            if not sentence_fits.is_empty()
            else None,
            "Pooled Δ_self and Δ_net per condition against non-embedding parameters with the OLS power-law fits of "
            "sentence_scaling.parquet (|mean|; 'signs differ' where the models disagree in sign). "
            + (absent_reason(n, "sentence_scaling") or ""),
        ),
    ]


def build(out: Path, example: dict | None = None, smoke: bool = False) -> str:
    """The whole page from the tables in `out` (missing tables give 'not available' panels).

    Args:
        out: the output folder.
        example: the example item's top tokens (the report's first panel), or None.
        smoke: label the page a smoke run (the quick configuration): its numbers are not evidence.

    Returns:
        The self-contained HTML page.
    """
    stats, abl, heads, log, prompts = (_read(out, n) for n in ("stats", "ablation", "heads", "discovery", "prompts"))
    facts = []
    if not prompts.is_empty():
        facts.append(("relations", ", ".join(sorted(prompts["relation"].unique()))))
        per_split = prompts.group_by("split").len().sort("split").iter_rows()
        facts.append(("prompts", f"{len(prompts)} ({', '.join(f'{k}: {v}' for k, v in per_split)})"))
    if not stats.is_empty():
        facts.append(("models", ", ".join(sorted(stats["model"].unique()))))
    if not log.is_empty() and "search_dtype" in log.columns:
        facts.append(("search dtype", ", ".join(sorted(log["search_dtype"].unique()))))
    sections = first_sections(example, stats, abl, heads, log)
    sections += head_sections(out, abl, heads)
    sections += context_sections(stats, abl)
    sections += verdict_sections(out)
    sections += type_sections(out)
    sections += sentence_sections(out)
    sections += model_sections(out, stats, heads)
    table = (
        overview.stats_table(stats)[1]
        if not stats.is_empty()
        else '<p class="missing">not available: run the stats stage first</p>'
    )
    sections.append(
        f'<section id="panel-f"><h2>(f) Statistics (paired t-tests, pooled over relations, log-prob)</h2>{table}'
        f'<p class="sub">Full table: stats.parquet (every relation and metric); contrasts.parquet compares '
        f"conditions.</p></section>"
    )
    kv = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Contextual entrainment report</title>'
        f"<style>{CSS}</style></head><body><h1>Contextual entrainment report</h1>"
        f'<p class="sub">Niu et al., "Llama See, Llama Do", ACL 2025 (arXiv 2505.09338). Output folder: '
        f"{html.escape(str(out))}</p>"
        + (SMOKE_BANNER if smoke else "")
        + f'<table class="kv">{kv}</table>'
        + "".join(sections)
        + "</body></html>"
    )


def pick_example(prompts: pl.DataFrame, measurements: pl.DataFrame, model: str) -> dict | None:
    """The related-condition item whose distractor log-prob rose most (ties: smallest prompt_id)."""
    m = measurements.filter(
        (pl.col("model") == model) & (pl.col("ablation") == "none") & (pl.col("condition") == "related")
    )
    if m.is_empty():
        return None
    m = m.with_columns((pl.col("distractor_logprob_ctx") - pl.col("distractor_logprob_base")).alias("shift"))
    best = m.sort(["shift", "prompt_id"], descending=[True, False]).row(0, named=True)
    return prompts.filter(pl.col("prompt_id") == best["prompt_id"]).row(0, named=True)
