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
    return manifest(paths, rows=len(scores), summary=[line for m in done for line in m["summary"]])
