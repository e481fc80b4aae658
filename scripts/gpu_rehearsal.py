"""GPU rehearsal: the cost benchmark and a short pipeline on an 8B-shaped random model, on one CUDA device, offline.

On a CUDA machine with no network (random weights, no download; the rehearsal's tokenizer is SmolLM2's if its
dequantised copy is cached, else the tests' tiny BPE):

    CUDA_VISIBLE_DEVICES=0 HF_HUB_OFFLINE=1 .venv/bin/python scripts/gpu_rehearsal.py --out gpu_rehearsal.json

1. the cost benchmark of ``benchmarks/scale.py`` (every stage's unit of work) on random Llama-shaped models from
   SmolLM2-135M's shape to Llama-3.1-8B's, built directly on the GPU in bfloat16, search-side units under bf16
   autocast (the pipeline's CUDA setting), with the log-log fits;
2. the same units on every installed embedded model (``entrainment models``);
3. a short pipeline (every stage's library functions, ``scale.rehearse``) on the 8B-shaped model in bfloat16: two
   relations, one seed, two epochs, the three ablation methods, a 4-item scan of all 1024 heads, a 20-draw null.

It writes one JSON: per size and unit seconds, peak GPU memory (``torch.cuda.max_memory_allocated``) and achieved
FLOP/s; per pipeline stage seconds, peak GPU memory, FLOPs and FLOP/s; the machine and the exact command.
``--cost-model FILE`` also stores the fits as the file's ``cuda`` entry (what ``entrainment plan`` reads on a GPU).

``--dry-run`` runs the same code path on the CPU with two tiny Llama configs and a tiny pipeline in seconds (the test
suite does, tests/pipeline/test_plan.py).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from entrainment.model import sources

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _scale():
    """benchmarks/scale.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("entrainment_scale_bench", ROOT / "benchmarks" / "scale.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cost_benchmark(
    scale, sizes: list[str], device: str, dtype: str, items: int, repeats: int, scan_items: int, log=print
) -> list[dict[str, Any]]:
    """scale.unit_costs on each size built on `device` (search-side units under bf16 autocast on CUDA)."""
    records = []
    bf16 = device.startswith("cuda")
    for size in sizes:
        peak = scale.Peak(device)
        t0 = time.perf_counter()
        loaded = scale.build(size, device, dtype)
        built = time.perf_counter() - t0
        shape = scale.shape_of(size)
        log(
            f"{size}: {shape.n_layers} x {shape.n_heads} heads, {shape.n_params / 1e9:.2f}B parameters "
            f"(built in {built:.1f} s)"
        )
        units = scale.unit_costs(loaded, items, repeats, peak, bf16, scan_layers=2, scan_items=scan_items, log=log)
        units.pop("_scan_layers", None)
        nbytes = 4 if dtype == "float32" else 2
        n_params = sum(p.numel() for p in loaded.model.parameters())
        records.append(
            {
                "size": size,
                "shape": shape.to_dict(),
                "n_params": n_params,
                "n_params_non_embedding": shape.n_params_non_embedding,
                "n_total_heads": shape.n_total_heads,
                "weights_mb": n_params * nbytes / 2**20,
                "build_s": built,
                "units": units,
            }
        )
        peak.close()
        del loaded
        _free()
    return records


def embedded_benchmark(
    scale, device: str, dtype: str, items: int, repeats: int, scan_items: int, log=print
) -> list[dict[str, Any]]:
    """The same units on every installed embedded model (loaded the pipeline's way)."""
    from entrainment.model import loading

    out = []
    for m in sources.installed():
        if m["installed"] != "yes":
            continue
        try:
            loaded = loading.load(m["name"], device, dtype)
        except Exception as e:  # noqa: BLE001 -- an embedded model that cannot load here is reported, not fatal
            out.append({"model": m["name"], "error": f"{type(e).__name__}: {e}"})
            continue
        log(f"{m['name']}: {loaded.info.n_layers} x {loaded.info.n_heads} heads")
        peak = scale.Peak(device)
        units = scale.unit_costs(
            loaded, items, repeats, peak, device.startswith("cuda"), scan_layers=2, scan_items=scan_items, log=log
        )
        units.pop("_scan_layers", None)
        peak.close()
        out.append({"model": m["name"], "n_params": loaded.info.n_params, "units": units})
        loading._LOADED.clear()
        del loaded
        _free()
    return out


