"""Stopping at a safe point: Ctrl-C (SIGINT) and SIGTERM held back while files that must agree are written.

Python acts on a signal between bytecodes: during a TensorFlow step (one C++
call) it acts as soon as the step returns, so the training loop needs no flag
of its own to stop between steps. What it must not do is stop between writing
an epoch's checkpoint and its history.csv row (a resumed run would then miss
that row). `deferred_signals()` holds SIGINT and SIGTERM back for such a block.

Contract of `deferred_signals()`:

- A SIGINT or SIGTERM received in the block is recorded (a note on stderr says
  so) and acts when the block ends, as its previous handler would have:
  Python's own SIGINT handler raises KeyboardInterrupt, the command line's
  SIGTERM handler raises its `Terminated`; without a Python handler (SIGTERM
  outside the command line) a KeyboardInterrupt is raised.
- A second signal in the block acts at once.
- A handler set to SIG_IGN stays ignored; the previous handlers are restored
  when the block ends, however it ends.
- Outside the main thread (where Python cannot set handlers) the block changes nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["STOP_SIGNALS", "deferred_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_NOTE = b"\nstopping once this epoch's files are written (Ctrl-C again to stop at once)\n"


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends (see the module docstring)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def act(signum: int, frame) -> None:
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        raise KeyboardInterrupt

    def record(signum: int, frame) -> None:
        if pending:
            act(signum, frame)
        pending.append(signum)
        os.write(2, _NOTE)  # not sys.stderr: the handler may run in the middle of a write to it

    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, record)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if pending:
        act(pending[0], None)
