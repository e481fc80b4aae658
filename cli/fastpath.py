"""Instant no-op reruns: skip Prefect entirely when nothing a command depends on has changed.

After a command succeeds, the CLI records in ``<out>/.cache/fastpath/<command>.json`` a key and what it
printed, with the hash of every table it wrote. The key hashes everything the command's results depend on:
the configuration (every field but the control ones), the content of the input tables it reads, the relation,
word, fact and ICL files, the model's identity (file hash or revision, device class, dtype) and the source of
every project module. The next time, before importing Prefect or torch, the CLI recomputes the key; if it is
the recorded one and every recorded output is still there with its recorded hash, it prints the recorded
lines and exits. Anything else (a changed file, a deleted or edited table, --refresh) takes the normal path,
where Prefect's per-shard caches decide what to recompute. Conservative by construction: a miss only costs
the normal path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from entrainment import imports, stage_graph
from entrainment.config import Config
from entrainment.model import sources
from entrainment.paths import DATA_DIR, PROJECT_ROOT
from entrainment.store.files import file_sha256, json_sha256

CONTROL = ("refresh", "runner", "dask_address")  # fields that never change results


def _code(root: Path = PROJECT_ROOT) -> list[str]:
    """``path:sha256`` of every project source file, subfolders included (the walk the stage cache keys use)."""
    files = sorted(imports.module_files(root).values())
    return [f"{p.relative_to(root)}:{file_sha256(p)}" for p in files]


def _data(cfg: Config) -> list[str]:
    from entrainment.data import relations  # the bounded walk the stages read relations with (no link loops)

    files = relations.relation_files(cfg.data_dir) if Path(cfg.data_dir).is_dir() else []
    files += sorted((DATA_DIR / "icl").glob("*.json"))
    files += [DATA_DIR / "random_words.txt", DATA_DIR / "irrelevant_facts.json"]
    if cfg.items is not None:
        files.append(Path(cfg.items))
    return [f"{p}:{file_sha256(p)}" for p in files if p.is_file()]


def key(command: str, cfg: Config, extra: Any = None) -> str:
    """The fast-path key of one command (see module docstring)."""
    from entrainment.model import loading

    srcs = [sources.resolve(m) for m in cfg.model_specs()]
    device = loading.pick_device_light(cfg.device)
    tables = {
        name: file_sha256(cfg.out / f"{name}.parquet")
        for name in stage_graph.reads(command)
        if (cfg.out / f"{name}.parquet").is_file()
    }
    heads_file = cfg.ablation_heads if cfg.ablation_heads and Path(cfg.ablation_heads).is_file() else None
    parts = {
        "command": command,
        "config": {k: v for k, v in cfg.to_dict().items() if k not in CONTROL},
        "tables": tables,
        "heads_file": file_sha256(Path(heads_file)) if heads_file else None,
        "model": [[s.spec, s.identity] for s in srcs] + [device],
        "data": _data(cfg),
        "code": _code(),
        "extra": extra,
    }
    return json_sha256(parts)


def _record_path(cfg: Config, command: str) -> Path:
    return Path(cfg.out) / ".cache" / "fastpath" / f"{command}.json"


def lookup(command: str, cfg: Config, extra: Any = None) -> list[str] | None:
    """The recorded output lines if nothing changed since the last success of this command, else None."""
    if cfg.refresh:
        return None
    path = _record_path(cfg, command)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("key") != key(command, cfg, extra):
        return None
    for out, digest in rec.get("outputs", {}).items():
        p = Path(out)
        if not p.is_file() or file_sha256(p) != digest:
            return None
    return list(rec.get("lines", []))


def store(command: str, cfg: Config, lines: list[str], outputs: list[str], extra: Any = None) -> None:
    """Record a success (atomically): the key, the printed lines and the hash of every output."""
    from entrainment.store.files import atomic_write_bytes

    rec = {
        "key": key(command, cfg, extra),
        "lines": lines,
        "outputs": {str(p): file_sha256(Path(p)) for p in outputs if Path(p).is_file()},
    }
    atomic_write_bytes(_record_path(cfg, command), json.dumps(rec, indent=1).encode())


def enabled() -> bool:
    return os.environ.get("ENTRAINMENT_NO_FASTPATH", "") in ("", "0")
