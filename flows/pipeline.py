"""The whole pipeline as one Prefect flow: generate -> measure -> stats -> discover -> scan -> ablate -> heads ->
sentences -> report.

Each stage is a subflow whose tasks are cached on their inputs, parameters and code, so a rerun
recomputes only what changed. ``options`` is a plain dict of Config fields (JSON-able, so the same
flow serves the CLI and scheduled deployments).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from entrainment.config import Config
from entrainment.store.lock import folder_lock
from flows.ablate import ablate_flow
from flows.discover import discover_flow
from flows.generate import generate_flow
from flows.head_types import head_types_flow
from flows.measure import measure_flow
from flows.report import report_flow
from flows.runners import dask_address, with_runner
from flows.scan import scan_flow
from flows.sentences import sentences_flow
from flows.stats import stats_flow


@flow(name="entrainment", validate_parameters=False, log_prints=True)
def pipeline(options: dict | None = None) -> dict:
    """Prefect entry point (CLI `entrainment run` and the scheduled deployment): every stage, holding the output
    folder's lock (a scheduled run waits for another run of the same --out); returns {stage: manifest}."""
    cfg = Config(**(options or {}))
    with folder_lock(cfg.out, wait=True), dask_address(cfg) as address:
        out = {"generate": generate_flow(cfg)}
        out["measure"] = with_runner(measure_flow, address)(cfg)
        out["stats"] = stats_flow(cfg)
        out["discover"] = with_runner(discover_flow, address)(cfg)
        if cfg.scan:
            out["scan"] = with_runner(scan_flow, address)(cfg)
        out["ablate"] = with_runner(ablate_flow, address)(cfg)
        if cfg.head_types:
            out["heads"] = with_runner(head_types_flow, address)(cfg)
        if cfg.sentences:  # after ablate: the heads part reads heads.parquet
            out["sentences"] = with_runner(sentences_flow, address)(cfg)
        out["report"] = report_flow(cfg)
    logger = get_run_logger()
    for stage, m in out.items():
        for path in m["outputs"]:
            logger.info("%s: %s", stage, path)
    return out
