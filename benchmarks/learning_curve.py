"""Does disagreement between mask searches fall with training data? A learning curve in training pairs (issue #31).

For each training size n (head-search (query, context) pairs of the training split, nested: the first n of one
seeded order), the same searches run on subject half-samples of those n pairs (complementary pairs, as in the verdict
configuration) through the discover stage's entry function (`discover.one_search`); their agreement is the mean
chance-corrected Jaccard, the overlap coefficient and the keep-logit Spearman over every pair of searches, each with
its bootstrap CI over the searches (head_overlap's `mean_*` columns, `discover.agreement`). Train and dev
splits only: the test split is never read.

    .venv/bin/python benchmarks/learning_curve.py --relation "country capital city" --sizes 25,50,100,200,all
    .venv/bin/python benchmarks/learning_curve.py --model gemma3-270m --relation "company hq" --sizes 25,100,all
    .venv/bin/python benchmarks/learning_curve.py --quick    # tiny random model, seconds (the test suite runs this)

Cost: searches x sizes x max_steps optimiser steps (SmolLM2-135M: about 1.4 s a step on a 2-core CPU, so the
default 4 searches x 5 sizes x 40 steps is about 19 minutes).
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _searches  # noqa: E402
import polars as pl  # noqa: E402

from entrainment.config import Config, default  # noqa: E402
from entrainment.model import loading  # noqa: E402
from entrainment.stages import discover, generate  # noqa: E402


def nested_rows(prompts: pl.DataFrame, relation: str, n: int | None, cfg: Config) -> pl.DataFrame:
    """The relation's train rows (training conditions) of the first n training pairs (one seeded order of pair ids,
    so sizes nest) and all of its dev rows; no test rows. n None = every training pair.

    Args:
        prompts: prompts frame (generate.from_config).
        relation: the mask relation.
        n: training pairs kept, or None for all.
        cfg: its train_conditions and seed (the order's seed).
    Returns:
        The prompt rows a search of that size reads.
    """
    seed = cfg.seed
    rows = prompts.filter(
        (pl.col("relation") == relation)
        & pl.col("split").is_in(["train", "dev"])
        & pl.col("condition").is_in(list(cfg.train_conditions))
        & pl.col("pair_id").is_not_null()
    )
    pairs = sorted(rows.filter(pl.col("split") == "train")["pair_id"].unique().to_list())
    random.Random(f"curve|{seed}").shuffle(pairs)
    keep = set(pairs if n is None else pairs[:n])
    return rows.filter((pl.col("split") == "dev") | pl.col("pair_id").is_in(list(keep)))


def curve(loaded, prompts: pl.DataFrame, relation: str, sizes: list[int | None], cfg: Config) -> pl.DataFrame:
    """One row per training size: pairs, subjects, the searches' sizes and their agreement with CIs.

    Args:
        loaded: the model.
        prompts: prompts frame with the relation's train and dev rows.
        relation: the mask relation.
        sizes: training pair counts (None = all).
        cfg: search options (seeds, search_resamples, max_steps, ...; search_resampling half).
    Returns:
        The learning-curve frame.
    """
    out = []
    for n in sizes:
        rows = nested_rows(prompts, relation, n, cfg)
        train = rows.filter(pl.col("split") == "train")
        t = time.perf_counter()
        found = [
            discover.one_search(loaded, rows, relation, seed, r, cfg)
            for seed in cfg.seeds
            for r in range(1, cfg.search_resamples + 1)
        ]
        ov = discover.agreement(found)  # head_overlap as the discover stage computes it
        r0 = ov.row(0, named=True) if len(ov) else {}
        out.append(
            {
                "pairs": train["pair_id"].n_unique(),
                "subjects": train["subject"].n_unique(),
                "searches": len(found),
                "converged": sum(bool(s.facts.get("converged")) for s in found),
                "heads_removed_median": float(pl.Series([s.facts["n_removed"] for s in found]).median()),
                **{k: v for k, v in r0.items() if k.startswith("mean_")},
                "seconds": time.perf_counter() - t,
            }
        )
        print(_line(out[-1]), flush=True)
    return pl.DataFrame(out)


def _line(r: dict) -> str:
    def ci(m: str) -> str:
        return f"{r[f'mean_{m}']:.2f} [{r[f'mean_{m}_ci_low']:.2f}, {r[f'mean_{m}_ci_high']:.2f}]"

    return (
        f"{r['pairs']:>4} pairs ({r['subjects']} subjects), {r['searches']} searches ({r['converged']} converged, "
        f"median {r['heads_removed_median']:g} heads): corrected Jaccard {ci('jaccard_corrected')}, overlap "
        f"{ci('overlap')}, keep-logit rho {ci('spearman_logits')}; {r['seconds']:.0f} s"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _searches.add_options(ap, 40, default("converge_steps"), "write the curve as CSV here")
    ap.add_argument("--sizes", default="25,50,100,200,all", help="training pairs, comma-separated; all = every pair")
    ap.add_argument("--searches", type=int, default=4, help="subject half-samples per size (complementary pairs)")
    ap.add_argument("--lr", type=float, default=default("lr"), help="AdamW learning rate of the searches")
    ap.add_argument("--warmup-steps", type=int, default=default("warmup_steps"), help="linear lr warm-up (steps)")
    ap.add_argument("--lambda", dest="lam", type=float, default=default("lam"), help="sparsity weight of the searches")
    ap.add_argument("--dev-pairs", type=int, default=24)
    args = ap.parse_args(argv)
    if args.searches < 2:
        ap.error("--searches: agreement needs at least 2 searches per size")
    if args.quick:
        args.sizes, args.searches, args.max_steps = "4,all", 2, 2
    sizes = [None if s.strip() == "all" else int(s) for s in args.sizes.split(",")]
    cfg = _searches.config(
        args,
        max_pairs=1,
        search_pairs=(100_000, args.dev_pairs, 1),  # every training pair the relation has; test: one, never read
        seeds=(0,),
        search_resamples=args.searches,
        search_resampling="half",
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        lam=args.lam,
    )
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    prompts = generate.from_config(cfg)
    print(
        f"{args.model}, {args.relation}: {cfg.max_steps} steps a search (lr {cfg.lr:g}, warm-up {cfg.warmup_steps}, "
        f"lambda {cfg.lam:g}), "
        f"{args.searches} half-samples a size"
    )
    table = curve(loaded, prompts, args.relation, sizes, cfg)
    if args.out:
        meta = {
            "model": str(args.model),
            "relation": args.relation,
            "max_steps": args.max_steps,
            "lr": args.lr,
            "warmup_steps": args.warmup_steps,
            "lam": args.lam,
        }
        table.select(*[pl.lit(v).alias(k) for k, v in meta.items()], pl.all()).write_csv(args.out)


if __name__ == "__main__":
    main()
