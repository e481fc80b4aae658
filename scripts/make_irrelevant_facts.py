"""Regenerate data/irrelevant_facts.json: the fixed pool of true facts used as `irrelevant` contexts.

A fixed pool (rather than facts drawn from the selected relations at run time) keeps each relation's
prompts dependent on its own file only. Up to 8 facts per eligible LRE relation, seeded, with
single-word objects, each phrased with the relation's first context template.

    .venv/bin/python scripts/make_irrelevant_facts.py
"""

import json
import random

from entrainment.data.lre_prompts import context_sentence
from entrainment.data.relations import load_relation, relation_files
from entrainment.paths import FACTS_FILE, LRE_DIR

facts = []
for path in relation_files(LRE_DIR):
    rel = load_relation(path)
    if not rel.eligible:
        continue
    pairs = sorted(p for p in rel.pairs if " " not in p[1])
    for subject, obj in random.Random(f"facts|{rel.name}").sample(pairs, min(8, len(pairs))):
        facts.append(
            {
                "relation": rel.name,
                "subject": subject,
                "object": obj,
                "context": context_sentence(rel.context_templates[0], subject, obj),
            }
        )
facts.sort(key=lambda f: (f["relation"], f["subject"]))
FACTS_FILE.write_text(json.dumps(facts, indent=1, ensure_ascii=False) + "\n")
print(f"wrote {len(facts)} facts to {FACTS_FILE}")
