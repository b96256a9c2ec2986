"""Tests for the synthetic fundus generator: determinism, exact ground truth, realism cues."""

import pickle

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import skeletonize

from keras_vessel.data.datasets import DatasetError, Sample, SyntheticTruth, generate_sample, open_dataset
from keras_vessel.data.datasets.synthetic import MAX_WIDTH

SIZE = 128


@pytest.fixture(scope="module")
def pairs() -> list[tuple[Sample, SyntheticTruth]]:
    return [generate_sample(i, size=SIZE, seed=3, return_widths=True) for i in range(4)]


def test_deterministic_for_a_seed():
    first = generate_sample(2, size=SIZE, seed=7)
    second = generate_sample(2, size=SIZE, seed=7)
    assert first.name == second.name == "synthetic_0002"
    for a, b in zip((first.image, first.label, first.fov), (second.image, second.label, second.fov)):
        np.testing.assert_array_equal(a, b)


def test_different_seeds_and_indices_differ():
    base = generate_sample(0, size=SIZE, seed=0)
    for other in (generate_sample(0, size=SIZE, seed=1), generate_sample(1, size=SIZE, seed=0)):
        assert (base.label != other.label).mean() > 0.02
        assert np.abs(base.image.astype(int) - other.image).mean() > 5


def test_sample_contract(pairs):
    for sample, truth in pairs:
        assert sample.image.shape == (SIZE, SIZE, 3) and sample.image.dtype == np.uint8
        assert sample.label.dtype == bool and sample.fov.dtype == bool
        assert sample.second_label is None
        assert not (sample.label & ~sample.fov).any()  # label empty outside the FOV
        assert 0.02 < sample.label[sample.fov].mean() < 0.4  # widths are in px: denser at small sizes
        assert truth.width_map.dtype == np.float32 and truth.centreline.dtype == bool


