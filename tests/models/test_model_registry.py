"""keras_vessel.models: MODELS, build_model, model_stride, build_inference_model."""

import keras
import numpy as np
import pytest
from helpers import assert_model_saves_and_loads

from keras_vessel.models import (
    MODELS,
    build_inference_model,
    build_model,
    build_unet,
    build_wnet,
    build_yan2018,
    head_names,
    model_stride,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def test_models_is_an_explicit_dict():
    assert MODELS == {"unet": build_unet, "wnet": build_wnet, "yan2018": build_yan2018}


@pytest.mark.parametrize(
    "name, options, expected_filters",
    [("unet", {"base_filters": 3, "depth": 2}, 3), ("yan2018", {"width": 1 / 64}, 2)],
)
def test_build_model_passes_options(name, options, expected_filters):
    model = build_model(name, heads=("pixel",), **options)
    assert head_names(model) == ("pixel",)
    first_conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert first_conv.filters == expected_filters


def test_build_model_rejects_unknown_name():
    with pytest.raises(ValueError, match=r"unknown model name 'resnet'; valid names: \['unet', 'wnet', 'yan2018'\]"):
        build_model("resnet")


def test_build_model_rejects_unknown_option():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['widht'\] for model 'yan2018'; valid options: .*'width'"):
        build_model("yan2018", widht=0.5)


def test_model_stride_needs_a_stride_check_layer():
    plain = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(1, 1)], name="plain")
    with pytest.raises(ValueError, match=r"model 'plain' has no StrideCheck layer"):
        model_stride(plain)


@pytest.fixture(scope="module")
def joint():
    return build_unet(base_filters=4, depth=3)


@pytest.mark.parametrize("heads", ["mean", "segment", "pixel"])
def test_inference_model_fuses_the_training_outputs(joint, rgb_batch, heads):
    images = rgb_batch(2, 24, 40)  # odd multiples of the stride 8
    logits = {k: keras.ops.convert_to_numpy(v) for k, v in joint(images).items()}
    expected = {
        "mean": (_sigmoid(logits["segment"]) + _sigmoid(logits["pixel"])) / 2.0,
        "segment": _sigmoid(logits["segment"]),
        "pixel": _sigmoid(logits["pixel"]),
    }[heads]
    model = build_inference_model(joint, heads=heads)
    probability = model(images)
    assert not isinstance(probability, dict)
    assert tuple(probability.shape) == (2, 24, 40, 1) and probability.dtype == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probability), expected, rtol=0, atol=1e-6)
    assert model_stride(model) == 8


def test_inference_model_of_a_pixel_only_model(rgb_batch):
    pixel_only = build_unet(base_filters=4, depth=2, heads=("pixel",))
    images = rgb_batch(1, 12, 20)
    expected = _sigmoid(keras.ops.convert_to_numpy(pixel_only(images)["pixel"]))
    for heads in ("pixel", "mean"):
        out = build_inference_model(pixel_only, heads=heads)(images)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"heads must be 'mean' or one of the heads model .* has \['pixel'\], got 'segment'"):
        build_inference_model(pixel_only, heads="segment")


def test_inference_model_rejects_models_without_named_heads():
    plain = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(1, 1)], name="plain")
    with pytest.raises(ValueError, match=r"model 'plain' must have dict outputs keyed by head name"):
        build_inference_model(plain)


def test_inference_model_shares_weights_and_saves(joint, rgb_batch, tmp_path):
    model = build_inference_model(joint)
    assert len(model.weights) == len(joint.weights)
    loaded = assert_model_saves_and_loads(model, rgb_batch(1, 16, 24), tmp_path)
    assert model_stride(loaded) == 8


def test_inference_model_of_yan2018_saves(rgb_batch, tmp_path):
    model = build_inference_model(build_yan2018(width=1 / 64, heads=("pixel",)), heads="pixel")
    assert_model_saves_and_loads(model, rgb_batch(1, 16, 48), tmp_path)
