"""The `entrainment` command line (typer): one command per stage, `run`, `plan`, `sql`, `models`, `server`.

Each stage command checks its inputs (cli/preflight.py), then either prints the recorded result of an unchanged
rerun (cli/fastpath.py, without importing Prefect or torch) or runs that stage's Prefect flow under the output
folder's lock. Bad input exits with status 2 and one line on stderr; nothing else prints a traceback.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from cli import options, preflight
from cli.output import emit
from entrainment.config import Config, default, make_config
from entrainment.errors import InputError
from entrainment.paths import QUICK_CONFIG
from entrainment.store.lock import folder_lock

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Measure contextual entrainment and find the attention heads behind it.",
)


def _flow(module: str, name: str | None = None) -> Callable:
    """A flow, imported only when it has to run (Prefect and torch load with it)."""
    import importlib

    return getattr(importlib.import_module(f"flows.{module}"), name or f"{module}_flow")


def _stage(
    command: str,
    cfg: Config,
    call: Callable[[], dict],
    lines: Callable[[dict], tuple[list[str], list[str]]],
    extra: Any = None,
) -> None:
    """Run one command: the recorded lines if nothing changed (no Prefect started), else the flow under the folder
    lock; print its lines and record the success."""
    from cli import fastpath

    if fastpath.enabled():
        cached = fastpath.lookup(command, cfg, extra)
        if cached is not None:
            emit("\n".join(cached + ["(nothing changed since the last run: every output is up to date)"]))
            return
    from cli.server import use_running

    use_running()  # the project's background server, if it is up
    with folder_lock(cfg.out):
        m = call()
        out_lines, outputs = lines(m)
        emit("\n".join(out_lines))
        if fastpath.enabled():
            fastpath.store(command, cfg, out_lines, outputs, extra)


def _outputs(m: dict) -> list[str]:
    return list(m["outputs"])


def _first(m: dict) -> str:
    return next(iter(m["outputs"]))


SMOKE = "SMOKE RUN (quick configuration): these numbers check that every stage works; they are not evidence."


def _run_lines(result: dict, smoke: bool = False) -> tuple[list[str], list[str]]:
    out = ([SMOKE] if smoke else []) + [
        line
        for stage in ("generate", "stats", "discover", "scan", "ablate", "heads", "sentences")
        if stage in result
        for line in result[stage].get("summary", [])
    ]
    out.append("\nOutputs:")
    out += [f"  {stage:9s} {path}" for stage, m in result.items() for path in m["outputs"]]
    return out, [p for m in result.values() for p in m["outputs"]]


# per command: (docstring, the flow call, the printed lines)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "generate": (
        "Build prompts.parquet from the LRE relation files (or --items).",
        lambda cfg, only: _flow("generate")(cfg),
        lambda cfg, m: (m.get("summary", []) + [f"prompts: {_first(m)} ({m['rows']} rows)"], _outputs(m)),
    ),
    "measure": (
        "Score every prompt with and without context -> measurements.parquet.",
        lambda cfg, only: _flow("measure")(cfg, only),
        lambda cfg, m: ([f"measurements: {_first(m)} ({m['rows']} rows)"], _outputs(m)),
    ),
    "stats": (
        "Paired t-tests per condition and condition contrasts -> stats.parquet, contrasts.parquet.",
        lambda cfg, only: _flow("stats")(cfg),
        lambda cfg, m: (
            m["summary"]
            + [f"stats: {cfg.out / 'stats.parquet'} ({m['rows']} rows), contrasts: {cfg.out / 'contrasts.parquet'}"],
            _outputs(m),
        ),
    ),
    "discover": (
        "Learn keep-masks over all attention heads (seeds x resamples) -> heads.parquet, discovery.parquet, "
        "head_stability.parquet.",
        lambda cfg, only: _flow("discover")(cfg, only),
        lambda cfg, m: (
            m["summary"] + [f"heads: {cfg.out / 'heads.parquet'}, log: {cfg.out / 'discovery.parquet'}"],
            _outputs(m),
        ),
    ),
    "scan": (
        "Head-importance maps: exhaustive single-head scan + attribution patching -> head_scores.parquet, and "
        "their agreement with the learned mask (k-curves, faithfulness) -> head_agreement.parquet.",
        lambda cfg, only: _flow("scan")(cfg, only),
        lambda cfg, m: (
            m["summary"]
            + [f"head scores: {cfg.out / 'head_scores.parquet'}, agreement: {cfg.out / 'head_agreement.parquet'}"],
            _outputs(m),
        ),
    ),
    "ablate": (
        "Evaluate the discovered heads: ablated vs original, random heads, no context, prompting; side effects.",
        lambda cfg, only: _flow("ablate")(cfg),
        lambda cfg, m: (
            m["summary"]
            + [f"ablation: {cfg.out / 'ablation.parquet'}, side effects: {cfg.out / 'side_effects.parquet'}"],
            _outputs(m),
        ),
    ),
    "heads": (
        "What the entrainment heads are: previous-token, duplicate, induction, OV copying and copy-suppression "
        "scores of every head, its attention to and logit attribution for the distractor -> head_types.parquet; "
        "agreement with the scan and the searches, and the induction/entrainment dissociation -> "
        "head_type_agreement.parquet.",
        lambda cfg, only: _flow("head_types")(cfg),
        lambda cfg, m: (
            m["summary"]
            + [f"head types: {cfg.out / 'head_types.parquet'}, agreement: {cfg.out / 'head_type_agreement.parquet'}"],
            _outputs(m),
        ),
    ),
    "sentences": (
        "Sentence-level entrainment: whole sentences scored with their context present vs absent (Δ_self, Δ_net, "
        "the counterfactual-vs-gold gap), and with the stable heads removed vs random heads -> "
        "sentence_scores.parquet, sentence_stats.parquet.",
        lambda cfg, only: _flow("sentences")(cfg),
        lambda cfg, m: (
            m["summary"]
            + [f"sentence scores: {cfg.out / 'sentence_scores.parquet'}, stats: {cfg.out / 'sentence_stats.parquet'}"],
            _outputs(m),
        ),
    ),
    "report": (
        "Write report.html (self-contained, embedded images) from the tables in --out.",
        lambda cfg, only: _flow("report")(cfg),
        lambda cfg, m: ([f"report: {_first(m)}"], _outputs(m)),
    ),
    "run": (
        "The whole pipeline: generate -> measure -> stats -> discover -> scan -> ablate -> heads -> sentences -> "
        "report.",
        lambda cfg, only: _flow("pipeline", "pipeline")(cfg.to_dict()),
        lambda cfg, m: _run_lines(m, cfg.smoke),
    ),
}


def config_for(command: str, given: dict[str, Any]) -> tuple[Config, tuple[str, ...] | None]:
    """The Config of one command line (defaults < --config file < flags) and its --relations filter."""
    only = options.names("--relations", given.get("only")) if command in options.FILTERS else None
    kwargs = options.to_config_kwargs(command, given)
    toml = given.get("config")
    if given.get("quick"):
        if toml is not None:
            raise InputError("command line", "--quick", str(toml), "give --quick or --config, not both")
        toml = QUICK_CONFIG
    cfg = make_config(toml, refresh=given.get("refresh") or None, **kwargs)
    preflight.writable(cfg.out)
    return cfg, only


def _make(command: str) -> None:
    doc, call, lines = COMMANDS[command]

    def fn(**given: Any) -> None:
        cfg, only = config_for(command, given)
        preflight.CHECKS[command](cfg, only)
        extra = only if command in options.FILTERS else None
        _stage(command, cfg, lambda: call(cfg, only), lambda m: lines(cfg, m), extra)

    fn.__signature__ = inspect.Signature(options.parameters(command))  # type: ignore[attr-defined]
    fn.__doc__ = doc
    fn.__name__ = command
    app.command(name=command)(fn)


for _command in COMMANDS:
    _make(_command)


def plan_command(**given: Any) -> None:
    from entrainment.plan import predict

    fmt = given.pop("fmt", "table")
    if fmt not in ("table", "json"):
        raise InputError("command line", "--format", fmt, "expected table or json")
    cfg, _ = config_for("plan", given)
    preflight.relations_ok(cfg)
    emit(predict.render(predict.predict(cfg), fmt))


plan_command.__signature__ = inspect.Signature(
    options.parameters("plan")
    + [
        inspect.Parameter(  # type: ignore[attr-defined]
            "fmt",
            inspect.Parameter.KEYWORD_ONLY,
            default="table",
            annotation=Annotated[str, typer.Option("--format", help="table | json")],
        )
    ]
)
plan_command.__doc__ = (
    "Predict each stage's seconds and peak memory of `run` with these options on this machine, "
    "without loading model weights."
)
app.command(name="plan")(plan_command)


@app.command()
def server(action: Annotated[str, typer.Argument(help="start | stop | status")]) -> None:
    """A background Prefect server for this project: commands reuse it instead of starting one each time."""
    from cli import server

    if action not in ("start", "stop", "status"):
        raise InputError("command line", "action", action, "expected start, stop or status")
    emit({"start": server.start, "stop": server.stop, "status": server.status}[action]())


@app.command()
def models() -> None:
    """The embedded models and whether each is installed."""
    from rich.console import Console
    from rich.table import Table

    from entrainment.model.sources import installed

    t = Table("name", "installed", "about", "install with")
    for row in installed():
        t.add_row(row["name"], row["installed"], row["about"], row["install"])
    Console(width=160).print(t)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL over the views prompts, measurements, stats, ...")],
    out: Annotated[Optional[str], typer.Option("--out", help="Output folder (default results).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    unsafe: Annotated[
        bool, typer.Option("--unsafe", help="Allow statements other than SELECT and file access.")
    ] = False,
) -> None:
    """Query the tables in --out with DuckDB (one read-only view per table)."""
    from cli.output import write_frame
    from entrainment.store import sql

    if fmt not in ("table", "csv", "json"):
        raise InputError("command line", "--format", fmt, "expected table, csv or json")
    if out is not None and not out.strip():
        raise InputError("command line", "--out", out, "empty path")
    df = sql.query(
        Path(out or default("out")),
        query,
        unsafe=unsafe,
        warn=lambda line: print(f"entrainment: warning: {line}", file=sys.stderr),
    )
    write_frame(df, fmt)


def main() -> None:
    """Console-script entry point: one-line errors, exit 2 on bad input, 1 on a failure with a known cause."""
    from cli.errors import run_main

    run_main(app)


if __name__ == "__main__":
    main()
