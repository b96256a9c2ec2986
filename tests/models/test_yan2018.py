"""keras_vessel.models.yan2018 against METHOD.md section 4 (built, never trained)."""

import keras
import numpy as np
import pytest
from helpers import assert_model_saves_and_loads

from keras_vessel.models import build_yan2018, model_stride

# Written out from METHOD.md section 4 and the authors' prototxt, independently of the module:
# (layer name, filters, kernel size) at width=1.
AUTHORS_CONVS = [
    ("conv1_1", 128, 9), ("conv1_2", 128, 7),
    ("conv2_1", 128, 5), ("conv2_2", 128, 3),
    ("conv3_1", 256, 3), ("conv3_2", 64, 3),  # (sic)
    ("conv4_1", 512, 3), ("conv4_2", 512, 3),
    ("conv5_1", 1024, 3), ("conv5_2", 1024, 3),
    ("dec4_1", 512, 3), ("dec4_2", 512, 3),
    ("dec3_1", 256, 3), ("dec3_2", 256, 3),
    ("dec2_1", 128, 3), ("dec2_2", 128, 5),
]  # fmt: skip
AUTHORS_DECONVS = [("deconv4", 512), ("deconv3", 256), ("deconv2", 128), ("deconv1", 128)]
AUTHORS_HEAD = [("conv1", 128, 7), ("conv2", 128, 9)]


@pytest.fixture(scope="module")
def full_model():
    return build_yan2018()


def _spec(layer):
    return (layer.name, layer.filters, layer.kernel_size)


def test_layer_sequence_matches_the_authors(full_model):
    expected = [(n, f, (k, k)) for n, f, k in AUTHORS_CONVS]
    for head in ("segment", "pixel"):
        expected += [(f"{head}_{s}", f, (k, k)) for s, f, k in AUTHORS_HEAD] + [(head, 1, (1, 1))]
    # Compare by name (the functional graph lists the two heads' layers interleaved).
    actual = [_spec(layer) for layer in full_model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert sorted(actual) == sorted(expected)
    trunk = [spec for spec in actual if not spec[0].startswith(("segment", "pixel"))]
    assert trunk == expected[: len(AUTHORS_CONVS)]


def test_every_conv_is_same_padded_relu_glorot_with_zero_bias(full_model):
    convs = [
        layer
        for layer in full_model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))
    ]
    assert len(convs) == 16 + 4 + 6
    for layer in convs:
        if isinstance(layer, keras.layers.Conv2DTranspose):  # 2x2 stride 2: exactly doubles the size
            assert (layer.kernel_size, layer.padding) == ((2, 2), "valid"), layer.name
        elif layer.kernel_size != (1, 1):  # 1x1 convs pad nothing either way
            assert layer.padding == "same", layer.name
        assert layer.strides == ((2, 2) if isinstance(layer, keras.layers.Conv2DTranspose) else (1, 1))
        expected_activation = "linear" if layer.name in ("segment", "pixel") else "relu"
        assert layer.activation.__name__ == expected_activation, layer.name
        assert isinstance(layer.kernel_initializer, keras.initializers.GlorotUniform), layer.name
        assert not np.any(keras.ops.convert_to_numpy(layer.bias)), layer.name
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in full_model.layers)


