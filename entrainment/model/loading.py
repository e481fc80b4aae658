"""Load model + tokenizer once per process (a SPEC resolved by ``sources``), pick device and dtype, describe the
model's attention layout and size.

A GGUF is dequantised once (about 20 s) and saved as safetensors under ``.cache/models`` (0.1 s to
reload, bit-identical logits).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entrainment.errors import InputError
from entrainment.model.sources import Source, dequantised_dir, resolve, short_name

__all__ = [
    "ModelInfo",
    "Loaded",
    "pick_device",
    "pick_device_light",
    "pick_dtype",
    "search_bf16",
    "describe",
    "facts",
    "prepare",
    "load",
    "from_config",
]

log = logging.getLogger(__name__)


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


def pick_device(device: str = "auto") -> str:
    """The device to run on: `auto` picks CUDA, then MPS, then CPU; an asked-for device that is not there is a
    one-line InputError."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                "--device", "device", device, "CUDA is not available on this machine (use --device cpu or auto)"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError(
                "--device", "device", device, f"this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return device
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise InputError("--device", "device", device, "MPS is not available on this machine")
        return device
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
    """Whether search-side passes run under bfloat16 autocast: `auto` = on CUDA only. On a CPU they run in float32
    whatever its instruction set, so the same config on the same device class selects the same heads on every
    machine; `bfloat16` asks for autocast explicitly (about 1.5-2x faster on CPUs with AVX512-BF16 or AMX)."""
    if search_dtype != "auto":
        return search_dtype == "bfloat16"
    return device.startswith("cuda")


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _load_weights(src: Source, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if src.kind in ("embedded", "gguf"):
        cached = dequantised_dir(src)
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
            shutil.rmtree(tmp, ignore_errors=True)
            if not (cached / "config.json").exists():  # else another process cached it first (two first runs)
                log.warning("could not cache the dequantised model (%s); it will be dequantised again next time", e)
                return model, tok
        # every process computes with the model read back from the cache: the in-memory model of the dequantising
        # process gave float32 logits up to 6e-6 apart (measured), so a fresh clone's first run differed from reruns
        return AutoModelForCausalLM.from_pretrained(cached, dtype=dtype), AutoTokenizer.from_pretrained(cached)
    return (
        AutoModelForCausalLM.from_pretrained(src.location, dtype=dtype),
        AutoTokenizer.from_pretrained(src.location),
    )


def describe(model, spec: str, device: str, dtype) -> ModelInfo:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    return ModelInfo(
        spec=spec,
        n_layers=cfg.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads,
        head_dim=head_dim,
        n_params=sum(p.numel() for p in model.parameters()),
        device=device,
        dtype=str(dtype).replace("torch.", ""),
    )


def facts(loaded: Loaded) -> dict[str, Any]:
    """One models.parquet row: what the model is (schema.MODELS). Non-embedding parameters exclude the token
    embedding, an untied output embedding and learned position embeddings (Kaplan et al.'s N)."""
    model, info = loaded.model, loaded.info
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    emb = {
        id(p)
        for m in (model.get_input_embeddings(), model.get_output_embeddings())
        if m is not None
        for p in m.parameters()
    }
    emb |= {id(p) for name, p in model.named_parameters() if name.endswith(("wpe.weight", "embed_positions.weight"))}
    n_emb = sum(p.numel() for p in model.parameters() if id(p) in emb)
    archs = getattr(model.config, "architectures", None) or [type(model).__name__]
    return {
        "model": info.spec,
        "family": str(getattr(model.config, "model_type", "") or ""),
        "architecture": archs[0],
        "source": loaded.source.kind,
        "identity": loaded.source.identity,
        "n_params": info.n_params,
        "n_params_non_embedding": info.n_params - n_emb,
        "n_layers": info.n_layers,
        "n_heads": info.n_heads,
        "n_total_heads": info.n_total_heads,
        "n_kv_heads": info.n_kv_heads,
        "head_dim": info.head_dim,
        "vocab_size": int(getattr(cfg, "vocab_size", 0) or len(loaded.tokenizer)),
        "dtype": info.dtype,
    }


def prepare(model, tok, device: str) -> None:
    """Freeze weights, eval mode, a pad token; on CPU all cores as threads unless OMP_NUM_THREADS sets the count (a
    process sharing the machine, e.g. one of the test suite's parallel workers, asks for fewer)."""
    import torch

    model.eval()
    model.requires_grad_(False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if device == "cpu" and not os.environ.get("OMP_NUM_THREADS", "").strip():
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


def model_prefix(model: str, multi: bool) -> str:
    """`[model] ` in front of summary lines when several models are in one table (a path shows its last part)."""
    return f"[{short_name(model)}] " if multi else ""
