"""Measurement: columns per SPEC, collision flag, ablation rows, resume after a crash, shard caching."""

from __future__ import annotations

import polars as pl
import pytest

from entrainment.config import Config
from entrainment.data import lre_prompts
from entrainment.heads.masks import parse_head_list
from entrainment.model.hooks import scaled_heads
from entrainment.model.loading import load
from entrainment.model.scoring import Request, score
from entrainment.model.tokens import Tokens
from entrainment.stages import measure
from entrainment.store.schema import MEASUREMENTS
from tests import tiny


def _prompts(lre_dir, max_pairs=6):
    return lre_prompts.build(lre_dir, ("toy capital", "toy color"), 0, max_pairs, (0.6, 0.2, 0.2))


def test_columns_and_values(lre_dir):
    m = tiny.model("llama")
    df = _prompts(lre_dir)
    out = measure.measure_frame(m, df, batch_size=4)
    assert out.columns == MEASUREMENTS.names and len(out) == len(df)
    assert (out["ablation"] == "none").all()
    # ranks are consistent with log-probs: the higher log-prob never has the worse rank
    r = out.row(0, named=True)
    if r["gold_logprob_ctx"] > r["distractor_logprob_ctx"]:
        assert r["gold_rank_ctx"] < r["distractor_rank_ctx"]
    # a single-token distractor's whole-answer log-prob is its first-token log-prob
    tk = Tokens(m.tokenizer)
    single = [
        i for i, row in enumerate(df.iter_rows(named=True)) if len(tk.answer(row["text_base"], row["distractor"])) == 1
    ]
    for i in single:
        assert out["distractor_seq_logprob_ctx"][i] == pytest.approx(out["distractor_logprob_ctx"][i])


def test_collision_is_true_exactly_where_first_tokens_coincide(lre_dir):
    m = tiny.model("llama")
    df = _prompts(lre_dir)
    crafted = df.head(2).with_columns(pl.Series("distractor", ["Rome", "Romeo"]), pl.Series("gold", ["Rome", "Rome"]))
    out = measure.measure_frame(m, pl.concat([df, crafted]), batch_size=4)
    assert (out["collision"] == (out["gold_token_id"] == out["distractor_token_id"])).all()
    assert out["collision"].sum() >= 1


def test_ablated_rows_equal_manual_hooked_scoring(lre_dir):
    m = tiny.model("gpt2")
    df = _prompts(lre_dir).head(5)
    hs = parse_head_list("0.1,1.3")
    out = measure.measure_frame(m, df, hs, batch_size=3)
    assert (out["ablation"] == hs.id).all()
    tk = Tokens(m.tokenizer)
    row = df.row(0, named=True)
    req = Request(tk.prompt(row["text_ctx"]), tk.answer(row["text_base"], row["gold"]))
    with scaled_heads(m.model, hs.mask(2, 4)):
        ref = score(m.model, [req], [(req.cont[0],)], m.tokenizer.pad_token_id)[0]
    assert out["gold_logit_ctx"][0] == pytest.approx(ref.probe_logit[0], abs=1e-5)
    plain = measure.measure_frame(m, df, None, batch_size=3)
    assert (plain["gold_logit_ctx"] - out["gold_logit_ctx"]).abs().max() > 1e-4


def test_resume_after_crash_equals_uninterrupted(lre_dir, tmp_path, monkeypatch):
    m = tiny.model("llama")
    df = _prompts(lre_dir, max_pairs=10)
    full = measure.measure_resumable(m, df, tmp_path / "a", chunk=7)
    real = measure.measure_frame
    calls = []

    def crashing(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(measure, "measure_frame", crashing)
    with pytest.raises(KeyboardInterrupt):
        measure.measure_resumable(m, df, tmp_path / "b", chunk=7)
    assert len(list((tmp_path / "b").glob("part-*.parquet"))) == 2
    monkeypatch.setattr(measure, "measure_frame", real)
    recomputed = []
    monkeypatch.setattr(measure, "measure_frame", lambda *a, **k: recomputed.append(1) or real(*a, **k))
    resumed = measure.measure_resumable(m, df, tmp_path / "b", chunk=7)
    assert len(recomputed) == -(-len(df) // 7) - 2  # only the unfinished chunks ran
    assert resumed.equals(full)
    assert resumed["prompt_id"].n_unique() == len(df) == len(resumed)


def test_local_directory_model_loads_once(tmp_path):
    spec = tiny.save("qwen2", tmp_path / "m")
    a = load(spec)
    assert load(spec) is a
    assert a.info.n_layers == 2 and a.info.n_heads == 4 and a.info.n_kv_heads == 2
    assert a.source.kind == "local"


def test_measure_flow_shards_and_cache(prefect_api, tmp_path, lre_dir):
    from flows.generate import generate_flow
    from flows.measure import measure_flow

    spec = tiny.save("llama", tmp_path / "model")
    cfg = Config(
        out=tmp_path / "out",
        data_dir=lre_dir,
        relations=("toy capital", "toy color"),
        max_pairs=6,
        model=spec,
        ablation_heads="1.2",
    )
    generate_flow(cfg)
    measure_flow(cfg)
    meas = pl.read_parquet(cfg.out / "measurements.parquet")
    assert meas.columns == MEASUREMENTS.names
    assert set(meas["ablation"]) == {"none", "heads-1.2"}
    assert meas.group_by("ablation").len()["len"].to_list() == [len(pl.read_parquet(cfg.out / "prompts.parquet"))] * 2
    shards = sorted((cfg.out / "shards" / "measurements").glob("*/*/*.parquet"))
    assert len(shards) == 4
    before = {p: p.stat().st_mtime_ns for p in shards}

    # edit one relation file: only that relation's shards are recomputed
    f = lre_dir / "commonsense" / "colors.json"
    f.write_text(f.read_text().replace("purple", "violet"))
    generate_flow(cfg)
    measure_flow(cfg)
    after = sorted((cfg.out / "shards" / "measurements").glob("*/*/*.parquet"))
    kept = [p for p in after if p in before and before[p] == p.stat().st_mtime_ns]
    assert len(after) == 4 and len(kept) == 2 and all("toy_capital" in p.name for p in kept)
