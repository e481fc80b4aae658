"""Flow: prompts (train/dev splits) -> the mask searches per (relation, seed, resample), one at a time or several in
one batched pass (searches_per_pass) -> heads.parquet, discovery.parquet, head_stability.parquet."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from entrainment.model.loading import pick_device_light
from entrainment.stages.discover import fold_jobs, search_jobs, search_passes
from tasks.cache import run_jobs
from tasks.discover import combine, crossfit_shard, discover_pass, discover_shard
from tasks.inputs import discover_relations


@flow(name="discover", validate_parameters=False)
def discover_flow(cfg: Config, only: tuple[str, ...] | None = None) -> dict:
    rels = discover_relations(cfg, only)
    passes = [  # the shared mask's searches too; searches_per_pass = 0 asks for the device (CPU, GPU) of each model
        (m, p)
        for m in cfg.per_model()
        for p in search_passes(m, search_jobs(m, rels, bool(only)), pick_device_light(m.device))
    ]
    if all(len(pairs) == 1 for _, (_, pairs) in passes):  # a task per search: cached, resumable on its own
        searches = run_jobs(discover_shard, [(m, (rel, *pairs[0])) for m, (rel, pairs) in passes])
    else:
        searches = [s for m in run_jobs(discover_pass, passes) for s in m["searches"]]
    folds = [(m, job) for m in cfg.per_model() for job in fold_jobs(cfg, rels)]  # cross-fitting over subjects
    return combine(cfg, searches + (run_jobs(crossfit_shard, folds) if folds else []))
