"""Load LRE relation files (Hernandez et al.) into typed objects, cleaning the dirt they carry.

Fixes applied, each reported as one log line naming the file and the count:
- literal ``\\uXXXX`` escapes left in strings (``Bras\\u00edlia`` -> ``Brasília``);
- leading/trailing whitespace in subjects, objects and templates;
- duplicate (subject, object) pairs (the first is kept);
- subjects listed with several different objects (dropped: no single gold answer);
- invisible characters (zero-width spaces, joiners, soft hyphens) removed; objects that are the same answer after
  Unicode normalisation and case folding (``text.answer_key``) merged into their first spelling, so a gold and a
  distractor are never the same answer.

Malformed files raise ``InputError`` naming the file, the field and the value: a template must hold exactly one
positional ``{}`` field and no other braces. The data folder is walked without following symlinks, at most
``MAX_DEPTH`` folders deep; only regular ``.json`` files are read, anything else is skipped with an INFO line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import string
from dataclasses import dataclass, field
from pathlib import Path

from entrainment.data.text import answer_key, visible
from entrainment.errors import InputError

log = logging.getLogger(__name__)

# The relations the paper's code keeps (16): factual and commonsense relations whose objects are
# not people, years or mostly multi-word names. Excluded: every bias and linguistic relation,
# object superclass, substance phase of matter, word sentiment, company CEO, person *, pokemon
# evolution, president birth/election year, superhero archnemesis/person.
EXCLUDED_TYPES = ("bias", "linguistic")
EXCLUDED_NAMES = ("superclass", "substance", "word", "person", "band", "year", "pokemon", "superhero")

_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
MAX_DEPTH = 4  # folders below --data-dir that are searched for relation files


@dataclass(frozen=True)
class Relation:
    """One cleaned LRE relation: templates and an ordered subject -> object mapping."""

    name: str
    relation_type: str
    domain: str
    range: str
    context_templates: tuple[str, ...]
    query_templates: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]  # unique subjects, file order
    path: Path
    fixes: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def gold(self) -> dict[str, str]:
        return dict(self.pairs)

    @property
    def objects(self) -> tuple[str, ...]:
        """Distinct objects, sorted (order-independent)."""
        return tuple(sorted({o for _, o in self.pairs}))

    @property
    def eligible(self) -> bool:
        """Whether the relation is in the paper's factual/commonsense set (see EXCLUDED_*)."""
        words = f"{self.domain} {self.range}".lower().split()
        return self.relation_type not in EXCLUDED_TYPES and not any(w in EXCLUDED_NAMES for w in words)


def _clean_text(text: str, counts: dict[str, int], path: Path | None = None, where: str = "") -> str:
    fixed = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    try:
        fixed.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as \ud800: no text can hold it
        raise InputError(
            path or "relation file",
            where or "text",
            text,
            "contains an invalid character (a lone UTF-16 surrogate, e.g. \\ud800)",
        ) from None
    if fixed != text:
        counts["unicode_escapes"] = counts.get("unicode_escapes", 0) + len(_ESCAPE.findall(text))
    shown = visible(fixed)  # invisible characters removed, whitespace collapsed
    kind = "invisible_characters" if shown != " ".join(fixed.split()) else "whitespace" if shown != fixed else ""
    if kind:
        counts[kind] = counts.get(kind, 0) + 1
    return shown


def _require(raw: dict, key: str, kind: type, path: Path, where: str = "") -> object:
    if key not in raw:
        raise InputError(path, where + key, None, "missing field")
    value = raw[key]
    if not isinstance(value, kind):
        raise InputError(path, where + key, value, f"expected {kind.__name__}")
    return value


def _templates(raw: dict, key: str, path: Path, counts: dict[str, int]) -> tuple[str, ...]:
    items = _require(raw, key, list, path)
    if not items:
        raise InputError(path, key, items, "empty template list")
    out = []
    for i, t in enumerate(items):
        if not isinstance(t, str) or not _one_field(t):
            raise InputError(path, f"{key}[{i}]", t, "template must contain exactly one {} and no other braces")
        out.append(_clean_text(t, counts, path, f"{key}[{i}]"))
    return tuple(dict.fromkeys(out))


