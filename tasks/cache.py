"""Stage-level caching on Prefect: keys from inputs, parameters and code; outputs checked on every hit.

A stage task returns a manifest ``{"outputs": {path: sha256}, ...}``. Its cache key hashes
(stage name, the Config fields the stage reads, the content of its input files, the source of every
project module the task's module can reach through its imports -- computed from the import graph,
``entrainment.imports``, once per process). Prefect's TASK_SOURCE would miss helper modules, and a
hand-written module list goes stale; no edit to reachable code can leave a stale cache hit.
``run_cached`` checks after each call that every output still exists with the recorded hash; a
deleted or corrupted output makes it rerun the task with ``refresh_cache=True``.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from prefect import Task

from entrainment import imports
from entrainment.config import Config
from entrainment.paths import PROJECT_ROOT
from entrainment.store.files import file_sha256, json_sha256

log = logging.getLogger("entrainment.cache")


@lru_cache(maxsize=None)
def code_hash(module: str, root: str = str(PROJECT_ROOT)) -> str:
    """Hash of the source of every project module `module` can reach through its imports (itself included)."""
    files = imports.module_files(Path(root))
    return json_sha256(*[(m, files[m].read_text(encoding="utf-8")) for m in imports.reachable(Path(root), module)])


def files_hash(paths: list[Path]) -> str:
    """Hash of the files' contents (names relative to nothing: moving a file keeps its hash)."""
    return json_sha256(*[file_sha256(p) for p in paths])


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
        log.info(
            "%s%s: cache hit (%d output%s unchanged)",
            name,
            f" [{what}]" if what else "",
            len(m["outputs"]),
            "" if len(m["outputs"]) == 1 else "s",
        )
    return m


def run_cached(task: Task, cfg: Config, *args: Any) -> dict:
    """Call one stage task with caching (one job of ``run_jobs``); rerun it if a cached output was deleted."""
    return run_jobs(task, [(cfg, args)])[0]


def key_fn(stage: str, module: str, inputs: Callable[..., Any]) -> Callable[[Any, dict], str]:
    """Build a Prefect cache_key_fn for a stage task defined in `module` (its ``__name__``).

    ``inputs(**task_parameters)`` returns whatever identifies the stage's inputs (file hashes, row
    hashes, model identity); it is hashed together with the stage's Config fields and the code the module reaches.
    """

    def fn(_ctx: Any, params: dict) -> str:
        return stage_key(stage, module, params["cfg"], inputs(**params))

    return fn


def stage_key(stage: str, module: str, cfg: Config, inputs_id: Any) -> str:
    """The cache key of one stage call; tasks also use it to name their resume folders."""
    return json_sha256(stage, str(cfg.out), cfg.stage_params(stage), inputs_id, code_hash(module))


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


def write_timings(cfg: Config, stage: str, df: Any) -> Path:
    """This run's timing rows of one stage as shards/timings/<stage>.parquet (schema.TIMINGS); the report stage
    assembles timings.parquet from every stage's shard, so each stage replaces only its own rows."""
    from entrainment.store import tables

    df = df.sort("model", "stage", "relation", "seed", "epoch")
    return tables.write_table_file(df, Path(cfg.out) / "shards" / "timings" / f"{stage}.parquet", "timings")
