"""Per-stage cost model: how each stage's unit of work grows with the model, measured on random Llama-shaped models.

Models are built from a ``LlamaConfig`` with random weights (no download) at several sizes, from SmolLM2-135M's shape
to Llama-3.2-1B's (16 layers x 32 query heads, 8 KV heads, width 2048, a 128k vocabulary). Every size runs, in a
fresh process (so its peak RSS is its own), the unit of work of every stage on the same random prompts (token ids
of ``--tokens`` tokens on average, the default run's with-context prompt length under SmolLM2's tokenizer):

  measure   one prompt scored with its answer (scoring.score: probes, log-probs, ranks, answer continuation)
  evaluate  one item through a head-ablated pass (discovery's dev evaluation, head means, side effects)
  discover  one training item-epoch: sampled mask, forward + backward (search.step_loss)
  atp       one item of attribution patching (forward + backward)
  scan      one (head, item) row of the single-head scan (multimask.probe_logits with layer replay; the heads of
            evenly spaced layers, so the replayed share is the full scan's)
  null      one (random 5-head set, item) row of the null / k-curves (probe_logits)
  ablate    one item-pass of the ablation evaluation (full next-token distributions + both KLs, chunked)

Each unit is timed (best of ``--repeats``, after a small warm-up) with peak RSS sampled every 20 ms in a thread.
The fit per unit: log(seconds) against log(non-embedding parameters) and against log(all parameters), least
squares (scipy.stats.linregress) with the slope's 95% t interval; the scan's cost per item (every head) also jointly
against log(parameters) and log(heads). Peak RSS is fitted linearly on the weights' size. The fits and the machine go to
``entrainment/plan/cost_model.json`` (read by ``entrainment plan``); a Markdown table is printed.

    .venv/bin/python benchmarks/scale.py [--sizes 135m,250m,360m,600m,1b] [--items 32] [--repeats 2]
    .venv/bin/python benchmarks/scale.py --quick            # smoke test: two tiny sizes and the rehearsal on the
                                                            # tiny one, no cost-model write (the test suite runs it)
    .venv/bin/python benchmarks/scale.py --rehearsal 1b     # the whole pipeline, flow-free, on the 1B shape

``--rehearsal SIZE`` runs every stage's library functions (dataset, measurement, head means, statistics, mask
search, scan + AtP + k-curves, ablation with its null, side effects, the report's example) on the random model with
a handful of items per stage, one seed and a small null, and prints each stage's seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from entrainment.model import scoring
from entrainment.model.shape import Shape, shape_from_config  # noqa: E402
from entrainment.model.tokens import Item
from entrainment.plan.predict import COST_MODEL

# LlamaConfig fields per size (head_dim 64 throughout, like SmolLM2 and Llama-3.2)
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=32,
        intermediate_size=64,
        vocab_size=512,
        tie_word_embeddings=True,
    ),
    "tiny2": dict(
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=64,
        intermediate_size=128,
        vocab_size=1024,
        tie_word_embeddings=True,
    ),
    "135m": dict(
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        hidden_size=576,
        intermediate_size=1536,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),  # SmolLM2-135M
    "250m": dict(
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=4,
        hidden_size=768,
        intermediate_size=2048,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    "360m": dict(
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        hidden_size=960,
        intermediate_size=2560,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),  # SmolLM2-360M
    "600m": dict(
        num_hidden_layers=22,
        num_attention_heads=20,
        num_key_value_heads=4,
        hidden_size=1280,
        intermediate_size=4096,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "1b": dict(
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        hidden_size=2048,
        intermediate_size=8192,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),  # Llama-3.2-1B
    "8b": dict(
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        hidden_size=4096,
        intermediate_size=14336,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),  # Llama-3.1-8B
}
DEFAULT_SIZES = ("135m", "250m", "360m", "600m", "1b")
UNITS = ("measure", "evaluate", "discover", "atp", "scan", "null", "ablate")
BENCH_TOKENS = 19  # mean with-context prompt length of the default run under SmolLM2's tokenizer (19.4)
CHARS_PER_TOKEN = 4.45  # SmolLM2's tokenizer on the default run's prompts (text_ctx 4.46, text_base 4.44)
NULL_HEADS = 5
# fixed costs of the stages outside the model's units (seconds; measured in the default run, see docs)
# fixed costs outside the model's units, from the default run's log (/tmp/run1, 2026-12-01): flow wall time minus
# its tasks' seconds per task (1.1-1.7 s), the process and Prefect server start (generate), the report's HTML
OVERHEAD: dict[str, Any] = {
    "stage_s": {
        "generate": 13.0,
        "measure": 1.0,
        "stats": 3.0,
        "discover": 1.0,
        "scan": 1.0,
        "ablate": 1.0,
        "report": 4.0,
    },
    "task_s": 1.4,
    "runtime_mb": 650.0,
    "prefect_mb": 0.0,
    "load_mb_per_s": 400.0,
    "dequantise_s_per_gb": 40.0,
    "cuda_base_mb": 600.0,
}


def shape_of(size: str | dict[str, Any]) -> Shape:
    """The plan.Shape of a size name (or of LlamaConfig fields)."""
    fields = SIZES[size] if isinstance(size, str) else size
    return shape_from_config(dict(fields, model_type="llama", hidden_act="silu"))


class IdsTokenizer:
    """The tokenizer stand-in of a model fed token ids directly: a pad id and a length."""

    pad_token_id = 0
    eos_token_id = 0
    bos_token_id = None
    pad_token = eos_token = "<pad>"

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __len__(self) -> int:
        return self.vocab


def build(
    size: str | dict[str, Any],
    device: str = "cpu",
    dtype: str = "float32",
    tokenizer: Any = None,
    spec: str | None = None,
):
    """A random-weight Llama model of this size, built on `device` in `dtype` (no download, no CPU copy on CUDA).

    Args:
        size: a SIZES name or LlamaConfig fields.
        device: cpu | cuda | cuda:N.
        dtype: float32 | bfloat16 | float16.
        tokenizer: the tokenizer to pair it with (default: IdsTokenizer, for token-id prompts).
        spec: the model's name in the results.
    Returns:
        entrainment.model.loading.Loaded.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from entrainment.model.loading import Loaded, describe, prepare
    from entrainment.model.sources import Source

    fields = SIZES[size] if isinstance(size, str) else size
    name = spec or (f"random-llama-{size}" if isinstance(size, str) else "random-llama")
    config = LlamaConfig(max_position_embeddings=4096, **fields)
    torch.manual_seed(0)
    td = getattr(torch, dtype)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=td)
    tok = tokenizer if tokenizer is not None else IdsTokenizer(fields["vocab_size"])
    prepare(model, tok, "cpu" if device == "cpu" else device)
    return Loaded(model, tok, describe(model, name, device, td), Source(name, "config", name, name))


