"""Task runners: the default (shards one after another in this process) or Dask (prefect-dask).

``--runner dask`` fans (model x relation) shards of measurement, discovery and ablation out over a
Dask cluster: an existing one (``--dask-address tcp://host:8786``, e.g. one worker per GPU machine)
or a LocalCluster started for the run. No home-made scheduler: Dask does the placement.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from entrainment.config import Config


@contextmanager
def dask_address(cfg: Config, n_workers: int = 2) -> Iterator[str | None]:
    """The scheduler address to use: the user's, or a LocalCluster's for the duration of the block."""
    if cfg.runner != "dask":
        yield None
    elif cfg.dask_address:
        yield cfg.dask_address
    else:
        from distributed import LocalCluster

        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            yield cluster.scheduler_address


def with_runner(flow, address: str | None):
    """The flow, set to submit its tasks to the Dask scheduler at `address` (unchanged when None)."""
    if address is None:
        return flow
    from prefect_dask import DaskTaskRunner

    return flow.with_options(task_runner=DaskTaskRunner(address=address))
