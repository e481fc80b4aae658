"""The `entrainment` command line (typer). Each stage command runs that stage's Prefect flow.

Bad input exits with status 2 and one line on stderr; nothing else prints a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from entrainment.config import Config, default, make_config, parse_ints, parse_list
from entrainment.errors import InputError
from entrainment.lock import folder_lock

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Measure contextual entrainment and find the attention heads behind it.")

OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: results).")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="smollm2-135m | gemma3-270m | HF id | local dir | .gguf path.")]
ModelsOpt = Annotated[Optional[str], typer.Option("--models", help="Several models side by side in one --out, e.g. smollm2-135m,gemma3-270m (each cached per model).")]
RelOpt = Annotated[Optional[str], typer.Option("--relations", help='Comma-separated LRE relation names, e.g. "country capital city,fruit inside color".')]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Sampling seed (default 0).")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | mps.")]
DtypeOpt = Annotated[Optional[str], typer.Option("--dtype", help="auto | float32 | bfloat16 | float16.")]
PairsOpt = Annotated[Optional[int], typer.Option("--max-pairs", help="Items per relation and condition.")]
RefreshOpt = Annotated[bool, typer.Option("--refresh", help="Ignore caches for this command.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="TOML file holding any of these options.")]
DataOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Folder of LRE relation JSON files (default: shipped data/lre).")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Batch size.")]
BosOpt = Annotated[Optional[str], typer.Option("--bos", help="auto (the tokenizer's own) | always (prepend BOS, as TransformerLens) | never.")]
NullOpt = Annotated[Optional[int], typer.Option("--null-draws", help="Random head sets in the significance null (default 100).")]
AblOpt = Annotated[Optional[str], typer.Option("--ablation-heads", help="heads.parquet, or a list like 3.4,10.7 (layer.head).")]


def _names(option: str, text: Optional[str]) -> tuple[str, ...] | None:
    """A comma-separated option: None when not given; one that names nothing (",, ,") is bad input."""
    if text is None:
        return None
    names = parse_list(text)
    if not names:
        raise InputError("command line", option, text, "names nothing (give comma-separated names)")
    return names


MIN_FREE_MB = 64  # a full disk fails here, in one line, not halfway through a stage


def _writable(out: Path) -> None:
    """--out must be a folder this process can create and write to."""
    import os

    if out.exists() and not out.is_dir():
        raise InputError(out, "--out", str(out), "is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(out, "--out", str(out), f"cannot create the output folder ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(out, "--out", str(out), "the output folder is not writable (read-only mount or permissions)")
    import shutil

    free_mb = shutil.disk_usage(out).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise InputError(out, "--out", str(out), f"only {free_mb:.1f} MB free on its disk; need at least {MIN_FREE_MB} MB")


def _cfg(config: Optional[Path], refresh: bool = False, relations: Optional[str] = None, **kw) -> Config:
    cfg = make_config(config, relations=_names("--relations", relations), refresh=refresh or None, **kw)
    _writable(cfg.out)
    return cfg


def _stage(command: str, cfg: Config, call, lines, extra=None) -> None:
    """Run one command: the recorded lines if nothing changed (flows/fastpath.py, no Prefect started), else the
    flow under the folder lock; print its lines and record the success."""
    from flows import fastpath

    if fastpath.enabled():
        cached = fastpath.lookup(command, cfg, extra)
        if cached is not None:
            typer.echo("\n".join(cached + ["(nothing changed since the last run: every output is up to date)"]))
            return
    from flows.server import use_running

    use_running()  # the project's background server, if it is up
    with folder_lock(cfg.out):
        m = call()
        out_lines, outputs = lines(m)
        typer.echo("\n".join(out_lines))
        if fastpath.enabled():
            fastpath.store(command, cfg, out_lines, outputs, extra)


def _flow(module: str, name: str | None = None):
    """A flow, imported only when it has to run (Prefect and torch load with it)."""
    import importlib

    return getattr(importlib.import_module(f"flows.{module}"), name or f"{module}_flow")


def _outputs(m: dict) -> list[str]:
    return list(m["outputs"])


def _model(cfg: Config) -> list[str]:
    """Check every model SPEC loads (without loading weights); their normalised specs."""
    from entrainment.models import preflight

    return [preflight(m).spec for m in cfg.model_specs()]


def _relations_ok(cfg: Config) -> None:
    """Relation files: known, well-formed, and enough for generation (before any stage runs)."""
    from entrainment.prompts import check_relations
    from entrainment.relations import load_relations

    check_relations(load_relations(cfg.data_dir, cfg.relations), cfg.split)


@app.command()
def generate(out: OutOpt = None, relations: RelOpt = None, seed: SeedOpt = None, max_pairs: PairsOpt = None,
             data_dir: DataOpt = None, refresh: RefreshOpt = False, config: ConfigOpt = None) -> None:
    """Build prompts.parquet from the LRE relation files."""
    cfg = _cfg(config, refresh, relations, out=out, seed=seed, max_pairs=max_pairs, data_dir=data_dir)
    _relations_ok(cfg)  # unknown relations and malformed files fail here, before Prefect

    _stage("generate", cfg, lambda: _flow("generate")(cfg),
           lambda m: (m.get("summary", []) + [f"prompts: {next(iter(m['outputs']))} ({m['rows']} rows)"], _outputs(m)))


def _only(relations: Optional[str]) -> tuple[str, ...] | None:
    return _names("--relations", relations)


def _present(cfg: Config, only: tuple[str, ...] | None) -> None:
    """--relations of a stage that reads prompts.parquet must be in it."""
    from entrainment import tables

    have = set(tables.read_table(cfg.out, "prompts")["relation"].unique())
    for r in only or ():
        if r not in have:
            raise InputError(cfg.out / "prompts.parquet", "relation", r,
                             f"not in prompts.parquet (it holds: {', '.join(sorted(have))}); run generate with it first")


@app.command()
def measure(out: OutOpt = None, model: ModelOpt = None, models: ModelsOpt = None, relations: RelOpt = None, device: DeviceOpt = None,
            dtype: DtypeOpt = None, batch_size: BatchOpt = None, ablation_heads: AblOpt = None, bos: BosOpt = None,
            refresh: RefreshOpt = False, config: ConfigOpt = None) -> None:
    """Score every prompt with and without context -> measurements.parquet."""
    from entrainment.heads import parse_ablation
    from entrainment.models import dims, resolve

    cfg = _cfg(config, refresh, out=out, model=model, models=_names("--models", models), device=device, dtype=dtype, batch_size=batch_size,
               ablation_heads=ablation_heads, bos=bos)
    _present(cfg, _only(relations))
    for spec in _model(cfg):
        shape = dims(resolve(spec))
        for hs in parse_ablation(cfg.ablation_heads, spec):
            if shape:
                hs.mask(*shape)  # heads outside the model: one line, before any stage starts

    _stage("measure", cfg, lambda: _flow("measure")(cfg, _only(relations)),
           lambda m: ([f"measurements: {next(iter(m['outputs']))} ({m['rows']} rows)"], _outputs(m)), _only(relations))


@app.command()
def stats(out: OutOpt = None,
          confidence: Annotated[Optional[float], typer.Option("--confidence", help="CI level (default 0.95).")] = None,
          refresh: RefreshOpt = False, config: ConfigOpt = None) -> None:
    """Paired t-tests per condition and condition contrasts -> stats.parquet, contrasts.parquet."""
    from entrainment import tables

    from entrainment.provenance import require_fresh

    cfg = _cfg(config, refresh, out=out, confidence=confidence)
    tables.read_table(cfg.out, "measurements"), tables.read_table(cfg.out, "prompts")
    require_fresh(cfg.out, "measurements")  # never test measurements of other prompts

    _stage("stats", cfg, lambda: _flow("stats")(cfg), lambda m: (m["summary"] + [
        f"stats: {cfg.out / 'stats.parquet'} ({m['rows']} rows), contrasts: {cfg.out / 'contrasts.parquet'}"], _outputs(m)))


@app.command()
def discover(out: OutOpt = None, model: ModelOpt = None, models: ModelsOpt = None, relations: RelOpt = None, device: DeviceOpt = None,
             dtype: DtypeOpt = None,
             epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs (default 10).")] = None,
             batch_size: BatchOpt = None,
             lr: Annotated[Optional[float], typer.Option("--lr", help="AdamW learning rate (default 1.0).")] = None,
             lam: Annotated[Optional[float], typer.Option("--lambda", help="Sparsity weight (default 1.0).")] = None,
             tau: Annotated[Optional[float], typer.Option("--tau", help="Gumbel-sigmoid temperature (default 1.0).")] = None,
             weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="AdamW weight decay (default 0; the paper's code used 0.01).")] = None,
             init: Annotated[Optional[float], typer.Option("--init", help="Start value of the mask logits (default 3 = all kept; the paper: 0).")] = None,
             seeds: Annotated[Optional[str], typer.Option("--seeds", help='Search seeds, e.g. "0,1,2".')] = None,
             train_conditions: Annotated[Optional[str], typer.Option("--train-conditions", help="Conditions to train on (default related).")] = None,
             bos: BosOpt = None, refresh: RefreshOpt = False, config: ConfigOpt = None) -> None:
    """Learn a keep-mask over all attention heads -> heads.parquet, discovery.parquet."""
    from entrainment import tables

    cfg = _cfg(config, refresh, out=out, model=model, models=_names("--models", models), device=device, dtype=dtype, epochs=epochs,
               discover_batch_size=batch_size, lr=lr, lam=lam, tau=tau, weight_decay=weight_decay, init=init,
               seeds=parse_ints(seeds, "--seeds") if seeds else None,
               train_conditions=_names("--train-conditions", train_conditions), bos=bos)
    tables.read_table(cfg.out, "prompts")
    _model(cfg)

    _present(cfg, _only(relations) or cfg.discover_relations)
    _stage("discover", cfg, lambda: _flow("discover")(cfg, _only(relations)), lambda m: (m["summary"] + [
        f"heads: {cfg.out / 'heads.parquet'}, log: {cfg.out / 'discovery.parquet'}"], _outputs(m)), _only(relations))


@app.command()
def scan(out: OutOpt = None, model: ModelOpt = None, models: ModelsOpt = None, relations: RelOpt = None, device: DeviceOpt = None,
         dtype: DtypeOpt = None,
         k: Annotated[Optional[int], typer.Option("--k", help="Longest k-curve: top-k heads removed, k = 1..K (default 10).")] = None,
         refresh: RefreshOpt = False, config: ConfigOpt = None) -> None:
    """Head-importance maps: exhaustive single-head scan + attribution patching -> head_scores.parquet,
    and their agreement with the learned mask (k-curves on test) -> head_agreement.parquet."""
    from entrainment import tables
    from entrainment.provenance import require_fresh

    cfg = _cfg(config, refresh, out=out, model=model, models=_names("--models", models), device=device, dtype=dtype, scan_k=k)
    tables.read_table(cfg.out, "prompts")
    if (cfg.out / "heads.parquet").exists():
        require_fresh(cfg.out, "heads")
    _model(cfg)

    _present(cfg, _only(relations) or cfg.discover_relations)
    _stage("scan", cfg, lambda: _flow("scan")(cfg, _only(relations)), lambda m: (m["summary"] + [
        f"head scores: {cfg.out / 'head_scores.parquet'}, agreement: {cfg.out / 'head_agreement.parquet'}"], _outputs(m)),
        _only(relations))


@app.command()
def ablate(out: OutOpt = None, model: ModelOpt = None, models: ModelsOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None,
           batch_size: BatchOpt = None, seed: SeedOpt = None,
           random_draws: Annotated[Optional[int], typer.Option("--random-draws", help="Random head sets for the random_heads rows (default 3; the null has --null-draws).")] = None,
           null_draws: NullOpt = None, bos: BosOpt = None, data_dir: DataOpt = None, refresh: RefreshOpt = False,
           config: ConfigOpt = None) -> None:
    """Evaluate the discovered heads: ablated vs original, random heads, no context; side effects."""
    from entrainment import tables

    cfg = _cfg(config, refresh, out=out, model=model, models=_names("--models", models), device=device, dtype=dtype, batch_size=batch_size, seed=seed,
               random_draws=random_draws, null_draws=null_draws, bos=bos, data_dir=data_dir)
    from entrainment.provenance import require_fresh

    tables.read_table(cfg.out, "prompts")
    heads = tables.read_table(cfg.out, "heads")
    require_fresh(cfg.out, "heads")
    for spec in _model(cfg):
        if heads.filter(tables.pl.col("model") == spec).is_empty():
            raise InputError(cfg.out / "heads.parquet", "model", spec, "no mask for this model (run discover first)")
    _stage("ablate", cfg, lambda: _flow("ablate")(cfg), lambda m: (m["summary"] + [
        f"ablation: {cfg.out / 'ablation.parquet'}, side effects: {cfg.out / 'side_effects.parquet'}"], _outputs(m)))


@app.command()
def report(out: OutOpt = None, model: ModelOpt = None, models: ModelsOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None,
           refresh: RefreshOpt = False, config: ConfigOpt = None) -> None:
    """Write report.html (self-contained: six panels, embedded images) from the tables in --out."""
    from entrainment import tables

    from entrainment.provenance import INPUTS, require_fresh

    cfg = _cfg(config, refresh, out=out, model=model, models=_names("--models", models), device=device, dtype=dtype)
    tables.read_table(cfg.out, "prompts")
    for name in INPUTS:  # the report shows every table: none may be stale
        if (cfg.out / f"{name}.parquet").exists():
            require_fresh(cfg.out, name)
    _model(cfg)

    _stage("report", cfg, lambda: _flow("report")(cfg), lambda m: ([f"report: {next(iter(m['outputs']))}"], _outputs(m)))


@app.command()
def run(out: OutOpt = None, model: ModelOpt = None, models: ModelsOpt = None, relations: RelOpt = None, seed: SeedOpt = None,
        device: DeviceOpt = None, dtype: DtypeOpt = None, max_pairs: PairsOpt = None, data_dir: DataOpt = None,
        batch_size: BatchOpt = None,
        discover_relations: Annotated[Optional[str], typer.Option("--discover-relations", help='Relations to search heads for (default "country capital city").')] = None,
        epochs: Annotated[Optional[int], typer.Option("--epochs", help="Discovery epochs.")] = None,
        seeds: Annotated[Optional[str], typer.Option("--seeds", help='Discovery seeds, e.g. "0,1,2".')] = None,
        lam: Annotated[Optional[float], typer.Option("--lambda", help="Discovery sparsity weight.")] = None,
        runner: Annotated[Optional[str], typer.Option("--runner", help="default | dask (fan shards out over a Dask cluster).")] = None,
        dask_address: Annotated[Optional[str], typer.Option("--dask-address", help="Existing Dask scheduler (else a LocalCluster).")] = None,
        bos: BosOpt = None, null_draws: NullOpt = None, refresh: RefreshOpt = False, config: ConfigOpt = None) -> None:
    """The whole pipeline: generate -> measure -> stats -> discover -> scan -> ablate -> report."""
    cfg = _cfg(config, refresh, relations, out=out, model=model, models=_names("--models", models), seed=seed, device=device, dtype=dtype,
               max_pairs=max_pairs, data_dir=data_dir, batch_size=batch_size,
               discover_relations=_names("--discover-relations", discover_relations), epochs=epochs,
               seeds=parse_ints(seeds, "--seeds") if seeds else None, lam=lam, runner=runner, dask_address=dask_address,
               bos=bos, null_draws=null_draws)
    _relations_ok(cfg)
    missing = [r for r in cfg.discover_relations if r not in cfg.relations]
    if missing:
        raise InputError("--discover-relations", "relation", missing[0], "must be one of --relations")
    _model(cfg)

    def lines(result: dict) -> tuple[list[str], list[str]]:
        out = [line for stage in ("generate", "stats", "discover", "scan", "ablate") if stage in result
               for line in result[stage].get("summary", [])]
        out.append("\nOutputs:")
        out += [f"  {stage:9s} {path}" for stage, m in result.items() for path in m["outputs"]]
        return out, [p for m in result.values() for p in m["outputs"]]

    _stage("run", cfg, lambda: _flow("pipeline", "pipeline")(cfg.to_dict()), lines)


@app.command()
def server(action: Annotated[str, typer.Argument(help="start | stop | status")]) -> None:
    """A background Prefect server for this project: commands reuse it instead of starting one each time."""
    from flows import server as srv

    if action not in ("start", "stop", "status"):
        raise InputError("command line", "action", action, "expected start, stop or status")
    typer.echo({"start": srv.start, "stop": srv.stop, "status": srv.status}[action]())


@app.command()
def models() -> None:
    """The embedded models and whether each is installed."""
    from rich.console import Console
    from rich.table import Table

    from entrainment.models import installed

    t = Table("name", "installed", "about", "install with")
    for row in installed():
        t.add_row(row["name"], row["installed"], row["about"], row["install"])
    Console(width=160).print(t)


@app.command()
def sql(query: Annotated[str, typer.Argument(help="SQL over the views prompts, measurements, stats, ...")],
        out: OutOpt = None,
        fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
        unsafe: Annotated[bool, typer.Option("--unsafe", help="Allow statements other than SELECT and files outside --out.")] = False) -> None:
    """Query the tables in --out with DuckDB (one read-only view per table)."""
    from entrainment.sql import query as run_query

    if fmt not in ("table", "csv", "json"):
        raise InputError("command line", "--format", fmt, "expected table, csv or json")
    df = run_query(out or default("out"), query, warn=lambda line: print(f"entrainment: warning: {line}", file=sys.stderr),
                   unsafe=unsafe)
    if fmt == "csv":
        sys.stdout.write(df.write_csv())
    elif fmt == "json":
        sys.stdout.write(df.write_json() + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(*df.columns)
        for row in df.iter_rows():
            t.add_row(*[("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row])
        Console(width=max(100, 20 * len(df.columns))).print(t)


def main() -> None:
    """Console-script entry point: one-line errors, exit 2 on bad input."""
    if len(sys.argv) > 1 and sys.argv[1] not in ("sql", "models", "server", "--help", "-h"):
        from flows.watchdog import start

        start()  # Prefect's temporary server must not outlive this process, even after kill -9
    if len(sys.argv) == 1:
        app()  # no arguments: the help text
    try:
        code = app(standalone_mode=False)
    except InputError as e:
        print(f"entrainment: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("entrainment: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click's (or typer's vendored click's) usage errors: one line, not a box
        kinds = {c.__name__ for c in type(e).__mro__}
        if "UsageError" in kinds:
            hint = f" (see: entrainment {sys.argv[1]} --help)" if len(sys.argv) > 1 else ""
            print(f"entrainment: error: {' '.join(e.format_message().split())}{hint}", file=sys.stderr)
            sys.exit(2)
        if "Abort" in kinds:
            print("entrainment: interrupted", file=sys.stderr)
            sys.exit(130)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
