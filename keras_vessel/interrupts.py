"""Stopping at a safe point: Ctrl-C (SIGINT) and SIGTERM deferred to the end of the current step.

A signal arrives while TensorFlow runs a step in C++; Python sees it only when
the step returns, and an exception raised there can land in the middle of a
checkpoint or inside TensorFlow's own Python code. `deferred_stop()` records
the signal instead and the loop calls the `check()` it yields between steps,
where stopping is safe.

Contract of `deferred_stop()`:

- Within the block, SIGINT and SIGTERM are recorded, not acted on (a note on
  stderr says so; a handler set to SIG_IGN stays ignored).
- `check()` does what the signal's previous handler would have done, now: the
  previous Python handler is called (Python's own SIGINT handler raises
  KeyboardInterrupt; the command line's SIGTERM handler raises its
  `Terminated`); without one, a KeyboardInterrupt is raised, so a run stopped
  by SIGTERM outside the command line is still recorded as interrupted.
- A second signal during the block acts at once, as the previous handler would.
- A signal recorded but not checked acts when the block ends; the previous
  handlers are restored either way.
- Outside the main thread (where Python cannot set handlers) the block changes
  nothing and `check()` does nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["STOP_SIGNALS", "deferred_stop"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_NOTE = b"\nstopping after the current step (Ctrl-C again to stop at once)\n"


@contextmanager
def deferred_stop() -> Iterator[Callable[[], None]]:
    """Defer SIGINT and SIGTERM to the `check()` this yields (see the module docstring)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
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

    def check() -> None:
        if pending:
            act(pending[0], None)

    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, record)
    try:
        yield check
        check()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
