"""The work of every stage of a configured run, counted without a model: rows x tokens through each unit of the cost
model (items x epochs x seeds x resamples, heads x items, draws x items, passes x items, ...), from the prompts table
the Config generates and the stage formulas. ``entrainment plan`` prices it (entrainment/plan/predict.py).
Longer than 320 lines because every stage's formula is kept in one place (``work``; cross-fitting, heads and
sentences in their own functions), so a change to one stage's cost is read beside the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from entrainment.model.shape import Lengths, Shape
from entrainment.vocabulary import CONTEXT_CONDITIONS

ICL_SHOTS = 3


@dataclass(frozen=True)
class Work:
    """One kind of work of a stage: `rows` rows of `tokens` tokens each through the unit `unit`.

    `factor` multiplies the unit cost (resample's donor rows), `batch` is the rows per forward call (GPU overhead)."""

    stage: str
    unit: str
    rows: float
    tokens: float
    factor: float = 1.0
    batch: int = 32


def _rows(df, **eq):
    import polars as pl

    expr = pl.lit(True)
    for k, v in eq.items():
        expr = expr & (pl.col(k).is_in(list(v)) if isinstance(v, (list, tuple, set)) else (pl.col(k) == v))
    return df.filter(expr)


def _donor_factor(method: str) -> float:
    """Resample runs about one donor row per item beside each item (mean and zero: none)."""
    return 2.0 if method == "resample" else 1.0


def side_texts(cfg, mask_relation: str) -> list[str]:
    """The side-effect prompts of one mask (recall on the other eligible relations, the ICL tasks), as texts.
    Mirrors entrainment.stages.ablate.side_tasks without importing torch; the shots are the first other items (the
    pipeline draws them at random: same lengths on average)."""
    from entrainment.data import relations
    from entrainment.paths import ICL_DIR

    out: list[str] = []
    for rel in relations.side_relations(cfg.data_dir, mask_relation, cfg.side_relations):
        pairs = sorted(rel.pairs)[: cfg.side_items]
        out += [rel.query_templates[0].format(s) for s, _ in pairs]
    for p in sorted(Path(ICL_DIR).glob("*.json")):
        items = json.loads(p.read_text())
        for i, it in enumerate(items[: cfg.side_icl_items or None]):
            others = [x for j, x in enumerate(items) if j != i][:ICL_SHOTS]
            out.append("".join(f"{x['input']} -> {x['output']}\n" for x in others) + f"{it['input']} ->")
    return out


def known_head_sets(cfg, spec: str) -> dict[str, list[tuple]] | None:
    """mask relation -> the distinct head sets of this model's masks in ``--out``/heads.parquet (a previous run's
    discovery), or None when there is none (a fresh run: the sets are not known before discovery)."""
    path = Path(cfg.out) / "heads.parquet"
    if not path.is_file():
        return None
    try:
        import polars as pl

        from entrainment.model.sources import resolve

        df = pl.read_parquet(path, columns=["model", "relation", "seed", "layer", "head", "removed"])
        df = df.filter(pl.col("model") == resolve(spec).spec)
    except Exception:  # noqa: BLE001 -- unreadable or foreign: as if there were none
        return None
    if df.is_empty():
        return None
    out: dict[str, set[tuple]] = {}
    for (rel, _seed), g in df.group_by("relation", "seed"):
        r = g.filter(pl.col("removed"))
        out.setdefault(rel, set()).add(tuple(sorted(zip(r["layer"].to_list(), r["head"].to_list()))))
    return {rel: sorted(sets) for rel, sets in out.items()}


def known_epochs(cfg, spec: str) -> dict[str, int] | None:
    """mask relation -> the epochs its searches ran in total, from ``--out``/discovery.parquet of a previous run with
    this model and the same seeds, resamples and epoch budget (the convergence test is deterministic: a cold rerun of
    the same configuration stops at the same epochs); None when there is no such table."""
    path = Path(cfg.out) / "discovery.parquet"
    if not path.is_file():
        return None
    try:
        import polars as pl

        from entrainment.model.sources import resolve

        df = pl.read_parquet(path, columns=["model", "relation", "seed", "resample", "epoch"])
        df = df.filter(pl.col("model") == resolve(spec).spec)
    except Exception:  # noqa: BLE001 -- unreadable or foreign: as if there were none
        return None
    runs = df.group_by("relation", "seed", "resample").agg(pl.col("epoch").max())
    want = {(s, r) for s in cfg.seeds for r in range(cfg.search_resamples)}
    out: dict[str, int] = {}
    for (rel,), g in runs.group_by("relation"):
        got = set(zip(g["seed"].to_list(), g["resample"].to_list()))
        if got != want or int(g["epoch"].max()) > cfg.epochs:
            return None  # another configuration's searches: no guide to this one
        out[rel] = int(g["epoch"].sum())
    return out


def _search_budget(cfg, n_train: int) -> tuple[int, int]:
    """(training rows, epochs) of all of a mask relation's searches run to their full budget: each search runs
    min(max_steps, epochs x steps per epoch) steps of min(batch, n) rows (equal-size batches); resample >= 1 trains
    on a subject half-sample (about n / 2 items) under search_resampling = half. Convergence can only make it less."""
    rows = ran = 0
    for r in range(cfg.search_resamples):
        n = max(1, n_train // 2 if r and cfg.search_resampling == "half" else n_train)
        b = min(cfg.discover_batch_size, n)
        per_epoch = -(-n // b)
        steps = min(cfg.max_steps, cfg.epochs * per_epoch)
        rows += steps * b * len(cfg.seeds)
        ran += -(-steps // per_epoch) * len(cfg.seeds)
    return rows, ran


def work(
    cfg,
    prompts,
    shape: Shape,
    lengths: Lengths,
    head_sets: dict[str, list[tuple]] | None = None,
    epochs: dict[str, int] | None = None,
) -> list[Work]:
    """Every stage's work for one model: the stage formulas over the prompts table.

    Args:
        cfg: the run's Config.
        prompts: the prompts table the run generates (generate.from_config).
        shape: the model's Shape.
        lengths: token counter.
        head_sets: the distinct head sets per mask relation when known (known_head_sets); None = each seed's mask
            and the stable set, all distinct, non-empty and of different sizes (the most a run can evaluate).
        epochs: the epochs each mask relation's searches run in total when known (known_epochs); None = every search
            runs its full budget (max_steps / epochs; convergence can only make it less).
    Returns:
        Work items (stage, unit, rows, tokens per row, cost factor, batch).
    """
    out: list[Work] = []
    methods = cfg.methods()
    relations = sorted(prompts["relation"].unique().to_list())
    # measure: each shard (relation) scores its distinct with- and without-context prompts once; head means (mean
    # and resample references) run every relation's distinct no-context train prompts once
    n_sets = 1 + (1 if cfg.ablation_heads else 0)
    for rel in relations:
        r = _rows(prompts, relation=rel)
        for col in ("text_ctx", "text_base"):
            texts = r[col].unique().to_list()
            out.append(Work("measure", "measure", len(texts) * n_sets, lengths.mean(texts), batch=cfg.batch_size))
        base = _rows(r, split="train")["text_base"].unique().to_list()
        out.append(Work("measure", "evaluate", len(base), lengths.mean(base), batch=cfg.batch_size))
    out.append(Work("measure", "task", len(relations) * n_sets + 1, 0))  # a shard per relation + the model facts
    disc = [r for r in relations if r in cfg.discover_relations] or (relations if cfg.items is not None else [])
    searches = list(disc) + (["shared"] if cfg.shared_mask and len(disc) > 1 else [])
    n_searches = len(cfg.seeds) * cfg.search_resamples
    out.append(Work("discover", "task", len(searches) * n_searches, 0))
    f = _donor_factor(cfg.ablation_method)
    for rel in searches:
        src = disc if rel == "shared" else [rel]
        train = _rows(prompts, relation=src, split="train", condition=cfg.train_conditions)["text_ctx"].to_list()
        dev = _rows(prompts, relation=src, split="dev", condition=cfg.train_conditions)["text_ctx"].to_list()
        rows, ran = _search_budget(cfg, len(train))
        if epochs is not None and rel in epochs:  # the epochs a previous run of this configuration took
            rows, ran = rows * epochs[rel] / max(ran, 1), epochs[rel]
        out.append(Work("discover", "discover", rows, lengths.mean(train), f, cfg.discover_batch_size))
        out.append(Work("discover", "evaluate", len(dev) * (ran + n_searches), lengths.mean(dev), f, cfg.batch_size))
    if cfg.scan:
        out.append(Work("scan", "task", 2 * len(disc) * len(methods), 0))  # scan + agreement per relation and method
        for rel in disc:
            dev = _rows(prompts, relation=rel, split="dev", condition=cfg.train_conditions)["text_ctx"].to_list()
            test = _rows(prompts, relation=rel, split="test", condition=cfg.train_conditions)
            n_scan = min(cfg.scan_items or len(dev), len(dev))
            n_k = min(cfg.null_items, len(test))
            k = min(cfg.scan_k, shape.n_total_heads)
            k_masks = 1 + 3 * k + k * cfg.random_draws
            for m in methods:
                fm = 1.25 if m == "resample" else 1.0  # donors: + one row per item per batch of 4 masks x 16 items
                out.append(Work("scan", "scan", n_scan * shape.n_total_heads, lengths.mean(dev), fm, 64))
                out.append(Work("scan", "atp", n_scan, lengths.mean(dev), _donor_factor(m), cfg.discover_batch_size))
                out.append(
                    Work(
                        "scan",
                        "null",
                        n_k * k_masks,
                        lengths.mean(test["text_ctx"].to_list()),
                        fm,
                        max(cfg.batch_size, 64),
                    )
                )
                out.append(
                    Work("scan", "null", n_k, lengths.mean(test["text_base"].to_list()), 1.0, max(cfg.batch_size, 64))
                )
    for rel in searches:
        # the ablate stage evaluates a mask relation's distinct head sets together (evaluate.evaluate_masks): the
        # intact passes once, an ablated pass per head set and method, random heads and the null once per set size
        upper = [("?",) * (i + 1) for i in range(len(cfg.seeds) + 1)]  # seeds + stable set, sizes 1, 2, ...
        sets = head_sets.get(rel, []) if head_sets is not None else upper
        full = [hs for hs in sets if hs]  # sets that remove heads (a set removing none is the intact model)
        sizes = {len(hs) for hs in full}
        out.append(Work("ablate", "task", len(relations) + 1, 0))  # one task per evaluated relation + side effects
        if not sets:
            continue
        for evaluated in relations:
            is_own = evaluated == rel or (rel == "shared" and evaluated in disc)
            ms = methods if is_own or cfg.compare_everywhere else methods[:1]
            test = _rows(prompts, relation=evaluated, split="test")
            n = len(test)
            t_ctx, t_base = lengths.mean(test["text_ctx"].to_list()), lengths.mean(test["text_base"].to_list())
            prompted = [t for t in test["text_prompted"].to_list() if t] if "text_prompted" in test.columns else []
            t_pr = lengths.mean(prompted) if prompted else t_ctx
            for text_tokens in (t_ctx, t_base, t_pr):  # original, no_context, prompted
                out.append(Work("ablate", "ablate", n, text_tokens, batch=cfg.batch_size))
            for j, m in enumerate(ms):  # ablated per head set; random heads per size under the search method
                draws = len(sizes) * cfg.random_draws if j == 0 or cfg.compare_everywhere else 0
                out.append(Work("ablate", "ablate", n * (len(full) + draws), t_ctx, _donor_factor(m), cfg.batch_size))
            if is_own and full:
                for cond in cfg.train_conditions:
                    sub = _rows(test, condition=cond)
                    n_null = min(cfg.null_items, len(sub))
                    for m in ms[: len(ms) if cfg.compare_everywhere else 1]:
                        # per size: the intact mask, that size's head sets and the draws, on the same items
                        masks = len(sizes) * (1 + cfg.null_draws) + len(full)
                        out.append(
                            Work(
                                "ablate",
                                "null",
                                n_null * masks,
                                lengths.mean(sub["text_ctx"].to_list()),
                                1.25 if m == "resample" else 1.0,
                                max(cfg.batch_size, 64),
                            )
                        )
        side = side_texts(cfg, rel)
        n_methods = len(methods) if cfg.compare_everywhere else 1
        passes = 1 + len(full) + len(sizes) * cfg.side_random_draws
        out.append(Work("ablate", "evaluate", len(side) * passes * n_methods, lengths.mean(side), batch=cfg.batch_size))
    out += crossfit_work(cfg, prompts, disc, lengths)
    if cfg.head_types and disc:
        out += head_types_work(cfg, prompts, disc[0], shape, lengths)
    if cfg.sentences:
        out += sentences_work(cfg, prompts, disc, lengths)
    ex = prompts.head(1)
    if len(ex):
        out.append(Work("report", "evaluate", 2, lengths.mean(ex["text_ctx"].to_list() + ex["text_base"].to_list())))
    return out


def crossfit_work(cfg, prompts, disc: list[str], lengths: Lengths) -> list[Work]:
    """The cross-fitted verdict (entrainment.stages.crossfit): per discovery relation and fold, one search at the first
    seed on at most crossfit_items of the other folds' subjects (discover), and every fold's mask and its null on
    the fold's training-condition items (ablate). Folds hold about 1/K of the subjects each.

    Args:
        cfg: the Config (crossfit_folds, crossfit_items, crossfit_draws, null_items, ...).
        prompts: the prompts table (with `fold`).
        disc: the discovery relations.
        lengths: token counter.
    Returns:
        Work items of the discover and ablate stages (none when crossfit_folds < 2).
    """
    k = cfg.crossfit_folds
    if k < 2:
        return []
    out = [Work("discover", "task", k * len(disc), 0), Work("ablate", "task", len(disc), 0)]
    one = cfg.model_copy(update={"seeds": cfg.seeds[:1], "search_resamples": 1})
    f = _donor_factor(cfg.ablation_method)
    for rel in disc:
        rows = _rows(prompts, relation=rel, condition=cfg.train_conditions)
        texts = rows["text_ctx"].to_list()
        if not texts:
            continue
        t_ctx, t_base = lengths.mean(texts), lengths.mean(rows["text_base"].to_list())
        share = cfg.split[1] / (cfg.split[0] + cfg.split[1])
        other = len(texts) * (k - 1) / k
        n_train = min(cfg.crossfit_items[0], max(1, round(other * (1 - share))))
        n_dev = min(cfg.crossfit_items[1], max(1, round(other * share)))
        steps_rows, ran = _search_budget(one, n_train)
        out.append(Work("discover", "discover", k * steps_rows, t_ctx, f, cfg.discover_batch_size))
        out.append(Work("discover", "evaluate", k * n_dev * (ran + 1), t_ctx, f, cfg.batch_size))
        # each fold's items: intact and heads removed, with and without context; the null on up to null_items each
        out.append(Work("ablate", "ablate", 2 * len(texts), t_ctx, f, cfg.batch_size))
        out.append(Work("ablate", "ablate", 2 * len(texts), t_base, 1.0, cfg.batch_size))
        n_null = k * min(cfg.null_items, -(-len(texts) // k))
        out.append(Work("ablate", "null", n_null * (1 + cfg.crossfit_draws), t_ctx, 1.0, max(cfg.batch_size, 64)))
    return out


def head_types_work(cfg, prompts, relation: str, shape: Shape, lengths: Lengths) -> list[Work]:
    """The heads stage (entrainment.stages.head_types): the attention patterns on the repeated random tokens (eager
    attention), the entrainment readings on the scan's dev items, the OV circuits (FLOPs: W_U W_E once, then per
    head its d_head form and the copy-suppression subset's circuit, in float64 and float32), and the dissociation's
    multi-mask passes (test items and repeated tokens under 1 + 4 x (1 + head_types_draws) masks).

    Args:
        cfg: the Config (head_types_*, scan_items, null_items, ...).
        prompts: the prompts table.
        relation: the discovery relation the readings use.
        shape: the model's shape.
        lengths: token counter.
    Returns:
        Work items of the heads stage.
    """
    rows = _rows(prompts, relation=relation, condition=cfg.train_conditions)
    dev = _rows(rows, split="dev")["text_ctx"].to_list()
    test = _rows(rows, split="test")["text_ctx"].to_list()
    seq = 2 * cfg.head_types_len + 1
    n_scan = min(cfg.scan_items or len(dev), len(dev))
    d, dh, v, s = shape.hidden, shape.head_dim, shape.vocab, cfg.head_types_tokens
    heads = shape.n_total_heads
    ov = (
        2 * d * d * v * 2
        + heads * (2 * (dh * d * d + dh * dh * d) * 2 + 25 * dh**3)
        + heads * 2 * (2 * s * d * dh + s * s * dh)
    )  # float64 counted twice
    masks = 1 + 4 * (1 + cfg.head_types_draws)
    out = [
        Work("heads", "task", 1, 0),
        Work("heads", "evaluate", cfg.head_types_seqs, seq, 2.0, cfg.batch_size),  # eager attention
        Work("heads", "evaluate", 2 * n_scan, lengths.mean(dev) if dev else 1.0, 2.0, cfg.batch_size),
        Work("heads", "flops", ov, 0),
        Work("heads", "null", masks * cfg.head_types_seqs, seq, 1.0, 4),
    ]
    if test:
        out.append(
            Work(
                "heads",
                "null",
                masks * min(cfg.null_items, len(test)),
                lengths.mean(test),
                1.0,
                max(cfg.batch_size, 64),
            )
        )
    return out


def sentences_work(cfg, prompts, disc: list[str], lengths: Lengths) -> list[Work]:
    """The sentences stage (entrainment.stages.sentences): per relation about sentence_items items of each context
    condition and of self_cf, each scored as two sentences (its own and the control, or the counterfactual and the
    gold) in two arms; with each discovery relation's stable set removed, its items again under 1 + sentence_draws
    head sets. A sentence adds about 10 tokens to its prompt.

    Args:
        cfg: the Config (sentence_items, sentence_draws).
        prompts: the prompts table.
        disc: the discovery relations.
        lengths: token counter.
    Returns:
        Work items of the sentences stage.
    """
    present = set(prompts["condition"].unique().to_list())
    conds = [c for c in CONTEXT_CONDITIONS if c in present]
    out = [Work("sentences", "task", 1, 0)]
    for rel in sorted(prompts["relation"].unique().to_list()):
        r = _rows(prompts, relation=rel)
        texts = r["text_ctx"].to_list()
        if not texts:
            continue
        seqs = 2 * 2 * cfg.sentence_items * (len(conds) + 1)
        times = 1 + ((1 + cfg.sentence_draws) if rel in disc else 0)
        out.append(Work("sentences", "evaluate", seqs * times, lengths.mean(texts) + 10, 1.0, cfg.batch_size))
    return out
