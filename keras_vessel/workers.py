"""Worker processes for NumPy work (prepare's ID masks and PNGs): fresh interpreters without Keras and TensorFlow.

`numpy_map(function, items, workers=N)` runs `function` on every item in N
spawned processes (the caller may hold TensorFlow's threads, which a fork
would copy half-way) and yields the results as they finish. A spawned process
imports the modules its work names, so `keras_vessel/__init__` runs there; it
registers the custom Keras objects except where `in_numpy_worker()`, because
that imports Keras and TensorFlow: about 7 s of CPU per process, more than
preparing DRIVE's 20 images takes. `numpy_map` starts its processes with
`NUMPY_WORKER` in their environment, so the work sent to them must not need
the custom Keras objects, nor TensorFlow: what needs it is computed by the
caller and sent with the work (prepare measures each derived field of view,
`keras_vessel.data.datasets.SampleSpec.measure`, and its workers derive it with
`keras_vessel.data.preprocessing.derive_fov(..., cut=...)`). A function that
imports TensorFlow anyway still works, at that price in every process.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from keras_vessel.interrupts import deferred_signals
from keras_vessel.io import stderr_to_devnull

NUMPY_WORKER = "KERAS_VESSEL_NUMPY_WORKER"
POOL_CALL_SECONDS = 0.2  # the longest a stop signal waits while the pool's own code runs

T = TypeVar("T")
R = TypeVar("R")


def in_numpy_worker() -> bool:
    """Whether this process is one `numpy_map` started (its environment sets `NUMPY_WORKER` to "1")."""
    return os.environ.get(NUMPY_WORKER) == "1"


def numpy_map(function: Callable[[T], R], items: Iterable[T], *, workers: int) -> Iterator[tuple[int, R]]:
    """Yield `(i, function(item i))` for every item, in the order they finish, computed in `workers` processes.

    `function` and the items must be picklable, and `function` must not need
    the custom Keras objects (see the module docstring). Items are taken from
    `items` as the workers need them, at most `2 * workers` ahead of the
    results yielded, so that a generator making them in this process (prepare
    measuring each photograph's field of view) runs beside the workers and
    holds few at once. The processes' stderr is /dev/null: what a library
    prints while starting there (TensorFlow's CUDA probing) stays off the
    terminal; exceptions come back here. The first exception `function` (or
    `items`) raises is raised here. Then, and when the caller stops early (an
    exception, Ctrl-C, SIGTERM, closing the generator), the processes are
    terminated at once and the items not started are dropped, rather than
    waited for. Ctrl-C and SIGTERM act between the pool's calls, never inside
    them (`keras_vessel.interrupts.deferred_signals`), within
    `POOL_CALL_SECONDS`.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r} (type {type(workers).__name__})")
    context = multiprocessing.get_context("spawn")
    source = enumerate(items)
    with _pool_call():
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    running: dict[concurrent.futures.Future, int] = {}

    def submit(count: int) -> None:
        for position, item in itertools.islice(source, count):
            # a spawning pool starts its processes in `submit`: they inherit this environment and stderr
            with _pool_call(), stderr_to_devnull(), _environment(NUMPY_WORKER, "1"):
                running[pool.submit(function, item)] = position

    try:
        submit(2 * workers)
        while running:
            with _pool_call():  # in slices, so that a held signal acts soon
                finished, _ = concurrent.futures.wait(running, timeout=POOL_CALL_SECONDS,
                                                      return_when=concurrent.futures.FIRST_COMPLETED)
                done = [(running.pop(future), future) for future in finished]
            for position, future in done:
                with _pool_call():
                    result = future.result()  # a worker's exception is raised here
                submit(1)  # before the caller takes its time with the result: the workers stay busy
                yield position, result
    except BaseException:  # stop the workers instead of waiting for them
        with _pool_call():
            processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API before 3.14
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
        raise
    with _pool_call():
        pool.shutdown(wait=True)  # every item done: the processes end of themselves


def _pool_call():
    """Ctrl-C and SIGTERM held back, a second one too, while the pool's own code runs (at most about
    `POOL_CALL_SECONDS`): `concurrent.futures` takes its locks in Python (`keras_vessel.interrupts`)."""
    return deferred_signals(second_at_once=False)


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """Set the environment variable `name` to `value` for the block, then restore what it was."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
