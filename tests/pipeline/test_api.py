"""The Python API returns the pipeline's tables: every function's frame equals the Parquet table the CLI writes for
the same tiny inputs and options; `en.results` reads a folder the way the CLI does; no Prefect on this path."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import entrainment as en
from entrainment.errors import InputError
from entrainment.store import tables
from tests import tiny
from tests.helpers import cli, run_watched

OPTIONS = dict(
    relations=["toy capital", "toy color"],
    discover_relations=["toy capital", "toy color"],
    max_pairs=4,
    search_pairs=[3, 2, 3],
    passage_items=2,
    seeds=[3],
    search_resamples=3,
    epochs=3,
    discover_batch_size=4,
    random_draws=3,
    null_draws=4,
    null_items=4,
    scan_items=3,
    scan_k=2,
    compare_methods=["zero", "mean", "resample"],
    shared_mask=True,  # the option the API once ignored: its mask must reach every table on both paths
    lam=0.0,  # no sparsity pull and logits near 0: the tiny random model's searches remove heads,
    init=0.5,  # so the null, side-effect and k-curve tables have rows to compare
    # every other field a stage reads, off its default (test_every_output_option_goes_through_both_paths):
    seed=2,  # the data sampling seed under which this random model's searches keep heads (non-empty nulls)
    split=[0.6, 0.2, 0.2],
    train_conditions=["related", "counterfactual"],
    template_holdout=False,
    n_passages=2,
    passage_distractor="related",
    prompt_instruction="Answer from memory.",
    crossfit_folds=2,
    crossfit_items=[3, 2],
    crossfit_draws=3,
    ablation_method="mean",
    bos="always",
    confidence=0.9,
    max_steps=5,
    converge_steps=3,
    search_resampling="bootstrap",
    searches_per_pass=3,  # the searches in batched passes (one pass of three per mask) on both paths
    lr=0.5,
    warmup_steps=2,
    tau=0.7,
    weight_decay=0.01,
    stability_threshold=0.6,
    compare_everywhere=True,
    side_random_draws=2,
    side_items=3,
    side_relations=1,
    side_icl_items=2,
    head_types_k=3,
    head_types_seqs=2,
    head_types_len=20,
    head_types_tokens=200,
    head_types_draws=2,
    sentence_items=3,
    sentence_absent="neutral",
    sentence_draws=2,
)
# Fields a stage reads that this test leaves at their defaults, and why no second path could differ on them.
NOT_VARIED = {
    "model": "an argument on both paths (--model, en.load_model), the same tiny model here",
    "device": "where it runs; the suite has no GPU",
    "dtype": "numerics of the machine: the tiny model runs float32 on both paths",
    "search_dtype": "bfloat16 search only where the CPU has bf16 (tests/heads cover the choice)",
    "batch_size": "padding only: batched equals one-at-a-time scoring is tested in tests/model",
    "ablation_heads": "the CLI's way to name heads; the API takes heads= and refuses this option (tests/test_house.py)",
    "items": "an own-items file instead of LRE: tests/data/test_items.py::test_own_items_run_through_every_stage "
    "compares both paths",
    "smoke": "the report's smoke banner: the API writes no report",
}


def _toml(opts: dict) -> str:
    def value(v):
        if isinstance(v, list):
            return "[" + ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in v) + "]"
        return f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)

    return "".join(f"{k} = {value(v)}\n" for k, v in opts.items())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from tests.toy_data import toy_lre

    d = tmp_path_factory.mktemp("api")
    lre = toy_lre(d / "lre")
    model = tiny.save("llama", d / "model")
    (d / "c.toml").write_text(_toml(OPTIONS))
    out = d / "out"
    r = cli("run", "--out", str(out), "--model", model, "--data-dir", str(lre), "--config", str(d / "c.toml"))
    assert r.returncode == 0, r.stderr[-3000:]
    return d, lre, model, out


def _same(api: pl.DataFrame, out, name: str) -> None:
    table = tables.read_table(out, name)
    assert len(table) > 0, name
    assert_frame_equal(api.select(table.columns), table, check_exact=False, abs_tol=1e-6, check_dtypes=False)


@pytest.fixture(scope="module")
def api_frames(project):
    d, lre, model, out = project
    opts = dict(OPTIONS, data_dir=str(lre))
    m = en.load_model(model, bos=opts.pop("bos"))
    p = en.prompts(**opts)
    meas = en.measure(m, p, **opts)
    s = en.stats(meas, p, confidence=opts["confidence"])  # its one option (the sentences stage reads it too)
    disc = en.discover(m, p, **opts)
    sc = en.scan(m, p, heads=disc.heads, **opts)
    ab = en.ablate(m, p, disc.heads, **opts)
    se = en.sentences(m, p, disc.heads, **opts)
    ht = en.head_types(m, p, disc.heads, sc.head_scores, disc.head_stability, **opts)
    frames = {"prompts": p, "measurements": meas, "stats": s.stats, "contrasts": s.contrasts}
    return {**frames, **disc, **sc, **ab, **se, **ht}


@pytest.mark.parametrize(
    "name",
    [
        "prompts",
        "measurements",
        "stats",
        "contrasts",
        "heads",
        "discovery",
        "discovery_masks",
        "head_overlap",
        "head_disagreement",
        "head_stability",
        "head_scores",
        "head_agreement",
        "method_agreement",
        "ablation",
        "null_draws",
        "side_effects",
        "subject_gains",
        "verdict",
        "sentence_scores",
        "sentence_stats",
        "head_types",
        "head_type_agreement",
    ],
)
def test_each_api_frame_equals_the_cli_table(project, api_frames, name):
    _same(api_frames[name], project[3], name)


SHARED_OPTIONS = dict(
    relations=["toy capital", "toy color"],
    discover_relations=["toy capital", "toy color"],
    shared_mask=True,
    max_pairs=4,
    search_pairs=[3, 2, 3],
    passage_items=0,
    seeds=[0, 1],  # two full-split searches: head_disagreement's optimiser part on both paths
    search_resamples=1,
    epochs=2,
    discover_batch_size=4,
    crossfit_folds=0,
    lam=0.0,
    init=0.5,
    selection_rule="within_5pct",  # off its default here: in OPTIONS it would pick epoch 0, no heads, empty nulls
)


def test_the_api_and_the_cli_give_the_same_discovery_tables_shared_mask_included(tmp_path):
    """en.discover(..., shared_mask=True) runs the discover stage's jobs (discover.search_jobs): the shared mask's
    rows are there and every discovery table equals the CLI's for the same config."""
    from polars.testing import assert_frame_equal

    import entrainment as en
    from entrainment.heads.masks import SHARED
    from entrainment.store import tables
    from tests import tiny
    from tests.helpers import cli
    from tests.toy_data import toy_lre

    lre = toy_lre(tmp_path / "lre")
    model = tiny.save("llama", tmp_path / "model")
    toml = "".join(
        f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v).replace(chr(39), chr(34))}\n"
        for k, v in SHARED_OPTIONS.items()
    )
    (tmp_path / "c.toml").write_text(toml + f"data_dir = {str(lre)!r}\n")
    out = tmp_path / "out"
    for stage in ("generate", "discover"):
        model_arg = ("--model", model) if stage == "discover" else ()
        r = cli(stage, "--out", str(out), *model_arg, "--config", str(tmp_path / "c.toml"))
        assert r.returncode == 0, r.stderr[-3000:]

    opts = dict(SHARED_OPTIONS, data_dir=str(lre))
    p = en.prompts(**opts)
    assert_frame_equal(p, tables.read_table(out, "prompts").select(p.columns), check_dtypes=False)
    disc = en.discover(en.load_model(model), p, **opts)
    assert SHARED in set(disc.discovery["relation"])  # the option is honoured, not validated and dropped
    assert "optimiser" in set(disc.head_disagreement["component"])
    for name in ("heads", "discovery", "discovery_masks", "head_overlap", "head_disagreement", "head_stability"):
        table = tables.read_table(out, name)
        assert len(table), name
        assert_frame_equal(disc[name].select(table.columns), table, check_exact=False, abs_tol=1e-6, check_dtypes=False)
    without = en.discover(en.load_model(model), p, **dict(opts, shared_mask=False))
    assert SHARED not in set(without.discovery["relation"].to_list())
    assert len(without.discovery) < len(disc.discovery)


