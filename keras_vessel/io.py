"""Atomic file writes: an interrupted run never leaves a file that looks finished.

A write that fails for want of space, quota or permission raises an OSError naming the file it was
writing (`as_os_error`), also when the writer was TensorFlow, whose file errors carry only the text;
`describe_os_error` makes it one sentence saying what to do. Folders written under a temporary name
(`staging_dir`) say which process owns them, so those of a killed process can be removed. Files' SHA-256
(`file_sha256`, `stream_sha256`, `update_digest`) are read here too, in blocks.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger(__name__)

# What a full disk, a quota, a read-only or an unwritable file system look like from a writer.
FILESYSTEM_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO)
# A staging folder's owner: `.NAME.partial-PID@HOST-XXXXXXXX` (mkdtemp's 8 random characters last).
_STAGING = r"^\.{name}\.partial-(?:(?P<pid>\d+)@(?P<host>.+)-)?[a-z0-9_]{{8}}$"
STALE_UNOWNED_SECONDS = 3600  # staging of an older keras-vessel names no owner: stale when this old


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
    except BaseException as error:
        Path(temp).unlink(missing_ok=True)
        raise_named(error, path, temp=temp)


def umask() -> int:
    """The process umask (read without changing it), for modes of files made by `tempfile`."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def update_digest(digest: Any, handle) -> Any:
    """Feed `digest` (a `hashlib` object) what the binary file object `handle` holds from its position on,
    read in 1 MiB blocks (a large photograph or shard is never read whole); returns `digest`."""
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest


