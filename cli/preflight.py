"""Checks a command makes before any stage starts: every bad input fails here, in one line, before Prefect loads.

Each ``check_<command>`` takes the Config (and the --relations filter) and raises ``InputError``; none loads
model weights (models are resolved and their config/GGUF header read). It is longer than 300 lines because every
command's door checks are kept in this one place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from entrainment import stage_graph
from entrainment.config import Config
from entrainment.errors import InputError

MIN_FREE_MB = 64  # a full disk fails here, in one line, not halfway through a stage


def writable(out: Path) -> None:
    """--out must be a folder this process can create and write to, with some free space."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "--out", str(out), "is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(out, "--out", str(out), f"cannot create the output folder ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(out, "--out", str(out), "the output folder is not writable (read-only mount or permissions)")
    free_mb = shutil.disk_usage(out).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise InputError(
            out, "--out", str(out), f"only {free_mb:.1f} MB free on its disk; need at least {MIN_FREE_MB} MB"
        )


def models_ok(cfg: Config) -> list[str]:
    """Every model SPEC resolves and can be loaded (without loading weights), no two name the same model, and the
    device exists; returns their normalised specs."""
    from entrainment.model.loading import pick_device
    from entrainment.model.sources import preflight

    srcs = [preflight(m) for m in cfg.model_specs()]
    seen: dict[str, str] = {}
    for given, src in zip(cfg.model_specs(), srcs):
        if src.spec in seen:
            raise InputError("--models", "model", given, f"names the same model as {seen[src.spec]!r} ({src.spec})")
        seen[src.spec] = given
    pick_device(cfg.device)  # --device cuda without CUDA: one line here
    return [s.spec for s in srcs]


SPECIAL_TOKENS = 8  # at most this many tokens a tokenizer adds to a text (BOS, EOS, a SentencePiece prefix space)


def lengths_ok(
    cfg: Config,
    specs: list[str],
    only: tuple[str, ...] | None = None,
    columns: tuple[str, ...] = ("text_ctx", "text_base"),
) -> None:
    """No prompt of prompts.parquet (with its longer answer) is longer than a model's context window, in one line
    naming the item. A token is at least one byte, so only texts whose UTF-8 length could exceed the window are
    tokenised -- normally none, and then no tokenizer is loaded. (The stages check every prompt again as they
    tokenise it: ``tokens.Tokens.max_len``.)"""
    import polars as pl

    from entrainment.model.sources import context_length, resolve, tokenizer_folder
    from entrainment.store import tables

    df = tables.read_table(cfg.out, "prompts")
    if only:
        df = df.filter(pl.col("relation").is_in(list(only)))
    answer = pl.max_horizontal(pl.col("gold").str.len_bytes(), pl.col("distractor").str.len_bytes()) + 1
    for spec in specs:
        src = resolve(spec)
        limit = context_length(src)
        if limit is None:
            continue
        tok = None
        for col in (c for c in columns if c in df.columns):
            suspect = df.filter(pl.col(col).str.len_bytes() + answer + SPECIAL_TOKENS > limit)
            if suspect.is_empty():
                continue
            folder = tokenizer_folder(src)
            if folder is None:
                break  # no tokenizer on disk yet: the stage checks these prompts as it tokenises them
            if tok is None:
                try:
                    from transformers import AutoTokenizer

                    tok = AutoTokenizer.from_pretrained(str(folder))
                except Exception:  # noqa: BLE001 -- an odd tokenizer: left to the stage's own check
                    break
            for row in suspect.iter_rows(named=True):
                n = (
                    len(tok(row[col]).input_ids)
                    + (cfg.bos == "always")
                    + max(len(tok(" " + row[a], add_special_tokens=False).input_ids) for a in ("gold", "distractor"))
                )
                if n > limit:
                    raise InputError(
                        f"{cfg.out / 'prompts.parquet'} (prompt_id {row['prompt_id']}, relation {row['relation']!r})",
                        col,
                        row[col],
                        f"{n} tokens to score, more than the context window of {spec} ({limit} tokens); "
                        "shorten it or use a model with a longer context",
                    )


def relations_ok(cfg: Config):
    """Relation files (or the items file): known, well-formed, and enough for generation; returns the prompts the
    dataset stage will make (generation is cheap: every check it makes, e.g. passages, happens here)."""
    from entrainment.config import default
    from entrainment.stages import generate

    if cfg.items is not None:
        if cfg.relations != default("relations"):
            raise InputError(
                "--relations",
                "relations",
                ",".join(cfg.relations),
                "does not apply with --items (the items file names its relations; filter it instead)",
            )
        return generate.from_config(cfg)  # every check, splits included
    from entrainment.data.lre_prompts import check_relations
    from entrainment.data.relations import load_relations

    check_relations(load_relations(cfg.data_dir, cfg.relations), cfg.split)
    return generate.from_config(cfg)


def discovery_of(cfg: Config, present: list[str], only: tuple[str, ...] | None = None) -> list[str]:
    """The relations discover searches (as ``tasks.inputs.discover_relations``), refusing a named one that is not
    there: `only`, else --discover-relations; with own items and that option not given, every relation of them."""
    from entrainment.config import default

    wanted = only or cfg.discover_relations
    rels = [r for r in present if r in wanted]
    if cfg.items is not None and not only and not rels and cfg.discover_relations == default("discover_relations"):
        return list(present)
    missing = [r for r in wanted if r not in present]
    if missing:
        flag = "--relations" if only else "--discover-relations"
        raise InputError(
            flag,
            "relation",
            missing[0],
            f"not among the relations of the prompts (they are: {', '.join(sorted(present)[:20])})",
        )
    return rels


def search_data_ok(cfg: Config, df, rels: list[str], where: object) -> None:
    """Every searched relation has train and dev items of the training conditions (else discover would die)."""
    import polars as pl

    use = df.filter(pl.col("condition").is_in(list(cfg.train_conditions))).select("relation", "split").unique()
    have = set(use.iter_rows())  # one pass: linear in the rows, however many relations
    for r in rels:
        lacking = [s for s in ("train", "dev") if (r, s) not in have]
        if lacking:
            raise InputError(
                where,
                "relation",
                r,
                f"no {lacking[0]} items of the training conditions ({', '.join(cfg.train_conditions)}), so no mask "
                f"can be searched on it; give it {lacking[0]} items (a split column, or at least 3 queries) or "
                "search other relations (--discover-relations)",
            )


def crossfit_ok(cfg: Config, df, rels: list[str], where: object) -> None:
    """Every fold search of the cross-fitted verdict has train and dev items (else discover would die mid-run)."""
    from entrainment.stages import crossfit

    if "fold" not in df.columns:
        return
    gap = crossfit.fold_gap(df, rels, cfg)
    if gap:
        rel, fold, split = gap
        n = df.filter(df["relation"] == rel)["subject"].n_unique()
        raise InputError(
            where,
            "crossfit_folds",
            cfg.crossfit_folds,
            f"fold {fold} of {rel} ({n} query subjects) leaves no {split} items for its search: "
            "use fewer folds, more subjects, or crossfit_folds = 0 (off)",
        )


def means_ok(cfg: Config, df, rels: list[str], where: object) -> None:
    """Mean (and resample) ablation needs each relation's no-context train prompts as its reference."""
    import polars as pl

    have = set(df.filter(pl.col("split") == "train")["relation"].unique())
    for r in rels:
        if r not in have:
            raise InputError(
                where,
                "relation",
                r,
                f"no train items, so no mean-ablation reference (--ablation-method {cfg.ablation_method}); give it "
                "train items or use --ablation-method zero",
            )


def present(cfg: Config, only: tuple[str, ...] | None) -> None:
    """--relations of a stage that reads prompts.parquet must be in it."""
    from entrainment.store import tables

    have = set(tables.read_table(cfg.out, "prompts")["relation"].unique())
    for r in only or ():
        if r not in have:
            raise InputError(
                cfg.out / "prompts.parquet",
                "relation",
                r,
                f"not in prompts.parquet (it holds: {', '.join(sorted(have))}); run generate with it first",
            )


def _signature(path) -> tuple | None:
    """(size, mtime, inode) of a file, or None: equal before and after a read means the same file was read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def fresh(cfg: Config, *names: str) -> None:
    """The named input tables exist where required, are readable, are not stale, and hold the rows their stage
    wrote (a table edited by hand, even with its metadata kept, is refused before any stage computes on it)."""
    from entrainment.store import tables
    from entrainment.store.provenance import require_fresh

    for name in names:
        path = cfg.out / f"{name}.parquet"
        before = _signature(path)
        df = tables.read_table(cfg.out, name)
        require_fresh(cfg.out, name)
        same = before is not None and _signature(path) == before  # not replaced meanwhile (a concurrent stage)
        tables.check_unedited(cfg.out, name, df if same else None)  # the rows just read, else read again


def check_generate(cfg: Config, only: tuple[str, ...] | None = None) -> None:
    relations_ok(cfg)


def check_measure(cfg: Config, only: tuple[str, ...] | None = None) -> None:
    from entrainment.heads.masks import parse_ablation
    from entrainment.model.sources import dims, resolve
    from entrainment.store import tables

    fresh(cfg, "prompts")
    present(cfg, only)
    if cfg.ablation_heads and cfg.ablation_method != "zero":
        df = tables.read_table(cfg.out, "prompts")
        means_ok(
            cfg, df, sorted(r for r in df["relation"].unique() if not only or r in only), cfg.out / "prompts.parquet"
        )
    specs = models_ok(cfg)
    lengths_ok(cfg, specs, only)
    for spec in specs:
        shape = dims(resolve(spec))
        for hs in parse_ablation(cfg.ablation_heads, spec):
            if shape:
                hs.mask(*shape)  # heads outside the model: one line, before any stage starts


def check_stats(cfg: Config, only: tuple[str, ...] | None = None) -> None:
    fresh(cfg, "measurements", "prompts")  # never test measurements of other prompts


def check_discover(cfg: Config, only: tuple[str, ...] | None = None) -> None:
    from entrainment.store import tables

    fresh(cfg, "prompts")
    df = tables.read_table(cfg.out, "prompts")
    rels = discovery_of(cfg, sorted(df["relation"].unique()), only)
    search_data_ok(cfg, df, rels, cfg.out / "prompts.parquet")
    crossfit_ok(cfg, df, rels, cfg.out / "prompts.parquet")
    lengths_ok(cfg, models_ok(cfg), tuple(rels))


def check_scan(cfg: Config, only: tuple[str, ...] | None = None) -> None:
    fresh(cfg, "prompts")
    if (cfg.out / "heads.parquet").exists():
        fresh(cfg, "heads")
    lengths_ok(cfg, models_ok(cfg), only or cfg.discover_relations)
    present(cfg, only or cfg.discover_relations)


def check_ablate(cfg: Config, only: tuple[str, ...] | None = None) -> None:
    from entrainment.store import tables

    fresh(cfg, "prompts", "heads")
    heads = tables.read_table(cfg.out, "heads")
    specs = models_ok(cfg)
    lengths_ok(cfg, specs, columns=("text_ctx", "text_base", "text_prompted"))
    for spec in specs:
        if heads.filter(tables.pl.col("model") == spec).is_empty():
            raise InputError(cfg.out / "heads.parquet", "model", spec, "no mask for this model (run discover first)")


def check_heads(cfg: Config, only: tuple[str, ...] | None = None) -> None:
    from entrainment.store import tables

    fresh(cfg, "prompts", "heads")
    for name in ("head_scores", "head_stability"):  # read when present: never stale
        if (cfg.out / f"{name}.parquet").exists():
            fresh(cfg, name)
    heads = tables.read_table(cfg.out, "heads")
    specs = models_ok(cfg)
    lengths_ok(cfg, specs)
    for spec in specs:
        if heads.filter(tables.pl.col("model") == spec).is_empty():
            raise InputError(cfg.out / "heads.parquet", "model", spec, "no mask for this model (run discover first)")


def check_report(cfg: Config, only: tuple[str, ...] | None = None) -> None:
    fresh(cfg, "prompts")
    from entrainment.store import tables

    for name in stage_graph.reads("report"):  # the report shows every table: none may be stale or edited by hand
        if (cfg.out / f"{name}.parquet").exists():
            fresh(cfg, name)
    specs = models_ok(cfg)
    for name in ("measurements", "heads"):  # --model of another run: say so, not "run the stage first"
        if (cfg.out / f"{name}.parquet").exists():
            have = sorted(tables.read_table(cfg.out, name)["model"].unique())
            for spec in specs:
                if have and spec not in have:
                    raise InputError(
                        cfg.out / f"{name}.parquet",
                        "model",
                        spec,
                        f"no rows of this model (the table holds: {', '.join(have)}); pass --model "
                        "with one of those, or measure this model first",
                    )


def check_run(cfg: Config, only: tuple[str, ...] | None = None) -> None:
    df = relations_ok(cfg)
    if cfg.items is None:
        missing = [r for r in cfg.discover_relations if r not in cfg.relations]
        if missing:
            raise InputError("--discover-relations", "relation", missing[0], "must be one of --relations")
    where = cfg.items or cfg.data_dir
    rels = discovery_of(cfg, sorted(df["relation"].unique()))
    search_data_ok(cfg, df, rels, where)
    crossfit_ok(cfg, df, rels, where)
    if set(cfg.methods()) - {"zero"}:
        means_ok(cfg, df, rels, where)  # the masks' references (ablate, scan)
    models_ok(cfg)


def check_sentences(cfg: Config, only: tuple[str, ...] | None = None) -> None:
    fresh(cfg, "prompts")
    if (cfg.out / "heads.parquet").exists():
        fresh(cfg, "heads")
    lengths_ok(cfg, models_ok(cfg))


CHECKS = {
    "generate": check_generate,
    "measure": check_measure,
    "stats": check_stats,
    "discover": check_discover,
    "scan": check_scan,
    "ablate": check_ablate,
    "heads": check_heads,
    "sentences": check_sentences,
    "report": check_report,
    "run": check_run,
}
