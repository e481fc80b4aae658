"""Task: one measurement shard per (model, relation, ablation), cached on exactly what it depends on.

Key: the relation's prompt rows (content hash), the model's identity (file hash or revision), the
device class and dtype, the ablated heads, the batch size and the code of every module involved.
An edit to one relation's file therefore recomputes only that relation's shard.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task

from entrainment import heads, measure, models, scoring, tables, tokens
from entrainment.config import Config
from entrainment.errors import InputError
from tasks.cache import key_fn, manifest, stage_key
from tasks.progress import progress_bar

SHARDS = Path("shards") / "measurements"
MODEL_SHARDS = Path("shards") / "models"
log = logging.getLogger("entrainment.measure")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80]


def relation_rows(out: Path, relation: str | tuple[str, ...]) -> pl.DataFrame:
    """The prompt rows of one relation (or of several, for the shared mask)."""
    df = tables.read_table(out, "prompts")
    return df.filter(pl.col("relation").is_in([relation] if isinstance(relation, str) else list(relation)))


def rows_hash(df: pl.DataFrame) -> str:
    return hashlib.sha256(df.write_csv().encode()).hexdigest()[:16]


def model_key(cfg: Config) -> dict:
    src = models.resolve(cfg.model)
    dev = models.pick_device(cfg.device)
    return {"spec": src.spec, "identity": src.identity, "device": dev.split(":")[0],
            "dtype": str(models.pick_dtype(cfg.dtype, dev))}


def _inputs(cfg: Config, relation: str, head_set: heads.HeadSet | None) -> dict:
    return {"model": model_key(cfg), "relation": relation, "rows": rows_hash(relation_rows(cfg.out, relation)),
            "heads": [head_set.id, head_set.heads] if head_set else None}


MODULES = (measure, scoring, tokens, heads, models, tables, sys.modules[__name__])


def shard_path(cfg: Config, relation: str, head_set: heads.HeadSet | None, rows: str) -> Path:
    abl = head_set.id if head_set else "none"
    return cfg.out / SHARDS / slug(models.resolve(cfg.model).spec) / slug(abl) / f"{slug(relation)}.{rows}.parquet"


def _not_bad_input(_task, _run, state) -> bool:
    try:
        state.result()
    except InputError:
        return False
    except Exception:  # noqa: BLE001
        return True
    return True


@task(name="measure", tags=["gpu"], retries=1, retry_condition_fn=_not_bad_input,
      cache_key_fn=key_fn("measure", MODULES, _inputs))
def measure_shard(cfg: Config, relation: str, head_set: heads.HeadSet | None = None) -> dict:
    logger = get_run_logger()
    rows = relation_rows(cfg.out, relation)
    rh = rows_hash(rows)
    path = shard_path(cfg, relation, head_set, rh)
    work = stage_key("measure", MODULES, cfg, _inputs(cfg, relation, head_set))[:16]
    loaded = models.load(cfg.model, cfg.device, cfg.dtype)
    logger.info("measuring %s / %s (%d prompts, ablation %s)", loaded.info.spec, relation, len(rows),
                head_set.id if head_set else "none")
    with progress_bar(f"measure {relation}", len(rows)) as advance:
        df = measure.measure_resumable(loaded, rows, cfg.out / SHARDS / ".parts" / work, head_set,
                                       cfg.batch_size, advance, bos=cfg.bos)
    tables.write_table_file(df, path, "measurements")
    for old in path.parent.glob(f"{slug(relation)}.*.parquet"):  # older versions of this shard
        if old != path:
            old.unlink(missing_ok=True)
    parts = cfg.out / SHARDS / ".parts" / work
    for p in sorted(parts.glob("*.parquet")):
        p.unlink()
    if parts.exists():
        parts.rmdir()
    return manifest([path], rows=len(df), relation=relation)


def _inputs_facts(cfg: Config) -> dict:
    return {"model": model_key(cfg)}


@task(name="model-facts", cache_key_fn=key_fn("measure", (models, tables, sys.modules[__name__]), _inputs_facts))
def model_facts(cfg: Config) -> dict:
    """One models.parquet row for this model (parameter counts, layout, identity), as a shard."""
    loaded = models.load(cfg.model, cfg.device, cfg.dtype)
    path = cfg.out / MODEL_SHARDS / f"{slug(loaded.info.spec)}.parquet"
    return manifest([tables.write_table_file(pl.DataFrame([models.facts(loaded)]), path, "models")])


def current_masks(out: Path) -> dict[tuple[str, str], str]:
    """(model, mask label) -> the id of that mask in heads.parquet now; empty if there is no heads.parquet."""
    path = out / "heads.parquet"
    if not path.exists() or not tables.is_valid_parquet(path):  # none yet, or corrupt (discover rewrites it)
        return {}
    df = tables.read_parquet(path)
    return {(model, hs.label): hs.id for model in sorted(set(df["model"])) for hs in heads.head_sets_from_parquet(path, model)}


def outdated_masks(df: pl.DataFrame, masks: dict[tuple[str, str], str]) -> set[str]:
    """Mask ids in these measurement rows whose (model, label) now has another id in heads.parquet."""
    out = set()
    for model, abl in df.select("model", "ablation").unique().iter_rows():
        if abl.startswith("mask:"):
            now = masks.get((model, abl.rsplit(":", 1)[0]))
            if now is not None and now != abl:
                out.add(abl)
    return out


def combine(cfg: Config, shard_manifests: list[dict]) -> dict:
    """measurements.parquet = every current shard (all models and ablations measured for these prompts);
    models.parquet = the facts (model-facts shards) of every model in it.

    Shards of a learned mask that is no longer in heads.parquet (a rediscovery changed it) are dropped and
    deleted, never pooled with the current mask's rows.
    """
    prompts = tables.read_table(cfg.out, "prompts")
    current = {f"{slug(r)}.{rows_hash(prompts.filter(pl.col('relation') == r))}.parquet" for r in prompts["relation"].unique()}
    found = sorted(p for p in (cfg.out / SHARDS).glob("*/*/*.parquet") if p.name in current)
    for m in shard_manifests:  # the ones just produced must be there
        for p in m["outputs"]:
            assert Path(p) in found, p
    masks = current_masks(cfg.out)
    frames = []
    for p in found:
        df = tables.read_parquet(p)
        outdated = outdated_masks(df, masks)
        if outdated:
            log.info("dropped %d measurement rows of outdated mask %s (not in heads.parquet any more)", len(df),
                     ", ".join(sorted(outdated)))
            p.unlink(missing_ok=True)
            continue
        frames.append(df)
    df = pl.concat(frames) if frames else None
    path = tables.write_table(df, cfg.out, "measurements")
    measured = set(df["model"].unique())
    facts = [tables.read_parquet(p) for p in sorted((cfg.out / MODEL_SHARDS).glob("*.parquet"))]
    facts_df = pl.concat(facts).filter(pl.col("model").is_in(list(measured))).unique("model", keep="last").sort("model")
    missing = measured - set(facts_df["model"])
    if missing:  # measured by a version without models.parquet: its facts come with its next measure run
        log.info("models.parquet lacks %s (rerun measure with that model to add it)", ", ".join(sorted(missing)))
    return manifest([path, tables.write_table(facts_df, cfg.out, "models")], rows=len(df), models=len(facts_df))
