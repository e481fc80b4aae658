"""Tiny relation files, the tiny-run config, search items and synthetic stats tables shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path

CONFIG = """relations = ["toy capital", "toy color"]
discover_relations = ["toy capital"]
max_pairs = 4
search_pairs = [3, 2, 3]
epochs = 2
seeds = [0, 1]
discover_batch_size = 4
random_draws = 2
null_draws = 5
null_items = 4
"""

CONDS = ("related", "counterfactual", "irrelevant", "random")
# the ten (country, capital) pairs of the `toy capital` relation
CAPITALS = [
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Peru", "Lima"),
    ("Chile", "Santiago"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
]


def write_relation(folder: Path, fname: str, name: str, samples: list[dict] | None = None, **over) -> Path:
    """A relation file in LRE format; `over` replaces top-level fields."""
    data = {
        "name": name,
        "prompt_templates": ["The capital city of {} is"],
        "prompt_templates_zs": ["The capital of {} is the city of"],
        "properties": {"relation_type": "factual", "domain_name": "country", "range_name": "city", "symmetric": False},
        "samples": samples if samples is not None else [{"subject": s, "object": o} for s, o in CAPITALS],
    }
    data.update(over)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / fname
    path.write_text(json.dumps(data, indent=1))
    return path


def toy_lre(d: Path) -> Path:
    """Two small clean relations, `toy capital` and `toy color`, under d."""
    write_relation(d / "factual", "capitals.json", "toy capital")
    write_relation(
        d / "commonsense",
        "colors.json",
        "toy color",
        [
            {"subject": s, "object": o}
            for s, o in [
                ("bananas", "yellow"),
                ("limes", "green"),
                ("plums", "purple"),
                ("cherries", "red"),
                ("oranges", "orange"),
                ("kiwis", "brown"),
                ("grapes", "green"),
                ("tomatoes", "red"),
            ]
        ],
        prompt_templates=["On the outside, {} are"],
        prompt_templates_zs=["What color are {}? They are"],
        properties={"relation_type": "commonsense", "domain_name": "fruit", "range_name": "color"},
    )
    return d


def search_items(m, n=12, seed=0):
    """Prompts "word. The capital of X is" with gold/distractor first tokens (the distractor is in context)."""
    import random

    from entrainment.model.tokens import Item

    tok = m.tokenizer
    words = [
        "window",
        "apple",
        "bread",
        "chair",
        "table",
        "river",
        "mountain",
        "forest",
        "ocean",
        "island",
        "village",
        "market",
    ]
    golds = ["Rome", "Madrid", "Tokyo", "Cairo", "Lima", "Moscow"]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        w, g = words[i % len(words)], rng.choice(golds)
        prompt = tuple(tok(f" {w}. The capital of France is the city of").input_ids)
        out.append(
            Item(
                prompt,
                tok(" " + g, add_special_tokens=False).input_ids[0],
                tok(" " + w, add_special_tokens=False).input_ids[0],
            )
        )
    return out


def synthetic_tables(tmp_path, rng_seed=0):
    """Two relations x four conditions; related/counterfactual matched; one degenerate relation."""
    import numpy as np
    import polars as pl

    from entrainment.store import tables
    from entrainment.store.schema import MEASUREMENTS

    rng = np.random.default_rng(rng_seed)
    prompts, meas = [], []
    shift = {"related": 1.0, "counterfactual": 1.6, "irrelevant": 0.5, "random": 0.2}
    for rel, n in (("r1", 12), ("r2", 9)):
        for i in range(n):
            for cond in CONDS:
                pid = f"{rel}-{cond}-{i}"
                pair = f"{rel}-pair-{i}" if cond in ("related", "counterfactual") else None
                prompts.append({"prompt_id": pid, "pair_id": pair, "position": None, "subject": f"{rel}-s{i // 3}"})
                row = {
                    "prompt_id": pid,
                    "relation": rel,
                    "condition": cond,
                    "split": "train",
                    "model": "m",
                    "ablation": "none",
                    "ablation_label": "none",
                    "ablation_method": "none",
                    "gold_token_id": 1,
                    "distractor_token_id": 2,
                    "collision": False,
                    "distractor_in_context": True,
                }
                for t in ("gold", "distractor"):
                    base = rng.normal(-8, 1)
                    ctx = base + (shift[cond] if t == "distractor" else -0.2) + rng.normal(0, 0.7)
                    row.update(
                        {
                            f"{t}_logit_base": base + 10,
                            f"{t}_logit_ctx": ctx + 10,
                            f"{t}_logprob_base": base,
                            f"{t}_logprob_ctx": ctx,
                            f"{t}_rank_base": int(rng.integers(1, 500)),
                            f"{t}_rank_ctx": int(rng.integers(1, 500)),
                            f"{t}_seq_logprob_base": base - 1,
                            f"{t}_seq_logprob_ctx": ctx - 1,
                        }
                    )
                meas.append(row)
    # a degenerate relation: one item per condition, and zero-variance ranks
    for cond in CONDS:
        pid = f"r3-{cond}"
        prompts.append(
            {
                "prompt_id": pid,
                "pair_id": "r3-pair" if cond in ("related", "counterfactual") else None,
                "position": None,
                "subject": "r3-s0",
            }
        )
        row = dict(meas[0], prompt_id=pid, relation="r3", condition=cond)
        meas.append(row)
    pdf = pl.DataFrame(prompts)
    mdf = pl.DataFrame(meas)
    tables.write_parquet(mdf, tmp_path / "measurements.parquet", MEASUREMENTS)
    tables.write_parquet(pdf, tmp_path / "prompts.parquet")
    return mdf, pdf
