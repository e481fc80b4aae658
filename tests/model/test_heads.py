"""The per-head hook on every supported architecture: identity, exactness, cleanup, gradients."""

from __future__ import annotations

import pytest
import torch

from entrainment.errors import InputError
from entrainment.heads.masks import parse_ablation, parse_head_list
from entrainment.model.hooks import HeadScaler, out_projections, scaled_heads
from tests import tiny

TEXT = "The capital city of Germany is Berlin. The capital of France is the city of"


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_all_ones_mask_is_bit_identical_and_hook_removed(arch):
    m = tiny.model(arch)
    ids = m.tokenizer(TEXT, return_tensors="pt").input_ids
    ref = _logits(m.model, ids)
    with scaled_heads(m.model, torch.ones(m.info.n_layers, m.info.n_heads)) as s:
        assert len(s.handles) == m.info.n_layers
        assert torch.equal(_logits(m.model, ids), ref)
    projs, _, _ = out_projections(m.model)
    assert all(len(p._forward_pre_hooks) == 0 for p in projs)
    assert torch.equal(_logits(m.model, ids), ref)


def _zero_head_in_weight(proj, head: int, head_dim: int) -> None:
    cols = slice(head * head_dim, (head + 1) * head_dim)
    with torch.no_grad():
        if type(proj).__name__ == "Conv1D":  # GPT-2: weight is [in, out]
            proj.weight[cols, :] = 0
        else:
            proj.weight[:, cols] = 0


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_zeroing_one_head_equals_editing_the_projection_weight(arch):
    m = tiny.model(arch)
    ids = m.tokenizer(TEXT, return_tensors="pt").input_ids
    ref = _logits(m.model, ids)
    mask = torch.ones(m.info.n_layers, m.info.n_heads)
    mask[1, 2] = 0
    with scaled_heads(m.model, mask):
        hooked = _logits(m.model, ids)
    assert (hooked - ref).abs().max() > 1e-4  # the head matters
    projs, _, head_dim = out_projections(m.model)
    _zero_head_in_weight(projs[1], 2, head_dim)
    edited = _logits(m.model, ids)
    assert torch.allclose(hooked, edited, atol=1e-6, rtol=0)


def test_hook_removed_even_on_error():
    m = tiny.model("llama")
    with pytest.raises(RuntimeError):
        with scaled_heads(m.model, torch.ones(2, 4)):
            raise RuntimeError("boom")
    projs, _, _ = out_projections(m.model)
    assert all(len(p._forward_pre_hooks) == 0 for p in projs)


def test_gradient_flows_to_a_differentiable_scale():
    m = tiny.model("qwen2")
    ids = m.tokenizer(TEXT, return_tensors="pt").input_ids
    scale = torch.ones(m.info.n_layers, m.info.n_heads, requires_grad=True)
    with scaled_heads(m.model, scale):
        m.model(input_ids=ids).logits[0, -1, 5].backward()
    assert scale.grad is not None and scale.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.model.parameters())


def test_unsupported_architecture_raises_clearly():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = tiny.config("llama")
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(2)])

    with pytest.raises(NotImplementedError, match="cannot find the decoder layers"):
        HeadScaler(Odd())


def test_head_list_parsing_and_bad_values():
    hs = parse_head_list("10.7, 3.4,3.4")
    assert hs.heads == ((3, 4), (10, 7)) and hs.id == "heads-3.4,10.7"
    with pytest.raises(InputError, match="layer.head"):
        parse_head_list("3-4")
    with pytest.raises(InputError, match="outside the model"):
        hs.mask(4, 4)
    assert parse_ablation(None) == []
