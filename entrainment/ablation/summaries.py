"""What the ablation stage concludes, in tables and lines: pooling, Holm adjustment, the printed summary.

Functions take ablation.parquet rows (polars) and return frames or text; the report and the Prefect artifacts
use the same ones, so the page and the console never disagree.
"""

from __future__ import annotations

import polars as pl

from entrainment.heads.masks import SHARED
from entrainment.model.loading import model_prefix
from entrainment.statistics.null import holm

MASK_KEY = ("model", "mask_relation", "seed", "ablation_label", "ablation_method")


def _own(abl: pl.DataFrame) -> pl.DataFrame:
    """Rows of each mask on its own relation (the shared mask: every relation it was evaluated on), all templates."""
    own = (pl.col("relation") == pl.col("mask_relation")) | (pl.col("mask_relation") == SHARED)
    return abl.filter(own & (pl.col("templates") == "all"))


def pooled_variants(abl: pl.DataFrame) -> pl.DataFrame:
    """Per (mask, ablation method, variant) on the mask's own relation, pooled over conditions (n-weighted)."""
    w = lambda c: ((pl.col(c) * pl.col("n")).sum() / pl.col("n").sum()).alias(c)  # noqa: E731
    return (
        _own(abl)
        .group_by(*MASK_KEY, "variant")
        .agg(
            w("ell_gold"),
            w("ell_distractor"),
            w("delta"),
            w("delta_p95"),
            w("distractor_rank"),
            w("acc"),
            w("kl_to_original"),
            w("kl_to_no_context"),
            w("top1_acc"),
            pl.col("n").sum(),
            pl.col("n_heads_removed").first(),
        )
    )


HOLM_FAMILY = ("model", "seed", "ablation_method", "condition", "split", "_shared")


def with_holm(abl: pl.DataFrame) -> pl.DataFrame:
    """Fill null_p_holm: Holm across relations within each (model, seed, method, condition, split) family of
    `ablated` rows with a null (per-relation masks on their own relation form one family, the shared mask's rows
    another). The family key (HOLM_FAMILY) leaves out ``ablation_label``: it names the relation
    (`mask:<relation>:seed<N>`), so keying on it would make every family a single test."""
    abl = abl.with_row_index("_i")
    fam = abl.filter((pl.col("variant") == "ablated") & (pl.col("null_draws") > 0)).with_columns(
        (pl.col("relation") != pl.col("mask_relation")).alias("_shared")
    )
    adjusted: dict[int, float] = {}
    for _, g in fam.group_by(*HOLM_FAMILY):
        adjusted.update(zip(g["_i"].to_list(), holm(g["null_p"].to_list())))
    col = pl.Series("null_p_holm", [adjusted.get(i, float("nan")) for i in abl["_i"].to_list()], dtype=pl.Float64)
    return abl.with_columns(col).drop("_i")


def _searched(abl: pl.DataFrame) -> pl.DataFrame:
    """The (mask, method) pairs evaluated with random heads: each mask's search method."""
    return abl.filter(pl.col("variant") == "random_heads").select(*MASK_KEY).unique()


def _with_heads(abl: pl.DataFrame) -> pl.DataFrame:
    """Rows of masks that remove at least one head."""
    removing = (
        abl.filter((pl.col("variant") == "ablated") & (pl.col("n_heads_removed") > 0))
        .select("model", "mask_relation", "seed", "ablation_label")
        .unique()
    )
    return abl.join(removing, on=["model", "mask_relation", "seed", "ablation_label"], how="semi")


def _name(r: dict) -> str:
    return r["ablation_label"].replace("mask:", "") if r["ablation_label"] else f"{r['mask_relation']} seed {r['seed']}"


def evidence_lines(abl: pl.DataFrame) -> list[str]:
    """Per mask, on its own relation's test split and each condition with a null: heads removed, n, mean paired
    gain with 95% CI, paired p, and the empirical p against the random-head null (Holm across relations)."""
    rows = abl.filter((pl.col("variant") == "ablated") & (pl.col("null_draws") > 0)).sort(
        "model", "mask_relation", "seed", "ablation_method", "relation", "condition"
    )
    multi = abl["model"].n_unique() > 1
    return [
        f"{model_prefix(r['model'], multi)}{_name(r)}"
        f"{'' if r['relation'] == r['mask_relation'] else ' on ' + r['relation']} [{r['ablation_method']}] "
        f"({r['condition']}, {r['split']}): {r['n_heads_removed']} heads removed, "
        f"n = {r['n']}, gain {r['gain']:+.2f} [95% CI {r['gain_ci_low']:+.2f}, {r['gain_ci_high']:+.2f}], "
        f"paired p = {r['gain_p']:.2g}; vs {r['null_draws']} random {r['n_heads_removed']}-head sets on "
        f"{r['null_items']} items: gain {r['null_gain']:+.2f} vs null mean {r['null_mean']:+.2f}, "
        f"empirical p = {r['null_p']:.3g} (Holm {r['null_p_holm']:.3g}), z = {r['null_z']:.1f}"
        for r in rows.iter_rows(named=True)
    ]


