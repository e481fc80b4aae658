"""Flow: heads.parquet + test splits -> ablation.parquet (controls, methods, transfer), side_effects.parquet."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from tasks.ablate import ablate_relation, combine, learned, side_effects_task
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
    return combine(cfg, jobs, side)
