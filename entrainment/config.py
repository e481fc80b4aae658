"""One typed configuration object, passed down to every stage.

Every CLI option and every key of a ``--config file.toml`` maps onto a field here, and each field carries its
description (the CLI's help texts and ``docs/options.md`` are generated from it, with the default shown).
``Config`` is a frozen pydantic model: values are type-checked strictly (an int field refuses 2.5 and "3", a text
field refuses 1, a list field refuses a plain string), unknown keys are rejected, numbers are range-checked
(finite, positive where it matters), and every problem becomes a one-line ``InputError`` naming the key and the
file. Stages read only the fields they need; ``Config.stage_params(stage)`` lists those fields (declared in
``entrainment.stage_graph``), so a change to a field re-runs exactly the stages that read it.

It is longer than 300 lines because every option is declared in this one place.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from entrainment import stage_graph
from entrainment.errors import InputError
from entrainment.paths import LRE_DIR
from entrainment.vocabulary import ABLATION_METHODS, ALL_CONDITIONS, CONTEXT_CONDITIONS, AblationMethod, TrainCondition

# The small default set a plain `entrainment run` uses (README: "Default relations"). Every relation
# in `relations.ELIGIBLE` can be named with --relations.
DEFAULT_RELATIONS: tuple[str, ...] = (
    "country capital city",
    "country currency",
    "fruit inside color",
    "landmark on continent",
)
CONDITIONS: tuple[str, ...] = CONTEXT_CONDITIONS
INT64_MAX = 2**63 - 1
MAX_SEARCHES = 1_000  # mask searches per relation (seeds x search_resamples): an upper bound on runaway options


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {type(v).__name__}")
    if not math.isfinite(float(v)):
        raise ValueError("must be a finite number")
    return float(v)


def _path(v: Any) -> Path:
    if not isinstance(v, (str, Path)):
        raise ValueError(f"expected a path, got {type(v).__name__}")
    if not str(v).strip():
        raise ValueError("empty path")
    return resolved(Path(v))


def resolved(path: Path) -> Path:
    """The absolute path, links followed; a symlink loop is a ValueError (Python 3.11 raises RuntimeError,
    later versions OSError)."""
    try:
        return path.expanduser().resolve()
    except (RuntimeError, OSError) as e:
        raise ValueError(f"cannot resolve the path (a symlink loop?): {e}") from None


def _seq(v: Any) -> tuple:
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"expected a list, got {type(v).__name__}")
    return tuple(v)


def _sorted_set(v: Any) -> tuple:
    return tuple(sorted(set(_seq(v))))


def _ordered_set(v: Any) -> tuple:
    return tuple(dict.fromkeys(_seq(v)))


Number = Annotated[float, BeforeValidator(_number)]
AbsPath = Annotated[Path, BeforeValidator(_path)]
Names = Annotated[tuple[StrictStr, ...], BeforeValidator(_sorted_set)]  # order never matters
OrderedNames = Annotated[tuple[StrictStr, ...], BeforeValidator(_ordered_set)]  # order matters (first = primary)
# the enumerations: the allowed values sit at the field (pydantic refuses anything else, naming them), in --help
# and in docs/options.md (``choices``)
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
SearchDtype = Literal["auto", "float32", "bfloat16"]
Bos = Literal["auto", "always", "never"]
PassageDistractor = Literal["counterfactual", "related"]
SelectionRule = Literal["one_se", "within_5pct"]
SearchResampling = Literal["half", "bootstrap"]
SentenceAbsent = Literal["drop", "neutral"]
Runner = Literal["default", "dask"]
Methods = Annotated[tuple[AblationMethod, ...], BeforeValidator(_ordered_set)]
TrainConditions = Annotated[tuple[TrainCondition, ...], BeforeValidator(_sorted_set)]
Ints = Annotated[tuple[StrictInt, ...], BeforeValidator(_sorted_set)]


def _f(default: Any, description: str) -> Any:
    return Field(default, description=description)


class Config(BaseModel):
    """All pipeline parameters. Paths are stored resolved; name lists sorted and deduplicated."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, validate_default=True)

    out: AbsPath = _f(Path("results"), "Output folder: every table, the report and the caches.")
    data_dir: AbsPath = _f(LRE_DIR, "Folder of LRE relation JSON files (default: the shipped data/lre).")
    relations: Names = _f(DEFAULT_RELATIONS, "LRE relation names (the `name` field), comma-separated.")
    items: AbsPath | None = _f(
        None, "Your own items (JSONL, CSV or Parquet) instead of LRE relations; see docs/own-items.md."
    )
    model: StrictStr = _f(
        "smollm2-135m",
        "smollm2-135m | gemma3-270m | qwen2.5-coder-0.5b | qwen2.5-coder-1.5b "
        "(embedded: `entrainment models`) | a Hugging Face id | a local folder | "
        "a .gguf.",
    )
    models: Names = _f(
        (), "Several models side by side in one --out (each cached per model); the first is the report's example model."
    )
    seed: StrictInt = _f(0, "Sampling seed (prompts, random heads, donors).")
    device: StrictStr = _f("auto", "auto | cpu | cuda | cuda:N | mps.")
    dtype: Dtype = _f("auto", "auto (bfloat16 on CUDA, else float32) | float32 | bfloat16 | float16.")
    # generate
    max_pairs: StrictInt = _f(
        60,
        "Items per relation and condition for the shift statistics (split train/dev/test "
        "by --split). It does not size the head search (--search-pairs, --seeds, "
        "--search-resamples, --epochs), the scan (--scan-items), the ablation controls "
        "(--null-draws, --null-items, --random-draws) or the methods (--compare-methods): "
        "for a small run of every stage use `run --quick` (configs/quick.toml).",
    )
    split: Annotated[tuple[Number, Number, Number], BeforeValidator(_seq)] = _f(
        (0.8, 0.1, 0.1), "Train, dev, test fractions of the query subjects."
    )
    search_pairs: Annotated[tuple[StrictInt, StrictInt, StrictInt], BeforeValidator(_seq)] = _f(
        (25, 12, 40),
        "Head-search (query, context subject) pairs per split (train, dev, test), each crossed with "
        "every context x query template.",
    )
    template_holdout: StrictBool = _f(
        True,
        "Keep one query template of each discovery relation out of train and dev "
        "(the test split keeps it: seen vs unseen template gains).",
    )
    n_passages: StrictInt = _f(4, "Passages per multi-passage (`passages`) context.")
    passage_items: StrictInt = _f(
        24,
        "Queries per split of each discovery relation that get a `passages` "
        "context (each at every position 1..n_passages); 0 = none.",
    )
    passage_distractor: PassageDistractor = _f(
        "counterfactual",
        "The passage that carries the distractor: counterfactual (a false fact of the query's relation) | related.",
    )
    prompt_instruction: StrictStr = _f(
        "The text above may be wrong; answer from what you know.",
        "The prompting baseline's instruction, placed between context and query.",
    )
    # measure, discover, ablate
    batch_size: StrictInt = _f(32, "Batch size of measurement and evaluation passes.")
    bos: Bos = _f("auto", "auto (the tokenizer's own) | always (prepend BOS, as TransformerLens) | never.")
    search_dtype: SearchDtype = _f(
        "auto",
        "Search-side passes (mask training, scan, AtP, k-curves, null): auto = "
        "bfloat16 autocast on CUDA, float32 on CPU | float32 | bfloat16.",
    )
    ablation_method: AblationMethod = _f("zero", "How a head is removed: zero | mean | resample (docs/method.md).")
    compare_methods: Methods = _f(
        ("zero", "mean"),
        "Methods the discovery relation's masks and scan are also "
        "evaluated under; () = only --ablation-method (resample: "
        "configs/heads.toml and configs/paper.toml).",
    )
    # stats
    confidence: Number = _f(0.95, "Confidence level of every CI.")
    ablation_heads: StrictStr | None = _f(None, "Measure with these heads removed: a heads.parquet, or 3.4,10.7.")
    # discover
    discover_relations: Names = _f(("country capital city",), "Relations to search heads for.")
    epochs: StrictInt = _f(
        30,
        "Mask-search epochs (passes over a search's training sample): a cap beside "
        "max_steps; the search ends at whichever comes first, or at convergence.",
    )
    max_steps: StrictInt = _f(40, "Mask-search budget in optimiser steps (each a batch of discover_batch_size rows).")
    converge_steps: StrictInt = _f(
        16,
        "A search has converged (and stops) once its deterministic mask has not "
        "changed for this many optimiser steps, counted after it first changed.",
    )
    selection_rule: SelectionRule = _f(
        "one_se",
        "Which epoch's mask a search reports: one_se (the fewest heads whose "
        "dev delta is within one subject-bootstrap standard error of the best) "
        "| within_5pct (within 5% of the best).",
    )
    search_resampling: SearchResampling = _f(
        "half",
        "Training samples of the searches with resample >= 1: half (subject-"
        "level half-samples, complementary pairs, without replacement) | "
        "bootstrap (items with replacement).",
    )
    discover_batch_size: StrictInt = _f(16, "Mask-search batch size.")
    lr: Number = _f(1.0, "AdamW learning rate of the mask logits.")
    warmup_steps: StrictInt = _f(
        0,
        "Linear learning-rate warm-up of a mask search: step t (from 1) runs at lr x min(1, t / warmup_steps); "
        "0 = none (Adam's first steps then move every logit by about lr).",
    )
    lam: Number = _f(1.0, "Sparsity weight lambda.")
    tau: Number = _f(1.0, "Gumbel-sigmoid temperature.")
    weight_decay: Number = _f(0.0, "AdamW weight decay (the paper's code used 0.01).")
    init: Number = _f(3.0, "Start value of the mask logits (3 = all kept; the paper: 0).")
    seeds: Ints = _f((0, 1), "Search seeds (x search_resamples = the searches of the stability selection).")
    search_resamples: StrictInt = _f(
        2,
        "Training sets per seed: the full training split, then subject half-samples "
        "(or bootstrap resamples, search_resampling) of it (stability selection; "
        "searches = seeds x resamples).",
    )
    searches_per_pass: StrictInt = _f(
        0,
        "Mask searches (seeds x resamples of one relation) run together in one batched pass, each row under its own "
        "search's mask: 0 = auto (8 on a GPU; 1, one at a time, on a CPU, where batching is slower: "
        "docs/benchmarks.md).",
    )
    stability_threshold: Number = _f(0.5, "A head is in the stable set if at least this share of searches removed it.")
    train_conditions: TrainConditions = _f(("related",), "Conditions the masks are trained (and the scan scored) on.")
    shared_mask: StrictBool = _f(False, "Also learn one mask on the union of the discovery relations (`shared`).")
    # scan
    scan: StrictBool = _f(True, "Run the head scan (single-head scan + AtP + k-curves) in `run`.")
    scan_k: StrictInt = _f(8, "Longest k-curve: top-k heads removed, k = 1..K.")
    scan_items: StrictInt = _f(8, "Dev items the single-head scan scores (a fixed seeded subsample; 0 = all).")
    compare_everywhere: StrictBool = _f(
        False,
        "Evaluate every method of compare_methods everywhere (transfer, random "
        "heads, the null, side effects); default: the other methods only on "
        "the masks' own relation.",
    )
    # heads (head types)
    head_types: StrictBool = _f(True, "Run the head-types stage (entrainment heads) in `run`.")
    head_types_k: StrictInt = _f(5, "Head types: top-k heads per score in the overlap tests and the dissociation.")
    head_types_seqs: StrictInt = _f(4, "Head types: sequences of repeated random tokens [BOS] r1..rT r1..rT.")
    head_types_len: StrictInt = _f(50, "Head types: T, the random tokens per half of each sequence.")
    head_types_tokens: StrictInt = _f(
        1000, "Head types: tokens in the copy-suppression subset (the prompts' tokens, then the lowest ordinary ids)."
    )
    head_types_draws: StrictInt = _f(3, "Head types: random head sets per dissociation control.")
    # sentences
    sentences: StrictBool = _f(True, "Run the sentence-level stage (entrainment sentences) in `run`.")
    sentence_items: StrictInt = _f(
        6,
        "Sentence items per relation and condition (seeded sample, distinct query "
        "subjects first; discovery relations: dev and test subjects only).",
    )
    sentence_absent: SentenceAbsent = _f(
        "drop",
        "The absent arm of sentence scoring: drop (the query alone) | neutral (a "
        "length-matched neutral sentence in the context's place).",
    )
    sentence_draws: StrictInt = _f(
        10, "Random head sets of the stable set's size the sentence-level head removal is compared with (0 = none)."
    )
    # ablate
    random_draws: StrictInt = _f(2, "Random head sets averaged in the random_heads rows.")
    null_draws: StrictInt = _f(
        50, "Random head sets in the significance null (the smallest p it can give is 1/51; configs/heads.toml: 100)."
    )
    null_items: StrictInt = _f(24, "Test items (fixed seeded subsample) the null and the k-curves use.")
    # cross-fitting over subjects (the verdict)
    crossfit_folds: StrictInt = _f(
        3,
        "Cross-fitting folds of each discovery relation's query subjects: one search "
        "per fold on the other folds' subjects, tested on the fold's (verdict.parquet, "
        "`crossfit:<relation>`); 0 = off.",
    )
    crossfit_items: Annotated[tuple[StrictInt, StrictInt], BeforeValidator(_seq)] = _f(
        (50, 24), "Most training and dev items of each fold's search (seeded subsamples; the default search's size)."
    )
    side_items: StrictInt = _f(10, "Subjects per other relation in the side-effect control's recall (no context).")
    side_relations: StrictInt = _f(
        0,
        "Other relations in the side-effect control's recall: the first N eligible "
        "ones by name; 0 = every eligible relation in --data-dir.",
    )
    side_icl_items: StrictInt = _f(
        0, "ICL items per shipped dataset in the side-effect control (the first N of each; 0 = all 60)."
    )
    side_random_draws: StrictInt = _f(
        1,
        "Random head sets of each mask's size in the side-effect control (each costs "
        "a full pass over the recall and ICL items); configs/heads.toml: 20.",
    )
    crossfit_draws: StrictInt = _f(
        20,
        "Random head sets (one of each fold's size per draw) in the cross-fitted "
        "verdict's null; configs/heads.toml: 100.",
    )
    # control
    smoke: StrictBool = _f(
        False,
        "A smoke run (configs/quick.toml, `run --quick`): the console and the report label "
        "its numbers as a check of the install, not evidence.",
    )
    refresh: StrictBool = _f(False, "Ignore caches for this command.")
    runner: Runner = _f("default", "default | dask (fan shards out over a Dask cluster).")
    dask_address: StrictStr | None = _f(None, "An existing Dask scheduler (else a LocalCluster).")

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

    def methods(self) -> tuple[str, ...]:
        """The ablation methods evaluated: the search method first, then the others of compare_methods."""
        return (self.ablation_method,) + tuple(m for m in self.compare_methods if m != self.ablation_method)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able options (Prefect deployment parameters); ``Config(**cfg.to_dict()) == cfg``."""
        return self.model_dump(mode="json")

    def stage_params(self, stage: str) -> dict[str, Any]:
        """The fields that stage reads, as JSON-able values: the parameter part of its cache key."""
        names = stage_graph.fields(stage)
        dumped = self.model_dump(mode="json", include=set(names))
        return {name: dumped[name] for name in names}


def default(name: str) -> Any:
    """A field's default value."""
    return Config.model_fields[name].default


