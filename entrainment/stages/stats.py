"""Statistics stage: paired context-vs-base t-tests and condition contrasts, aggregated in DuckDB.

DuckDB reads the Parquet files directly. The view ``shifts`` is the long format: one row per
(prompt, model, ablation, target, metric) with ``ctx``, ``base`` and ``diff = ctx - base``. SQL does
every aggregation (n, means, sd, Welch variances, pooled ``relation = 'ALL'`` rows via GROUPING SETS)
and Holm's step-down adjustment; scipy supplies only the t distribution (p-values, critical values).
Degenerate groups (n < 2, zero variance) get NaN t/p and a ``note``.

**Pooled rows weight relations equally** (``pooling = 'relations_equal'``): the `ALL` row's mean is the mean of the
relations' means, its standard error sqrt(sum_r se_r^2) / R with Welch-Satterthwaite degrees of freedom, so a relation
with more items does not decide the pooled ordering of the conditions (``_relations_equal``); a relation with fewer
than 2 items (or subjects) has no variance and is left out of the pooled row (``n`` counts the pooled items).

**The subject as the unit** (``subject_*`` columns, beside the prompt-level ones): many prompts share a query
subject (and its no-context arm), so prompts are not independent draws of new subjects. Per relation, the paired
differences are averaged per query subject and the t-test runs over those subject means (df = subjects − 1); pooled
rows combine the relations' subject-level estimates the same equal-weight way.

Longer than 300 lines on purpose: the prompt-level and subject-level tests share the grouping, the pooling and
the t machinery, so they stay in one place.

Multi-passage items (condition ``passages``) are also grouped by the distractor passage's ``position`` (rows with a
non-null position; Holm adjusts them in a family of their own, so they never change the per-condition p-values).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from scipy import stats as sps

from entrainment.store.schema import CONTRASTS, STATS

# The paper's ordering claim: counterfactual > related > irrelevant / random. Each contrast is a - b.
from entrainment.store.sql import shifts_sql

CONTRAST_PAIRS = (
    ("counterfactual", "related"),
    ("counterfactual", "irrelevant"),
    ("counterfactual", "random"),
    ("related", "irrelevant"),
    ("related", "random"),
    ("irrelevant", "random"),
)
PAIRED = {("counterfactual", "related")}


def connect(measurements: Path, prompts: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the measurements, prompts and shifts views (paths taken literally)."""
    from entrainment.store.tables import arrow_dataset

    con = duckdb.connect(config={"threads": 1})  # one thread: float sums in one order, byte-identical reruns
    con.register("measurements", arrow_dataset(measurements))  # no path is spliced into SQL text or globbed
    con.register("prompts", arrow_dataset(prompts))
    con.execute(f"CREATE VIEW shifts AS {shifts_sql()}")
    return con


_PAIRED_SQL = """
SELECT model, ablation, COALESCE(relation, 'ALL') AS relation, condition, NULL::BIGINT AS position, target, metric,
       count(*) AS n, avg(ctx) AS mean_ctx, avg(base) AS mean_base, avg(diff) AS mean_diff,
       stddev_samp(diff) AS sd_diff
FROM shifts
GROUP BY GROUPING SETS ((model, ablation, relation, condition, target, metric),
                        (model, ablation, condition, target, metric))
UNION ALL
SELECT model, ablation, COALESCE(relation, 'ALL') AS relation, condition, position, target, metric,
       count(*) AS n, avg(ctx) AS mean_ctx, avg(base) AS mean_base, avg(diff) AS mean_diff,
       stddev_samp(diff) AS sd_diff
FROM shifts WHERE position IS NOT NULL
GROUP BY GROUPING SETS ((model, ablation, relation, condition, position, target, metric),
                        (model, ablation, condition, position, target, metric))
"""

