"""Every Parquet table the pipeline writes, column by column (the contract of ../SPEC.md plus additions).

Each stage writes its tables through ``tables.write_table``, which casts to the schema below and
refuses a frame with missing columns. ``python -m entrainment.store.schema`` prints this as Markdown.

It is longer than 300 lines because every table is documented in this one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from entrainment.vocabulary import ALL_CONDITIONS, SPLITS

S, I, F, B = pa.string(), pa.int64(), pa.float64(), pa.bool_()  # noqa: E741  (the four column types)
FL = pa.list_(pa.float64())


@dataclass(frozen=True)
class Table:
    """One table: its name, grain, columns (name, Arrow type, meaning) and what a valid table satisfies when read
    back (``key``: unique together; ``not_null``: never null; ``allowed``: column -> the values it may hold)."""

    name: str
    grain: str
    columns: tuple[tuple[str, pa.DataType, str], ...]
    key: tuple[str, ...] = ()
    not_null: tuple[str, ...] = ()
    allowed: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"

    @property
    def names(self) -> list[str]:
        return [c[0] for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(n, t) for n, t, _ in self.columns])

    def polars_schema(self) -> dict[str, pl.DataType]:
        return dict(pl.from_arrow(self.arrow_schema().empty_table()).schema)


PROMPTS = Table(
    "prompts",
    "one row per (relation, condition, query subject, context) item",
    (
        (
            "prompt_id",
            S,
            "stable id: sha1 of (relation, condition, subject, context, query); same data + seed -> same id",
        ),
        ("relation", S, "LRE relation `name` (own items: any label)"),
        (
            "condition",
            S,
            "related | irrelevant | random | counterfactual | passages (several passages, one carrying the "
            "distractor) | none (own items without context)",
        ),
        ("subject", S, "query subject"),
        ("gold", S, "true object of the query subject"),
        ("distractor", S, "the word planted in the context (never equal to gold)"),
        ("context", S, "the context text (random: ' word.' with a leading space, so the word is tokenised as scored)"),
        ("query", S, "the query prompt"),
        ("text_ctx", S, "model input with context: context + ' ' + query"),
        ("text_base", S, "model input without context: the query"),
        ("split", S, "train | dev | test, disjoint by query subject"),
        (
            "pair_id",
            S,
            "shared by a matched related/counterfactual pair (same query, template, context subject); null otherwise",
        ),
        ("context_subject", S, "subject of the context fact ('' for random and own items)"),
        (
            "query_template",
            S,
            "the LRE query template of the query (template_holdout holds one out of train/dev); null for own items",
        ),
        ("position", I, "passages: 1-based position of the distractor passage among the n_passages; null otherwise"),
        ("n_passages", I, "passages: number of passages in the context; null otherwise"),
        (
            "text_prompted",
            S,
            "the prompting baseline's input: context + ' ' + instruction + ' ' + query "
            "(Config.prompt_instruction); differs from text_ctx only by the instruction",
        ),
        (
            "fold",
            I,
            "cross-fitting fold (0..crossfit_folds-1) of the row's query subject, for discovery relations: the "
            "subjects are split into folds by a seeded shuffle, and fold f's subjects are tested by masks searched "
            "on the other folds only; null elsewhere (and with crossfit_folds = 0)",
        ),
    ),
    key=("prompt_id",),
    not_null=(
        "prompt_id",
        "relation",
        "condition",
        "gold",
        "distractor",
        "query",
        "text_ctx",
        "text_base",
        "split",
        "text_prompted",
    ),
    allowed=(
        ("condition", ALL_CONDITIONS),
        ("split", SPLITS),
    ),
)

_MEAS_COLS = [
    ("prompt_id", S, "from prompts"),
    ("relation", S, "from prompts"),
    ("condition", S, "from prompts"),
    ("split", S, "from prompts"),
    ("model", S, "normalised model spec"),
    (
        "ablation",
        S,
        "`none` for the intact model, else the id of the removed head set; a learned mask's id is "
        "`mask:<relation>:seed<N>:<hash of its sorted heads>` (the stable set: `stable:<relation>:<hash>`), "
        "so a changed mask never shares an id; `@mean` / `@resample` is appended for those methods",
    ),
    (
        "ablation_label",
        S,
        "readable name of the head set (`none`, `mask:<relation>:seed<N>`, `stable:<relation>` or `heads-3.4,10.7`)",
    ),
    ("ablation_method", S, "how the heads were removed: zero | mean | resample (`none` for the intact model)"),
    ("gold_token_id", I, "first token of ' ' + gold under this tokenizer"),
    ("distractor_token_id", I, "first token of ' ' + distractor under this tokenizer"),
    ("collision", B, "gold and distractor share that first token"),
    ("distractor_in_context", B, "the distractor's first token occurs in the with-context input ids (harness check)"),
]
for _t in ("gold", "distractor"):
    for _arm, _what in (("ctx", "with context"), ("base", "without context")):
        _MEAS_COLS += [
            (f"{_t}_logit_{_arm}", F, f"next-token logit of the {_t} first token at the last real position, {_what}"),
            (f"{_t}_logprob_{_arm}", F, f"log-softmax of that token, {_what}"),
            (f"{_t}_rank_{_arm}", I, f"rank of that token among the vocabulary (1 = top), {_what}"),
            (f"{_t}_seq_logprob_{_arm}", F, f"log-prob of the whole answer ' ' + {_t} (all its tokens), {_what}"),
        ]
MEASUREMENTS = Table(
    "measurements",
    "one row per (prompt, model, ablation)",
    tuple(_MEAS_COLS),
    key=("prompt_id", "model", "ablation"),
    not_null=("prompt_id", "model", "ablation", "condition"),
    allowed=(("condition", ALL_CONDITIONS),),
)

_GROUP = (
    ("model", S, "model spec"),
    ("ablation", S, "`none` or head-set id"),
    ("relation", S, "relation name, or `ALL` = pooled over relations"),
)
STATS = Table(
    "stats",
    "one row per (model, ablation, relation or ALL, condition, position, target, metric)",
    _GROUP
    + (
        ("condition", S, "context condition"),
        (
            "position",
            I,
            "null: all items of the condition; passages: only items whose distractor passage is at this "
            "1-based position (n_passages = nearest the query)",
        ),
        ("target", S, "gold | distractor"),
        ("metric", S, "logit | logprob | prob (= exp logprob) | rank | seq_logprob"),
        ("n", I, "pairs used"),
        ("mean_ctx", F, "mean with context (ALL: the mean of the relations' means)"),
        ("mean_base", F, "mean without context (ALL: the mean of the relations' means)"),
        ("mean_diff", F, "mean of diff = ctx - base, prompt level (ALL: the relations' means averaged, see pooling)"),
        ("sd_diff", F, "sample sd of diff over the items (ALL: over every item of every relation)"),
        ("t", F, "paired t statistic, prompt level (ALL: mean_diff / sqrt(sum_r sd_r^2 / n_r) * R)"),
        ("df", F, "n - 1 (ALL: Welch-Satterthwaite df of the equal-weight combination)"),
        ("p_value", F, "two-sided p"),
        ("ci_low", F, "95% CI of mean_diff, low"),
        ("ci_high", F, "95% CI of mean_diff, high"),
        ("effect_size", F, "Cohen's d_z = mean_diff / sd_diff"),
        (
            "p_adjusted",
            F,
            "Holm-adjusted within each (model, ablation, target, metric) family (position rows: a family of their own)",
        ),
        ("note", S, "why t/p are NaN (n < 2, zero variance), else empty"),
        (
            "pooling",
            S,
            "ALL rows: how relations are weighted -- relations_equal (each relation's mean counts once, whatever "
            "its number of items: mean_diff, mean_ctx, mean_base and the subject_* columns); null on per-relation rows",
        ),
        ("n_subjects", I, "query subjects behind the row (the unit of the subject_* columns; ALL: summed)"),
        (
            "subject_mean_diff",
            F,
            "subject level: mean over query subjects of each subject's mean diff (ALL: mean of the relations' values)",
        ),
        (
            "subject_ci_low",
            F,
            "subject level: 95% t CI of subject_mean_diff, low (t over the subject means, df = n_subjects - 1; "
            "ALL: equal-weight combination, Welch-Satterthwaite df)",
        ),
        ("subject_ci_high", F, "subject level: same, high"),
        ("subject_p", F, "subject level: two-sided t-test of subject_mean_diff against 0 (not Holm-adjusted)"),
        ("subject_df", F, "subject level: degrees of freedom of that t (NaN with fewer than 2 subjects)"),
    ),
)

CONTRASTS = Table(
    "contrasts",
    "one row per (model, ablation, relation, target, metric, condition pair)",
    _GROUP
    + (
        ("target", S, "gold | distractor"),
        ("metric", S, "as in stats"),
        ("condition_a", S, "first condition"),
        ("condition_b", S, "second condition"),
        ("paired", B, "true: matched related/counterfactual pairs (paired t); false: Welch t-test"),
        ("n", I, "pairs (paired) or n_a + n_b (Welch)"),
        ("mean_a", F, "mean context-induced shift (ctx - base) under condition_a"),
        ("mean_b", F, "same under condition_b"),
        ("diff", F, "mean_a - mean_b"),
        ("t", F, "t statistic"),
        ("df", F, "degrees of freedom (Welch-Satterthwaite when unpaired)"),
        ("p_value", F, "two-sided p"),
        ("ci_low", F, "95% CI of diff, low"),
        ("ci_high", F, "95% CI of diff, high"),
        ("note", S, "why t/p are NaN, else empty"),
        (
            "pooling",
            S,
            "ALL rows: relations_equal -- each relation's contrast counts once, whatever its number of items (diff, "
            "mean_a, mean_b: means over relations; se^2 = sum se_r^2 / R^2, Welch-Satterthwaite df; n summed); null on "
            "per-relation rows",
        ),
    ),
)

HEADS = Table(
    "heads",
    "the selected masks, one row per (model, relation, seed, layer, head): each seed's search on the "
    "full training split, and the stable set (seed -1)",
    (
        ("model", S, "model spec"),
        ("relation", S, "relation the mask was trained on"),
        ("seed", I, "search seed; -1 = the stable set (heads removed by >= stability_threshold of all searches)"),
        ("layer", I, "layer index (0-based)"),
        ("head", I, "query-head index within the layer (0-based)"),
        (
            "mask_logit",
            F,
            "learned keep logit l (kept iff l > 0); the stable set: stability_threshold - inclusion frequency",
        ),
        ("removed", B, "true: the head is removed by this mask"),
        ("ablation_label", S, "`mask:<relation>:seed<N>`, `stable:<relation>` or `crossfit:<relation>:fold<f>`"),
        ("ablation_method", S, "the method the search removed heads with (zero | mean | resample)"),
        (
            "fold",
            I,
            "the per-fold masks of the cross-fitted verdict (`crossfit:<relation>:fold<f>`): the fold whose subjects "
            "the mask never saw (trained on the other folds); null for every other mask",
        ),
    ),
)

DISCOVERY = Table(
    "discovery",
    "one row per (model, relation, seed, resample, epoch) of every search",
    (
        ("model", S, "model spec"),
        ("relation", S, "relation"),
        ("seed", I, "search seed"),
        (
            "resample",
            I,
            "0 = the full training split; r >= 1 = the r-th subject half-sample of it (odd r: a random "
            "half of the training subjects, even r: its complement) or, with search_resampling = "
            "bootstrap, the r-th seeded bootstrap resample",
        ),
        (
            "epoch",
            I,
            "epoch (pass over the search's training sample), 0 = before training; the last row may close "
            "a partial epoch (the search converged or reached max_steps in it)",
        ),
        ("step", I, "optimiser steps so far (each a batch of exactly discover_batch_size rows)"),
        ("loss", F, "mean training loss of the epoch"),
        ("effect_loss", F, "mean 2-way CE(gold, distractor) term"),
        ("sparsity", F, "mean sigmoid(mask logit) = expected share of kept heads, at the end of the epoch"),
        ("n_removed", I, "heads removed by the deterministic mask (l <= 0)"),
        ("dev_delta", F, "mean gold - distractor logit on the dev split with that mask"),
        ("dev_acc", F, "share of dev items where gold outscores distractor"),
        ("dev_se", F, "standard error of dev_delta from a bootstrap over the dev query subjects (200 fixed draws)"),
        ("selected", B, "the epoch the selection rule picked (its mask is in heads.parquet for resample 0)"),
        (
            "selection_rule",
            S,
            "the rule that picked it: one_se (fewest heads with dev_delta within one dev_se of the "
            "best) | within_5pct (within 5% of the best dev_delta)",
        ),
        (
            "converged",
            B,
            "on the search's last row: the deterministic mask had not changed for converge_steps "
            "steps (after first changing), so the search stopped; false there = the budget "
            "(max_steps or epochs) ended it; false on every other row",
        ),
        ("search_dtype", S, "dtype of the search-side passes actually used: float32 | bfloat16 (autocast)"),
        ("ablation_method", S, "how the search removed heads (zero | mean | resample)"),
    ),
)

TIMINGS = Table(
    "timings",
    "wall times, kept out of every other table so identical runs give byte-identical tables; "
    "assembled by the report stage from every stage's timing shard",
    (
        ("model", S, "model spec"),
        (
            "stage",
            S,
            "the timed unit: discover (one epoch) | search (one whole mask search) | scan | atp | measure, "
            "ablate, side-effects, agreement, means (one task)",
        ),
        ("relation", S, "relation"),
        ("seed", I, "search seed (-1 where none)"),
        ("epoch", I, "epoch (discover); -1 elsewhere"),
        ("seconds", F, "wall time"),
    ),
)

DISCOVERY_MASKS = Table(
    "discovery_masks",
    "every epoch's mask, one row per (model, relation, seed, resample, epoch, layer, head)",
    (
        ("model", S, "model spec"),
        ("relation", S, "relation"),
        ("seed", I, "search seed"),
        ("resample", I, "0 = full training split, r >= 1 = bootstrap resample r"),
        ("epoch", I, "epoch (0 = start)"),
        ("layer", I, "layer index"),
        ("head", I, "query-head index"),
        ("mask_logit", F, "keep logit after that epoch"),
        ("removed", B, "mask_logit <= 0"),
    ),
)

HEAD_OVERLAP = Table(
    "head_overlap",
    "stability across searches, one row per (model, relation, pair of searches)",
    (
        ("model", S, "model spec"),
        ("relation", S, "relation"),
        ("seed_a", I, "first search's seed"),
        ("resample_a", I, "first search's resample (0 = full training split)"),
        ("seed_b", I, "second search's seed"),
        ("resample_b", I, "second search's resample"),
        ("n_removed_a", I, "heads removed by search a's selected mask"),
        ("n_removed_b", I, "same for search b"),
        ("n_shared", I, "heads removed by both"),
        ("jaccard", F, "n_shared / size of the union (1.0 when both are empty)"),
        (
            "jaccard_chance",
            F,
            "E[J]: the expected jaccard of two uniformly random head sets of sizes n_removed_a and "
            "n_removed_b among the model's heads (exact, hypergeometric intersection)",
        ),
        (
            "jaccard_corrected",
            F,
            "(jaccard - jaccard_chance) / (1 - jaccard_chance): 0 = chance, 1 = identical; NaN when jaccard_chance = 1",
        ),
        (
            "overlap",
            F,
            "overlap coefficient n_shared / min(n_removed_a, n_removed_b); 1.0 when both are empty, NaN when one is",
        ),
        (
            "spearman_logits",
            F,
            "Spearman rank correlation of the two selected masks' keep-logits over every head (agreement on the whole "
            "ranking, not only on the removed few); NaN when either is constant",
        ),
        ("mean_jaccard", F, "mean jaccard over every pair of searches of this (model, relation); same on each row"),
        (
            "mean_jaccard_ci_low",
            F,
            "95% bootstrap CI of mean_jaccard (searches resampled with replacement), low; NaN with fewer than 3 "
            "searches",
        ),
        ("mean_jaccard_ci_high", F, "same, high"),
        (
            "mean_jaccard_corrected",
            F,
            "mean jaccard_corrected over the pairs (NaN pairs skipped); same on each row. Its CI, like every mean_* "
            "CI here, resamples the searches, not the pairs (pairs share searches); where the searches are subject "
            "half-samples that is the variation from which subjects trained them",
        ),
        ("mean_jaccard_corrected_ci_low", F, "95% bootstrap CI of mean_jaccard_corrected, low"),
        ("mean_jaccard_corrected_ci_high", F, "same, high"),
        ("mean_overlap", F, "mean overlap coefficient over the pairs (NaN pairs skipped); same on each row"),
        ("mean_overlap_ci_low", F, "95% bootstrap CI of mean_overlap (searches resampled), low"),
        ("mean_overlap_ci_high", F, "same, high"),
        ("mean_spearman_logits", F, "mean spearman_logits over the pairs (NaN pairs skipped); same on each row"),
        ("mean_spearman_logits_ci_low", F, "95% bootstrap CI of mean_spearman_logits (searches resampled), low"),
        ("mean_spearman_logits_ci_high", F, "same, high"),
    ),
)

HEAD_DISAGREEMENT = Table(
    "head_disagreement",
    "where disagreement between mask searches comes from, one row per (model, relation, component) "
    "(entrainment/heads/disagreement.py)",
    (
        ("model", S, "model spec"),
        ("relation", S, "mask relation"),
        (
            "component",
            S,
            "optimiser: pairs of searches on the same data (the full training split) with different seeds | "
            "data: complementary subject half-samples (disjoint training subjects, same seed; only with "
            "search_resampling half) | selection: each "
            "search's trajectory re-selected 100 times with each epoch's dev Δ redrawn from N(dev_delta, dev_se²), "
            "compared with its own choice (parametric: per-item dev values are not stored; independent per epoch, so "
            "it overstates the noise)",
        ),
        (
            "n",
            I,
            "comparisons behind the means: optimiser, every pair of full-split searches (its CI resamples the "
            "searches, which the pairs share); data, complementary pairs (disjoint: the CI's units); selection, "
            "searches (the CI's units)",
        ),
        (
            "jaccard_corrected",
            F,
            "mean chance-corrected Jaccard (J − E[J]) / (1 − E[J]) of the compared head sets; two identical sets (two "
            "empty ones included) count 1",
        ),
        ("jaccard_corrected_ci_low", F, "95% percentile-bootstrap CI over the n units, low; NaN with n < 2"),
        ("jaccard_corrected_ci_high", F, "same, high"),
        ("spearman_logits", F, "mean Spearman correlation of the compared masks' keep-logits over every head"),
        ("spearman_logits_ci_low", F, "95% percentile-bootstrap CI over the n units, low; NaN with n < 2"),
        ("spearman_logits_ci_high", F, "same, high"),
    ),
    key=("model", "relation", "component"),
    not_null=("model", "relation", "component"),
    allowed=(("component", ("optimiser", "selection", "data")),),
)

HEAD_STABILITY = Table(
    "head_stability",
    "stability selection, one row per (model, relation, ablation_method, layer, head)",
    (
        ("model", S, "model spec"),
        ("relation", S, "relation"),
        ("ablation_method", S, "the searches' method"),
        ("layer", I, "layer index"),
        ("head", I, "query-head index"),
        ("searches", I, "searches that ran (seeds x resamples)"),
        (
            "half_samples",
            I,
            "how many of those searches trained on a subject half-sample (resample >= 1 under "
            "search_resampling = half; 0 under bootstrap)",
        ),
        ("selected", I, "searches whose selected mask removed it"),
        ("frequency", F, "selected / searches (inclusion frequency)"),
        ("ci_low", F, "Wilson 95% CI of the frequency, low"),
        ("ci_high", F, "Wilson 95% CI, high"),
        ("stable", B, "frequency >= stability_threshold: in the stable set"),
        (
            "pfer_bound",
            F,
            "Meinshausen-Buehlmann bound on the expected number of falsely selected heads in the "
            "stable set: q^2 / ((2 stability_threshold - 1) p), q = mean heads per search, p = heads; "
            "inf when stability_threshold <= 0.5 (no bound); same on every row of a (model, relation)",
        ),
    ),
)

HEAD_MEANS = Table(
    "head_means",
    "mean-ablation references, one row per (model, relation, bos, layer, head)",
    (
        ("model", S, "model spec"),
        (
            "relation",
            S,
            "relation whose no-context train prompts are the reference set "
            "(several, comma-joined, for the shared mask)",
        ),
        ("bos", S, "the --bos convention the prompts were tokenised with"),
        ("layer", I, "layer index"),
        ("head", I, "query-head index"),
        ("n_tokens", I, "real tokens averaged (padding excluded)"),
        ("mean", FL, "the head's mean output slice (head_dim values): mean ablation's replacement"),
    ),
)

ABLATION = Table(
    "ablation",
    "one row per (model, mask_relation, seed, ablation_method, relation, condition, split, templates, variant)",
    (
        ("model", S, "model spec"),
        ("mask_relation", S, "relation the mask was learned on"),
        ("seed", I, "search seed of the mask (-1 = the stable set)"),
        (
            "ablation_label",
            S,
            "the mask's readable name: `mask:<relation>:seed<N>`, `stable:<relation>` or `scan-top<k>:"
            "<relation>` (the scan's top-k heads)",
        ),
        (
            "ablation_method",
            S,
            "how the heads are removed in the ablated and random_heads rows: zero | mean | resample",
        ),
        ("relation", S, "evaluated relation (= mask_relation: same relation; otherwise transfer)"),
        ("condition", S, "evaluated condition"),
        ("split", S, "evaluated split"),
        (
            "templates",
            S,
            "all | seen | unseen: all items, or only those whose query template the mask's search saw "
            "(template_holdout kept the others out of train and dev)",
        ),
        (
            "variant",
            S,
            "original | ablated | random_heads | no_context | prompted (the intact model with the prompting "
            "baseline's instruction before the query)",
        ),
        ("n", I, "items"),
        ("n_heads_removed", I, "heads zeroed in this variant"),
        ("ell_gold", F, "mean gold logit"),
        ("ell_distractor", F, "mean distractor logit"),
        ("delta", F, "ell_gold - ell_distractor"),
        ("delta_p95", F, "random_heads: 95th percentile of delta over the draws; else equal to delta"),
        ("distractor_rank", F, "mean distractor rank (1 = top)"),
        ("acc", F, "share of items where gold outscores distractor"),
        ("kl_to_original", F, "mean KL(variant || original with context) of next-token distributions"),
        ("kl_to_no_context", F, "mean KL(variant || intact model without context)"),
        ("gain", F, "ablated rows: mean per-item gain Δ_ablated − Δ_original over the n items (NaN on other variants)"),
        ("gain_ci_low", F, "95% CI of gain, low (t interval)"),
        ("gain_ci_high", F, "95% CI of gain, high"),
        ("gain_p", F, "paired two-sided t-test of the per-item gain against 0"),
        ("null_draws", I, "random head sets of the mask's size in the null (0 where no null was run)"),
        ("null_items", I, "items of the fixed seeded subsample the null and null_gain use"),
        ("null_gain", F, "observed mean gain on that subsample (the statistic compared with the draws)"),
        ("null_mean", F, "mean gain of the random draws on the same subsample"),
        ("null_p", F, "empirical p: (1 + #{draws with mean gain >= null_gain}) / (1 + null_draws)"),
        ("null_z", F, "(null_gain - null_mean) / sd of the draws' gains"),
        ("null_p_holm", F, "null_p Holm-adjusted across the mask relations of one (model, seed, condition, split)"),
        (
            "top1_acc",
            F,
            "share of items whose gold first token is the top-1 next token under this variant and condition",
        ),
        (
            "top1_gain",
            F,
            "ablated, random_heads, prompted rows: mean per-item change in top-1 correctness (0/1) vs "
            "original (random_heads: each item's mean over the draws); NaN elsewhere",
        ),
        ("top1_gain_ci_low", F, "95% CI of top1_gain, low (paired t interval on the 0/1 differences)"),
        ("top1_gain_ci_high", F, "95% CI of top1_gain, high"),
        ("top1_gain_p", F, "paired two-sided t-test of the 0/1 differences against 0"),
    ),
)

SIDE_EFFECTS = Table(
    "side_effects",
    "capabilities with vs without the heads",
    (
        ("model", S, "model spec"),
        ("mask_relation", S, "relation the mask was learned on"),
        ("seed", I, "search seed of the mask (-1 = the stable set)"),
        ("ablation_method", S, "how the heads are removed: zero | mean | resample"),
        ("task", S, "another relation's name, or an ICL task name"),
        (
            "metric",
            S,
            "strict_acc (gold first token is top-1, no context) | credulous_acc (gold first token in top 5) "
            "| icl_acc (expected answer's first token is top-1 after the few-shot prompt)",
        ),
        ("original", F, "intact model"),
        ("ablated", F, "selected heads zeroed"),
        ("random_heads", F, "same number of random heads zeroed (mean over draws)"),
        ("n", I, "items"),
    ),
)

NULL_DRAWS = Table(
    "null_draws",
    "the random-head null, one row per (model, mask_relation, seed, ablation_method, relation, condition, split, draw)",
    (
        ("model", S, "model spec"),
        ("mask_relation", S, "relation the mask was learned on"),
        ("seed", I, "search seed of the mask (-1 = the stable set)"),
        ("ablation_method", S, "how the heads are removed: zero | mean | resample"),
        ("relation", S, "evaluated relation"),
        ("condition", S, "evaluated condition"),
        ("split", S, "evaluated split"),
        ("draw", I, "draw index (seeded; same size as the mask)"),
        ("gain", F, "mean gain Δ(random heads removed) − Δ(original) over the null's items (ablation.null_items)"),
    ),
)

HEAD_SCORES = Table(
    "head_scores",
    "one row per (model, relation, ablation_method, method, layer, head)",
    (
        ("model", S, "model spec"),
        ("relation", S, "relation whose dev items were scored"),
        ("ablation_method", S, "how the head is removed: zero | mean | resample"),
        ("method", S, "scan: exact single-head ablation | atp: attribution-patching estimate of the same"),
        ("layer", I, "layer index"),
        ("head", I, "query-head index"),
        (
            "score",
            F,
            "mean over the dev items of the training condition(s) of Δ(head zeroed) − Δ(intact), "
            "Δ = ℓ(gold) − ℓ(distractor), first-token logits, with context; positive = an entrainment head",
        ),
        ("rank", I, "rank of the score within (model, relation, ablation_method, method), 1 = highest"),
        ("n", I, "items scored"),
        (
            "score_ci_low",
            F,
            "scan: 95% percentile-bootstrap CI of the score over the dev items (1,000 resamples of the "
            "stored per-item effects), low; NaN for atp. Prompt-level: it describes these items, not new subjects "
            "(subject_ci_low is the claim about new subjects)",
        ),
        ("score_ci_high", F, "same, high"),
        ("rank_low", I, "scan: 2.5th percentile of the head's rank over the same bootstrap resamples (best plausible)"),
        ("rank_high", I, "scan: 97.5th percentile of its rank (worst plausible)"),
        ("n_subjects", I, "query subjects behind the scored items (the unit of subject_ci_*)"),
        (
            "subject_ci_low",
            F,
            "scan: 95% cluster-bootstrap CI of the score, resampling the query subjects (all items of a drawn subject "
            "together; 1,000 resamples), low; NaN for atp and with fewer than 2 subjects. With few subjects it is "
            "coarse (3 subjects have 10 distinct resamples), as the evidence is",
        ),
        ("subject_ci_high", F, "same, high"),
    ),
)

HEAD_AGREEMENT = Table(
    "head_agreement",
    "one row per (model, relation, ablation_method, method, k): the k-curve, with "
    "the (model, relation, ablation_method) agreement summary repeated on each row",
    (
        ("model", S, "model spec"),
        ("relation", S, "relation"),
        ("ablation_method", S, "how heads are removed along the curve: zero | mean | resample"),
        ("mask_seed", I, "seed of the learned mask compared"),
        ("method", S, "scan | atp | mask (learned keep-logits, lowest first) | random (mean over random k-head sets)"),
        ("k", I, "heads removed (0 = intact)"),
        ("n", I, "test items (the fixed seeded subsample of the null)"),
        ("delta", F, "mean Δ on those test items with the method's top-k heads removed"),
        ("gain", F, "delta − intact delta (mean of the per-item paired gains)"),
        ("gain_ci_low", F, "95% t CI of the per-item paired gain, low (random: per-item mean over the draws)"),
        ("gain_ci_high", F, "same, high"),
        ("gain_p", F, "paired two-sided t-test of the per-item gains against 0 (NaN at k = 0)"),
        ("n_subjects", I, "query subjects behind the test items (the unit of the subject_gain columns)"),
        (
            "subject_gain",
            F,
            "mean over subjects of each subject's mean per-item gain (the claim about new subjects; 0 at k = 0)",
        ),
        ("subject_gain_ci_low", F, "95% t CI over the subject means (df = n_subjects - 1), low; NaN with < 2"),
        ("subject_gain_ci_high", F, "same, high"),
        ("subject_gain_p", F, "one-sample two-sided t-test of the subject means against 0 (NaN at k = 0)"),
        ("spearman_atp_scan", F, "Spearman correlation of atp and scan scores over all heads"),
        ("spearman_p", F, "its p-value"),
        ("mask_heads", I, "heads removed by the learned mask"),
        ("mask_rank_median", F, "median scan rank of the learned mask's heads"),
        ("mask_ranks", S, "scan ranks of the learned mask's heads, ascending"),
        ("mask_in_scan_top_k", I, "learned heads among the scan's top-k, k = mask_heads"),
        ("delta_context", F, "Δ_ctx: mean Δ on the curve's items, intact model, with context (k = 0)"),
        ("delta_no_context", F, "Δ_noctx: mean Δ on the same items, intact model, without context"),
        (
            "gap_closed",
            F,
            "faithfulness f(k) = min(1, (Δ_k − Δ_ctx) / (Δ_noctx − Δ_ctx)): the share of the entrainment gap "
            "closed by removing the top-k heads, capped at 1; NaN when |Δ_noctx − Δ_ctx| < 0.25 logits",
        ),
        ("overshoot", F, "max(0, uncapped f(k) − 1): how far removing the heads pushes Δ past the no-context margin"),
        (
            "gap_closed_area",
            F,
            "normalised area under the capped f(k) over k = 0..K (trapezoid / K), per (method); same on each row",
        ),
    ),
)

METHOD_AGREEMENT = Table(
    "method_agreement",
    "do the head verdicts survive a change of ablation? One row per (model, relation, pair of ablation methods)",
    (
        ("model", S, "model spec"),
        ("relation", S, "relation"),
        ("method_a", S, "first ablation method"),
        ("method_b", S, "second ablation method"),
        ("spearman", F, "Spearman correlation of the two methods' single-head scan scores over all heads"),
        ("spearman_p", F, "its p-value"),
        ("top5_a", S, "the scan's top-5 heads under method_a (layer.head, by rank)"),
        ("top5_b", S, "same under method_b"),
        ("jaccard_top5", F, "Jaccard overlap of the two top-5 sets"),
    ),
)

HEAD_TYPES = Table(
    "head_types",
    "what each head is: head-type scores, one row per (model, layer, head) (docs/head-types.md)",
    (
        ("model", S, "model spec"),
        ("layer", I, "layer index"),
        ("head", I, "query-head index"),
        ("kv_head", I, "the key/value head this query head reads (grouped-query attention)"),
        (
            "prev_token",
            F,
            "mean attention from a query to the previous token, on repeated random tokens [BOS] r1..rT r1..rT "
            "(TransformerLens detect_head 'mul' score, averaged over the queries that have the expected key)",
        ),
        ("duplicate_token", F, "same, second-half queries on their token's first occurrence"),
        ("induction", F, "same, second-half queries on the token after their token's first occurrence"),
        (
            "copying",
            F,
            "OV-circuit eigenvalue positivity Σ Re λ / Σ |λ| of W_E W_V W_O W_U (d_head-sized form, norm gains "
            "folded), in [−1, 1]: 1 = copies what it attends to, −1 = suppresses it",
        ),
        (
            "copy_suppression",
            F,
            "share of the token subset whose own logit is the lowest of its row of the OV circuit restricted to "
            "the subset (attending to a token lowers that token)",
        ),
        (
            "distractor_attention",
            F,
            "attention from the final position to the distractor's tokens in the context (summed over its tokens), "
            "mean over the discovery relation's scan items, with context",
        ),
        (
            "dla_distractor",
            F,
            "the head's direct logit attribution to ℓ(distractor) − ℓ(gold) at the final position (through the "
            "linearised norms), with context minus without, mean over the same items; positive = entrainment-like",
        ),
        ("copying_top1", F, "share of the token subset whose own logit is the highest of its OV row (top-1 copying)"),
        ("relation", S, "the discovery relation of the entrainment readings (null without prompts)"),
        ("n_seqs", I, "repeated random-token sequences (each [BOS] + 2T tokens)"),
        ("n_items", I, "items behind distractor_attention and dla_distractor"),
        ("n_tokens", I, "tokens in the copy-suppression subset (the prompts' tokens, then the lowest ordinary ids)"),
    ),
    key=("model", "layer", "head"),
    not_null=("model", "layer", "head"),
)

HEAD_TYPE_AGREEMENT = Table(
    "head_type_agreement",
    "head types against entrainment importance: agreement rows per (model, relation, score, ranking) and "
    "dissociation rows per (model, relation, score, removed)",
    (
        ("model", S, "model spec"),
        ("relation", S, "relation of the entrainment ranking (dissociation: the discovery relation)"),
        ("score", S, "head-type score (a head_types column); dissociation: induction | copying"),
        (
            "ranking",
            S,
            "agreement: scan | atp (head_scores.parquet, the search's ablation method) | frequency (inclusion "
            "frequency, head_stability.parquet); dissociation: where the entrainment heads come from (stable | "
            "mask:seedN | scan)",
        ),
        ("kind", S, "agreement | dissociation"),
        ("spearman", F, "agreement: Spearman correlation of the score and the ranking over all heads"),
        ("spearman_ci_low", F, "95% percentile-bootstrap CI over heads (1,000 resamples of the heads), low"),
        ("spearman_ci_high", F, "same, high"),
        ("spearman_p", F, "p-value of the Spearman correlation"),
        ("k", I, "heads of the type compared / removed per type (top-k)"),
        ("topk_overlap", I, "agreement: heads in both the type's top-k and the entrainment heads"),
        ("chance_overlap", F, "hypergeometric expectation of that overlap: k · k_entrainment / n_heads"),
        ("overlap_p", F, "one-sided hypergeometric p = P(overlap >= observed) for random sets of those sizes"),
        ("k_entrainment", I, "entrainment heads: the ranking's top-k (scan, atp) or the stable set (frequency)"),
        ("n_heads", I, "heads in the model"),
        ("heads_type", S, "agreement: the type's top-k heads; dissociation: the removed heads (layer.head)"),
        ("heads_entrainment", S, "the entrainment heads (layer.head)"),
        (
            "removed",
            S,
            "dissociation: the population removed: induction | copying (top-k outside the entrainment heads) | "
            "entrainment (the entrainment heads outside the type's top-k)",
        ),
        ("excluded", S, "dissociation: the population spared"),
        ("n_removed", I, "dissociation: heads removed (zero ablation)"),
        (
            "entrainment_gain",
            F,
            "dissociation: mean Δ(removed) − Δ(intact) on the discovery relation's test subsample (training "
            "condition, with context), Δ = ℓ(gold) − ℓ(distractor); positive = less entrainment",
        ),
        ("entrainment_gain_random", F, "the same, mean over random head sets of the same size"),
        (
            "induction_loss",
            F,
            "dissociation: increase of the mean next-token loss (nats) on the second half of the repeated random "
            "tokens with the heads removed",
        ),
        ("induction_loss_random", F, "the same, mean over random head sets of the same size"),
        ("n_items", I, "dissociation: test items behind entrainment_gain"),
        ("draws", I, "dissociation: random head sets per control"),
    ),
    not_null=("model", "relation", "score", "ranking", "kind"),
    allowed=(("kind", ("agreement", "dissociation")),),
)

MODELS = Table(
    "models",
    "one row per measured model (written by the measure stage)",
    (
        ("model", S, "normalised model spec (the `model` column of every other table)"),
        ("family", S, "transformers model_type (llama, gemma3_text, qwen2, ...)"),
        ("architecture", S, "transformers architecture class (LlamaForCausalLM, ...)"),
        ("source", S, "embedded | gguf | local | hub | config"),
        ("identity", S, "content hash of the weights file(s), or the hub revision: changes whenever the weights do"),
        ("n_params", I, "parameters, total (tied embeddings counted once)"),
        (
            "n_params_non_embedding",
            I,
            "parameters without the token embedding, an untied output embedding and learned position embeddings",
        ),
        ("n_layers", I, "transformer blocks"),
        ("n_heads", I, "query heads per layer"),
        ("n_total_heads", I, "n_layers x n_heads: the heads a mask chooses from"),
        ("n_kv_heads", I, "key/value heads per layer (grouped-query attention)"),
        ("head_dim", I, "dimension per head"),
        ("vocab_size", I, "vocabulary size"),
        ("dtype", S, "dtype the model was run in"),
    ),
)

SCALING = Table(
    "scaling",
    "power-law fits across models (only with >= 3 models), one row per (size, condition, target, metric, kind)",
    (
        ("size", S, "N on the x axis: n_params | n_params_non_embedding (models.parquet)"),
        ("condition", S, "context condition"),
        ("target", S, "distractor | gold"),
        ("metric", S, "logprob (log-prob shift) | logit (the follow-up's Δ_t = ℓ(t|ctx) − ℓ(t|∅))"),
        (
            "kind",
            S,
            "raw: mean shift | normalised: mean shift / |mean no-context value| (baselines move with size) | "
            "no_context: the mean no-context value itself (the control: e.g. the gold's logit without context)",
        ),
        ("b", F, "fitted exponent of E(N) = a·N^b (OLS of log|E| on log N)"),
        ("b_ci_low", F, "lower bound of b's CI (t interval, stats.confidence)"),
        ("b_ci_high", F, "upper bound"),
        ("a", F, "fitted prefactor"),
        ("r2", F, "R² of the log-log fit"),
        ("p_value", F, "p-value of the slope (H0: b = 0)"),
        ("n_models", I, "models in the fit"),
        ("models", S, "those models, comma-separated"),
    ),
)

SENTENCE_SCALING = Table(
    "sentence_scaling",
    "power-law fits of the sentence-level measures across models (only with >= 3 models; written by the "
    "sentences stage), one row per (size, condition, measure)",
    (
        ("size", S, "N on the x axis: n_params | n_params_non_embedding (models.parquet)"),
        ("condition", S, "context condition (sentence_stats.condition)"),
        ("measure", S, "self (Δ_self) | net (Δ_net = Δ_self − Δ_control) | gap (counterfactual − gold statement)"),
        ("b", F, "fitted exponent of |mean|(N) = a·N^b (OLS of log|mean| on log N; sentence_stats' pooled ALL rows)"),
        ("b_ci_low", F, "lower bound of b's CI (t interval, df = n_models − 2, confidence)"),
        ("b_ci_high", F, "upper bound"),
        ("a", F, "fitted prefactor"),
        ("r2", F, "R² of the log-log fit"),
        ("p_value", F, "p-value of the slope (H0: b = 0)"),
        ("n_models", I, "models in the fit"),
        ("same_sign", B, "every model's mean has the same sign (false: the |mean| fit mixes gains and losses)"),
        ("models", S, "those models, comma-separated"),
    ),
)

SENTENCE_SCORES = Table(
    "sentence_scores",
    "one row per (model, relation, item, target, arm, ablation): a whole sentence scored teacher-forced "
    "(entrainment/stages/sentences.py)",
    (
        ("model", S, "model spec"),
        ("relation", S, "LRE relation name (own items: their label)"),
        (
            "condition",
            S,
            "the item's context: related | counterfactual | irrelevant | random (a prompt row's context) "
            "| self_cf (a counterfactual statement about the query's own subject)",
        ),
        ("item", S, "item id: sha1 of (relation, condition, subject, context, query)"),
        ("subject", S, "the query subject (the statistical unit)"),
        (
            "target",
            S,
            "self (y = the context) | self_cf (y = the counterfactual statement about the query subject, "
            "which is the context) | gold (the true statement about the query subject) | control (a "
            "same-relation statement nowhere in the prompt, length-matched within 2 tokens)",
        ),
        (
            "arm",
            S,
            "present (context + query) | absent (the query alone, or a length-matched neutral sentence in "
            "the context's place: sentence_absent)",
        ),
        ("ablation", S, "`none`, or the id of the head set removed (zero ablation)"),
        ("prompt", S, "the exact model input before the scored sentence (BOS per --bos)"),
        ("sentence", S, "the scored text, appended after one space"),
        ("n_tokens", I, "tokens of the sentence scored"),
        ("sum_logprob", F, "sum of the sentence tokens' log-probs (teacher-forced)"),
        ("mean_logprob", F, "sum_logprob / n_tokens"),
        ("first_logprob", F, "log-prob of the sentence's first token"),
        (
            "boundary_ok",
            B,
            "tokenising prompt + ' ' + sentence gave the prompt's ids followed by the sentence's; "
            "False: a merge crossed the boundary and the sentence's tokens were found by offsets",
        ),
    ),
    key=("model", "relation", "item", "target", "arm", "ablation"),
    not_null=("model", "relation", "item", "target", "arm", "ablation", "mean_logprob"),
    allowed=(("target", ("self", "self_cf", "gold", "control")), ("arm", ("present", "absent"))),
)

SENTENCE_STATS = Table(
    "sentence_stats",
    "one row per (model, relation or ALL, condition, measure, ablation): sentence-level entrainment, the subject as "
    "the unit",
    (
        ("model", S, "model spec"),
        (
            "relation",
            S,
            "relation name, or `ALL` = pooled with relations weighted equally (stratified mean, "
            "Welch-Satterthwaite df)",
        ),
        ("condition", S, "related | counterfactual | irrelevant | random | self_cf"),
        (
            "measure",
            S,
            "self: Δ_self = mean_logprob(y | present) − mean_logprob(y | absent) of the item's own "
            "sentence | net: Δ_self − Δ_control | gap: Δ(self_cf) − Δ(gold) (self_cf items)",
        ),
        ("ablation", S, "`none`, or the id of the head set removed (a stable set; zero ablation)"),
        ("n", I, "items"),
        ("n_subjects", I, "query subjects (the unit)"),
        ("mean", F, "mean over subjects of the subject's mean (nats per token)"),
        ("ci_low", F, "CI low (t over subjects, stats.confidence)"),
        ("ci_high", F, "CI high"),
        ("p_value", F, "two-sided one-sample t over subjects (H0: mean = 0)"),
        ("p_adjusted", F, "Holm within each (model, ablation, measure) family"),
        ("heads", I, "heads removed (0 for `none`)"),
        ("null_draws", I, "random head sets of the same size scored on the same items (0 for `none`)"),
        ("null_mean", F, "mean of `mean` over those random sets (null for `none`)"),
        (
            "null_p",
            F,
            "(1 + #{random sets lowering the measure at least as much}) / (1 + null_draws), the drop "
            "measured from the intact model's `mean`",
        ),
    ),
    key=("model", "relation", "condition", "measure", "ablation"),
    not_null=("model", "relation", "condition", "measure", "ablation"),
    allowed=(("measure", ("self", "net", "gap")),),
)

SUBJECT_GAINS = Table(
    "subject_gains",
    "one row per (model, relation, ablation_label, ablation_method, fold, subject): each evaluated mask on its own "
    "relation's training-condition test items (the cross-fitted verdict: every subject of the relation, on its "
    "fold's mask), first-token collisions left out",
    (
        ("model", S, "model spec"),
        ("relation", S, "the mask's relation (the items' relation)"),
        ("ablation_label", S, "`mask:<relation>:seed<N>`, `stable:<relation>` or `crossfit:<relation>` (all folds)"),
        ("ablation_method", S, "how the heads are removed: zero | mean | resample"),
        ("fold", I, "cross-fitted verdict: the subject's fold (tested by the mask searched without it); else null"),
        ("subject", S, "query subject"),
        ("n_items", I, "the subject's items"),
        ("delta_original", F, "mean Δ = ℓ(gold) − ℓ(distractor) over the subject's items, intact, with context"),
        ("delta_ablated", F, "the same with the heads removed"),
        ("gain", F, "mean over the subject's items of Δ_ablated − Δ_original, with context"),
        (
            "gain_noctx",
            F,
            "mean over the subject's items of Δ_ablated − Δ_original on the no-context prompt (heads removed in the "
            "ablated arm, intact in the original arm)",
        ),
        ("interaction", F, "gain − gain_noctx: what removing the heads does because of the context"),
        (
            "acc_original",
            F,
            "share of the subject's items where gold outscores distractor (Δ > 0), intact, with context",
        ),
        ("acc_ablated", F, "the same with the heads removed"),
        ("acc_gain", F, "acc_ablated − acc_original"),
    ),
    key=("model", "relation", "ablation_label", "ablation_method", "fold", "subject"),
)

VERDICT = Table(
    "verdict",
    "one row per (model, relation, ablation_label, ablation_method): the head verdict with the query subject as "
    "the unit (entrainment/statistics/verdict.py); the cross-fitted verdict is `crossfit:<relation>`",
    (
        ("model", S, "model spec"),
        ("relation", S, "relation (the mask's own)"),
        ("ablation_label", S, "the mask: `mask:<relation>:seed<N>`, `stable:<relation>` or `crossfit:<relation>`"),
        ("ablation_method", S, "zero | mean | resample"),
        ("n_heads", I, "heads removed (crossfit: the mean over its folds' masks, rounded)"),
        ("n_folds", I, "crossfit: folds (each subject tested by the one mask that never saw it); 0 otherwise"),
        ("n_subjects", I, "query subjects (the unit)"),
        ("n_items", I, "items over those subjects"),
        ("subjects_helped", I, "subjects with gain > 0"),
        ("gain", F, "mean over subjects of subject_gains.gain"),
        ("gain_ci_low", F, "95% t CI of gain over the subjects (df = n_subjects − 1), low"),
        ("gain_ci_high", F, "same, high"),
        ("gain_p", F, "two-sided one-sample t-test of the subject gains against 0"),
        ("gain_noctx", F, "mean over subjects of subject_gains.gain_noctx (heads removed without context)"),
        ("gain_noctx_ci_low", F, "its 95% t CI over subjects, low"),
        ("gain_noctx_ci_high", F, "same, high"),
        ("interaction", F, "mean over subjects of gain − gain_noctx: the context-specific part of the gain"),
        ("interaction_ci_low", F, "95% t CI of interaction over the subjects, low"),
        ("interaction_ci_high", F, "same, high"),
        ("interaction_p", F, "two-sided one-sample t-test of the subject interactions against 0"),
        ("acc_original", F, "mean over subjects of subject_gains.acc_original (accuracy, subject-weighted)"),
        ("acc_gain", F, "mean over subjects of subject_gains.acc_gain: does removing the heads make answers right?"),
        ("acc_gain_ci_low", F, "95% t CI of acc_gain over the subjects, low"),
        ("acc_gain_ci_high", F, "same, high"),
        ("acc_gain_p", F, "two-sided one-sample t-test of the subject accuracy gains against 0"),
        (
            "null_p",
            F,
            "empirical p against random head sets of the same size, (1 + #{draws ≥ observed}) / (1 + draws): "
            "seed and stable masks: ablation.parquet's null (null_items test items, mean item gain); crossfit: each "
            "draw removes a random set of each fold's size on that fold, statistic = the mean subject gain; NaN "
            "without a null",
        ),
        ("null_draws", I, "random head sets behind null_p (0: none)"),
        ("unit", S, "the unit of inference: subject"),
    ),
    key=("model", "relation", "ablation_label", "ablation_method"),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        PROMPTS,
        MEASUREMENTS,
        STATS,
        CONTRASTS,
        HEADS,
        DISCOVERY,
        DISCOVERY_MASKS,
        HEAD_OVERLAP,
        HEAD_DISAGREEMENT,
        HEAD_STABILITY,
        HEAD_MEANS,
        ABLATION,
        SIDE_EFFECTS,
        TIMINGS,
        NULL_DRAWS,
        SUBJECT_GAINS,
        VERDICT,
        HEAD_SCORES,
        HEAD_AGREEMENT,
        METHOD_AGREEMENT,
        HEAD_TYPES,
        HEAD_TYPE_AGREEMENT,
        MODELS,
        SCALING,
        SENTENCE_SCALING,
        SENTENCE_SCORES,
        SENTENCE_STATS,
    )
}


def check_frame(table: Table, df: pl.DataFrame) -> str | None:
    """None if the frame satisfies the table's rules, else one line naming the column and the first bad row."""
    for col in table.not_null:
        if col in df.columns:
            bad = df.with_row_index("_r").filter(pl.col(col).is_null())
            if len(bad):
                return f"column {col}: null in row {bad['_r'][0]}"
    for col, values in table.allowed:
        if col in df.columns:
            bad = df.with_row_index("_r").filter(~pl.col(col).is_in(list(values)))
            if len(bad):
                return (
                    f"column {col}: unknown value {bad[col][0]!r} in row {bad['_r'][0]} "
                    f"(expected one of {', '.join(values)})"
                )
    if table.key and all(k in df.columns for k in table.key):
        dup = df.with_row_index("_r").filter(pl.struct(list(table.key)).is_duplicated())
        if len(dup):
            cols = ", ".join(table.key)
            return f"columns ({cols}): duplicate key in row {dup['_r'][0]} (each must be unique)"
    return None


def markdown() -> str:
    """All tables as Markdown (the README links here)."""
    out = []
    for t in TABLES.values():
        out.append(f"### {t.file} -- {t.grain}\n\n| column | type | meaning |\n|---|---|---|")
        out += [f"| {n} | {ty} | {doc} |" for n, ty, doc in t.columns]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
