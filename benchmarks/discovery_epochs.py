"""What a longer mask search buys: dev Δ and the selected head set against the epoch budget.

One search (seed 0, the default head-search data of one relation, template holdout included, float32) runs for the
largest budget, with neither the step budget nor the convergence test cutting it short; the trajectory does not
depend on the budget (no schedule), so the selection rule applied to the first E epochs is exactly what a run with
``epochs = E`` selects. For every budget it prints the selected epoch, the heads, dev Δ and the test Δ (intact ->
heads removed, mean paired gain with its 95% CI), and where the default step budget (``max_steps``) ends the search
and what it picks there. (The old patience rule is gone from the library; see entrainment/heads/search.py.)

    .venv/bin/python benchmarks/discovery_epochs.py [--epochs 100] [--budgets 10,30,100] [--max-steps 48]
    .venv/bin/python benchmarks/discovery_epochs.py --quick  # tiny random model, seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _quick  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from entrainment.config import Config, default  # noqa: E402
from entrainment.heads import search  # noqa: E402
from entrainment.model import loading  # noqa: E402
from entrainment.model.tokens import Tokens  # noqa: E402
from entrainment.stages import generate
from entrainment.statistics.null import paired_gain  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--relation", default="country capital city")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--budgets", default="10,30,100")
    ap.add_argument("--max-steps", type=int, default=default("max_steps"), help="the step budget to report on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="also write the per-epoch rows here")
    ap.add_argument("--quick", action="store_true", help=_quick.HELP)
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.epochs, args.budgets, args.max_steps = _quick.tiny_model(), 2, "1,2", 2
    loaded = loading.load(args.model)
    cfg = Config(relations=(args.relation,), discover_relations=(args.relation,))
    df = generate.from_config(cfg)  # the default head-search data (template holdout included)
    df = df.filter(pl.col("condition") == "related")
    tk = Tokens(loaded.tokenizer)
    split = {s: search.items_from(df.filter(pl.col("split") == s), tk) for s in ("train", "dev", "test")}
    print(
        f"{args.model}, {args.relation}, float32, seed {args.seed}: {len(split['train'])} train / "
        f"{len(split['dev'])} dev / {len(split['test'])} test items, {loaded.info.n_total_heads} heads"
    )
    t = time.perf_counter()
    rows, hist = search.search(
        loaded,
        split["train"],
        split["dev"],
        search.SearchParams(epochs=args.epochs, seed=args.seed, bf16=False, max_steps=10**9, converge_steps=10**9),
    )
    print(f"{args.epochs} epochs in {time.perf_counter() - t:.0f} s")
    print("epoch dev_delta n_removed: " + " ".join(f"{r['epoch']}:{r['dev_delta']:.2f}/{r['n_removed']}" for r in rows))
    base = search.evaluate_items(loaded, split["test"], None)
    heads_of = lambda e: tuple(sorted(map(tuple, (hist[e] <= 0).nonzero().tolist())))  # noqa: E731
    for budget in (int(b) for b in args.budgets.split(",")):
        e = search.select_epoch(rows[: budget + 1])
        ablated = search.evaluate_items(loaded, split["test"], (hist[e] > 0).float())
        g = paired_gain(ablated, base)
        print(
            f"budget {budget:3d}: selected epoch {e}, heads {heads_of(e)}, dev delta {rows[e]['dev_delta']:.2f}, "
            f"test delta {base.mean():.2f} -> {ablated.mean():.2f}, gain {g['gain']:+.2f} "
            f"[{g['gain_ci_low']:+.2f}, {g['gain_ci_high']:+.2f}]"
        )
    stop = next((r["epoch"] for r in rows if r["step"] >= args.max_steps), rows[-1]["epoch"])
    e = search.select_epoch(rows[: stop + 1])
    print(f"step budget {args.max_steps}: ends the search after epoch {stop}, selects epoch {e}, heads {heads_of(e)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "rows": rows,
                    "removed": {e: [list(h) for h in heads_of(e)] for e in range(len(hist))},
                    "test_base": float(np.mean(base)),
                },
                f,
            )


if __name__ == "__main__":
    main()
