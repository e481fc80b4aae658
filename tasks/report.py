"""Task: report.html (+ a Prefect markdown artifact), cached on the tables it reads, the model and the code."""

from __future__ import annotations

import sys

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from entrainment import ablate, head_figures, model_figures, models, report, scoring, tables
from entrainment.config import Config
from tasks.cache import files_hash, key_fn, manifest
from tasks.measure import model_key

INPUTS = ("prompts", "measurements", "stats", "contrasts", "heads", "discovery", "ablation", "side_effects", "null_draws",
          "head_scores", "head_agreement", "models", "scaling")


def _inputs(cfg: Config) -> dict:
    present = [cfg.out / f"{n}.parquet" for n in INPUTS if (cfg.out / f"{n}.parquet").exists()]
    return {"tables": [p.name for p in present], "hash": files_hash(present), "model": model_key(cfg)}


@task(name="report", cache_key_fn=key_fn("report", (report, head_figures, model_figures, ablate, scoring, sys.modules[__name__]), _inputs))
def report_task(cfg: Config) -> dict:
    example = None
    if (cfg.out / "measurements.parquet").exists():
        loaded = models.load(cfg.model, cfg.device, cfg.dtype)
        row = report.pick_example(tables.read_table(cfg.out, "prompts"), tables.read_table(cfg.out, "measurements"),
                                  loaded.info.spec)
        example = report.example_topk(loaded, row) if row else None
    path = cfg.out / "report.html"
    tables.atomic_write_bytes(path, report.build(cfg.out, example).encode())
    lines = []
    if (cfg.out / "stats.parquet").exists():
        from entrainment.stats import summary_lines

        lines += summary_lines(tables.read_table(cfg.out, "stats"))
    if (cfg.out / "ablation.parquet").exists():
        from entrainment.ablate import summary_lines as ablation_lines

        lines += ablation_lines(tables.read_table(cfg.out, "ablation"))
    create_markdown_artifact(key="entrainment-report", markdown="# Contextual entrainment\n\n" + "\n".join(
        f"- {line}" for line in lines) + f"\n\nFull report: `{path}`", description="Summary of the run")
    get_run_logger().info("wrote %s", path)
    return manifest([path], summary=lines)
