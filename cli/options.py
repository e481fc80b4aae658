"""Every command-line option, declared once and derived from ``entrainment.config.Config``.

A stage command takes the options of the Config fields its stage reads (``entrainment.stage_graph``), plus the common
ones (--out, --config, --refresh) and a few extras; ``run`` and ``plan`` take every field. Flag names are the
field names with dashes (``--max-pairs``), with the aliases below; help texts are the fields' descriptions with
their defaults, so a help text can never disagree with the default it names.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from entrainment import stage_graph
from entrainment.config import LIST_FIELDS, Config, choices, default, describe, parse_ints, parse_list, parse_numbers
from entrainment.errors import InputError

# field -> flag, where it is not `--` + the field name with dashes
FLAGS = {"lam": "--lambda"}
# per command: flag -> field, where the command's flag means another field than elsewhere
COMMAND_FLAGS = {"discover": {"--batch-size": "discover_batch_size"}, "scan": {"--k": "scan_k"}}
# per command: fields beyond its stage's (options that only steer which work is done, or where data comes from)
EXTRA = {
    "generate": ("data_dir", "items"),
    "measure": ("models",),
    "discover": ("models",),
    "scan": ("models",),
    "ablate": ("models", "data_dir"),
    "heads": ("models",),
    "sentences": ("models", "data_dir"),
    "report": ("models",),
    "stats": (),
}
# commands whose --relations restricts the work to some relations of prompts.parquet (not Config.relations)
FILTERS = ("measure", "discover", "scan")
INT_LISTS = ("seeds",)
NUM_LISTS = ("split",)
INT_TRIPLES = ("search_pairs", "crossfit_items")  # comma-separated ints (the Config checks their count)


def flag(field: str, command: str = "") -> str:
    """The command-line flag of a Config field."""
    for f, name in COMMAND_FLAGS.get(command, {}).items():
        if name == field:
            return f
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, Path):
        return str(value.name if value.is_absolute() else value)
    return str(value)


def help_text(field: str) -> str:
    """The field's description and its default."""
    d = default(field)
    shown = {"out": "results", "data_dir": "the shipped data/lre"}.get(field)
    if shown is None:
        shown = _shown(d) if d is not None and d != () else "none"
    allowed = f" One of: {', '.join(choices(field))}." if choices(field) else ""
    if isinstance(d, bool):
        return describe(field)
    return f"{describe(field)}{allowed} (default {shown})"


def _annotation(field: str, command: str) -> Any:
    d = default(field)
    f = flag(field, command)
    if isinstance(d, bool):
        name = f[2:]
        return Annotated[
            Optional[bool], typer.Option(f"--{name}/--no-{name}", help=help_text(field), show_default=False)
        ]
    if field in LIST_FIELDS or field in INT_LISTS or field in NUM_LISTS or field in INT_TRIPLES:
        kind = str
    elif isinstance(d, float):
        kind = float
    elif isinstance(d, int):
        kind = int
    else:
        kind = str
    return Annotated[Optional[kind], typer.Option(f, help=help_text(field), show_default=False)]


def fields_of(command: str) -> list[str]:
    """The Config fields a command takes options for, in Config order."""
    if command in ("run", "plan"):
        wanted = set(Config.model_fields) - {"refresh"}
    else:
        wanted = set(stage_graph.fields(command)) | set(EXTRA.get(command, ()))
        wanted |= {"out"}
    return [f for f in Config.model_fields if f in wanted and f != "refresh"]


def parameters(command: str) -> list[inspect.Parameter]:
    """The typer parameters of a command: its fields, --relations as a filter where it is one, --config, --refresh."""
    params = [
        inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_annotation(f, command))
        for f in fields_of(command)
    ]
    if command in FILTERS:
        params.append(
            inspect.Parameter(
                "only",
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    Optional[str],
                    typer.Option(
                        "--relations", help="Only these relations of prompts.parquet, comma-separated (default: all)."
                    ),
                ],
            )
        )
    if command in ("run", "plan"):
        params.append(
            inspect.Parameter(
                "quick",
                inspect.Parameter.KEYWORD_ONLY,
                default=False,
                annotation=Annotated[
                    bool,
                    typer.Option(
                        "--quick",
                        help="Use configs/quick.toml: every stage at its smallest, about 3 minutes on a "
                        "2-core CPU; a smoke run, not evidence (other flags still override it).",
                    ),
                ],
            )
        )
    params.append(
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Optional[Path], typer.Option("--config", help="TOML file holding any of these options.")
            ],
        )
    )
    params.append(
        inspect.Parameter(
            "refresh",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[bool, typer.Option("--refresh", help=describe("refresh"))],
        )
    )
    return params


def names(option: str, text: str | None) -> tuple[str, ...] | None:
    """A comma-separated option: None when not given; one that names nothing (",, ,") is bad input."""
    if text is None:
        return None
    out = parse_list(text)
    if not out:
        raise InputError("command line", option, text, "names nothing (give comma-separated names)")
    return out


def to_config_kwargs(command: str, given: dict[str, Any]) -> dict[str, Any]:
    """Typer's values (None = not given) -> Config keyword arguments (lists parsed, flags mapped to fields)."""
    out: dict[str, Any] = {}
    for field in fields_of(command):
        value = given.get(field)
        if value is None:
            continue
        f = flag(field, command)
        if field in LIST_FIELDS:
            value = names(f, value)
        elif field in INT_LISTS or field in INT_TRIPLES:
            value = parse_ints(value, f)
        elif field in NUM_LISTS:
            value = parse_numbers(value, f)
        elif field in ("out", "data_dir", "items") and not str(value).strip():
            raise InputError("command line", f, str(value), "empty path")
        out[field] = value
    return out
