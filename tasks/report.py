"""Task: report.html (+ a Prefect markdown artifact) and timings.parquet, cached on the tables it reads, the model
and the code."""

from __future__ import annotations

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from entrainment import stage_graph
from entrainment.ablation import summaries
from entrainment.config import Config
from entrainment.model import loading, scoring, tokens
from entrainment.stages import report, stats
from entrainment.store import files, tables
from tasks.cache import files_hash, key_fn, manifest
from tasks.inputs import model_key


def _timing_shards(cfg: Config) -> list:
    return sorted((cfg.out / "shards" / "timings").glob("*.parquet"))


def _inputs(cfg: Config) -> dict:
    present = [cfg.out / f"{n}.parquet" for n in stage_graph.reads("report") if (cfg.out / f"{n}.parquet").exists()]
    return {
        "tables": [p.name for p in present],
        "hash": files_hash(present + _timing_shards(cfg)),
        "model": model_key(cfg),
    }


@task(name="report", cache_key_fn=key_fn("report", __name__, _inputs))
def report_task(cfg: Config) -> dict:
    example = None
    if (cfg.out / "measurements.parquet").exists():
        loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
        row = report.pick_example(
            tables.read_table(cfg.out, "prompts"), tables.read_table(cfg.out, "measurements"), loaded.info.spec
        )
        example = scoring.top_tokens(loaded, row, tokens.Tokens(loaded.tokenizer, cfg.bos)) if row else None
    path = cfg.out / "report.html"
    files.atomic_write_bytes(path, report.build(cfg.out, example, smoke=cfg.smoke).encode())
    paths = [path]
    shards = _timing_shards(cfg)
    if shards:
        t = pl.concat([tables.read_parquet(p) for p in shards]).sort("model", "stage", "relation", "seed", "epoch")
        paths.append(tables.write_table(t, cfg.out, "timings"))
    lines = []
    if (cfg.out / "stats.parquet").exists():
        lines += stats.summary_lines(tables.read_table(cfg.out, "stats"))
    if (cfg.out / "ablation.parquet").exists():
        lines += summaries.summary_lines(tables.read_table(cfg.out, "ablation"))
    create_markdown_artifact(
        key="entrainment-report",
        markdown="# Contextual entrainment\n\n"
        + "\n".join(f"- {line}" for line in lines)
        + f"\n\nFull report: `{path}`",
        description="Summary of the run",
    )
    get_run_logger().info("wrote %s", path)
    return manifest(paths, summary=lines)
