"""One typed configuration object, passed down to every stage.

Every CLI option and every key of a ``--config file.toml`` maps onto a field here. ``Config`` is a frozen
pydantic model: values are type-checked strictly (an int field refuses 2.5 and "3", a text field refuses 1,
a list field refuses a plain string), unknown keys are rejected, and every problem becomes a one-line
``InputError`` naming the key and the file. Stages read only the fields they need;
``Config.stage_params(stage)`` lists those fields, so a change to a field re-runs exactly the stages that read it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError, model_validator

from entrainment.errors import InputError
from entrainment.paths import LRE_DIR

# The small default set a plain `entrainment run` uses (README: "Default relations"). Every relation
# in `relations.ELIGIBLE` can be named with --relations.
DEFAULT_RELATIONS: tuple[str, ...] = (
    "country capital city",
    "country currency",
    "fruit inside color",
    "landmark on continent",
)
CONDITIONS: tuple[str, ...] = ("related", "irrelevant", "random", "counterfactual")


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {type(v).__name__}")
    return float(v)


def _path(v: Any) -> Path:
    if not isinstance(v, (str, Path)):
        raise ValueError(f"expected a path, got {type(v).__name__}")
    return Path(v).expanduser().resolve()


def _seq(v: Any) -> tuple:
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"expected a list, got {type(v).__name__}")
    return tuple(v)


def _sorted_set(v: Any) -> tuple:
    return tuple(sorted(set(_seq(v))))


Number = Annotated[float, BeforeValidator(_number)]
AbsPath = Annotated[Path, BeforeValidator(_path)]
Names = Annotated[tuple[StrictStr, ...], BeforeValidator(_sorted_set)]  # order never matters
Ints = Annotated[tuple[StrictInt, ...], BeforeValidator(_sorted_set)]


class Config(BaseModel):
    """All pipeline parameters. Paths are stored resolved; name lists sorted and deduplicated."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, validate_default=True)

    out: AbsPath = Path("results")
    data_dir: AbsPath = LRE_DIR
    relations: Names = DEFAULT_RELATIONS
    model: StrictStr = "smollm2-135m"
    # several models side by side in one --out (`--models a,b,c`); each model-dependent stage runs per model
    # (Config.per_model) with its own cached shards, so adding a model computes only that model. Empty = `model`.
    models: Names = ()
    seed: StrictInt = 0
    device: StrictStr = "auto"
    dtype: StrictStr = "auto"
    # generate
    max_pairs: StrictInt = 60
    split: Annotated[tuple[Number, Number, Number], BeforeValidator(_seq)] = (0.8, 0.1, 0.1)
    # head-search items of the discovery relations: (query subject, context subject) pairs per split
    # (train, dev, test), each crossed with every context x query template (README: "Head-search data")
    search_pairs: Annotated[tuple[StrictInt, StrictInt, StrictInt], BeforeValidator(_seq)] = (25, 12, 100)
    # measure, discover, ablate
    batch_size: StrictInt = 32
    bos: StrictStr = "auto"
    # search-side forward passes (mask training, scan/AtP, k-curves, the random-head null): auto = bfloat16
    # autocast where the hardware has it (CUDA, or a CPU with AVX512-BF16/AMX), else float32. Reported rows
    # (Δ, gain and its CI, KL, measurements) are always float32.
    search_dtype: StrictStr = "auto"
    # stats
    confidence: Number = 0.95
    ablation_heads: StrictStr | None = None
    # discover (entrainment.discover.SearchParams takes its defaults from here)
    discover_relations: Names = ("country capital city",)
    epochs: StrictInt = 10
    discover_batch_size: StrictInt = 16
    lr: Number = 1.0
    lam: Number = 1.0
    tau: Number = 1.0
    weight_decay: Number = 0.0
    init: Number = 3.0
    seeds: Ints = (0, 1, 2)
    train_conditions: Names = ("related",)
    shared_mask: StrictBool = False  # also learn one mask on the union of the discovery relations ("shared")
    # scan (head-importance maps; part of `run` unless scan = false)
    scan: StrictBool = True
    scan_k: StrictInt = 8
    # ablate
    random_draws: StrictInt = 3
    null_draws: StrictInt = 100
    null_items: StrictInt = 64
    # control
    refresh: StrictBool = False
    runner: StrictStr = "default"
    dask_address: StrictStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _primary_model(cls, data: Any) -> Any:
        """With `models`, `model` is the first of them (the one the report's example uses)."""
        if isinstance(data, dict) and isinstance(data.get("models"), (list, tuple)) and data["models"]:
            model = data.get("model", data["models"][0])
            if model not in data["models"]:
                raise ValueError(f"--model {model} is not one of --models; give one or the other")
            data = dict(data, model=model)
        return data

    @model_validator(mode="after")
    def _check(self) -> "Config":
        check(self)
        return self

    def replace(self, **changes: Any) -> "Config":
        """A copy with some fields changed (validated again)."""
        return make(**(dict(self) | changes))

    def model_specs(self) -> tuple[str, ...]:
        """The models this run measures: `models`, or just `model`."""
        return self.models or (self.model,)

    def per_model(self) -> list["Config"]:
        """One single-model Config per model: the configs model-dependent stages run with (their cache keys are
        those of a run with that model alone, so a model added to --models reuses nothing and disturbs nothing)."""
        if not self.models:
            return [self]
        return [self.replace(model=m, models=()) for m in self.models]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able options (Prefect deployment parameters); ``Config(**cfg.to_dict()) == cfg``."""
        return self.model_dump(mode="json")

    def stage_params(self, stage: str) -> dict[str, Any]:
        """The fields that stage reads, as JSON-able values: the parameter part of its cache key."""
        dumped = self.model_dump(mode="json", include=set(STAGE_FIELDS[stage]))
        return {name: dumped[name] for name in STAGE_FIELDS[stage]}


def default(name: str) -> Any:
    """A field's default value."""
    return Config.model_fields[name].default


