"""keras_vessel.models.unet: outputs, stride, mixed precision, round trip, errors."""

import keras
import numpy as np
import pytest
from helpers import assert_model_saves_and_loads

from keras_vessel.models import build_unet, model_stride
from keras_vessel.models.layers import Standardize


def _conv_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


@pytest.mark.parametrize(
    "heads, depth, size",
    [
        (("segment", "pixel"), 4, (48, 80)),  # 3 x 16, 5 x 16: odd multiples of the stride
        (("pixel",), 4, (16, 112)),
        (("segment", "pixel"), 2, (12, 20)),  # the shallow network, stride 4
        (("pixel",), 2, (4, 36)),
    ],
)
def test_unet_outputs_are_named_float32_logits(rgb_batch, heads, depth, size):
    model = build_unet(base_filters=4, depth=depth, heads=heads)
    images = rgb_batch(2, *size)
    outputs = model(images)
    assert isinstance(outputs, dict) and list(outputs) == list(heads)
    assert sorted(model.output_names) == sorted(heads)
    for name in heads:
        assert tuple(outputs[name].shape) == (2, *size, 1)
        assert outputs[name].dtype == "float32"
        assert model.get_layer(name).dtype_policy.name == "float32"
    assert model_stride(model) == 2**depth


def test_unet_logits_are_not_squashed(rgb_batch):
    # Logits, not probabilities: some value leaves [0, 1] for random weights and inputs.
    model = build_unet(base_filters=4, depth=2)
    values = np.concatenate([np.ravel(v) for v in model(rgb_batch(2, 16, 16)).values()])
    assert values.min() < 0.0 or values.max() > 1.0


def test_unet_filters_and_depth(rgb_batch):
    model = build_unet(base_filters=8, depth=3, head_convs=2, head_filters=5)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == 3
    assert model.get_layer("enc1_1_conv").filters == 8
    assert model.get_layer("enc3_2_conv").filters == 32
    assert model.get_layer("bottleneck_1_conv").filters == 64
    assert model.get_layer("up1").filters == 8
    assert model.get_layer("segment_conv1").filters == 5
    assert model.get_layer("segment_conv2").filters == 5
    assert "dec1_1_conv" not in [layer.name for layer in model.layers]  # the heads are the full-res decoder
    assert model.get_layer("segment").filters == 1 and model.get_layer("segment").kernel_size == (1, 1)
    assert all(layer.kernel_size in ((3, 3), (1, 1)) for layer in _conv_layers(model))


def test_unet_shared_decoder_makes_the_joint_model_one_1x1_conv_bigger():
    # Default head_convs=0: both heads read the same full-resolution features, so
    # comparing the joint and the pixel-wise loss does not compare network sizes.
    joint = build_unet(base_filters=8, depth=2)
    pixel = build_unet(base_filters=8, depth=2, heads=("pixel",))
    assert joint.count_params() - pixel.count_params() == 8 + 1
    assert joint.get_layer("segment").input is joint.get_layer("pixel").input
    branched = build_unet(base_filters=8, depth=2, head_convs=2)
    assert branched.get_layer("segment").input is not branched.get_layer("pixel").input


def test_unet_batch_norm_and_dropout_options():
    plain = build_unet(base_filters=4, depth=2)
    model = build_unet(base_filters=4, depth=2, batch_norm=True, dropout=0.25)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers)
    # 2 encoder levels x 2 + bottleneck 2 + 2 decoder levels x 2 (the 1x1 heads have none)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 10
    branched = build_unet(base_filters=4, depth=2, batch_norm=True, head_convs=2)
    # level 1 is the heads' own convs then, which have no BN
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in branched.layers) == 8
    rates = {layer.name: layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)}
    assert rates == {"enc2_dropout": 0.25, "bottleneck_dropout": 0.25}


def test_unet_passes_normalisation_to_standardize():
    model = build_unet(base_filters=4, depth=2, channel="grey", mean=120.0, scale=60.0)
    layer = model.get_layer("standardize")
    assert isinstance(layer, Standardize)
    assert (layer.channel, layer.mean, layer.scale) == ("grey", 120.0, 60.0)


def test_unet_mixed_bfloat16_keeps_float32_logits(mixed_bfloat16, rgb_batch):
    model = build_unet(base_filters=4, depth=2, batch_norm=True)
    assert model.get_layer("enc1_1_conv").compute_dtype == "bfloat16"
    outputs = model(rgb_batch(1, 8, 8))
    assert all(v.dtype == "float32" for v in outputs.values())


def test_mixed_policy_fixture_restored():
    # Runs after the mixed-policy test in file order: the global policy must be back.
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("heads", [("segment", "pixel"), ("pixel",)])
def test_unet_saves_and_loads(tmp_path, rgb_batch, heads):
    model = build_unet(base_filters=4, depth=2, batch_norm=True, dropout=0.5, heads=heads)
    loaded = assert_model_saves_and_loads(model, rgb_batch(2, 12, 8), tmp_path)
    assert model_stride(loaded) == 4


def test_unet_rejects_wrong_size_with_a_clear_message(rgb_batch):
    model = build_unet(base_filters=4, depth=2)
    with pytest.raises(Exception, match=r"multiples of the model stride 4"):
        model(rgb_batch(1, 8, 10))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"base_filters": 0}, ValueError, r"base_filters must be >= 1, got 0 \(type int\)"),
        ({"base_filters": 16.0}, TypeError, r"base_filters must be an int, got 16.0 \(type float\)"),
        ({"depth": 0}, ValueError, r"depth must be >= 1 and <= 8, got 0"),
        ({"batch_norm": "yes"}, TypeError, r"batch_norm must be a bool, got 'yes' \(type str\)"),
        ({"dropout": 1.0}, ValueError, r"dropout must be < 1.0, got 1.0"),
        ({"dropout": -0.1}, ValueError, r"dropout must be >= 0.0, got -0.1"),
        ({"heads": ("segment",) * 2}, ValueError, r"heads must not repeat a head"),
        ({"heads": "pixel"}, TypeError, r"heads must be a tuple of head names"),
        ({"channel": "blue"}, ValueError, r"channel must be one of \['green', 'grey', 'rgb'\], got 'blue'"),
        ({"head_filters": 0}, ValueError, r"head_filters must be >= 1, got 0"),
        ({"head_convs": -1}, ValueError, r"head_convs must be >= 0 and <= 8, got -1"),
        ({"scale": 0}, ValueError, r"scale must be > 0.0, got 0"),
    ],
)
def test_unet_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_unet(**kwargs)


def test_unet_accepts_heads_as_list_from_yaml():
    model = build_unet(base_filters=2, depth=1, heads=["pixel"])
    assert list(model.output) == ["pixel"]