def test_every_output_option_goes_through_both_paths():
    """Every Config field some stage reads (its cache key) is set off its default in OPTIONS (every table) or
    SHARED_OPTIONS (the discovery tables), so a both-paths equality runs it through the CLI and the API alike, or is
    listed in NOT_VARIED with the reason."""
    from entrainment import stage_graph
    from entrainment.config import default

    read = {f for s in stage_graph.STAGES for f in stage_graph.fields(s.name)}
    untested = sorted(read - set(OPTIONS) - set(SHARED_OPTIONS) - set(NOT_VARIED))
    assert not untested, f"set these off their defaults in OPTIONS, or say in NOT_VARIED why not: {untested}"
    at_default = [k for k, v in OPTIONS.items() if k in read and _same_value(v, default(k))]
    at_default += [k for k in set(SHARED_OPTIONS) - set(OPTIONS) if _same_value(SHARED_OPTIONS[k], default(k))]
    assert not at_default, f"OPTIONS leaves these at their defaults: {at_default}"
    assert not set(NOT_VARIED) - read, "NOT_VARIED names a field no stage reads"


def _same_value(a, b) -> bool:
    return (list(a) if isinstance(a, (list, tuple)) else a) == (list(b) if isinstance(b, (list, tuple)) else b)


def test_the_shared_mask_is_searched_and_evaluated_on_both_paths(project, api_frames):
    for frames in (api_frames, {t: tables.read_table(project[3], t) for t in ("heads", "ablation")}):
        assert "shared" in set(frames["heads"]["relation"])
        assert "shared" in set(frames["ablation"]["mask_relation"])


