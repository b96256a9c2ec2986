"""tests/helpers.py itself: the round-trip helpers must catch the bugs they exist for."""

import keras
import numpy as np
import pytest
from helpers import assert_config_roundtrip, assert_layer_roundtrip, assert_loss_roundtrip


@keras.saving.register_keras_serializable(package="keras_vessel_tests")
class Scale(keras.layers.Layer):
    """Multiply by ``k``; ``forget_k=True`` simulates a get_config that drops an argument."""

    def __init__(self, k: float = 1.0, forget_k: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.k = k
        self.forget_k = forget_k

    def call(self, x):
        return x * self.k

    def get_config(self):
        config = super().get_config()
        config["forget_k"] = self.forget_k
        if not self.forget_k:
            config["k"] = self.k
        return config


class Unregistered(keras.layers.Layer):
    def call(self, x):
        return x


@keras.saving.register_keras_serializable(package="keras_vessel_tests")
class MeanAbs(keras.losses.Loss):
    def __init__(self, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def call(self, y_true, y_pred):
        return self.weight * keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=-1)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


X = np.arange(24, dtype="float32").reshape(2, 3, 4)


def test_a_correct_layer_passes(tmp_path):
    clone = assert_layer_roundtrip(Scale(k=3.0), X, tmp_path)
    assert clone.k == 3.0


def test_a_layer_dropping_an_argument_from_its_config_fails(tmp_path):
    with pytest.raises(AssertionError, match="from_config clone outputs"):
        assert_layer_roundtrip(Scale(k=3.0, forget_k=True), X, tmp_path)


def test_an_unregistered_layer_fails():
    with pytest.raises(TypeError, match="Could not locate class 'Unregistered'"):
        assert_config_roundtrip(Unregistered())


def test_a_loss_passes_and_keeps_its_value():
    y_true, y_pred = np.zeros((2, 3), "float32"), np.ones((2, 3), "float32")
    clone = assert_loss_roundtrip(MeanAbs(weight=2.0), y_true, y_pred)
    assert float(clone(y_true, y_pred)) == pytest.approx(2.0)
