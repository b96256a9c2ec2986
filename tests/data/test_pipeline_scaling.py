"""The pipeline at a target FOV diameter: patch scale, length_scale, validation grid, jitter, camera augmentation."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from keras_vessel.config import AugmentConfig
from keras_vessel.data.pipeline import camera_augment, gaussian_blur, get_dataset, shrink_for_visits
from keras_vessel.data.scaling import resize_to
from keras_vessel.data.tfrecords import read_manifest, read_records

PATCH = 32
# no intensity variant, no flips: a patch is the plain (resampled) crop of the image
PLAIN = AugmentConfig(flips=False, rot90=False, noise_probability=0, clahe_probability=0,
                      contrast_stretch_probability=0)


@pytest.fixture(scope="module")
def records(synthetic_records):
    return synthetic_records(count=2, size=96, seed=1)


@pytest.fixture(scope="module")
def prepared(records):
    """name -> (fov_diameter from the manifest, the record's image and ID mask as NumPy)."""
    diameters = {image["name"]: image["fov_diameter"] for image in read_manifest(records)["images"]}
    out = {}
    for record in read_records(records):
        name = record["name"].numpy().decode()
        out[name] = (diameters[name], record["image"].numpy().astype(np.float32), record["id_mask"].numpy())
    return out


def take(dataset, count):
    return [(images.numpy(), targets["pixel"].numpy()) for (images, targets), _ in zip(dataset, range(count))]


def crop_for(factor: float) -> int:
    """The source crop the pipeline resamples to PATCH px at `factor`: round(PATCH / factor), at least 8."""
    return max(int(np.round(PATCH / np.float32(factor))), 8)


# ----------------------------------------------------------------- training patches


@pytest.mark.parametrize("target", [60.0, 150.0])  # shrink (about 0.67x) and enlarge (about 1.7x)
def test_patches_at_a_fov_diameter_carry_their_length_scale(records, prepared, target):
    name = "synthetic_0000"
    diameter, _, id_mask = prepared[name]
    dataset = get_dataset(records, patch_size=PATCH, batch_size=16, names=[name], fov_diameter=target, seed=1)
    batches = take(dataset, 3)
    factor = target / diameter
    crop = crop_for(factor)
    for images, targets in batches:
        assert images.shape == (16, PATCH, PATCH, 3) and targets.shape == (16, PATCH, PATCH, 5)
        assert images.min() >= 0 and images.max() <= 255
        scales = targets[..., 4]
        # constant per patch, the requested factor up to the rounding of the crop to whole pixels
        np.testing.assert_allclose(scales, PATCH / crop, rtol=1e-6)
        assert abs(scales[0, 0, 0] - factor) <= factor * 0.5 / crop + 1e-6
        for channel in (0, 1, 3):  # label, valid, tube
            assert set(np.unique(targets[..., channel])) <= {0.0, 1.0}
        ids = targets[..., 2]
        np.testing.assert_array_equal(ids, np.round(ids))
        assert set(np.unique(ids).astype(int)) <= set(np.unique(id_mask))  # moved, never interpolated
        assert (targets[..., 1].mean(axis=(1, 2)) >= 0.5).all()


def test_a_resampled_patch_is_a_resized_crop_of_the_requested_size(records, prepared):
    """Each image patch is resize_to of some crop of round(PATCH / factor) source pixels, and no other size."""
    name = "synthetic_0001"
    diameter, image, _ = prepared[name]
    target = 55.0
    crop = crop_for(target / diameter)
    (images, _), = take(get_dataset(records, patch_size=PATCH, batch_size=8, names=[name], fov_diameter=target,
                                    augment=PLAIN, seed=5), 1)

    def best_match(size: int) -> np.ndarray:
        tops = np.arange(image.shape[0] - size + 1)
        lefts = np.arange(image.shape[1] - size + 1)
        crops = np.stack([image[t:t + size, l:l + size] for t in tops for l in lefts])
        candidates = resize_to(crops, [PATCH, PATCH]).numpy()
        return np.array([np.abs(candidates - patch).max(axis=(1, 2, 3)).min() for patch in images])

    assert best_match(crop).max() < 1e-3
    assert best_match(crop + 3).min() > 1.0


def test_length_scale_is_one_at_each_images_own_scale(records):
    (_, targets), = take(get_dataset(records, patch_size=PATCH, batch_size=16, seed=0), 1)
    np.testing.assert_array_equal(targets[..., 4], 1.0)


def test_scale_jitter_zero_keeps_one_factor_and_jitter_spreads_it(records, prepared):
    name = "synthetic_0000"
    diameter = prepared[name][0]
    target, jitter = 120.0, 0.3
    factor = target / diameter

    def scales(amount: float) -> np.ndarray:
        dataset = get_dataset(records, patch_size=PATCH, batch_size=32, names=[name], fov_diameter=target,
                              scale_jitter=amount, augment=PLAIN, seed=2)
        return np.concatenate([targets[:, 0, 0, 4] for _, targets in take(dataset, 6)])

    fixed = scales(0.0)
    np.testing.assert_allclose(fixed, PATCH / crop_for(factor), rtol=1e-6)
    jittered = scales(jitter)
    assert len(np.unique(jittered)) >= 3  # one factor per visit, several visits
    # every factor is PATCH / crop for a crop of round(PATCH / (factor * j)), j in [1 / (1 + jitter), 1 + jitter]
    lowest, highest = PATCH / crop_for(factor / (1 + jitter)), PATCH / crop_for(factor * (1 + jitter))
    assert jittered.min() >= lowest - 1e-6 and jittered.max() <= highest + 1e-6
    assert np.isin(np.round(PATCH / jittered), np.arange(crop_for(factor * (1 + jitter)),
                                                        crop_for(factor / (1 + jitter)) + 1)).all()


def test_shrink_for_visits_is_a_block_average_with_binary_cuts_and_moved_ids():
    """NumPy oracle: b = floor(1 / largest factor); means of b x b blocks; label/FOV/tube cut at one half;
    ids the top-left pixel of each block; the remainder rows and columns dropped; b < 2 changes nothing."""
    rng = np.random.default_rng(0)
    height, width = 37, 50
    stacked = np.concatenate([rng.uniform(0, 255, (height, width, 6)), rng.integers(0, 2, (height, width, 3)),
                              rng.integers(-5, 40, (height, width, 1))], axis=-1).astype(np.float32)
    shrunk, block = shrink_for_visits(tf.constant(stacked), tf.constant(0.3))
    assert float(block) == 3.0
    blocks = stacked[:36, :48].reshape(12, 3, 16, 3, 10).mean(axis=(1, 3))
    np.testing.assert_allclose(shrunk.numpy()[..., :6], blocks[..., :6], rtol=1e-5)
    np.testing.assert_array_equal(shrunk.numpy()[..., 6:9], (blocks[..., 6:9] >= 0.5).astype(np.float32))
    np.testing.assert_array_equal(shrunk.numpy()[..., 9], stacked[:36:3, :48:3, 9])
    same, one = shrink_for_visits(tf.constant(stacked), tf.constant(0.51))
    assert float(one) == 1.0
    np.testing.assert_array_equal(same.numpy(), stacked)


def test_a_far_shrunk_image_is_sampled_from_its_block_average_with_the_true_length_scale(records, prepared):
    """At a factor below one half the cached image is the block average (b = 2 here); each patch is a resized
    crop of it, and length_scale still says how much the *prepared* image was shrunk."""
    from keras_vessel.data.scaling import block_mean

    name = "synthetic_0001"
    diameter, image, id_mask = prepared[name]
    target = 0.42 * diameter
    block = math.floor(1 / (target / diameter))
    assert block == 2
    crop = crop_for(target / diameter * block)  # crops of the block-averaged grid
    dataset = get_dataset(records, patch_size=PATCH, batch_size=8, names=[name], fov_diameter=target,
                          augment=PLAIN, seed=3)
    (images, targets), = take(dataset, 1)
    np.testing.assert_allclose(targets[..., 4], PATCH / (crop * block), rtol=1e-6)
    assert abs(targets[0, 0, 0, 4] - target / diameter) <= (target / diameter) * 0.5 / crop + 1e-6
    assert set(np.unique(targets[..., 2]).astype(int)) <= set(np.unique(id_mask))
    small = block_mean(tf.constant(image), block).numpy()
    tops, lefts = np.arange(small.shape[0] - crop + 1), np.arange(small.shape[1] - crop + 1)
    crops = np.stack([small[t:t + crop, l:l + crop] for t in tops for l in lefts])
    candidates = resize_to(crops, [PATCH, PATCH]).numpy()
    assert max(np.abs(candidates - patch).max(axis=(1, 2, 3)).min() for patch in images) < 1e-3


# ----------------------------------------------------------------- validation grid


@pytest.mark.parametrize("target", [0.0, 60.0, 170.0])
def test_validation_resamples_the_whole_image(records, prepared, target):
    batches = list(get_dataset(records, patch_size=PATCH, batch_size=7, training=False, fov_diameter=target,
                               min_fov_fraction=0.0))
    images = np.concatenate([b.numpy() for b, _ in batches])
    targets = np.concatenate([t["pixel"].numpy() for _, t in batches])
    expected_count, expected_scales, offset = 0, [], 0
    for name in sorted(prepared):  # the records are written in name order
        diameter, image, _ = prepared[name]
        height, width = image.shape[:2]
        factor = target / diameter if target else 1.0
        new_h, new_w = (int(np.round(height * np.float32(factor))), int(np.round(width * np.float32(factor))))
        rows, cols = math.ceil(max(new_h, PATCH) / PATCH), math.ceil(max(new_w, PATCH) / PATCH)
        expected_count += rows * cols
        expected_scales += [new_h / height] * (rows * cols)
        # the grid tiles the image resized as a whole (not crops resized one by one)
        grid = images[offset:offset + rows * cols].reshape(rows, cols, PATCH, PATCH, 3)
        tiled = grid.transpose(0, 2, 1, 3, 4).reshape(rows * PATCH, cols * PATCH, 3)[:new_h, :new_w]
        reference = image if (new_h, new_w) == (height, width) else resize_to(image, [new_h, new_w]).numpy()
        np.testing.assert_allclose(tiled, reference, atol=1e-3)
        offset += rows * cols
    assert len(images) == expected_count
    np.testing.assert_allclose(targets[:, 0, 0, 4], expected_scales, rtol=1e-6)
    np.testing.assert_array_equal(targets[..., 4], targets[:, :1, :1, 4] * np.ones((1, PATCH, PATCH)))


# ----------------------------------------------------------------- camera augmentation


def test_camera_augmentation_off_leaves_the_pipeline_unchanged(records):
    off = AugmentConfig(brightness=0.0, contrast=0.0, gamma=0.0, colour_balance=0.0, blur_probability=0.0,
                        blur_sigma=3.0, jpeg_probability=0.0, jpeg_quality=50)
    default = take(get_dataset(records, patch_size=PATCH, batch_size=16, augment=AugmentConfig(), seed=4), 2)
    same = take(get_dataset(records, patch_size=PATCH, batch_size=16, augment=off, seed=4), 2)
    for (images, targets), (images0, targets0) in zip(same, default):
        np.testing.assert_array_equal(images, images0)
        np.testing.assert_array_equal(targets, targets0)
    patches = tf.random.stateless_uniform([2, 8, 8, 3], [1, 2], 0, 255)
    assert camera_augment(patches, tf.constant([3, 4]), off) is patches


def test_brightness_scales_each_patch_by_one_factor_within_the_range(records):
    amount = 0.3
    bright = AugmentConfig(flips=False, rot90=False, noise_probability=0, clahe_probability=0,
                           contrast_stretch_probability=0, brightness=amount)
    (images, targets), = take(get_dataset(records, patch_size=PATCH, batch_size=24, augment=bright, seed=6), 1)
    (plain, targets0), = take(get_dataset(records, patch_size=PATCH, batch_size=24, augment=PLAIN, seed=6), 1)
    np.testing.assert_array_equal(targets, targets0)
    ratios = []
    for patch, original in zip(images, plain):
        unclipped = (original > 20) & (original < 255 / (1 + amount) - 1)
        assert unclipped.sum() > 100
        ratio = patch[unclipped] / original[unclipped]
        assert ratio.max() - ratio.min() < 1e-4  # one factor for the whole patch, every channel
        ratios.append(ratio.mean())
        np.testing.assert_allclose(patch, np.minimum(original * ratio.mean(), 255.0), atol=1e-2)  # clipped at 255
    ratios = np.array(ratios)
    assert (ratios >= 1 - amount - 1e-6).all() and (ratios <= 1 + amount + 1e-6).all()
    assert ratios.std() > 0.05  # drawn per patch


@pytest.mark.parametrize(("sigma", "max_sigma"), [(0.8, 1.2), (1.2, 1.2), (1.0, 2.0)])
def test_gaussian_blur_matches_scipy(sigma, max_sigma):
    """The kernel reaches ceil(2.5 max_sigma) px; edges are mirrored without repeating the edge pixel.

    That is tf.pad's REFLECT, which is scipy's mode "mirror" (scipy's "reflect" repeats the edge pixel).
    """
    images = np.random.default_rng(0).uniform(0, 255, (2, 20, 23, 3)).astype(np.float32)
    radius = math.ceil(2.5 * max_sigma)
    got = gaussian_blur(tf.constant(images), tf.constant(sigma), max_sigma).numpy()
    expected = ndimage.gaussian_filter(images.astype(np.float64), (0, sigma, sigma, 0), mode="mirror",
                                       truncate=radius / sigma)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-3)
    # scipy's "reflect" differs at the frame only
    reflected = ndimage.gaussian_filter(images.astype(np.float64), (0, sigma, sigma, 0), mode="reflect",
                                        truncate=radius / sigma)
    inner = (slice(None), slice(radius, -radius), slice(radius, -radius))
    np.testing.assert_allclose(got[inner], reflected[inner], rtol=0, atol=2e-3)
    assert np.abs(got - reflected).max() > 1.0


# ----------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fov_diameter": -1.0},
         r"fov_diameter must be 0 \(each image at its own scale\) or a diameter in px, got -1\.0"),
        ({"fov_diameter": float("nan")}, r"fov_diameter must be 0 .* got nan"),
        ({"scale_jitter": 1.5}, r"scale_jitter must be between 0 and 1, got 1\.5"),
        ({"scale_jitter": -0.1}, r"scale_jitter must be between 0 and 1, got -0\.1"),
    ],
)
def test_bad_scale_arguments(records, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_dataset(records, **kwargs)
