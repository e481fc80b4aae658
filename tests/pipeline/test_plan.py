"""`entrainment plan`: per-stage predictions of a run without loading a model; the GPU rehearsal's dry run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from entrainment.config import Config, make_config
from entrainment.model import shape
from entrainment.plan import predict
from tests import tiny
from tests.helpers import CEILING_S, ROOT, cli, run_watched

OPTIONS = dict(
    relations=["toy capital", "toy color"],
    discover_relations=["toy capital"],
    max_pairs=4,
    search_pairs=[3, 2, 3],
    passage_items=2,
    seeds=[0, 1],
    search_resamples=2,
    epochs=3,
    discover_batch_size=4,
    random_draws=2,
    null_draws=4,
    null_items=4,
    scan_items=3,
    scan_k=2,
    device="cpu",
)
HEAVY = ("torch", "transformers", "transformers.models.llama.modeling_llama", "prefect")


def _toml(opts: dict) -> str:
    def value(v):
        if isinstance(v, list):
            return "[" + ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in v) + "]"
        return f'"{v}"' if isinstance(v, str) else str(v)

    return "".join(f"{k} = {value(v)}\n" for k, v in opts.items())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from tests.toy_data import toy_lre

    d = tmp_path_factory.mktemp("plan")
    lre = toy_lre(d / "lre")
    model = tiny.save("llama", d / "model")
    (d / "c.toml").write_text(_toml(OPTIONS | {"model": model, "data_dir": str(lre)}))
    return d, lre, model


def _check(pred: dict, stages: tuple[str, ...] = predict.STAGE_ORDER) -> None:
    assert set(pred) == {"stages", "total_seconds", "device"}
    assert tuple(pred["stages"]) == stages
    for name, st in pred["stages"].items():
        assert set(st) == {"seconds", "peak_mb"}, name
        assert st["seconds"] > 0 and st["peak_mb"] > 0, (name, st)
    assert pred["total_seconds"] == pytest.approx(sum(s["seconds"] for s in pred["stages"].values()), abs=0.01)
    assert isinstance(pred["device"], str) and pred["device"].startswith("cpu")


def test_predict_loads_no_model(project):
    """predict() in a fresh process: every stage positive, and neither torch nor transformers (let alone the Llama
    modelling code that loads weights) is imported."""
    d, _, _ = project
    code = (
        "import json, sys\n"
        "from entrainment.config import make_config\n"
        "from entrainment.plan import predict\n"
        f"pred = predict.predict(make_config({str(d / 'c.toml')!r}, out={str(d / 'out')!r}))\n"
        f"print(json.dumps({{'pred': pred, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    r = run_watched([sys.executable, "-c", code])
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    _check(got["pred"])


def test_plan_command_json_and_table(project):
    d, _, _ = project
    r = cli("plan", "--config", str(d / "c.toml"), "--out", str(d / "out"), "--format", "json")
    assert r.returncode == 0, r.stderr[-2000:]
    _check(json.loads(r.stdout))
    r = cli("plan", "--config", str(d / "c.toml"), "--out", str(d / "out"), "--no-scan")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    for word in ("generate", "measure", "stats", "discover", "ablate", "report", "total"):
        assert word in rows, (word, r.stdout)
    assert "scan" not in rows and "GiB" in r.stdout


def test_prediction_follows_the_work(project):
    """More epochs: only discovery grows, about in proportion; no scan: no scan stage; a wider model: slower."""
    d, lre, model = project
    base = make_config(d / "c.toml", out=d / "out")
    a, b = predict.predict(base), predict.predict(base.replace(epochs=6))
    assert b["stages"]["discover"]["seconds"] > 1.5 * a["stages"]["discover"]["seconds"] - 10
    assert b["stages"]["discover"]["seconds"] > a["stages"]["discover"]["seconds"]
    for name in ("measure", "scan", "ablate"):
        assert b["stages"][name]["seconds"] == pytest.approx(a["stages"][name]["seconds"])
    _check(predict.predict(base.replace(scan=False)), tuple(s for s in predict.STAGE_ORDER if s != "scan"))
    wide = tiny.save("llama", d / "wide", hidden_size=256, intermediate_size=512, num_hidden_layers=4)
    c = predict.predict(base.replace(model=wide))
    assert c["stages"]["scan"]["seconds"] > a["stages"]["scan"]["seconds"]
    assert c["stages"]["measure"]["peak_mb"] >= a["stages"]["measure"]["peak_mb"]


def test_plan_uses_the_cost_model_measured_on_this_cpu(project, monkeypatch):
    """With CPU entries from two machines, plan prices the run with the one measured on its own CPU (twice as fast
    there: less time in every model stage; the fixed overheads stay), and with the first `cpu` entry on a CPU nobody
    measured."""
    d, _, _ = project
    # the embedded SmolLM2-135M's shape (read from its GGUF header, nothing loaded), so model time is not negligible
    cfg = make_config(d / "c.toml", out=d / "out").replace(model="smollm2-135m")
    cost = predict.load_cost_model()
    first = cost["machines"]["cpu"]
    fast = json.loads(json.dumps(first))
    fast["machine"]["cpu"] = "Test CPU 9000"
    for fit in fast["units"].values():
        fit["intercept"] -= 0.6931471805599453  # exp(a) halved: every unit twice as fast
    two = cost | {"machines": {"cpu": first, "cpu:Test CPU 9000": fast}}
    assert predict.measured_machine(two["machines"], "cpu", cpu="Test CPU 9000") is fast
    assert predict.measured_machine(two["machines"], "cpu", cpu="Unmeasured CPU") is first
    assert predict.measured_machine(two["machines"], "cuda") is None
    monkeypatch.setattr(predict, "load_cost_model", lambda path=None: two)
    monkeypatch.setattr(predict, "_cpu_name", lambda: "Test CPU 9000")
    here = predict.predict(cfg)
    monkeypatch.setattr(predict, "_cpu_name", lambda: "Unmeasured CPU")
    other = predict.predict(cfg)
    assert "Test CPU 9000" in here["device"] and "this machine: Unmeasured CPU" in other["device"]
    for name in ("discover", "scan", "ablate"):
        assert here["stages"][name]["seconds"] < 0.9 * other["stages"][name]["seconds"], name
    for name in ("generate", "stats"):
        assert here["stages"][name]["seconds"] == pytest.approx(other["stages"][name]["seconds"])


def test_shapes_count_parameters_exactly():
    """The parameter counts plan's cost model is fitted on (checked against the published models)."""
    llama1b = shape.Shape(16, 32, 8, 64, 2048, 8192, 128256, tied=True)
    assert llama1b.n_params == 1_235_814_400
    assert shape.Shape(30, 9, 3, 64, 576, 1536, 49152).n_params == 134_515_008  # SmolLM2-135M
    assert shape.Shape(32, 32, 8, 128, 4096, 14336, 128256, tied=False).n_params == 8_030_261_248  # Llama-3.1-8B
    assert llama1b.n_params_non_embedding == llama1b.n_params - 128256 * 2048
    assert llama1b.forward_flops(20) > 2 * llama1b.n_params_non_embedding * 20


