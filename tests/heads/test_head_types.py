"""Head types on tiny random models with planted heads: an attention pattern forced to the previous token, the
duplicate and the induction target ranks that head first; an OV circuit set to the identity copies (score 1), its
negative suppresses (−1); the d_head form equals the vocabulary-sized one; GQA heads read their key/value head; the
direct logit attribution adds up; the agreement statistics; the `heads` stage end to end."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import polars as pl
import pytest
import torch

from entrainment.config import Config
from entrainment.heads import circuits, dissociation
from entrainment.stages import head_types
from tests import tiny

T = 12


@contextmanager
def planted_attention(layer: int, head: int, pattern: torch.Tensor):
    """Llama's eager attention with one head's probabilities replaced by `pattern` [S, S] (its output recomputed
    from them): a head that attends exactly where the pattern says."""
    from transformers.models.llama import modeling_llama as ml

    orig = ml.eager_attention_forward

    def forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
        out, w = orig(module, query, key, value, attention_mask, scaling, dropout, **kw)
        if module.layer_idx != layer:
            return out, w
        w = w.clone()
        s = w.shape[-1]
        w[:, head] = pattern[:s, :s].to(w.dtype)
        v = ml.repeat_kv(value, module.num_key_value_groups)
        return torch.matmul(w, v).transpose(1, 2).contiguous(), w

    ml.eager_attention_forward = forward
    try:
        yield
    finally:
        ml.eager_attention_forward = orig


def _pattern(kind: str, bos: int, length: int) -> torch.Tensor:
    s = bos + 2 * length
    p = torch.zeros(s, s)
    p[0, 0] = 1
    for q in range(1, s):
        second = q >= bos + length
        key = {
            "prev_token": q - 1,
            "duplicate_token": q - length if second else 0,
            "induction": q - length + 1 if second else 0,
        }[kind]
        p[q, key] = 1
    return p


@pytest.mark.parametrize("kind,where", [("prev_token", (0, 2)), ("duplicate_token", (1, 1)), ("induction", (1, 3))])
def test_a_planted_attention_pattern_ranks_its_head_first(kind, where):
    m = tiny.model("llama")
    seqs, bos = head_types.repeated_tokens(m.tokenizer, len(m.tokenizer), 3, T, seed=0)
    assert bos == 1 and seqs.shape == (3, 1 + 2 * T)
    assert (seqs[:, 1 : T + 1] == seqs[:, T + 1 :]).all() and all(len(set(r[1 : T + 1].tolist())) == T for r in seqs)
    with planted_attention(*where, _pattern(kind, bos, T)):
        scores = head_types.pattern_scores(m, seqs, bos)
    s = scores[kind]
    assert s[where] == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(np.argmax(s), s.shape) == where
    assert np.sort(s.ravel())[-2] < 0.9  # no other head does it
    assert m.model.config._attn_implementation == "sdpa"  # the eager switch is undone


def _plant_ov(m, layer: int, signs: dict[int, float]):
    """OV of layer `layer`: key/value head g writes signs[g] * identity into the first D residual dimensions, every
    query head's output block is the identity; tied embeddings and unit norm gains make W_E W_V W_O W_U = ±E_P E_Pᵀ."""
    info = m.info
    d = info.head_dim
    attn = m.model.model.layers[layer].self_attn
    with torch.no_grad():
        attn.v_proj.weight.zero_()
        attn.o_proj.weight.zero_()
        for g, sign in signs.items():
            attn.v_proj.weight[g * d : (g + 1) * d, :d] = sign * torch.eye(d)
        for h in range(info.n_heads):
            attn.o_proj.weight[:d, h * d : (h + 1) * d] = torch.eye(d)


