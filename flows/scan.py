"""Flow: prompts (dev/test) + heads.parquet -> head_scores.parquet (scan, atp per ablation method) +
head_agreement.parquet + method_agreement.parquet."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from entrainment.stages import scan
from tasks.cache import run_jobs
from tasks.inputs import discover_relations
from tasks.scan import agreement_relation, combine, scan_relation


@flow(name="scan", validate_parameters=False)
def scan_flow(cfg: Config, only: tuple[str, ...] | None = None) -> dict:
    rels = discover_relations(cfg, only)
    jobs = [(m, job) for m in cfg.per_model() for job in scan.jobs(cfg, rels)]
    scores = run_jobs(scan_relation, jobs)
    agrees = run_jobs(agreement_relation, [(m, (rel, method, s)) for (m, (rel, method)), s in zip(jobs, scores)])
    return combine(cfg, scores, agrees)
