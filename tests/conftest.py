"""Shared fixtures: where the real datasets live, and a quiet TensorFlow."""

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
