"""Tiny randomly initialised models (one per supported architecture) and a tiny byte-level BPE tokenizer."""

from __future__ import annotations

from functools import lru_cache

from entrainment.model.loading import Loaded, from_config

CORPUS = [
    "The capital city of Germany is Berlin. The capital of France is the city of Paris.",
    "On the outside, bananas are yellow. What color are limes? They are green.",
    "window. apple bread chair table river mountain forest ocean island village market",
    "Rome Madrid Tokyo Cairo Lima Santiago Moscow Beijing purple red orange brown",
]


@lru_cache(maxsize=1)
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<bos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<pad>")
    return fast


def config(arch: str, **overrides):
    from transformers import Gemma3TextConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config, Qwen3Config

    v = len(tokenizer())
    common = (
        dict(
            vocab_size=v,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
        )
        | overrides
    )
    if arch == "llama":
        return LlamaConfig(**common, num_key_value_heads=2)
    if arch == "gemma3":
        return Gemma3TextConfig(
            **common,
            num_key_value_heads=1,
            head_dim=8,
            sliding_window=16,
            layer_types=["sliding_attention", "full_attention"],
        )
    if arch == "qwen2":
        return Qwen2Config(**common, num_key_value_heads=2)
    if arch == "qwen3":
        return Qwen3Config(**common, num_key_value_heads=2, head_dim=8)
    if arch == "gpt2":
        return GPT2Config(vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=0)
    if arch == "gpt_neox":
        return GPTNeoXConfig(
            vocab_size=v,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
        )
    raise ValueError(arch)


ARCHS = ("llama", "gemma3", "qwen2", "qwen3", "gpt2", "gpt_neox")


def model(arch: str = "llama", **overrides) -> Loaded:
    """A tiny model; `overrides` change the config (hidden_size, num_hidden_layers, ... for other sizes)."""
    return from_config(config(arch, **overrides), tokenizer(), spec=f"tiny-{arch}")


def save(arch: str, folder, **overrides) -> str:
    """Save a tiny model + tokenizer as a local model directory (a model SPEC usable by every stage)."""
    m = model(arch, **overrides)
    m.model.save_pretrained(folder)
    m.tokenizer.save_pretrained(folder)
    return str(folder)


def copy_head_model():
    """A 1-layer Llama whose head 0 attends uniformly over the prefix and copies each token's embedding
    into the output, raising the logit of every context token (a pure "copy head"); head 1 and the MLP
    write nothing. Every token the test prompts use gets an orthonormal embedding, so copying raises the
    distractor (in context) and never the gold (not in context)."""
    import torch
    from transformers import LlamaConfig

    from tests.toy_data import search_items

    tok = tokenizer()
    v = len(tok)
    cfg = LlamaConfig(
        vocab_size=v,
        hidden_size=128,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    m = from_config(cfg, tok, spec="copy-head")
    used = sorted({t for it in search_items(m, 16) for t in (*it.prompt, it.gold, it.distractor)})
    assert len(used) <= 64
    basis, _ = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        emb = torch.zeros(v, 128)
        emb[used, :64] = basis[: len(used)] * 8
        m.model.model.embed_tokens.weight.copy_(emb)
        attn = m.model.model.layers[0].self_attn
        for w in (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight):
            w.zero_()  # zero q, k: uniform attention over the prefix
        attn.v_proj.weight[:64, :64] = torch.eye(64)  # head 0 values = the token's embedding
        attn.o_proj.weight[:64, :64] = 2 * torch.eye(64)  # head 0 writes it back
        m.model.model.layers[0].mlp.down_proj.weight.zero_()
    return m
