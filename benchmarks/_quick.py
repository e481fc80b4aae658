"""What every benchmark's ``--quick`` mode shares (not a benchmark itself: the leading underscore keeps it out of
tests/pipeline/test_benchmarks.py's glob).

Quick mode runs a benchmark's real code path (the same library calls, the same printing) on a tiny random Llama
(2 layers x 4 heads, the tests' byte-level BPE tokenizer, saved once per process as a local model folder) and a
handful of items, in seconds, so that the test suite catches a benchmark whose library calls have rotted. Its numbers
mean nothing.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks run as scripts: make `tests.tiny` importable
    sys.path.insert(0, str(ROOT))

HELP = "smoke test: a tiny random model and a handful of items, seconds; the numbers mean nothing"


@lru_cache(maxsize=1)
def tiny_model() -> str:
    """A tiny random Llama saved as a local model folder (a model SPEC every loader accepts), removed at exit.

    Returns:
        The folder's path.
    """
    from tests import tiny

    folder = Path(tempfile.mkdtemp(prefix="bench-tiny-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return tiny.save("llama", folder / "model")


def toy_lre_dir() -> str:
    """The tests' two toy LRE relations (`toy capital`, `toy color`) written to a temporary folder, removed at exit.

    Returns:
        The folder's path (a Config `data_dir`).
    """
    from tests.toy_data import toy_lre

    folder = Path(tempfile.mkdtemp(prefix="bench-lre-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return str(toy_lre(folder))