class Peak:
    """Peak memory while a unit runs: RSS sampled every `interval` s in a thread (CPU), or
    torch.cuda.max_memory_allocated (CUDA)."""

    def __init__(self, device: str = "cpu", interval: float = 0.02):
        import psutil

        self.proc = psutil.Process()
        self.cuda = device.startswith("cuda")
        self.interval = interval
        self.max_rss = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = self.proc.memory_info().rss
            if rss > self.max_rss:
                self.max_rss = rss

    def reset(self) -> None:
        """Start a new measurement window."""
        self.max_rss = self.proc.memory_info().rss
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        """Peak of the window so far (MB): GPU memory allocated on CUDA, else RSS."""
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        self.max_rss = max(self.max_rss, self.proc.memory_info().rss)
        return self.max_rss / 2**20

    def rss_mb(self) -> float:
        return self.proc.memory_info().rss / 2**20

    def close(self) -> None:
        self._stop.set()


class LayerFlops:
    """Counts a model's matmul FLOPs as they run: hooks on every decoder layer (2 x matmul parameters x tokens +
    causal attention; a layer replaying a recorded output is not counted) and on the LM head (2 x width x logits
    computed). A forward whose output carries gradients counts twice (its backward: activation gradients only)."""

    def __init__(self, loaded):
        from entrainment.model.hooks import decoder_layers

        self.total = 0.0
        self.shape = shape_from_config(loaded.model.config.to_dict())
        layers = decoder_layers(loaded.model, loaded.info.n_layers)
        self.handles = [layer.register_forward_hook(self._layer, with_kwargs=True) for layer in layers]
        head = loaded.model.get_output_embeddings()
        self.handles.append(head.register_forward_hook(self._head))

    @staticmethod
    def _tensor(x):
        return x[0] if isinstance(x, (tuple, list)) else x

    def _layer(self, module, args, kwargs, out) -> None:
        if "forward" in module.__dict__:  # replayed (multimask.replayed): nothing computed
            return
        x = args[0] if args else kwargs.get("hidden_states")
        b, t = int(x.shape[0]), int(x.shape[1])
        s = self.shape
        f = 2.0 * s.layer_params * b * t + 2.0 * b * t * t * s.n_heads * s.head_dim
        y = self._tensor(out)
        self.total += f * (2 if getattr(y, "requires_grad", False) else 1)

    def _head(self, module, args, out) -> None:
        y = self._tensor(out)
        self.total += 2.0 * self.shape.hidden * y.numel() * (2 if y.requires_grad else 1)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def bench_inputs(n: int, vocab: int, tokens: int = BENCH_TOKENS, seed: int = 0) -> dict[str, list]:
    """n random prompts of tokens-2 .. tokens+2 ids (the spread of a relation's prompts, so length-sorted batches pad
    as little as the pipeline's do), their gold and distractor ids and answers (every second one two tokens long, so
    the continuation path runs)."""
    rng = np.random.default_rng(seed)
    hi = min(vocab, 49152)
    lens = rng.integers(max(2, tokens - 2), tokens + 3, n)
    prompts = [tuple(int(x) for x in rng.integers(3, hi, int(k))) for k in lens]
    gold = [int(x) for x in rng.integers(3, hi, n)]
    dist = [int(g + 1 if g + 1 < hi else 3) for g in gold]
    conts = [(g,) if i % 2 == 0 else (g, int(rng.integers(3, hi))) for i, g in enumerate(gold)]
    return {"prompts": prompts, "gold": gold, "dist": dist, "conts": conts}


