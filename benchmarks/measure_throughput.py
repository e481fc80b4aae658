"""Measurement throughput: the project's scorer vs the anchor-style loop, side by side in one process.

Anchor style (what the paper's notebook does): batches of 32 texts in prompt order, left-padded,
full logits for every position, every text scored even when repeated. Two anchors:
- `anchor (first token)`: each item's with-context and no-context text, first-token logits only
  (less than the project computes);
- `anchor (same table)`: what an anchor-style loop needs for the same measurement columns: each of
  ``text + " " + gold`` and ``text + " " + distractor`` for both arms (first-token logits, ranks and
  whole-answer log-probs from the full logits).
All run on the same prompts, interleaved over `--rounds` rounds; the best time of each is kept.

    .venv/bin/python benchmarks/measure_throughput.py [--relations "country capital city,fruit inside color"]
        [--max-pairs 60]
    .venv/bin/python benchmarks/measure_throughput.py --quick   # tiny random model, seconds (the test suite runs it)

Prints prompts/s for both, `ratio: X.XX` (project / anchor) and the max |delta logit| between them.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _quick  # noqa: E402
import torch  # noqa: E402

from entrainment.data import lre_prompts  # noqa: E402
from entrainment.model import loading
from entrainment.model.scoring import collate  # noqa: E402
from entrainment.model.tokens import Tokens  # noqa: E402
from entrainment.paths import LRE_DIR  # noqa: E402
from entrainment.stages.measure import measure_frame  # noqa: E402


def first_token_logits(rows: list[dict], tk: Tokens, ctx: list, base: list) -> list[tuple[float, float, float, float]]:
    """(gold_ctx, dist_ctx, gold_base, dist_base) from per-item last-token logits of each arm."""
    out = []
    for r, c, b in zip(rows, ctx, base):
        g, d = tk.answer(r["text_base"], r["gold"])[0], tk.answer(r["text_base"], r["distractor"])[0]
        out.append((c[g].item(), c[d].item(), b[g].item(), b[d].item()))
    return out


def anchor(loaded, df, tk: Tokens) -> list[tuple[float, float, float, float]]:
    """(gold_ctx, dist_ctx, gold_base, dist_base) first-token logits, the anchor way."""
    tok, model = loaded.tokenizer, loaded.model
    tok.padding_side = "left"
    rows = df.to_dicts()
    texts = [t for r in rows for t in (r["text_ctx"], r["text_base"])]
    out_logits = []
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            enc = tok(texts[i : i + 32], return_tensors="pt", padding=True)
            pos = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
            lg = model(**enc, position_ids=pos).logits[:, -1].float()
            out_logits.extend(lg)
    return first_token_logits(rows, tk, out_logits[0::2], out_logits[1::2])


def anchor_same_table(loaded, df, tk: Tokens) -> list[tuple[float, float, float, float]]:
    """Every (arm, answer) sequence scored with full logits: first-token logits + whole-answer log-probs."""
    tok, model = loaded.tokenizer, loaded.model
    rows = df.to_dicts()
    seqs, spans = [], []
    for r in rows:
        for arm in ("text_ctx", "text_base"):
            p = tk.prompt(r[arm])
            for ans in ("gold", "distractor"):
                a = tk.answer(r["text_base"], r[ans])
                seqs.append(list(p + a[:-1]))
                spans.append((len(p), a))
    first = []
    with torch.inference_mode():
        for i in range(0, len(seqs), 32):
            batch = seqs[i : i + 32]
            width = max(len(s) for s in batch)
            ids, mask = collate(batch, tok.pad_token_id, model.device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            lg = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
            lp = torch.log_softmax(lg, -1)
            for j, s in enumerate(batch):
                n_prompt, a = spans[i + j]
                start = width - len(s) + n_prompt - 1
                first.append(lg[j, start])  # the logits at the last prompt token
                _ = sum(lp[j, start + k, t].item() for k, t in enumerate(a))  # whole-answer log-prob
    return first_token_logits(rows, tk, first[0::4], first[2::4])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--relations", default="country capital city,fruit inside color")
    ap.add_argument("--max-pairs", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--passages", type=int, default=12, help="queries per split with 4-passage contexts (0: none)")
    ap.add_argument("--quick", action="store_true", help=_quick.HELP)
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.max_pairs, args.rounds, args.passages = _quick.tiny_model(), 10, 1, 2
    loaded = loading.load(args.model)
    rels = tuple(r.strip() for r in args.relations.split(","))
    search = lre_prompts.SearchData(passage_items=args.passages) if args.passages else None
    df = lre_prompts.build(LRE_DIR, rels, 0, args.max_pairs, (0.8, 0.1, 0.1), rels[:1] if search else (), search)
    tk = Tokens(loaded.tokenizer)
    for r in df.to_dicts():  # tokenise answers outside the timers (both paths use them)
        tk.answer(r["text_base"], r["gold"]), tk.answer(r["text_base"], r["distractor"])
    best = {"project": float("inf"), "anchor": float("inf"), "anchor_table": float("inf")}
    for _ in range(args.rounds):
        t = time.perf_counter()
        ours = measure_frame(loaded, df, batch_size=32)
        best["project"] = min(best["project"], time.perf_counter() - t)
        t = time.perf_counter()
        ref = anchor(loaded, df, tk)
        best["anchor"] = min(best["anchor"], time.perf_counter() - t)
        t = time.perf_counter()
        ref_table = anchor_same_table(loaded, df, tk)
        best["anchor_table"] = min(best["anchor_table"], time.perf_counter() - t)
    cols = ["gold_logit_ctx", "distractor_logit_ctx", "gold_logit_base", "distractor_logit_base"]
    mine = ours.select(cols).rows()
    max_diff = max(abs(a - b) for r in (ref, ref_table) for x, y in zip(mine, r) for a, b in zip(x, y))
    n = len(df)
    lengths = [len(tk.prompt(t)) for t in df["text_ctx"]]
    n_pass = len(df.filter(df["condition"] == "passages"))
    print(
        f"model {args.model}, {n} prompts ({args.relations}; {n_pass} multi-passage prompts of the first), "
        f"prompt length {min(lengths)}-{max(lengths)} tokens, torch threads {torch.get_num_threads()}"
    )
    print(
        f"project:               {n / best['project']:.1f} prompts/s ({best['project']:.2f} s; every measurement "
        f"column)"
    )
    print(
        f"anchor (first token):  {n / best['anchor']:.1f} prompts/s ({best['anchor']:.2f} s; first-token logits only)"
    )
    print(f"anchor (same table):   {n / best['anchor_table']:.1f} prompts/s ({best['anchor_table']:.2f} s)")
    print(f"ratio vs first-token anchor: {best['anchor'] / best['project']:.2f}")
    print(f"ratio: {best['anchor_table'] / best['project']:.2f}")
    print(f"max |dlogit|: {max_diff:.2e}")


if __name__ == "__main__":
    main()
