"""LocalStandardize against a SciPy normalised convolution, its invariances; FovDiameter and its helpers."""

import re

import keras
import numpy as np
import pytest
from helpers import assert_layer_roundtrip
from scipy import ndimage

from keras_vessel.models import (
    FovDiameter,
    LocalStandardize,
    build_inference_model,
    build_model,
    model_fov_diameter,
    record_fov_diameter,
)

LUMA = np.array([0.299, 0.587, 0.114])  # the FOV rule's luminance (keras_vessel.data.preprocessing.derive_fov)
GREY = np.array([0.2989, 0.5870, 0.1140])  # the "grey" channel (MATLAB rgb2gray)
# float32 against float64: the variance is E[x^2] - m^2, and float32 holds E[x^2] (up to 255^2) to
# about 2**-24 * 255**2 = 4e-3 per rounding. The standardised value moves by |out| * dv / (2 (v + floor^2));
# with |out| < 3 and v + floor^2 >= 3.5 in these images a few accumulated roundings give about 1e-2 at
# worst, and the measured maximum over the cases below is 7e-4. 5e-3 keeps that margin, while a kernel
# truncated at 2 sigma, a sigma 10% off or reflected instead of zero padding (the disc touches the
# frame) each move some values by more than 0.14.
ATOL = 5e-3


def disc(height, width, cy, cx, radius):
    yy, xx = np.mgrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius


def fundus(height=80, width=96, seed=0):
    """(H, W, 3) float32 0-255: a textured orange disc (red >= 100 inside) on black, cut by the frame."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (height, width, 3)), (2, 2, 0)) * 60
    mask = disc(height, width, height / 2, width / 2 + 3, 0.55 * height)  # cut by the top and bottom frame
    image = np.zeros((height, width, 3))
    image[mask] = (np.array([170.0, 100.0, 50.0]) + texture)[mask]
    return np.clip(image, [100, 20, 10], 255).astype(np.float32) * mask[..., None], mask


def oracle(image, channel, sigma, floor):
    """Normalised convolution in float64 with scipy's Gaussian (radius round(3 sigma), zeros outside)."""
    image = image.astype(np.float64)
    inside = np.maximum(image[..., 0], image @ LUMA) > 15
    selected = {"green": image[..., 1:2], "grey": (image @ GREY)[..., None], "rgb": image}[channel]

    def blur(a):
        return ndimage.gaussian_filter(a, sigma, mode="constant", cval=0.0, truncate=3.0)

    weight = blur(inside.astype(np.float64))
    out = []
    for c in range(selected.shape[-1]):
        x = selected[..., c]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(weight > 0, blur(x * inside) / weight, 0.0)
            variance = np.maximum(np.where(weight > 0, blur(x * x * inside) / weight, 0.0) - mean**2, 0.0)
        out.append((x - mean) / np.sqrt(variance + floor**2) * inside)
    return np.stack(out, axis=-1), inside


def run(layer, image):
    return keras.ops.convert_to_numpy(layer(image[None]))[0]


# ----------------------------------------------------------------- against the oracle


@pytest.mark.parametrize("channel", ["green", "grey", "rgb"])
@pytest.mark.parametrize(("sigma", "floor"), [(3.0, 1.0), (2.2, 4.0)])
def test_local_standardize_matches_a_scipy_normalised_convolution(channel, sigma, floor):
    # radius round(3 sigma) = int(3 sigma + 0.5), scipy's rule for truncate=3, for these sigmas
    image, mask = fundus()
    before = image.copy()
    out = run(LocalStandardize(channel=channel, sigma=sigma, floor=floor), image)
    expected, inside = oracle(image, channel, sigma, floor)
    np.testing.assert_array_equal(inside, mask)
    assert out.dtype == np.float32 and out.shape == expected.shape
    # the same zero padding on both sides: compared everywhere, the frame and the FOV rim included
    np.testing.assert_allclose(out, expected, rtol=0, atol=ATOL)
    assert expected[inside].std() > 0.3  # not a trivially flat output
    np.testing.assert_array_equal(image, before)