def method_lines(abl: pl.DataFrame, conditions: tuple[str, ...] = ("related",)) -> list[str]:
    """Per mask that removes heads and per condition in `conditions`: the gain under every ablation method."""
    rows = _own(_with_heads(abl)).filter((pl.col("variant") == "ablated") & pl.col("condition").is_in(list(conditions)))
    multi = abl["model"].n_unique() > 1
    out = []
    for key, g in sorted(
        rows.group_by("model", "mask_relation", "seed", "ablation_label", "condition"),
        key=lambda kv: tuple(str(x) for x in kv[0]),
    ):
        if g["ablation_method"].n_unique() < 2:
            continue
        parts = [
            f"{r['ablation_method']} {r['gain']:+.2f} [{r['gain_ci_low']:+.2f}, {r['gain_ci_high']:+.2f}]"
            for r in g.sort("ablation_method").iter_rows(named=True)
        ]
        r0 = g.row(0, named=True)
        out.append(
            f"{model_prefix(key[0], multi)}{_name(r0)} ({key[4]}, n = {r0['n']}): gain by method: " + "; ".join(parts)
        )
    return out


def accuracy_lines(abl: pl.DataFrame) -> list[str]:
    """Top-1 accuracy under misleading contexts: intact, heads removed, random heads, prompting baseline."""
    rows = (
        _own(abl)
        .filter(pl.col("condition").is_in(["counterfactual", "passages"]))
        .join(_searched(abl), on=list(MASK_KEY), how="semi")
    )
    multi = abl["model"].n_unique() > 1
    out = []
    for key, g in sorted(rows.group_by(*MASK_KEY, "condition"), key=lambda kv: tuple(str(x) for x in kv[0])):
        v = {r["variant"]: r for r in g.iter_rows(named=True)}
        if "ablated" not in v:
            continue
        fmt = lambda r: (
            f"{r['top1_acc']:.2f} ({r['top1_gain']:+.2f} [{r['top1_gain_ci_low']:+.2f}, {r['top1_gain_ci_high']:+.2f}])"
        )  # noqa: E731
        parts = [f"original {v['original']['top1_acc']:.2f}", f"heads removed {fmt(v['ablated'])}"]
        parts += [
            f"{name} {fmt(v[k])}" for k, name in (("random_heads", "random heads"), ("prompted", "prompted")) if k in v
        ]
        if "no_context" in v:
            parts.append(f"no context {v['no_context']['top1_acc']:.2f}")
        out.append(
            f"{model_prefix(key[0], multi)}{_name(v['ablated'])} [{key[4]}] top-1 accuracy, {key[5]} "
            f"(n = {v['original']['n']}): " + ", ".join(parts)
        )
    return out


def template_lines(abl: pl.DataFrame, conditions: tuple[str, ...] = ("related",)) -> list[str]:
    """The mask's test gain on query templates its search saw vs held out (the rephrasing check), search method."""
    rows = (
        _with_heads(abl)
        .filter(
            (pl.col("relation") == pl.col("mask_relation"))
            & (pl.col("variant") == "ablated")
            & pl.col("templates").is_in(["seen", "unseen"])
            & pl.col("condition").is_in(list(conditions))
        )
        .join(_searched(abl), on=list(MASK_KEY), how="semi")
    )
    multi = abl["model"].n_unique() > 1
    out = []
    for key, g in sorted(rows.group_by(*MASK_KEY, "condition"), key=lambda kv: tuple(str(x) for x in kv[0])):
        v = {r["templates"]: r for r in g.iter_rows(named=True)}
        parts = [
            f"{t} {v[t]['gain']:+.2f} [{v[t]['gain_ci_low']:+.2f}, {v[t]['gain_ci_high']:+.2f}] (n = {v[t]['n']})"
            for t in ("seen", "unseen")
            if t in v
        ]
        out.append(
            f"{model_prefix(key[0], multi)}{_name(next(iter(v.values())))} [{key[4]}] ({key[5]}) gain on "
            "query templates: " + ", ".join(parts)
        )
    return out


def summary_lines(abl: pl.DataFrame) -> list[str]:
    """The paper's main table per mask on its own relation (pooled over conditions, search method first): delta and
    rank; then the evidence, method, template and accuracy lines."""
    pooled = pooled_variants(abl)
    lines = []
    multi = pooled["model"].n_unique() > 1
    for key, g in sorted(pooled.group_by(*MASK_KEY), key=lambda kv: tuple(str(x) for x in kv[0])):
        v = {r["variant"]: r for r in g.iter_rows(named=True)}
        if "random_heads" not in v:  # a compared method: its gains are in the method lines
            continue
        lines.append(
            f"{model_prefix(key[0], multi)}{_name(v['ablated'])} [{key[4]}] "
            f"({v['ablated']['n_heads_removed']} heads, test split, all conditions): delta "
            f"original {v['original']['delta']:.2f} | ablated {v['ablated']['delta']:.2f} | "
            f"random heads {v['random_heads']['delta']:.2f} (p95 {v['random_heads']['delta_p95']:.2f}) | "
            f"no context {v['no_context']['delta']:.2f}; distractor rank "
            f"{v['original']['distractor_rank']:.0f} -> {v['ablated']['distractor_rank']:.0f} "
            f"(random {v['random_heads']['distractor_rank']:.0f})"
        )
    return lines + evidence_lines(abl) + method_lines(abl) + template_lines(abl) + accuracy_lines(abl)
