"""Sentence-level entrainment (entrainment/stages/sentences.py): exact teacher-forced scores, padding invariance, the
boundary check, the control sentences, and a planted copy head that raises a sentence it has read."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch
from conftest import toy_lre
from tiny import config as tiny_config
from tiny import model as tiny_model
from tiny import tokenizer as tiny_tokenizer

from entrainment.config import Config
from entrainment.data.lre_prompts import build, load_facts, load_words
from entrainment.data.relations import load_relations
from entrainment.data.sentence_items import MAX_LENGTH_GAP, SentenceItem, build_items
from entrainment.model.loading import from_config
from entrainment.model.sentence_scoring import encode, score
from entrainment.model.tokens import Tokens
from entrainment.paths import FACTS_FILE, WORDS_FILE
from entrainment.stages import sentences
from entrainment.statistics import sentence_stats

PROMPTS = [
    ("The capital city of Germany is Berlin. The capital city of France is", "The capital of France is Paris."),
    ("What color are limes?", "They are green."),
    ("On the outside, bananas are", "Rome Madrid Tokyo Cairo."),
    ("window.", "The capital city of Italy is the city of Rome, not Lima or Moscow."),
    ("apple bread chair table river mountain forest ocean island village market", "apple bread."),
]


def _reference(model, ids: tuple[int, ...], start: int) -> list[float]:
    """Log-prob of each sentence token, one forward pass per token over the unpadded prefix."""
    out = []
    with torch.no_grad():
        for j in range(start, len(ids)):
            logits = model(input_ids=torch.tensor([ids[:j]])).logits[0, -1]
            out.append(float(torch.log_softmax(logits.double(), -1)[ids[j]]))
    return out


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_mean_logprob_equals_token_by_token_reference(arch):
    m = tiny_model(arch)
    tk = Tokens(m.tokenizer)
    seqs = [encode(tk, p, s) for p, s in PROMPTS]
    got = score(m.model, seqs, m.tokenizer.pad_token_id, batch_size=1)
    for enc, g in zip(seqs, got):
        ref = _reference(m.model, enc.ids, enc.start)
        assert g.n_tokens == len(ref) > 1
        assert g.sum_logprob == pytest.approx(sum(ref), abs=1e-4)
        assert g.mean_logprob == pytest.approx(sum(ref) / len(ref), abs=1e-5)
        assert g.first_logprob == pytest.approx(ref[0], abs=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_equals_one_at_a_time(arch, side):
    m = tiny_model(arch)
    tk = Tokens(m.tokenizer)
    seqs = [encode(tk, p, s) for p, s in PROMPTS]
    assert len({len(s.ids) for s in seqs}) > 2  # real padding in the batch
    one = score(m.model, seqs, m.tokenizer.pad_token_id, batch_size=1, padding_side=side)
    many = score(m.model, seqs, m.tokenizer.pad_token_id, batch_size=len(seqs), padding_side=side)
    for a, b in zip(one, many):
        assert a.n_tokens == b.n_tokens
        assert abs(a.mean_logprob - b.mean_logprob) < 1e-5
        assert abs(a.first_logprob - b.first_logprob) < 1e-5
        assert abs(a.sum_logprob - b.sum_logprob) < 1e-5 * a.n_tokens


def test_boundary_check_flags_a_merge_across_the_boundary():
    tok = tiny_tokenizer()
    tk = Tokens(tok)
    # "Berlin" is one token of the tiny vocabulary: "... is Ber" + "lin." merges across the boundary
    assert len(tok(" Berlin", add_special_tokens=False).input_ids) == 1
    enc = encode(tk, "The capital city of Germany is Ber", "lin.", sep="")
    assert not enc.boundary_ok
    assert enc.ids == tk.prompt("The capital city of Germany is Berlin.")
    assert tok.decode(enc.ids[enc.start :]).strip().startswith("Berlin")  # the token holding the boundary is scored
    ok = encode(tk, "The capital city of Germany is", "Berlin.")
    assert ok.boundary_ok
    assert ok.ids[: ok.start] == tk.prompt("The capital city of Germany is")


def test_bos_always_is_kept_in_front():
    tk = Tokens(tiny_tokenizer(), bos="always")
    enc = encode(tk, "What color are limes?", "They are green.")
    assert enc.ids[0] == tiny_tokenizer().bos_token_id and enc.boundary_ok


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = toy_lre(tmp_path_factory.mktemp("lre"))
    rels = {r.name: r for r in load_relations(d, ("toy capital", "toy color"))}
    prompts = build(d, ("toy capital", "toy color"), 0, 6, (0.6, 0.2, 0.2))
    return d, rels, prompts


def test_controls_are_length_matched_and_absent_from_the_prompt(toy):
    _, rels, prompts = toy
    tok = tiny_tokenizer()
    n_tok = lambda s: len(tok(" " + s, add_special_tokens=False).input_ids)  # noqa: E731
    items, _ = build_items(prompts, rels, load_words(WORDS_FILE), n_tok, 4, seed=0, facts=load_facts(FACTS_FILE))
    conds = {i.condition for i in items}
    assert conds == {"related", "counterfactual", "irrelevant", "random", "self_cf"}
    for it in items:
        s = dict(it.sentences)
        own = s.get("self", s.get("self_cf"))
        assert own == it.context
        control = s["control"]
        assert abs(n_tok(control) - n_tok(own)) <= MAX_LENGTH_GAP
        for arm in ("present", "absent"):
            assert control not in it.prompt(arm)
            assert control not in it.prompt(arm, "neutral")
        if it.condition not in ("random", "irrelevant"):  # the control's subject is nowhere in the prompt
            rel = rels[it.relation]
            subj = next(
                sub for sub, obj in rel.pairs for t in rel.context_templates if f"{t.format(sub)} {obj}." == control
            )
            assert subj.lower() not in it.prompt("present").lower()
        if it.condition == "self_cf":
            assert s["gold"].endswith(f" {rels[it.relation].gold[it.subject]}.") and s["gold"] != own
            assert it.subject in own


def test_items_are_seeded_and_prefer_distinct_subjects(toy):
    _, rels, prompts = toy
    tok = tiny_tokenizer()
    n_tok = lambda s: len(tok(" " + s, add_special_tokens=False).input_ids)  # noqa: E731
    a, _ = build_items(prompts, rels, load_words(WORDS_FILE), n_tok, 3, seed=0)
    b, _ = build_items(prompts, rels, load_words(WORDS_FILE), n_tok, 3, seed=0)
    assert a == b
    df = pl.DataFrame([{"r": i.relation, "c": i.condition, "s": i.subject} for i in a])
    for rel, cond, k, n in df.group_by("r", "c").agg(pl.len(), pl.col("s").n_unique()).iter_rows():
        same = prompts.filter((pl.col("relation") == rel) & ((pl.col("condition") == cond) | (cond == "self_cf")))
        avail = same["subject"].n_unique()
        assert k <= 3 and n == min(k, avail)  # distinct query subjects first


def copy_model(copy: bool):
    """A one-layer, one-head Llama whose only path from the context to the output is its attention head: q = k = 0
    (uniform attention over the prefix), V = O = identity (the mean of the prefix's embeddings is added to the
    residual stream), no MLP, unembedding = embedding. With `copy` every token read raises that token's logit (a
    planted copy head); without it (O = 0) the output depends on the current token only."""
    cfg = tiny_config("llama", hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    cfg.num_key_value_heads = 1
    loaded = from_config(cfg, tiny_tokenizer(), spec="copy" if copy else "nocopy")
    m = loaded.model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        emb = torch.randn(m.model.embed_tokens.weight.shape, generator=g)
        m.model.embed_tokens.weight.copy_(emb)
        m.lm_head.weight.copy_(emb)
        attn = m.model.layers[0].self_attn
        attn.q_proj.weight.zero_()
        attn.k_proj.weight.zero_()
        attn.v_proj.weight.copy_(torch.eye(64))
        attn.o_proj.weight.copy_(torch.eye(64) * (8.0 if copy else 0.0))
        m.model.layers[0].mlp.down_proj.weight.zero_()
    return loaded


def _delta_self(loaded, items, keep=None) -> float:
    tk = Tokens(loaded.tokenizer)
    df = sentences.score_items(loaded, items, tk, keep=keep)
    eff = sentence_stats.item_effects(df).filter(pl.col("measure") == "self")
    return float(eff["value"].mean())


def _copy_items() -> list[SentenceItem]:
    pairs = [
        ("The capital city of Germany is Berlin.", "The capital of France is", "Rome Madrid Tokyo."),
        ("On the outside, bananas are yellow.", "What color are limes?", "window apple bread."),
        ("Rome Madrid Tokyo Cairo Lima.", "The capital city of Italy is", "purple red orange brown."),
    ]
    return [
        SentenceItem(f"i{k}", "r", "related", f"s{k}", c, q, (("self", c), ("control", ctrl)), "It rained.")
        for k, (c, q, ctrl) in enumerate(pairs)
    ]


def test_planted_copy_head_raises_the_sentence_it_has_read():
    items = _copy_items()
    with_head, without = copy_model(True), copy_model(False)
    d_copy = _delta_self(with_head, items)
    d_none = _delta_self(without, items)
    assert d_copy > 0.5
    assert abs(d_none) < 1e-5
    # removing the copy head (zero ablation through the project's hook) takes the effect away
    assert abs(_delta_self(with_head, items, keep=torch.zeros(1, 1))) < 1e-5
    # and Δ_net: the control (not in the prompt) is not raised as much as the sentence read
    df = sentences.score_items(with_head, items, Tokens(with_head.tokenizer))
    net = sentence_stats.item_effects(df).filter(pl.col("measure") == "net")["value"]
    assert (net > 0).all()


def test_subject_stats_pool_relations_equally_and_use_subjects_as_unit():
    rows = []
    for rel, subj_vals in (("a", {"x": [1.0, 3.0], "y": [4.0]}), ("b", {"z": [10.0], "w": [12.0], "v": [14.0]})):
        for subj, vals in subj_vals.items():
            for k, v in enumerate(vals):
                rows.append(
                    {
                        "model": "m",
                        "ablation": "none",
                        "relation": rel,
                        "condition": "related",
                        "item": f"{subj}{k}",
                        "subject": subj,
                        "measure": "self",
                        "value": v,
                    }
                )
    st = sentence_stats.subject_stats(pl.DataFrame(rows))
    a = st.filter(pl.col("relation") == "a").row(0, named=True)
    assert a["mean"] == pytest.approx(3.0) and a["n"] == 3 and a["n_subjects"] == 2  # subject means 2 and 4
    pooled = st.filter(pl.col("relation") == "ALL").row(0, named=True)
    assert pooled["mean"] == pytest.approx((3.0 + 12.0) / 2)  # relations weighted equally, not items
    assert pooled["ci_low"] < pooled["mean"] < pooled["ci_high"]
    assert math.isfinite(pooled["p_adjusted"])


def test_run_writes_both_tables_with_heads_and_null(toy):
    d, _, prompts = toy
    loaded = tiny_model("llama")
    heads = pl.DataFrame(
        [
            {
                "model": loaded.info.spec,
                "relation": "toy capital",
                "seed": -1,
                "layer": la,
                "head": h,
                "mask_logit": -3.0 if (la, h) == (1, 2) else 3.0,
                "removed": (la, h) == (1, 2),
            }
            for la in range(2)
            for h in range(4)
        ]
    )
    cfg = Config(
        data_dir=d,
        relations=("toy capital", "toy color"),
        discover_relations=("toy capital",),
        sentence_items=2,
        sentence_draws=3,
    )
    res = sentences.run(loaded, prompts, cfg, heads)
    from entrainment.store.schema import SENTENCE_SCORES, SENTENCE_STATS, check_frame
    from entrainment.store.tables import to_arrow

    for table, df in ((SENTENCE_SCORES, res.scores), (SENTENCE_STATS, res.stats)):
        to_arrow(df, table)  # every column present and castable
        assert check_frame(table, df) is None
    abl = res.stats.filter(pl.col("ablation") != "none")
    assert len(abl) and set(abl["heads"]) == {1} and set(abl["null_draws"]) == {3}
    assert abl["null_p"].is_between(0, 1).all()
    assert set(res.stats.filter(pl.col("ablation") == "none")["relation"]) == {"toy capital", "toy color", "ALL"}
    assert res.scores["boundary_ok"].all()


def test_no_items_gives_empty_tables(toy):
    d, _, prompts = toy
    cfg = Config(data_dir=d, relations=("toy capital",), sentence_items=2)
    res = sentences.run(tiny_model("llama"), prompts.filter(pl.col("condition") == "passages"), cfg)
    assert res.scores.is_empty() and res.stats.is_empty() and "no sentence items" in res.summary[0]