def describe(name: str) -> str:
    """A field's description."""
    return Config.model_fields[name].description or ""


def choices(name: str) -> tuple[str, ...]:
    """The allowed values of an enumerated field (a ``Literal``, or a tuple of one), () for any other field."""
    kind = Config.model_fields[name].annotation
    while get_args(kind) and getattr(kind, "__origin__", None) is not Literal:
        kind = get_args(kind)[0]  # Annotated[tuple[Literal[...], ...], ...] -> tuple[...] -> Literal[...]
    return tuple(get_args(kind)) if getattr(kind, "__origin__", None) is Literal else ()


def make(where: object = "config", **kwargs: Any) -> Config:
    """Config(**kwargs) with a pydantic error turned into a one-line InputError naming the key (and file)."""
    try:
        return Config(**kwargs)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "options"
        top = str(err["loc"][0]) if err["loc"] else ""
        msg = (
            err["msg"]
            if err["type"] != "extra_forbidden"
            else f"unknown option (known: {', '.join(sorted(Config.model_fields))})"
        )
        msg = msg.removeprefix("Value error, ")
        raise InputError(where, key, kwargs.get(top, err.get("input")), msg) from None


def _bad(name: str, value: Any, problem: str) -> None:
    raise InputError("config", name, value, problem)


def check(cfg: Config) -> None:
    """Reject impossible values with a one-line InputError (types are pydantic's, ranges are checked here)."""
    at_least = {
        "max_pairs": 1,
        "batch_size": 1,
        "discover_batch_size": 1,
        "epochs": 1,
        "random_draws": 1,
        "null_draws": 0,
        "null_items": 2,
        "scan_k": 1,
        "search_resamples": 1,
        "searches_per_pass": 0,
        "max_steps": 1,
        "converge_steps": 1,
        "warmup_steps": 0,
        "n_passages": 2,
        "passage_items": 0,
        "scan_items": 0,
        "sentence_items": 1,
        "sentence_draws": 0,
        "head_types_k": 1,
        "head_types_seqs": 1,
        "head_types_len": 2,
        "head_types_tokens": 2,
        "head_types_draws": 1,
    }
    at_least["crossfit_draws"] = 0
    at_least["side_random_draws"] = 1
    at_least["side_items"] = 1
    at_least["side_relations"] = 0
    at_least["side_icl_items"] = 0
    for name, low in at_least.items():
        if getattr(cfg, name) < low:
            _bad(name, getattr(cfg, name), f"must be at least {low}")
    at_most = {"epochs": 10_000, "random_draws": 1_000, "null_draws": 100_000, "search_resamples": MAX_SEARCHES}
    for name, high in at_most.items():  # runaway values: weeks of work from one typo
        if getattr(cfg, name) > high:
            _bad(name, getattr(cfg, name), f"must be at most {high}")
    if len(cfg.seeds) * cfg.search_resamples > MAX_SEARCHES:
        _bad(
            "search_resamples",
            cfg.search_resamples,
            f"seeds x search_resamples = {len(cfg.seeds) * cfg.search_resamples} searches per relation; at most "
            f"{MAX_SEARCHES}",
        )
    if not 0 <= cfg.seed <= INT64_MAX:
        _bad("seed", cfg.seed, "must be between 0 and 2**63 - 1")
    if not cfg.seeds:
        _bad("seeds", cfg.seeds, "give at least one seed")
    if any(not 0 <= s <= INT64_MAX for s in cfg.seeds):
        _bad("seeds", cfg.seeds, "seeds must be between 0 and 2**63 - 1")
    if len(cfg.split) != 3 or any(x < 0 for x in cfg.split) or abs(sum(cfg.split) - 1) > 1e-6:
        _bad("split", cfg.split, "must be three non-negative fractions summing to 1")
    if not (cfg.split[1] > 0 and cfg.split[2] > 0):
        _bad("split", cfg.split, "dev and test fractions must be positive (discovery needs dev, ablation needs test)")
    if cfg.device not in ("auto", "cpu", "cuda", "mps") and not (
        cfg.device.startswith("cuda:") and cfg.device[5:].isdigit()
    ):
        _bad("device", cfg.device, "expected auto, cpu, cuda, cuda:N or mps")
    if cfg.lr <= 0:
        _bad("lr", cfg.lr, "must be positive")
    for name in ("lam", "weight_decay"):
        if getattr(cfg, name) < 0:
            _bad(name, getattr(cfg, name), "must be >= 0")
    if cfg.tau <= 0:
        _bad("tau", cfg.tau, "must be positive")
    if not 0 < cfg.stability_threshold <= 1:
        _bad("stability_threshold", cfg.stability_threshold, "must be in (0, 1]")
    if not cfg.relations:
        _bad("relations", "", "give at least one relation")
    if not 0 < cfg.confidence < 1:
        _bad("confidence", cfg.confidence, "must be between 0 and 1 (e.g. 0.95)")
    if len(cfg.search_pairs) != 3 or any(x < 1 for x in cfg.search_pairs):
        _bad("search_pairs", cfg.search_pairs, "three positive pair counts (train, dev, test)")
    if cfg.crossfit_folds < 0 or cfg.crossfit_folds == 1:
        _bad("crossfit_folds", cfg.crossfit_folds, "must be 0 (off) or at least 2")
    if len(cfg.crossfit_items) != 2 or any(x < 1 for x in cfg.crossfit_items):
        _bad("crossfit_items", cfg.crossfit_items, "two positive item counts (train, dev)")
    if not cfg.prompt_instruction.strip():
        _bad("prompt_instruction", cfg.prompt_instruction, "must not be empty")
    for m in cfg.models:
        if not m.strip():
            _bad("models", cfg.models, "an empty model name")
    if not cfg.model.strip():
        _bad("model", cfg.model, "an empty model name")


