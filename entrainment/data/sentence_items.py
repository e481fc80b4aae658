"""Sentence-level entrainment items: a context c and the whole sentences y scored after it.

Each item is one prompt row of prompts.parquet (relation, condition, query subject, context, query) of the four
LRE conditions (related, counterfactual, irrelevant, random), plus, per sampled query subject, one item of the
condition ``self_cf`` whose context is a counterfactual statement about the query's *own* subject. Per item the
scored sentences (``target``) are:

- ``self``: y = c (the context sentence itself; four LRE conditions);
- ``self_cf``: y = the counterfactual statement about the query subject that is the context (condition self_cf);
- ``gold``: the true statement about the query subject, same template (condition self_cf: the gap is
  ℓ(self_cf) − ℓ(gold), present vs absent);
- ``control``: a true statement of the same relation (another subject; for the random condition another random
  word) that appears nowhere in the prompt -- neither the sentence nor its subject or object -- length-matched to
  the item's first target within ``MAX_LENGTH_GAP`` tokens (an irrelevant context's control: another fact of the
  context's own relation, from the irrelevant-fact pool). Items with no such control are dropped.

The model input before the scored sentence is ``context + " " + query`` (present) or ``query`` (absent; with
``absent = "neutral"``: a length-matched neutral sentence in the context's place); the sentence is appended after
one space. Sampling is seeded per (seed, relation, condition) and prefers distinct query subjects (the subject is
the statistical unit). Discovery relations use only their dev and test subjects (the heads never trained on them).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import polars as pl

from entrainment.data.lre_prompts import Fact
from entrainment.data.relations import Relation

CONDITIONS: tuple[str, ...] = ("related", "counterfactual", "irrelevant", "random")
OWN_CF = "self_cf"  # the condition (and target) of a counterfactual statement about the query's own subject
ALL_CONDITIONS: tuple[str, ...] = CONDITIONS + (OWN_CF,)
TARGETS: tuple[str, ...] = ("self", "self_cf", "gold", "control")
MAX_LENGTH_GAP = 2  # tokens: |n(control) - n(y)| at most this
ABSENT_MODES = ("drop", "neutral")
# neutral sentences (no relation's subject or object) the `neutral` absent arm picks from, by token length
NEUTRAL = (
    "It rained.",
    "The day was quiet.",
    "Nothing much happened that morning.",
    "The weather was mild and the streets were calm.",
    "She walked slowly along the path and looked at the sky for a while.",
    "They talked for an hour about small things, then went home and slept until the next day came.",
    "The room was calm, the lamp was on, and someone in the next house was playing a slow song on an old "
    "piano while the rain kept falling outside.",
)


@dataclass(frozen=True)
class SentenceItem:
    """One context and the sentences scored after it.

    Attributes:
        item: stable id (sha1 of relation, condition, subject, context, query).
        relation, condition, subject: as in prompts.parquet (condition may also be ``self_cf``).
        context: the context sentence c (no leading space).
        query: the query text that follows the context.
        sentences: (target, sentence) pairs, the first is the item's own sentence (self or self_cf).
        neutral: the length-matched neutral sentence of the ``neutral`` absent arm.
    """

    item: str
    relation: str
    condition: str
    subject: str
    context: str
    query: str
    sentences: tuple[tuple[str, str], ...]
    neutral: str

    def prompt(self, arm: str, absent: str = "drop") -> str:
        """The model input before the scored sentence: `present` = context + query; `absent` = the query alone
        (absent="drop") or the neutral sentence + query (absent="neutral")."""
        if arm == "present":
            return f"{self.context} {self.query}"
        return self.query if absent == "drop" else f"{self.neutral} {self.query}"


def item_id(*parts: str) -> str:
    """16 hex digits of sha1 over the parts."""
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


def statement(template: str, subject: str, obj: str) -> str:
    """A fact rendered as the project renders contexts: ``template.format(subject) + " " + obj + "."``."""
    return f"{template.format(subject)} {obj}."


def _mentions(prompt: str, words: Sequence[str]) -> bool:
    low = prompt.lower()
    return any(w and w.lower() in low for w in words)


def pick_control(
    target_len: int,
    prompt: str,
    pool: Sequence[tuple[str, tuple[str, ...]]],
    n_tokens: Callable[[str], int],
    rng: random.Random,
    avoid: Sequence[str] = (),
) -> str | None:
    """A control sentence: from `pool` ((sentence, words it names)), one that appears nowhere in `prompt` (nor its
    words), is none of `avoid`, and has a token length within MAX_LENGTH_GAP of `target_len` (nearest first,
    seeded among equals); None if there is none."""
    ok = [(s, w) for s, w in pool if s not in avoid and s not in prompt and not _mentions(prompt, w)]
    rng.shuffle(ok)
    scored = sorted(((abs(n_tokens(s) - target_len), i) for i, (s, _) in enumerate(ok)))
    if not scored or scored[0][0] > MAX_LENGTH_GAP:
        return None
    return ok[scored[0][1]][0]


def neutral_for(context: str, n_tokens: Callable[[str], int]) -> str:
    """The neutral sentence whose token length is nearest the context's."""
    n = n_tokens(context)
    return min(NEUTRAL, key=lambda s: (abs(n_tokens(s) - n), len(s)))