def test_upsampling_pooling_and_dropout(full_model):
    deconvs = [
        (layer.name, layer.filters, layer.kernel_size, layer.strides)
        for layer in full_model.layers
        if isinstance(layer, keras.layers.Conv2DTranspose)
    ]
    assert deconvs == [(n, f, (2, 2), (2, 2)) for n, f in AUTHORS_DECONVS]
    pools = [layer for layer in full_model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert [(p.pool_size, p.strides) for p in pools] == [((2, 2), (2, 2))] * 4
    assert model_stride(full_model) == 16
    dropouts = {layer.name: layer.rate for layer in full_model.layers if isinstance(layer, keras.layers.Dropout)}
    assert dropouts == {"dropout4": 0.5, "dropout5": 0.5}
    # Caffe's enc4 dropout is in place: the level-4 skip and pool4 both read the dropped tensor.
    dropped = full_model.get_layer("dropout4").output
    assert full_model.get_layer("pool4").input is dropped
    assert full_model.get_layer("concat4").input[1] is dropped
    assert full_model.get_layer("deconv4").input is full_model.get_layer("dropout5").output
    # Concat order [upsampled, skip]; the heads start from the level-1 concat.
    assert full_model.get_layer("concat1").input[0] is full_model.get_layer("deconv1").output
    assert full_model.get_layer("concat1").input[1] is full_model.get_layer("conv1_2").output
    for head in ("segment", "pixel"):
        assert full_model.get_layer(f"{head}_conv1").input is full_model.get_layer("concat1").output


def test_input_is_green_minus_the_authors_mean(full_model):
    layer = full_model.get_layer("standardize")
    assert (layer.channel, layer.mean, layer.scale) == ("green", 98.19, 1.0)


@pytest.mark.parametrize("width", [0.25, 0.1, 0.001])
def test_width_scales_every_filter_count(width):
    model = build_yan2018(width=width)
    for name, filters, _ in AUTHORS_CONVS:
        assert model.get_layer(name).filters == max(1, round(filters * width)), name
    for name, filters in AUTHORS_DECONVS:
        assert model.get_layer(name).filters == max(1, round(filters * width)), name
    for suffix, filters, _ in AUTHORS_HEAD:
        assert model.get_layer(f"pixel_{suffix}").filters == max(1, round(filters * width))
    assert model.get_layer("pixel").filters == 1


def test_width_0_25_spot_values():
    model = build_yan2018(width=0.25, heads=("pixel",))
    assert model.get_layer("conv1_1").filters == 32
    assert model.get_layer("conv3_2").filters == 16
    assert model.get_layer("conv5_2").filters == 256


@pytest.mark.parametrize("heads, size", [(("segment", "pixel"), (48, 80)), (("pixel",), (16, 112))])
def test_outputs_are_named_float32_logits(rgb_batch, heads, size):
    model = build_yan2018(width=1 / 32, heads=heads)
    outputs = model(rgb_batch(2, *size))
    assert list(outputs) == list(heads)
    for name in heads:
        assert tuple(outputs[name].shape) == (2, *size, 1) and outputs[name].dtype == "float32"


def test_mixed_bfloat16_keeps_float32_logits(mixed_bfloat16, rgb_batch):
    model = build_yan2018(width=1 / 64)
    assert model.get_layer("conv1_1").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model(rgb_batch(1, 16, 16)).values())


def test_lecun_uniform_reproduces_caffe_xavier():
    model = build_yan2018(width=1 / 64, kernel_initializer="lecun_uniform")
    kernel = keras.ops.convert_to_numpy(model.get_layer("conv5_1").kernel)
    fan_in = 3 * 3 * model.get_layer("conv4_2").filters
    assert np.abs(kernel).max() <= np.sqrt(3.0 / fan_in)


def test_saves_and_loads(tmp_path, rgb_batch):
    model = build_yan2018(width=1 / 32)
    loaded = assert_model_saves_and_loads(model, rgb_batch(1, 32, 48), tmp_path)
    assert model_stride(loaded) == 16


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"width": 0}, ValueError, r"width must be > 0.0, got 0 \(type int\)"),
        ({"width": "1"}, TypeError, r"width must be a real number, got '1' \(type str\)"),
        ({"heads": ("segment", "vessel")}, ValueError, r"heads entries must be in \['segment', 'pixel'\]"),
        ({"dropout": 1.5}, ValueError, r"dropout must be <= 1.0|dropout must be < 1.0, got 1.5"),
        ({"kernel_initializer": 3}, TypeError, r"kernel_initializer must be a Keras initializer name"),
        ({"kernel_initializer": "xavier"}, ValueError, r"xavier"),
    ],
)
def test_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_yan2018(**kwargs)
