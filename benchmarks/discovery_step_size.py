"""Step size, warm-up and sparsity weight of the mask search, side by side, on train/dev only (issue #31).

Each arm (an AdamW learning rate, a linear warm-up in steps and, optionally, the sparsity weight lambda) runs the same
searches: several seeds on the *same* data (the full training split of one relation), so whatever disagreement they
show is the optimiser's, the part of the disagreement a step size or the objective can change. Every search goes
through the discover stage's entry function (`discover.one_search`, so the pipeline's data, budget, convergence test
and `one_se` rule) and the arms' agreement is head_overlap's (`discover.agreement`: mean chance-corrected Jaccard,
overlap coefficient and keep-logit Spearman over every pair of seeds, with bootstrap CIs over the searches), once for
the masks the selection rule picks and once for the masks the searches end with. Per arm it prints how many searches
converged, their steps, the heads removed and the dev Δ. It also prints the intact model's 2-way cross-entropy on the
training items beside the price of one head in the objective (lambda / number of heads): at the converged optimum a
head stays removed only if removing it lowers that cross-entropy by more than its price. The test split is never read.

    .venv/bin/python benchmarks/discovery_step_size.py --arms 1:0,1:20,0.3:0,0.1:0 --seeds 0,1,2,3 --max-steps 100
    .venv/bin/python benchmarks/discovery_step_size.py --arms 1:0:1,1:0:0.3,1:0:0.1   # lambda arms (lr:warm-up:lambda)
    .venv/bin/python benchmarks/discovery_step_size.py --quick   # tiny random model, seconds (the suite runs this)

Cost: arms x seeds x max_steps optimiser steps (SmolLM2-135M, 2-core CPU: about 1.2 s a step plus a 1.3 s dev
evaluation every 4 steps, so the default 4 arms x 4 seeds x 100 steps is at most about 40 minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _searches  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from entrainment.config import Config, default  # noqa: E402
from entrainment.heads import search  # noqa: E402
from entrainment.model import loading  # noqa: E402
from entrainment.stages import discover, generate  # noqa: E402
from entrainment.stages.discover import Search  # noqa: E402


def ending(s: Search) -> Search:
    """The same search with its last logged epoch marked selected: agreement of the masks the searches end with."""
    last = s.log["epoch"].max()
    return Search(s.log.with_columns((pl.col("epoch") == last).alias("selected")), s.masks, s.heads, s.facts)


def heads_of(s: Search) -> list[tuple[int, int]]:
    """The heads a search's selected mask removes, sorted."""
    h = s.heads.filter(pl.col("removed")).sort("layer", "head")
    return list(zip(h["layer"].to_list(), h["head"].to_list()))


def agreement_of(searches: list[Search], prefix: str) -> dict[str, float]:
    """head_overlap's mean_* columns (with CIs) of these searches, renamed `prefix`_*."""
    ov = discover.agreement(searches)
    row = ov.row(0, named=True) if len(ov) else {}
    return {prefix + k.removeprefix("mean"): v for k, v in row.items() if k.startswith("mean_")}


def arm(loaded, prompts: pl.DataFrame, relation: str, cfg: Config) -> dict:
    """One arm's row: every seed of cfg.seeds searched on the full training split under cfg's lr and warm-up.

    Args:
        loaded: the model.
        prompts: prompts frame with the relation's train and dev rows.
        relation: the mask relation.
        cfg: search options (lr, warmup_steps, seeds, max_steps, converge_steps, selection_rule, ...).
    Returns:
        lr, warmup_steps, lam, searches, converged, steps, heads removed (selected and last), dev Δ, both agreements.
    """
    t = time.perf_counter()
    found = [discover.one_search(loaded, prompts, relation, seed, 0, cfg) for seed in cfg.seeds]
    last = [s.log.filter(pl.col("epoch") == s.log["epoch"].max()).row(0, named=True) for s in found]
    return {
        "lr": cfg.lr,
        "warmup_steps": cfg.warmup_steps,
        "lam": cfg.lam,
        "searches": len(found),
        "converged": sum(bool(s.facts["converged"]) for s in found),
        "steps_median": statistics.median(s.facts["steps_run"] for s in found),
        "selected_heads": ",".join(str(s.facts["n_removed"]) for s in found),
        "selected_sets": " | ".join(" ".join(f"L{a}.H{b}" for a, b in heads_of(s)) or "-" for s in found),
        "last_heads": ",".join(str(r["n_removed"]) for r in last),
        "selected_dev_delta": statistics.fmean(s.facts["dev_delta"] for s in found),
        "last_dev_delta": statistics.fmean(r["dev_delta"] for r in last),
        "dev_delta_start": found[0].facts["dev_delta_start"],
        **agreement_of(found, "selected"),
        **agreement_of([ending(s) for s in found], "last"),
        "seconds": time.perf_counter() - t,
    }


