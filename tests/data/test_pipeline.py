"""The tf.data input pipeline: shapes, value ranges, augmentation invariants, determinism."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vessel.config import AugmentConfig
from keras_vessel.data.pipeline import get_dataset, split_names
from keras_vessel.data.tfrecords import PrepareError


@pytest.fixture(scope="module")
def records(synthetic_records):
    return synthetic_records(count=4, size=128, seed=1)


def take(dataset, count):
    return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch, _ in zip(dataset, range(count))]


def test_element_spec_and_value_ranges(records):
    dataset = get_dataset(records, patch_size=32, batch_size=4, seed=0)
    images, targets = dataset.element_spec
    assert images.shape == (4, 32, 32, 3) and images.dtype == tf.float32
    assert set(targets) == {"segment", "pixel"}
    assert targets["pixel"].shape == (4, 32, 32, 5)
    for images, targets in take(dataset, 5):
        assert images.min() >= 0 and images.max() <= 255
        target = targets["pixel"]
        np.testing.assert_array_equal(target, targets["segment"])
        assert set(np.unique(target[..., 0])) <= {0.0, 1.0}
        assert set(np.unique(target[..., 1])) <= {0.0, 1.0}
        assert set(np.unique(target[..., 3])) <= {0.0, 1.0}
        ids = target[..., 2]
        np.testing.assert_array_equal(ids, np.round(ids))  # never interpolated
        np.testing.assert_array_equal(target[..., 4], 1.0)  # each image at its own scale: not resampled
        # every kept patch lies at least half inside the FOV
        assert (target[..., 1].mean(axis=(1, 2)) >= 0.5).all()
        # labels only inside the valid FOV, ids only inside the FOV
        assert not (target[..., 0] * (1 - target[..., 1])).any()
        assert not (ids * (1 - target[..., 1])).any()


def test_seeded_pipeline_is_deterministic_and_seed_matters(records):
    first = take(get_dataset(records, patch_size=32, batch_size=4, seed=3), 3)
    again = take(get_dataset(records, patch_size=32, batch_size=4, seed=3), 3)
    other = take(get_dataset(records, patch_size=32, batch_size=4, seed=4), 3)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1]["pixel"], b[1]["pixel"])
    assert not np.array_equal(first[0][0], other[0][0])


def test_geometry_moves_every_channel_together(records):
    """With only geometric augmentation, each patch must be a flipped/turned crop of an image."""
    augment = AugmentConfig(noise_probability=0, clahe_probability=0, contrast_stretch_probability=0)
    plain = AugmentConfig(flips=False, rot90=False, noise_probability=0, clahe_probability=0,
                          contrast_stretch_probability=0)
    (images, targets), = take(get_dataset(records, patch_size=16, batch_size=64, augment=augment, seed=2), 1)
    (images0, targets0), = take(get_dataset(records, patch_size=16, batch_size=64, augment=plain, seed=2), 1)
    seen = set()
    for k in range(len(images)):
        stacked = np.concatenate([images[k], targets["pixel"][k]], axis=-1)
        original = np.concatenate([images0[k], targets0["pixel"][k]], axis=-1)
        variants = [np.rot90(flipped, turns) for flipped in (original, original[:, ::-1]) for turns in range(4)]
        matches = [i for i, variant in enumerate(variants) if np.array_equal(stacked, variant)]
        assert matches, f"patch {k} is no flip/rotation of its crop"
        seen.add(matches[0])
    assert len(seen) >= 3  # the 8 transforms are really drawn


def test_intensity_augmentations_keep_targets_and_change_images(records):
    noisy = AugmentConfig(flips=False, rot90=False, noise_probability=1.0, clahe_probability=0,
                          contrast_stretch_probability=0)
    plain = AugmentConfig(flips=False, rot90=False, noise_probability=0, clahe_probability=0,
                          contrast_stretch_probability=0)
    (images, targets), = take(get_dataset(records, patch_size=32, batch_size=8, augment=noisy, seed=9), 1)
    (images0, targets0), = take(get_dataset(records, patch_size=32, batch_size=8, augment=plain, seed=9), 1)
    np.testing.assert_array_equal(targets["pixel"], targets0["pixel"])
    difference = (images - images0)[images0 > 30]
    assert 4 < difference.std() < 12  # variance 0.001 on [0, 1] is a std of about 8 on 0-255


def test_validation_grid_is_finite_and_covers_the_held_out_images(records):
    train, held_out = split_names(records, 1)
    assert held_out == ["synthetic_0003"] and len(train) == 3
    batches = list(get_dataset(records, patch_size=32, batch_size=5, training=False, names=held_out))
    count = sum(images.shape[0] for images, _ in batches)
    assert 1 <= count <= 16  # a 128x128 image holds 16 patches of 32x32, those half in the FOV kept


@pytest.mark.parametrize("folds", [2, 3, 4])
def test_folds_hold_out_what_scikit_learn_kfold_holds_out_and_every_image_once(records, folds):
    from sklearn.model_selection import KFold

    names = sorted(split_names(records, 0)[0])
    held_out_once = []
    for fold, (train_index, test_index) in enumerate(KFold(n_splits=folds).split(names)):
        train, held_out = split_names(records, 2, folds=folds, fold=fold)
        assert train == [names[i] for i in train_index] and held_out == [names[i] for i in test_index]
        held_out_once += held_out
    assert sorted(held_out_once) == names


def test_pixel_only_outputs_and_keeping_pixels_outside_the_fov(records):
    dataset = get_dataset(records, patch_size=32, batch_size=2, outputs=("pixel",), ignore_outside_fov=False)
    (_, targets), = take(dataset, 1)
    assert set(targets) == {"pixel"}
    assert (targets["pixel"][..., 1] == 1).all()


def test_input_context_gives_the_per_replica_batch(records):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    dataset = get_dataset(records, patch_size=32, batch_size=8, input_context=context)
    assert dataset.element_spec[0].shape[0] == 4


def test_bad_arguments(records):
    with pytest.raises(ValueError, match="patch_size must be at least 8, got 4"):
        get_dataset(records, patch_size=4)
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        get_dataset(records, batch_size=0)
    with pytest.raises(PrepareError, match="validation_images must be between 0 and 3"):
        split_names(records, 4)
    with pytest.raises(PrepareError, match="data.folds must be 0 \\(off\\) or between 2 and 4 .* got 5"):
        split_names(records, 2, folds=5)
    with pytest.raises(PrepareError, match="data.fold must be between 0 and 2 \\(data.folds=3\\), got 3"):
        split_names(records, 2, folds=3, fold=3)
