"""What the mask-search agreement benchmarks (learning_curve.py, discovery_step_size.py) share: their common
options and the one-relation search Config they build (not a benchmark itself: the leading underscore keeps it out
of tests/pipeline/test_benchmarks.py's glob).
"""

from __future__ import annotations

import argparse
from typing import Any

import _quick

from entrainment.config import Config


def add_options(ap: argparse.ArgumentParser, max_steps: int, converge_steps: int, out_help: str) -> None:
    """--model, --relation, --max-steps, --converge-steps, --out and --quick."""
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--relation", default="country capital city")
    ap.add_argument("--max-steps", type=int, default=max_steps)
    ap.add_argument("--converge-steps", type=int, default=converge_steps)
    ap.add_argument("--out", default=None, help=out_help)
    ap.add_argument("--quick", action="store_true", help=_quick.HELP)


def config(args: argparse.Namespace, **fields: Any) -> Config:
    """The benchmark's search Config: one relation searched, no passages, no cross-fit folds, the step budget (not
    epochs) ending a search; quick mode swaps in the tiny random model and the toy relations.

    Args:
        args: parsed options of add_options (quick mode rewrites args.model and args.relation).
        **fields: the benchmark's own Config fields.
    Returns:
        The Config.
    """
    data = {}
    if args.quick:
        args.model, args.relation = _quick.tiny_model(), "toy capital"
        data = {"data_dir": _quick.toy_lre_dir()}
    return Config(
        model=args.model,
        relations=(args.relation,),
        discover_relations=(args.relation,),
        passage_items=0,
        crossfit_folds=0,
        max_steps=args.max_steps,
        converge_steps=args.converge_steps,
        epochs=10_000,  # the step budget, not epochs, ends a search
        **data,
        **fields,
    )
