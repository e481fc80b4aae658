"""Head scan speed, side by side in one process: the layer-reusing batched scan vs the naive loop
(one full forward over all items per head, one head at a time), plus AtP and one discovery epoch.

Same model and items (the dev items of the relation's related condition, as `entrainment scan` uses), float32
for both scans.
Prints seconds for each, `ratio: X.XX` (naive / batched), the max |score difference| between the two scans,
and AtP's Spearman correlation with the scan.

    .venv/bin/python benchmarks/head_scan.py [--relation "country capital city"] [--skip-naive]
    .venv/bin/python benchmarks/head_scan.py --quick         # tiny random model, seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _quick  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from scipy import stats as sps  # noqa: E402

from entrainment.config import Config  # noqa: E402
from entrainment.heads import maps, search
from entrainment.model import loading
from entrainment.model.tokens import Tokens  # noqa: E402
from entrainment.stages import generate  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--relation", default="country capital city")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--items", type=int, default=0, help="use only the first N dev items (0 = all)")
    ap.add_argument("--scan-batch", type=int, default=0, help="rows per batched-scan pass (0 = scan_scores' default)")
    ap.add_argument("--skip-atp", action="store_true", help="skip AtP and the discovery epoch")
    ap.add_argument("--quick", action="store_true", help=_quick.HELP)
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.items = _quick.tiny_model(), 4
    cfg = Config()
    loaded = loading.load(args.model, "cpu", "float32")
    df = generate.from_config(cfg.replace(relations=(args.relation,), discover_relations=(args.relation,)))
    tk = Tokens(loaded.tokenizer)
    dev = search.items_from(df.filter((pl.col("split") == "dev") & (pl.col("condition") == "related")), tk)
    train = search.items_from(df.filter((pl.col("split") == "train") & (pl.col("condition") == "related")), tk)
    dev = dev[: args.items] if args.items else dev
    p, g, d = [i.prompt for i in dev], [i.gold for i in dev], [i.distractor for i in dev]
    print(f"{args.model}: {loaded.info.n_total_heads} heads, {len(dev)} dev items, {len(train)} train items")
    t = time.perf_counter()
    fast = maps.scan_scores(loaded, p, g, d, **({"batch_size": args.scan_batch} if args.scan_batch else {}))
    t_fast = time.perf_counter() - t
    print(f"batched scan (layer reuse): {t_fast:.1f} s", flush=True)
    if not args.skip_atp:
        t = time.perf_counter()
        atp = maps.atp_scores(loaded, p, g, d, cfg.discover_batch_size)
        t_atp = time.perf_counter() - t
        params = search.SearchParams(epochs=1)
        t = time.perf_counter()
        search.search(loaded, train, [], params)
        t_epoch = time.perf_counter() - t
        print(
            f"AtP (one forward + backward per batch): {t_atp:.1f} s; one discovery epoch ({len(train)} items): "
            f"{t_epoch:.1f} s"
        )
        rho = sps.spearmanr(atp.ravel(), fast.ravel())[0]
        print(
            f"Spearman(atp, scan) = {rho:.3f}; top-5 by scan: {np.argsort(-fast.ravel())[:5].tolist()}, "
            f"by atp: {np.argsort(-atp.ravel())[:5].tolist()} (flat index = layer * heads + head)"
        )
    if not args.skip_naive:
        t = time.perf_counter()
        slow = maps.naive_scan_scores(loaded, p, g, d)
        t_slow = time.perf_counter() - t
        print(f"naive loop: {t_slow:.1f} s")
        print(f"ratio: {t_slow / t_fast:.2f}   max |score diff|: {np.abs(slow - fast).max():.2e}")


if __name__ == "__main__":
    random.seed(0)
    main()
