"""Flow: heads.parquet + test splits -> ablation.parquet (controls, methods, transfer), side_effects.parquet,
subject_gains.parquet and verdict.parquet (each mask, and the cross-fitted verdict of each discovery relation)."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from tasks.ablate import ablate_relation, combine, crossfit_task, fold_masks, learned, side_effects_task
from tasks.cache import run_jobs
from tasks.inputs import stage_relations


@flow(name="ablate", validate_parameters=False)
def ablate_flow(cfg: Config) -> dict:
    found = [(m, mask) for m in cfg.per_model() for mask in learned(m)]
    sets: dict[tuple, list] = {}  # (model, mask relation) -> its distinct head sets, evaluated together
    for m, mask in found:
        sets.setdefault((m.model, mask.relation), [m, []])
        if mask.head_set.heads not in sets[(m.model, mask.relation)][1]:
            sets[(m.model, mask.relation)][1].append(mask.head_set.heads)
    evals = {
        (model, mrel, rel): (m, (mrel, tuple(hs), rel))
        for (model, mrel), (m, hs) in sets.items()
        for rel in stage_relations(m, None)
    }
    sides = {(model, mrel): (m, (mrel, tuple(hs))) for (model, mrel), (m, hs) in sets.items()}
    done_evals = dict(zip(evals, run_jobs(ablate_relation, list(evals.values()))))
    done_sides = dict(zip(sides, run_jobs(side_effects_task, list(sides.values()))))
    jobs = [
        (mask, rel, done_evals[(m.model, mask.relation, rel)]) for m, mask in found for rel in stage_relations(m, None)
    ]
    side = [(mask, done_sides[(m.model, mask.relation)]) for m, mask in found]
    fits = [
        (m, (rel, tuple((mask.fold, mask.head_set.heads) for mask in masks_)))
        for m in cfg.per_model()
        for rel, masks_ in sorted(fold_masks(m).items())
    ]
    return combine(cfg, jobs, side, run_jobs(crossfit_task, fits) if fits else [])
