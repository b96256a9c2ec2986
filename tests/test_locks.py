"""The folder lock (`keras_vessel.locks`) and deferred signals (`keras_vessel.interrupts`), without TensorFlow.

The commands that use them (two `train` on one --output, a lock left by kill -9, SIGTERM) are tested as a
user meets them in tests/cli/test_failures.py.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from keras_vessel.interrupts import deferred_signals
from keras_vessel.locks import LOCK_FILENAME, FolderLockedError, folder_lock, lock_holder


def dead_pid() -> int:
    """The PID of a process of this host that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leave_lock(folder, *, pid: int, host: str | None = None) -> None:
    """A lock file as a holder killed with kill -9 leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILENAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                    "command": "keras-vessel train", "started": "then"}))


def test_the_lock_names_its_holder_nests_and_leaves_nothing(tmp_path):
    folder = tmp_path / "new"
    with folder_lock(folder, what="the run folder") as path:
        assert path == folder and lock_holder(folder)["pid"] == os.getpid()
        assert lock_holder(folder)["host"] == socket.gethostname()
        with folder_lock(folder):  # re-entrant in one process
            pass
        assert (folder / LOCK_FILENAME).exists()  # still held by the outer block
    assert not folder.exists()  # created by the lock, nothing written: removed

    with pytest.raises(RuntimeError), folder_lock(folder):
        (folder / "result.txt").write_text("kept")
        raise RuntimeError
    assert [p.name for p in folder.iterdir()] == ["result.txt"]  # released, what was written kept


def test_a_lock_left_by_a_dead_process_of_this_host_is_taken_over_with_a_warning(tmp_path, caplog):
    pid = dead_pid()
    leave_lock(tmp_path, pid=pid)
    with caplog.at_level(logging.WARNING), folder_lock(tmp_path, what="the run folder"):
        assert lock_holder(tmp_path)["pid"] == os.getpid()
    assert f"the run folder {tmp_path} was locked by PID {pid} on host {socket.gethostname()}" in caplog.text
    assert "ended without releasing it; taking the lock over" in caplog.text
    assert not (tmp_path / LOCK_FILENAME).exists()


def test_a_lock_left_by_another_host_is_refused_with_the_file_to_delete(tmp_path):
    leave_lock(tmp_path, pid=4242, host="node-17")
    with pytest.raises(FolderLockedError, match="was locked by PID 4242 on host node-17") as caught:
        with folder_lock(tmp_path):
            pass
    assert f"delete {tmp_path / LOCK_FILENAME}" in str(caught.value)
    assert lock_holder(tmp_path)["host"] == "node-17"  # left as it was


def test_without_flock_the_recorded_pid_decides(tmp_path, monkeypatch, caplog):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    leave_lock(tmp_path, pid=os.getppid())  # a running process of this host
    with pytest.raises(FolderLockedError, match=f"is in use by PID {os.getppid()} on host"):
        with folder_lock(tmp_path):
            pass
    leave_lock(tmp_path, pid=dead_pid())
    with caplog.at_level(logging.WARNING), folder_lock(tmp_path):
        assert lock_holder(tmp_path)["pid"] == os.getpid()
    assert "taking the lock over" in caplog.text


def test_a_stop_signal_waits_for_the_block_and_a_second_one_acts_at_once():
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)  # without a Python handler, SIGTERM would end this process
            finished.append("the block")
    assert finished == ["the block"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored

    class Custom(KeyboardInterrupt):
        pass

    def raise_custom(signum, frame):
        raise Custom

    previous = signal.signal(signal.SIGTERM, raise_custom)
    try:
        with pytest.raises(Custom), deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # the second acts as the previous handler would, at once
            pytest.fail("the second signal did not act")
        with pytest.raises(Custom), deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)  # acts when the block ends, as the previous handler
        assert signal.getsignal(signal.SIGTERM) is raise_custom
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_held_signal_acts_when_the_block_raises_and_waits_for_an_outer_block():
    """A Ctrl-C held in a block that then raised (a server gone, a full disk) was dropped: the run ended
    "failed" instead of "interrupted"; and a block inside another one acted at its own end."""
    with pytest.raises(KeyboardInterrupt) as stopped:
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            raise ValueError("the block's own failure")
    assert isinstance(stopped.value.__context__, ValueError)

    finished = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                finished.append("the inner block")
            finished.append("the outer block")
    assert finished == ["the inner block", "the outer block"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_block_that_holds_a_second_signal_too_acts_once_at_its_end():
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals(second_at_once=False):
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            finished.append("the block")
    assert finished == ["the block"] and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
