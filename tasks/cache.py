"""Stage-level caching on Prefect: keys from inputs, parameters and code; outputs checked on every hit.

A stage task returns a manifest ``{"outputs": {path: sha256}, ...}``. Its cache key hashes
(stage name, the Config fields the stage reads, the content of its input files, the source of every
module it runs). Prefect's TASK_SOURCE would miss helper modules, so the key hashes whole modules.
``run_cached`` checks after each call that every output still exists with the recorded hash; a
deleted or corrupted output makes it rerun the task with ``refresh_cache=True``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from prefect import Task

from entrainment.config import Config
from entrainment.tables import file_sha256

log = logging.getLogger("entrainment.cache")


def sha(*parts: Any) -> str:
    """sha256 of JSON-encoded parts (paths and tuples encode as strings and lists)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def code_hash(*modules: ModuleType) -> str:
    """Hash of the full source of the given modules."""
    return sha(*[inspect.getsource(m) for m in modules])


def files_hash(paths: list[Path]) -> str:
    """Hash of the files' contents (names relative to nothing: moving a file keeps its hash)."""
    return sha(*[file_sha256(p) for p in paths])


def manifest(outputs: list[Path], **extra: Any) -> dict:
    """What a stage task returns: its outputs with their hashes, plus small facts (row counts...)."""
    return {"outputs": {str(p): file_sha256(p) for p in outputs}, **extra}


def outputs_intact(m: dict) -> bool:
    """True if every output in the manifest exists with the recorded content."""
    for path, digest in m.get("outputs", {}).items():
        p = Path(path)
        if not p.is_file() or file_sha256(p) != digest:
            return False
    return True


def result_storage(cfg: Config) -> Path:
    """Cache records live next to the results they describe (delete --out and the cache goes too)."""
    return Path(cfg.out) / ".cache" / "prefect"


def _settle(state: Any, name: str, args: tuple) -> dict:
    """The manifest of a finished task state; a cache hit is logged (INFO) with what it served."""
    m = state.result()
    if state.name == "Cached":
        what = " ".join(str(a) for a in args if isinstance(a, (str, int)))
        log.info("%s%s: cache hit (%d output%s unchanged)", name, f" [{what}]" if what else "", len(m["outputs"]),
                 "" if len(m["outputs"]) == 1 else "s")
    return m


def run_cached(task: Task, cfg: Config, *args: Any, **kwargs: Any) -> dict:
    """Call a stage task with caching; rerun it if a cached output was deleted or changed."""
    opts: dict[str, Any] = {"result_storage": result_storage(cfg)}
    if cfg.refresh:
        opts["refresh_cache"] = True
    m = _settle(task.with_options(**opts)(cfg, *args, return_state=True, **kwargs), task.name, args)
    if not outputs_intact(m):
        log.info("%s: a cached output was deleted or changed; recomputing", task.name)
        m = task.with_options(result_storage=result_storage(cfg), refresh_cache=True)(cfg, *args, **kwargs)
    return m


def key_fn(stage: str, modules: tuple[ModuleType, ...], inputs: Callable[..., Any]) -> Callable[[Any, dict], str]:
    """Build a Prefect cache_key_fn for a stage.

    ``inputs(**task_parameters)`` returns whatever identifies the stage's inputs (file hashes, row
    hashes, model identity); it is hashed together with the stage's Config fields and module code.
    """

    def fn(_ctx: Any, params: dict) -> str:
        return stage_key(stage, modules, params["cfg"], inputs(**params))

    return fn


def stage_key(stage: str, modules: tuple[ModuleType, ...], cfg: Config, inputs_id: Any) -> str:
    """The cache key of one stage call; tasks also use it to name their resume folders."""
    return sha(stage, str(cfg.out), cfg.stage_params(stage), inputs_id, code_hash(*modules))


def run_many(task: Task, cfg: Config, calls: list[tuple]) -> list[dict]:
    """Run one cached task over many argument tuples (shards) with one Config; see run_jobs."""
    return run_jobs(task, [(cfg, args) for args in calls])


def run_jobs(task: Task, jobs: list[tuple[Config, tuple]]) -> list[dict]:
    """Run one cached task over many (config, argument tuple) jobs: shards of one or several models.

    With the default runner jobs run one after another in this process (in the given order, so one model at a
    time is in memory, with all cores for each forward pass). With ``--runner dask`` all jobs, of every model,
    are submitted at once to the flow's Dask task runner and fan out over its workers. Either way, invalid
    cached outputs are recomputed.
    """
    if not jobs:
        return []
    base = jobs[0][0]
    opts: dict[str, Any] = {"result_storage": result_storage(base)}
    if base.refresh:
        opts["refresh_cache"] = True
    t = task.with_options(**opts)
    if base.runner == "dask":
        futures = [t.submit(cfg, *args) for cfg, args in jobs]
        for f in futures:
            f.wait()
        results = [_settle(f.state, task.name, (cfg.model, *args)) for f, (cfg, args) in zip(futures, jobs)]
    else:
        results = [_settle(t(cfg, *args, return_state=True), task.name, (cfg.model, *args)) for cfg, args in jobs]
    for i, (m, (cfg, args)) in enumerate(zip(results, jobs)):
        if not outputs_intact(m):
            log.info("%s: a cached output was deleted or changed; recomputing", task.name)
            results[i] = task.with_options(result_storage=result_storage(cfg), refresh_cache=True)(cfg, *args)
    return results


def merge_timings(cfg: Config, df: Any, stages: tuple[str, ...]) -> Path:
    """timings.parquet = its rows of other stages + these rows (each stage replaces only its own)."""
    import polars as pl

    from entrainment import tables

    path = Path(cfg.out) / "timings.parquet"
    old = tables.read_parquet(path) if path.exists() and tables.is_valid_parquet(path) else None
    if old is not None and set(old.columns) == set(df.columns):
        df = pl.concat([old.filter(~pl.col("stage").is_in(list(stages))), df.select(old.columns)])
    return tables.write_table(df.sort("model", "stage", "relation", "seed", "epoch"), cfg.out, "timings")
