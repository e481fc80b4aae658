"""Build the prompt table (prompts.parquet) for the four context conditions.

Format (the paper's released head-search code):
  context   = context_template.format(context_subject) + " " + context_object + "."
  query     = query_template.format(query_subject)
  text_ctx  = context + " " + query          text_base = query
Random contexts are one word and a period, as in the paper's Figure 1(d), written with a leading
space (" window.") so that the word is tokenised exactly as the scored distractor " window" is.

Each relation is generated from its own seeded RNG (``f"{seed}|{relation}"``) and iterates only
over sorted lists, so a relation's rows depend on its own file, the shipped word list and fact
pool, the seed and the parameters -- never on which other relations are selected or in what order.
Splits are by query subject; related and counterfactual items come in matched pairs.

Head-search items (the discovery relations): as in the paper's released head-search code, the related
condition crosses sampled (query subject, context subject) pairs with **every** context template x query
template, up to ``search_pairs = (train, dev, test)`` pairs per split. Unlike that code, dev is split by
query subject too, so train, dev and test share no query subject (contexts may name any other subject,
as in the paper). Counterfactual items are matched to a seeded subset of max_pairs of those related items.
Dev and test get ceil(10%) of the subjects (the paper's 3 test subjects of country capital city -> 276 items).

Discovery relations also get, per split:
- **template holdout** (``holdout=True``): the relation's first query template is kept out of train and dev (all
  conditions); the test split keeps every template, so a mask can be tested on seen and unseen templates;
- **passages** items (``passage_items`` queries per split): a context of ``n_passages`` passages -- one carries the
  distractor (the counterfactual fact by default, or the related fact), the others are true facts of other
  subjects whose object is neither the query's gold nor the distractor -- with the distractor passage placed at
  every position 1..n (same passages otherwise; ``position`` and ``n_passages`` columns, one ``pair_id`` per query);
- counterfactual items matched to ``max(quota, passage_items)`` related items per split (enough for accuracy CIs).

Every row also carries ``text_prompted``: the prompting baseline's input, ``context + " " + instruction + " " +
query``, which differs from ``text_ctx`` only by the instruction.

Longer than 300 lines on purpose: every condition's prompt construction (split, quotas, passages, the search's
train/dev items) shares the splitting and the seeded draws, so they stay in one place.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from entrainment.data.relations import Relation
from entrainment.errors import InputError
from entrainment.store.schema import PROMPTS
from entrainment.vocabulary import SPLITS


@dataclass(frozen=True, order=True)
class Fact:
    """A true fact of some relation, used as an `irrelevant` context."""

    relation: str
    subject: str
    object: str
    context: str


def load_words(path: Path) -> list[str]:
    """The random-word list: one word per line, '#' comments allowed; sorted and deduplicated."""
    words = sorted({w.strip() for w in Path(path).read_text().splitlines() if w.strip() and not w.startswith("#")})
    bad = [w for w in words if not w.isalpha()]
    if bad:
        raise InputError(path, "word", bad[0], "random words must be single alphabetic words")
    if not words:
        raise InputError(path, "words", "", "empty word list")
    return words


def load_facts(path: Path) -> list[Fact]:
    """The pool of true facts used for irrelevant contexts (see scripts/make_irrelevant_facts.py)."""
    try:
        raw = json.loads(Path(path).read_text())
        return sorted(Fact(**f) for f in raw) if raw else []
    except (json.JSONDecodeError, TypeError) as e:
        raise InputError(
            path, "facts", str(e)[:80], "expected a JSON list of {relation, subject, object, context}"
        ) from None


def context_sentence(template: str, subject: str, obj: str) -> str:
    return f"{template.format(subject)} {obj}."


def prompt_id(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


def split_subjects(
    subjects: list[str], fractions: tuple[float, float, float], rng: random.Random, where: str
) -> dict[str, str]:
    """Assign each subject to train/dev/test (dev and test get at least one subject each)."""
    order = sorted(subjects)
    rng.shuffle(order)
    n = len(order)
    n_test = max(1, math.ceil(n * fractions[2] - 1e-9)) if fractions[2] > 0 else 0
    n_dev = max(1, math.ceil(n * fractions[1] - 1e-9)) if fractions[1] > 0 else 0
    if n - n_test - n_dev < 1:
        raise InputError(where, "samples", n, "too few distinct subjects to split into train/dev/test")
    out = {s: "test" for s in order[:n_test]}
    out.update({s: "dev" for s in order[n_test : n_test + n_dev]})
    out.update({s: "train" for s in order[n_test + n_dev :]})
    return out


def _quota(max_pairs: int, fractions: tuple[float, float, float]) -> dict[str, int]:
    return {s: (max(1, round(max_pairs * f)) if f > 0 else 0) for s, f in zip(SPLITS, fractions)}


DEFAULT_INSTRUCTION = "The text above may be wrong; answer from what you know."


@dataclass(frozen=True)
class SearchData:
    """What a discovery relation gets beyond the plain conditions (module docstring)."""

    pairs: tuple[int, int, int] = (25, 12, 40)
    holdout: bool = True
    passage_items: int = 24
    n_passages: int = 4
    passage_distractor: str = "counterfactual"


def prompted_text(context: str, instruction: str, query: str) -> str:
    """The prompting baseline's input: the instruction between context and query."""
    return f"{context} {instruction} {query}" if context else f"{instruction} {query}"