def test_local_standardize_is_zero_outside_the_fov():
    image, _ = fundus(seed=3)
    image[5, 5] = (15.0, 15.0, 0.0)  # max(red, luminance) = 15: outside
    image[6, 6] = (16.0, 0.0, 0.0)  # red alone: inside
    out = run(LocalStandardize(channel="rgb", sigma=3.0), image)
    outside = np.maximum(image[..., 0], image @ LUMA) <= 15
    assert outside.sum() > 1000 and outside[5, 5] and not outside[6, 6]
    np.testing.assert_array_equal(out[outside], 0.0)
    assert (out[~outside] != 0).mean() > 0.99


# ----------------------------------------------------------------- invariances


@pytest.mark.parametrize(("gain", "offset"), [(2.0, 0.0), (1.0, 40.0), (0.7, 25.0), (1.6, -30.0)])
def test_output_does_not_change_with_a_gain_and_offset_inside_the_fov(gain, offset):
    # a tiny floor, so (a x + b - (a m + b)) / sqrt(a^2 v + floor^2) is the unscaled value
    layer = LocalStandardize(channel="green", sigma=3.0, floor=1e-3)
    image, mask = fundus(seed=1)
    changed = image.copy()
    changed[mask] = gain * image[mask] + offset
    assert (np.maximum(changed[..., 0], changed @ LUMA)[mask] > 15).all()  # still the same FOV
    np.testing.assert_allclose(run(layer, changed), run(layer, image), rtol=0, atol=ATOL)


def test_the_floor_keeps_a_dark_image_from_being_amplified_as_much():
    """With floor > 0 a 10x darker copy is *not* standardised to the same values (checks the test above bites)."""
    layer = LocalStandardize(channel="green", sigma=3.0, floor=4.0)
    image, mask = fundus(seed=1)
    darker = image.copy()
    darker[mask] = image[mask] / 10 + 90  # the same FOV (red >= 100)
    assert np.abs(run(layer, darker)[mask]).mean() < 0.8 * np.abs(run(layer, image)[mask]).mean()


def test_rgb_output_does_not_change_with_per_channel_gains():
    layer = LocalStandardize(channel="rgb", sigma=3.0, floor=1e-3)
    image, mask = fundus(seed=2)
    cast = image.copy()
    cast[mask] = image[mask] * np.array([0.9, 1.4, 0.6], np.float32)  # a colour cast
    assert (np.maximum(cast[..., 0], cast @ LUMA)[mask] > 15).all()
    np.testing.assert_allclose(run(layer, cast), run(layer, image), rtol=0, atol=ATOL)


def test_a_crop_of_the_output_is_the_output_of_the_crop_away_from_the_crop_border():
    sigma = 3.0
    radius = round(3 * sigma)
    layer = LocalStandardize(channel="grey", sigma=sigma)
    image, _ = fundus(seed=4)
    top, left, bottom, right = 10, 12, 70, 80
    whole = run(layer, image)[top:bottom, left:right]
    cropped = run(layer, image[top:bottom, left:right])
    interior = (slice(radius, -radius), slice(radius, -radius))
    np.testing.assert_allclose(cropped[interior], whole[interior], rtol=0, atol=1e-4)
    assert np.abs(cropped - whole).max() > 1e-2  # near the crop border the windows differ


def test_local_standardize_stays_float32_under_mixed_bfloat16(mixed_bfloat16):
    image, _ = fundus(seed=5)
    layer = LocalStandardize(channel="green", sigma=3.0)
    assert layer.compute_dtype == "float32"
    out = layer(image[None])
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    expected, _ = oracle(image, "green", 3.0, 1.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out)[0], expected, rtol=0, atol=ATOL)
    # inside a model built under the policy, too
    model = build_model("unet", base_filters=4, depth=2, normalisation="local", local_sigma=3.0)
    standardize = model.get_layer("standardize")
    assert isinstance(standardize, LocalStandardize) and standardize.sigma == 3.0
    assert standardize.compute_dtype == "float32"


# ----------------------------------------------------------------- arguments and round trips


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"channel": "red"}, ValueError, r"channel must be one of \['green', 'grey', 'rgb'\], got 'red' \(type str\)"),
        ({"sigma": 0}, ValueError, r"sigma must be > 0\.0, got 0 \(type int\)"),
        ({"sigma": 300.0}, ValueError, r"sigma must be <= 256\.0, got 300\.0 \(type float\)"),
        ({"sigma": "3"}, TypeError, r"sigma must be a real number, got '3' \(type str\)"),
        ({"sigma": float("inf")}, ValueError, r"sigma must be finite, got inf \(type float\)"),
        ({"floor": 0.0}, ValueError, r"floor must be > 0\.0, got 0\.0 \(type float\)"),
        ({"floor": -1}, ValueError, r"floor must be > 0\.0, got -1 \(type int\)"),
    ],
)
def test_local_standardize_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LocalStandardize(**kwargs)


