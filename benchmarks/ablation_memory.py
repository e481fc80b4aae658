"""Peak memory of the ablation evaluation at n and 10 x n items: KLs computed chunk by chunk (the pipeline's
`evaluate.evaluate_mask`, zero ablation with one random-head draw) vs keeping every item's next-token
distribution of every pass and computing KL at the end (how the ablation stage worked before). Each configuration
runs in a fresh process; a thread samples the process's resident memory (psutil) every 50 ms during the evaluation,
and the peak above the level right before it is reported (the process-wide ru_maxrss is dominated by the model load,
a transient that hides the evaluation). The 10x items are the test items repeated ten times (same prompts, more rows).

    .venv/bin/python benchmarks/ablation_memory.py [--items 64] [--factor 10]
    .venv/bin/python benchmarks/ablation_memory.py --quick    # tiny random model, seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from entrainment.model import scoring

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"


def child(mode: str, n: int, base: int, model: str = MODEL) -> None:
    import polars as pl

    from entrainment.ablation import evaluate
    from entrainment.config import Config
    from entrainment.heads.masks import HeadSet
    from entrainment.model import loading
    from entrainment.model.tokens import Tokens
    from entrainment.stages import generate

    cfg = Config()
    loaded = loading.load(model, "cpu", "float32")
    n_layers, n_heads = loaded.info.n_layers, loaded.info.n_heads
    rel = "country capital city"
    df = generate.from_config(cfg.replace(relations=(rel,), discover_relations=(rel,)))
    items = df.filter((pl.col("split") == "test") & (pl.col("condition") == "related")).head(base)
    items = pl.concat([items] * (n // base))
    import threading

    import psutil

    proc = psutil.Process()
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.05)

    threading.Thread(target=sample, daemon=True).start()
    sel = HeadSet("bench", ((min(10, n_layers - 1), min(3, n_heads - 1)),))
    if mode == "chunked":
        key = {"mask_relation": rel, "seed": 0, "ablation_label": "bench"}
        evaluate.evaluate_mask(loaded, items, sel, key, evaluate.Plan(random_draws=1, seed=0, batch_size=32))
    else:  # every distribution kept, KL at the end
        tk = Tokens(loaded.tokenizer)
        rows = items.to_dicts()
        g = [tk.answer(r["text_base"], r["gold"])[0] for r in rows]
        d = [tk.answer(r["text_base"], r["distractor"])[0] for r in rows]
        ctx, base_ = [tk.prompt(r["text_ctx"]) for r in rows], [tk.prompt(r["text_base"]) for r in rows]
        passes = [
            scoring.run_pass(loaded, p, g, d, m, 32, keep_dist=True)
            for p, m in (
                (ctx, None),
                (base_, None),
                (ctx, sel.mask(n_layers, n_heads)),
                (ctx, HeadSet("r", ((min(3, n_layers - 1), 1),)).mask(n_layers, n_heads)),
            )
        ]
        for s in passes[2:]:
            scoring.kl(s.dist, passes[0].dist), scoring.kl(s.dist, passes[1].dist)
        peak[0] = max(peak[0], proc.memory_info().rss)  # before the distributions are dropped
    done.set()
    peak[0] = max(peak[0], proc.memory_info().rss)
    print(json.dumps({"mode": mode, "items": n, "peak_mb": peak[0] / 2**20, "growth_mb": (peak[0] - before) / 2**20}))


def main(argv: list[str] | None = None) -> None:
    import _quick

    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--quick", action="store_true", help=_quick.HELP + " (4 items, one process per mode)")
    ap.add_argument("--child", nargs=3)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child[0], int(a.child[1]), int(a.child[2]), a.model)
        return
    if a.quick:
        a.model, a.items = _quick.tiny_model(), 4
    print(f"{'mode':22s} {'items':>6s} {'peak RSS MB':>12s} {'peak growth during evaluation MB':>33s}")
    for mode in ("chunked", "stored"):
        for n in (a.items,) if a.quick else (a.items, a.items * a.factor):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(n), str(a.items), "--model", a.model],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise SystemExit(f"{mode} with {n} items failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            label = "chunked KL (pipeline)" if mode == "chunked" else "stored distributions"
            print(f"{label:22s} {n:6d} {r['peak_mb']:12.0f} {r['growth_mb']:33.0f}")


if __name__ == "__main__":
    main()
