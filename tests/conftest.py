"""Shared fixtures: where the real datasets live, and a quiet TensorFlow."""

import collections
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The folder holding DRIVE/ and CHASE_DB1/: $KERAS_VESSEL_DATA, else ../shared/data."""
    env = os.environ.get("KERAS_VESSEL_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _dataset_dir(name: str) -> Path:
    path = data_root() / name
    if not path.is_dir():
        pytest.skip(
            f"{name} not found at {path}; set KERAS_VESSEL_DATA to the folder holding {name}/"
        )
    return path


@pytest.fixture(scope="session")
def drive_root() -> Path:
    return _dataset_dir("DRIVE")


@pytest.fixture(scope="session")
def chase_root() -> Path:
    return _dataset_dir("CHASE_DB1")


@pytest.fixture(scope="session")
def hrf_root() -> Path:
    return _dataset_dir("HRF")


@pytest.fixture(scope="session")
def orvs_root() -> Path:
    return _dataset_dir("ORVS")


@pytest.fixture(scope="session")
def les_av_root() -> Path:
    return _dataset_dir("LES-AV")


@pytest.fixture(scope="session")
def synthetic_records(tmp_path_factory):
    """Prepare (once per session and arguments) a small synthetic training split into TFRecords."""
    made: dict[tuple[int, int, int], Path] = {}

    def make(*, count: int = 4, size: int = 96, seed: int = 2) -> Path:
        key = (count, size, seed)
        if key not in made:
            from keras_vessel.data.datasets import open_dataset
            from keras_vessel.data.tfrecords import write_dataset

            out = tmp_path_factory.mktemp(f"records-{count}-{size}-{seed}")
            specs = open_dataset("synthetic", None, "training", count=count, size=size, seed=seed)
            write_dataset(specs, out, dataset="synthetic", split="training", show_progress=False)
            made[key] = out
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """Save (once per arguments) a small, untrained, seeded joint U-Net as a .keras file.

    ``fov_diameter`` records a training FOV diameter (px), so that ``scale="auto"`` resamples each
    photograph to it; ``head_gain`` multiplies both heads' kernels, so that the untrained model's
    probabilities spread further from 0.5 (a threshold then leaves few pixels near it)."""
    made: dict[tuple, Path] = {}

    def make(*, base_filters: int = 4, depth: int = 2, seed: int = 0, fov_diameter: float | None = None,
             head_gain: float = 1.0) -> Path:
        key = (base_filters, depth, seed, fov_diameter, head_gain)
        if key not in made:
            import keras

            from keras_vessel.models import build_model

            keras.utils.set_random_seed(seed)
            path = tmp_path_factory.mktemp("model") / "tiny.keras"
            model = build_model("unet", base_filters=base_filters, depth=depth, fov_diameter=fov_diameter)
            for head in model.output_names:
                kernel, bias = model.get_layer(head).get_weights()
                model.get_layer(head).set_weights([kernel * head_gain, bias])
            model.save(path)
            made[key] = path
        return made[key]

    return make


def pytest_collection_modifyitems(config, items):
    """Modules in decreasing number of slow tests (collection order otherwise kept).

    CI hands whole modules to two workers in this order (`make test`: ``--dist loadscope
    --no-loadscope-reorder``): a long module dispatched last would leave the other worker idle for its
    whole length, so the long ones go first and the many short ones fill the end.
    """
    slow_tests = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow_tests[item.path])  # a stable sort