def pipeline(scale, size: str, device: str, dtype: str, over: dict[str, Any], log=print) -> dict[str, Any]:
    """scale.rehearse on a random model of `size` with a real tokenizer."""
    tok, tok_name = scale.rehearsal_tokenizer(scale.SIZES[size]["vocab_size"])
    peak = scale.Peak(device)
    t0 = time.perf_counter()
    loaded = scale.build(size, device, dtype, tokenizer=tok)
    built = time.perf_counter() - t0
    log(
        f"pipeline on random-llama-{size} ({loaded.info.n_params / 1e9:.2f}B parameters, {dtype}, tokenizer "
        f"{tok_name}), built in {built:.1f} s"
    )
    counter = scale.LayerFlops(loaded)
    cfg = scale.rehearsal_config(device=device.split(":")[0], **over)
    stages = scale.rehearse(loaded, cfg, peak, log=log, counter=counter)
    counter.close()
    peak.close()
    key = "peak_gpu_mb" if device.startswith("cuda") else "peak_rss_mb"
    stages = {k: {key if kk == "peak_mb" else kk: vv for kk, vv in v.items()} for k, v in stages.items()}
    del loaded
    _free()
    return {
        "size": size,
        "dtype": dtype,
        "tokenizer": tok_name,
        "build_s": built,
        "config": cfg.to_dict(),
        "stages": stages,
        "total_seconds": sum(v["seconds"] for v in stages.values()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_rehearsal.json"), help="the JSON to write")
    ap.add_argument("--dry-run", action="store_true", help="same code path on the CPU, tiny models, seconds")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--sizes", default="135m,360m,600m,1b,8b", help="cost benchmark sizes (benchmarks/scale.py)")
    ap.add_argument("--pipeline-size", default="8b")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scan-items", type=int, default=8)
    ap.add_argument("--no-embedded", action="store_true", help="skip the embedded models")
    ap.add_argument("--cost-model", type=Path, help="also store the fits as this cost model file's device entry")
    args = ap.parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else argv
    scale = _scale()
    import torch

    if args.dry_run:
        device, dtype, sizes, psize = "cpu", "float32", ["tiny", "tiny2"], "tiny"
        items, repeats, scan_items, embedded = 4, 1, 2, False
        over: dict[str, Any] = {"compare_methods": ("zero", "mean", "resample")}
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device (use --dry-run to exercise the script on the CPU)")
        device, dtype = args.device, args.dtype
        sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
        psize, items, repeats, scan_items, embedded = (
            args.pipeline_size,
            args.items,
            args.repeats,
            args.scan_items,
            not args.no_embedded,
        )
        over = {"compare_methods": ("zero", "mean", "resample"), "scan_items": 4, "null_draws": 20, "null_items": 8}
    t0 = time.perf_counter()
    log = lambda s: print(s, flush=True)  # noqa: E731
    records = cost_benchmark(scale, sizes, device, dtype, items, repeats, scan_items, log)
    fits = scale.fit(records) if len(records) > 1 else {}
    mach = scale.machine(device, dtype)
    result: dict[str, Any] = {
        "command": " ".join(
            shlex.quote(a)
            for a in [
                sys.executable,
                str(Path(__file__).resolve().relative_to(ROOT))
                if Path(__file__).resolve().is_relative_to(ROOT)
                else __file__,
            ]
            + list(argv_used)
        ),
        "dry_run": args.dry_run,
        "machine": mach,
        "cost_benchmark": {"sizes": records, "fits": fits, "table": scale.markdown(records, fits) if fits else ""},
        "embedded": embedded_benchmark(scale, device, dtype, items, repeats, scan_items, log) if embedded else [],
        "pipeline": pipeline(scale, psize, device, dtype, over, log),
    }
    result["total_seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    if args.cost_model and fits:
        scale.write_cost_model(args.cost_model, device.split(":")[0], records, fits, mach)
    log(f"wrote {args.out} ({result['total_seconds']:.1f} s)")
    return result


if __name__ == "__main__":
    main()