def make(where: object = "config", **kwargs: Any) -> Config:
    """Config(**kwargs) with a pydantic error turned into a one-line InputError naming the key (and file)."""
    try:
        return Config(**kwargs)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "options"
        top = str(err["loc"][0]) if err["loc"] else ""
        msg = err["msg"] if err["type"] != "extra_forbidden" else \
            f"unknown option (known: {', '.join(sorted(Config.model_fields))})"
        raise InputError(where, key, kwargs.get(top, err.get("input")), msg) from None


STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "generate": ("relations", "seed", "max_pairs", "split", "discover_relations", "search_pairs", "train_conditions"),
    "measure": ("model", "device", "dtype", "batch_size", "ablation_heads", "bos"),
    "stats": ("confidence",),
    "discover": ("model", "device", "dtype", "discover_relations", "epochs", "discover_batch_size", "lr",
                 "lam", "tau", "weight_decay", "init", "seeds", "train_conditions", "bos", "search_dtype"),
    "ablate": ("model", "device", "dtype", "batch_size", "random_draws", "seed", "bos", "null_draws", "null_items",
               "train_conditions", "search_dtype"),
    "scan": ("model", "device", "dtype", "bos", "train_conditions", "discover_batch_size", "batch_size", "scan_k",
             "random_draws", "null_items", "seed", "search_dtype"),
    "report": (),
}