def test_scaling_fits_the_models_frames_across_models(tmp_path):
    """en.model_facts + en.scaling on three tiny models: the fits the CLI's stats and sentences stages write."""
    from entrainment.statistics import scaling
    from tests.toy_data import toy_lre

    lre = toy_lre(tmp_path / "lre")
    sizes = [dict(hidden_size=16, intermediate_size=32), dict(hidden_size=32, intermediate_size=64)]
    sizes.append(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3))
    models = [en.load_model(tiny.save("llama", tmp_path / f"m{i}", **kw)) for i, kw in enumerate(sizes)]
    p = en.prompts(relations=["toy capital"], max_pairs=3, data_dir=str(lre))
    stats = pl.concat([en.stats(en.measure(m, p), p).stats for m in models])
    facts = en.model_facts(*models)
    assert facts["n_params"].to_list() == sorted(facts["n_params"].to_list()) and facts.height == 3
    fits = en.scaling(stats, facts)
    assert fits.sentence_scaling is None
    assert_frame_equal(fits.scaling, scaling.tables_for(stats, facts))
    assert set(fits.scaling["n_models"]) == {3} and "no_context" in set(fits.scaling["kind"])
    assert en.scaling(stats, facts.head(2)).scaling is None  # two models with a size: no fit
    sentence = pl.DataFrame(
        {"model": facts["model"], "relation": "ALL", "condition": "related", "measure": "self", "ablation": "none"}
    ).with_columns(mean=pl.Series([0.3, 0.2, 0.1]))
    assert en.scaling(stats, facts, sentence).sentence_scaling["b"][0] < 0
    with pytest.raises(InputError, match="models"):
        en.scaling(stats, facts.drop("n_params"))


def test_results_reads_tables_and_queries_read_only(project):
    out = project[3]
    r = en.results(out)
    assert {"prompts", "measurements", "stats", "ablation"} <= set(r.tables)
    assert r.stats.equals(tables.read_table(out, "stats")) and r["prompts"].height == r.prompts.height
    n = r.sql("select count(*) as n from measurements")["n"][0]
    assert n == r.measurements.height
    with pytest.raises(InputError, match="only SELECT"):
        r.sql("create table x as select 1")
    with pytest.raises(InputError, match="unknown table"):
        r["nope"]


