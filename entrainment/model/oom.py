"""The one out-of-memory policy: halve the batch and retry (CUDA), down to one item, then give up."""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")


def halving(size: int, attempt: Callable[[int], T], what: str = "batch size") -> tuple[T, int]:
    """``attempt(size)``, halving `size` after each out-of-memory error until it succeeds or size 1 fails.

    Args:
        size: the first size to try.
        attempt: runs one batch of the given size.
        what: named in the warning.
    Returns:
        (attempt's result, the size that worked) -- callers keep using that size.
    """
    while True:
        try:
            return attempt(size), size
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            log.warning("out of memory: %s halved to %d", what, size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