def test_local_standardize_rejects_non_rgb_input():
    with pytest.raises(ValueError, match=r"input must be RGB images \(B, H, W, 3\), got shape \(1, 8, 8, 1\)"):
        LocalStandardize()(np.zeros((1, 8, 8, 1), np.float32))


@pytest.mark.parametrize(
    ("diameter", "error", "match"),
    [
        (4.0, ValueError, r"diameter must be >= 8\.0, got 4\.0 \(type float\)"),
        (float("nan"), ValueError, r"diameter must be finite, got nan \(type float\)"),
        ("540", TypeError, r"diameter must be a real number, got '540' \(type str\)"),
    ],
)
def test_fov_diameter_rejects_bad_diameters(diameter, error, match):
    with pytest.raises(error, match=match):
        FovDiameter(diameter)


@pytest.mark.parametrize("kwargs", [{}, {"channel": "rgb", "sigma": 2.5, "floor": 3.0}, {"channel": "grey"}])
def test_local_standardize_roundtrip(tmp_path, kwargs):
    image, _ = fundus(40, 48)
    clone = assert_layer_roundtrip(LocalStandardize(**kwargs), np.stack([image, image[::-1]]), tmp_path, atol=1e-5)
    for key, value in kwargs.items():
        assert getattr(clone, key) == value


def test_fov_diameter_roundtrip_is_identity(tmp_path, rgb_batch):
    images = rgb_batch(2, 8, 8)
    layer = FovDiameter(535.5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images)), images)
    assert assert_layer_roundtrip(layer, images, tmp_path).diameter == 535.5


# ----------------------------------------------------------------- model_fov_diameter / record_fov_diameter


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    return {
        "with": build_model("unet", base_filters=4, depth=2, fov_diameter=540.0),
        "without": build_model("unet", base_filters=4, depth=2),
    }


def test_model_fov_diameter_reads_the_recorded_diameter(models, tmp_path):
    assert model_fov_diameter(models["with"]) == 540.0
    assert model_fov_diameter(build_inference_model(models["with"])) == 540.0  # nested model
    assert model_fov_diameter(models["without"]) is None
    assert model_fov_diameter(build_inference_model(models["without"])) is None
    path = tmp_path / "with.keras"
    models["with"].save(path)
    assert model_fov_diameter(keras.saving.load_model(path, safe_mode=True)) == 540.0


def test_record_fov_diameter_shares_the_weights(models, rgb_batch):
    original = models["without"]
    recorded = record_fov_diameter(original, 600.0)
    assert model_fov_diameter(recorded) == 600.0 and model_fov_diameter(original) is None
    images = rgb_batch(1, 16, 16, seed=3)
    before = {k: keras.ops.convert_to_numpy(v) for k, v in original(images).items()}
    after = {k: keras.ops.convert_to_numpy(v) for k, v in recorded(images).items()}
    assert set(after) == set(before)
    for head in before:
        np.testing.assert_array_equal(after[head], before[head])
    assert {id(w) for w in recorded.weights} == {id(w) for w in original.weights}
    # changing the original's weights changes the recorded model's outputs: they are the same variables
    kernel = original.weights[0]
    saved = keras.ops.convert_to_numpy(kernel)
    try:
        kernel.assign(saved * 3.0)
        changed = keras.ops.convert_to_numpy(recorded(images)["pixel"])
        np.testing.assert_array_equal(changed, keras.ops.convert_to_numpy(original(images)["pixel"]))
        assert not np.array_equal(changed, before["pixel"])
    finally:
        kernel.assign(saved)
    assert model_fov_diameter(build_inference_model(recorded)) == 600.0


def test_record_fov_diameter_refuses_a_model_that_records_one(models):
    name = re.escape(models["with"].name)
    with pytest.raises(ValueError, match=rf"model '{name}' already records a FOV diameter of 540 px"):
        record_fov_diameter(models["with"], 600.0)
    with pytest.raises(ValueError, match=r"already records a FOV diameter of 600 px"):
        record_fov_diameter(record_fov_diameter(models["without"], 600.0), 540.0)
