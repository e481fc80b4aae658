"""Tasks: head-importance maps per (model, relation, ablation method), their agreement with the learned mask, and the
agreement between methods. The work is ``entrainment.stages.scan`` (shared with the Python API)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import polars as pl
from prefect import get_run_logger, task

from entrainment.config import Config
from entrainment.model import loading, sources
from entrainment.stages import scan
from entrainment.store import files, tables
from entrainment.store.schema import HEAD_AGREEMENT, HEAD_SCORES
from tasks.cache import key_fn, manifest, write_timings
from tasks.inputs import model_key, relation_rows, rows_hash, shard_name
from tasks.means import reference
from tasks.progress import progress_bar

SHARDS = Path("shards") / "scan"


def _mean(cfg: Config, loaded, relation: str, method: str):
    return reference(cfg, loaded, relation) if method != "zero" else None


def _inputs_scan(cfg: Config, relation: str, method: str) -> dict:
    return {
        "model": model_key(cfg),
        "relation": relation,
        "method": method,
        "rows": rows_hash(relation_rows(cfg.out, relation)),
    }


def save_effects(effects: np.ndarray, path: Path) -> Path:
    """The scan's per-item effects [L*H, N] as a .npy file (atomic): the bootstrap CIs can be recomputed from it."""
    buf = io.BytesIO()
    np.save(buf, effects)
    files.atomic_write_bytes(path, buf.getvalue())
    return path


@task(name="scan", tags=["gpu"], cache_key_fn=key_fn("scan", __name__, _inputs_scan))
def scan_relation(cfg: Config, relation: str, method: str) -> dict:
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    info = loaded.info
    mean = _mean(cfg, loaded, relation, method)
    with progress_bar(f"scan {info.spec} / {relation} ({method}), % of items", 100) as advance:
        df, effects, secs = scan.score_heads(
            loaded, relation_rows(cfg.out, relation), relation, method, cfg, mean, progress=lambda f: advance(100 * f)
        )
    get_run_logger().info(
        "head scan of %s / %s (%s): %d heads x %d dev items in %.1f s; AtP in %.1f s",
        info.spec,
        relation,
        method,
        info.n_total_heads,
        effects.shape[1],
        secs["scan"],
        secs["atp"],
    )
    folder = cfg.out / SHARDS / shard_name(info.spec)
    stem = f"{shard_name(relation)}.{method}"
    timing = pl.DataFrame(
        {
            "model": [info.spec] * 2,
            "stage": ["scan", "atp"],
            "relation": [relation] * 2,
            "seed": [-1, -1],
            "epoch": [-1, -1],
            "seconds": [secs["scan"], secs["atp"]],
        }
    )
    paths = [
        tables.write_parquet(df, folder / f"{stem}.scores.parquet", HEAD_SCORES),
        tables.write_parquet(timing, folder / f"{stem}.timing.parquet"),
        save_effects(effects, folder / f"{stem}.effects.npy"),
    ]
    return manifest(paths, relation=relation, method=method)


def _heads(cfg: Config) -> pl.DataFrame | None:
    return tables.read_table(cfg.out, "heads") if (cfg.out / "heads.parquet").exists() else None


def _inputs_agree(cfg: Config, relation: str, method: str, scores_manifest: dict) -> dict:
    m = scan.learned_mask(_heads(cfg), sources.resolve(cfg.model).spec, relation)
    return {
        "model": model_key(cfg),
        "relation": relation,
        "method": method,
        "rows": rows_hash(relation_rows(cfg.out, relation)),
        "scores": sorted(scores_manifest["outputs"].values()),
        "mask": m.head_set.id if m else None,
    }


@task(name="agreement", tags=["gpu"], cache_key_fn=key_fn("scan", __name__, _inputs_agree))
def agreement_relation(cfg: Config, relation: str, method: str, scores_manifest: dict) -> dict:
    import time

    t0 = time.perf_counter()
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    scores = pl.concat(
        [tables.read_parquet(Path(p), HEAD_SCORES) for p in scores_manifest["outputs"] if p.endswith(".scores.parquet")]
    )
    df = scan.agreement_rows(
        loaded,
        relation_rows(cfg.out, relation),
        relation,
        method,
        scores,
        _heads(cfg),
        cfg,
        _mean(cfg, loaded, relation, method),
    )
    if len(df):
        r = df.row(0, named=True)
        get_run_logger().info(
            "agreement on %s (%s): Spearman(atp, scan) = %.2f; learned heads' scan ranks %s",
            relation,
            method,
            r["spearman_atp_scan"],
            r["mask_ranks"] or "(no learned heads)",
        )
    path = tables.write_parquet(
        df,
        cfg.out / SHARDS / shard_name(loaded.info.spec) / f"{shard_name(relation)}.{method}.agreement.parquet",
        HEAD_AGREEMENT,
    )
    return manifest([path], relation=relation, method=method, model=loaded.info.spec, seconds=time.perf_counter() - t0)


def combine(cfg: Config, score_manifests: list[dict], agree_manifests: list[dict]) -> dict:
    """head_scores, head_agreement and method_agreement from this run's shards (+ their timings)."""
    paths_in = [Path(p) for m in score_manifests + agree_manifests for p in m["outputs"]]
    pick = lambda suffix: pl.concat([tables.read_parquet(p) for p in paths_in if p.name.endswith(suffix)])  # noqa: E731
    scores = pick(".scores.parquet").sort("model", "relation", "ablation_method", "method", "layer", "head")
    agree = pick(".agreement.parquet").sort("model", "relation", "ablation_method", "method", "k")
    methods = scan.method_table(scores)
    timing = pl.concat(
        [
            pick(".timing.parquet"),
            pl.DataFrame(
                [
                    {
                        "model": m["model"],
                        "stage": "agreement",
                        "relation": m["relation"],
                        "seed": -1,
                        "epoch": -1,
                        "seconds": m["seconds"],
                    }
                    for m in agree_manifests
                ]
            ),
        ]
    )
    paths = [
        tables.write_table(scores, cfg.out, "head_scores"),
        tables.write_table(agree, cfg.out, "head_agreement"),
        tables.write_table(methods, cfg.out, "method_agreement"),
        write_timings(cfg, "scan", timing),
    ]
    return manifest(paths, summary=scan.summary(agree, methods))
