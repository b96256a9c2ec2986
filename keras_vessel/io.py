"""Atomic file writes: an interrupted run never leaves a file that looks finished."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success.

    `suffix` is for writers that insist on a file extension (Keras saves only to ``.keras``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temp)
        os.chmod(temp, 0o666 & ~umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def umask() -> int:
    """The process umask (read without changing it), for modes of files made by `tempfile`."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def ensure_writable_dir(path: str | Path, *, what: str = "the output folder") -> Path:
    """Create `path` (and parents) if needed and check that a file can be written in it, before any work.

    Raises OutputError (a ValueError) saying which folder and why, instead of
    an OSError after hours of work.
    """
    from keras_vessel.errors import OutputError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputError(f"cannot write to {what} {path}: {reason}; choose another folder or fix its "
                          "permissions") from None
    return path


@contextmanager
def stderr_to_devnull() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for a while (C++ logging and child processes included).

    Used around starting worker processes, which inherit the descriptor:
    each imports TensorFlow, whose start-up lines would otherwise reach the
    user's terminal. Python exceptions still propagate.
    """
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def write_png_atomic(path: str | Path, array: Any) -> None:
    """Write a uint8/uint16 ``(H, W)`` or ``(H, W, 3)`` array as a PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as temp:
        Image.fromarray(array).save(temp, format="PNG")