def test_gpu_rehearsal_dry_run(tmp_path):
    """scripts/gpu_rehearsal.py --dry-run: the GPU script's whole code path on the CPU with tiny models."""
    out = tmp_path / "dry.json"
    r = subprocess.run(
        [sys.executable, "scripts/gpu_rehearsal.py", "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=CEILING_S,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["dry_run"] is True and "gpu_rehearsal.py --dry-run" in got["command"]
    sizes = got["cost_benchmark"]["sizes"]
    assert [s["size"] for s in sizes] == ["tiny", "tiny2"]
    for s in sizes:
        for unit in ("measure", "evaluate", "discover", "atp", "scan", "null", "ablate"):
            u = s["units"][unit]
            assert u["seconds"] > 0 and u["flops_per_s"] > 0 and u["peak_mb"] > 0, (s["size"], unit)
    assert set(got["cost_benchmark"]["fits"]) >= {"measure", "scan", "discover"}
    stages = got["pipeline"]["stages"]
    assert set(stages) == {"generate", "measure", "stats", "discover", "scan", "ablate", "report"}
    for name, st in stages.items():
        assert st["seconds"] > 0 and st["peak_rss_mb"] > 0, name
    for name in ("measure", "discover", "scan", "ablate"):
        assert stages[name]["flops"] > 0 and stages[name]["flops_per_s"] > 0, name
    assert Path(ROOT / "scripts" / "gpu_rehearsal.py").exists()


def test_the_plans_side_effect_prompts_are_the_evaluations():
    """work.side_texts mirrors entrainment.stages.ablate.side_tasks without torch: the same number of prompts for
    the default and a limited side-effect control (side_items, side_relations)."""
    from entrainment.paths import ICL_DIR
    from entrainment.plan import work
    from entrainment.stages import ablate

    for over in ({}, {"side_items": 3, "side_relations": 2, "side_icl_items": 5}):
        cfg = Config(**over)
        tasks_, _ = ablate.side_tasks(cfg, "country capital city", ICL_DIR)
        assert len(work.side_texts(cfg, "country capital city")) == sum(len(v) for v in tasks_.values())
    limited = ablate.side_tasks(Config(side_relations=2), "country capital city", ICL_DIR)[0]
    assert len([k for k in limited if not k.startswith("icl:")]) == 2


def test_cross_fitting_heads_and_sentences_are_priced(project):
    """Cross-fitting adds discover and ablate work; the heads and sentences stages appear only when `run` runs them,
    and more sentence draws cost more."""
    d, _, _ = project
    base = make_config(d / "c.toml", out=d / "out")
    off, on = predict.predict(base.replace(crossfit_folds=0)), predict.predict(base.replace(crossfit_folds=2))
    for stage in ("discover", "ablate"):
        assert on["stages"][stage]["seconds"] > off["stages"][stage]["seconds"], stage
    assert on["stages"]["measure"]["seconds"] == pytest.approx(off["stages"]["measure"]["seconds"])
    bare = predict.predict(base.replace(head_types=False, sentences=False))
    assert "heads" not in bare["stages"] and "sentences" not in bare["stages"]
    few, many = (predict.predict(base.replace(sentence_draws=n))["stages"]["sentences"]["seconds"] for n in (1, 30))
    assert many > few
