"""Discovery start value, side by side: the paper's N(0, 0.01) (init 0) vs an all-kept start (init 3).

Same model, data, epochs and seed; prints per-epoch dev delta and heads removed for both, the epoch
the selection rule picks, its held-out (test split) delta, and the seconds per epoch.

    .venv/bin/python benchmarks/discovery_init.py [--relation "country capital city"] [--max-pairs 60] [--epochs 12]
    .venv/bin/python benchmarks/discovery_init.py --quick    # tiny random model, seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _quick  # noqa: E402
import polars as pl  # noqa: E402

from entrainment.data import lre_prompts  # noqa: E402
from entrainment.heads import search
from entrainment.model import loading
from entrainment.model.tokens import Tokens  # noqa: E402
from entrainment.paths import LRE_DIR  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--relation", default="country capital city")
    ap.add_argument("--max-pairs", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--inits", default="0,3")
    ap.add_argument("--quick", action="store_true", help=_quick.HELP)
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.max_pairs, args.epochs = _quick.tiny_model(), 20, 1
    loaded = loading.load(args.model)
    df = lre_prompts.build(LRE_DIR, (args.relation,), 0, args.max_pairs, (0.8, 0.1, 0.1)).filter(
        pl.col("condition") == "related"
    )
    tk = Tokens(loaded.tokenizer)
    split = {s: search.items_from(df.filter(pl.col("split") == s), tk) for s in ("train", "dev", "test")}
    print(
        f"{args.model}, {args.relation}: {len(split['train'])} train / {len(split['dev'])} dev / {len(split['test'])} "
        f"test items, "
        f"{loaded.info.n_total_heads} heads"
    )
    base, _ = search.evaluate(loaded, split["test"], None)
    for init in (float(x) for x in args.inits.split(",")):
        t = time.perf_counter()
        rows, hist = search.search(
            loaded, split["train"], split["dev"], search.SearchParams(epochs=args.epochs, init=init)
        )
        secs = (time.perf_counter() - t) / args.epochs
        e = search.select_epoch(rows)
        test, _ = search.evaluate(loaded, split["test"], (hist[e] > 0).float())
        curve = " ".join(f"{r['dev_delta']:.1f}/{r['n_removed']}" for r in rows)
        print(f"init {init:g}: dev delta/heads removed per epoch: {curve}")
        print(
            f"init {init:g}: selected epoch {e} ({rows[e]['n_removed']} heads), test delta {base:.2f} -> {test:.2f}, "
            f"{secs:.1f} s/epoch"
        )


if __name__ == "__main__":
    main()
