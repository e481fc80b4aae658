"""A GGUF file's header, read once: the architecture, its integer metadata and the tensor names (no tensor data).

The one GGUF header reader: ``sources`` takes layer and head counts from it (to check a model before loading it)
and ``shape`` the full decoder shape (to plan a run without loading weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Header:
    """What a GGUF header says about the model.

    Attributes:
        arch: ``general.architecture`` (llama, gemma3, qwen2, ...).
        ints: every integer metadata key of the architecture without its ``<arch>.`` prefix (block_count, ...).
        n_tokens: the size of the tokenizer's vocabulary (``tokenizer.ggml.tokens``), 0 without one.
        tensors: the names of the tensors the file holds.
    """

    arch: str
    ints: dict[str, int]
    n_tokens: int
    tensors: frozenset[str]

    def get(self, key: str, default: int | None = None) -> int | None:
        """An architecture key's integer value (``block_count``), or default."""
        return self.ints.get(key, default)


@lru_cache(maxsize=None)
def read_header(path: str) -> Header:
    """Read a GGUF file's header (memory-mapped; tensors are listed, not read).

    Args:
        path: the GGUF file.
    Returns:
        Its Header. A file that is not GGUF or is truncated raises what the gguf reader raises (callers name it).
    """
    import gguf

    r = gguf.GGUFReader(path)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    ints: dict[str, int] = {}
    for key, field in r.fields.items():
        if key.startswith(f"{arch}.") and len(field.data) == 1:
            value = field.parts[field.data[0]]
            if value.dtype.kind in "iu" and value.size == 1:
                ints[key[len(arch) + 1 :]] = int(value[0])
    tokens = r.fields.get("tokenizer.ggml.tokens")
    return Header(arch, ints, len(tokens.data) if tokens is not None else 0, frozenset(t.name for t in r.tensors))
