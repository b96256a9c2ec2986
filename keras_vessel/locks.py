"""One writer per output folder: a lock file that names its holder and is taken over when its holder died.

Contract of `folder_lock(path, what=...)`:

- It creates `path` if needed (an unwritable folder is an `OutputError`, as with
  `keras_vessel.io.ensure_writable_dir`) and holds ``path/.keras-vessel.lock``
  until the block ends, however it ends (an exception, Ctrl-C).
- While one process holds it, another process asking for it gets a
  `FolderLockedError` (an `OutputError`, hence a ValueError) at once, naming
  the holder's PID, host, command and start time: it never waits.
- The lock is an exclusive ``fcntl.flock`` on the file, which the kernel drops
  when its process ends, even by ``kill -9``. The file also records its holder
  (JSON: pid, host, command, started). A file left behind by a process of
  this host that ended without releasing it is taken over with a warning; one
  left by another host is refused (that host's process cannot be checked from
  here), with the file to delete. On a file system without ``flock`` the
  recorded PID alone decides (a live process of this host holds the folder).
- Nested calls on one folder in one process share the lock (re-entrant), so a
  library function and the command around it can both ask for it.
- On release the lock file is removed, and so are `path` and the parents the lock created for it
  and nothing else was written into it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keras_vessel.errors import OutputError
from keras_vessel.io import ensure_writable_dir, missing_folders, remove_empty_folders

__all__ = ["LOCK_FILENAME", "FolderLockedError", "folder_lock", "lock_holder"]

logger = logging.getLogger(__name__)

LOCK_FILENAME = ".keras-vessel.lock"

_held: dict[str, list[int]] = {}  # real path of a locked folder -> [file descriptor, nesting depth]
_held_guard = threading.Lock()


class FolderLockedError(OutputError):
    """Another process writes the folder; the message names it (PID, host, command) and what to do."""


@contextmanager
def folder_lock(path: str | Path, *, what: str = "the output folder") -> Iterator[Path]:
    """Hold the lock of folder `path` for the block (see the module docstring); yields `path`.

    `what` names the folder in messages ("the run folder"). Raises
    FolderLockedError when another process holds it, OutputError when the
    folder cannot be written.
    """
    path = Path(path)
    created = missing_folders(path)  # removed again when the block leaves them empty
    ensure_writable_dir(path, what=what)
    key = os.path.realpath(path)
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
        else:
            _held[key] = [_acquire(path / LOCK_FILENAME, what), 1]
    try:
        yield path
    finally:
        with _held_guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                _release(path / LOCK_FILENAME, entry[0])
                remove_empty_folders(created)


def lock_holder(path: str | Path) -> dict[str, Any] | None:
    """What the lock file of folder `path` says about its holder (pid, host, command, started), or None."""
    try:
        return _parse((Path(path) / LOCK_FILENAME).read_bytes())
    except OSError:
        return None


def _acquire(lock_path: Path, what: str) -> int:
    """Open, lock and sign `lock_path`; returns its descriptor (kept open while the lock is held)."""
    for _ in range(20):  # a holder releasing (unlinking) the file between our open and flock: try again
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            locked = _flock(fd)
            if locked and not _same_file(fd, lock_path):
                os.close(fd)
                continue
            left = _parse(os.pread(fd, 4096, 0))
            if not locked and left and _alive_here(left):  # no flock on this file system: the PID decides
                raise FolderLockedError(_held_message(lock_path, what, left))
            if left:
                _take_over(lock_path, what, left)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_me()).encode(), 0)
            return fd
        except BlockingIOError:
            holder = _parse(os.pread(fd, 4096, 0))
            os.close(fd)
            raise FolderLockedError(_held_message(lock_path, what, holder)) from None
        except BaseException:
            os.close(fd)
            raise
    raise FolderLockedError(f"cannot lock {what} {lock_path.parent}: its lock file {lock_path} keeps being "
                            "replaced by other processes; wait for them to end or choose another folder")


def _flock(fd: int) -> bool:
    """Take an exclusive, non-blocking flock: True when held, False when the file system has no flock.

    Raises BlockingIOError when another process holds it.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise BlockingIOError(error.errno, error.strerror) from None
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return False
        raise
    return True


def _same_file(fd: int, lock_path: Path) -> bool:
    """Whether `fd` is still the file at `lock_path` (a releasing holder unlinks it)."""
    try:
        here, there = os.fstat(fd), os.stat(lock_path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _take_over(lock_path: Path, what: str, left: dict[str, Any]) -> None:
    """A lock file whose holder is gone: take it over with a warning, unless another host wrote it."""
    if left.get("host") != socket.gethostname():
        raise FolderLockedError(
            f"{what} {lock_path.parent} was locked by {_describe(left)}, which this host cannot check; if that "
            f"process has ended, delete {lock_path} and run again, or choose another folder"
        )
    logger.warning("%s %s was locked by %s, which ended without releasing it; taking the lock over",
                   what, lock_path.parent, _describe(left))


def _release(lock_path: Path, fd: int) -> None:
    try:
        if _same_file(fd, lock_path):
            lock_path.unlink()
    finally:
        os.close(fd)  # drops the flock


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:1000],
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        holder = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _alive_here(holder: dict[str, Any]) -> bool:
    """Whether the holder is a running process of this host (another host's are taken as running)."""
    if holder.get("host") != socket.gethostname():
        return True
    if holder["pid"] == os.getpid():
        return False  # our own file, left by a lock this process no longer holds
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    text = f"PID {holder['pid']} on host {holder.get('host', '?')}"
    if holder.get("command"):
        text += f" (`{holder['command']}`, since {holder.get('started', '?')})"
    return text


def _held_message(lock_path: Path, what: str, holder: dict[str, Any] | None) -> str:
    return (f"{what} {lock_path.parent} is in use by {_describe(holder)}; wait for it to end, stop it, or "
            "choose another folder")
