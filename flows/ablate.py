"""Flow: heads.parquet + test splits -> ablation.parquet (controls, methods, transfer), side_effects.parquet,
subject_gains.parquet and verdict.parquet (each mask, and the cross-fitted verdict of each discovery relation).

The fan-out is ``entrainment.stages.ablate.plan`` (the Python API runs the same plan in one process)."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from entrainment.stages.ablate import plan
from tasks.ablate import ablate_relation, combine, crossfit_task, masks_of, side_effects_task
from tasks.cache import run_jobs
from tasks.inputs import stage_relations


@flow(name="ablate", validate_parameters=False)
def ablate_flow(cfg: Config) -> dict:
    plans = [(m, plan(masks_of(m), stage_relations(m, None))) for m in cfg.per_model()]
    evals = [(m, job) for m, p in plans for job in p.evals]
    sides = [(m, job) for m, p in plans for job in p.sides]
    fits = [(m, job) for m, p in plans for job in p.fits]
    done_evals = {(m.model, job): r for (m, job), r in zip(evals, run_jobs(ablate_relation, evals))}
    done_sides = {(m.model, job): r for (m, job), r in zip(sides, run_jobs(side_effects_task, sides))}
    jobs, side = [], []
    for m, p in plans:
        ev, sd = p.labelled()
        jobs += [(mask, rel, done_evals[(m.model, key)]) for mask, rel, key in ev]
        side += [(mask, done_sides[(m.model, key)]) for mask, key in sd]
    return combine(cfg, jobs, side, run_jobs(crossfit_task, fits) if fits else [])
