"""Measurement throughput: the project's scorer vs the anchor-style loop, side by side in one process.

Anchor style (what the paper's notebook does): batches of 32 texts in prompt order, left-padded,
full logits for every position, every text scored even when repeated (each item's with-context and
no-context text), first-token logits only. The project additionally computes ranks and whole-answer
log-probs. Both run on the same prompts, interleaved over `--rounds` rounds; best time of each is kept.

    .venv/bin/python benchmarks/measure_throughput.py [--relations "country capital city,fruit inside color"] [--max-pairs 60]

Prints prompts/s for both, `ratio: X.XX` (project / anchor) and the max |delta logit| between them.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from entrainment import models, prompts  # noqa: E402
from entrainment.measure import measure_frame  # noqa: E402
from entrainment.paths import LRE_DIR  # noqa: E402
from entrainment.tokens import Tokens  # noqa: E402


def anchor(loaded, df, tk: Tokens) -> list[tuple[float, float, float, float]]:
    """(gold_ctx, dist_ctx, gold_base, dist_base) first-token logits, the anchor way."""
    tok, model = loaded.tokenizer, loaded.model
    tok.padding_side = "left"
    rows = df.to_dicts()
    texts = [t for r in rows for t in (r["text_ctx"], r["text_base"])]
    out_logits = []
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            enc = tok(texts[i:i + 32], return_tensors="pt", padding=True)
            pos = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
            lg = model(**enc, position_ids=pos).logits[:, -1].float()
            out_logits.extend(lg)
    res = []
    for k, r in enumerate(rows):
        g, d = tk.answer(r["text_base"], r["gold"])[0], tk.answer(r["text_base"], r["distractor"])[0]
        c, b = out_logits[2 * k], out_logits[2 * k + 1]
        res.append((c[g].item(), c[d].item(), b[g].item(), b[d].item()))
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--relations", default="country capital city,fruit inside color")
    ap.add_argument("--max-pairs", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    loaded = models.load(args.model)
    df = prompts.build(LRE_DIR, tuple(r.strip() for r in args.relations.split(",")), 0, args.max_pairs, (0.8, 0.1, 0.1))
    tk = Tokens(loaded.tokenizer)
    for r in df.to_dicts():  # tokenise answers outside the timers (both paths use them)
        tk.answer(r["text_base"], r["gold"]), tk.answer(r["text_base"], r["distractor"])
    best = {"project": float("inf"), "anchor": float("inf")}
    for _ in range(args.rounds):
        t = time.perf_counter()
        ours = measure_frame(loaded, df, batch_size=32)
        best["project"] = min(best["project"], time.perf_counter() - t)
        t = time.perf_counter()
        ref = anchor(loaded, df, tk)
        best["anchor"] = min(best["anchor"], time.perf_counter() - t)
    cols = ["gold_logit_ctx", "distractor_logit_ctx", "gold_logit_base", "distractor_logit_base"]
    mine = ours.select(cols).rows()
    max_diff = max(abs(a - b) for x, y in zip(mine, ref) for a, b in zip(x, y))
    n = len(df)
    print(f"model {args.model}, {n} prompts ({args.relations}), torch threads {torch.get_num_threads()}")
    print(f"project: {n / best['project']:.1f} prompts/s ({best['project']:.2f} s; ranks and whole-answer log-probs included)")
    print(f"anchor:  {n / best['anchor']:.1f} prompts/s ({best['anchor']:.2f} s)")
    print(f"ratio: {best['anchor'] / best['project']:.2f}")
    print(f"max |dlogit|: {max_diff:.2e}")


if __name__ == "__main__":
    main()
