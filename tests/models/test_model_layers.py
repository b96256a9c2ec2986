"""keras_vessel.models.layers: NumPy oracles, round trips, argument errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_config_roundtrip, assert_layer_roundtrip

from keras_vessel.models.layers import HeadFusion, MeanProbability, Standardize, StrideCheck


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


# ---------------------------------------------------------------- Standardize


@pytest.mark.parametrize(
    "channel, mean, scale, oracle",
    [
        ("green", 98.19, 29.13, lambda im: (im[..., 1:2] - 98.19) / 29.13),
        (
            "grey",
            100.0,
            2.0,
            lambda im: ((0.2989 * im[..., 0] + 0.5870 * im[..., 1] + 0.1140 * im[..., 2])[..., None] - 100.0)
            / 2.0,
        ),
        (
            "rgb",
            [10.0, 20.0, 30.0],
            [1.0, 2.0, 4.0],
            lambda im: (im - np.array([10.0, 20.0, 30.0])) / np.array([1.0, 2.0, 4.0]),
        ),
        ("rgb", 5.0, 3.0, lambda im: (im - 5.0) / 3.0),
    ],
)
def test_standardize_matches_numpy(rgb_batch, channel, mean, scale, oracle):
    images = rgb_batch(2, 5, 7)
    before = images.copy()
    out = keras.ops.convert_to_numpy(Standardize(channel=channel, mean=mean, scale=scale)(images))
    expected = oracle(images.astype(np.float64))
    assert out.dtype == np.float32
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(images, before)  # input untouched


def test_standardize_defaults_are_the_documented_green_statistics():
    layer = Standardize()
    assert (layer.channel, layer.mean, layer.scale) == ("green", 98.19, 29.13)


def test_standardize_stays_float32_under_mixed_policy(mixed_bfloat16, rgb_batch):
    layer = Standardize()
    out = layer(rgb_batch(1, 4, 4))
    assert layer.compute_dtype == "float32"
    assert out.dtype == "float32"


def test_standardize_rejects_non_rgb_input():
    with pytest.raises(ValueError, match=r"RGB images \(B, H, W, 3\), got shape \(None, 8, 8, 1\)"):
        Standardize()(keras.Input((8, 8, 1)))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"channel": "red"}, ValueError, r"channel must be one of \['green', 'grey', 'rgb'\], got 'red' \(type str\)"),
        ({"channel": 1}, ValueError, r"channel must be one of .* got 1 \(type int\)"),
        ({"mean": "98"}, TypeError, r"mean must be a real number, got '98' \(type str\)"),
        ({"mean": float("nan")}, ValueError, r"mean must be finite, got nan"),
        ({"scale": 0.0}, ValueError, r"scale must be > 0.0, got 0.0 \(type float\)"),
        ({"scale": -2}, ValueError, r"scale must be > 0.0, got -2 \(type int\)"),
        ({"scale": True}, TypeError, r"scale must be a real number, got True \(type bool\)"),
        ({"mean": [1.0, 2.0, 3.0]}, ValueError, r"mean must be a number or, for channel='rgb', a sequence of 3"),
        ({"channel": "rgb", "scale": [1.0, 2.0]}, ValueError, r"scale must be .* got \[1.0, 2.0\]"),
        ({"channel": "rgb", "scale": [1.0, 0.0, 1.0]}, ValueError, r"scale\[1\] must be > 0.0, got 0.0"),
    ],
)
def test_standardize_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Standardize(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [{}, {"channel": "grey", "mean": 120.0, "scale": 50.0}, {"channel": "rgb", "mean": [1.0, 2.0, 3.0]}]
)
def test_standardize_roundtrip(tmp_path, rgb_batch, kwargs):
    assert_layer_roundtrip(Standardize(**kwargs), rgb_batch(2, 8, 8), tmp_path)


# ---------------------------------------------------------------- HeadFusion


@pytest.fixture
def logits():
    rng = np.random.default_rng(1)
    return [rng.normal(0.0, 3.0, size=(2, 6, 5, 1)).astype("float32") for _ in range(2)]


@pytest.mark.parametrize(
    "mode, oracle",
    [
        ("mean", lambda s, p: (_sigmoid(s) + _sigmoid(p)) / 2.0),
        ("segment", lambda s, p: _sigmoid(s)),
        ("pixel", lambda s, p: _sigmoid(p)),
    ],
)
def test_head_fusion_matches_numpy(logits, mode, oracle):
    out = keras.ops.convert_to_numpy(HeadFusion(mode=mode)(logits))
    assert out.dtype == np.float32 and out.shape == (2, 6, 5, 1)
    np.testing.assert_allclose(out, oracle(*logits), rtol=0, atol=1e-6)


def test_head_fusion_follows_the_heads_order(logits):
    swapped = HeadFusion(mode="segment", heads=("pixel", "segment"))(logits)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(swapped), _sigmoid(logits[1]), atol=1e-6)


def test_head_fusion_single_head(logits):
    for mode in ("mean", "pixel"):
        out = HeadFusion(mode=mode, heads=("pixel",))([logits[0]])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), _sigmoid(logits[0]), atol=1e-6)


def test_head_fusion_outputs_float32_from_bfloat16_logits(mixed_bfloat16, logits):
    out = HeadFusion()([tf.cast(x, tf.bfloat16) for x in logits])
    assert out.dtype == "float32"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"mode": "max"}, ValueError, r"mode must be 'mean' or one of the heads \['segment', 'pixel'\], got 'max'"),
        ({"mode": "segment", "heads": ("pixel",)}, ValueError, r"one of the heads \['pixel'\], got 'segment'"),
        ({"heads": "pixel"}, TypeError, r"heads must be a tuple of head names .* got 'pixel' \(type str\)"),
        ({"heads": ()}, ValueError, r"heads must name at least one head"),
        ({"heads": ("pixel", "pixel")}, ValueError, r"heads must not repeat a head"),
        ({"heads": ("pixel", "vessel")}, ValueError, r"heads entries must be in .* got 'vessel'"),
    ],
)
def test_head_fusion_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        HeadFusion(**kwargs)


def test_head_fusion_rejects_wrong_number_of_inputs(logits):
    with pytest.raises(ValueError, match=r"expected 2 logits tensors for heads \['segment', 'pixel'\], got 1"):
        HeadFusion()([logits[0]])


@pytest.mark.parametrize("kwargs", [{}, {"mode": "segment"}, {"mode": "pixel", "heads": ("pixel",)}])
def test_head_fusion_roundtrip(tmp_path, logits, kwargs):
    inputs = logits[: len(kwargs.get("heads", ("segment", "pixel")))]
    assert_layer_roundtrip(HeadFusion(**kwargs), inputs, tmp_path)


# ---------------------------------------------------------------- StrideCheck


def test_stride_check_is_identity_on_valid_sizes(rgb_batch):
    images = rgb_batch(1, 24, 40)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(StrideCheck(8)(images)), images)


def test_stride_check_rejects_static_bad_size():
    with pytest.raises(ValueError, match=r"image width 20 is not a multiple of the model stride 8"):
        StrideCheck(8)(keras.Input((16, 20, 3)))


def test_stride_check_rejects_dynamic_bad_size(rgb_batch):
    model = keras.Sequential([keras.Input((None, None, 3)), StrideCheck(8)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"multiples of the model stride 8"):
        model(rgb_batch(1, 16, 20))


@pytest.mark.parametrize(
    "stride, error, match",
    [
        (0, ValueError, r"stride must be >= 1, got 0 \(type int\)"),
        (2.0, TypeError, r"stride must be an int, got 2.0 \(type float\)"),
    ],
)
def test_stride_check_rejects_bad_arguments(stride, error, match):
    with pytest.raises(error, match=match):
        StrideCheck(stride)


def test_stride_check_roundtrip(tmp_path, rgb_batch):
    clone = assert_layer_roundtrip(StrideCheck(4), rgb_batch(1, 8, 12), tmp_path)
    assert clone.stride == 4
    assert_config_roundtrip(StrideCheck(16, name="custom"))


# ---------------------------------------------------------------- MeanProbability


def test_mean_probability_is_the_logit_of_the_mean_sigmoid(logits):
    out = keras.ops.convert_to_numpy(MeanProbability()(logits))
    mean = (_sigmoid(logits[0]) + _sigmoid(logits[1])) / 2.0
    assert out.dtype == np.float32 and out.shape == (2, 6, 5, 1)
    np.testing.assert_allclose(_sigmoid(out), mean, rtol=0, atol=1e-6)


def test_mean_probability_stays_finite_when_saturated():
    saturated = [np.full((1, 2, 2, 1), 200.0, "float32"), np.full((1, 2, 2, 1), 300.0, "float32")]
    out = keras.ops.convert_to_numpy(MeanProbability(epsilon=1e-4)(saturated))
    np.testing.assert_allclose(out, np.log((1 - 1e-4) / 1e-4), rtol=1e-4)


def test_mean_probability_round_trips(logits, tmp_path):
    assert_layer_roundtrip(MeanProbability(epsilon=1e-5), logits, tmp_path)


@pytest.mark.parametrize("epsilon", [0.0, 0.5, -1.0])
def test_mean_probability_rejects_bad_epsilon(epsilon):
    with pytest.raises(ValueError, match=r"epsilon must be"):
        MeanProbability(epsilon=epsilon)