def scan_masks(n_layers: int, n_heads: int, layers: int):
    """The single-head masks of `layers` evenly spaced layers (midpoints), with the intact mask first: their mean
    replayed share equals the full scan's."""
    from entrainment.model.multimask import head_masks

    picked = sorted({min(n_layers - 1, int((i + 0.5) * n_layers / layers)) for i in range(min(layers, n_layers))})
    sets = [()] + [((layer, h),) for layer in picked for h in range(n_heads)]
    return head_masks(sets, n_layers, n_heads), picked


def _masks_flops(shape: Shape, masks, prompts: list, probe: bool = True) -> float:
    """FLOPs of probe_logits over these masks and prompts: each (mask, item) row computes the layers from the mask's
    lowest changed layer up; one intact recording pass per item."""
    from entrainment.model.multimask import lowest_layer

    low = [lowest_layer(masks[m]) for m in range(masks.shape[0])]
    total = 0.0
    for p in prompts:
        t = len(p)
        total += shape.forward_flops(t, 1.0, 1.0, 2)
        for lo in low:
            if lo < shape.n_layers:
                total += shape.forward_flops(t, (shape.n_layers - lo) / shape.n_layers, 1.0, 2 if probe else None)
    return total


def unit_costs(
    loaded,
    n_items: int,
    repeats: int = 1,
    peak: Peak | None = None,
    bf16: bool = False,
    scan_layers: int = 2,
    scan_items: int = 4,
    tokens: int = BENCH_TOKENS,
    only: tuple[str, ...] = UNITS,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """Seconds, peak memory and achieved FLOP/s of one unit of every stage on this model.

    Args:
        loaded: the model (entrainment.model.loading.Loaded) fed token ids.
        n_items: items per unit measurement.
        repeats: timed repeats (the best is kept), after one small warm-up call.
        peak: the memory sampler (one is started if None).
        bf16: the search-side units (discover, atp, scan, null) under bfloat16 autocast (the pipeline's GPU setting).
        scan_layers: layers whose single-head masks the scan unit runs.
        scan_items: items of the scan unit (at most n_items).
        tokens: mean prompt length.
        only: the units to run.
        log: progress lines.
    Returns:
        unit -> {"seconds": per unit, "count": units timed, "peak_mb", "flops": per unit, "flops_per_s"}.
    """
    import torch

    from entrainment.ablation import evaluate
    from entrainment.heads import maps, search
    from entrainment.heads.masks import HeadSet
    from entrainment.heads.random_heads import random_head_sets
    from entrainment.model import multimask
    from entrainment.model.scoring import Request, score

    info, model = loaded.info, loaded.model
    device = next(model.parameters()).device
    shape = shape_from_config(model.config.to_dict())
    data = bench_inputs(n_items, shape.vocab, tokens)
    prompts, gold, dist, conts = data["prompts"], data["gold"], data["dist"], data["conts"]
    pad = loaded.tokenizer.pad_token_id
    own_peak = peak is None
    peak = peak or Peak(device.type)
    five = HeadSet("bench", tuple((layer, 0) for layer in range(min(NULL_HEADS, info.n_layers))))
    keep = five.mask(info.n_layers, info.n_heads)
    fwd = lambda ps, **k: sum(shape.forward_flops(len(p), **k) for p in ps)  # noqa: E731

    def run_measure(ps, gs, ds, cs):
        score(model, [Request(p, c) for p, c in zip(ps, cs)], list(zip(gs, ds)), pad, 32)

    def run_evaluate(ps, gs, ds, cs):
        scoring.run_pass(loaded, list(ps), list(gs), list(ds), keep, 32)

    def run_discover(ps, gs, ds, cs):
        items = [Item(p, g, d) for p, g, d in zip(ps, gs, ds)]
        gen = torch.Generator(device=device).manual_seed(0)
        logits = torch.nn.Parameter(3.0 + 0.01 * torch.randn(info.n_layers, info.n_heads, device=device))
        opt = torch.optim.AdamW([logits], lr=1.0, weight_decay=0.0)
        for batch in search.make_batches(items, 16, random.Random(0)):
            scale = search.gumbel_sigmoid_st(logits, 1.0, gen)
            loss, _ = search.step_loss(loaded, batch, scale, logits, 1.0, bf16)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def run_atp(ps, gs, ds, cs):
        maps.atp_scores(loaded, list(ps), list(gs), list(ds), 16, bf16=bf16)

    smasks, picked = scan_masks(info.n_layers, info.n_heads, scan_layers)
    sets = random_head_sets(five, info.n_layers, info.n_heads, 8, 0)
    nmasks = multimask.head_masks([(), five.heads] + [s.heads for s in sets], info.n_layers, info.n_heads)

    def run_scan(ps, gs, ds, cs, masks=smasks):
        multimask.probe_logits(loaded, list(ps), list(zip(gs, ds)), masks, 64, bf16=bf16)

    def run_null(ps, gs, ds, cs):
        multimask.probe_logits(loaded, list(ps), list(zip(gs, ds)), nmasks, 64, bf16=bf16)

    def run_ablate(ps, gs, ds, cs):
        evaluate.variant_passes(
            loaded,
            {"ctx": list(ps), "base": list(ps), "prompted": list(ps)},
            list(gs),
            list(ds),
            {"ablated": evaluate.Pass("ctx", keep)},
            32,
        )

    ns = min(scan_items, n_items)
    plan = {  # unit -> (function, items used, units counted, FLOPs of the call, warm-up kwargs)
        "measure": (
            run_measure,
            n_items,
            n_items,
            fwd(prompts) + sum(len(c) - 1 for c in conts) * shape.forward_flops(1.0),
        ),
        "evaluate": (run_evaluate, n_items, n_items, fwd(prompts)),
        "discover": (run_discover, n_items, n_items, 2 * fwd(prompts)),
        "atp": (run_atp, n_items, n_items, 2 * fwd(prompts)),
        "scan": (run_scan, ns, ns * (smasks.shape[0] - 1), _masks_flops(shape, smasks, prompts[:ns])),
        "null": (run_null, n_items, n_items * nmasks.shape[0], _masks_flops(shape, nmasks, prompts)),
        "ablate": (run_ablate, n_items, 3 * n_items, 3 * fwd(prompts)),
    }
    out: dict[str, dict[str, float]] = {}
    for unit in only:
        fn, n, count, flops = plan[unit]
        args = (prompts[:n], gold[:n], dist[:n], conts[:n])
        warm = (prompts[:2], gold[:2], dist[:2], conts[:2])
        if unit == "scan":
            fn(*warm, masks=smasks[:2])
        else:
            fn(*warm)
        best, top = math.inf, 0.0
        for _ in range(max(1, repeats)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            peak.reset()
            t0 = time.perf_counter()
            fn(*args)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
            top = max(top, peak.peak_mb())
        out[unit] = {
            "seconds": best / count,
            "count": count,
            "peak_mb": top,
            "flops": flops / count,
            "flops_per_s": flops / best,
        }
        log(
            f"  {unit:9s} {best / count * 1e3:9.2f} ms/unit  ({count} units in {best:.2f} s, "
            f"{flops / best / 1e9:.1f} GFLOP/s, peak {top:.0f} MB)"
        )
    out["_scan_layers"] = {"layers": picked}  # type: ignore[assignment]
    if own_peak:
        peak.close()
    return out


def machine(device: str = "cpu", dtype: str = "float32") -> dict[str, Any]:
    """What the costs were measured on."""
    import torch

    from entrainment.plan.predict import _cpu_name

    out = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "dtype": dtype,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def one_size(
    size: str,
    items: int,
    repeats: int,
    device: str = "cpu",
    dtype: str = "float32",
    scan_layers: int = 2,
    scan_items: int = 4,
    bf16: bool = False,
) -> dict[str, Any]:
    """Build one size and measure every unit; a JSON-able record."""
    peak = Peak(device)
    t0 = time.perf_counter()
    loaded = build(size, device, dtype)
    built = time.perf_counter() - t0
    shape = shape_of(size)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    print(
        f"{size}: {shape.n_layers} x {shape.n_heads} heads, width {shape.hidden}, vocab {shape.vocab}, "
        f"{n_params / 1e6:.0f}M parameters (built in {built:.1f} s, RSS {peak.rss_mb():.0f} MB)",
        flush=True,
    )
    units = unit_costs(loaded, items, repeats, peak, bf16, scan_layers, scan_items, log=lambda s: print(s, flush=True))
    layers = units.pop("_scan_layers")["layers"]  # type: ignore[index]
    nbytes = {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]
    peak.close()
    return {
        "size": size,
        "shape": shape.to_dict(),
        "n_params": n_params,
        "n_params_non_embedding": shape.n_params_non_embedding,
        "n_total_heads": shape.n_total_heads,
        "weights_mb": n_params * nbytes / 2**20,
        "build_s": built,
        "units": units,
        "scan_layers": layers,
        "items": items,
        "repeats": repeats,
    }


def _subprocess_size(size: str, args: argparse.Namespace) -> dict[str, Any]:
    """one_size in a fresh process (its own peak RSS), through a JSON file."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "size.json"
        cmd = [
            sys.executable,
            __file__,
            "--one",
            size,
            "--items",
            str(args.items),
            "--repeats",
            str(args.repeats),
            "--scan-layers",
            str(args.scan_layers),
            "--scan-items",
            str(args.scan_items),
            "--json-out",
            str(out),
        ]
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())


def _two_way(x1: np.ndarray, x2: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Least squares y = a + b1 x1 + b2 x2 with 95% t intervals of b1 and b2 (n - 3 degrees of freedom)."""
    from scipy import stats

    X = np.column_stack([np.ones_like(x1), x1, x2])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    dof = len(y) - 3
    s2 = float(((y - X @ beta) ** 2).sum() / dof)
    se = np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X)))
    half = stats.t.ppf(0.975, dof) * se
    return {
        "item_slope_params": float(beta[1]),
        "item_slope_params_ci": [float(beta[1] - half[1]), float(beta[1] + half[1])],
        "item_slope_heads": float(beta[2]),
        "item_slope_heads_ci": [float(beta[2] - half[2]), float(beta[2] + half[2])],
    }