def test_fov_is_a_central_disc(pairs):
    for sample, _ in pairs:
        fov = sample.fov
        # NumPy oracle: the disc with the FOV's centroid and area differs only on the rim.
        rows, cols = np.nonzero(fov)
        radius = np.sqrt(fov.sum() / np.pi)
        grid_rows, grid_cols = np.mgrid[0:SIZE, 0:SIZE]
        disc = np.hypot(grid_rows - rows.mean(), grid_cols - cols.mean()) <= radius
        assert (disc != fov).sum() < 2 * np.pi * radius * 0.5
        np.testing.assert_array_equal(fov, ndimage.binary_fill_holes(fov))
        assert 0.55 < fov.mean() < 0.75  # radius ~0.45 size: pi * 0.45**2 = 0.64
        assert fov[SIZE // 2, SIZE // 2] and not fov[0, 0] and not fov[-1, -1]


def test_label_is_exactly_the_support_of_the_width_map(pairs):
    for sample, truth in pairs:
        np.testing.assert_array_equal(sample.label, truth.width_map > 0)
        assert set(np.unique(truth.width_map)) <= set(range(MAX_WIDTH + 1))


def test_widths_span_1_to_8_and_match_a_distance_transform(pairs):
    # Independent oracle: at a centreline pixel, twice the Euclidean distance to the
    # background (max over its 3x3 neighbourhood, to undo rounding) minus 1 is the width.
    measured: dict[int, list[float]] = {w: [] for w in range(1, MAX_WIDTH + 1)}
    for sample, truth in pairs:
        distance = ndimage.maximum_filter(ndimage.distance_transform_edt(sample.label), size=3)
        for width in measured:
            on = truth.centreline & (truth.width_map == width)
            measured[width].extend((2 * distance[on] - 1).tolist())
    means = {}
    for width, values in measured.items():
        assert len(values) > 10, f"width {width} px barely drawn"
        means[width] = float(np.mean(values))
        assert abs(means[width] - width) < 0.8, (width, means[width])
    assert all(means[w + 1] > means[w] for w in range(1, MAX_WIDTH))


def test_centreline_is_thin_inside_the_label_and_connected(pairs):
    for sample, truth in pairs:
        centreline = truth.centreline
        assert not (centreline & ~sample.label).any()
        np.testing.assert_array_equal(skeletonize(centreline), centreline)
        # Every vessel component holds a piece of centreline, and vice versa.
        components, count = ndimage.label(sample.label, structure=np.ones((3, 3)))
        assert set(np.unique(components[centreline])) == set(range(1, count + 1))
        # Each vessel tree's centreline is one piece (the FOV edge may cut a few tips off).
        _, pieces = ndimage.label(centreline, structure=np.ones((3, 3)))
        assert pieces <= count + 2


def test_vessels_thin_out_away_from_the_root(pairs):
    # Thick vessels start at the optic disc: the widest pixels sit closer to the disc
    # (the brightest spot) than the 1-px ones.
    for sample, truth in pairs:
        luminance = ndimage.gaussian_filter(sample.image.astype(float).mean(axis=2), 4)
        disc = np.array(np.unravel_index(np.argmax(luminance), luminance.shape))
        rows, cols = np.nonzero(truth.width_map >= 6)
        thick = np.hypot(rows - disc[0], cols - disc[1]).mean()
        rows, cols = np.nonzero(truth.width_map == 1)
        thin = np.hypot(rows - disc[0], cols - disc[1]).mean()
        assert thick < 0.7 * thin


def test_image_looks_like_a_fundus(pairs):
    for sample, truth in pairs:
        image = sample.image.astype(float)
        assert image[~sample.fov].mean() < 15  # dark surround
        inside = image[sample.fov & ~sample.label]
        red, green, blue = inside.mean(axis=0)
        assert red > green > blue  # orange-red fundus
        # Vessels are darker than nearby background, most in the green channel ...
        near = ndimage.binary_dilation(sample.label, iterations=3) & ~sample.label & sample.fov
        drop = image[near].mean(axis=0) - image[sample.label].mean(axis=0)
        assert drop[1] > 15 and drop[1] > drop[0]
        # ... and thick vessels darker than thin ones.
        green = image[..., 1]
        assert green[truth.width_map >= 6].mean() < green[truth.width_map == 1].mean()


def test_noise_is_present():
    sample = generate_sample(0, size=SIZE)
    flat = sample.image[:8, :8, 1].astype(float)  # outside the FOV: only noise
    assert flat.std() > 0.5


def test_default_size_is_256():
    sample, truth = generate_sample(5, return_widths=True)
    assert sample.image.shape == (256, 256, 3) and truth.width_map.shape == (256, 256)
    assert set(np.unique(truth.width_map)) == set(range(MAX_WIDTH + 1))


def test_outputs_are_fresh_writable_arrays():
    sample = generate_sample(0, size=SIZE)
    sample.label[:] = False
    assert generate_sample(0, size=SIZE).label.any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"index": -1}, r"synthetic `index` must be an int >= 0, got -1"),
        ({"size": 32}, r"synthetic `size` must be an int >= 64, got 32"),
        ({"seed": 1.5}, r"synthetic `seed` must be an int >= 0, got 1\.5"),
    ],
)
def test_generate_sample_rejects_bad_arguments(kwargs, match):
    arguments = {"index": 0, "size": SIZE, "seed": 0} | kwargs
    index = arguments.pop("index")
    with pytest.raises(DatasetError, match=match):
        generate_sample(index, **arguments)


def test_open_dataset_splits_and_options():
    training = open_dataset("synthetic", None, "training")
    test = open_dataset("synthetic", None, "test")
    assert [s.name for s in training] == [f"synthetic_{i:04d}" for i in range(20)]
    assert [s.name for s in test] == [f"synthetic_{i:04d}" for i in range(20, 28)]
    small = open_dataset("synthetic", "/ignored", "all", count=2, test_count=1, size=64, seed=4)
    assert [s.name for s in small] == ["synthetic_0000", "synthetic_0001", "synthetic_0002"]
    loaded = pickle.loads(pickle.dumps(small[2])).load()
    reference = generate_sample(2, size=64, seed=4)
    np.testing.assert_array_equal(loaded.image, reference.image)
    np.testing.assert_array_equal(loaded.label, reference.label)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"count": 0}, r"option count for dataset 'synthetic' must be an int >= 1, got 0"),
        ({"test_count": -1}, r"option test_count .* must be an int >= 0, got -1"),
        ({"size": 10}, r"synthetic `size` must be an int >= 64, got 10"),
        ({"colour": "red"}, r"unknown option\(s\) colour for dataset 'synthetic'; valid options: count, test_count, size, seed"),
    ],
)
def test_open_dataset_rejects_bad_options(options, match):
    with pytest.raises(DatasetError, match=match):
        open_dataset("synthetic", None, **options)
