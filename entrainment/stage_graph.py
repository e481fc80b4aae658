"""The stage graph, declared once: which stage writes which table, from which tables, reading which Config fields.

Everything that needs the graph is derived from ``STAGES`` here (kedro's "declare each node's inputs and outputs
once"): a table's provenance inputs (``inputs_of``), the command that refreshes it (``producer``), the tables a
command's fast-path key hashes (``reads``), the tables the report reads, and the Config fields in each stage's
cache key (``fields``). A leaf module: plain data, no project imports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One pipeline stage (= one CLI command).

    Attributes:
        name: the stage and command name.
        writes: table -> the tables it is made from (recorded as its provenance; () = from files only).
        reads: every table the command reads when present (its fast-path key hashes them).
        fields: the Config fields the stage's results depend on (its cache key).
    """

    name: str
    writes: dict[str, tuple[str, ...]]
    reads: tuple[str, ...]
    fields: tuple[str, ...]


_MODEL = ("model", "device", "dtype", "bos")

STAGES: tuple[Stage, ...] = (
    Stage(
        "generate",
        {"prompts": ()},
        (),
        (
            "relations",
            "items",
            "seed",
            "max_pairs",
            "split",
            "discover_relations",
            "search_pairs",
            "train_conditions",
            "template_holdout",
            "n_passages",
            "passage_items",
            "passage_distractor",
            "prompt_instruction",
            "crossfit_folds",
        ),
    ),
    Stage(
        "measure",
        {"measurements": ("prompts",), "models": ("prompts",), "head_means": ("prompts",)},
        ("prompts", "heads"),
        ("model", "device", "dtype", "batch_size", "ablation_heads", "ablation_method", "bos", "seed"),  # seed: donors
    ),
    Stage(
        "stats",
        {
            "stats": ("measurements", "prompts"),
            "contrasts": ("measurements", "prompts"),
            "scaling": ("measurements", "prompts", "models"),
        },
        ("measurements", "prompts", "models"),
        ("confidence",),
    ),
    Stage(
        "discover",
        {
            "heads": ("prompts",),
            "discovery": ("prompts",),
            "discovery_masks": ("prompts",),
            "head_overlap": ("prompts",),
            "head_disagreement": ("prompts",),
            "head_stability": ("prompts",),
        },
        ("prompts",),
        (
            "model",
            "device",
            "dtype",
            "seed",  # resample donors
            "discover_relations",
            "epochs",
            "max_steps",
            "converge_steps",
            "selection_rule",
            "search_resampling",
            "discover_batch_size",
            "lr",
            "warmup_steps",
            "lam",
            "tau",
            "weight_decay",
            "init",
            "seeds",
            "search_resamples",
            "searches_per_pass",
            "stability_threshold",
            "train_conditions",
            "bos",
            "search_dtype",
            "ablation_method",
            "crossfit_folds",
            "crossfit_items",
            "split",
        ),
    ),
    Stage(
        "scan",
        {
            "head_scores": ("prompts",),
            "head_agreement": ("head_scores", "heads", "prompts"),
            "method_agreement": ("head_scores",),
        },
        ("prompts", "heads"),
        (
            "model",
            "device",
            "dtype",
            "bos",
            "train_conditions",
            "discover_batch_size",
            "batch_size",
            "scan_k",
            "scan_items",
            "random_draws",
            "null_items",
            "seed",
            "search_dtype",
            "ablation_method",
            "compare_methods",
        ),
    ),
    Stage(
        "ablate",
        {
            "ablation": ("heads", "prompts"),
            "side_effects": ("heads", "prompts"),
            "null_draws": ("heads", "prompts"),
            "subject_gains": ("heads", "prompts"),
            "verdict": ("heads", "prompts"),
        },
        ("prompts", "heads"),
        (
            "model",
            "device",
            "dtype",
            "batch_size",
            "random_draws",
            "seed",
            "bos",
            "null_draws",
            "null_items",
            "train_conditions",
            "search_dtype",
            "ablation_method",
            "compare_methods",
            "compare_everywhere",
            "crossfit_folds",
            "crossfit_draws",
            "side_random_draws",
            "side_items",
            "side_relations",
            "side_icl_items",
        ),
    ),
    Stage(
        "heads",
        {"head_types": ("prompts",), "head_type_agreement": ("heads", "prompts")},
        ("prompts", "heads", "head_scores", "head_stability"),
        (
            "model",
            "device",
            "dtype",
            "bos",
            "seed",
            "batch_size",
            "discover_relations",
            "train_conditions",
            "scan_items",
            "null_items",
            "ablation_method",
            "head_types_k",
            "head_types_seqs",
            "head_types_len",
            "head_types_tokens",
            "head_types_draws",
        ),
    ),
    Stage(
        "sentences",
        {
            "sentence_scores": ("prompts",),
            "sentence_stats": ("prompts",),
            "sentence_scaling": ("prompts", "models"),
        },
        ("prompts", "heads", "models"),
        (
            "model",
            "device",
            "dtype",
            "bos",
            "batch_size",
            "seed",
            "confidence",
            "discover_relations",
            "sentence_items",
            "sentence_absent",
            "sentence_draws",
        ),
    ),
    Stage(
        "report",
        {"timings": ()},
        (
            "prompts",
            "measurements",
            "stats",
            "contrasts",
            "heads",
            "discovery",
            "head_overlap",
            "head_disagreement",
            "head_stability",
            "ablation",
            "side_effects",
            "null_draws",
            "subject_gains",
            "verdict",
            "head_scores",
            "head_agreement",
            "method_agreement",
            "models",
            "scaling",
            "sentence_scores",
            "sentence_stats",
            "sentence_scaling",
            "head_types",
            "head_type_agreement",
        ),
        _MODEL + ("smoke",),
    ),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def producer(table: str) -> str:
    """The stage (command) that writes `table`."""
    for s in STAGES:
        if table in s.writes:
            return s.name
    raise KeyError(table)


def inputs_of(table: str) -> tuple[str, ...]:
    """The tables `table` is made from (its provenance record); () for a table made from files only."""
    return BY_NAME[producer(table)].writes[table]


def reads(command: str) -> tuple[str, ...]:
    """The tables a command reads (`run` makes its own, so it reads none)."""
    return () if command == "run" else BY_NAME[command].reads


def fields(stage: str) -> tuple[str, ...]:
    """The Config fields in a stage's cache key."""
    return BY_NAME[stage].fields


TABLES: tuple[str, ...] = tuple(t for s in STAGES for t in s.writes)
