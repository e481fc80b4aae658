"""The Python API for notebooks: ``import entrainment as en``.

    model = en.load_model("smollm2-135m")                      # loaded once, reused by every call
    p = en.prompts(relations=["country capital city"], max_pairs=20)
    m = en.measure(model, p)                                   # measurements.parquet's frame
    s = en.stats(m, p).stats                                   # stats.parquet's frame (and .contrasts)
    h = en.discover(model, p, seeds=[0], epochs=4).heads       # heads.parquet's frame (and the other tables)
    a = en.ablate(model, p, [(10, 3)])                         # ablation.parquet's frame for these heads
    r = en.results("results"); r.stats; r.sql("select ...")   # an output folder, read-only

Every function returns polars frames with the schemas of ``entrainment.store.schema`` and computes them with the same
library functions the pipeline's tasks call, so for the same inputs and options the result equals the table the
CLI writes. Options are ``entrainment.config.Config`` fields (``epochs=4``, ``ablation_method="mean"``, ...),
validated the same way. Nothing here imports Prefect. The names in ``__all__`` are the stable surface.

It is longer than 300 lines on purpose: the whole public surface is kept in this one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from entrainment import api_checks
from entrainment.errors import InputError

__all__ = [
    "Model",
    "Frames",
    "Results",
    "load_model",
    "prompts",
    "measure",
    "top_tokens",
    "stats",
    "discover",
    "scan",
    "ablate",
    "head_types",
    "sentences",
    "model_facts",
    "scaling",
    "results",
]

HeadsLike = Any  # None | [(layer, head), ...] | a heads frame | "3.4,10.7" | a heads.parquet path


@dataclass
class Model:
    """A loaded model with its --bos convention (``load_model``)."""

    loaded: Any
    bos: str = "auto"

    @property
    def spec(self) -> str:
        return self.loaded.info.spec

    @property
    def n_layers(self) -> int:
        return self.loaded.info.n_layers

    @property
    def n_heads(self) -> int:
        return self.loaded.info.n_heads

    def __repr__(self) -> str:
        i = self.loaded.info
        return (
            f"Model({i.spec!r}: {i.n_layers} layers x {i.n_heads} heads, {i.n_params / 1e6:.0f}M params, "
            f"{i.device}, {i.dtype})"
        )


class Frames(dict):
    """Several tables of one stage: ``frames.stats`` or ``frames["stats"]``."""

    def __getattr__(self, name: str) -> pl.DataFrame:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no table {name!r} here (have: {', '.join(self)})") from None


# Options that change a table on the command line but are given another way here: refused, never ignored.
ELSEWHERE = {"ablation_heads": "en.measure takes the heads to remove as heads=[(layer, head), ...] (or a heads frame)"}


def _config(_model: Model | None = None, **options: Any):
    """A Config from keyword options (lists become tuples); a Model fixes model and bos."""
    from entrainment.config import make

    for name, how in ELSEWHERE.items():
        if options.get(name) is not None:
            raise InputError("the Python API", name, str(options[name]), f"not an option here: {how}")
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items() if v is not None}
    if _model is not None:
        given.setdefault("model", _model.spec)
        given.setdefault("bos", _model.bos)
    return make("en", **given)


def load_model(spec: str = "smollm2-135m", device: str = "auto", dtype: str = "auto", bos: str = "auto") -> Model:
    """Load a model (once per process; a second call with the same arguments returns the loaded one).

    Args:
        spec: smollm2-135m | gemma3-270m | qwen2.5-coder-0.5b | qwen2.5-coder-1.5b | a Hugging Face id | a local
            folder | a .gguf file.
        device: auto | cpu | cuda | cuda:N | mps.
        dtype: auto (bfloat16 on CUDA, else float32) | float32 | bfloat16 | float16.
        bos: auto | always | never: the BOS convention of every prompt this model scores.
    Returns:
        The Model.
    """
    from entrainment.model import loading

    cfg = _config(model=spec, device=device, dtype=dtype, bos=bos)
    return Model(loading.load(cfg.model, cfg.device, cfg.dtype), cfg.bos)


def prompts(
    relations: Iterable[str] | None = None,
    max_pairs: int | None = None,
    seed: int | None = None,
    items: str | Path | None = None,
    **options: Any,
) -> pl.DataFrame:
    """The prompt table (prompts.parquet's schema) for LRE relations or your own items file.

    Args:
        relations: LRE relation names (default: the pipeline's four).
        max_pairs: items per relation and condition.
        seed: the sampling seed.
        items: a JSONL / CSV / Parquet file of your own items instead (docs/own-items.md).
        **options: other generate options (discover_relations, search_pairs, template_holdout, n_passages, ...).
    Returns:
        The prompts frame.
    """
    from entrainment.stages import generate

    cfg = _config(
        relations=list(relations) if relations is not None else None,
        max_pairs=max_pairs,
        seed=seed,
        items=str(items) if items is not None else None,
        **options,
    )
    return generate.from_config(cfg)


def _head_sets(heads: HeadsLike, model: Model) -> list:
    """HeadSets from any accepted form (see HeadsLike)."""
    from entrainment.heads import masks

    if heads is None:
        return []
    if isinstance(heads, pl.DataFrame):
        return [m.head_set for m in masks.learned_masks(heads, model.spec)]
    if isinstance(heads, (str, Path)):
        return masks.parse_ablation(str(heads), model.spec)
    pairs = api_checks.head_pairs(heads)  # (0, 1) alone or float heads: one line, never truncated
    return [masks.parse_head_list(",".join(f"{a}.{b}" for a, b in pairs))]


def _mean(model: Model, prompt_rows: pl.DataFrame, relations, batch_size: int):
    from entrainment.model import means
    from entrainment.model.tokens import Tokens

    rels = [relations] if isinstance(relations, str) else sorted(relations)
    rows = prompt_rows.filter(pl.col("relation").is_in(rels))
    api_checks.has_train(prompt_rows, rels, "a mean-ablation reference (or use ablation_method='zero')")
    mu, _ = means.head_means(
        model.loaded, means.reference_prompts(rows, Tokens(model.loaded.tokenizer, model.bos)), batch_size
    )
    return mu


def measure(model: Model, prompts: pl.DataFrame, heads: HeadsLike = None, **options: Any) -> pl.DataFrame:
    """measurements.parquet's frame: every prompt scored with and without context, the intact model and (with
    `heads`) with those heads removed.

    Args:
        model: from load_model.
        prompts: a prompts frame.
        heads: heads to remove: [(layer, head), ...], a heads frame (every mask in it), "3.4,10.7" or a heads.parquet.
        **options: ablation_method (zero | mean | resample), batch_size, seed.
    Returns:
        The measurements frame (intact rows, then one block per head set).
    """
    from entrainment.model.tokens import Tokens
    from entrainment.stages.measure import CHUNK, measure_frame

    api_checks.model(model)
    api_checks.frame(prompts, "prompts")
    cfg = _config(model, **options)
    sets = [None] + _head_sets(heads, model)
    frames = []
    for hs in sets:
        method = cfg.ablation_method if hs is not None else "zero"
        for relation in sorted(prompts["relation"].unique()):
            rows = prompts.filter(pl.col("relation") == relation)
            mean = _mean(model, prompts, relation, cfg.batch_size) if hs is not None and method != "zero" else None
            tk = Tokens(model.loaded.tokenizer, model.bos)
            for lo in range(0, len(rows), CHUNK):  # the chunks the pipeline's resumable parts use
                frames.append(
                    measure_frame(
                        model.loaded,
                        rows.slice(lo, CHUNK),
                        hs,
                        cfg.batch_size,
                        tokens=tk,
                        method=method,
                        mean=mean,
                        seed=cfg.seed,
                    )
                )
    return pl.concat(frames).sort("model", "ablation", "relation", "prompt_id")


def top_tokens(model: Model, row: dict, k: int = 10) -> dict:
    """The paper's Figure 1 for one prompt row: the top-k next tokens with and without its context.

    Args:
        model: from load_model.
        row: one prompts row (a dict, e.g. ``prompts.row(0, named=True)``).
        k: how many tokens.
    Returns:
        {"ctx": [(token, prob), ...], "base": [...], "p_gold": {"ctx", "base"}, "p_distractor": {...}, and the row's
        text_ctx, text_base, gold, distractor}.
    """
    from entrainment.model.scoring import top_tokens
    from entrainment.model.tokens import Tokens

    api_checks.model(model)
    return top_tokens(model.loaded, api_checks.prompt_row(row), Tokens(model.loaded.tokenizer, model.bos), k)


def stats(measurements: pl.DataFrame, prompts: pl.DataFrame, confidence: float = 0.95) -> Frames:
    """stats.parquet and contrasts.parquet's frames: paired t-tests per condition, condition contrasts.

    Args:
        measurements: from measure.
        prompts: the prompts those rows measured.
        confidence: the CI level.
    Returns:
        Frames(stats=..., contrasts=...).
    """
    from entrainment.stages.stats import compute_frames

    api_checks.same_prompts(measurements, prompts)  # as the CLI refuses stale measurements
    s, c = compute_frames(measurements, prompts, confidence)
    return Frames(stats=s, contrasts=c)


def _relations(cfg, prompts: pl.DataFrame, options: dict) -> list[str]:
    """The discovery relations present in the prompts; without a `discover_relations` option and none of the
    default ones present (own items, other LRE relations), every relation present (discovery_relations,
    the rule the CLI's tasks use)."""
    from entrainment.stages.discover import discovery_relations

    every = "discover_relations" not in options
    return discovery_relations(
        prompts["relation"].unique(), cfg.discover_relations, every, "prompts", "discover_relations"
    )


def discover(model: Model, prompts: pl.DataFrame, **options: Any) -> Frames:
    """The mask searches (every seed x resample) and their tables.

    Args:
        model: from load_model.
        prompts: a prompts frame holding the relations' train and dev items.
        **options: discover_relations (the relations searched; default: the
            pipeline's discovery relations that are present, else every relation present), seeds,
            search_resamples, search_resampling, searches_per_pass, epochs, max_steps, converge_steps,
            selection_rule, lr, warmup_steps, lam, tau, init, ablation_method, stability_threshold,
            train_conditions, ...
    Returns:
        Frames(heads, discovery, discovery_masks, head_overlap, head_disagreement, head_stability).
    """
    from entrainment.heads import masks
    from entrainment.stages.discover import fold_jobs, many_searches, search_jobs, search_passes, tables

    api_checks.model(model)
    api_checks.frame(prompts, "prompts")
    cfg = _config(model, **options)
    rels = _relations(cfg, prompts, options)
    api_checks.has_train(prompts, rels, "the mask search")
    found, means = [], {}
    device = model.loaded.info.device
    for rel, pairs in search_passes(cfg, search_jobs(cfg, rels), device):  # the discover stage's jobs and passes
        source = masks.source_relations(cfg, rel)
        rows = prompts.filter(pl.col("relation").is_in([source] if isinstance(source, str) else list(source)))
        if cfg.ablation_method != "zero" and rel not in means:
            means[rel] = _mean(model, prompts, source, cfg.batch_size)
        found += many_searches(model.loaded, rows, rel, list(pairs), cfg, means.get(rel))
    t = tables(found, cfg)
    if "fold" in prompts.columns:  # the cross-fitted verdict's per-fold searches, the discover flow's fold jobs
        from entrainment.stages import crossfit

        folds = [
            crossfit.fold_search(model.loaded, prompts.filter(pl.col("relation") == rel), rel, f, cfg, means.get(rel))
            for rel, f in fold_jobs(cfg, rels)
        ]
        t["heads"] = crossfit.with_fold_heads(t["heads"], [s.heads for s in folds])
    return Frames({k: v for k, v in t.items() if k != "timings"})


def scan(
    model: Model,
    prompts: pl.DataFrame,
    heads: pl.DataFrame | None = None,
    **options: Any,
) -> Frames:
    """Head-importance maps (single-head scan with bootstrap CIs, AtP) under every method, their agreement with the
    learned mask (k-curves, faithfulness) and between methods.

    Args:
        model: from load_model.
        prompts: a prompts frame with the relations' dev and test items.
        heads: a heads frame (from discover) whose first seed's mask is compared; None = no mask.
        **options: discover_relations (the relations scanned), ablation_method, compare_methods,
            scan_items, scan_k, null_items, random_draws, ...
    Returns:
        Frames(head_scores, head_agreement, method_agreement).
    """
    from entrainment.stages.scan import agreement_rows, jobs, method_table, score_heads

    api_checks.model(model)
    api_checks.frame(prompts, "prompts")
    api_checks.heads_frame(heads)
    cfg = _config(model, **options)
    scores, agree = [], []
    for rel, method in jobs(cfg, _relations(cfg, prompts, options)):  # the scan flow's jobs, one by one
        rows = prompts.filter(pl.col("relation") == rel)
        mean = _mean(model, prompts, rel, cfg.batch_size) if method != "zero" else None
        s, _, _ = score_heads(model.loaded, rows, rel, method, cfg, mean)
        scores.append(s)
        agree.append(agreement_rows(model.loaded, rows, rel, method, s, heads, cfg, mean))
    sc = pl.concat(scores).sort("model", "relation", "ablation_method", "method", "layer", "head")
    return Frames(
        head_scores=sc,
        head_agreement=pl.concat(agree).sort("model", "relation", "ablation_method", "method", "k"),
        method_agreement=method_table(sc),
    )


def head_types(
    model: Model,
    prompts: pl.DataFrame | None = None,
    heads: pl.DataFrame | None = None,
    head_scores: pl.DataFrame | None = None,
    head_stability: pl.DataFrame | None = None,
    **options: Any,
) -> Frames:
    """What the heads are: previous-token, duplicate-token, induction, OV copying and copy-suppression scores of
    every head, its attention to the distractor and its direct logit attribution for it; their agreement with
    entrainment importance and the induction/entrainment dissociation (docs/head-types.md).

    Args:
        model: from load_model.
        prompts: a prompts frame with the discovery relation's dev and test items (None: no entrainment readings).
        heads: a heads frame (from discover): its stable set (else first mask) is the dissociation's entrainment set.
        head_scores: scan's head_scores frame (agreement with the scan and AtP); head_stability: discover's
            head_stability frame (agreement with the inclusion frequency).
        **options: discover_relations, head_types_k, head_types_seqs, head_types_len, head_types_tokens,
            head_types_draws, scan_items, null_items, seed, ...
    Returns:
        Frames(head_types, head_type_agreement).
    """
    from entrainment.stages.head_types import compute

    api_checks.model(model)
    if prompts is not None:
        api_checks.frame(prompts, "prompts")
    api_checks.heads_frame(heads)
    cfg = _config(model, **options)
    rel = _relations(cfg, prompts, options)[0] if prompts is not None else None
    rows = prompts.filter(pl.col("relation") == rel) if prompts is not None else None
    types, agree = compute(model.loaded, rows, rel, cfg, heads, head_scores, head_stability)
    return Frames(head_types=types, head_type_agreement=agree)


def model_facts(*models: Model) -> pl.DataFrame:
    """models.parquet's frame: one row per model (parameters, non-embedding parameters, heads, dtype, identity).

    Args:
        *models: from load_model.
    Returns:
        The models frame.
    """
    from entrainment.model import loading

    for m in models:
        api_checks.model(m)
    return pl.DataFrame([loading.facts(m.loaded) for m in models])


def scaling(
    stats: pl.DataFrame,
    models: pl.DataFrame,
    sentence_stats: pl.DataFrame | None = None,
    confidence: float = 0.95,
) -> Frames:
    """The power-law fits across models: scaling.parquet's frame from stats (token level) and, with
    `sentence_stats`, sentence_scaling.parquet's (Δ_self, Δ_net, gap); None where fewer than 3 models are measured.

    Args:
        stats: stats frames of the models concatenated (from stats).
        models: model_facts of the same models.
        sentence_stats: sentence_stats frames of the models concatenated (from sentences), optional.
        confidence: the CI level of the exponent.
    Returns:
        Frames(scaling=..., sentence_scaling=...), each a frame or None.
    """
    from entrainment.statistics import scaling as fits
    from entrainment.store.schema import MODELS, SENTENCE_STATS, STATS

    need = ("model", "relation", "ablation", "condition", "target", "metric", "mean_diff", "mean_base")
    api_checks.frame(stats, "stats", STATS, need)
    api_checks.frame(models, "models", MODELS, ("model", "n_params", "n_params_non_embedding"))
    if sentence_stats is not None:
        need = ("model", "relation", "ablation", "condition", "measure", "mean")
        api_checks.frame(sentence_stats, "sentence_stats", SENTENCE_STATS, need)
    return Frames(
        scaling=fits.tables_for(stats, models, confidence),
        sentence_scaling=(
            fits.sentence_tables_for(sentence_stats, models, confidence) if sentence_stats is not None else None
        ),
    )


def sentences(model: Model, prompts: pl.DataFrame, heads: pl.DataFrame | None = None, **options: Any) -> Frames:
    """Sentence-level entrainment: whole sentences scored teacher-forced with their context present vs absent
    (Δ_self, Δ_net = Δ_self − Δ_control, the counterfactual-vs-gold gap), subject-level CIs, and with each stable set
    of `heads` removed against random head sets of its size (docs/sentences.md).

    Args:
        model: from load_model.
        prompts: a prompts frame (prompts.parquet's schema).
        heads: a heads frame (from discover): its stable sets are removed; None = no heads part.
        **options: sentence_items, sentence_absent (drop | neutral), sentence_draws, seed, batch_size, confidence,
            discover_relations (whose train subjects are left out), data_dir, ...
    Returns:
        Frames(sentence_scores, sentence_stats).
    """
    from entrainment.stages.sentences import run

    api_checks.model(model)
    api_checks.frame(prompts, "prompts")
    api_checks.heads_frame(heads)
    res = run(model.loaded, prompts, _config(model, **options), heads)
    return Frames(sentence_scores=res.scores, sentence_stats=res.stats)


def ablate(
    model: Model, prompts: pl.DataFrame, heads: HeadsLike, relation: str | None = None, **options: Any
) -> Frames:
    """Evaluate head sets on every relation's test split: ablated vs original, random heads, no context, the
    prompting baseline, every compared method on the own relation; the null; side effects.

    Args:
        model: from load_model.
        prompts: a prompts frame (its test split is evaluated; train/dev give the seen templates).
        heads: a heads frame (every mask in it, labelled as in heads.parquet) or [(layer, head), ...].
        relation: the relation a plain head list belongs to (default: the first discovery relation present).
        **options: ablation_method, compare_methods, random_draws, null_draws, null_items, seed, side_effects=False
            to skip the side effects.
    Returns:
        Frames(ablation, null_draws, side_effects, subject_gains, verdict): the verdict of each mask with the query
        subject as the unit (docs/verdict.md; the cross-fitted verdict needs the pipeline's per-fold masks).
    """
    from entrainment.heads import masks
    from entrainment.heads.masks import source_relations
    from entrainment.paths import ICL_DIR
    from entrainment.stages import crossfit
    from entrainment.stages.ablate import evaluate_relation, plan, side_effect_rows, tables

    with_side = options.pop("side_effects", True)
    api_checks.model(model)
    api_checks.frame(prompts, "prompts")
    api_checks.relation(relation, prompts)
    cfg = _config(model, **options)
    if isinstance(heads, pl.DataFrame):  # every mask in it; per-fold masks give the cross-fitted verdict
        found = masks.learned_masks(heads, model.spec)
    else:
        hs = _head_sets(heads, model)[0]
        rel = relation or _relations(cfg, prompts, options)[0]
        found = [masks.LearnedMask(model.spec, rel, 0, None, masks.HeadSet(hs.id, hs.heads, hs.label))]
    p = plan(found, prompts["relation"].unique().to_list())  # the jobs the ablate flow runs, here one by one
    methods = cfg.methods() if cfg.compare_everywhere else (cfg.ablation_method,)
    means = {  # the mean-ablation reference of each mask relation, computed once
        r: _mean(model, prompts, source_relations(cfg, r), cfg.batch_size)
        for r in {*p.sets, *(r for r, _ in p.fits)}
        if set(cfg.methods()) - {"zero"}
    }
    done = {}
    for mrel, sets, rel in p.evals:
        done[(mrel, sets, rel)] = evaluate_relation(model.loaded, prompts, mrel, list(sets), rel, cfg, means.get(mrel))
    side = {}
    side_mean = any(m != "zero" for m in methods)  # as the side-effects task decides
    for mrel, sets in p.sides if with_side else []:
        side[(mrel, sets)] = side_effect_rows(
            model.loaded, mrel, list(sets), cfg, ICL_DIR, means.get(mrel) if side_mean else None
        )
    fits = [
        crossfit.evaluate(
            model.loaded, prompts, rel, list(folds), cfg, means.get(rel) if cfg.ablation_method != "zero" else None
        )
        for rel, folds in p.fits
    ]
    ev, sd = p.labelled()
    evals = [(m, *done[key][p.sets[m.relation].index(m.head_set.heads)]) for m, _, key in ev]
    if with_side:
        sides = [(m, side[key][p.sets[m.relation].index(m.head_set.heads)]) for m, key in sd]
    else:  # no side effects asked for: an empty table of the right schema
        from entrainment.store.schema import SIDE_EFFECTS

        sides = [(p.masks[0], pl.DataFrame(schema=SIDE_EFFECTS.polars_schema()))]
    return Frames(tables(evals, sides, cfg, fits))


def _warner(depth: int):
    """A stale or hand-edited table under Results.sql / connect: served, with a Python warning naming it, pointed
    at the caller's line (`depth` frames above the warning call)."""
    import warnings

    return lambda line: warnings.warn(line, UserWarning, stacklevel=depth)


@dataclass
class Results:
    """An output folder: every table as a frame (read lazily, validated, refused when stale the way the CLI does)
    and read-only SQL over them (``sql``, ``connect``)."""

    out: Path
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def tables(self) -> list[str]:
        """The tables present in the folder."""
        from entrainment.store.schema import TABLES

        return [n for n, t in TABLES.items() if (Path(self.out) / t.file).exists()]

    def __getitem__(self, name: str) -> pl.DataFrame:
        from entrainment.store import tables
        from entrainment.store.provenance import require_fresh
        from entrainment.store.schema import TABLES

        if name not in TABLES:
            raise InputError(self.out, "table", name, f"unknown table (known: {', '.join(TABLES)})")
        path = Path(self.out) / TABLES[name].file
        try:  # a table deleted or rewritten since it was read is never served from memory
            st = path.stat()
            sig = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            self._cache.pop(name, None)
            sig = None
        if name not in self._cache or self._cache[name][0] != sig:
            df = tables.read_table(self.out, name)
            require_fresh(self.out, name)
            try:
                st = path.stat()
                same = sig == (st.st_size, st.st_mtime_ns, st.st_ino)  # the file just read, not a replacement
            except OSError:
                same = False
            tables.check_unedited(self.out, name, df if same else None)  # rows cut or changed by hand
            self._cache[name] = (sig, df)
        return self._cache[name][1]

    def __getattr__(self, name: str) -> pl.DataFrame:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def sql(self, query: str) -> pl.DataFrame:
        """Run one read-only SELECT over the folder's views (as `entrainment sql`)."""
        from entrainment.store import sql

        return sql.query(Path(self.out), query, warn=_warner(5))  # user > sql > query > connect > warn

    def connect(self):
        """A read-only DuckDB connection with one view per table (as `entrainment sql` has)."""
        from entrainment.store.sql import connect

        return connect(Path(self.out), warn=_warner(4))  # user > connect > store.sql.connect > warn

    def __repr__(self) -> str:
        return f"Results({str(self.out)!r}: {', '.join(self.tables) or 'no tables'})"


def results(out: str | Path = "results") -> Results:
    """An output folder of the pipeline (default `results`).

    Args:
        out: the folder.
    Returns:
        Results: ``r.stats`` / ``r["stats"]`` read a table (a stale one is refused with the CLI's one-line message),
        ``r.sql("select ...")`` queries, ``r.tables`` lists what is there.
    """
    from entrainment.config import resolved
    from entrainment.errors import InputError

    try:
        out = resolved(Path(out))
    except ValueError as e:
        raise InputError(out, "out", str(out), str(e)) from None
    if not out.is_dir():
        raise InputError(out, "out", str(out), "not a folder")
    return Results(out)
