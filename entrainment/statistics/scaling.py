"""How entrainment changes with model size: the power-law fit of the scaling follow-up (arXiv 2604.13275).

E(N) = a * N^b, fitted by OLS in log-log space, log|mean shift| = log a + b log N, over the measured models
(N = total parameters), per (condition, target, metric) with metric `logprob` (log-prob shift) or `logit`
(the follow-up's Δ_t = ℓ(t | ctx) − ℓ(t | ∅)), raw and normalised (shift divided by the mean absolute
no-context value: a raw difference is confounded when the baselines move with size), and the no-context value
itself as its control (kind `no_context`: e.g. the gold's logit without context, which the follow-up fits to show
what size does to the baseline). Reports b with its 95% CI (t interval on the slope's standard error), R², the
slope's p-value and n_models; only with >= 3 models.

``sentence_tables_for`` fits the sentence-level measures the same way (sentence_stats' pooled intact rows: Δ_self,
Δ_net, the gap) into sentence_scaling.parquet, written by the sentences stage (scaling.parquet is the stats stage's).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats as sps

MIN_MODELS = 3


def absent_reason(n_models: int, table: str = "scaling") -> str | None:
    """Why `table`.parquet is not written for lack of models (None when there are enough)."""
    if n_models >= MIN_MODELS:
        return None
    return (
        f"{table}.parquet not written: {n_models} model{'' if n_models == 1 else 's'} measured; a power-law "
        f"fit needs at least {MIN_MODELS} (entrainment run --models a,b,c)"
    )


def sizes_from(models: pl.DataFrame, size: str = "n_params") -> dict[str, int]:
    """model -> its parameter count (`size` column of models.parquet)."""
    return dict(zip(models["model"].to_list(), models[size].to_list()))


def tables_for(stats: pl.DataFrame, models: pl.DataFrame, level: float = 0.95) -> pl.DataFrame | None:
    """Every scaling.parquet row: fits against total and against non-embedding parameters."""
    parts = [scaling_table(stats, sizes_from(models, s), level, s) for s in ("n_params", "n_params_non_embedding")]
    parts = [p for p in parts if p is not None]
    return pl.concat(parts).sort("size", "condition", "target", "metric", "kind") if parts else None


def fit(sizes: np.ndarray, values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """OLS of log|values| on log sizes: b, its CI, R², p (scipy.stats.linregress), n_models."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.abs(np.asarray(values, float)))
    r = sps.linregress(x, y)
    half = sps.t.ppf(0.5 + level / 2, len(x) - 2) * r.stderr if len(x) > 2 else float("nan")
    return {
        "b": float(r.slope),
        "b_ci_low": float(r.slope - half),
        "b_ci_high": float(r.slope + half),
        "a": float(np.exp(r.intercept)),
        "r2": float(r.rvalue**2),
        "p_value": float(r.pvalue),
        "n_models": len(x),
    }


def scaling_table(
    stats: pl.DataFrame, sizes: dict[str, int], level: float = 0.95, size: str = "n_params"
) -> pl.DataFrame | None:
    """scaling.parquet rows from stats.parquet (pooled `ALL` rows of the intact models) and model sizes
    (`size` names which count they are); None when fewer than MIN_MODELS models with a size are measured."""
    rows = stats.filter(
        (pl.col("relation") == "ALL")
        & (pl.col("ablation") == "none")
        & pl.col("metric").is_in(["logprob", "logit"])
        & pl.col("model").is_in(list(sizes))
    )
    if "position" in rows.columns:
        rows = rows.filter(pl.col("position").is_null())
    if rows["model"].n_unique() < MIN_MODELS:
        return None
    out = []
    for (cond, target, metric), g in sorted(rows.group_by("condition", "target", "metric"), key=lambda kv: kv[0]):
        g = g.sort("model")
        n = np.array([sizes[m] for m in g["model"]], float)
        for kind, v in (
            ("raw", g["mean_diff"].to_numpy()),
            ("normalised", g["mean_diff"].to_numpy() / np.abs(g["mean_base"].to_numpy())),
            ("no_context", g["mean_base"].to_numpy()),
        ):
            if len(g) >= MIN_MODELS and np.all(np.isfinite(v)) and np.all(v != 0):
                out.append(
                    {"size": size, "condition": cond, "target": target, "metric": metric, "kind": kind}
                    | fit(n, v, level)
                    | {"models": ",".join(g["model"])}
                )
    return pl.DataFrame(out) if out else None


def sentence_tables_for(sentence_stats: pl.DataFrame, models: pl.DataFrame, level: float = 0.95) -> pl.DataFrame | None:
    """sentence_scaling.parquet rows: fits against total and against non-embedding parameters (None: < 3 models).

    Args:
        sentence_stats: sentence_stats.parquet rows of every model of the run.
        models: models.parquet (n_params, n_params_non_embedding per model).
        level: confidence level of b's CI.
    Returns:
        One row per (size, condition, measure), or None.
    """
    parts = [
        sentence_table(sentence_stats, sizes_from(models, s), level, s) for s in ("n_params", "n_params_non_embedding")
    ]
    parts = [p for p in parts if p is not None]
    return pl.concat(parts).sort("size", "condition", "measure") if parts else None


def sentence_table(
    sentence_stats: pl.DataFrame, sizes: dict[str, int], level: float = 0.95, size: str = "n_params"
) -> pl.DataFrame | None:
    """Log-log fits of the pooled (`ALL`), intact (`none`) sentence measures on model size, per (condition,
    measure); `same_sign` says whether every model's mean has one sign (the fit is of |mean|: with mixed signs a
    power law describes nothing). None with fewer than MIN_MODELS models."""
    rows = sentence_stats.filter(
        (pl.col("relation") == "ALL") & (pl.col("ablation") == "none") & pl.col("model").is_in(list(sizes))
    )
    if rows["model"].n_unique() < MIN_MODELS:
        return None
    out = []
    for (cond, measure), g in sorted(rows.group_by("condition", "measure"), key=lambda kv: kv[0]):
        g = g.sort("model")
        v = g["mean"].to_numpy()
        if len(g) >= MIN_MODELS and np.all(np.isfinite(v)) and np.all(v != 0):
            out.append(
                {"size": size, "condition": cond, "measure": measure}
                | fit(np.array([sizes[m] for m in g["model"]], float), v, level)
                | {"same_sign": bool(np.all(v > 0) or np.all(v < 0)), "models": ",".join(g["model"])}
            )
    return pl.DataFrame(out) if out else None
