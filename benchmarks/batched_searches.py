"""Many mask searches in one pass: N searches batched on the batch axis (search.search_many) against the same N
searches run one after another (search.search), side by side in one process, same model, items and seeds.

The N searches are seeds 0.. on the full training split and on subject half-samples (alternating), each for
--steps optimiser steps (no convergence stop, so both arms do the same work). Prints both wall times, the ratio
(sequential / batched) and the largest difference between the two arms' mask logits after every logged epoch.

    .venv/bin/python benchmarks/batched_searches.py [--n 8] [--steps 8] [--model smollm2-135m]
    .venv/bin/python benchmarks/batched_searches.py --quick   # a tiny random model, seconds
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import polars as pl  # noqa: E402
import torch  # noqa: E402

from entrainment.config import Config  # noqa: E402
from entrainment.heads import search  # noqa: E402
from entrainment.model import (
    loading,  # noqa: E402
    tokens,
)
from entrainment.model.tokens import Tokens  # noqa: E402
from entrainment.stages import generate


def _data(args) -> tuple:
    if args.quick:
        import _quick  # noqa: F401  (puts the project root on sys.path, for tests.tiny)

        from tests import tiny
        from tests.toy_data import search_items

        m = tiny.model("llama")
        items = [
            tokens.Item(it.prompt, it.gold, it.distractor, f"s{i % 8}") for i, it in enumerate(search_items(m, 24))
        ]
        return m, items, items[:6]
    loaded = loading.load(args.model)
    cfg = Config(relations=(args.relation,), discover_relations=(args.relation,))
    df = generate.from_config(cfg).filter(pl.col("condition") == "related")
    tk = Tokens(loaded.tokenizer)
    split = {s: search.items_from(df.filter(pl.col("split") == s), tk) for s in ("train", "dev")}
    return loaded, split["train"], split["dev"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--relation", default="country capital city")
    ap.add_argument("--n", type=int, default=8, help="searches")
    ap.add_argument("--steps", type=int, default=8, help="optimiser steps per search")
    ap.add_argument("--quick", action="store_true", help="a tiny random model instead (a check of the script)")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    loaded, train, dev = _data(args)
    jobs = [(s, s % 2) for s in range(args.n)]  # (seed, resample): full split and half-samples alternating
    trains = [search.resample_items(train, r, s, "half") for s, r in jobs]
    params = [
        search.SearchParams(seed=s, max_steps=args.steps, converge_steps=10**9, epochs=10**6, bf16=False)
        for s, _ in jobs
    ]
    print(
        f"{loaded.info.spec}: {args.n} searches x {args.steps} steps, batch {params[0].batch_size}, "
        f"{len(train)} train items (half-samples ~{len(train) // 2}), {len(dev)} dev items, "
        f"{torch.get_num_threads()} threads"
    )
    t = time.perf_counter()
    seq = [search.search(loaded, tr, dev, p) for tr, p in zip(trains, params)]
    t_seq = time.perf_counter() - t
    t = time.perf_counter()
    bat = search.search_many(loaded, trains, dev, params)
    t_bat = time.perf_counter() - t
    diff = max(float((a - b).abs().max()) for (_, ha), (_, hb) in zip(seq, bat) for a, b in zip(ha, hb))
    same_rows = all(len(a[0]) == len(b[0]) for a, b in zip(seq, bat))
    print(
        f"sequential {t_seq:.1f} s, batched {t_bat:.1f} s: ratio {t_seq / t_bat:.2f}x; "
        f"max |mask logit difference| {diff:.2e}; same epochs logged: {same_rows}"
    )


if __name__ == "__main__":
    main()
