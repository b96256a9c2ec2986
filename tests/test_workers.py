"""Worker processes for NumPy work: results, failures, and no Keras or TensorFlow in them.

This module is imported by the workers it starts (they run `prepare_and_list_imports`), so it imports
neither Keras nor TensorFlow itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from keras_vessel.workers import NUMPY_WORKER, in_numpy_worker, numpy_map

HEAVY = ("tensorflow", "keras")


def prepare_and_list_imports(item) -> tuple[str, bool, list[str], object]:
    """What prepare's workers do with one sample (and what was measured of it, `measure_sample`): its arrays and
    their encoding (PNGs, statistics); then which heavy modules that imported; and the sample's FOV."""
    from keras_vessel.data.tfrecords import prepare_encoded

    spec, measured = item
    encoded = prepare_encoded(spec, measured=measured)
    return encoded.name, in_numpy_worker(), [name for name in HEAVY if name in sys.modules], encoded.fov


def test_prepare_workers_import_neither_keras_nor_tensorflow():
    """`keras-vessel prepare --workers 2` was slower than --workers 1: each worker imported TensorFlow (7 s of CPU)
    through `keras_vessel/__init__` and `preprocessing`, though it computes NumPy arrays only."""
    from keras_vessel.data.datasets import open_dataset

    specs = open_dataset("synthetic", None, "training", count=2, size=64)
    results = dict(numpy_map(prepare_and_list_imports, [(spec, None) for spec in specs], workers=2))
    assert sorted(results) == [0, 1]
    assert [results[i][:3] for i in (0, 1)] == [(spec.name, True, []) for spec in specs]
    assert NUMPY_WORKER not in os.environ and not in_numpy_worker()


def test_prepare_workers_derive_a_fov_without_tensorflow(tmp_path):
    """Where the FOV is derived from the photograph (CHASE_DB1, STARE, ORVS, the folder reader without masks) the
    workers imported TensorFlow for `derive_fov`'s scale rule (CHASE_DB1: --workers 2 twice as slow as 1); its
    TensorFlow step is now measured here, and the workers derive the same FOV from it."""
    from helpers import folder_of_photographs  # here: the workers import this module, and helpers imports Keras

    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.data.preprocessing import derive_fov
    from keras_vessel.data.tfrecords import measure_sample

    specs = open_dataset("folder", folder_of_photographs(tmp_path, count=2, size=80, seed=4))  # FOVs derived
    assert all(spec.measure is not None for spec in specs)
    results = dict(numpy_map(prepare_and_list_imports, ((spec, measure_sample(spec)) for spec in specs), workers=2))
    for position, spec in enumerate(specs):
        name, in_worker, heavy, fov = results[position]
        assert (name, in_worker, heavy) == (spec.name, True, [])
        np.testing.assert_array_equal(fov, derive_fov(spec.load().image))


def test_the_modules_a_worker_imports_do_not_load_tensorflow():
    """What unpickling prepare's work imports (the worker's module, the dataset readers, the ID masks) in a fresh
    interpreter with the workers' environment: neither TensorFlow nor Keras."""
    modules = ["keras_vessel.data.tfrecords", "keras_vessel.data.datasets", "keras_vessel.data.segments",
               "keras_vessel.data.preprocessing"]
    code = f"import sys\nimport {', '.join(modules)}\nprint([name for name in {HEAVY!r} if name in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **{NUMPY_WORKER: "1"}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stderr


def test_numpy_map_yields_each_result_with_its_position():
    assert sorted(numpy_map(int, ["3", "1", "2"], workers=2)) == [(0, 3), (1, 1), (2, 2)]


def test_numpy_map_takes_its_items_as_the_workers_need_them():
    """So that prepare measures each photograph (in this process) beside the workers, holding few at once."""
    taken = []

    def items():
        for value in range(20):
            taken.append(value)
            yield str(value)

    results = numpy_map(int, items(), workers=2)
    first = next(results)
    assert len(taken) <= 2 * 2 + 1  # the first four, and one more for the worker that finished
    assert sorted([first, *results]) == [(value, value) for value in range(20)]


def test_numpy_map_raises_a_failure_of_its_items():
    def items():
        yield "1"
        raise OSError("cannot read the next photograph")

    with pytest.raises(OSError, match="cannot read the next photograph"):
        list(numpy_map(int, items(), workers=2))


def test_numpy_map_raises_the_failure_of_a_worker():
    with pytest.raises(ValueError, match="invalid literal for int.*'x'"):
        list(numpy_map(int, ["1", "x", "2"], workers=2))


@pytest.mark.parametrize("workers", [0, 1.5, True])
def test_numpy_map_rejects_a_bad_number_of_workers(workers):
    with pytest.raises(ValueError, match=f"workers must be an int >= 1, got {workers!r}"):
        list(numpy_map(int, ["1"], workers=workers))


# A stop signal runs its Python handler after any bytecode; the pool's own locking code is not safe against that
# (`concurrent.futures.wait` acquires each future's lock in a loop). Here Ctrl-C arrives where it can: between
# two of those acquisitions.
SIGNAL_INSIDE_THE_POOL = """
import concurrent.futures._base as base, math, os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from keras_vessel.workers import numpy_map

sent = []
def enter(self):  # `_AcquireFutures.__enter__`, with Ctrl-C after its first acquisition
    for future in self.futures:
        future._condition.acquire()
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
base._AcquireFutures.__enter__ = enter
try:
    for _ in numpy_map(math.factorial, [20000] * 8, workers=2):
        pass
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def test_numpy_map_stopped_inside_the_pools_own_code_still_ends():
    """Ctrl-C or SIGTERM in the middle of the pool's bookkeeping left one of its locks held: its thread then
    waited for it forever and the process never exited (`prepare --workers 2` hung after "terminated")."""
    done = subprocess.run([sys.executable, "-c", SIGNAL_INSIDE_THE_POOL], capture_output=True, text=True,
                          env=dict(os.environ, **{NUMPY_WORKER: "1"}), timeout=120)  # no TensorFlow import here
    assert (done.returncode, done.stdout.strip()) == (130, "interrupted"), done.stderr
