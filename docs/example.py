# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Contextual entrainment in five calls
#
# This notebook uses the Python API (`import entrainment as en`, [docs/api.md](api.md)) to
#
# 1. load the embedded model (SmolLM2-135M-Instruct),
# 2. show the paper's Figure 1 for one prompt: the top next tokens with and without the context,
# 3. measure the context-induced shift of the distractor per condition, with 95% CIs,
# 4. remove one attention head and compare Δ = ℓ(gold) − ℓ(distractor) before and after,
# 5. open a results folder written by `make run` and query it.
#
# It runs on a laptop CPU in about a minute. `tests/pipeline/test_notebook.py` executes every cell on a tiny random model
# (set `ENTRAINMENT_EXAMPLE_MODEL` to a model folder) and checks the printed related-context shift against
# `en.stats` recomputed from the same inputs. The source is `docs/example.py` (jupytext percent format); the
# notebook is rendered from it with `jupytext --to ipynb docs/example.py`.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import polars as pl

import entrainment as en

pl.Config.set_tbl_rows(40)
pl.Config.set_tbl_width_chars(140)

model = en.load_model(os.environ.get("ENTRAINMENT_EXAMPLE_MODEL", "smollm2-135m"))
model

# %% [markdown]
# ## The prompts
#
# One LRE relation, a few items per condition. `country capital city` is a discovery relation, so it also gets
# head-search items (`search_pairs` query/context pairs per split, crossed with every template pair) and a few
# multi-passage items (`passage_items` queries per split, the distractor passage at every position).

# %%
PROMPTS = dict(relations=["country capital city"], max_pairs=8, search_pairs=[4, 2, 8], passage_items=2)
p = en.prompts(**PROMPTS)
print(p.group_by("condition", "split").len().sort("condition", "split"))

# %% [markdown]
# ## Figure 1: the top next tokens with and without the context
#
# A counterfactual context states a false fact of the same relation; its object is the distractor.

# %%
row = p.filter(pl.col("condition") == "counterfactual").sort("prompt_id").row(0, named=True)
top = en.top_tokens(model, row, k=8)
print("with context:   ", repr(top["text_ctx"]))
print("without context:", repr(top["text_base"]))
print(f"gold {top['gold']!r}, distractor {top['distractor']!r}")
print(pl.DataFrame({
    "rank": list(range(1, len(top["ctx"]) + 1)),
    "with context": [t for t, _ in top["ctx"]], "p (ctx)": [round(q, 4) for _, q in top["ctx"]],
    "without context": [t for t, _ in top["base"]], "p (no ctx)": [round(q, 4) for _, q in top["base"]],
}))
print(f"p(distractor): {top['p_distractor']['base']:.4f} without context -> {top['p_distractor']['ctx']:.4f} with")
print(f"p(gold):       {top['p_gold']['base']:.4f} without context -> {top['p_gold']['ctx']:.4f} with")

# %% [markdown]
# ## The shift per condition
#
# `en.measure` scores every prompt with and without its context (measurements.parquet's frame); `en.stats` runs
# the paired t-tests (stats.parquet's frame). Below: the distractor's log-probability shift, with context minus
# without, pooled over relations (`relation = 'ALL'`), intact model, all positions.

# %%
m = en.measure(model, p)
s = en.stats(m, p).stats
shift = (s.filter((pl.col("relation") == "ALL") & (pl.col("ablation") == "none") & (pl.col("target") == "distractor")
                  & (pl.col("metric") == "logprob") & pl.col("position").is_null())
         .select("condition", "n", "mean_diff", "ci_low", "ci_high", "p_adjusted").sort("condition"))
print(shift)
x = shift.filter(pl.col("condition") == "related")["mean_diff"][0]
print(f"related distractor shift: {x:.6f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(shift["condition"], shift["mean_diff"],
       yerr=[shift["mean_diff"] - shift["ci_low"], shift["ci_high"] - shift["mean_diff"]], capsize=4)
ax.axhline(0, color="black", linewidth=0.8)
ax.set_ylabel("distractor log-prob shift (nats)")
ax.set_title(f"{model.spec}: context minus no context, 95% CI")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Removing one head
#
# `en.ablate` evaluates a head set on the test split: `original` (intact, with context), `ablated` (the heads
# zeroed), `random_heads` (as many random heads), `no_context` and `prompted` (an instruction before the query).
# `gain` is the mean per-item change of Δ = ℓ(gold) − ℓ(distractor), ablated minus original, with its 95% CI.
# Head (10, 3) is the one the previous round's searches found on SmolLM2-135M; a smaller model gets the nearest
# head that exists.

# %%
head = (min(10, model.n_layers - 1), min(3, model.n_heads - 1))
a = en.ablate(model, p, [head], relation="country capital city", null_draws=0, side_effects=False,
              compare_methods=["zero"])
ab = a.ablation.filter((pl.col("relation") == "country capital city") & (pl.col("templates") == "all"))
before = ab.filter(pl.col("variant") == "original").select("condition", "n", pl.col("delta").alias("delta before"))
after = ab.filter(pl.col("variant") == "ablated").select(
    "condition", pl.col("delta").alias("delta after"), "gain", "gain_ci_low", "gain_ci_high", "gain_p")
print(f"head {head} removed ({a.ablation['ablation_method'][0]} ablation), test split:")
print(before.join(after, on="condition").sort("condition"))

# %% [markdown]
# ## A results folder
#
# `make run` writes every table to `results/`; `en.results` opens such a folder read-only (a stale table is
# refused with the CLI's one-line message) and `r.sql` runs one SELECT over views of its tables, like
# `entrainment sql`.

# %%
out = os.environ.get("ENTRAINMENT_EXAMPLE_RESULTS", "results")
if Path(out).is_dir():
    r = en.results(out)
    print(r.tables)
    print(r.sql("select condition, count(*) as n from prompts group by 1 order by 1"))
else:
    print(f"no folder {out!r} yet: `make run` writes one")
