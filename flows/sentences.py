"""Flow: prompts.parquet (+ heads.parquet when present) -> sentence_scores.parquet + sentence_stats.parquet
(sentence-level entrainment of every model; the heads part with each stable set removed)."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from tasks.cache import run_jobs
from tasks.sentences import combine, sentences_model


@flow(name="sentences", validate_parameters=False)
def sentences_flow(cfg: Config) -> dict:
    return combine(cfg, run_jobs(sentences_model, [(m, ()) for m in cfg.per_model()]))
