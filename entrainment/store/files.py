"""File primitives every layer uses: atomic writes, content hashes, the provenance metadata key.

A leaf module (imports nothing from the project), so the Parquet layer (``tables``), provenance, model identity,
the cache keys and the fast path can all share it without import cycles.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

# Parquet key-value metadata key of a table's provenance record (entrainment.store.provenance).
SOURCE_KEY = b"entrainment.source"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, then rename (readers never see half a file).

    Args:
        path: the destination file (its folder is created).
        data: the bytes to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC and not e.filename:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e  # name the file in the one line
        raise


def json_sha256(*parts: Any) -> str:
    """sha256 hex digest of JSON-encoded parts (keys sorted; paths, tuples and other objects as their strings or
    lists): the one way the cache keys and the CLI's fast-path key hash what they depend on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's content (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# How PyTorch reports a write that failed part-way (a full disk under torch.save): a RuntimeError from its C++
# stream writer, with the OSError (if any) only as context.
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "PytorchStreamWriter failed writing")


def no_space(e: BaseException) -> tuple[bool, str | None]:
    """Whether a failure is a full disk, and the file being written if known: an OSError with ENOSPC anywhere in
    the exception chain (Prefect wraps the cause in its own errors), or PyTorch's write-failure RuntimeError.

    Args:
        e: the exception caught.
    Returns:
        (True, file name or None) for a full disk, else (False, None).
    """
    seen: set[int] = set()
    x: BaseException | None = e
    torch_write = False
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno == errno.ENOSPC:
            return True, getattr(x, "filename", None)
        if isinstance(x, RuntimeError) and any(t in str(x) for t in _TORCH_WRITE_FAILED):
            torch_write = True
        x = x.__cause__ or x.__context__
    return torch_write, None