def stream_sha256(handle) -> str:
    """Hex SHA-256 of what a binary file object holds from its position on (`update_digest`)."""
    return update_digest(hashlib.sha256(), handle).hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with Path(path).open("rb") as handle:
        return stream_sha256(handle)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def recorded_model(record_path: str | Path) -> Any:
    """The model file name a JSON record kept beside a model (its threshold, its ensemble record) names as
    its own (``"model"``); None when it names none or cannot be read."""
    try:
        record = json.loads(Path(record_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("model") if isinstance(record, dict) else None


def other_model_beside(record_path: str | Path, model_path: str | Path) -> Path | None:
    """The other model, still beside `record_path`, that this record names as its own; None when the record
    is `model_path`'s, names no model, or names one no longer there (a model renamed keeps its records).

    Records are kept beside a model under fixed names, so two models in one folder would read each other's.
    """
    model = recorded_model(record_path)
    if not isinstance(model, str) or model == Path(model_path).name:
        return None
    other = Path(record_path).with_name(model)
    return other if other.exists() else None


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

    Used around starting worker processes, which inherit the descriptor: one
    that imports TensorFlow would print its start-up lines on the user's
    terminal. Python exceptions still propagate.
    """
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@contextmanager
def stderr_filtered(keep: Callable[[str], bool]) -> Iterator[None]:
    """Pass what reaches file descriptor 2 for a while through `keep`, line by line, dropping the lines it
    refuses: this process's, its C++ libraries' and those of the child processes started meanwhile (they
    inherit the descriptor, and keep writing through the filter until they end).

    A thread copies the kept lines to the real stderr as they come (a line `keep` fails on is kept), so
    errors still show while a long run goes on.
    """
    read_end, write_end = os.pipe()
    target = os.dup(2)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as source, os.fdopen(target, "wb", buffering=0) as sink:
            for line in source:  # until every process holding the pipe closed it
                try:
                    kept = keep(line.decode("utf-8", errors="replace"))
                except Exception:  # noqa: BLE001 - a line the filter cannot judge is shown
                    kept = True
                if kept:
                    sink.write(line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    saved = os.dup(2)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes this process's end of the pipe
        os.close(saved)
        thread.join(timeout=2)  # a child still running keeps its end open: its lines still get through


# zlib's level for the PNGs keras-vessel writes: an 8 MP 16-bit probability map takes 0.46 s and 6.1 MB
# at 3, 1.08 s and 5.7 MB at Pillow's default 6 (docs/notebook, entry q of 2026-12-07)
PNG_COMPRESSION = 3


def _save_png(array: Any, target: Any) -> None:
    from PIL import Image

    Image.fromarray(array).save(target, format="PNG", compress_level=PNG_COMPRESSION)


def png_bytes(array: Any) -> bytes:
    """A uint8/uint16 ``(H, W)`` or ``(H, W, 3)`` array encoded as PNG: the bytes `write_png_atomic` writes."""
    import io

    buffer = io.BytesIO()
    _save_png(array, buffer)
    return buffer.getvalue()


def write_png_atomic(path: str | Path, array: Any) -> None:
    """Write a uint8/uint16 ``(H, W)`` or ``(H, W, 3)`` array as a PNG, atomically (streamed to the file:
    no copy of the encoded image in memory)."""
    with atomic_path(path) as temp:
        _save_png(array, temp)


def as_os_error(error: BaseException, path: str | Path | None = None, *,
                temp: str | Path | None = None) -> OSError | None:
    """`error`, raised while writing `path` (through `temp`), as an OSError that names `path`.

    An OSError naming no file or the temporary one is named again; another OSError is returned as it
    is. A TensorFlow error is recognised by the text of a file-system errno (`FILESYSTEM_ERRNOS`:
    ``"PATH; No space left on device"``; without `path`, the PATH of its text is named). None for
    anything else.
    """
    if isinstance(error, OSError):
        if path is not None and (error.filename is None
                                 or (temp is not None and str(error.filename).startswith(str(temp)))):
            return OSError(error.errno, error.strerror or str(error), str(path))
        return error
    if not type(error).__module__.startswith("tensorflow"):
        return None
    for code in FILESYSTEM_ERRNOS:
        text = os.strerror(code)
        if text in str(error):
            named = re.search(rf"(\S+); {re.escape(text)}", str(error))
            return OSError(code, text, str(path) if path is not None else named and named[1])
    return None


def raise_named(error: BaseException, path: str | Path, *, temp: str | Path | None = None) -> NoReturn:
    """Raise `error`, caught while writing `path` (through `temp`), again: as the OSError naming `path`
    that `as_os_error` makes of it, or as it is."""
    named = as_os_error(error, path, temp=temp)
    if named is None or named is error:
        raise error
    raise named from error


_ADVICE = {
    errno.ENOSPC: "free some space on that disk or write somewhere else, then run the command again",
    errno.EDQUOT: "free some of your disk quota or write somewhere else, then run the command again",
    errno.EFBIG: "write somewhere that allows larger files, then run the command again",
    errno.EROFS: "that file system is read-only: write somewhere else",
    errno.EACCES: "fix its permissions or write somewhere else",
    errno.EPERM: "fix its permissions or write somewhere else",
}


def describe_os_error(error: BaseException) -> str | None:
    """One sentence for a failed file operation: which file, what went wrong and what to do.

    For an OSError, or a TensorFlow error carrying a file-system errno's text (`as_os_error`);
    None for anything else.
    """
    error = as_os_error(error)
    if error is None:
        return None
    where = f"{error.filename}: " if error.filename else ""
    advice = _ADVICE.get(error.errno)
    return f"{where}{error.strerror or error}" + (f"; {advice}" if advice else "")


def staging_dir(parent: str | Path, name: str) -> Path:
    """A new hidden folder beside `parent / name` to write `name` in before renaming it into place.

    Its name says which process owns it (``.NAME.partial-PID@HOST-XXXXXXXX``), so that
    `remove_stale_staging` can tell one left by a killed process from one still being written.
    """
    return Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}@{socket.gethostname()}-", dir=parent))


def remove_stale_staging(parent: str | Path, name: str) -> list[Path]:
    """Remove the staging folders of `name` in `parent` whose owner has died, saying so; returns them.

    A folder is stale when its process, on this host, is gone; one that names no owner (written by
    an older keras-vessel) when it is unchanged for `STALE_UNOWNED_SECONDS`. Others are left alone.
    """
    parent, pattern = Path(parent), re.compile(_STAGING.format(name=re.escape(name)))
    removed = []
    for folder in sorted(parent.glob(f".{name}.partial-*")) if parent.is_dir() else ():
        match = pattern.match(folder.name)
        if match is None or not folder.is_dir():
            continue
        if match["pid"] is None:
            stale = time.time() - folder.stat().st_mtime > STALE_UNOWNED_SECONDS
            owner = "an older keras-vessel"
        else:
            stale = match["host"] == socket.gethostname() and not process_alive(int(match["pid"]))
            owner = f"process {match['pid']}, which is gone"
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            log.warning("removed %s, the staging folder of an export that stopped (%s)", folder, owner)
            removed.append(folder)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def removed_if_failed(path: str | Path) -> Iterator[Path]:
    """Yield `path`; if the block fails, remove the folders it created on the way to `path` that are
    still empty, so a failed write leaves no empty folder that looks like a result."""
    path = Path(path)
    created = missing_folders(path)
    try:
        yield path
    except BaseException:
        remove_empty_folders(created)
        raise


def missing_folders(path: str | Path) -> list[Path]:
    """The folders that creating `path` would create: `path` and its missing parents, deepest first."""
    path = Path(path)
    return [folder for folder in (path, *path.parents) if not folder.exists()]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove `folders` (deepest first, as `missing_folders` lists them) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty, or already gone
            break
