"""`entrainment plan`: the predicted seconds and peak memory of a configured run, per stage, before it runs.

No model weights are loaded and neither torch nor transformers is imported. Three inputs:

1. **The model's shape** (layers, heads, KV heads, width, MLP width, vocabulary, tied embeddings) from its
   ``config.json`` (a local folder, the hub cache, or the dequantised copy of an embedded GGUF) or, before a GGUF
   has been dequantised, from its header. ``Shape`` turns it into parameter counts and FLOPs per row.
2. **The work** of every stage, counted from the prompts table the Config generates (``generate.from_config``: cheap,
   no model) and the stage formulas (``entrainment/plan/work.py``: items x epochs x seeds x resamples, heads x
   items, draws x items, passes x items, ...). Prompt lengths come from the model's ``tokenizer.json`` (the Rust
   ``tokenizers`` library) or, without one, from characters / ``chars_per_token``.
3. **The cost model** ``entrainment/plan/cost_model.json`` written by ``benchmarks/scale.py``: per unit of work (a
   measured prompt, a discovery item-epoch forward + backward, a scan head-item row, a null draw-item, an ablation
   item-pass, ...) a power law ``seconds = exp(a) * N^b`` in the non-embedding parameter count N (fitted on random
   Llama-shaped models from SmolLM2-135M's shape to Llama-3.2-1B's, at ``bench_tokens`` tokens per prompt; a row of
   T tokens costs T / bench_tokens of that), and per unit a linear fit of peak RSS on the weights' size.

On a CUDA device without a measured GPU cost model (``scripts/gpu_rehearsal.py`` writes one), the seconds are a
**projection**: FLOPs at an assumed achieved rate plus a per-layer launch overhead per forward call; the device
string says so. Convergence and repeated head sets can only make a run shorter than predicted: discovery is
predicted at the full step budget (``max_steps``, capped by ``epochs``) and ablation with ``seeds + 1`` distinct
head sets per discovery relation.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from entrainment import stage_graph
from entrainment.model.shape import Lengths, Shape, model_folder, model_shape
from entrainment.plan.work import known_epochs, known_head_sets, work

COST_MODEL = Path(__file__).with_name("cost_model.json")
STAGE_ORDER = tuple(s.name for s in stage_graph.STAGES)  # the run order, declared once in the stage graph
# GPU projection (no measured GPU cost model): achieved bf16 FLOP/s on the batched passes and per-layer overhead
# of one forward call (kernel launches, hooks). Assumed, not measured: see docs/scaling-and-gpus.md.
GPU_ASSUMED_FLOPS = 2.0e14
GPU_LAYER_OVERHEAD_S = 1.5e-4
# Peak RSS (MiB) of the one-time GGUF dequantisation: base + per_weight x the float weights' MiB, fitted on the two
# Qwen2.5-Coder models (3827 MiB at 2404 MiB of weights, 8855 MiB at 6779 MiB; /usr/bin/time -v, docs/models.md).
DEQUANT_BASE_MB = 1064.0
DEQUANT_PER_WEIGHT_MB = 1.149


def load_cost_model(path: Path | None = None) -> dict[str, Any]:
    """entrainment/plan/cost_model.json (benchmarks/scale.py writes it)."""
    p = Path(path or os.environ.get("ENTRAINMENT_COST_MODEL") or COST_MODEL)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        from entrainment.errors import InputError

        raise InputError(
            p, "cost model", str(p), "missing; write it with: .venv/bin/python benchmarks/scale.py"
        ) from None


def unit_seconds(fit: dict[str, Any], shape: Shape, tokens: float, bench_tokens: float) -> float:
    """Seconds of one row of `tokens` tokens under a fitted unit: exp(a) N^b x tokens / bench_tokens."""
    n = shape.n_params_non_embedding
    return math.exp(fit["intercept"]) * n ** fit["slope"] * max(tokens, 1.0) / bench_tokens


def unit_peak_mb(fit: dict[str, Any], weights_mb: float) -> float:
    """Peak RSS (MB) while a unit runs: base + per_weight_mb x the weights' MB."""
    mem = fit["mem"]
    return mem["base_mb"] + mem["per_weight_mb"] * weights_mb


def _layer_share(unit: str, shape: Shape) -> float:
    if unit == "scan":
        return (shape.n_layers + 1) / (2 * shape.n_layers)
    if unit == "null":
        return 0.85
    return 1.0


def _unit_flops(unit: str, shape: Shape, tokens: float) -> float:
    probe = unit in ("scan", "null")
    fwd = shape.forward_flops(tokens, _layer_share(unit, shape), 1.0, 2 if probe else None)
    return fwd * (2.0 if unit in ("discover", "atp") else 1.0)


