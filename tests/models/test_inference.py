"""Tests for keras_vessel.models.inference: padding, tiling, blending, FOV."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_vessel.models import inference


class PointwiseModel:
    """A stand-in model whose output at a pixel depends only on that pixel.

    Any correct tiling + normalised blending must then reproduce the whole-image
    output exactly; it also records the batch shapes it was called with.
    """

    def __init__(self):
        self.calls = []

    def __call__(self, batch, training=False):
        batch = np.asarray(batch)
        self.calls.append(batch.shape)
        return (batch.mean(axis=-1, keepdims=True) / 255.0).astype(np.float32)


@pytest.fixture(scope="module")
def small_unet():
    keras = pytest.importorskip("keras")
    from keras_vessel.models import build_inference_model, build_model

    keras.utils.set_random_seed(0)
    return build_inference_model(build_model("unet", base_filters=4, depth=2))


@pytest.fixture(scope="module")
def drive_image(drive_root):
    from keras_vessel.data.preprocessing import read_image, read_mask

    image = read_image(drive_root / "test" / "images" / "01_test.tif")
    fov = read_mask(drive_root / "test" / "mask" / "01_test_mask.gif")
    return image, fov


def _rng_image(shape=(75, 130, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_tile_starts_cover_and_stay_on_grid():
    for length, tile, step in [(584, 128, 64), (608, 256, 192), (64, 128, 64), (96, 96, 32)]:
        starts = inference.tile_starts(length, tile, step)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + tile] = True
            assert s % 16 == 0 or s == length - tile
        assert covered.all() and starts[0] == 0 and starts[-1] + min(tile, length) == length


@pytest.mark.parametrize("tile,overlap", [(32, 16), (48, 0), (64, 40)])
def test_pointwise_model_tiled_equals_whole_exactly(tile, overlap):
    image = _rng_image()
    model = PointwiseModel()
    whole = inference.predict_probability(model, image, stride=8)
    assert model.calls == [(1, 80, 136, 3)]  # one call, padded to the stride
    tiled = inference.predict_probability(
        model, image, stride=8, tile_size=tile, overlap=overlap, batch_size=3
    )
    assert len(model.calls) > 2 and all(c[0] <= 3 for c in model.calls[1:])
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
    np.testing.assert_allclose(whole, image.mean(-1) / 255.0, atol=1e-6)


def test_large_images_are_tiled_automatically():
    image = _rng_image((600, 700, 3))
    model = PointwiseModel()
    prob = inference.predict_probability(model, image, stride=4, max_whole_pixels=100_000)
    assert len(model.calls) == 2 and all(c == (2, 512, 512, 3) for c in model.calls)  # 4 tiles
    np.testing.assert_allclose(prob, image.mean(-1) / 255.0, atol=1e-6)
    model.calls.clear()
    inference.predict_probability(model, image, stride=4)  # 600 x 700 fits in one piece
    assert model.calls == [(1, 600, 700, 3)]


def test_fov_zeroes_outside_and_input_not_modified():
    image = _rng_image()
    before = image.copy()
    fov = np.zeros(image.shape[:2], bool)
    fov[10:60, 20:100] = True
    prob = inference.predict_probability(PointwiseModel(), image, fov=fov, stride=8)
    assert prob.dtype == np.float32 and prob.shape == image.shape[:2]
    assert np.all(prob[~fov] == 0) and np.all(prob[fov] > 0)
    np.testing.assert_array_equal(image, before)


def test_grey_and_rgba_inputs_are_accepted():
    image = _rng_image()
    grey = image[..., 1]
    rgba = np.dstack([image, np.full(image.shape[:2], 7, np.uint8)])
    model = PointwiseModel()
    np.testing.assert_allclose(
        inference.predict_probability(model, grey, stride=8), grey / 255.0, atol=1e-6
    )
    np.testing.assert_allclose(
        inference.predict_probability(model, rgba, stride=8),
        inference.predict_probability(model, image, stride=8),
    )


def test_bad_arguments_are_rejected():
    image = _rng_image()
    model = PointwiseModel()
    with pytest.raises(ValueError, match=r"`fov` must have the image's shape \(75, 130\)"):
        inference.predict_probability(model, image, fov=np.ones((10, 10), bool), stride=8)
    with pytest.raises(ValueError, match="`image` must be"):
        inference.predict_probability(model, np.zeros((4, 4, 5)), stride=8)
    with pytest.raises(ValueError, match="`overlap` must be an int >= 0"):
        inference.predict_probability(model, image, stride=8, overlap=-1)
    with pytest.raises(ValueError, match="`tile_size` must be a positive int"):
        inference.predict_probability(model, image, stride=8, tile_size=0)
    with pytest.raises(ValueError, match=r"`tta` must be one of \['none', 'flip', 'd4'\]; got 'rot'"):
        inference.predict_probability(model, image, stride=8, tta="rot")


@pytest.mark.parametrize("good", [None, 1, 256, np.int64(64)])
def test_check_tile_size_accepts_none_and_positive_ints(good):
    assert inference.check_tile_size(good) is good


@pytest.mark.parametrize("bad", [0, -8, True, 64.0, "64", np.float32(64)])
def test_check_tile_size_rejects_everything_else(bad):
    with pytest.raises(ValueError, match=r"`tile_size` must be a positive int or None; got"):
        inference.check_tile_size(bad)


def test_model_with_wrong_output_is_reported():
    def bad_model(batch, training=False):
        return np.zeros(batch.shape[:3] + (2,), np.float32)

    with pytest.raises(ValueError, match="build_inference_model"):
        inference.predict_probability(bad_model, _rng_image(), stride=8)


def test_reflect_padding_matches_manual_padding(small_unet):
    image = _rng_image((70, 90, 3))  # stride 4 -> padded to 72 x 92
    prob = inference.predict_probability(small_unet, image)
    padded = np.pad(image.astype(np.float32), ((0, 2), (0, 2), (0, 0)), mode="reflect")
    expected = np.asarray(small_unet(padded[None]))[0, :70, :90, 0]
    np.testing.assert_allclose(prob, expected, atol=1e-6)
    assert 0.0 <= prob.min() and prob.max() <= 1.0


def test_pointwise_model_is_unchanged_by_tta():
    # a per-pixel model commutes with flips and turns, so every view predicts the same map
    image = _rng_image((37, 53, 3))
    plain = inference.predict_probability(PointwiseModel(), image, stride=8)
    model = PointwiseModel()
    d4 = inference.predict_probability(model, image, stride=8, tta="d4")
    np.testing.assert_allclose(d4, plain, atol=1e-6)
    assert len(model.calls) == 8 and {shape[1:3] for shape in model.calls} == {(40, 56), (56, 40)}


@pytest.mark.parametrize("tta", ["flip", "d4"])
def test_tta_is_the_mean_over_transformed_images(small_unet, tta):
    image = _rng_image((70, 90, 3))
    views = [(0, False), (0, True)] if tta == "flip" else [(k, f) for k in range(4) for f in (False, True)]
    expected = []  # oracle: transform the image, predict without TTA, transform back
    for turns, flip in views:
        view = np.rot90(image, turns)
        view = np.ascontiguousarray(view[:, ::-1] if flip else view)
        prob = inference.predict_probability(small_unet, view)
        expected.append(np.rot90(prob[:, ::-1] if flip else prob, -turns))
    got = inference.predict_probability(small_unet, image, tta=tta)
    np.testing.assert_allclose(got, np.mean(expected, axis=0), atol=1e-6)
    assert not np.allclose(got, inference.predict_probability(small_unet, image), atol=1e-4)


def test_unet_tiled_equals_whole_on_drive(small_unet, drive_image):
    image, fov = drive_image
    whole = inference.predict_probability(small_unet, image, fov=fov)
    tiled = inference.predict_probability(small_unet, image, fov=fov, tile_size=256, overlap=64)
    assert whole.shape == image.shape[:2]
    assert whole[fov].std() > 1e-3  # the untrained net's output does vary
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


@pytest.mark.slow
def test_hrf_sized_image_stays_under_4_gb(tmp_path):
    """Tiled prediction of a 3504x2336 image in a fresh process: peak RSS < 4 GiB."""
    script = textwrap.dedent(
        """
        import resource
        import numpy as np, keras
        from keras_vessel.models import build_model, build_inference_model
        from keras_vessel.models.inference import predict_probability
        keras.utils.set_random_seed(0)
        model = build_inference_model(build_model("unet", base_filters=8, depth=4))
        image = np.random.default_rng(0).integers(0, 256, (2336, 3504, 3), dtype=np.uint8)
        prob = predict_probability(model, image)
        assert prob.shape == (2336, 3504) and prob.dtype == np.float32
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    peak_kib = int(result.stdout.strip().splitlines()[-1])
    assert peak_kib < 4 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
