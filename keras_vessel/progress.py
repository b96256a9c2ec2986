"""A small progress bar for prepare, evaluate and predict.

Keras' Progbar is built for epochs; these loops are over files, may run in a
terminal or in a CI log, and must not import TensorFlow just to show progress.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T],
    *,
    total: int | None = None,
    label: str = "",
    enabled: bool = True,
    stream: TextIO | None = None,
) -> Iterator[T]:
    """Yield `items`, drawing `label [####    ] 3/8 1.2s` on stderr as they pass.

    On a terminal the bar redraws in place; elsewhere (CI logs, pipes) it prints
    a line at most every 10% so logs stay short.
    """
    if total is None:
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    if not enabled:
        yield from items
        return
    stream = stream or sys.stderr
    interactive = getattr(stream, "isatty", lambda: False)()
    start = time.monotonic()
    last_tenth = -1
    done = 0

    def draw(final: bool = False) -> None:
        elapsed = time.monotonic() - start
        if total:
            filled = int(30 * done / total)
            bar = "#" * filled + " " * (30 - filled)
            text = f"{label} [{bar}] {done}/{total} {elapsed:.1f}s"
        else:
            text = f"{label} {done} {elapsed:.1f}s"
        if interactive:
            stream.write("\r" + text + ("\n" if final else ""))
        else:
            stream.write(text + "\n")
        stream.flush()

    for item in items:
        yield item
        done += 1
        tenth = int(10 * done / total) if total else done // 10
        if interactive or tenth != last_tenth or (total and done == total):
            last_tenth = tenth
            draw(final=bool(total) and done == total)
    if not total or done != total:
        draw(final=True)