def parse_list(text: str | None) -> tuple[str, ...]:
    """Split "a,b , c" into ("a", "b", "c"); None and "" give ()."""
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def parse_ints(text: str, field_name: str) -> tuple[int, ...]:
    """Split "0,1,2" into (0, 1, 2); anything else is a one-line InputError naming the option."""
    try:
        return tuple(int(p) for p in parse_list(text))
    except ValueError:
        raise InputError("command line", field_name, text, "expected comma-separated integers") from None


def parse_numbers(text: str, field_name: str) -> tuple[float, ...]:
    """Split "0.8,0.1,0.1" into floats; anything else is a one-line InputError naming the option."""
    try:
        return tuple(float(p) for p in parse_list(text))
    except ValueError:
        raise InputError("command line", field_name, text, "expected comma-separated numbers") from None


_ALIASES = {"lambda": "lam"}
LIST_FIELDS = ("relations", "discover_relations", "train_conditions", "models", "compare_methods")


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
    spelled: dict[str, str] = {}
    for key, value in raw.items():
        name = _ALIASES.get(key, key.replace("-", "_"))
        if name in spelled:  # `max-pairs` and `max_pairs` (or `lambda` and `lam`) name one option
            raise InputError(path, key, value, f"sets the same option as {spelled[name]!r} (give it once)")
        spelled[name] = key
        if name in LIST_FIELDS and isinstance(value, str):
            value = parse_list(value)
        if name == "seeds" and isinstance(value, str):
            try:
                value = parse_ints(value, "seeds")
            except InputError as e:
                raise InputError(path, key, value, e.problem) from None
        if (
            name in ("items", "data_dir", "out")
            and isinstance(value, str)
            and value.strip()
            and not Path(value).expanduser().is_absolute()
        ):
            value = str(path.parent / value)  # relative paths in a config file are relative to the file
        out[name] = value
    return out


