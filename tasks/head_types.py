"""Task: head-type scores of one model (head_types.parquet) and their agreement with entrainment importance
(head_type_agreement.parquet). The work is ``entrainment.stages.head_types.compute`` (shared with the Python API)."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task

from entrainment.config import Config
from entrainment.model import loading
from entrainment.stages import head_types
from entrainment.store import tables
from entrainment.store.files import file_sha256
from entrainment.store.schema import HEAD_TYPE_AGREEMENT, HEAD_TYPES
from tasks.cache import key_fn, manifest, write_timings
from tasks.inputs import discover_relations, model_key, relation_rows, rows_hash, shard_name
from tasks.progress import progress_bar

SHARDS = Path("shards") / "head_types"
OPTIONAL = ("heads", "head_scores", "head_stability")
STEPS = 4  # head_types.compute reports four steps


def _relation(cfg: Config) -> str:
    return discover_relations(cfg, None)[0]


def _inputs(cfg: Config) -> dict:
    rel = _relation(cfg)
    return {
        "model": model_key(cfg),
        "relation": rel,
        "rows": rows_hash(relation_rows(cfg.out, rel)),
        "tables": {n: file_sha256(cfg.out / f"{n}.parquet") for n in OPTIONAL if (cfg.out / f"{n}.parquet").exists()},
    }


def _present(cfg: Config, name: str) -> pl.DataFrame | None:
    return tables.read_table(cfg.out, name) if (cfg.out / f"{name}.parquet").exists() else None


@task(name="head-types", tags=["gpu"], cache_key_fn=key_fn("heads", __name__, _inputs))
def head_types_model(cfg: Config) -> dict:
    t0 = time.perf_counter()
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    spec, rel = loaded.info.spec, _relation(cfg)
    with progress_bar(f"head types of {spec}", STEPS) as advance:
        types, agree = head_types.compute(
            loaded,
            relation_rows(cfg.out, rel),
            rel,
            cfg,
            *(_present(cfg, n) for n in OPTIONAL),
            progress=lambda _label: advance(1),
        )
    seconds = time.perf_counter() - t0
    get_run_logger().info("head types of %s: %d heads in %.1f s", spec, len(types), seconds)
    folder = cfg.out / SHARDS / shard_name(spec)
    timing = pl.DataFrame(
        {"model": [spec], "stage": ["heads"], "relation": [rel], "seed": [-1], "epoch": [-1], "seconds": [seconds]}
    )
    paths = [
        tables.write_parquet(types, folder / "types.parquet", HEAD_TYPES),
        tables.write_parquet(agree, folder / "agreement.parquet", HEAD_TYPE_AGREEMENT),
        tables.write_parquet(timing, folder / "timing.parquet"),
    ]
    return manifest(paths, model=spec)


def summary(types: pl.DataFrame, agree: pl.DataFrame) -> list[str]:
    """A few console lines per model: the top induction / copying heads, the agreement with the scan, the 2 x 2."""
    out = []
    for (model,), t in sorted(types.group_by("model"), key=lambda kv: kv[0]):

        def top(c: str, t: pl.DataFrame = t) -> str:
            return ", ".join(f"{a}.{b}" for a, b in t.sort(c, descending=True).head(3).select("layer", "head").rows())

        out.append(f"head types of {model}: top induction {top('induction')}; top copying {top('copying')}")
        a = agree.filter(
            (pl.col("model") == model)
            & (pl.col("kind") == "agreement")
            & pl.col("score").is_in(["induction", "copying"])
            & (pl.col("ranking") == "scan")
        )
        for r in a.iter_rows(named=True):
            out.append(
                f"  {r['score']} vs scan ({r['relation']}): Spearman {r['spearman']:.2f} "
                f"[{r['spearman_ci_low']:.2f}, {r['spearman_ci_high']:.2f}]; top-{r['k']} overlap "
                f"{r['topk_overlap']} vs chance {r['chance_overlap']:.2f} (p = {r['overlap_p']:.2g})"
            )
        d = agree.filter((pl.col("model") == model) & (pl.col("kind") == "dissociation"))
        for r in d.iter_rows(named=True):
            out.append(
                f"  remove {r['removed']} (sparing {r['excluded']}, {r['n_removed']} heads): entrainment gain "
                f"{r['entrainment_gain']:+.3f} (random {r['entrainment_gain_random']:+.3f}), induction loss "
                f"{r['induction_loss']:+.3f} (random {r['induction_loss_random']:+.3f})"
            )
    return out


def combine(cfg: Config, manifests: list[dict]) -> dict:
    """head_types and head_type_agreement from this run's shards (+ their timings)."""
    paths_in = [Path(p) for m in manifests for p in m["outputs"]]
    pick = lambda name: pl.concat([tables.read_parquet(p) for p in paths_in if p.name == name])  # noqa: E731
    types = pick("types.parquet").sort("model", "layer", "head")
    agree = pick("agreement.parquet").sort("model", "relation", "kind", "score", "ranking", "removed", nulls_last=True)
    paths = [
        tables.write_table(types, cfg.out, "head_types"),
        tables.write_table(agree, cfg.out, "head_type_agreement"),
        write_timings(cfg, "heads", pick("timing.parquet")),
    ]
    return manifest(paths, summary=summary(types, agree))
