"""Scoring: batch invariance with both padding sides, ranks, whole-answer log-probs, OOM back-off."""

from __future__ import annotations

import pytest
import torch

from entrainment.model.scoring import Request, score
from entrainment.model.tokens import Tokens
from tests import tiny
from tests.helpers import TEXTS


def _requests(m, answer="Madrid"):
    tk = Tokens(m.tokenizer)
    reqs = [Request(tk.prompt(t), tk.answer(t, answer)) for t in TEXTS]
    return reqs, [(r.cont[0], 7, 11) for r in reqs]


@pytest.mark.parametrize("arch", tiny.ARCHS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_batch_one(arch, side):
    m = tiny.model(arch)
    reqs, probes = _requests(m)
    pad = m.tokenizer.pad_token_id
    one = score(m.model, reqs, probes, pad, batch_size=1)
    many = score(m.model, reqs, probes, pad, batch_size=8, padding_side=side)
    for a, b in zip(one, many):
        assert max(abs(x - y) for x, y in zip(a.probe_logit, b.probe_logit)) < 1e-4
        assert abs(a.seq_logprob - b.seq_logprob) < 1e-4
        assert a.probe_rank == b.probe_rank


def test_scores_match_a_plain_forward():
    m = tiny.model("llama")
    reqs, probes = _requests(m)
    res = score(m.model, reqs, probes, m.tokenizer.pad_token_id, batch_size=8, keep_dist=True)
    for r, got in zip(reqs, res):
        with torch.inference_mode():
            lg = m.model(input_ids=torch.tensor([r.prompt + r.cont])).logits[0].float()
        lp = torch.log_softmax(lg, -1)
        last = len(r.prompt) - 1
        tok = r.cont[0]
        assert got.probe_logit[0] == pytest.approx(lg[last, tok].item(), abs=1e-5)
        assert got.probe_rank[0] == int((lg[last] > lg[last, tok]).sum()) + 1
        seq = sum(lp[last + k, t].item() for k, t in enumerate(r.cont))
        assert got.seq_logprob == pytest.approx(seq, abs=1e-4)
        assert torch.allclose(got.dist, lp[last], atol=1e-5)


def test_out_of_memory_halves_the_batch(monkeypatch, caplog):
    m = tiny.model("llama")
    reqs, probes = _requests(m)
    seen = []
    real = m.model.forward

    def forward(*a, **k):
        b = k["input_ids"].shape[0]
        seen.append(b)
        if b > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(*a, **k)

    monkeypatch.setattr(m.model, "forward", forward)
    res = score(m.model, reqs, probes, m.tokenizer.pad_token_id, batch_size=8)
    assert seen[:3] == [5, 4, 2] and max(seen[2:]) <= 2  # 8 (5 requests) -> 4 -> 2, then it fits
    assert "batch size halved to 4" in caplog.text and "batch size halved to 2" in caplog.text
    ref = score(m.model, reqs, probes, m.tokenizer.pad_token_id, batch_size=1)
    for a, b in zip(res, ref):
        assert a.probe_logit == pytest.approx(b.probe_logit, abs=1e-5)


@pytest.mark.parametrize("omp", ["1", ""])
def test_prepare_keeps_the_thread_count_the_environment_sets(omp, monkeypatch):
    """loading.prepare uses every core unless OMP_NUM_THREADS is set (the suite's parallel workers set 1)."""
    import os

    from entrainment.model import loading

    m = tiny.model("llama")
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    try:
        torch.set_num_threads(1)
        loading.prepare(m.model, m.tokenizer, "cpu")
        assert torch.get_num_threads() == (1 if omp else (os.cpu_count() or 1))
    finally:
        torch.set_num_threads(before)
