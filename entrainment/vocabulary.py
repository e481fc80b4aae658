"""The project's words, spelled once: conditions, splits, ablation methods and the order figures show conditions in.

Every module that names one of these imports it from here (config, schema, items, lre_prompts, plotting), so a new
condition or method is one edit. No project imports: the lowest layer of the library. The ``Literal`` types put the
allowed values of a Config field at the field (entrainment/config.py); the tuples are derived from them.
"""

from __future__ import annotations

from typing import Literal, get_args

# the four LRE contexts of the paper
ContextCondition = Literal["related", "irrelevant", "random", "counterfactual"]
CONTEXT_CONDITIONS: tuple[str, ...] = get_args(ContextCondition)
# the conditions a mask can be trained on: the four contexts and the multi-passage context
TrainCondition = Literal["related", "irrelevant", "random", "counterfactual", "passages"]
# every condition a prompt can have: the four contexts, the multi-passage context, and `none` (an own item measured
# without context only)
ALL_CONDITIONS: tuple[str, ...] = CONTEXT_CONDITIONS + ("passages", "none")
# the order figures and tables show conditions in (strongest expected shift first)
CONDITION_ORDER: tuple[str, ...] = ("counterfactual", "related", "irrelevant", "random", "passages")
SPLITS: tuple[str, ...] = ("train", "dev", "test")
AblationMethod = Literal["zero", "mean", "resample"]
ABLATION_METHODS: tuple[str, ...] = get_args(AblationMethod)
# the two scored answers of a prompt and the measures taken of each (measurements.parquet, the shifts view)
TARGETS: tuple[str, ...] = ("gold", "distractor")
METRICS: tuple[str, ...] = ("logit", "logprob", "prob", "rank", "seq_logprob")

__all__ = [
    "ABLATION_METHODS",
    "ALL_CONDITIONS",
    "CONDITION_ORDER",
    "CONTEXT_CONDITIONS",
    "METRICS",
    "SPLITS",
    "TARGETS",
]
