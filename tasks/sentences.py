"""Tasks: sentence-level entrainment per model (sentence_scores, sentence_stats). The work is
``entrainment.stages.sentences.run`` (shared with the Python API)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task

from entrainment.config import Config
from entrainment.data import lre_prompts
from entrainment.model import loading
from entrainment.stages import sentences
from entrainment.statistics import scaling
from entrainment.store import tables
from entrainment.store.schema import SENTENCE_SCORES, SENTENCE_STATS
from tasks.cache import files_hash, key_fn, manifest, write_timings
from tasks.inputs import model_key, rows_hash, shard_name
from tasks.progress import progress_bar

SHARDS = Path("shards") / "sentences"


def _heads(cfg: Config) -> pl.DataFrame | None:
    return tables.read_table(cfg.out, "heads") if (cfg.out / "heads.parquet").exists() else None


def _inputs(cfg: Config) -> dict:
    prompts = tables.read_table(cfg.out, "prompts")
    heads = _heads(cfg)
    rels = sorted(prompts["relation"].unique())
    files = (
        []
        if cfg.items is not None
        else lre_prompts.input_files(cfg.data_dir, tuple(sentences.lre_names(cfg.data_dir, rels)))
    )
    return {
        "model": model_key(cfg),
        "rows": rows_hash(prompts),
        "heads": rows_hash(heads) if heads is not None else None,
        "files": files_hash(files),
    }


@task(name="sentences", tags=["gpu"], cache_key_fn=key_fn("sentences", __name__, _inputs))
def sentences_model(cfg: Config) -> dict:
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    spec = loaded.info.spec
    with ExitStack() as stack:
        bar: list = []
        res = sentences.run(
            loaded,
            tables.read_table(cfg.out, "prompts"),
            cfg,
            _heads(cfg),
            progress=lambda n: bar[0](n) if bar else None,
            total=lambda n: bar.append(stack.enter_context(progress_bar(f"sentences {spec}", n))),
        )
    log = get_run_logger()
    for line in res.summary:
        log.info("%s", line)
    folder = cfg.out / SHARDS / shard_name(spec)
    timing = pl.DataFrame(
        {
            "model": [spec],
            "stage": ["sentences"],
            "relation": ["ALL"],
            "seed": [-1],
            "epoch": [-1],
            "seconds": [res.seconds],
        }
    )
    paths = [
        tables.write_parquet(res.scores, folder / "scores.parquet", SENTENCE_SCORES),
        tables.write_parquet(res.stats, folder / "stats.parquet", SENTENCE_STATS),
        tables.write_parquet(timing, folder / "timing.parquet"),
    ]
    return manifest(paths, model=spec, summary=res.summary)


def combine(cfg: Config, done: list[dict]) -> dict:
    """sentence_scores and sentence_stats of every model of this run (+ the stage's timings)."""
    pick = lambda name: pl.concat(  # noqa: E731
        [tables.read_parquet(Path(p)) for m in done for p in m["outputs"] if Path(p).name == name]
    )
    scores = pick("scores.parquet").sort("model", "relation", "condition", "item", "target", "arm", "ablation")
    stats = pick("stats.parquet").sort("model", "ablation", "measure", "relation", "condition")
    paths = [
        tables.write_table(scores, cfg.out, "sentence_scores"),
        tables.write_table(stats, cfg.out, "sentence_stats"),
        write_timings(cfg, "sentences", pick("timing.parquet")),
    ]
    fit_paths, fit_lines = scaling_step(cfg, stats)
    summary = [line for m in done for line in m["summary"]] + fit_lines
    return manifest(paths + fit_paths, rows=len(scores), summary=summary)


def scaling_step(cfg: Config, stats: pl.DataFrame) -> tuple[list, list[str]]:
    """sentence_scaling.parquet when >= 3 models ran (and models.parquet names their sizes); otherwise an old one is
    removed (it would describe other models) and the summary says why there is none."""
    path = cfg.out / "sentence_scaling.parquet"
    models = tables.read_table(cfg.out, "models") if (cfg.out / "models.parquet").exists() else None
    n = stats["model"].n_unique()
    fit = scaling.sentence_tables_for(stats, models, cfg.confidence) if models is not None else None
    if fit is None:
        path.unlink(missing_ok=True)
        sized = set(models["model"]) & set(stats["model"]) if models is not None else set()
        why = scaling.absent_reason(n, "sentence_scaling") or (
            "sentence_scaling.parquet not written: "
            + (
                "models.parquet is missing (rerun measure)"
                if models is None
                else f"models.parquet sizes only {len(sized)} of the {n} models (rerun measure)"
                if len(sized) < scaling.MIN_MODELS
                else "no measure fits (zero or NaN means)"
            )
        )
        return [], [why]
    fit = fit.sort("size", "condition", "measure")
    lines = [
        f"sentence scaling over {r['n_models']} models: {r['condition']} Δ_{r['measure']}: b = {r['b']:+.3f} "
        f"[{r['b_ci_low']:+.3f}, {r['b_ci_high']:+.3f}], R² {r['r2']:.2f}, p {r['p_value']:.2g}"
        + ("" if r["same_sign"] else " (signs differ across models)")
        for r in fit.filter(pl.col("size") == "n_params_non_embedding").iter_rows(named=True)
    ]
    return [tables.write_table(fit, cfg.out, "sentence_scaling")], lines
