"""Measurement stage: every prompt scored with and without context -> measurements.parquet rows.

For each prompt and arm (``ctx`` = text_ctx, ``base`` = text_base) one request ``prompt + " " + gold``
gives, at the last real prompt token, the logit/log-prob/rank of the gold and distractor first tokens
and the gold's whole-answer log-prob; a multi-token distractor adds one request for its whole-answer
log-prob. Identical requests (the no-context arm repeats each query many times) are scored once.

With a head set removed (``ablation``) by another method than zero, the `ablation` id gets ``@mean`` or
``@resample`` appended: mean ablation uses the measured relation's reference means, resample draws donors among the
prompts of the same relation, condition and arm (seeded derangement).

Rows are produced in chunks written as part files; an interrupted run resumes from the last finished
part with no lost or duplicated rows.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import polars as pl
import torch

from entrainment.ablation.donors import ablation_for
from entrainment.heads.masks import HeadSet
from entrainment.model.loading import Loaded
from entrainment.model.scoring import Request, score
from entrainment.model.tokens import Tokens, context_window
from entrainment.store.schema import MEASUREMENTS
from entrainment.store.tables import is_valid_parquet, read_parquet, write_parquet

log = logging.getLogger(__name__)

CHUNK = 512  # prompts per part file


def ablation_id(ablation: HeadSet | None, method: str = "zero") -> str:
    """The `ablation` column: none, the head set's id, plus @method for mean and resample."""
    if ablation is None:
        return "none"
    return ablation.id if method == "zero" else f"{ablation.id}@{method}"


def measure_frame(
    loaded: Loaded,
    prompts: pl.DataFrame,
    ablation: HeadSet | None = None,
    batch_size: int = 32,
    progress: Callable[[float], None] | None = None,
    tokens: Tokens | None = None,
    method: str = "zero",
    mean: torch.Tensor | None = None,
    seed: int = 0,
) -> pl.DataFrame:
    """measurements rows for these prompts (any number of relations), in prompt order.

    Args:
        loaded: the model.
        prompts: prompt rows (prompts.parquet schema).
        ablation: a head set to remove (None = the intact model).
        batch_size: distinct prompts per forward pass.
        progress: called with the number of prompts finished.
        tokens: the tokenizer front end (its --bos convention).
        method, mean, seed: how the heads are removed (module docstring).
    Returns:
        measurements.parquet rows.
    """
    tk = tokens or Tokens(loaded.tokenizer)
    if tk.max_len is None:
        tk.max_len = context_window(loaded.model)  # a prompt longer than the model takes: one line naming it
    rows = prompts.select(
        "prompt_id", "relation", "condition", "split", "gold", "distractor", "text_ctx", "text_base"
    ).to_dicts()
    keys: dict[Request, set[int]] = {}
    plan = []
    for r in rows:
        gold = tk.answer(r["text_base"], r["gold"])
        dist = tk.answer(r["text_base"], r["distractor"])
        arms = {}
        for arm in ("ctx", "base"):
            where = f"prompts.parquet (prompt_id {r['prompt_id']}, relation {r['relation']!r})"
            p = tk.prompt(r[f"text_{arm}"], where, f"text_{arm}")
            tk.fits(len(p) + max(len(gold), len(dist)), r[f"text_{arm}"], where, f"text_{arm}")
            main = Request(p, gold)
            keys.setdefault(main, set()).update((gold[0], dist[0]))
            extra = Request(p, dist) if len(dist) > 1 else None
            if extra is not None:
                keys.setdefault(extra, set()).add(dist[0])
            arms[arm] = (main, extra)
        plan.append((gold, dist, arms))

    requests = list(keys)
    probes = [sorted(keys[q]) for q in requests]
    mask = ablation.mask(loaded.info.n_layers, loaded.info.n_heads) if ablation else None
    arms = [(arm, r) for r in rows for arm in ("ctx", "base")]
    how = (
        ablation_for(
            method,
            mean,
            [tk.prompt(r[f"text_{arm}"]) for arm, r in arms],
            [(r["relation"], r["condition"] if arm == "ctx" else "", arm) for arm, r in arms],
            f"measure|{seed}|{ablation.id if ablation else ''}",
        )
        if mask is not None
        else None
    )
    per_request = len(rows) / max(1, len(requests))  # progress is counted in prompts
    tick = (lambda n: progress(n * per_request)) if progress else None
    results = score(
        loaded.model,
        requests,
        probes,
        loaded.tokenizer.pad_token_id,
        batch_size,
        progress=tick,
        keep=mask,
        **({"ablation": how} if how is not None else {}),
    )
    by_req = {q: (res, {t: i for i, t in enumerate(p)}) for q, res, p in zip(requests, results, probes)}

    out = []
    for r, (gold, dist, arms) in zip(rows, plan):
        row = {
            "prompt_id": r["prompt_id"],
            "relation": r["relation"],
            "condition": r["condition"],
            "split": r["split"],
            "model": loaded.info.spec,
            "ablation": ablation_id(ablation, method),
            "ablation_label": (ablation.label or ablation.id) if ablation else "none",
            "ablation_method": method if ablation else "none",
            "gold_token_id": gold[0],
            "distractor_token_id": dist[0],
            "collision": gold[0] == dist[0],
            "distractor_in_context": dist[0] in arms["ctx"][0].prompt,
        }
        for arm, (main, extra) in arms.items():
            res, where = by_req[main]
            for target, tid in (("gold", gold[0]), ("distractor", dist[0])):
                k = where[tid]
                row[f"{target}_logit_{arm}"] = res.probe_logit[k]
                row[f"{target}_logprob_{arm}"] = res.probe_logprob[k]
                row[f"{target}_rank_{arm}"] = res.probe_rank[k]
            row[f"gold_seq_logprob_{arm}"] = res.seq_logprob
            row[f"distractor_seq_logprob_{arm}"] = (
                by_req[extra][0].seq_logprob if extra is not None else res.probe_logprob[where[dist[0]]]
            )
        out.append(row)
    return pl.DataFrame(out, schema={c: MEASUREMENTS.polars_schema()[c] for c in MEASUREMENTS.names})


