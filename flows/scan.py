"""Flow: prompts (dev/test) + heads.parquet -> head_scores.parquet (scan, atp) + head_agreement.parquet."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from flows.discover import discover_relations
from tasks.cache import run_many
from tasks.scan import agreement_relation, combine, scan_relation


@flow(name="scan", validate_parameters=False)
def scan_flow(cfg: Config, only: tuple[str, ...] | None = None) -> dict:
    rels = discover_relations(cfg, only)
    scores = run_many(scan_relation, cfg, [(rel,) for rel in rels])
    agrees = run_many(agreement_relation, cfg, [(rel, m) for rel, m in zip(rels, scores)])
    return combine(cfg, scores, agrees)
