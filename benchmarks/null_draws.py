"""Random-head null speed, side by side in one process: 100 draws as batched multi-mask passes (masks on the
batch dimension of the head scale) vs one pass per draw (`evaluate.run_pass`, the one-at-a-time way). The draws are
the pipeline's (`random_heads.random_head_sets`: seeded, never the selected set).

    .venv/bin/python benchmarks/null_draws.py [--draws 100] [--items 64] [--heads 5]
    .venv/bin/python benchmarks/null_draws.py --quick     # tiny random model, seconds (the test suite runs this)

Prints seconds for both, `ratio: X.XX` (one at a time / batched) and the max |logit difference|.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _quick  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from entrainment.config import Config  # noqa: E402
from entrainment.heads.masks import HeadSet  # noqa: E402
from entrainment.heads.random_heads import random_head_sets  # noqa: E402
from entrainment.model import loading, multimask, scoring  # noqa: E402
from entrainment.model.tokens import Tokens  # noqa: E402
from entrainment.stages import generate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--relation", default="country capital city")
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--heads", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help=_quick.HELP)
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.draws, args.items, args.heads = _quick.tiny_model(), 3, 4, 2
    cfg = Config()
    loaded = loading.load(args.model, "cpu", "float32")
    info = loaded.info
    df = generate.from_config(cfg.replace(relations=(args.relation,), discover_relations=(args.relation,)))
    rows = df.filter((pl.col("split") == "test") & (pl.col("condition") == "related")).head(args.items).to_dicts()
    tk = Tokens(loaded.tokenizer)
    ctx = [tk.prompt(r["text_ctx"]) for r in rows]
    g = [tk.answer(r["text_base"], r["gold"])[0] for r in rows]
    d = [tk.answer(r["text_base"], r["distractor"])[0] for r in rows]
    sel = HeadSet("bench", tuple((i, 0) for i in range(args.heads)))
    sets = random_head_sets(sel, info.n_layers, info.n_heads, args.draws, 0)
    masks = multimask.head_masks([s.heads for s in sets], info.n_layers, info.n_heads)
    t = time.perf_counter()
    batched = multimask.probe_logits(loaded, ctx, list(zip(g, d)), masks, batch_size=64)
    t_b = time.perf_counter() - t
    t = time.perf_counter()
    one = np.stack(
        [
            np.stack([(s := scoring.run_pass(loaded, ctx, g, d, masks[i], 32)).gold, s.distractor], -1)
            for i in range(len(sets))
        ]
    )
    t_o = time.perf_counter() - t
    print(f"{args.draws} draws x {len(ctx)} items: batched {t_b:.1f} s, one draw at a time {t_o:.1f} s")
    print(f"ratio: {t_o / t_b:.2f}   max |logit diff|: {np.abs(batched - one).max():.2e}")


if __name__ == "__main__":
    main()