def flop_rate(measured: dict[str, Any], shape: Shape) -> float:
    """The FLOP/s the measured `evaluate` unit achieves on this model's shape (its forward FLOPs over its seconds):
    the rate the planner gives linear algebra it has no unit for."""
    t = measured["bench_tokens"]
    return _unit_flops("evaluate", shape, t) / unit_seconds(measured["units"]["evaluate"], shape, t, t)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measured_machine(machines: dict[str, Any], device: str, cpu: str | None = None) -> dict[str, Any] | None:
    """The cost model measured for this device: on a CPU, the entry measured on a CPU of this name if there is one
    (keys ``cpu`` and ``cpu:<name>``, as benchmarks/scale.py writes them), else the ``cpu`` entry.

    Args:
        machines: the cost model's ``machines`` object.
        device: ``cpu``, ``cuda`` or ``mps``.
        cpu: this machine's CPU name (default: /proc/cpuinfo's); ignored off the CPU.
    Returns:
        The measured entry, or None (no measured cost model for the device: a projection).
    """
    if device != "cpu":
        return machines.get(device)
    here = cpu if cpu is not None else _cpu_name()
    same = [v for k, v in machines.items() if k.split(":", 1)[0] == "cpu" and v["machine"].get("cpu") == here]
    return same[0] if same else machines.get("cpu")


def _device(cfg) -> str:
    from entrainment.model.loading import pick_device_light

    dev = pick_device_light(cfg.device)
    return "cuda" if dev.startswith("cuda") else ("mps" if dev.startswith("mps") else "cpu")


def _dtype_bytes(cfg, device: str) -> int:
    if cfg.dtype == "auto":
        return 2 if device == "cuda" else 4
    return 4 if cfg.dtype == "float32" else 2


def _activation_mb(unit: str, shape: Shape, tokens: float, batch: int, nbytes: int) -> float:
    """Analytic activation memory of one forward call (GPU projection): training keeps every layer's activations,
    the scan keeps every layer's output of a 16-item chunk, every pass holds the last position's full logits."""
    per_layer_token = (10 * shape.hidden + 4 * shape.intermediate) * nbytes
    if unit in ("discover", "atp"):
        act = batch * tokens * shape.n_layers * per_layer_token
    else:
        act = batch * tokens * per_layer_token
    if unit in ("scan", "null"):
        act += 16 * tokens * shape.n_layers * shape.hidden * nbytes
    logits = batch * shape.vocab * 4 * (3 if unit == "ablate" else 1)
    return (act + logits) / 2**20


def predict_model(cfg, spec: str, prompts, cost: dict[str, Any]) -> tuple[dict[str, dict[str, float]], str, dict]:
    """Per-stage {"seconds", "peak_mb"} of one model's share of the run, the device label and details."""
    device = _device(cfg)
    shape = model_shape(spec)
    folder, gguf_file = model_folder(spec)
    lengths = Lengths(folder, cost.get("chars_per_token", 4.45))
    known, ran = known_head_sets(cfg, spec), known_epochs(cfg, spec)
    items = work(cfg, prompts, shape, lengths, known, ran)
    measured = measured_machine(cost["machines"], device)
    nbytes = _dtype_bytes(cfg, device)
    weights_mb = shape.n_params * nbytes / 2**20
    over = cost.get("overhead", {})
    stages: dict[str, dict[str, float]] = {}
    for w in items:
        st = stages.setdefault(w.stage, {"seconds": 0.0, "peak_mb": 0.0})
        if w.unit == "task":  # Prefect's own time per task (state, cache, result files)
            st["seconds"] += w.rows * over.get("task_s", 1.4)
            continue
        if w.unit == "flops":  # dense linear algebra outside forward passes (head_circuits): at the achieved rate
            rate = GPU_ASSUMED_FLOPS if measured is None else flop_rate(measured, shape)
            st["seconds"] += w.rows / rate
            continue
        if measured is not None:
            fit = measured["units"][w.unit]
            st["seconds"] += w.rows * w.factor * unit_seconds(fit, shape, w.tokens, measured["bench_tokens"])
            peak = unit_peak_mb(fit, weights_mb)
        else:
            calls = math.ceil(w.rows / max(1, w.batch))
            st["seconds"] += (
                w.rows * w.factor * _unit_flops(w.unit, shape, w.tokens) / GPU_ASSUMED_FLOPS
                + calls * shape.n_layers * GPU_LAYER_OVERHEAD_S
            )
            peak = weights_mb + _activation_mb(w.unit, shape, w.tokens, w.batch, nbytes) + over.get("cuda_base_mb", 500)
        st["peak_mb"] = max(st["peak_mb"], peak)
    runtime_mb = over.get("runtime_mb", 400.0)
    for name in STAGE_ORDER:
        if (
            (name == "scan" and not cfg.scan)
            or (name == "heads" and not cfg.head_types)
            or (name == "sentences" and not cfg.sentences)
        ):
            continue
        st = stages.setdefault(name, {"seconds": 0.0, "peak_mb": 0.0})
        st["seconds"] += over.get("stage_s", {}).get(name, 1.0)
        st["peak_mb"] = max(st["peak_mb"], runtime_mb) + (over.get("prefect_mb", 0.0))
    # the first model stage loads the weights (and dequantises an embedded GGUF once)
    load = weights_mb / over.get("load_mb_per_s", 400.0)
    if gguf_file is not None and folder is None:
        load += over.get("dequantise_s_per_gb", 150.0) * weights_mb / 1024
        # dequantising a GGUF holds the quantised tensors, the float copies and the model at once: measured peak RSS
        # 3.74 GiB (Qwen2.5-Coder-0.5B) and 8.65 GiB (1.5B) on CPU in float32 (docs/models.md)
        stages["measure"]["peak_mb"] = max(
            stages["measure"]["peak_mb"],
            over.get("dequantise_base_mb", DEQUANT_BASE_MB)
            + over.get("dequantise_per_weight_mb", DEQUANT_PER_WEIGHT_MB) * weights_mb,
        )
    stages["measure"]["seconds"] += load
    if measured is not None:
        label = f"{device}: {measured['machine'].get('cpu' if device == 'cpu' else 'gpu', '?')}"
        here = _cpu_name() if device == "cpu" else None
        if here is not None and (
            here != measured["machine"].get("cpu") or (os.cpu_count() or 1) != measured["machine"].get("cores")
        ):
            label += f" (cost model measured there; this machine: {here}, {os.cpu_count()} cores)"
        else:
            label += f", {measured['machine'].get('cores')} cores, {measured.get('dtype')}"
    else:
        label = (
            f"{device}: PROJECTION (no measured {device} cost model; FLOPs at an assumed "
            f"{GPU_ASSUMED_FLOPS / 1e12:.0f} TFLOP/s)"
        )
    return (
        stages,
        label,
        {
            "shape": shape.to_dict(),
            "n_params": shape.n_params,
            "lengths": lengths.source,
            "work": items,
            "head_sets": "from heads.parquet" if known is not None else "upper bound",
            "epochs": "from discovery.parquet" if ran is not None else "upper bound",
        },
    )


