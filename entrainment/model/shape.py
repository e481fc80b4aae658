"""A decoder's shape (layers, heads, width, vocabulary) read without loading weights: from a ``config.json`` (a local
folder, the hub cache, the dequantised copy of an embedded GGUF) or a GGUF header; and token counts of texts from the
model's ``tokenizer.json``. Neither torch nor transformers is imported (``entrainment plan`` and benchmarks/scale.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from entrainment.model.gguf_header import read_header

GATED = (
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "phi3",
    "olmo",
    "olmo2",
    "granite",
    "smollm3",
)


@dataclass(frozen=True)
class Shape:
    """A decoder's shape: what its cost depends on."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    tied: bool = True
    gated: bool = True
    model_type: str = "llama"

    @property
    def layer_params(self) -> int:
        """Matmul parameters of one decoder layer (attention q, k, v, o + MLP; norms left out)."""
        attn = self.hidden * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        mlp = (3 if self.gated else 2) * self.hidden * self.intermediate
        return attn + mlp

    @property
    def n_params_non_embedding(self) -> int:
        """Parameters outside the token embedding and the output embedding (Kaplan et al.'s N)."""
        return self.n_layers * (self.layer_params + 2 * self.hidden) + self.hidden

    @property
    def n_params(self) -> int:
        """Every parameter (a tied output embedding counted once)."""
        return self.n_params_non_embedding + self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads

    def forward_flops(
        self, tokens: float, layer_share: float = 1.0, head_positions: float = 1.0, head_width: int | None = None
    ) -> float:
        """FLOPs of one row's forward pass.

        Args:
            tokens: the row's length.
            layer_share: the share of layers computed (layer replay computes only those from the lowest changed up).
            head_positions: positions whose output logits are computed.
            head_width: logits per position (default: the vocabulary; the probe head computes 2).
        Returns:
            2 x matmul parameters x tokens + causal attention + the LM head.
        """
        layers = self.n_layers * layer_share
        dense = 2.0 * self.layer_params * layers * tokens
        attn = 2.0 * layers * tokens * tokens * self.n_heads * self.head_dim
        head = 2.0 * self.hidden * (head_width or self.vocab) * head_positions
        return dense + attn + head

    def to_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "n_layers",
                "n_heads",
                "n_kv_heads",
                "head_dim",
                "hidden",
                "intermediate",
                "vocab",
                "tied",
                "gated",
                "model_type",
            )
        }


def shape_from_config(cfg: dict[str, Any]) -> Shape:
    """A Shape from a transformers config.json dict (a multimodal config's text_config is used)."""
    text = cfg.get("text_config") or cfg
    get = lambda *keys, default=None: next((text[k] for k in keys if text.get(k) is not None), default)  # noqa: E731
    layers = int(get("num_hidden_layers", "n_layer", "num_layers"))
    heads = int(get("num_attention_heads", "n_head"))
    hidden = int(get("hidden_size", "n_embd", "d_model"))
    model_type = str(text.get("model_type") or cfg.get("model_type") or "")
    act = str(get("hidden_act", "hidden_activation", default=""))
    gated = model_type in GATED or act.startswith(("silu", "gelu_p"))
    inter = get("intermediate_size", "n_inner", "ffn_dim")
    return Shape(
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=int(get("num_key_value_heads", default=heads) or heads),
        head_dim=int(get("head_dim", default=hidden // heads) or hidden // heads),
        hidden=hidden,
        intermediate=int(inter or 4 * hidden),
        vocab=int(get("vocab_size", default=32000)),
        tied=bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", True))),
        gated=gated,
        model_type=model_type,
    )


def _gguf_shape(path: str) -> Shape:
    """A Shape from a GGUF header (metadata only; tensors are not read)."""
    h = read_header(path)
    hidden, heads = h.get("embedding_length"), h.get("attention.head_count")
    return Shape(
        n_layers=h.get("block_count"),
        n_heads=heads,
        n_kv_heads=h.get("attention.head_count_kv", heads),
        head_dim=h.get("attention.key_length", hidden // heads),
        hidden=hidden,
        intermediate=h.get("feed_forward_length", 4 * hidden),
        vocab=h.get("vocab_size") or h.n_tokens,
        tied="output.weight" not in h.tensors,
        gated=h.arch in GATED,
        model_type=h.arch,
    )


def model_folder(spec: str) -> tuple[Path | None, Path | None]:
    """(folder with config.json / tokenizer.json if there is one, GGUF file if the model is one), without
    hashing a local folder's weights (a GGUF's identity hash is cached after the first time)."""
    from entrainment.model.sources import EMBEDDED, dequantised_dir, resolve

    path = Path(spec).expanduser()
    if spec in EMBEDDED or spec.endswith(".gguf"):
        src = resolve(spec)
        cached = dequantised_dir(src)
        return (cached if (cached / "config.json").exists() else None), Path(src.location)
    if path.is_dir():
        return path, None
    return Path(resolve(spec).location), None


def model_shape(spec: str) -> Shape:
    """The Shape of a model SPEC, read without loading weights (InputError if it cannot be resolved)."""
    from entrainment.errors import InputError

    folder, gguf_file = model_folder(spec)
    if folder is not None and (folder / "config.json").is_file():
        return shape_from_config(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    if gguf_file is not None:
        return _gguf_shape(str(gguf_file))
    raise InputError("--model", "model", spec, "no config.json to read the model's shape from")


class Lengths:
    """Token counts of texts: the model's own tokenizer.json when there is one, else characters / chars_per_token."""

    def __init__(self, folder: Path | None, chars_per_token: float):
        self.chars_per_token = chars_per_token
        self.tok = None
        self.source = f"chars / {chars_per_token:.2f}"
        if folder is not None and (folder / "tokenizer.json").is_file():
            try:
                from tokenizers import Tokenizer

                self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
                self.source = "tokenizer.json"
            except Exception:  # noqa: BLE001 -- an unreadable tokenizer only makes the estimate coarser
                self.tok = None
        self._memo: dict[str, int] = {}

    def __call__(self, texts: Iterable[str]) -> list[int]:
        """Tokens of each text."""
        texts = list(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if todo:
            if self.tok is not None:
                for t, enc in zip(todo, self.tok.encode_batch(todo)):
                    self._memo[t] = max(1, len(enc.ids))
            else:
                for t in todo:
                    self._memo[t] = max(1, round(len(t) / self.chars_per_token))
        return [self._memo[t] for t in texts]

    def mean(self, texts: Iterable[str]) -> float:
        n = self(texts)
        return sum(n) / len(n) if n else 0.0
