"""Tasks: one measurement shard per (model, relation, ablation), the model's facts, and the mean references.

Key: the relation's prompt rows (content hash), the model's identity (content hash or revision), the device class
and dtype, the removed heads and their method, the batch size and the code every task module reaches. An edit to
one relation's file therefore recomputes only that relation's shard. Shard names are collision-free
(``inputs.shard_name``: a readable prefix + a hash of the full model spec, head-set id and relation name).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task

from entrainment.config import Config
from entrainment.errors import InputError
from entrainment.heads import masks
from entrainment.model import loading, sources
from entrainment.stages import measure
from entrainment.store import tables
from tasks.cache import key_fn, manifest, stage_key, write_timings
from tasks.inputs import model_key, relation_rows, rows_hash, shard_name
from tasks.means import reference, reference_frame
from tasks.progress import progress_bar

SHARDS = Path("shards") / "measurements"
MODEL_SHARDS = Path("shards") / "models"
log = logging.getLogger("entrainment.stages.measure")


def _inputs(cfg: Config, relation: str, head_set: masks.HeadSet | None) -> dict:
    return {
        "model": model_key(cfg),
        "relation": relation,
        "rows": rows_hash(relation_rows(cfg.out, relation)),
        "heads": [head_set.id, head_set.heads] if head_set else None,
        "method": cfg.ablation_method if head_set else None,
    }


def shard_path(cfg: Config, relation: str, head_set: masks.HeadSet | None, rows: str) -> Path:
    abl = measure.ablation_id(head_set, cfg.ablation_method)
    return (
        cfg.out
        / SHARDS
        / shard_name(sources.resolve(cfg.model).spec)
        / shard_name(abl)
        / f"{shard_name(relation)}.{rows}.parquet"
    )


def _not_bad_input(_task, _run, state) -> bool:
    try:
        state.result()
    except InputError:
        return False
    except Exception:  # noqa: BLE001
        return True
    return True


@task(
    name="measure",
    tags=["gpu"],
    retries=1,
    retry_condition_fn=_not_bad_input,
    cache_key_fn=key_fn("measure", __name__, _inputs),
)
def measure_shard(cfg: Config, relation: str, head_set: masks.HeadSet | None = None) -> dict:
    t0 = time.perf_counter()
    logger = get_run_logger()
    rows = relation_rows(cfg.out, relation)
    rh = rows_hash(rows)
    path = shard_path(cfg, relation, head_set, rh)
    work = stage_key("measure", __name__, cfg, _inputs(cfg, relation, head_set))[:16]
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    method = cfg.ablation_method if head_set else "zero"
    mean = reference(cfg, loaded, relation) if head_set and method != "zero" else None
    logger.info(
        "measuring %s / %s (%d prompts, ablation %s)",
        loaded.info.spec,
        relation,
        len(rows),
        measure.ablation_id(head_set, method),
    )
    with progress_bar(f"measure {relation}", len(rows)) as advance:
        df = measure.measure_resumable(
            loaded,
            rows,
            cfg.out / SHARDS / ".parts" / work,
            head_set,
            cfg.batch_size,
            advance,
            bos=cfg.bos,
            method=method,
            mean=mean,
            seed=cfg.seed,
        )
    tables.write_table_file(df, path, "measurements")
    for old in path.parent.glob(f"{shard_name(relation)}.*.parquet"):  # older versions of this exact shard
        if old != path:
            old.unlink(missing_ok=True)
    parts = cfg.out / SHARDS / ".parts" / work
    for p in sorted(parts.glob("*.parquet")):
        p.unlink()
    if parts.exists():
        parts.rmdir()
    return manifest([path], rows=len(df), relation=relation, model=loaded.info.spec, seconds=time.perf_counter() - t0)


def _inputs_facts(cfg: Config) -> dict:
    return {
        "model": model_key(cfg),
        "relations": sorted(tables.read_table(cfg.out, "prompts")["relation"].unique()),
        "rows": rows_hash(
            tables.read_table(cfg.out, "prompts")
            .filter(pl.col("split") == "train")
            .select("relation", "text_base")
            .unique()
            .sort("relation", "text_base")
        ),
    }


@task(name="model-facts", cache_key_fn=key_fn("measure", __name__, _inputs_facts))
def model_facts(cfg: Config) -> dict:
    """One models.parquet row for this model (parameter counts, layout, identity) and its mean references for every
    relation of prompts.parquet, as shards."""
    t0 = time.perf_counter()
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    path = cfg.out / MODEL_SHARDS / f"{shard_name(loaded.info.spec)}.parquet"
    relations = sorted(tables.read_table(cfg.out, "prompts")["relation"].unique())
    means = pl.concat([reference_frame(cfg, loaded, r) for r in relations])
    mpath = cfg.out / MODEL_SHARDS / f"{shard_name(loaded.info.spec)}.means.parquet"
    return manifest(
        [
            tables.write_table_file(pl.DataFrame([loading.facts(loaded)]), path, "models"),
            tables.write_table_file(means, mpath, "head_means"),
        ],
        model=loaded.info.spec,
        seconds=time.perf_counter() - t0,
    )


def current_masks(out: Path) -> dict[tuple[str, str], str]:
    """(model, mask label) -> the id of that mask in heads.parquet now; empty if there is no heads.parquet."""
    path = out / "heads.parquet"
    if not path.exists() or not tables.is_valid_parquet(path):  # none yet, or corrupt (discover rewrites it)
        return {}
    return {(m.model, m.head_set.label): m.head_set.id for m in masks.learned_masks(tables.read_parquet(path))}


def outdated_masks(df: pl.DataFrame, current: dict[tuple[str, str], str]) -> set[str]:
    """Mask ids in these measurement rows whose (model, label) now has another id in heads.parquet."""
    out = set()
    for model, abl in df.select("model", "ablation").unique().iter_rows():
        if abl.startswith(("mask:", "stable:")):
            head_id = abl.split("@", 1)[0]
            now = current.get((model, head_id.rsplit(":", 1)[0]))
            if now is not None and now != head_id:
                out.add(abl)
    return out


def combine(cfg: Config, shard_manifests: list[dict], fact_manifests: list[dict]) -> dict:
    """measurements.parquet = every current shard (all models and ablations measured for these prompts);
    models.parquet and head_means.parquet = the facts and references of every model in it.

    Shards of a learned mask that is no longer in heads.parquet (a rediscovery changed it) are dropped and
    deleted, never pooled with the current mask's rows.
    """
    prompts = tables.read_table(cfg.out, "prompts")
    current = {
        f"{shard_name(r)}.{rows_hash(prompts.filter(pl.col('relation') == r))}.parquet"
        for r in prompts["relation"].unique()
    }
    found = sorted(p for p in (cfg.out / SHARDS).glob("*/*/*.parquet") if p.name in current)
    for m in shard_manifests:  # the ones just produced must be there
        for p in m["outputs"]:
            assert Path(p) in found, p
    now = current_masks(cfg.out)
    frames = []
    for p in found:
        df = tables.read_parquet(p)
        outdated = outdated_masks(df, now)
        if outdated:
            log.info(
                "dropped %d measurement rows of outdated mask %s (not in heads.parquet any more)",
                len(df),
                ", ".join(sorted(outdated)),
            )
            p.unlink(missing_ok=True)
            continue
        frames.append(df)
    df = pl.concat(frames).sort("model", "ablation", "relation", "prompt_id")
    path = tables.write_table(df, cfg.out, "measurements")
    measured = set(df["model"].unique())
    facts = [
        tables.read_parquet(Path(p)) for m in fact_manifests for p in m["outputs"] if not p.endswith(".means.parquet")
    ]
    facts += [
        tables.read_parquet(p)
        for p in sorted((cfg.out / MODEL_SHARDS).glob("*.parquet"))
        if not p.name.endswith(".means.parquet")
    ]
    facts_df = (
        pl.concat(facts).filter(pl.col("model").is_in(list(measured))).unique("model", keep="first").sort("model")
    )
    means = pl.concat(
        [tables.read_parquet(Path(p)) for m in fact_manifests for p in m["outputs"] if p.endswith(".means.parquet")]
    ).sort("model", "relation", "layer", "head")
    timing = pl.DataFrame(
        [
            {
                "model": m["model"],
                "stage": "measure",
                "relation": m.get("relation", ""),
                "seed": -1,
                "epoch": -1,
                "seconds": m.get("seconds", float("nan")),
            }
            for m in shard_manifests + fact_manifests
        ]
    )
    return manifest(
        [
            path,
            tables.write_table(facts_df, cfg.out, "models"),
            tables.write_table(means, cfg.out, "head_means"),
            write_timings(cfg, "measure", timing),
        ],
        rows=len(df),
        models=len(facts_df),
    )