def predict(cfg, cost_model: Path | None = None) -> dict[str, Any]:
    """The predicted seconds and peak memory of `entrainment run` with this Config on this machine, per stage.

    Args:
        cfg: the run's Config (every option of `run`).
        cost_model: another cost model file (default entrainment/plan/cost_model.json).
    Returns:
        {"stages": {stage: {"seconds": s, "peak_mb": m}}, "total_seconds": t, "device": d}; with several models
        (--models) seconds add up and peaks are the largest.
    """
    from entrainment.stages import generate

    cost = load_cost_model(cost_model)
    prompts = generate.from_config(cfg)
    total: dict[str, dict[str, float]] = {}
    labels = []
    for spec in cfg.model_specs():
        stages, label, _ = predict_model(cfg, spec, prompts, cost)
        labels.append(label)
        for name, st in stages.items():
            t = total.setdefault(name, {"seconds": 0.0, "peak_mb": 0.0})
            t["seconds"] += st["seconds"]
            t["peak_mb"] = max(t["peak_mb"], st["peak_mb"])
    ordered = {
        name: {"seconds": round(total[name]["seconds"], 3), "peak_mb": round(total[name]["peak_mb"], 1)}
        for name in STAGE_ORDER
        if name in total
    }
    return {
        "stages": ordered,
        "total_seconds": round(sum(s["seconds"] for s in ordered.values()), 3),
        "device": "; ".join(dict.fromkeys(labels)),
    }


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.1f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def render(pred: dict[str, Any], fmt: str = "table") -> str:
    """The prediction as text: a table (`table`) or the JSON object (`json`).

    Args:
        pred: predict()'s result.
        fmt: table | json.
    Returns:
        The text to print.
    """
    if fmt == "json":
        return json.dumps(pred)
    rows = [("stage", "seconds", "time", "peak memory")]
    rows += [
        (name, f"{st['seconds']:.1f}", _duration(st["seconds"]), f"{st['peak_mb'] / 1024:.2f} GiB")
        for name, st in pred["stages"].items()
    ]
    peak = max((st["peak_mb"] for st in pred["stages"].values()), default=0.0)
    rows.append(("total", f"{pred['total_seconds']:.1f}", _duration(pred["total_seconds"]), f"{peak / 1024:.2f} GiB"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa
    out = [f"predicted on {pred['device']}", line(rows[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows[1:-1]] + ["  ".join("-" * w for w in widths), line(rows[-1])]
    out.append(
        "(a cold run, no caches. With a previous run's heads.parquet / discovery.parquet in --out: its head "
        "sets and epochs run; else upper bounds: every search runs --epochs, seeds + 1 distinct head sets)"
    )
    return "\n".join(out)