def test_identity_ov_copies_its_negative_suppresses_and_gqa_heads_read_their_kv_head():
    m = tiny.model("llama", tie_word_embeddings=True)  # 4 query heads on 2 key/value heads
    assert (m.info.n_heads, m.info.n_kv_heads) == (4, 2)
    _plant_ov(m, 1, {0: -1.0, 1: 1.0})
    c = circuits.copying_scores(m)
    assert c[1].tolist() == pytest.approx([-1.0, -1.0, 1.0, 1.0], abs=1e-6)  # heads 0, 1 read kv 0; 2, 3 read kv 1
    assert np.all(np.abs(c[0]) < 0.999)  # random heads are neither
    assert [circuits.kv_head(h, 4, 2) for h in range(4)] == [0, 0, 1, 1]
    sup, top1 = circuits.suppression_scores(m, list(range(len(m.tokenizer))))
    assert np.argmax(sup[0].tolist() + sup[1].tolist()) in (4, 5) and sup[1, 0] > 0.2
    assert np.argmax(top1[0].tolist() + top1[1].tolist()) in (6, 7) and top1[1, 2] > 0.2


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "gpt_neox"])
def test_the_d_head_form_equals_the_full_vocabulary_form(arch):
    m = tiny.model(arch)
    c = circuits.copying_scores(m)
    for layer, head in [(0, 0), (1, 3)]:
        full = circuits.full_ov(m, layer, head)
        assert full.shape == (len(m.tokenizer), len(m.tokenizer))
        assert circuits.positivity(torch.linalg.eigvals(full.double())) == pytest.approx(c[layer, head], abs=1e-5)


def test_gemma_norms_are_folded_with_one_plus_weight():
    m = tiny.model("gemma3")
    layer = m.model.model.layers[0]
    with torch.no_grad():
        layer.input_layernorm.weight.fill_(-1.0)  # Gemma's gain 1 + w = 0: the value path reads nothing
    assert np.isnan(circuits.copying_scores(m)[0]).all()
    assert circuits.norm_gain(layer.post_attention_layernorm, 32).tolist() == pytest.approx([1.0] * 32)


def test_direct_logit_attribution_adds_up_without_norms():
    """No final norm, no MLP: the heads' attributions plus the o_proj bias-free rest equal the logit difference
    minus the embedding's direct path."""
    m = tiny.model("llama", num_hidden_layers=1)
    m.model.model.norm = torch.nn.Identity()
    with torch.no_grad():
        m.model.model.layers[0].mlp.down_proj.weight.zero_()
    tk_ids = [tuple(range(2, 9)), tuple(range(20, 31))]
    _, z, post, resid, _ = head_types._last_position_pass(m, tk_ids, attend=False)
    u = m.model.get_output_embeddings().weight.detach()
    direction = u[[5, 7]] - u[[6, 8]]
    dla = head_types.head_dla(m, z, post, resid, direction)  # [B, L, H]
    emb = m.model.get_input_embeddings().weight.detach()
    last = torch.stack([emb[ids[-1]] for ids in tk_ids])
    expect = ((resid - last) * direction).sum(-1)  # the attention block's write, projected
    assert dla.sum(dim=(1, 2)).tolist() == pytest.approx(expect.tolist(), abs=1e-4)


def test_distractor_positions_spell_the_distractor():
    tok = tiny.tokenizer()
    ctx = "The capital of France is the city of Paris."
    text = ctx + " The capital city of Germany is"
    ids = tuple(tok(text).input_ids)
    pos = head_types.distractor_positions(tok, ids, text, ctx, "Paris")
    assert pos and "Paris" in tok.decode([ids[i] for i in pos]).strip()
    assert head_types.distractor_positions(tok, ids, text, ctx, "Rome") == []
    with_bos = (tok.bos_token_id,) + ids
    assert head_types.distractor_positions(tok, with_bos, text, ctx, "Paris") == [p + 1 for p in pos]


def test_agreement_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    rho, lo, hi, p = dissociation.spearman_ci(x, x + 0.3 * rng.normal(size=60))
    assert lo <= rho <= hi and rho > 0.8 and p < 1e-6
    assert np.isnan(dissociation.spearman_ci(x, np.ones(60))[0])
    obs, chance, p = dissociation.overlap(((0, 0), (0, 1)), ((0, 0), (0, 1)), 10)
    assert (obs, chance) == (2, pytest.approx(0.4)) and p == pytest.approx(1 / 45)
    grid = np.array([[0.1, 0.9], [0.5, np.nan]])
    assert dissociation.top_k(grid, 2) == ((0, 1), (1, 0)) and dissociation.top_k(grid, 1, exclude=((0, 1),)) == (
        (1, 0),
    )


