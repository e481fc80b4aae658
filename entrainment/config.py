"""One typed configuration object, passed down to every stage.

Every CLI option and every key of a ``--config file.toml`` maps onto a field here. Stages read only
the fields they need; ``Config.stage_params(stage)`` lists those fields, so a change to a field
re-runs exactly the stages that read it.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Config:
    """All pipeline parameters. Paths are stored resolved."""

    out: Path = Path("results")
    data_dir: Path = LRE_DIR
    relations: tuple[str, ...] = DEFAULT_RELATIONS
    model: str = "smollm2-135m"
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    # generate
    max_pairs: int = 60
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    # head-search items of the discovery relations: (query subject, context subject) pairs per split
    # (train, dev, test), each crossed with every context x query template (README: "Head-search data")
    search_pairs: tuple[int, int, int] = (25, 12, 100)
    # measure, discover, ablate
    batch_size: int = 32
    bos: str = "auto"
    # stats
    confidence: float = 0.95
    ablation_heads: str | None = None
    # discover (entrainment.discover.SearchParams takes its defaults from here)
    discover_relations: tuple[str, ...] = ("country capital city",)
    epochs: int = 12
    discover_batch_size: int = 16
    lr: float = 1.0
    lam: float = 1.0
    tau: float = 1.0
    weight_decay: float = 0.0
    init: float = 3.0
    seeds: tuple[int, ...] = (0, 1, 2)
    train_conditions: tuple[str, ...] = ("related",)
    shared_mask: bool = False  # also learn one mask on the union of the discovery relations (mask_relation "shared")
    # ablate
    random_draws: int = 10
    null_draws: int = 100
    null_items: int = 64
    # control
    refresh: bool = False
    runner: str = "default"
    dask_address: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out).expanduser().resolve())
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())
        for name in ("relations", "discover_relations", "train_conditions"):  # order never matters
            object.__setattr__(self, name, tuple(sorted(set(getattr(self, name)))))
        object.__setattr__(self, "seeds", tuple(sorted(set(int(s) for s in self.seeds))))
        object.__setattr__(self, "split", tuple(float(x) for x in self.split))
        object.__setattr__(self, "search_pairs", tuple(int(x) for x in self.search_pairs))
        check(self)

    def replace(self, **changes: Any) -> "Config":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able options (Prefect deployment parameters); ``Config(**cfg.to_dict()) == cfg``."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
        return out

    def stage_params(self, stage: str) -> dict[str, Any]:
        """The fields that stage reads, as JSON-able values: the parameter part of its cache key."""
        out = {}
        for name in STAGE_FIELDS[stage]:
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Path) else value
        return out


STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "generate": ("relations", "seed", "max_pairs", "split", "discover_relations", "search_pairs"),
    "measure": ("model", "device", "dtype", "batch_size", "ablation_heads", "bos"),
    "stats": ("confidence",),
    "discover": ("model", "device", "dtype", "discover_relations", "epochs", "discover_batch_size", "lr",
                 "lam", "tau", "weight_decay", "init", "seeds", "train_conditions", "bos"),
    "ablate": ("model", "device", "dtype", "batch_size", "random_draws", "seed", "bos", "null_draws", "null_items",
               "train_conditions"),
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
    """Read a TOML file into Config keyword arguments (keys may use - or _; `lambda` means `lam`)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, "--config", str(path), "file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, "toml", str(e), "invalid TOML") from None
    known = {f.name: f for f in fields(Config)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = _ALIASES.get(key, key.replace("-", "_"))
        if name not in known:
            raise InputError(path, key, value, f"unknown option (known: {', '.join(sorted(known))})")
        if name in ("relations", "discover_relations", "train_conditions") and isinstance(value, str):
            value = parse_list(value)
        if name == "seeds" and isinstance(value, (str, int)):
            value = parse_ints(str(value), "seeds")
        if isinstance(value, list):
            value = tuple(value)
        out[name] = value
    return out


def make_config(toml_path: Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the TOML file, then explicit overrides (None means "not given")."""
    kwargs: dict[str, Any] = from_toml(toml_path) if toml_path else {}
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Config(**kwargs)
    except TypeError as e:
        raise InputError(toml_path or "config", "options", str(kwargs), str(e)) from None


__all__ = ["Config", "CONDITIONS", "DEFAULT_RELATIONS", "make_config", "parse_list", "parse_ints", "field"]