def fact_pool(rel: Relation) -> list[tuple[str, tuple[str, ...]]]:
    """Every true statement of a relation, each with its subject and object (what must not be in the prompt)."""
    return [(statement(t, s, o), (s, o)) for s, o in rel.pairs for t in rel.context_templates]


def _sample_rows(rows: pl.DataFrame, n: int, rng: random.Random) -> list[dict]:
    """Up to n rows, distinct query subjects first (seeded)."""
    recs = rows.sort("prompt_id").to_dicts()
    rng.shuffle(recs)
    seen: set[str] = set()
    first, rest = [], []
    for r in recs:
        (rest if r["subject"] in seen else first).append(r)
        seen.add(r["subject"])
    return (first + rest)[:n]


def build_items(
    prompts: pl.DataFrame,
    relations: dict[str, Relation],
    words: Sequence[str],
    n_tokens: Callable[[str], int],
    n_items: int,
    seed: int = 0,
    exclude_train: Sequence[str] = (),
    facts: Sequence[Fact] = (),
) -> tuple[list[SentenceItem], dict[str, int]]:
    """The sentence items of every relation in `prompts`.

    Args:
        prompts: prompts.parquet rows.
        relations: relation name -> its cleaned LRE relation (templates, facts); a relation missing here (own
            items) gets no self_cf items and draws its controls from its related contexts.
        words: the random-word list (controls of the random condition).
        n_tokens: token length of a sentence as appended (" " + sentence) under the model's tokenizer.
        n_items: items per relation and condition (self_cf: query subjects per relation).
        seed: sampling seed.
        exclude_train: relations whose train split is left out (the discovery relations).
        facts: the irrelevant-fact pool (lre_prompts.load_facts): an irrelevant context's control is another fact
            of the context's own relation.
    Returns:
        (items, dropped): the items, and per condition the number of sampled rows dropped for want of a control.
    """
    by_relation: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for f in facts:
        by_relation.setdefault(f.relation, []).append((f.context.strip(), (f.subject, f.object)))
    relation_of = {f.context.strip(): f.relation for f in facts}
    items: list[SentenceItem] = []
    dropped: dict[str, int] = {}
    for relation in sorted(prompts["relation"].unique()):
        rows = prompts.filter(pl.col("relation") == relation)
        if relation in exclude_train:
            rows = rows.filter(pl.col("split") != "train")
        rel = relations.get(relation)
        related = rows.filter(pl.col("condition") == "related")
        pool = (
            fact_pool(rel)
            if rel
            else [
                (c.strip(), (s or "",))
                for c, s in zip(related["context"].to_list(), related["context_subject"].to_list())
            ]
        )
        word_pool = [(f"{w}.", (w,)) for w in words]
        for cond in CONDITIONS:
            rng = random.Random(f"{seed}|sentences|{relation}|{cond}")
            for r in _sample_rows(rows.filter(pl.col("condition") == cond), n_items, rng):
                y = r["context"].strip()
                prompt = f"{y} {r['query']}"
                cands = word_pool if cond == "random" else pool
                if cond == "irrelevant":
                    cands = by_relation.get(relation_of.get(y, ""), cands)
                control = pick_control(n_tokens(y), prompt, cands, n_tokens, rng, avoid=(y,))
                if control is None:
                    dropped[cond] = dropped.get(cond, 0) + 1
                    continue
                items.append(
                    SentenceItem(
                        item_id(relation, cond, r["subject"], y, r["query"]),
                        relation,
                        cond,
                        r["subject"],
                        y,
                        r["query"],
                        (("self", y), ("control", control)),
                        neutral_for(y, n_tokens),
                    )
                )
        if rel is None:
            continue
        rng = random.Random(f"{seed}|sentences|{relation}|{OWN_CF}")
        gold = rel.gold
        objects = rel.objects
        own = rows.filter(pl.col("subject").is_in(list(gold)) & pl.col("condition").is_in(list(CONDITIONS)))
        own = own.sort("prompt_id")
        for r in _sample_rows(own.unique("subject", keep="first", maintain_order=True), n_items, rng):
            q = r["subject"]
            template = rng.choice(sorted(rel.context_templates))
            wrong = rng.choice([o for o in objects if o != gold[q]])
            cf, true = statement(template, q, wrong), statement(template, q, gold[q])
            prompt = f"{cf} {r['query']}"
            control = pick_control(n_tokens(cf), prompt, pool, n_tokens, rng, avoid=(cf, true))
            if control is None:
                dropped[OWN_CF] = dropped.get(OWN_CF, 0) + 1
                continue
            items.append(
                SentenceItem(
                    item_id(relation, OWN_CF, q, cf, r["query"]),
                    relation,
                    OWN_CF,
                    q,
                    cf,
                    r["query"],
                    (("self_cf", cf), ("gold", true), ("control", control)),
                    neutral_for(cf, n_tokens),
                )
            )
    return items, dropped
