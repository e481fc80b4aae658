"""entrainment: measure contextual entrainment in language models and find the attention heads behind it.

The Python API (``import entrainment as en``): ``en.load_model``, ``en.prompts``, ``en.measure``, ``en.stats``,
``en.discover``, ``en.scan``, ``en.ablate``, ``en.sentences``, ``en.model_facts``, ``en.scaling``,
``en.results`` -- see ``entrainment.api`` and
docs/api.md. The names are loaded on first use, so importing a submodule (the CLI's fast path does) stays cheap;
nothing here imports Prefect.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "load_model",
    "prompts",
    "measure",
    "top_tokens",
    "stats",
    "discover",
    "scan",
    "ablate",
    "head_types",
    "sentences",
    "model_facts",
    "scaling",
    "results",
    "Model",
    "Frames",
    "Results",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from entrainment import api

        return getattr(api, name)
    raise AttributeError(f"module 'entrainment' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