def make_config(toml_path: Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the TOML file, then explicit overrides (None means "not given")."""
    kwargs: dict[str, Any] = from_toml(toml_path) if toml_path else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    kwargs.update(given)
    try:
        return make(toml_path or "command line", **kwargs)
    except InputError as e:
        top = e.field.split(".")[0]
        if toml_path and (top in given or e.where == "config"):  # blame where the value came from
            where = "command line" if top in given else toml_path
            raise InputError(where, e.field, e.value, e.problem) from None
        raise


def markdown() -> str:
    """Every option as a Markdown table (docs/options.md): TOML key, default, stages that read it, meaning."""
    used = {f: [s.name for s in stage_graph.STAGES if f in s.fields] for f in Config.model_fields}
    rows = ["| option (TOML key) | CLI flag | default | read by | meaning |", "|---|---|---|---|---|"]
    for name, field in Config.model_fields.items():
        dflt = field.default
        shown = ", ".join(map(str, dflt)) if isinstance(dflt, tuple) else ("" if dflt is None else str(dflt))
        if name in ("out", "data_dir"):
            shown = {"out": "results", "data_dir": "data/lre (shipped)"}[name]
        flag = "--lambda" if name == "lam" else "--" + name.replace("_", "-")
        allowed = f" One of: {', '.join(choices(name))}." if choices(name) else ""
        rows.append(
            f"| `{name}` | `{flag}` | {shown} | {', '.join(used[name]) or 'control'} | {field.description}{allowed} |"
        )
    return "\n".join(rows)


__all__ = [
    "Config",
    "CONDITIONS",
    "ALL_CONDITIONS",
    "ABLATION_METHODS",
    "DEFAULT_RELATIONS",
    "default",
    "choices",
    "describe",
    "make",
    "make_config",
    "parse_list",
    "parse_ints",
    "parse_numbers",
    "markdown",
]

if __name__ == "__main__":
    print(markdown())
