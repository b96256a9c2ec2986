"""Fixtures for the model tests."""

import keras
import numpy as np
import pytest


@pytest.fixture
def mixed_bfloat16():
    """Run a test under the mixed_bfloat16 global policy and always restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.fixture
def rgb_batch():
    """Make float32 RGB images on 0-255, shape (batch, height, width, 3)."""

    def make(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.uniform(0.0, 255.0, size=(batch, height, width, 3)).astype("float32")

    return make
