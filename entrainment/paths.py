"""Where shipped data and project-local caches live."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
LRE_DIR = DATA_DIR / "lre"
WORDS_FILE = DATA_DIR / "random_words.txt"
FACTS_FILE = DATA_DIR / "irrelevant_facts.json"
ICL_DIR = DATA_DIR / "icl"
CACHE_DIR = PROJECT_ROOT / ".cache"
QUICK_CONFIG = PROJECT_ROOT / "configs" / "quick.toml"  # `run --quick`: every stage at its smallest
