"""Stopping at a safe point: Ctrl-C (SIGINT) and SIGTERM held back while files that must agree are written,
or while code runs that a stop would leave half-done.

Python acts on a signal between bytecodes: during a TensorFlow step (one C++
call) it acts as soon as the step returns, but also anywhere in the Python
code around it (TensorFlow's iterators, function calls, eager context), which
is not written to be stopped half-way: the training loop holds signals back
for each step and acts on them between steps. Nor must it stop between writing
an epoch's checkpoint and its history.csv row (a resumed run would then miss
that row), nor inside the bookkeeping of a process pool (`concurrent.futures`
takes its locks in Python: a KeyboardInterrupt raised between two of them
leaves one held, and the pool's thread, which the interpreter joins at exit,
waits for it forever). `deferred_signals()` holds SIGINT and SIGTERM back for
such a block.

Contract of `deferred_signals(note=None)`:

- A SIGINT or SIGTERM received in the block is recorded (`note`, when given,
  is printed on stderr with how to stop at once) and acts when the block ends,
  as its previous handler would have:
  Python's own SIGINT handler raises KeyboardInterrupt, the command line's
  SIGTERM handler raises its `Terminated`; without a Python handler (SIGTERM
  outside the command line) a KeyboardInterrupt is raised.
- It acts also when the block raises (the block's exception is then its
  context), and when the block is inside another one, it is passed to that
  one, which acts when it ends.
- A second signal in the block acts at once, unless `second_at_once=False`.
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


@contextmanager
def deferred_signals(note: str | None = None, *, second_at_once: bool = True) -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends (see the module docstring); `note` says what the
    stop waits for (e.g. "stopping once this epoch's files are written"); `second_at_once=False` holds a
    second signal too (for blocks of a fraction of a second that must never be stopped half-way)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def act(signum: int, frame) -> None:
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
            if getattr(handler, "holds_signals", False):  # an outer block's: it acts when that block ends
                return
        raise KeyboardInterrupt

    def record(signum: int, frame) -> None:
        if pending and second_at_once:
            act(signum, frame)
        pending.append(signum)
        if note is not None and len(pending) == 1:  # os.write, not sys.stderr: the handler may run in a write to it
            os.write(2, f"\n{note} (Ctrl-C again to stop at once)\n".encode())

    record.holds_signals = True
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, record)
    try:
        yield
    except BaseException as error:  # the stop acts still, with the block's exception as its context
        _restore(previous)
        if pending and not isinstance(error, KeyboardInterrupt):  # not when a second signal acted already
            act(pending[0], None)
        raise
    _restore(previous)
    if pending:
        act(pending[0], None)


def _restore(handlers: dict) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
