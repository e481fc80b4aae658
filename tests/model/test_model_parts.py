"""Embedded models shipped as part packages (entrainment.model.gguf_parts) and the Qwen2 path (GQA 14/2 and 12/2,
untied output) through scoring, the head hook and the multi-mask passes, against a hook-by-hook reference."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from entrainment.errors import InputError
from entrainment.model import gguf_parts, loading, multimask, sources
from entrainment.model.hooks import Ablation, out_projections, scaled_heads
from entrainment.model.scoring import Request, score
from entrainment.model.shape import Shape, shape_from_config
from entrainment.model.tokens import Tokens
from tests import tiny
from tests.helpers import TEXTS

# --------------------------------------------------------------------------------------------------- part assembly


def _fake_parts(root: Path, tag: str, chunks: list[bytes]) -> gguf_parts.PartModel:
    """Installed-looking part packages fake_<tag>_partN/data/partNN.bin on `root` (put on sys.path by the caller)."""
    for i, data in enumerate(chunks, 1):
        pkg = root / f"fake_{tag}_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('a part module must never be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    whole = b"".join(chunks)
    return gguf_parts.PartModel(
        name=f"fake-{tag}",
        dist=f"fake-{tag}-part{{i}}",
        module=f"fake_{tag}_part{{i}}",
        n_parts=len(chunks),
        version="0",
        filename=f"fake-{tag}.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        about="fake",
    )


CHUNKS = [b"GGUF" + bytes(range(256)) * 3, bytes(range(255, -1, -1)) * 2, b"tail" * 50]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A registered fake part model (3 parts) with the GGUF cache in tmp_path/cache."""
    tag = tmp_path.name.replace("-", "_").lower()
    model = _fake_parts(tmp_path / "site", tag, CHUNKS)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(gguf_parts, "GGUF_DIR", tmp_path / "cache")
    monkeypatch.setitem(gguf_parts.PART_MODELS, model.name, model)
    monkeypatch.setitem(
        sources.EMBEDDED, model.name, {"package": model.module.format(i=1), "pip": model.pip(), "about": model.about}
    )
    return model


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_assembles_the_parts_in_order_and_checks_size_and_hash(fake, tmp_path):
    path = gguf_parts.ensure(fake.name)
    assert path == tmp_path / "cache" / fake.filename
    assert path.read_bytes() == b"".join(CHUNKS)
    assert _leftovers(tmp_path / "cache") == [fake.filename]  # no temp file left beside it
    # a model SPEC: resolves to the assembled file, its identity the content hash
    src = sources.resolve(fake.name)
    assert (src.kind, Path(src.location), src.identity) == ("embedded", path, fake.sha256[:16])
    rows = {r["name"]: r for r in sources.installed()}
    assert rows[fake.name]["installed"] == "yes"


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_missing_part_is_one_line_and_nothing_is_written(fake, tmp_path):
    import shutil

    shutil.rmtree(tmp_path / "site" / fake.module.format(i=2))
    rows = {r["name"]: r for r in sources.installed()}
    assert rows[fake.name]["installed"] == "no" and "make models" in rows[fake.name]["install"]
    with pytest.raises(InputError) as e:
        gguf_parts.ensure(fake.name)
    assert "part 2 of 3" in _one_line(e) and fake.dist.format(i=2) in str(e.value)
    assert not (tmp_path / "cache" / fake.filename).exists()
    # the part package is there but its data file is gone
    (tmp_path / "site" / fake.module.format(i=2) / "data").mkdir(parents=True)
    (tmp_path / "site" / fake.module.format(i=2) / "__init__.py").write_text("")
    with pytest.raises(InputError, match="part 2 of 3 is missing its data file"):
        gguf_parts.ensure(fake.name)
    assert _leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend"])
def test_a_corrupt_part_is_refused_and_never_leaves_a_partial_file(fake, tmp_path, damage):
    part = tmp_path / "site" / fake.module.format(i=2) / "data" / "part02.bin"
    data = bytearray(part.read_bytes())
    if damage == "flip":
        data[10] ^= 0xFF
    elif damage == "truncate":
        data = data[:-7]
    else:
        data += b"x"
    part.write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        gguf_parts.ensure(fake.name)
    assert {"flip": "sha256", "truncate": "size", "extend": "size"}[damage] in _one_line(e)
    assert _leftovers(tmp_path / "cache") == []  # neither the target nor a temp file
    with pytest.raises(InputError):  # the model SPEC fails the same way
        sources.resolve(fake.name)


def test_an_interrupted_assembly_leaves_nothing(fake, tmp_path, monkeypatch):
    parts = gguf_parts.part_paths(fake)
    real_open = open

    def failing_open(path, *a, **k):
        if Path(path) == parts[2]:
            raise KeyboardInterrupt  # killed while the third part is being copied
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(KeyboardInterrupt):
        gguf_parts.ensure(fake.name)
    monkeypatch.undo()
    assert _leftovers(tmp_path / "cache") == []


