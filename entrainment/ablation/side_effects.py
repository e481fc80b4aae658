"""What else removing the heads breaks: factual recall on other relations and in-context learning.

side_effects.parquet, with vs without the heads (and with random heads of the same number):
  strict_acc     no context: the gold's first token is the top-1 prediction
  credulous_acc  no context: the gold's first token is among the top 5
  icl_acc        few-shot prompt: the expected answer's first token is the top-1 prediction
Under mean ablation the mask relation's reference means replace the heads; under resample, another prompt of the
same task donates (seeded derangement).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import torch

from entrainment.ablation.donors import ablation_for
from entrainment.data.relations import Relation
from entrainment.heads.masks import HeadSet
from entrainment.model.loading import Loaded
from entrainment.model.scoring import Scored, run_pass
from entrainment.model.tokens import Tokens
from entrainment.store.schema import SIDE_EFFECTS

ICL_SHOTS = 3
CREDULOUS_K = 5


def load_icl(folder: Path) -> dict[str, list[dict]]:
    """ICL task name -> items {input, output} (data/icl/*.json)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}


def icl_prompts(items: list[dict], seed: int, shots: int = ICL_SHOTS) -> list[tuple[str, str]]:
    """(few-shot prompt, expected answer) per item; the shots are other items, seeded."""
    rng = random.Random(f"icl|{seed}")
    out = []
    for i, it in enumerate(items):
        others = [x for j, x in enumerate(items) if j != i]
        demo = "".join(f"{x['input']} -> {x['output']}\n" for x in rng.sample(others, min(shots, len(others))))
        out.append((f"{demo}{it['input']} ->", it["output"]))
    return out


def recall_prompts(rel: Relation, limit: int, seed: int) -> list[tuple[str, str]]:
    """(zero-shot query, gold) for up to `limit` subjects of a relation, seeded."""
    pairs = sorted(rel.pairs)
    pairs = random.Random(f"recall|{seed}|{rel.name}").sample(pairs, min(limit, len(pairs)))
    return [(rel.query_templates[0].format(s), o) for s, o in pairs]


def accuracy(s: Scored) -> dict[str, float]:
    """strict = gold first token is top-1; credulous = gold first token in the top 5."""
    return {"strict_acc": float((s.gold_rank == 1).mean()), "credulous_acc": float((s.gold_rank <= CREDULOUS_K).mean())}


def side_effects(
    loaded: Loaded,
    tasks: dict[str, list[tuple[str, str]]],
    icl: set[str],
    selected: HeadSet | list[HeadSet],
    random_sets: list[HeadSet] | dict[int, list[HeadSet]],
    mask_relation: str,
    mask_seed: int,
    batch_size: int = 32,
    tokens: Tokens | None = None,
    method: str = "zero",
    mean: torch.Tensor | None = None,
    seed: int = 0,
) -> pl.DataFrame | list[pl.DataFrame]:
    """side_effects.parquet rows: each task scored intact, with the heads removed and with each random head set.

    Args:
        loaded: the model.
        tasks: task name -> (prompt, expected answer) pairs.
        icl: the names of the ICL tasks (scored as icl_acc).
        selected: the mask's heads, or several head sets (then the intact pass runs once for all of them).
        random_sets: the random head sets of the control (several head sets: head-set size -> its random sets, shared
            by every head set of that size).
        mask_relation, mask_seed: the mask's identity (columns).
        batch_size: prompts per forward pass.
        tokens: the tokenizer front end (its --bos convention).
        method, mean, seed: how heads are removed (mean: the mask relation's reference; resample: donors within
            each task, seeded).
    Returns:
        side_effects.parquet rows (a list of frames, one per head set, when several were given).
    """
    many = isinstance(selected, list)
    sets = selected if many else [selected]
    rand_of = random_sets if isinstance(random_sets, dict) else {len(sets[0].heads): random_sets}
    info = loaded.info
    tk = tokens or Tokens(loaded.tokenizer)
    out: list[list[dict]] = [[] for _ in sets]
    for task_name, pairs in tasks.items():
        prompts = [tk.prompt(p) for p, _ in pairs]
        gold = [tk.answer(p, a)[0] for p, a in pairs]
        abl = ablation_for(method, mean, prompts, [task_name] * len(prompts), f"side|{seed}|{task_name}")
        original = accuracy(run_pass(loaded, prompts, gold, gold, None, batch_size))
        score = lambda hs: (
            original
            if not hs.heads
            else accuracy(  # noqa: E731  (nothing removed: intact)
                run_pass(loaded, prompts, gold, gold, hs.mask(info.n_layers, info.n_heads), batch_size, ablation=abl)
            )
        )
        rand = {k: [score(r) for r in rs] for k, rs in rand_of.items()}
        metrics = ["icl_acc"] if task_name in icl else ["strict_acc", "credulous_acc"]
        for rows, hs in zip(out, sets):
            ablated, rs = score(hs), rand[len(hs.heads)]
            for metric in metrics:
                src = "strict_acc" if metric == "icl_acc" else metric
                rows.append(
                    {
                        "model": info.spec,
                        "mask_relation": mask_relation,
                        "seed": mask_seed,
                        "ablation_method": method,
                        "task": task_name,
                        "metric": metric,
                        "original": original[src],
                        "ablated": ablated[src],
                        "random_heads": float(np.mean([r[src] for r in rs])) if rs else float("nan"),
                        "n": len(pairs),
                    }
                )
    frames = [pl.DataFrame(rows, schema=SIDE_EFFECTS.polars_schema()) for rows in out]
    return frames if many else frames[0]