def test_results_refuses_a_stale_table_with_the_cli_message(project, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(project[3], out, ignore=shutil.ignore_patterns(".lock", ".cache", "shards"))
    from entrainment.data import lre_prompts

    fewer = lre_prompts.build(project[1], ("toy capital",), 0, 2, (0.6, 0.2, 0.2))
    tables.write_table(fewer, out, "prompts")  # another prompts table: measurements are stale now
    with pytest.raises(InputError) as e:
        en.results(out).measurements
    r = cli("stats", "--out", str(out))
    assert r.returncode == 2 and r.stderr.strip() == f"entrainment: error: {e.value}"


def test_the_api_path_imports_no_prefect(project):
    code = (
        "import sys\nimport entrainment as en\n"
        f"m = en.load_model({project[2]!r})\n"
        f"p = en.prompts(relations=['toy capital'], max_pairs=2, data_dir={str(project[1])!r})\n"
        "x = en.measure(m, p)\ns = en.stats(x, p)\n"
        "assert not [k for k in sys.modules if k == 'prefect' or k.startswith('prefect.')]\nprint(len(x))\n"
    )
    r = run_watched([sys.executable, "-c", code])
    assert r.returncode == 0 and int(r.stdout.strip()) > 0, r.stderr[-2000:]


def test_measure_with_heads_and_methods(project):
    d, lre, model, _ = project
    m = en.load_model(model)
    p = en.prompts(relations=["toy capital"], max_pairs=3, data_dir=str(lre))
    a = en.measure(m, p, heads=[(1, 2), (0, 1)])
    b = en.measure(m, p, heads="0.1,1.2", ablation_method="mean")
    assert set(a["ablation"]) == {"none", "heads-0.1,1.2"} and set(b["ablation"]) == {"none", "heads-0.1,1.2@mean"}
    x = a.filter(pl.col("ablation") != "none")["gold_logit_ctx"].to_numpy()
    y = b.filter(pl.col("ablation") != "none")["gold_logit_ctx"].to_numpy()
    assert abs(x - y).max() > 1e-6  # mean ablation is not zero ablation


def test_accuracy_columns_equal_a_recomputation_from_the_measurements(project):
    """original / no_context top-1 accuracy in ablation.parquet = the share of items whose gold first token has rank 1
    with / without context in measurements.parquet (the intact model), per evaluated relation and condition."""
    out = project[3]
    abl = tables.read_table(out, "ablation").filter(pl.col("templates") == "all")
    meas = tables.read_table(out, "measurements").filter((pl.col("ablation") == "none") & (pl.col("split") == "test"))
    checked = 0
    for r in abl.filter(pl.col("variant").is_in(["original", "no_context"])).iter_rows(named=True):
        g = meas.filter((pl.col("relation") == r["relation"]) & (pl.col("condition") == r["condition"]))
        assert len(g) == r["n"]
        col = "gold_rank_ctx" if r["variant"] == "original" else "gold_rank_base"
        assert r["top1_acc"] == pytest.approx((g[col] == 1).mean(), abs=1e-12), r
        checked += 1
    assert checked >= 4
    # gains on the prompted and ablated rows are paired differences of those 0/1 outcomes
    pr = abl.filter((pl.col("variant") == "prompted") & (pl.col("relation") == pl.col("mask_relation")))
    orig = abl.filter((pl.col("variant") == "original") & (pl.col("relation") == pl.col("mask_relation")))
    j = pr.join(
        orig, on=["model", "mask_relation", "seed", "ablation_method", "relation", "condition", "split"], suffix="_o"
    )
    assert ((j["top1_gain"] - (j["top1_acc"] - j["top1_acc_o"])).abs() < 1e-9).all()


def test_the_package_exports_exactly_the_api_names():
    """entrainment/__init__.py keeps its own copy of the names (so `import entrainment` stays free of polars and the
    API module until a name is used); the copy must equal entrainment.api.__all__."""
    import entrainment.api

    assert set(en.__all__) == set(entrainment.api.__all__)
    assert all(getattr(en, name) is getattr(entrainment.api, name) for name in entrainment.api.__all__)


def test_no_api_name_is_shadowed_by_a_library_module():
    """`en.stats` must stay the function after `entrainment.<x>` modules are imported: a subpackage or module of
    the same name would replace the package attribute on import."""
    import entrainment.api

    modules = {p.stem for p in Path(en.__file__).parent.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert not set(entrainment.api.__all__) & modules, set(entrainment.api.__all__) & modules


def test_the_api_module_imports_no_torch_until_a_model_is_needed():
    """`en.prompts` (and the API module itself) stay light: torch is imported by the functions that run a model."""
    code = "import sys\nimport entrainment as en\nen.prompts\nprint('torch' in sys.modules)\n"
    r = run_watched([sys.executable, "-c", code])
    assert r.returncode == 0 and r.stdout.strip() == "False", (r.stdout, r.stderr[-2000:])
