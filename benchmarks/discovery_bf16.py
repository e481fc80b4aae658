"""Discovery training forward in float32 vs bf16 autocast on the CPU, side by side in one process.

Same model, items, epochs and seed; evaluation (dev delta, the selection rule) stays float32 in both.
Prints seconds per epoch, `ratio: X.XX` (float32 / bf16), and the heads each selects.

    .venv/bin/python benchmarks/discovery_bf16.py [--relation "country capital city"] [--epochs 6]
    .venv/bin/python benchmarks/discovery_bf16.py --quick    # tiny random model, seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _quick  # noqa: E402
import polars as pl  # noqa: E402

from entrainment.config import Config  # noqa: E402
from entrainment.heads import search
from entrainment.model import loading
from entrainment.model.tokens import Tokens  # noqa: E402
from entrainment.stages import generate  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--relation", default="country capital city")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help=_quick.HELP)
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.epochs = _quick.tiny_model(), 1
    cfg = Config()
    loaded = loading.load(args.model, "cpu", "float32")
    df = generate.from_config(cfg.replace(relations=(args.relation,), discover_relations=(args.relation,)))
    tk = Tokens(loaded.tokenizer)
    rel = df.filter(pl.col("condition") == "related")
    train = search.items_from(rel.filter(pl.col("split") == "train"), tk)
    dev = search.items_from(rel.filter(pl.col("split") == "dev"), tk)
    results = {}
    for name, bf16 in (("float32", False), ("bf16", True)):
        t = time.perf_counter()
        rows, hist = search.search(loaded, train, dev, search.SearchParams(epochs=args.epochs, bf16=bf16))
        secs = (time.perf_counter() - t) / args.epochs
        e = search.select_epoch(rows)
        heads = sorted((int(a), int(b)) for a, b in (hist[e] <= 0).nonzero().tolist())
        results[name] = secs
        print(
            f"{name}: {secs:.1f} s/epoch; per-epoch dev delta/removed: "
            + ", ".join(f"{r['dev_delta']:.2f}/{r['n_removed']}" for r in rows)
            + f"; selected epoch {e}: {heads}"
        )
    print(f"ratio: {results['float32'] / results['bf16']:.2f}")


if __name__ == "__main__":
    main()
