"""Several models in one --out: `run --models`, per-model caching, models.parquet, scaling.parquet, report panels."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from entrainment.config import Config, make
from entrainment.errors import InputError
from entrainment.model import loading
from entrainment.statistics import scaling
from tests import tiny
from tests.helpers import cli
from tests.toy_data import CONFIG

# three (then four) tiny llama models of different sizes
SIZES = {
    "a": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1),
    "b": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2),
    "c": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3),
    "d": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2),
}


def test_models_option_gives_one_single_model_config_per_model():
    cfg = make(models=("m2", "m1"), seeds=(0,))
    assert cfg.model == "m2" and cfg.model_specs() == ("m1", "m2")  # the first one given is the primary
    per = cfg.per_model()
    assert [c.model for c in per] == ["m1", "m2"] and all(c.models == () for c in per)
    for c in per:  # the same cache parameters as a run with that model alone
        for stage in ("measure", "discover", "ablate", "scan"):
            assert c.stage_params(stage) == Config(model=c.model, seeds=(0,)).stage_params(stage)
    assert Config().per_model() == [Config()]
    with pytest.raises(InputError, match="not one of --models"):
        make(model="x", models=("m1", "m2"))


def test_model_facts_count_parameters():
    m = tiny.model("llama", **SIZES["c"])
    f = loading.facts(m)
    total = sum(p.numel() for p in m.model.parameters())
    emb = m.model.get_input_embeddings().weight.numel() + m.model.get_output_embeddings().weight.numel()
    assert f["n_params"] == total and f["n_params_non_embedding"] == total - emb
    assert (f["n_layers"], f["n_heads"], f["n_total_heads"], f["family"]) == (3, 4, 12, "llama")
    assert f["vocab_size"] == len(tiny.tokenizer())


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    """`entrainment run --models a,b,c` through the real CLI on three tiny models, then the same with a fourth."""
    from tests.toy_data import toy_lre

    d = tmp_path_factory.mktemp("models")
    lre = toy_lre(d / "lre")
    (d / "c.toml").write_text(
        CONFIG.replace("seeds = [0, 1]", "seeds = [0]") + f"data_dir = {str(lre)!r}\ninit = 0.5\n"
    )
    specs = {k: tiny.save("llama", d / f"model-{k}", **v) for k, v in SIZES.items()}
    out = d / "out"
    first = cli(
        "run",
        "--out",
        str(out),
        "--models",
        ",".join(specs[k] for k in "abc"),
        "--config",
        str(d / "c.toml"),
    )
    assert first.returncode == 0, first.stderr[-3000:]
    tables = {
        n: pl.read_parquet(out / f"{n}.parquet")
        for n in (
            "measurements",
            "stats",
            "heads",
            "discovery",
            "ablation",
            "head_scores",
            "models",
            "scaling",
            "sentence_stats",
            "sentence_scaling",
        )
    }
    page = (out / "report.html").read_text()
    second = cli(
        "run",
        "--out",
        str(out),
        "--models",
        ",".join(specs[k] for k in "abcd"),
        "--config",
        str(d / "c.toml"),
    )
    assert second.returncode == 0, second.stderr[-3000:]
    return specs, out, first, tables, page, second


def test_every_table_carries_all_three_models(three_models):
    specs, _, first, tables, _, _ = three_models
    want = {specs[k] for k in "abc"}
    for name, df in tables.items():
        if name not in ("scaling", "sentence_scaling"):
            assert set(df["model"]) == want, name
    facts = tables["models"].sort("n_params")
    assert facts["model"].to_list() == [specs[k] for k in "abc"]  # a < b < c by construction
    assert facts["n_layers"].to_list() == [1, 2, 3]
    assert "scaling over 3 models" in first.stdout


def test_scaling_table_is_the_log_log_fit_of_the_stats(three_models):
    _, _, _, tables, _, _ = three_models
    fit, stats, facts = tables["scaling"], tables["stats"], tables["models"]
    assert set(fit["n_models"]) == {3} and set(fit["size"]) == {"n_params", "n_params_non_embedding"}
    row = fit.filter(
        (pl.col("size") == "n_params")
        & (pl.col("condition") == "related")
        & (pl.col("target") == "distractor")
        & (pl.col("metric") == "logit")
        & (pl.col("kind") == "raw")
    ).row(0, named=True)
    s = stats.filter(
        (pl.col("relation") == "ALL")
        & (pl.col("ablation") == "none")
        & (pl.col("condition") == "related")
        & (pl.col("target") == "distractor")
        & (pl.col("metric") == "logit")
    ).sort("model")
    sizes = dict(zip(facts["model"], facts["n_params"]))
    ref = scaling.fit([sizes[m] for m in s["model"]], s["mean_diff"].to_numpy())
    assert row["b"] == pytest.approx(ref["b"], abs=1e-9) and row["r2"] == pytest.approx(ref["r2"], abs=1e-9)


def test_sentence_scaling_is_the_log_log_fit_of_the_sentence_stats(three_models):
    _, _, first, tables, _, _ = three_models
    fit, st, facts = tables["sentence_scaling"], tables["sentence_stats"], tables["models"]
    assert set(fit["n_models"]) == {3} and "sentence scaling over 3 models" in first.stdout
    row = fit.filter((pl.col("size") == "n_params_non_embedding") & (pl.col("measure") == "self")).row(0, named=True)
    s = st.filter(
        (pl.col("relation") == "ALL")
        & (pl.col("ablation") == "none")
        & (pl.col("measure") == "self")
        & (pl.col("condition") == row["condition"])
    ).sort("model")
    sizes = dict(zip(facts["model"], facts["n_params_non_embedding"]))
    ref = scaling.fit([sizes[m] for m in s["model"]], s["mean"].to_numpy())
    assert row["b"] == pytest.approx(ref["b"], abs=1e-9) and row["p_value"] == pytest.approx(ref["p_value"], abs=1e-9)


def test_report_compares_the_models(three_models):
    _, _, _, _, page, _ = three_models
    for panel in ("k", "l", "m", "x", "y"):  # shifts, heads per model, scaling, relative depth, sentence scaling
        body = re.search(rf'<section id="panel-{panel}">(.*?)</section>', page, re.S).group(1)
        assert "data:image/png;base64," in body, panel


def test_adding_a_fourth_model_computes_only_its_shards(three_models):
    specs, out, _, _, _, second = three_models
    text = second.stdout + second.stderr
    old, new = [specs[k] for k in "abc"], specs["d"]
    for spec in old:  # every model-dependent task of a, b, c is served from the cache
        assert not re.search(rf"(measuring|mask search:|head scan of) {re.escape(spec)} ", text), spec
        for task in ("measure", "model-facts", "discover", "scan", "agreement", "ablate", "side-effects"):
            assert re.search(rf"{task} \[{re.escape(spec)}[ \]].*cache hit", text), (task, spec)
    for pattern in ("measuring", "mask search:", "head scan of"):
        assert f"{pattern} {new} " in text, pattern
    assert set(pl.read_parquet(out / "models.parquet")["model"]) == set(specs.values())
    assert set(pl.read_parquet(out / "scaling.parquet")["n_models"]) == {4}
    assert set(pl.read_parquet(out / "ablation.parquet")["model"]) == set(specs.values())


def test_two_models_say_why_there_is_no_scaling_table(tmp_path):
    """With 2 models stats writes no scaling.parquet (an old one is removed: it describes other models) and says why."""
    from entrainment.store import tables
    from tasks.stats import scaling_step

    facts = pl.DataFrame([loading.facts(tiny.model("llama", **SIZES[k])) for k in "ab"]).with_columns(
        pl.Series("model", ["m-a", "m-b"])
    )
    tables.write_table_file(facts, tmp_path / "models.parquet", "models")
    (tmp_path / "scaling.parquet").write_bytes(b"old")
    stats = pl.DataFrame({"model": ["m-a", "m-b"]})
    paths, lines = scaling_step(Config(out=tmp_path), stats)
    assert paths == [] and not (tmp_path / "scaling.parquet").exists()
    assert lines == [
        "scaling.parquet not written: 2 models measured; a power-law fit needs at least 3 "
        "(entrainment run --models a,b,c)"
    ]


@pytest.mark.slow
def test_the_dequantising_process_computes_with_the_cached_model(tmp_path, monkeypatch):
    """The first load of an embedded GGUF (dequantise, save) returns the model read back from the cache, so a fresh
    clone's first run gives the same logits as every later run (the in-memory model differed by up to 6e-6)."""
    import torch

    from entrainment.model import loading, sources

    monkeypatch.setattr(sources, "CACHE_DIR", tmp_path / "cache")
    src = sources.resolve("smollm2-135m")
    cached = sources.dequantised_dir(src)
    first, tok = loading._load_weights(src, torch.float32)  # dequantises and saves
    assert Path(first.config._name_or_path) == cached and (cached / "config.json").exists()
    again, _ = loading._load_weights(src, torch.float32)  # a later process: from the cache
    ids = tok(["The capital of France is", "A kiwi is green inside; a banana is"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(first.eval()(**ids).logits, again.eval()(**ids).logits)