_SUBJECT_SQL = """
WITH subj AS (
  SELECT model, ablation, relation, condition, NULL::BIGINT AS position, target, metric, subject, avg(diff) AS d
  FROM shifts GROUP BY model, ablation, relation, condition, target, metric, subject
  UNION ALL
  SELECT model, ablation, relation, condition, position, target, metric, subject, avg(diff) AS d
  FROM shifts WHERE position IS NOT NULL
  GROUP BY model, ablation, relation, condition, position, target, metric, subject
)
SELECT model, ablation, relation, condition, position, target, metric,
       count(*) AS n_subjects, avg(d) AS subject_mean_diff, var_samp(d) AS subject_var
FROM subj GROUP BY model, ablation, relation, condition, position, target, metric
"""

_KEY = ["model", "ablation", "condition", "position", "target", "metric"]


def _relations_equal(rel: pl.DataFrame, mean: str, var: str, n: str, extra_means: tuple[str, ...] = ()) -> pl.DataFrame:
    """Pool per-relation rows with equal relation weights: mean of the means, se^2 = sum(var_r / n_r) / R^2,
    Welch-Satterthwaite df = (sum v_r)^2 / sum(v_r^2 / (n_r - 1)). Relations with n < 2 (no variance) are left out.
    Returns one row per _KEY with `relation = 'ALL'`, `mean`, `_se`, `_df`, `n` (summed over the pooled relations)
    and each of `extra_means` averaged."""
    v = pl.col(var) / pl.col(n)
    return (
        rel.filter(pl.col(n) >= 2)
        .with_columns(v.alias("_v"), (v**2 / (pl.col(n) - 1)).alias("_w"))
        .group_by(_KEY)
        .agg(
            pl.col(mean).mean(),
            *(pl.col(c).mean() for c in extra_means),
            pl.col(n).sum(),
            (pl.col("_v").sum().sqrt() / pl.len()).alias("_se"),
            (pl.col("_v").sum() ** 2 / pl.col("_w").sum()).alias("_df"),
        )
        .with_columns(pl.lit("ALL").alias("relation"))
    )


def subject_stats(con: duckdb.DuckDBPyConnection, level: float = 0.95) -> pl.DataFrame:
    """Subject-level columns per stats group: the t-test over query-subject means of the paired differences
    (per relation), and the equal-weight combination of the relations for `ALL` (module docstring)."""
    df = con.sql(_SUBJECT_SQL).pl()
    df = df.with_columns(
        pl.col("subject_var").fill_null(float("nan")).cast(pl.Float64), pl.col("n_subjects").cast(pl.Int64)
    )
    own = df.with_columns(
        (pl.col("subject_var") / pl.col("n_subjects")).sqrt().alias("_se"),
        (pl.col("n_subjects") - 1).cast(pl.Float64).alias("_df"),
    )
    pooled = _relations_equal(df, "subject_mean_diff", "subject_var", "n_subjects")
    out = pl.concat([own.drop("subject_var"), pooled.select(own.drop("subject_var").columns)], how="vertical_relaxed")
    mean = out["subject_mean_diff"].to_numpy()
    se = out["_se"].fill_null(float("nan")).to_numpy()
    dfree = out["_df"].fill_null(float("nan")).to_numpy()
    n = out["n_subjects"].to_numpy().astype(float)
    _, p, half, _ = _t_test(mean, se, dfree, n, se, level)
    return out.with_columns(
        pl.Series("subject_ci_low", mean - half),
        pl.Series("subject_ci_high", mean + half),
        pl.Series("subject_p", p),
        pl.Series("subject_df", dfree),
    ).drop("_se", "_df")


_HOLM_SQL = """
SELECT * EXCLUDE (step, k),
  CASE WHEN p_value IS NULL OR isnan(p_value) THEN 'NaN'::DOUBLE
       ELSE max(least(1.0, (k - step + 1) * p_value)) OVER (
            PARTITION BY model, ablation, target, metric, position IS NULL
            ORDER BY (p_value IS NULL OR isnan(p_value)), p_value
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) END AS p_adjusted
FROM (
  SELECT *,
    row_number() OVER (PARTITION BY model, ablation, target, metric, position IS NULL
                       ORDER BY (p_value IS NULL OR isnan(p_value)), p_value) AS step,
    count(*) FILTER (WHERE NOT (p_value IS NULL OR isnan(p_value)))
        OVER (PARTITION BY model, ablation, target, metric, position IS NULL) AS k
  FROM tested)
"""