def measure_resumable(
    loaded: Loaded,
    prompts: pl.DataFrame,
    part_dir: Path,
    ablation: HeadSet | None = None,
    batch_size: int = 32,
    progress: Callable[[float], None] | None = None,
    chunk: int = CHUNK,
    bos: str = "auto",
    method: str = "zero",
    mean: torch.Tensor | None = None,
    seed: int = 0,
) -> pl.DataFrame:
    """Like measure_frame, in chunks saved under part_dir; finished chunks are reused on a rerun.

    part_dir must be unique to (prompts, model, ablation, code): the caller derives it from the cache key.
    """
    n_parts = max(1, math.ceil(len(prompts) / chunk))
    frames = []
    tk = Tokens(loaded.tokenizer, bos)
    for i in range(n_parts):
        part = Path(part_dir) / f"part-{i:05d}.parquet"
        piece = prompts.slice(i * chunk, chunk)
        if part.exists() and is_valid_parquet(part):
            done = read_parquet(part)
            if done["prompt_id"].to_list() == piece["prompt_id"].to_list():
                frames.append(done)
                if progress:
                    progress(len(piece))
                log.info("resumed %s (%d rows)", part, len(done))
                continue
        df = measure_frame(loaded, piece, ablation, batch_size, progress, tk, method, mean, seed)
        write_parquet(df, part, MEASUREMENTS)
        frames.append(df)
    return (
        pl.concat(frames)
        if frames
        else measure_frame(loaded, prompts.head(0), ablation, tokens=tk, method=method, mean=mean, seed=seed)
    )