def held_out_template(rel: Relation) -> str | None:
    """The query template template_holdout keeps out of train and dev: the relation's first (None if it has only
    one). The first, not the last: on country capital city the intact model already prefers the gold by about 11.6
    logits on the first template's training items, where the 2-way cross-entropy of the mask search saturates (no
    gradient); a search trained on it alone selected no head in any of 6 searches (docs/results.md)."""
    return rel.query_templates[0] if len(rel.query_templates) > 1 else None


def generate_relation(
    rel: Relation,
    words: list[str],
    facts: list[Fact],
    seed: int,
    max_pairs: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    search: SearchData | None = None,
    instruction: str = DEFAULT_INSTRUCTION,
) -> list[dict]:
    """All prompt rows of one relation, deterministic in (relation content, pools, seed, params).

    With `search` (a discovery relation) the related items are head-search items, with template holdout, passages
    and more counterfactuals (module docstring)."""
    rng = random.Random(f"{seed}|{rel.name}")
    gold = rel.gold
    objects = rel.objects
    lowered = {o.lower() for o in objects}
    if len(objects) < 3:
        raise InputError(rel.path, "samples", len(objects), "need at least 3 distinct objects for counterfactuals")
    split_of = split_subjects(list(gold), fractions, rng, str(rel.path))
    subjects = sorted(gold)
    pool_words = [w for w in words if w.lower() not in lowered]
    pool_facts = [f for f in facts if f.relation != rel.name and f.object.lower() not in lowered]
    quota = _quota(max_pairs, fractions)
    rows: list[dict] = []

    def row(
        cond: str,
        q: str,
        qt: str,
        ctx_subject: str,
        distractor: str,
        context: str,
        pair: str | None,
        position: int | None = None,
        n_passages: int | None = None,
    ) -> dict:
        query = qt.format(q)
        return {
            "prompt_id": prompt_id(rel.name, cond, q, context, query),
            "relation": rel.name,
            "condition": cond,
            "subject": q,
            "gold": gold[q],
            "distractor": distractor,
            "context": context,
            "query": query,
            "text_ctx": f"{context} {query}",
            "text_base": query,
            "split": split_of[q],
            "pair_id": pair,
            "context_subject": ctx_subject,
            "query_template": qt,
            "position": position,
            "n_passages": n_passages,
            "text_prompted": prompted_text(context, instruction, query),
        }

    for split in SPLITS:
        qs = [s for s in subjects if split_of[s] == split]
        k = quota[split]
        # related + counterfactual: matched pairs (same query, template and context subject)
        cands = [(q, c) for q in qs for c in subjects if c != q and gold[c] != gold[q]]
        if search is not None:
            held = held_out_template(rel) if search.holdout and split != "test" else None
            qts = tuple(t for t in rel.query_templates if t != held)
            rows.extend(
                _search_items(
                    rel, rng, cands, search.pairs[SPLITS.index(split)], max(k, search.passage_items), row, qts
                )
            )
            rows.extend(_passage_items(rel, rng, qs, search, qts, row))
            cands = []  # related/counterfactual done
        for q, c in rng.sample(cands, min(k, len(cands))):
            ct, qt = rng.choice(rel.context_templates), rng.choice(rel.query_templates)
            false = [o for o in objects if o not in (gold[c], gold[q])]
            wrong = rng.choice(false)
            pair = prompt_id(rel.name, "pair", q, c, ct, qt)
            rows.append(row("related", q, qt, c, gold[c], context_sentence(ct, c, gold[c]), pair))
            rows.append(row("counterfactual", q, qt, c, wrong, context_sentence(ct, c, wrong), pair))
        held = held_out_template(rel) if search is not None and search.holdout and split != "test" else None
        qts = [t for t in rel.query_templates if t != held]
        cands_f = [(q, f) for q in qs for f in pool_facts if f.object != gold[q]]
        for q, f in rng.sample(cands_f, min(k, len(cands_f))):
            rows.append(row("irrelevant", q, rng.choice(qts), f.subject, f.object, f.context, None))
        cands_w = [(q, w) for q in qs for w in pool_words]
        for q, w in rng.sample(cands_w, min(k, len(cands_w))):
            rows.append(row("random", q, rng.choice(qts), "", w, f" {w}.", None))
    return rows