def test_compute_without_prompts_and_the_dissociation_rows():
    m = tiny.model("llama")
    cfg = Config(head_types_seqs=2, head_types_len=8, head_types_tokens=40, head_types_k=2, head_types_draws=2)
    heads = pl.DataFrame(
        {
            "model": [m.info.spec] * 8,
            "relation": ["r"] * 8,
            "seed": [-1] * 8,
            "layer": [0] * 4 + [1] * 4,
            "head": list(range(4)) * 2,
            "mask_logit": [0.0] * 8,
            "removed": [True, False, False, False, False, True, False, False],
        }
    )
    types, agree = head_types.compute(m, None, "r", cfg, heads=heads)
    assert len(types) == 8 and types["n_tokens"][0] == 40 and types["distractor_attention"].is_nan().all()
    d = agree.filter(pl.col("kind") == "dissociation")
    assert set(zip(d["removed"], d["excluded"])) == {
        ("induction", "entrainment"),
        ("entrainment", "induction"),
        ("copying", "entrainment"),
        ("entrainment", "copying"),
    }
    ind = d.filter(pl.col("removed") == "induction").row(0, named=True)
    assert ind["n_removed"] == 2 and "0.0" not in ind["heads_type"].split(",") and ind["ranking"] == "stable"
    assert np.isfinite(ind["induction_loss"]) and np.isnan(ind["entrainment_gain"])  # no prompts: no gain


def _folder(tmp_path, lre_dir) -> tuple[Config, str]:
    from entrainment.data import lre_prompts
    from entrainment.store import tables

    model = tiny.save("llama", tmp_path / "model")
    spec = str((tmp_path / "model").resolve())
    cfg = Config(
        out=tmp_path / "out",
        data_dir=lre_dir,
        relations=("toy capital",),
        max_pairs=6,
        model=model,
        discover_relations=("toy capital",),
        head_types_seqs=2,
        head_types_len=8,
        head_types_tokens=60,
        head_types_k=2,
        head_types_draws=2,
        null_items=4,
        scan_items=4,
    )
    tables.write_table(lre_prompts.build(lre_dir, ("toy capital",), 0, 6, (0.5, 0.25, 0.25)), cfg.out, "prompts")
    from entrainment.store.schema import HEADS

    heads = pl.DataFrame(
        {
            "model": [spec] * 8,
            "relation": ["toy capital"] * 8,
            "seed": [0] * 4 + [-1] * 4,
            "layer": [0, 0, 1, 1] * 2,
            "head": [0, 3, 1, 2] * 2,
            "mask_logit": [0.0] * 8,
            "removed": [True, False, True, False, True, False, False, False],
            "ablation_label": ["mask:toy capital:seed0"] * 4 + ["stable:toy capital"] * 4,
            "ablation_method": ["zero"] * 8,
        }
    )
    heads = heads.with_columns([pl.lit(None).alias(c) for c in HEADS.names if c not in heads.columns])
    tables.write_table(heads, cfg.out, "heads")
    return cfg, spec


def test_heads_flow_writes_both_tables_and_is_cached(prefect_api, tmp_path, lre_dir):
    from entrainment.store import provenance
    from entrainment.store.schema import HEAD_TYPE_AGREEMENT, HEAD_TYPES
    from flows.head_types import head_types_flow

    cfg, spec = _folder(tmp_path, lre_dir)
    m = head_types_flow(cfg)
    types = pl.read_parquet(cfg.out / "head_types.parquet")
    agree = pl.read_parquet(cfg.out / "head_type_agreement.parquet")
    assert types.columns == HEAD_TYPES.names and len(types) == 8 and set(types["model"]) == {spec}
    assert agree.columns == HEAD_TYPE_AGREEMENT.names
    assert types["n_items"][0] > 0 and types["distractor_attention"].is_finite().all()
    assert (types["distractor_attention"] >= 0).all() and (types["distractor_attention"] <= 1 + 1e-6).all()
    d = agree.filter(pl.col("kind") == "dissociation")
    assert len(d) == 4 and set(d["ranking"]) == {"stable"} and d["entrainment_gain"].is_finite().any()
    assert provenance.why_stale(cfg.out, "head_type_agreement") is None
    assert any("head types of" in line for line in m["summary"])
    before = (cfg.out / "head_types.parquet").stat().st_mtime_ns
    again = head_types_flow(cfg)
    assert again["outputs"].keys() == m["outputs"].keys()
    assert (cfg.out / "head_types.parquet").stat().st_mtime_ns == before


def test_heads_command_needs_the_heads_table(tmp_path, lre_dir):
    from tests.helpers import cli, one_line_error

    cfg, _ = _folder(tmp_path, lre_dir)
    (cfg.out / "heads.parquet").unlink()
    r = cli("heads", "--out", str(cfg.out), "--model", cfg.model, "--discover-relations", "toy capital")
    assert r.returncode == 2
    one_line_error(r, "heads.parquet")
    assert cli("heads", "--help").returncode == 0
