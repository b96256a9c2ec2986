"""keras_vessel.models.wnet: two U's in cascade, small, with the U-Net's contract."""

import numpy as np
import pytest
from helpers import assert_model_saves_and_loads

from keras_vessel.models import build_model, build_unet, build_wnet, model_fov_diameter, model_stride


def test_wnet_has_the_unet_contract_at_a_eighteenth_of_the_parameters(rgb_batch):
    model = build_wnet()
    compact = build_unet(base_filters=12, depth=4)
    assert model.count_params() < 70_000 and 18 * model.count_params() < compact.count_params()
    outputs = model(rgb_batch(2, 20, 28))
    assert list(outputs) == ["segment", "pixel"]
    for logits in outputs.values():
        assert tuple(logits.shape) == (2, 20, 28, 1) and logits.dtype == "float32"
    assert model_stride(model) == 4


def test_the_second_u_sees_the_image_and_the_first_ones_probability():
    model = build_wnet(base_filters=4, depth=2, heads=("pixel",))
    joined = model.get_layer("image_and_first")
    sources = [tensor._keras_history[0].name for tensor in joined.input]
    assert sources == ["standardize", "first_probability"]
    first = {layer.name for layer in model.layers if layer.name.startswith("first_")}
    second = {layer.name for layer in model.layers if layer.name.startswith("second_")}
    assert len(first) == len(second) + 1  # the first U ends in its 1x1 probability conv


def test_a_wnet_trains_with_the_joint_loss_and_records_its_scale(tmp_path, rgb_batch):
    from keras_vessel.data.targets import pack_targets
    from keras_vessel.losses import build_losses

    model = build_model("wnet", base_filters=4, depth=2, normalisation="local", fov_diameter=540.0)
    assert model_fov_diameter(model) == 540.0
    model.compile(optimizer="adam", loss=build_losses("joint"))
    rng = np.random.default_rng(0)
    label = (rng.random((2, 32, 32)) > 0.8).astype("float32")
    target = pack_targets(label, np.ones_like(label), np.zeros_like(label), label)
    history = model.fit(rgb_batch(2, 32, 32), {"segment": target, "pixel": target}, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert_model_saves_and_loads(model, rgb_batch(1, 16, 16), tmp_path)


def test_space_to_depth_and_back_is_the_identity_and_matches_a_numpy_reshape(rgb_batch):
    from keras_vessel.models.layers import DepthToSpace, SpaceToDepth

    x = rgb_batch(2, 8, 12)
    packed = SpaceToDepth(2)(x).numpy()
    # NumPy oracle: pixel (2i + di, 2j + dj) channel c -> position (i, j), channel (2 di + dj) * C + c
    expected = x.reshape(2, 4, 2, 6, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 4, 6, 12)
    np.testing.assert_array_equal(packed, expected)
    np.testing.assert_array_equal(DepthToSpace(2)(packed).numpy(), x)


def test_a_blocked_wnet_predicts_every_pixel_from_a_quarter_of_the_positions(tmp_path, rgb_batch):
    model = build_wnet(base_filters=4, depth=2, block=2)
    assert model_stride(model) == 8
    outputs = model(rgb_batch(2, 24, 32))
    for logits in outputs.values():
        assert tuple(logits.shape) == (2, 24, 32, 1) and logits.dtype == "float32"
    first_conv = model.get_layer("first_enc1_1_conv")
    assert tuple(first_conv.input.shape[1:]) == (None, None, 4)  # the green channel's 2x2 groups
    # each output pixel of a block comes from its own logit: the 4 pixels of a block differ
    pixel = outputs["pixel"].numpy()[0, :2, :2, 0]
    assert len(np.unique(pixel)) == 4
    assert_model_saves_and_loads(model, rgb_batch(1, 16, 16), tmp_path)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"block": 0}, ValueError, "block must be >= 1 and <= 16, got 0"),
    ({"base_filters": 0}, ValueError, "base_filters must be >= 1, got 0"),
    ({"depth": 9}, ValueError, "depth must be >= 1 and <= 8, got 9"),
    ({"heads": ("coarse",)}, ValueError, r"heads entries must be in \['segment', 'pixel'\]"),
])
def test_wnet_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_wnet(**kwargs)