def check(cfg: Config) -> None:
    """Reject impossible values with a one-line InputError."""
    if cfg.max_pairs < 1:
        raise InputError("config", "max_pairs", cfg.max_pairs, "must be at least 1")
    if len(cfg.split) != 3 or any(x < 0 for x in cfg.split) or abs(sum(cfg.split) - 1) > 1e-6:
        raise InputError("config", "split", cfg.split, "must be three non-negative fractions summing to 1")
    if cfg.device not in ("auto", "cpu", "cuda", "mps") and not cfg.device.startswith("cuda:"):
        raise InputError("config", "device", cfg.device, "expected auto, cpu, cuda or mps")
    if cfg.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise InputError("config", "dtype", cfg.dtype, "expected auto, float32, bfloat16 or float16")
    for name in ("batch_size", "discover_batch_size"):
        if getattr(cfg, name) < 1:
            raise InputError("config", name, getattr(cfg, name), "must be at least 1")
    if cfg.epochs < 1:
        raise InputError("config", "epochs", cfg.epochs, "must be at least 1")
    if cfg.tau <= 0:
        raise InputError("config", "tau", cfg.tau, "must be positive")
    if not cfg.seeds:
        raise InputError("config", "seeds", cfg.seeds, "give at least one seed")
    for c in cfg.train_conditions:
        if c not in CONDITIONS:
            raise InputError("config", "train_conditions", c, f"expected one of {', '.join(CONDITIONS)}")
    if not cfg.relations:
        raise InputError("config", "relations", "", "give at least one relation")
    if not 0 < cfg.confidence < 1:
        raise InputError("config", "confidence", cfg.confidence, "must be between 0 and 1 (e.g. 0.95)")
    if cfg.runner not in ("default", "dask"):
        raise InputError("config", "runner", cfg.runner, "expected default or dask")
    if cfg.random_draws < 1:
        raise InputError("config", "random_draws", cfg.random_draws, "must be at least 1")
    if cfg.null_draws < 0 or cfg.null_items < 2:
        raise InputError("config", "null_draws", (cfg.null_draws, cfg.null_items), "need null_draws >= 0 and null_items >= 2")
    if len(cfg.search_pairs) != 3 or any(x < 1 for x in cfg.search_pairs):
        raise InputError("config", "search_pairs", cfg.search_pairs, "three positive pair counts (train, dev, test)")
    if cfg.search_dtype not in ("auto", "float32", "bfloat16"):
        raise InputError("config", "search_dtype", cfg.search_dtype, "expected auto, float32 or bfloat16")
    if cfg.scan_k < 1:
        raise InputError("config", "scan_k", cfg.scan_k, "must be at least 1")
    if cfg.bos not in ("auto", "always", "never"):
        raise InputError("config", "bos", cfg.bos, "expected auto, always or never")


def parse_list(text: str | None) -> tuple[str, ...]:
    """Split "a,b , c" into ("a", "b", "c"); None and "" give ()."""
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def parse_ints(text: str, field_name: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in parse_list(text))
    except ValueError:
        raise InputError("command line", field_name, text, "expected comma-separated integers") from None


_ALIASES = {"lambda": "lam", "max-pairs": "max_pairs"}


def from_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file into Config keyword arguments (keys may use - or _; `lambda` means `lam`; a list of
    names or seeds may also be one comma-separated string)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "--config", str(path), "is a directory, expected a TOML file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "--config", str(path), "file not found") from None
    except (UnicodeDecodeError, ValueError) as e:  # binary file, or TOMLDecodeError (a ValueError)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(path, "toml", first[:120], "invalid TOML") from None
    except OSError as e:
        raise InputError(path, "--config", str(path), f"cannot read ({e.strerror})") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = _ALIASES.get(key, key.replace("-", "_"))
        if name in ("relations", "discover_relations", "train_conditions", "models") and isinstance(value, str):
            value = parse_list(value)
        if name == "seeds" and isinstance(value, str):
            try:
                value = parse_ints(value, "seeds")
            except InputError as e:
                raise InputError(path, key, value, e.problem) from None
        out[name] = value
    return out


def make_config(toml_path: Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the TOML file, then explicit overrides (None means "not given")."""
    kwargs: dict[str, Any] = from_toml(toml_path) if toml_path else {}
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return make(toml_path or "command line", **kwargs)


__all__ = ["Config", "CONDITIONS", "DEFAULT_RELATIONS", "default", "make", "make_config", "parse_list", "parse_ints"]