def test_a_wrong_assembled_file_is_never_used(fake, tmp_path, capsys):
    target = gguf_parts.ensure(fake.name)
    data = bytearray(target.read_bytes())
    data[5] ^= 1  # same size, different content
    target.write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        sources.resolve(fake.name)
    assert "sha256" in _one_line(e) and "make models" in str(e.value)
    target.write_bytes(bytes(data[:-1]))  # a partial file under the final name
    with pytest.raises(InputError, match="partial or foreign"):
        gguf_parts.ensure(fake.name)
    # the entry point (`make models`): one line on stderr, exit status 2
    assert gguf_parts.main([fake.name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "partial or foreign" in err
    assert gguf_parts.main(["no-such-model"]) == 2
    target.unlink()
    assert gguf_parts.main([fake.name]) == 0 and target.read_bytes() == b"".join(CHUNKS)


def test_the_recorded_models_are_the_issue_s():
    m05, m15 = gguf_parts.PART_MODELS["qwen2.5-coder-0.5b"], gguf_parts.PART_MODELS["qwen2.5-coder-1.5b"]
    assert (m05.n_parts, m05.version, m05.size) == (6, "0.9.0", 491_400_064)
    assert (m15.n_parts, m15.version, m15.size) == (22, "0.2.0", 1_117_320_768)
    assert all(len(m.sha256) == 64 and int(m.sha256, 16) for m in (m05, m15))
    assert {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m", "gemma3-270m"} <= set(sources.EMBEDDED)


@pytest.mark.parametrize(
    "name,shape", [("qwen2.5-coder-0.5b", (24, 14, 2, 64, 896)), ("qwen2.5-coder-1.5b", (28, 12, 2, 128, 1536))]
)
def test_real_part_models_shapes_from_the_gguf_header(name, shape):
    from entrainment.model.shape import model_shape

    if not gguf_parts.PART_MODELS[name].target().is_file():
        pytest.skip(f"{name} not assembled (make models)")
    s = model_shape(name)
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.head_dim, s.hidden) == shape
    assert s.model_type == "qwen2" and s.vocab == 151936 and not s.tied


# ------------------------------------------------------------------------------------------- the Qwen2 path (GQA)

# 14 query / 2 KV heads (the 0.5B model's ratio) and 12 / 2 (the 1.5B's), untied output embedding, head_dim 4
QWEN = {
    "14/2": dict(
        hidden_size=56, num_attention_heads=14, intermediate_size=64, num_hidden_layers=3, tie_word_embeddings=False
    ),
    "12/2": dict(
        hidden_size=48, num_attention_heads=12, intermediate_size=64, num_hidden_layers=3, tie_word_embeddings=False
    ),
}


@pytest.fixture(scope="module", params=list(QWEN))
def qwen(request):
    m = tiny.model("qwen2", **QWEN[request.param])
    torch.manual_seed(1)
    with torch.no_grad():  # larger random weights so that heads matter at the 1e-4 level
        for p in m.model.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else p.normal_(0, 0.05)
    return m


def test_qwen2_is_gqa_with_an_untied_output(qwen):
    cfg = qwen.model.config
    assert (qwen.info.n_kv_heads, cfg.num_key_value_heads) == (2, 2) and qwen.info.n_heads in (12, 14)
    assert qwen.model.get_output_embeddings().weight.data_ptr() != qwen.model.get_input_embeddings().weight.data_ptr()
    projs, n_heads, head_dim = out_projections(qwen.model)
    assert (len(projs), n_heads, head_dim) == (3, qwen.info.n_heads, 4)
    # the plan's Shape of this config counts the same parameters (plus Qwen2's q/k/v biases, which it leaves out)
    f = loading.facts(qwen)
    shape = shape_from_config(cfg.to_dict())
    bias = cfg.num_hidden_layers * (n_heads + 2 * 2) * head_dim
    assert not shape.tied and shape.n_kv_heads == 2
    assert f["n_params"] == shape.n_params + bias
    assert f["n_params_non_embedding"] == shape.n_params_non_embedding + bias
    assert f["n_params"] - f["n_params_non_embedding"] == 2 * cfg.vocab_size * cfg.hidden_size


def _reference_logits(model, ids: list[int], keep: torch.Tensor | None = None, mean: torch.Tensor | None = None):
    """Next-token logits of one unpadded prompt with a hand-written hook per layer: head h of layer l is kept
    (keep=1), removed (keep=0: zero, or the mean where given)."""
    projs, n_heads, head_dim = out_projections(model)
    handles = []
    if keep is not None:
        for layer, proj in enumerate(projs):

            def hook(_m, args, layer=layer):
                z = args[0].clone()
                for h in range(n_heads):
                    if keep[layer, h] != 1:
                        cols = slice(h * head_dim, (h + 1) * head_dim)
                        z[..., cols] = 0 if mean is None else mean[layer, h]
                return (z,)

            handles.append(proj.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            return model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    finally:
        for h in handles:
            h.remove()


def _items(m):
    tk = Tokens(m.tokenizer)
    prompts = [tk.prompt(t) for t in TEXTS]
    probes = [(tk.answer(t, "Madrid")[0], tk.answer(t, "green")[0]) for t in TEXTS]
    return prompts, probes


def test_qwen2_scoring_equals_a_plain_forward(qwen):
    tk = Tokens(qwen.tokenizer)
    reqs = [Request(tk.prompt(t), tk.answer(t, "Madrid")) for t in TEXTS]
    probes = [(r.cont[0], 7, 11) for r in reqs]
    for side in ("left", "right"):
        got = score(qwen.model, reqs, probes, qwen.tokenizer.pad_token_id, batch_size=8, padding_side=side)
        for r, p, res in zip(reqs, probes, got):
            with torch.inference_mode():
                lg = qwen.model(input_ids=torch.tensor([r.prompt + r.cont])).logits[0].double()
            last = len(r.prompt) - 1
            assert max(abs(res.probe_logit[k] - lg[last, t].item()) for k, t in enumerate(p)) < 1e-4
            lp = torch.log_softmax(lg, -1)
            assert abs(res.seq_logprob - sum(lp[last + k, t].item() for k, t in enumerate(r.cont))) < 1e-4


def test_qwen2_head_hook_equals_the_reference_hook_by_hook(qwen):
    prompts, _ = _items(qwen)
    ids = prompts[-1]
    n_l, n_h = qwen.info.n_layers, qwen.info.n_heads
    intact = _reference_logits(qwen.model, ids)
    changed = 0
    for layer in range(n_l):
        for head in range(n_h):
            keep = torch.ones(n_l, n_h)
            keep[layer, head] = 0
            ref = _reference_logits(qwen.model, ids, keep)
            with scaled_heads(qwen.model, keep), torch.inference_mode():
                got = qwen.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
            assert (got - ref).abs().max() < 1e-4, (layer, head)
            changed += bool((ref - intact).abs().max() > 1e-3)
    assert changed > n_l * n_h // 2  # removing a head changes the output (the comparison is not vacuous)


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_qwen2_multimask_passes_equal_the_reference(qwen, method):
    prompts, probes = _items(qwen)
    n_l, n_h = qwen.info.n_layers, qwen.info.n_heads
    mean = torch.randn(n_l, n_h, 4, generator=torch.Generator().manual_seed(3)) if method == "mean" else None
    how = Ablation("mean", mean) if method == "mean" else Ablation()
    sets = [((0, 1),), ((1, 0), (1, n_h - 1)), ((0, 0), (2, 5)), ((2, 3),), ()]
    masks = torch.cat([multimask.head_masks(sets, n_l, n_h), multimask.single_head_masks(n_l, n_h)])
    got = multimask.probe_logits(qwen, prompts, probes, masks, batch_size=7, chunk=3, ablation=how)
    for m in range(masks.shape[0]):
        for i, (ids, pr) in enumerate(zip(prompts, probes)):
            ref = _reference_logits(qwen.model, ids, masks[m] if (masks[m] != 1).any() else None, mean)
            assert max(abs(got[m, i, k] - ref[t].item()) for k, t in enumerate(pr)) < 1e-4, (m, i)
    assert abs(got[1] - got[4]).max() > 1e-3  # the head sets change the probe logits


def test_plan_predicts_the_dequantisation_peak_of_a_gguf(tmp_path, monkeypatch):
    """Before a GGUF is dequantised, the measure stage (which loads it) peaks at the measured dequantisation RSS;
    once the dequantised copy is cached it does not."""
    from entrainment.config import make_config
    from entrainment.plan import predict
    from tests.toy_data import toy_lre

    lre = toy_lre(tmp_path / "lre")
    cfg = make_config(
        None,
        relations=["toy capital"],
        discover_relations=["toy capital"],
        max_pairs=3,
        search_pairs=[2, 2, 2],
        seeds=[0],
        epochs=1,
        null_draws=2,
        null_items=2,
        scan=False,
        data_dir=lre,
        device="cpu",
        out=tmp_path / "out",
        model="qwen2.5-coder-1.5b",
    )
    shape = Shape(28, 12, 2, 128, 1536, 8960, 151936, tied=False, model_type="qwen2")
    monkeypatch.setattr(predict, "model_shape", lambda spec: shape)
    from entrainment.stages import generate

    prompts = generate.from_config(cfg)
    cost = predict.load_cost_model()
    weights_mb = shape.n_params * 4 / 2**20
    monkeypatch.setattr(predict, "model_folder", lambda spec: (None, tmp_path / "m.gguf"))
    cold, _, _ = predict.predict_model(cfg, cfg.model, prompts, cost)
    expected = predict.DEQUANT_BASE_MB + predict.DEQUANT_PER_WEIGHT_MB * weights_mb
    assert cold["measure"]["peak_mb"] >= expected - 1
    assert 8.0 * 1024 < expected < 9.5 * 1024  # 8.65 GiB measured for Qwen2.5-Coder-1.5B
    monkeypatch.setattr(predict, "model_folder", lambda spec: (tmp_path, tmp_path / "m.gguf"))
    warm, _, _ = predict.predict_model(cfg, cfg.model, prompts, cost)
    assert warm["measure"]["peak_mb"] < cold["measure"]["peak_mb"]
    assert warm["measure"]["seconds"] < cold["measure"]["seconds"]  # no dequantisation time either
