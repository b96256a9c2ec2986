"""keras_vessel.losses.thinning.thin must equal skimage.morphology.thin pixel for pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import tensorflow as tf
from PIL import Image
from skimage.morphology import disk
from skimage.morphology import thin as sk_thin

from keras_vessel.losses.thinning import default_max_iterations, guo_hall_luts, thin, thin_with_iterations


def reference(batch: np.ndarray, max_num_iter: int | None = None) -> np.ndarray:
    return np.stack([sk_thin(image, max_num_iter=max_num_iter) for image in batch])


def blobs(seed: int, shape: tuple[int, int], count: int = 4) -> np.ndarray:
    """Smooth random blobs of random widths, thresholded so they touch the border."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(count):
        field = ndi.gaussian_filter(rng.random(shape), sigma=rng.uniform(0.7, 4.0), mode="wrap")
        maps.append(field > np.quantile(field, rng.uniform(0.3, 0.8)))
    return np.stack(maps)


def drive_labels(drive_root: Path, count: int | None = None) -> list[np.ndarray]:
    files = sorted((drive_root / "training" / "1st_manual").glob("*_manual1.gif"))
    assert files, f"no *_manual1.gif under {drive_root / 'training' / '1st_manual'}"
    return [np.asarray(Image.open(path)) > 0 for path in files[:count]]


def test_luts_equal_scikit_image_tables():
    from skimage.morphology._skeletonize import G123_LUT, G123P_LUT

    first, second = guo_hall_luts()
    np.testing.assert_array_equal(first, G123_LUT.astype(bool))
    np.testing.assert_array_equal(second, G123P_LUT.astype(bool))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(64, 64), (17, 33), (40, 9), (3, 3), (1, 12)])
def test_random_blobs_equal_skimage(seed, shape):
    batch = blobs(seed, shape)
    assert batch[:, 0].any() or batch[:, -1].any(), "fixture should touch the border"
    np.testing.assert_array_equal(thin(batch).numpy(), reference(batch))


def test_salt_and_pepper_and_checkerboard_equal_skimage():
    rng = np.random.default_rng(5)
    noise = rng.random((3, 48, 48)) < np.array([0.2, 0.5, 0.8])[:, None, None]
    checker = (np.indices((48, 48)).sum(0) % 2 == 0)[None]
    batch = np.concatenate([noise, checker, np.zeros((1, 48, 48), bool), np.ones((1, 48, 48), bool)])
    np.testing.assert_array_equal(thin(batch).numpy(), reference(batch))


@pytest.mark.parametrize(
    ("dtype", "channel"), [(np.bool_, False), (np.float32, True), (np.uint8, False), (np.int32, True)]
)
def test_shape_and_dtype_are_kept(dtype, channel):
    batch = blobs(7, (32, 24), count=2)
    given = batch.astype(dtype)
    if dtype in (np.uint8, np.int32):
        given = given * dtype(3)  # any nonzero value is foreground
    if channel:
        given = given[..., None]
    before = given.copy()
    out = thin(given)
    assert out.shape == given.shape
    assert out.dtype == tf.as_dtype(dtype)
    got = out.numpy()[..., 0] if channel else out.numpy()
    np.testing.assert_array_equal(got.astype(bool), reference(batch))
    np.testing.assert_array_equal(given, before)  # input not modified


def test_runs_in_tf_function_with_unknown_shape():
    batch = blobs(11, (50, 70), count=3)
    traced = tf.function(thin, input_signature=[tf.TensorSpec([None, None, None], tf.bool)])
    np.testing.assert_array_equal(traced(batch).numpy(), reference(batch))
    other = blobs(12, (20, 90), count=2)  # same trace, other shape
    np.testing.assert_array_equal(traced(other).numpy(), reference(other))


def test_saved_model_round_trip(tmp_path):
    module = tf.Module()
    module.thin = tf.function(
        lambda x: thin(x), input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)]
    )
    tf.saved_model.save(module, str(tmp_path / "thin"))
    loaded = tf.saved_model.load(str(tmp_path / "thin"))
    batch = blobs(3, (40, 40), count=2)
    got = loaded.thin(tf.constant(batch[..., None], tf.float32)).numpy()[..., 0] > 0
    np.testing.assert_array_equal(got, reference(batch))


