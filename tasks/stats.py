"""Task: shift_stats.parquet and contrasts.parquet, cached on the measurement and prompt tables and the code."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from entrainment.config import Config
from entrainment.stages import stats
from entrainment.statistics import scaling
from entrainment.store import tables
from tasks.cache import files_hash, key_fn, manifest


def _inputs(cfg: Config) -> str:
    files = [cfg.out / "measurements.parquet", cfg.out / "prompts.parquet"]
    return files_hash(files + [p for p in [cfg.out / "models.parquet"] if p.exists()])


def scaling_step(cfg: Config, s) -> tuple[list, list[str]]:
    """scaling.parquet from stats + models.parquet when >= 3 models are measured; otherwise an old one is removed
    (it would describe other models) and the summary says why there is none."""
    path = cfg.out / "scaling.parquet"
    models = tables.read_table(cfg.out, "models") if (cfg.out / "models.parquet").exists() else None
    n = s["model"].n_unique()
    fit = scaling.tables_for(s, models, cfg.confidence) if models is not None and n >= scaling.MIN_MODELS else None
    if fit is None:
        path.unlink(missing_ok=True)
        return [], [
            scaling.absent_reason(n) or "scaling.parquet not written: models.parquet is missing (rerun measure)"
        ]
    fit = fit.sort("size", "condition", "target", "metric", "kind")
    lines = [
        f"scaling over {r['n_models']} models (non-embedding N): {r['condition']} {r['target']} {r['metric']}: "
        f"b = {r['b']:+.3f} "
        f"[{r['b_ci_low']:+.3f}, {r['b_ci_high']:+.3f}], R² {r['r2']:.2f}, p {r['p_value']:.2g}"
        for r in fit.filter(
            (fit["size"] == "n_params_non_embedding") & (fit["kind"] == "raw") & (fit["metric"] == "logit")
        ).iter_rows(named=True)
    ]
    return [tables.write_table(fit, cfg.out, "scaling")], lines


@task(name="stats", cache_key_fn=key_fn("stats", __name__, _inputs))
def stats_task(cfg: Config) -> dict:
    tables.read_table(cfg.out, "measurements"), tables.read_table(cfg.out, "prompts")  # validated before testing
    s, c = stats.compute(cfg.out / "measurements.parquet", cfg.out / "prompts.parquet", cfg.confidence)
    paths = [tables.write_table(s, cfg.out, "stats"), tables.write_table(c, cfg.out, "contrasts")]
    fit_paths, fit_lines = scaling_step(cfg, s)
    paths += fit_paths
    lines = stats.summary_lines(s) + fit_lines
    logger = get_run_logger()
    for line in lines:
        logger.info(line)
    top = s.filter((s["relation"] == "ALL") & (s["target"] == "distractor") & s["position"].is_null()).select(
        "model", "ablation", "condition", "metric", "n", "mean_diff", "ci_low", "ci_high", "p_value", "p_adjusted"
    )
    create_table_artifact(
        key="entrainment-stats",
        table=top.head(40).to_dicts(),
        description=f"Pooled distractor shifts (ctx - base); full table: {paths[0]}",
    )
    return manifest(paths, rows=len(s), summary=lines)
