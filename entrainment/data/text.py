"""When two answers are the same answer: Unicode normalisation shared by the relation loader and own items.

``answer_key`` = NFKC normalisation, case folding, invisible characters removed (format characters such as
zero-width spaces and joiners, soft hyphens, byte-order marks: Unicode category Cf), whitespace collapsed. Two
answers with the same key are the same answer: a gold and a distractor with equal keys are never paired, and an
answer whose key is empty is refused.
"""

from __future__ import annotations

import unicodedata


def visible(text: str) -> str:
    """The text without invisible (category Cf) characters, whitespace collapsed."""
    return " ".join("".join(ch for ch in text if unicodedata.category(ch) != "Cf").split())


def answer_key(text: str) -> str:
    """The normalised form two answers are compared by (module docstring)."""
    return visible(unicodedata.normalize("NFKC", text)).casefold()