def test_graph_has_no_python_ops():
    graph = tf.function(thin).get_concrete_function(tf.TensorSpec([2, 32, 32], tf.bool)).graph
    ops = {node.op for node in graph.as_graph_def().node}
    for function in graph.as_graph_def().library.function:
        ops |= {node.op for node in function.node_def}
    assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless", "NumpyFunction"}
    assert "While" in ops or "StatelessWhile" in ops


@pytest.mark.data
def test_drive_labels_tiles_and_whole_images_equal_skimage(drive_root):
    labels = drive_labels(drive_root)
    tiles = np.stack(
        [
            label[y : y + 128, x : x + 128]
            for label in labels[:4]
            for y in range(0, label.shape[0] - 127, 128)
            for x in range(0, label.shape[1] - 127, 128)
        ]
    )
    np.testing.assert_array_equal(thin(tiles).numpy(), reference(tiles))
    whole = np.stack(labels[:3])
    skeleton, iterations, converged = thin_with_iterations(whole)
    np.testing.assert_array_equal(skeleton.numpy(), reference(whole))
    assert bool(converged) and int(iterations) < default_max_iterations(*whole.shape[1:])


def test_default_cap_covers_full_map_and_large_disc():
    full = np.ones((1, 64, 64), bool)
    disc = np.pad(disk(29).astype(bool), 3)[None]  # 65x65, radius 29
    for batch in (full, disc):
        skeleton, iterations, converged = thin_with_iterations(batch)
        np.testing.assert_array_equal(skeleton.numpy(), reference(batch))
        assert bool(converged)
        assert int(iterations) <= default_max_iterations(*batch.shape[1:])
    assert default_max_iterations(64, 64) == 36
    assert default_max_iterations(128, 96) == 52


def test_cap_reached_returns_partial_result_without_hanging():
    huge = np.ones((2, 128, 128), bool)
    huge[1, 10:120, 5:125] = False
    huge[1, 30:100, 20:110] = True
    skeleton, iterations, converged = thin_with_iterations(huge, max_iterations=5)
    assert int(iterations) == 5
    assert not bool(converged)
    partial = skeleton.numpy()
    np.testing.assert_array_equal(partial, reference(huge, max_num_iter=5))
    assert not np.array_equal(partial, reference(huge))  # really partial
    assert partial.sum() < huge.sum()


@pytest.mark.parametrize("cap", [1, 2, 3, 4, 6])
def test_every_partial_thinning_equals_skimage(cap):
    """Each intermediate state matches: a strict check of skipping the rows that cannot change."""
    batch = np.concatenate([blobs(31, (45, 60), count=3), np.ones((1, 45, 60), bool)])
    np.testing.assert_array_equal(thin(batch, max_iterations=cap).numpy(), reference(batch, max_num_iter=cap))


def test_converged_count_matches_scikit_image_iterations():
    batch = blobs(21, (48, 48), count=1)
    _, iterations, converged = thin_with_iterations(batch)
    n = int(iterations)  # includes the last pass that deleted nothing
    assert bool(converged)
    np.testing.assert_array_equal(reference(batch, max_num_iter=n - 1), reference(batch))
    assert not np.array_equal(reference(batch, max_num_iter=n - 2), reference(batch))


@pytest.mark.parametrize(
    ("kwargs", "shape", "error", "match"),
    [
        ({}, (8, 8), ValueError, r"`binary` must have shape \(B, H, W\)"),
        ({}, (1, 8, 8, 3), ValueError, r"one channel .* got shape \(1, 8, 8, 3\)"),
        ({"max_iterations": 0}, (1, 8, 8), ValueError, r"`max_iterations` must be >= 1, got 0"),
        ({"max_iterations": 2.5}, (1, 8, 8), TypeError, r"`max_iterations` must be a positive int .* float"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, shape, error, match):
    with pytest.raises(error, match=match):
        thin(np.zeros(shape, bool), **kwargs)