def _one_field(template: str) -> bool:
    """Exactly one replacement field, positional and plain (``{}``), and no stray braces."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError:  # a single { or }
        return False
    return fields == [("", "", None)]


def load_relation(path: Path) -> Relation:
    """Parse and clean one relation file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "file", str(path), "not found") from None
    except json.JSONDecodeError as e:
        raise InputError(path, "json", f"line {e.lineno} column {e.colno}", f"invalid JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise InputError(path, "encoding", str(e.reason), "not UTF-8") from None
    except RecursionError:
        raise InputError(path, "json", "nesting", "nested too deeply to be a relation file") from None
    except OSError as e:
        raise InputError(path, "file", str(path), f"cannot read ({e.strerror})") from None
    if not isinstance(raw, dict):
        raise InputError(path, "json", type(raw).__name__, "expected an object at the top level")
    counts: dict[str, int] = {}
    name = _clean_text(_require(raw, "name", str, path), counts, path, "name")
    if not name:
        raise InputError(path, "name", raw["name"], "empty name")
    props = _require(raw, "properties", dict, path)
    rtype = _require(props, "relation_type", str, path, "properties.")
    domain = _require(props, "domain_name", str, path, "properties.")
    rng = _require(props, "range_name", str, path, "properties.")
    ctx = _templates(raw, "prompt_templates", path, counts)
    zs = _templates(raw, "prompt_templates_zs", path, counts)
    samples = _require(raw, "samples", list, path)
    if not samples:
        raise InputError(path, "samples", samples, "empty sample list")

    seen: dict[str, list[str]] = {}
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise InputError(path, f"samples[{i}]", s, "expected an object with subject and object")
        subj = _clean_text(_require(s, "subject", str, path, f"samples[{i}]."), counts, path, f"samples[{i}].subject")
        obj = _clean_text(_require(s, "object", str, path, f"samples[{i}]."), counts, path, f"samples[{i}].object")
        if not subj or not obj:
            raise InputError(path, f"samples[{i}]", s, "empty subject or object")
        objs = seen.setdefault(subj, [])
        if obj in objs:
            counts["duplicate_pairs"] = counts.get("duplicate_pairs", 0) + 1
        else:
            objs.append(obj)
    spelling: dict[str, str] = {}  # answer key -> first spelling: one answer, one string
    merged = 0
    for s_, objs in seen.items():
        for j, o in enumerate(objs):
            first = spelling.setdefault(answer_key(o), o)
            if first != o:
                objs[j] = first
                merged += 1
        seen[s_] = list(dict.fromkeys(objs))
    if merged:
        counts["same_answer_merged"] = merged
    ambiguous = [s for s, o in seen.items() if len(o) > 1]
    if ambiguous:
        counts["ambiguous_subjects_dropped"] = len(ambiguous)
    pairs = tuple((s, o[0]) for s, o in seen.items() if len(o) == 1)
    if not pairs:
        raise InputError(path, "samples", len(samples), "no usable (subject, object) pair after cleaning")
    for kind, n in sorted(counts.items()):
        log.info("cleaned %s: %s x%d", path, kind, n)
    return Relation(name, rtype, domain, rng, ctx, zs, pairs, path, counts)


def relation_files(data_dir: Path) -> list[Path]:
    """All regular relation .json files under data_dir (at most MAX_DEPTH folders deep, symlinks not followed),
    sorted; other entries named *.json (folders, pipes, devices, links to folders) are skipped with an INFO line."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(data_dir, "--data-dir", str(data_dir), "not a directory")
    files = []
    for folder, dirs, names in os.walk(data_dir, followlinks=False):
        depth = len(Path(folder).relative_to(data_dir).parts)
        if depth >= MAX_DEPTH:
            if dirs:
                log.info("not searching below %s (more than %d folders deep)", folder, MAX_DEPTH)
            dirs[:] = []
        for d in dirs:
            if d.endswith(".json"):
                log.info("skipped %s: a folder, not a relation file", Path(folder) / d)
        for name in names:
            if not name.endswith(".json"):
                continue
            p = Path(folder) / name
            try:
                mode = p.stat().st_mode  # follows a file symlink; a dangling one fails
            except OSError:
                log.info("skipped %s: unreadable (dangling link?)", p)
                continue
            if not stat.S_ISREG(mode):
                log.info("skipped %s: not a regular file", p)
                continue
            files.append(p)
    files.sort()
    if not files:
        raise InputError(data_dir, "--data-dir", str(data_dir), "holds no relation .json files")
    return files


def _peek_name(path: Path) -> str | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return raw.get("name", "").strip() if isinstance(raw, dict) and isinstance(raw.get("name"), str) else None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError):
        return None


def index(data_dir: Path) -> dict[str, Path]:
    """Relation name -> file, reading only the `name` fields (unparsable files are skipped here)."""
    out: dict[str, Path] = {}
    for p in relation_files(data_dir):
        name = _peek_name(p)
        if name:
            out.setdefault(name, p)
    return out


def _unreadable(path: Path) -> str | None:
    """Why a file that should be JSON cannot be read as JSON (None if it parses)."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
        return None
    except json.JSONDecodeError as e:
        return f"invalid JSON: {e.msg} at line {e.lineno}"
    except UnicodeDecodeError:
        return "not UTF-8"
    except RecursionError:
        return "nested too deeply"
    except OSError as e:
        return f"cannot read ({e.strerror})"


def find_files(data_dir: Path, names: tuple[str, ...] | list[str]) -> list[Path]:
    """The files of the named relations, in sorted-name order; an unknown name raises InputError (naming, as
    possible culprits, the files that could not be read at all)."""
    idx = index(data_dir)
    missing = [n for n in names if n not in idx]
    if missing:
        broken = [
            (p, why) for p in relation_files(data_dir) if _peek_name(p) is None for why in [_unreadable(p)] if why
        ]
        also = "; unreadable files there: " + ", ".join(f"{p.name} ({why})" for p, why in broken[:3]) if broken else ""
        raise InputError(
            "--relations",
            "relation",
            missing[0],
            f"unknown relation in {data_dir} (known: {', '.join(sorted(idx)) or 'none'}){also}",
        )
    return [idx[n] for n in sorted(set(names))]


def load_relations(data_dir: Path, names: tuple[str, ...] | list[str]) -> list[Relation]:
    """Load the named relations (sorted by name, so the order of `names` never matters)."""
    return [load_relation(p) for p in find_files(data_dir, names)]


def side_relations(data_dir: Path, mask_relation: str, limit: int = 0) -> list[Relation]:
    """The relations whose recall the side-effect control scores: the eligible relations of data_dir other than the
    mask's, in name order, the first `limit` of them (0 = all). Unreadable files are skipped (the dataset stage
    reports them). The ablate stage (entrainment.stages.ablate) and the planner (entrainment.plan.work) share it.

    Args:
        data_dir: the relation folder.
        mask_relation: the mask's relation (left out).
        limit: most relations (0 = every one).
    Returns:
        The relations.
    """
    out = []
    for path in relation_files(data_dir):
        try:
            rel = load_relation(path)
        except Exception:  # noqa: BLE001 -- an unreadable relation file is no task
            continue
        if rel.eligible and rel.name != mask_relation:
            out.append(rel)
    out.sort(key=lambda r: r.name)
    return out[:limit] if limit else out


def eligible_names(data_dir: Path) -> list[str]:
    """Names of the relations in the paper's factual/commonsense set that are in data_dir."""
    return sorted(r.name for r in (load_relation(p) for p in relation_files(data_dir)) if r.eligible)