def fit(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per unit: log-log least squares of seconds on non-embedding and on all parameters (slope, its 95% CI, R^2,
    the largest factor between a measured point and the fit), and peak memory linear in the weights' MB."""
    from scipy import stats

    out: dict[str, dict[str, Any]] = {}
    n = len(records)
    tq = stats.t.ppf(0.975, n - 2) if n > 2 else float("nan")
    wmb = np.array([r["weights_mb"] for r in records])
    for unit in UNITS:
        if not all(unit in r["units"] for r in records):
            continue
        y = np.log([r["units"][unit]["seconds"] for r in records])
        entry: dict[str, Any] = {}
        for name, key in (("", "n_params_non_embedding"), ("_params_total", "n_params")):
            x = np.log([r[key] for r in records])
            lr = stats.linregress(x, y)
            half = tq * lr.stderr if n > 2 else float("nan")
            resid = float(np.exp(np.abs(y - (lr.intercept + lr.slope * x))).max())
            entry |= {
                f"slope{name}": float(lr.slope),
                f"slope{name}_ci": [float(lr.slope - half), float(lr.slope + half)],
                f"intercept{name}": float(lr.intercept),
                f"r2{name}": float(lr.rvalue**2),
                f"max_factor{name}": resid,
            }
        if unit == "scan" and n > 3:  # the scan's cost per item (every head): log-linear in parameters AND heads
            entry |= _two_way(
                np.log([r[k] for r in records for k in ("n_params_non_embedding",)]),
                np.log([r["n_total_heads"] for r in records]),
                y + np.log([r["n_total_heads"] for r in records]),
            )
        peaks = np.array([r["units"][unit]["peak_mb"] for r in records])
        b, a = np.polyfit(wmb, peaks, 1) if n > 1 else (1.0, float(peaks[0] - wmb[0]))
        entry["mem"] = {"base_mb": float(a), "per_weight_mb": float(b)}
        entry["flops_per_s"] = [float(r["units"][unit]["flops_per_s"]) for r in records]
        out[unit] = entry
    return out


def markdown(records: list[dict[str, Any]], fits: dict[str, dict[str, Any]]) -> str:
    """The cost table (ms per unit and peak MB per size) and the fitted exponents."""
    head = (
        ["size", "layers x heads", "width", "vocab", "params (M)", "non-emb (M)"]
        + [f"{u} ms" for u in UNITS]
        + ["peak MB"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        s = r["shape"]
        cells = [
            r["size"],
            f"{s['n_layers']} x {s['n_heads']} ({s['n_kv_heads']} KV)",
            str(s["hidden"]),
            str(s["vocab"]),
            f"{r['n_params'] / 1e6:.0f}",
            f"{r['n_params_non_embedding'] / 1e6:.0f}",
        ]
        cells += [f"{r['units'][u]['seconds'] * 1e3:.1f}" if u in r["units"] else "" for u in UNITS]
        cells.append(f"{max(v['peak_mb'] for v in r['units'].values()):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| unit | slope vs non-emb params [95% CI] | slope vs all params [95% CI] | R^2 | max factor | "
        "GFLOP/s (smallest -> largest) | peak MB = a + b x weights MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for unit, f in fits.items():
        ci, ct = f["slope_ci"], f["slope_params_total_ci"]
        extra = ""
        if "item_slope_heads" in f:
            p, h = f["item_slope_params_ci"], f["item_slope_heads_ci"]
            extra = (
                f"; per item (every head): params {f['item_slope_params']:.2f} [{p[0]:.2f}, {p[1]:.2f}] and "
                f"heads {f['item_slope_heads']:.2f} [{h[0]:.2f}, {h[1]:.2f}] jointly"
            )
        lines.append(
            f"| {unit} | {f['slope']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]{extra} | {f['slope_params_total']:.2f} "
            f"[{ct[0]:.2f}, {ct[1]:.2f}] | {f['r2']:.3f} | {f['max_factor']:.2f} | "
            f"{f['flops_per_s'][0] / 1e9:.0f} -> {f['flops_per_s'][-1] / 1e9:.0f} | "
            f"{f['mem']['base_mb']:.0f} + {f['mem']['per_weight_mb']:.2f} x |"
        )
    return "\n".join(lines)


def write_cost_model(
    path: Path,
    device: str,
    records: list[dict[str, Any]],
    fits: dict[str, dict[str, Any]],
    mach: dict[str, Any],
    tokens: int = BENCH_TOKENS,
) -> None:
    """Put this device's entry into the cost model file (other devices' entries and the overheads are kept)."""
    try:
        cost = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        cost = {}
    cost.setdefault("version", 1)
    cost["chars_per_token"] = CHARS_PER_TOKEN
    cost["overhead"] = cost.get("overhead") or OVERHEAD
    units = {
        u: {
            "intercept": f["intercept"],
            "slope": f["slope"],
            "slope_ci": f["slope_ci"],
            "r2": f["r2"],
            "max_factor": f["max_factor"],
            "slope_params_total": f["slope_params_total"],
            "slope_params_total_ci": f["slope_params_total_ci"],
            "mem": f["mem"],
        }
        | {
            k: f[k]
            for k in ("item_slope_params", "item_slope_params_ci", "item_slope_heads", "item_slope_heads_ci")
            if k in f
        }
        for u, f in fits.items()
    }
    machines = cost.setdefault("machines", {})
    # one entry per measured CPU: `cpu` is the first, another CPU model goes beside it as `cpu:<name>`
    # (entrainment plan picks the one measured on its own CPU; predict.measured_machine)
    key = device
    if device == "cpu" and "cpu" in machines and machines["cpu"]["machine"].get("cpu") != mach.get("cpu"):
        key = f"cpu:{mach.get('cpu')}"
    machines[key] = {
        "machine": mach,
        "dtype": mach["dtype"],
        "bench_tokens": tokens,
        "units": units,
        "sizes": [
            {k: r[k] for k in ("size", "shape", "n_params", "n_params_non_embedding", "n_total_heads", "weights_mb")}
            | {"units": r["units"]}
            for r in records
        ],
    }
    path.write_text(json.dumps(cost, indent=1) + "\n")


# --- the rehearsal: every stage's library functions on a random model -------------------------------------------


def rehearsal_tokenizer(vocab: int = 128256):
    """A real tokenizer for text prompts, offline: SmolLM2's (its dequantised folder, if cached) when its ids fit a
    vocabulary of `vocab` (49152 do for 128k), else the tests' tiny byte-level BPE (400 ids)."""
    try:
        if vocab < 49152:
            raise LookupError("vocabulary too small for SmolLM2's ids")
        from transformers import AutoTokenizer

        from entrainment.model.sources import dequantised_dir, resolve

        folder = dequantised_dir(resolve("smollm2-135m"))
        if (folder / "tokenizer.json").exists():
            return AutoTokenizer.from_pretrained(folder), "smollm2-135m"
    except Exception:  # noqa: BLE001 -- not installed: the tiny tokenizer
        pass
    from tests import tiny

    return tiny.tokenizer(), "tests/tiny.py BPE"


def rehearse(
    loaded,
    cfg,
    peak: Peak,
    n: dict[str, int] | None = None,
    log: Callable[[str], None] = print,
    counter: LayerFlops | None = None,
) -> dict[str, dict[str, Any]]:
    """The whole pipeline, flow-free, on a loaded model with a handful of items per stage.

    Args:
        loaded: the model (with a text tokenizer whose ids fit its vocabulary).
        cfg: the run's Config (relations, discovery relation, methods, epochs, seeds, null, ...).
        peak: the memory sampler.
        n: items per stage: measure (prompts per relation), train, dev, test (per relation), side (prompts per task).
        log: progress lines.
        counter: a LayerFlops on the model: each stage also gets its FLOPs and achieved FLOP/s.
    Returns:
        stage -> {"seconds", "peak_mb", "work"} (+ "flops", "flops_per_s" with a counter).
    """
    import polars as pl

    from entrainment.ablation import side_effects
    from entrainment.heads.masks import HeadSet, LearnedMask
    from entrainment.heads.random_heads import random_head_sets
    from entrainment.model import means
    from entrainment.model.scoring import top_tokens
    from entrainment.model.tokens import Tokens
    from entrainment.paths import ICL_DIR
    from entrainment.stages import ablate, discover, generate, measure, scan, stats

    n = {"measure": 16, "train": 8, "dev": 4, "test": 8, "side": 8} | (n or {})
    tk = Tokens(loaded.tokenizer, cfg.bos)
    out: dict[str, dict[str, Any]] = {}

    def stage(name: str, fn: Callable[[], Any], work: str) -> Any:
        peak.reset()
        if counter is not None:
            counter.total = 0.0
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        out[name] = {"seconds": time.perf_counter() - t0, "peak_mb": peak.peak_mb(), "work": work}
        if counter is not None:
            out[name] |= {"flops": counter.total, "flops_per_s": counter.total / max(out[name]["seconds"], 1e-9)}
        log(
            f"  {name:9s} {out[name]['seconds']:8.1f} s   peak {out[name]['peak_mb']:7.0f} MB   "
            + (f"{out[name]['flops_per_s'] / 1e9:8.1f} GFLOP/s   " if counter is not None else "")
            + f"({work})"
        )
        return result

    def sync() -> None:
        if peak.cuda:
            import torch

            torch.cuda.synchronize()

    rel = cfg.discover_relations[0]
    df = stage("generate", lambda: generate.from_config(cfg), "prompts.parquet rows")

    def pick(frame: pl.DataFrame, k: int) -> pl.DataFrame:
        return frame.head(k)

    small = pl.concat(
        [
            pick(
                df.filter(
                    (pl.col("relation") == r)
                    & (pl.col("split") == s)
                    & pl.col("condition").is_in(list(cfg.train_conditions))
                ),
                n[s],
            )
            for r in sorted(df["relation"].unique())
            for s in ("train", "dev", "test")
        ]
    )
    meas_rows = pl.concat(
        [pick(df.filter(pl.col("relation") == r), n["measure"]) for r in sorted(df["relation"].unique())]
    )

    def do_measure():
        m = measure.measure_frame(loaded, meas_rows, batch_size=cfg.batch_size, tokens=tk)
        ref = means.reference_prompts(small.filter(pl.col("relation") == rel), tk)[: n["measure"]]
        mu, _ = means.head_means(loaded, ref, cfg.batch_size)
        return m, mu

    measured, mu = stage("measure", do_measure, f"{len(meas_rows)} prompts x 2 arms + head means")
    with tempfile.TemporaryDirectory() as d:
        mp, pp = Path(d) / "m.parquet", Path(d) / "p.parquet"
        measured.write_parquet(mp)
        meas_rows.write_parquet(pp)
        stage("stats", lambda: stats.compute(mp, pp, cfg.confidence), "paired tests")
    rows = small.filter(pl.col("relation") == rel)
    first = discover.search_jobs(cfg, [rel])[0]  # the discover stage's first job: (relation, seed, resample)
    s = stage(
        "discover",
        lambda: discover.one_search(loaded, rows, *first, cfg, mu),
        f"{n['train']} train + {n['dev']} dev items x {cfg.epochs} epochs, 1 search",
    )
    removed = tuple(
        sorted((int(r["layer"]), int(r["head"])) for r in s.heads.filter(pl.col("removed")).iter_rows(named=True))
    )

    def do_scan():
        results = {}
        for r, method in scan.jobs(cfg, [rel]):  # the scan stage's jobs
            scores, effects, _ = scan.score_heads(loaded, rows, r, method, cfg, mu)
            agree = scan.agreement_rows(loaded, rows, r, method, scores, s.heads, cfg, mu)
            results[method] = (scores, agree)
        return results

    scans = stage(
        "scan",
        do_scan,
        f"{min(cfg.scan_items, n['dev'])} dev items x {loaded.info.n_total_heads} heads"
        f" x {len(cfg.methods())} method(s) + AtP + k-curves on {cfg.null_items} items",
    )
    heads = removed
    if not heads:  # a random model's search rarely removes a head: evaluate the scan's top 5 instead
        sc = scans[cfg.methods()[0]][0].filter(pl.col("method") == "scan").sort("rank").head(NULL_HEADS)
        heads = tuple(sorted(zip(sc["layer"].to_list(), sc["head"].to_list())))

    def do_ablate():
        mask = LearnedMask(loaded.info.spec, rel, cfg.seeds[0], None, HeadSet("rehearsal", heads))
        p = ablate.plan([mask], small["relation"].unique().to_list())  # the ablate stage's jobs
        res = [ablate.evaluate_relation(loaded, small, mrel, list(sets), r, cfg, mu) for mrel, sets, r in p.evals]
        tasks_, icl = ablate.side_tasks(cfg, rel, ICL_DIR)
        keep = [k for k in tasks_ if k not in icl][:2] + sorted(icl)[:1]
        tasks_ = {k: tasks_[k][: n["side"]] for k in keep}
        hs = HeadSet("rehearsal", heads)
        draws = random_head_sets(hs, loaded.info.n_layers, loaded.info.n_heads, 1, cfg.seed)
        side = side_effects.side_effects(loaded, tasks_, icl, hs, draws, rel, 0, cfg.batch_size, tk)
        return res, side

    stage(
        "ablate",
        do_ablate,
        f"{len(heads)} heads on {n['test']} test items x {small['relation'].n_unique()} "
        f"relations, null {cfg.null_draws} draws x {cfg.null_items} items, side effects",
    )
    row = meas_rows.row(0, named=True)
    stage("report", lambda: top_tokens(loaded, row, tk), "the report's example (two full-vocabulary passes)")
    return out


def rehearsal_config(**over: Any):
    """The rehearsal's Config: two relations, one seed, one search, the three ablation methods, a short search and a
    small null."""
    from entrainment.config import Config

    base = dict(
        relations=("country capital city", "country currency"),
        discover_relations=("country capital city",),
        seeds=(0,),
        search_resamples=1,
        epochs=2,
        scan_items=2,
        scan_k=2,
        random_draws=1,
        null_draws=8,
        null_items=4,
        max_pairs=12,
    )
    return Config(**(base | over))


def run_rehearsal(size: str, json_path: Path | None = None) -> None:
    """``--rehearsal SIZE``: build the random model, rehearse every stage on it, print (and write) the numbers."""
    peak = Peak("cpu")
    tok, tok_name = rehearsal_tokenizer(SIZES[size]["vocab_size"])
    t0 = time.perf_counter()
    loaded = build(size, "cpu", "float32", tokenizer=tok)
    print(
        f"rehearsal on random-llama-{size} ({loaded.info.n_params / 1e6:.0f}M parameters, "
        f"{loaded.info.n_layers} x {loaded.info.n_heads} heads; tokenizer {tok_name}); built in "
        f"{time.perf_counter() - t0:.1f} s, RSS {peak.rss_mb():.0f} MB",
        flush=True,
    )
    counter = LayerFlops(loaded)
    stages = rehearse(loaded, rehearsal_config(), peak, log=lambda s: print(s, flush=True), counter=counter)
    counter.close()
    total = sum(v["seconds"] for v in stages.values())
    top = max(v["peak_mb"] for v in stages.values())
    print(f"total {total:.1f} s, peak RSS {top:.0f} MB ({top / 1024:.2f} GiB)")
    if json_path:
        json_path.write_text(
            json.dumps(
                {"size": size, "stages": stages, "total_seconds": total, "peak_mb": top, "machine": machine()}, indent=1
            )
        )
    peak.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--items", type=int, default=32, help="items per unit measurement (32: the pipeline's batches)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats per unit (best kept)")
    ap.add_argument("--scan-layers", type=int, default=2, help="layers whose single-head masks the scan unit runs")
    ap.add_argument("--scan-items", type=int, default=8, help="items of the scan unit")
    ap.add_argument("--out-json", type=Path, default=COST_MODEL, help="the cost model file to write")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 4 items, nothing written")
    ap.add_argument("--rehearsal", metavar="SIZE", help="run the whole pipeline flow-free on this size instead")
    ap.add_argument("--rehearsal-json", type=Path, help="write the rehearsal's per-stage numbers here")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        args.json_out.write_text(
            json.dumps(
                one_size(args.one, args.items, args.repeats, scan_layers=args.scan_layers, scan_items=args.scan_items)
            )
        )
        return
    if args.rehearsal:
        run_rehearsal(args.rehearsal, args.rehearsal_json)
        return
    sizes = ["tiny", "tiny2"] if args.quick else [s.strip() for s in args.sizes.split(",") if s.strip()]
    if args.quick:
        args.items, args.repeats = 4, 1
    records = [_subprocess_size(s, args) for s in sizes]
    fits = fit(records)
    print()
    print(markdown(records, fits))
    if args.quick:
        print()
        run_rehearsal("tiny")
    else:
        write_cost_model(args.out_json, "cpu", records, fits, machine())
        print(f"\nwrote {args.out_json}")


if __name__ == "__main__":
    main()