def _line(r: dict) -> str:
    def ci(which: str, m: str) -> str:
        return f"{r[f'{which}_{m}']:.2f} [{r[f'{which}_{m}_ci_low']:.2f}, {r[f'{which}_{m}_ci_high']:.2f}]"

    return (
        f"lr {r['lr']:g}, warm-up {r['warmup_steps']}, lambda {r['lam']:g}: {r['converged']}/{r['searches']} "
        f"converged, median {r['steps_median']:g} steps; heads removed selected {r['selected_heads']}, "
        f"last {r['last_heads']}; dev delta "
        f"{r['dev_delta_start']:.2f} -> selected {r['selected_dev_delta']:.2f}, last {r['last_dev_delta']:.2f}\n"
        f"  selected heads per seed: {r['selected_sets']}\n"
        f"  seeds' agreement, selected masks: corrected Jaccard {ci('selected', 'jaccard_corrected')}, overlap "
        f"{ci('selected', 'overlap')}, keep-logit rho {ci('selected', 'spearman_logits')}\n"
        f"  seeds' agreement, last masks:     corrected Jaccard {ci('last', 'jaccard_corrected')}, overlap "
        f"{ci('last', 'overlap')}, keep-logit rho {ci('last', 'spearman_logits')}; {r['seconds']:.0f} s"
    )


def intact_train_ce(loaded, prompts: pl.DataFrame, relation: str, cfg: Config) -> tuple[float, int]:
    """(mean 2-way cross-entropy softplus(l_distractor - l_gold) of the intact model on the search's training items,
    number of items): the most the objective's effect term can fall by removing heads."""
    train, _dev, ablation = discover.search_items(loaded, prompts, relation, cfg)
    delta = search.evaluate_items(loaded, train, None, ablation=ablation)
    return float(np.logaddexp(0.0, -delta).mean()), len(train)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _searches.add_options(ap, 100, 24, "write the arms as CSV here (rewritten after every arm)")
    ap.add_argument(
        "--arms", default="1:0,1:20,0.3:0,0.1:0", help="lr:warm-up steps[:lambda], comma-separated (lambda: --lambda)"
    )
    ap.add_argument(
        "--lambda", dest="lam", type=float, default=default("lam"), help="sparsity weight of arms without one"
    )
    ap.add_argument("--seeds", default="0,1,2,3", help="search seeds (all on the full training split)")
    ap.add_argument("--init", type=float, default=default("init"))
    args = ap.parse_args(argv)
    if args.quick:
        args.arms, args.seeds, args.max_steps, args.converge_steps = "1:0,0.3:2:0.5", "0,1", 3, 2
    seeds = tuple(int(s) for s in args.seeds.split(","))
    if len(seeds) < 2:
        ap.error("--seeds: agreement needs at least 2 seeds")
    arms = []
    for a in args.arms.split(","):
        parts = a.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            arms.append((float(parts[0]), int(parts[1]), float(parts[2]) if len(parts) == 3 else args.lam))
        except ValueError:
            ap.error(f"--arms: {a!r} is not lr:warm-up[:lambda] (numbers; warm-up an integer)")
    base = _searches.config(args, seeds=seeds, search_resamples=1, init=args.init)
    loaded = loading.load(base.model, base.device, base.dtype)
    prompts = generate.from_config(base)
    prompts = prompts.filter(pl.col("split") != "test")  # train/dev only
    ce, n_train = intact_train_ce(loaded, prompts, args.relation, base)
    n_heads = loaded.info.n_total_heads
    print(
        f"intact model on the {n_train} training items: 2-way cross-entropy {ce:.4f} nats; one head's price in the "
        f"objective is lambda / {n_heads} heads = {1 / n_heads:.4f} x lambda",
        flush=True,
    )
    print(
        f"{args.model}, {args.relation}, float32, init {args.init:g}: seeds {list(seeds)} on the full training split, "
        f"<= {args.max_steps} steps, converged after {args.converge_steps} unchanged steps, rule {base.selection_rule}",
        flush=True,
    )
    rows = []
    for lr, warmup, lam in arms:
        rows.append(arm(loaded, prompts, args.relation, base.replace(lr=lr, warmup_steps=warmup, lam=lam)))
        print(_line(rows[-1]), flush=True)
        if args.out:
            tmp = args.out + ".tmp"
            pl.DataFrame(rows).select(pl.lit(str(args.model)).alias("model"), pl.all()).write_csv(tmp)
            os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