def _t_test(
    mean: np.ndarray, se: np.ndarray, df: np.ndarray, n: np.ndarray, sd: np.ndarray, level: float = 0.95, min_n: int = 2
):
    """t, p, CI half-width and a note per row; NaN where the test is undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        bad_n = n < min_n
        zero = ~bad_n & ~(sd > 0)
        ok = ~bad_n & ~zero
        t = np.where(ok, mean / se, np.nan)
        p = np.where(ok, 2 * sps.t.sf(np.abs(t), df), np.nan)
        half = np.where(ok, sps.t.ppf(0.5 + level / 2, df) * se, np.nan)
    note = np.where(bad_n, f"n < {min_n}", np.where(zero, "zero variance", ""))
    return t, p, half, note


def paired_stats(con: duckdb.DuckDBPyConnection, level: float = 0.95) -> pl.DataFrame:
    """stats.parquet rows: paired ctx-vs-base t-test per group and pooled over relations."""
    df = con.sql(_PAIRED_SQL).pl().with_columns(pl.col("sd_diff").fill_null(float("nan")))
    rel = df.filter(pl.col("relation") != "ALL")
    pooled = _relations_equal(
        rel.with_columns((pl.col("sd_diff") ** 2).alias("_var")), "mean_diff", "_var", "n", ("mean_ctx", "mean_base")
    )
    df = pl.concat(
        [
            rel.with_columns(
                pl.lit(None, pl.String).alias("pooling"),
                (pl.col("sd_diff") / pl.col("n").sqrt()).alias("_se"),
                (pl.col("n") - 1).cast(pl.Float64).alias("_df"),
            ),
            df.filter(pl.col("relation") == "ALL")
            .drop("mean_ctx", "mean_base", "mean_diff", "n")
            .join(pooled, on=_KEY + ["relation"], how="left", nulls_equal=True)
            .with_columns(pl.lit("relations_equal").alias("pooling"), pl.col("n").fill_null(0)),
        ],
        how="diagonal_relaxed",
    )
    n = df["n"].to_numpy().astype(float)
    sd = df["sd_diff"].to_numpy()
    se = df["_se"].fill_null(float("nan")).to_numpy()
    dfree = df["_df"].fill_null(float("nan")).to_numpy()
    mean = df["mean_diff"].to_numpy()
    t, p, half, note = _t_test(mean, se, dfree, n, se, level)
    with np.errstate(divide="ignore", invalid="ignore"):
        dz = np.where(sd > 0, mean / sd, np.nan)
    tested = (
        df.drop("_se", "_df")
        .with_columns(
            pl.Series("t", t),
            pl.Series("df", dfree),
            pl.Series("p_value", p),
            pl.Series("ci_low", mean - half),
            pl.Series("ci_high", mean + half),
            pl.Series("effect_size", dz),
            pl.Series("note", note.astype(str)),
        )
        .join(subject_stats(con, level), on=_KEY + ["relation"], how="left", nulls_equal=True)
    )
    con.register("tested", tested.to_arrow())
    out = con.sql(_HOLM_SQL).pl()
    con.unregister("tested")
    return out.select(STATS.names).sort(
        "model", "ablation", "relation", "condition", "position", "target", "metric", nulls_last=False
    )


_CONTRAST_SQL = """
WITH per_cond AS (
  SELECT model, ablation, COALESCE(relation, 'ALL') AS relation, target, metric, condition,
         count(*) AS n, avg(diff) AS mean, var_samp(diff) AS var
  FROM shifts
  GROUP BY GROUPING SETS ((model, ablation, relation, target, metric, condition),
                          (model, ablation, target, metric, condition))
),
welch AS (
  SELECT a.model, a.ablation, a.relation, a.target, a.metric, pr.condition_a, pr.condition_b, false AS paired,
         a.n + b.n AS n, a.mean AS mean_a, b.mean AS mean_b, a.mean - b.mean AS diff,
         a.var / a.n + b.var / b.n AS se2,
         (a.var / a.n + b.var / b.n) ^ 2
           / ((a.var / a.n) ^ 2 / (a.n - 1) + (b.var / b.n) ^ 2 / (b.n - 1)) AS df,
         least(a.n, b.n) AS n_min
  FROM pairs pr
  JOIN per_cond a ON a.condition = pr.condition_a
  JOIN per_cond b ON b.condition = pr.condition_b AND (a.model, a.ablation, a.relation, a.target, a.metric)
                                                    = (b.model, b.ablation, b.relation, b.target, b.metric)
  WHERE NOT pr.paired
),
matched AS (
  SELECT a.model, a.ablation, a.relation, a.target, a.metric, a.condition AS condition_a, b.condition AS condition_b,
         a.diff AS shift_a, b.diff AS shift_b
  FROM shifts a JOIN shifts b
    ON a.pair_id = b.pair_id AND (a.model, a.ablation, a.relation, a.target, a.metric)
                                = (b.model, b.ablation, b.relation, b.target, b.metric)  -- pairs never cross relations
  JOIN pairs pr ON pr.paired AND a.condition = pr.condition_a AND b.condition = pr.condition_b
),
paired_t AS (
  SELECT model, ablation, COALESCE(relation, 'ALL') AS relation, target, metric, condition_a, condition_b,
         true AS paired, count(*) AS n, avg(shift_a) AS mean_a, avg(shift_b) AS mean_b,
         avg(shift_a - shift_b) AS diff, var_samp(shift_a - shift_b) / count(*) AS se2,
         count(*) - 1.0 AS df, count(*) AS n_min
  FROM matched
  GROUP BY GROUPING SETS ((model, ablation, relation, target, metric, condition_a, condition_b),
                          (model, ablation, target, metric, condition_a, condition_b))
)
SELECT * FROM welch UNION ALL SELECT * FROM paired_t
"""


def _pooled_contrasts(rel: pl.DataFrame, all_keys: pl.DataFrame) -> pl.DataFrame:
    """The ALL rows of contrasts.parquet from its per-relation rows, relations weighted equally (as stats.parquet's
    ALL rows): diff, mean_a, mean_b averaged over relations, se^2 = sum(se2_r) / R^2, Welch-Satterthwaite
    df = (sum se2_r)^2 / sum(se2_r^2 / df_r) (a relation with se2_r = 0 adds nothing to that sum); relations without
    a variance (fewer than 2 items in an arm) are left out, as in stats.parquet. Every key the item-level query
    pooled (`all_keys`) keeps its ALL row: NaN, with n 0, when no relation can be pooled."""
    key = ["model", "ablation", "target", "metric", "condition_a", "condition_b", "paired"]
    ok = rel.filter((pl.col("n_min") >= 2) & pl.col("se2").is_not_null() & pl.col("se2").is_not_nan()).sort(
        key + ["relation"]
    )
    dterm = pl.when(pl.col("se2") > 0).then(pl.col("se2") ** 2 / pl.col("df")).otherwise(0.0)
    pooled = ok.group_by(key, maintain_order=True).agg(
        pl.col("n").sum(),
        pl.col("mean_a").mean(),
        pl.col("mean_b").mean(),
        pl.col("diff").mean(),
        (pl.col("se2").sum() / pl.len() ** 2).alias("se2"),
        (pl.col("se2").sum() ** 2 / dterm.sum()).alias("df"),
        pl.col("n_min").sum(),
    )
    return (
        all_keys.select(key)
        .unique(maintain_order=True)
        .join(pooled, on=key, how="left", nulls_equal=True)
        .with_columns(
            pl.col("n").fill_null(0),
            pl.col("n_min").fill_null(0),
            pl.lit("ALL").alias("relation"),
            pl.lit("relations_equal").alias("pooling"),
        )
        .select(rel.columns)
    )


def contrasts(con: duckdb.DuckDBPyConnection, level: float = 0.95) -> pl.DataFrame:
    """contrasts.parquet rows: the context-induced shift compared between conditions."""
    pairs = pl.DataFrame(
        {
            "condition_a": [a for a, _ in CONTRAST_PAIRS],
            "condition_b": [b for _, b in CONTRAST_PAIRS],
            "paired": [(a, b) in PAIRED for a, b in CONTRAST_PAIRS],
        }
    )
    con.register("pairs", pairs.to_arrow())
    df = con.sql(_CONTRAST_SQL).pl()
    con.unregister("pairs")
    if df.is_empty():
        return pl.DataFrame(schema=CONTRASTS.polars_schema())
    rel = df.filter(pl.col("relation") != "ALL").with_columns(pl.lit(None, pl.String).alias("pooling"))
    pooled = _pooled_contrasts(rel, df.filter(pl.col("relation") == "ALL"))  # ALL: relations weighted equally
    df = pl.concat([rel, pooled], how="vertical_relaxed")
    se2 = df["se2"].fill_null(float("nan")).fill_nan(float("nan")).to_numpy()
    dfree = df["df"].fill_null(float("nan")).to_numpy()
    diff = df["diff"].to_numpy()
    n_min = df["n_min"].to_numpy().astype(float)
    t, p, half, note = _t_test(diff, np.sqrt(se2), dfree, n_min, np.sqrt(se2), level)
    out = df.with_columns(
        pl.Series("t", t),
        pl.Series("df", dfree),
        pl.Series("p_value", p),
        pl.Series("ci_low", diff - half),
        pl.Series("ci_high", diff + half),
        pl.Series("note", note.astype(str)),
    )
    return out.select(CONTRASTS.names).sort(
        "model", "ablation", "relation", "target", "metric", "condition_a", "condition_b"
    )


def compute(measurements: Path, prompts: Path, level: float = 0.95) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(stats, contrasts) from the two Parquet files; CIs at `level` (0.95 = the SPEC's 95% CI)."""
    con = connect(measurements, prompts)
    try:
        return paired_stats(con, level), contrasts(con, level)
    finally:
        con.close()


