"""Discovery start value, side by side, chosen on train/dev only: the paper's N(0, 0.01) (init 0) vs all kept (init 3).

Same model, data, step budget and seed. The training split's subjects are divided once (seeded) into a search-train
part and a selection part: each search trains on the first and picks its epoch on the second; the choice between the
starts is judged on the dev split, which neither search saw. The test split is never read (an earlier version of
this script reported test-split numbers, a protocol leak issue #31 named). Prints per-epoch selection Δ and heads
removed, the selected epoch, its dev Δ (intact → heads removed) with a paired t CI over the dev subjects' means, and
the seconds per epoch.

    .venv/bin/python benchmarks/discovery_init.py [--relation "country capital city"] [--max-steps 40] [--inits 0,3]
    .venv/bin/python benchmarks/discovery_init.py --quick    # tiny random model, seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _quick  # noqa: E402
import polars as pl  # noqa: E402

from entrainment.data import lre_prompts  # noqa: E402
from entrainment.heads import search
from entrainment.model import loading
from entrainment.model.tokens import Tokens  # noqa: E402
from entrainment.paths import LRE_DIR  # noqa: E402
from entrainment.statistics import verdict  # noqa: E402


def split_by_subject(items: list, share: float, seed: int) -> tuple[list, list]:
    """(first part, second part) of the items, divided by subject: `share` of the subjects (seeded order) go first."""
    subjects = sorted(set(search.units(items)))
    random.Random(f"init|{seed}").shuffle(subjects)
    first = set(subjects[: max(1, round(share * len(subjects)))])
    return [it for it in items if it.subject in first], [it for it in items if it.subject not in first]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--relation", default="country capital city")
    ap.add_argument("--max-pairs", type=int, default=60)
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--inits", default="0,3")
    ap.add_argument("--quick", action="store_true", help=_quick.HELP)
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.max_pairs, args.max_steps = _quick.tiny_model(), 20, 2
    loaded = loading.load(args.model)
    df = lre_prompts.build(LRE_DIR, (args.relation,), 0, args.max_pairs, (0.8, 0.1, 0.1)).filter(
        pl.col("condition") == "related"
    )
    tk = Tokens(loaded.tokenizer)
    train, dev = (search.items_from(df.filter(pl.col("split") == s), tk) for s in ("train", "dev"))
    fit, select = split_by_subject(train, 0.75, 0)
    print(
        f"{args.model}, {args.relation}: {len(fit)} search-train / {len(select)} selection items (training split, "
        f"by subject) / {len(dev)} dev items ({len(set(search.units(dev)))} subjects); {loaded.info.n_total_heads} "
        "heads; test split not read"
    )
    intact = search.evaluate_items(loaded, dev, None)
    for init in (float(x) for x in args.inits.split(",")):
        t = time.perf_counter()
        p = search.SearchParams(epochs=10_000, max_steps=args.max_steps, init=init)
        rows, hist = search.search(loaded, fit, select, p)
        secs = (time.perf_counter() - t) / max(1, len(rows) - 1)
        e = search.select_epoch(rows, rule=p.selection_rule)
        ablated = search.evaluate_items(loaded, dev, (hist[e] > 0).float())
        t = verdict.subject_t(verdict.subject_means([it.subject for it in dev], ablated - intact))
        mean, lo, hi = t["mean"], t["ci_low"], t["ci_high"]
        curve = " ".join(f"{r['dev_delta']:.1f}/{r['n_removed']}" for r in rows)
        print(f"init {init:g}: selection delta/heads removed per epoch: {curve}")
        print(
            f"init {init:g}: selected epoch {e} ({rows[e]['n_removed']} heads), dev delta {intact.mean():.2f} -> "
            f"{ablated.mean():.2f}, gain {mean:+.2f} [95% CI over dev subjects {lo:+.2f}, {hi:+.2f}], "
            f"{secs:.1f} s/epoch"
        )


if __name__ == "__main__":
    main()