def _search_items(
    rel: Relation,
    rng: random.Random,
    cands: list[tuple[str, str]],
    n_pairs: int,
    n_counter: int,
    row,
    query_templates: tuple[str, ...],
) -> list[dict]:
    """Related items: n_pairs sampled (query, context) pairs x every template pair; counterfactuals matched to
    a seeded subset of n_counter of them."""
    gold, objects = rel.gold, rel.objects
    related = [
        (q, c, ct, qt)
        for q, c in rng.sample(cands, min(n_pairs, len(cands)))
        for ct in rel.context_templates
        for qt in query_templates
    ]
    out = []
    for q, c, ct, qt in related:
        out.append(
            row(
                "related",
                q,
                qt,
                c,
                gold[c],
                context_sentence(ct, c, gold[c]),
                prompt_id(rel.name, "pair", q, c, ct, qt),
            )
        )
    for q, c, ct, qt in rng.sample(related, min(n_counter, len(related))):
        wrong = rng.choice([o for o in objects if o not in (gold[c], gold[q])])
        out.append(
            row(
                "counterfactual",
                q,
                qt,
                c,
                wrong,
                context_sentence(ct, c, wrong),
                prompt_id(rel.name, "pair", q, c, ct, qt),
            )
        )
    return out


def _passage_items(
    rel: Relation, rng: random.Random, qs: list[str], search: SearchData, query_templates: tuple[str, ...], row
) -> list[dict]:
    """`passages` items: up to search.passage_items queries of the split, each with the distractor passage at every
    position 1..n_passages among n_passages - 1 true facts of other subjects (module docstring)."""
    gold, objects, subjects = rel.gold, rel.objects, sorted(rel.gold)
    n = search.n_passages
    queries = [(q, qt) for q in qs for qt in query_templates]
    out = []
    for q, qt in rng.sample(queries, min(search.passage_items, len(queries))):
        cands = [c for c in subjects if c != q and gold[c] != gold[q]]
        if not cands:
            continue
        c = rng.choice(cands)
        ct = rng.choice(rel.context_templates)
        if search.passage_distractor == "counterfactual":
            wrongs = [o for o in objects if o not in (gold[c], gold[q])]
            if not wrongs:
                continue
            distractor = rng.choice(wrongs)
        else:
            distractor = gold[c]
        fillers = [f for f in subjects if f not in (q, c) and gold[f] not in (gold[q], distractor)]
        if len(fillers) < n - 1:
            continue
        filler = [context_sentence(rng.choice(rel.context_templates), f, gold[f]) for f in rng.sample(fillers, n - 1)]
        passage = context_sentence(ct, c, distractor)
        pair = prompt_id(rel.name, "passages", q, qt, c, distractor)
        for pos in range(1, n + 1):
            context = " ".join(filler[: pos - 1] + [passage] + filler[pos - 1 :])
            out.append(row("passages", q, qt, c, distractor, context, pair, pos, n))
    return out