def compute_frames(
    measurements: pl.DataFrame, prompts: pl.DataFrame, level: float = 0.95
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(stats, contrasts) from frames in memory (the Python API): the same SQL as ``compute``."""
    con = duckdb.connect(config={"threads": 1})  # as ``connect``: one summation order
    try:
        con.register("measurements", measurements.to_arrow())
        con.register("prompts", prompts.to_arrow())
        con.execute(f"CREATE VIEW shifts AS {shifts_sql()}")
        return paired_stats(con, level), contrasts(con, level)
    finally:
        con.close()


def summary_lines(stats: pl.DataFrame, metric: str = "logprob") -> list[str]:
    """One line per (model, ablation, condition): the pooled distractor shift with CI and p."""
    rows = stats.filter(
        (pl.col("relation") == "ALL")
        & (pl.col("target") == "distractor")
        & (pl.col("metric") == metric)
        & pl.col("position").is_null()
    )
    lines = []
    for r in rows.sort("model", "ablation", "condition").iter_rows(named=True):
        tag = f"{r['model']} [{r['ablation']}]" if r["ablation"] != "none" else r["model"]
        if r["mean_diff"] is None:  # a pooled row with no relation of >= 2 items (equal-weight pooling leaves it empty)
            lines.append(f"{tag} {r['condition']:>14}: distractor {metric} shift n/a ({r['note'] or 'too few items'})")
            continue
        p = "p = n/a (" + r["note"] + ")" if r["note"] else f"p = {r['p_value']:.2g} (Holm {r['p_adjusted']:.2g})"
        lines.append(
            f"{tag} {r['condition']:>14}: distractor {metric} shift {r['mean_diff']:+.3f} "
            f"[CI {r['ci_low']:+.3f}, {r['ci_high']:+.3f}], n = {r['n']}, {p}"
        )
    return lines