def generate_prompts(
    relations: list[Relation],
    words: list[str],
    facts: list[Fact],
    seed: int,
    max_pairs: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    search_relations: tuple[str, ...] = (),
    search: SearchData | None = None,
    instruction: str = DEFAULT_INSTRUCTION,
) -> pl.DataFrame:
    """The prompts table for several relations (sorted by relation name, then generation order)."""
    search = search or SearchData()
    rows: list[dict] = []
    for rel in sorted(relations, key=lambda r: r.name):
        rows.extend(
            generate_relation(
                rel,
                words,
                facts,
                seed,
                max_pairs,
                fractions,
                search if rel.name in search_relations else None,
                instruction,
            )
        )
    df = pl.DataFrame(rows, schema=PROMPTS.polars_schema())
    assert df["prompt_id"].n_unique() == len(df), "prompt ids must be unique"
    if search.passage_items > 0:  # asked for passages: a relation that cannot have them is said, not dropped
        have = set(df.filter(pl.col("condition") == "passages")["relation"].unique())
        for rel in relations:
            if rel.name in search_relations and rel.name not in have:
                raise InputError(
                    rel.path,
                    "n_passages",
                    search.n_passages,
                    f"relation {rel.name!r} has too few subjects for {search.n_passages}-passage contexts (each "
                    f"needs {search.n_passages - 1} true facts of other subjects); lower --n-passages or set "
                    "--passage-items 0",
                )
    return df


def check_relations(relations: list[Relation], fractions: tuple[float, float, float]) -> None:
    """What generation needs of each relation, checked before any stage runs (one-line InputError)."""
    for rel in relations:
        if len(rel.objects) < 3:
            raise InputError(
                rel.path, "samples", len(rel.objects), "need at least 3 distinct objects for counterfactuals"
            )
        split_subjects(list(rel.gold), fractions, random.Random(0), str(rel.path))


def input_files(data_dir: Path, relations: tuple[str, ...]) -> list[Path]:
    """Every file the dataset stage reads (its cache key hashes their contents)."""
    from entrainment.data.relations import find_files
    from entrainment.paths import FACTS_FILE, WORDS_FILE

    return find_files(data_dir, relations) + [WORDS_FILE, FACTS_FILE]


def build(
    data_dir: Path,
    relations: tuple[str, ...],
    seed: int,
    max_pairs: int,
    fractions: tuple[float, float, float],
    search_relations: tuple[str, ...] = (),
    search: SearchData | None = None,
    instruction: str = DEFAULT_INSTRUCTION,
) -> pl.DataFrame:
    """Load, clean and generate: the whole dataset stage as one function."""
    from entrainment.data.relations import load_relations
    from entrainment.paths import FACTS_FILE, WORDS_FILE

    rels = load_relations(data_dir, relations)
    return generate_prompts(
        rels,
        load_words(WORDS_FILE),
        load_facts(FACTS_FILE),
        seed,
        max_pairs,
        fractions,
        search_relations,
        search,
        instruction,
    )
