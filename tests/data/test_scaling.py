"""keras_vessel.data.scaling: FOV mask, circle fit and diameter, scale factor, resampling, prediction region.

The oracles are written here in NumPy/SciPy: a least-squares circle through the
mask's row and column ends, the ``max(red, luminance) > max(15, 0.06 * p99)``
rule with NumPy's percentile, and `scipy.ndimage.binary_dilation`.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from keras_vessel.data.scaling import (
    FOV_DILATION,
    FUSION_MULTIPLES,
    MAX_DIAMETER,
    MAX_FACTOR,
    MIN_DIAMETER,
    MIN_FACTOR,
    SCALE_TOLERANCE,
    check_scale,
    enlarge_to,
    fit_fov_circle,
    fov_diameter,
    fov_mask,
    image_fov,
    mask_diameter,
    otsu_level,
    prediction_region,
    resample,
    resize_to,
    resamples_by_fov,
    scale_factor,
    scale_record,
    working_diameter,
    working_diameters,
)


# ----------------------------------------------------------------- drawing


def disc(height: int, width: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """(H, W) bool: pixel centres within `radius` of (cy, cx)."""
    yy, xx = np.mgrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius


def fundus(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """(H, W, 3) float32 0-255: an orange-red textured disc where `mask` is True, black elsewhere."""
    rng = np.random.default_rng(seed)
    image = np.zeros(mask.shape + (3,), np.float32)
    image[mask] = (170.0, 80.0, 30.0)
    image[mask] += rng.normal(0.0, 5.0, (int(mask.sum()), 3))
    return np.clip(image, 0.0, 255.0)


def soft_fundus(height: int, width: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """A disc with a one-pixel anti-aliased rim, as a camera's aperture looks (0-255 RGB)."""
    yy, xx = np.mgrid[:height, :width]
    coverage = np.clip(radius - np.hypot(yy - cy, xx - cx) + 0.5, 0.0, 1.0)
    return (coverage[..., None] * np.array([180.0, 90.0, 35.0])).astype(np.float32)


# ----------------------------------------------------------------- oracle


def boundary_points(mask: np.ndarray) -> np.ndarray:
    """(N, 2) x, y of the left/right end of every row and top/bottom end of every column, off the frame."""
    height, width = mask.shape
    points = []
    for y in range(height):
        xs = np.flatnonzero(mask[y])
        if xs.size:
            points += [(xs[0], y)] if xs[0] > 0 else []
            points += [(xs[-1], y)] if xs[-1] < width - 1 else []
    for x in range(width):
        ys = np.flatnonzero(mask[:, x])
        if ys.size:
            points += [(x, ys[0])] if ys[0] > 0 else []
            points += [(x, ys[-1])] if ys[-1] < height - 1 else []
    return np.asarray(points, dtype=np.float64)


def least_squares_circle(points: np.ndarray) -> tuple[float, float, float]:
    """Algebraic circle fit x^2 + y^2 = a x + b y + c by np.linalg.lstsq: (cy, cx, radius)."""
    x, y = points[:, 0], points[:, 1]
    design = np.stack([x, y, np.ones_like(x)], axis=1)
    (a, b, c), *_ = np.linalg.lstsq(design, x * x + y * y, rcond=None)
    cx, cy = a / 2, b / 2
    return cy, cx, math.sqrt(c + cx * cx + cy * cy)


def fitted(mask: np.ndarray) -> tuple[float, float, float, bool]:
    cy, cx, radius, found = fit_fov_circle(tf.constant(mask))
    return float(cy), float(cx), float(radius), bool(found)


# ----------------------------------------------------------------- circle fit

# (height, width, cy, cx, radius): a whole disc; a STARE-like 700x605 frame cutting the disc at
# top and bottom; a frame cutting it at left and right.
DISCS = {
    "full": (200, 220, 100.3, 110.6, 80.0),
    "clipped_top_bottom": (605, 700, 302.0, 349.5, 330.0),
    "clipped_left_right": (300, 200, 150.2, 99.7, 120.0),
}


@pytest.mark.parametrize("case", list(DISCS))
def test_circle_fit_matches_a_numpy_least_squares_fit_and_the_drawn_disc(case):
    height, width, cy, cx, radius = DISCS[case]
    mask = disc(height, width, cy, cx, radius)
    points = boundary_points(mask)
    expected = least_squares_circle(points)
    got_cy, got_cx, got_radius, found = fitted(mask)
    assert found
    np.testing.assert_allclose([got_cy, got_cx, got_radius], expected, atol=0.02)
    # the circle passes through the centres of the outermost FOV pixels, up to half a pixel inside the disc
    assert abs(got_cy - cy) < 0.3 and abs(got_cx - cx) < 0.3
    assert radius - 0.6 < got_radius <= radius
    assert mask_diameter(mask) == pytest.approx(2 * got_radius, abs=1e-4)
    if case != "full":  # the mask's extent along the clipped axis says nothing about the diameter
        extent = min(mask.any(axis=1).sum(), mask.any(axis=0).sum())
        assert mask_diameter(mask) > extent + 0.08 * 2 * radius


def test_circle_fit_ignores_a_notch_and_stray_bright_pixels():
    height, width, cy, cx, radius = DISCS["full"]
    clean = disc(height, width, cy, cx, radius)
    damaged = clean.copy()
    damaged[disc(height, width, 100, 30, 15)] = False  # a bite out of the left rim (the optic disc, say)
    damaged[disc(height, width, 25, 180, 3)] = True  # a small bright blob outside
    for y, x in [(5, 5), (190, 200), (10, 150), (100, 215), (195, 40)]:
        damaged[y, x] = True  # stray bright pixels (text, JPEG noise)
    # the damage moves many row/column ends: a fit through all of them is off by more than a pixel
    naive = least_squares_circle(boundary_points(damaged))[2]
    _, _, clean_radius, _ = fitted(clean)
    assert abs(naive - clean_radius) > 1.0
    got_cy, got_cx, got_radius, found = fitted(damaged)
    assert found
    assert got_radius == pytest.approx(clean_radius, abs=0.1)
    assert abs(got_cy - cy) < 0.5 and abs(got_cx - cx) < 0.5


def test_image_fov_measures_the_disc_of_a_fundus_like_image():
    height, width, cy, cx, radius = DISCS["clipped_top_bottom"]
    mask = disc(height, width, cy, cx, radius)
    geometry = image_fov(fundus(mask))
    assert geometry.found
    np.testing.assert_array_equal(geometry.mask, mask)
    assert geometry.diameter == pytest.approx(2 * least_squares_circle(boundary_points(mask))[2], abs=0.05)


def test_the_strips_read_every_uint8_colour_as_the_graph_and_numpy_do():
    """`image_fov` reads a uint8 photograph's intensity with OpenCV's weighted sum, the graph with
    TensorFlow's float32 ops (eager and traced, as in an exported graph): for all 2**24 colours both equal
    NumPy's float64 `fov_intensity`, bit for bit."""
    from keras_vessel.data import scaling
    from keras_vessel.data.intensity import fov_intensity

    colours = np.arange(1 << 24, dtype=np.uint32)
    every = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=-1).astype(np.uint8)
    every = every.reshape(4096, 4096, 3)
    traced = tf.function(scaling._intensity)
    for rows in np.array_split(np.arange(4096), 4):
        chunk = every[rows[0] : rows[-1] + 1]
        fast = scaling._uint8_intensity(chunk)
        assert fast.dtype == np.float32 and fast.shape == chunk.shape[:2]
        np.testing.assert_array_equal(fast, fov_intensity(chunk))
        np.testing.assert_array_equal(scaling._intensity(tf.constant(chunk)).numpy(), fast)
        np.testing.assert_array_equal(traced(tf.constant(chunk, tf.float32)).numpy(), fast)


@pytest.mark.parametrize("case", ["fixed", "surround", "otsu"])
def test_image_fov_of_a_uint8_photograph_equals_that_of_its_float_copy_and_the_graph(case):
    """Each rule's mask (the fixed cut, the surround rule's fitted disc, Otsu's cut) from the uint8 route
    equals the float route's and `fov_diameter`'s, bit for bit."""
    height, width, cy, cx, radius = DISCS["clipped_top_bottom"]
    mask = disc(height, width, cy, cx, radius)
    image = fundus(mask)
    if case != "fixed":  # built as in the surround and Otsu tests below
        image[mask] += 60.0
        two_tone = np.where(np.arange(width) < width // 2, 20.0, 70.0).astype(np.float32)
        surround = (np.random.default_rng(3).uniform(120.0, 160.0, image.shape) if case == "surround"
                    else np.broadcast_to(two_tone[None, :, None], image.shape))
        image[~mask] = surround[~mask]
    photograph = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    fast, slow = image_fov(photograph), image_fov(photograph.astype(np.float32))
    mask, diameter, found = fov_diameter(tf.constant(photograph, tf.float32))
    assert fast.found and fast.rule == case == slow.rule
    assert fast.diameter == slow.diameter == pytest.approx(float(diameter), abs=1e-3)
    np.testing.assert_array_equal(fast.mask, slow.mask)
    np.testing.assert_array_equal(fast.mask, mask.numpy())


def test_diameter_of_an_image_resized_4x_is_4x():
    small = soft_fundus(220, 230, 110.4, 114.7, 100.0)
    large = ndimage.zoom(small, (4, 4, 1), order=1, grid_mode=True, mode="grid-constant")
    small_fov, large_fov = image_fov(small), image_fov(large)
    assert small_fov.found and large_fov.found
    assert large_fov.diameter / small_fov.diameter == pytest.approx(4.0, rel=0.01)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((120, 140, 3)),
        np.full((120, 140, 3), 255.0),
        np.random.default_rng(0).uniform(0.0, 255.0, (120, 140, 3)),
        np.pad(np.full((60, 80, 3), 200.0), ((30, 30), (30, 30), (0, 0))),  # a plain rectangle
        fundus(disc(200, 200, 100, 100, 4.0)),  # a disc below 5% of the image side
    ],
    ids=["black", "white", "uniform_noise", "rectangle", "tiny_disc"],
)
def test_image_fov_finds_no_fov(image):
    assert not image_fov(image).found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_otsu_level_matches_scikit_image(seed):
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(seed)
    dark = rng.normal(20 + 10 * seed, 8, 3000)
    bright = rng.normal(150 + 20 * seed, 25, 5000)
    values = np.clip(np.rint(np.concatenate([dark, bright])), 0, 255).astype(np.uint8)

    def between_class_variance(t):
        low, high = values[values <= t].astype(float), values[values > t].astype(float)
        return low.size * high.size * (high.mean() - low.mean()) ** 2

    level = otsu_level(tf.constant(values, tf.float32)).numpy()
    assert between_class_variance(level) == pytest.approx(between_class_variance(threshold_otsu(values, nbins=256)),
                                                          rel=1e-5)
    assert otsu_level(tf.fill([10, 10], 80.0)).numpy() == 255.0  # one level: nothing above


@pytest.mark.parametrize("surround", [(10.0, 40.0), (120.0, 160.0)], ids=["over_exposed", "hazy_grey"])
def test_image_fov_measures_a_disc_on_a_surround_brighter_than_the_fixed_cut(surround):
    """The fixed cut (15) takes the whole frame and no circle fits: the surround rule finds the aperture,
    and its mask is the fitted disc (the drawn one, give or take its rim pixels)."""
    height, width, cy, cx, radius = DISCS["clipped_top_bottom"]
    mask = disc(height, width, cy, cx, radius)
    image = fundus(mask)
    image[mask] += 60.0  # the aperture stays brighter than its surround
    image[~mask] = np.random.default_rng(3).uniform(*surround, (int((~mask).sum()), 3))
    assert not fit_fov_circle(fov_mask(tf.constant(image)))[3].numpy()  # the first rule alone fails
    geometry = image_fov(image)
    assert geometry.found and geometry.rule == "surround"
    # the 3x3 average carries a sharp rim about a pixel outwards
    assert geometry.diameter == pytest.approx(2 * least_squares_circle(boundary_points(mask))[2], abs=3.0)
    yy, xx = np.mgrid[:height, :width]
    rim = np.abs(np.hypot(yy - cy, xx - cx) - radius) <= 1.5
    np.testing.assert_array_equal(geometry.mask[~rim], mask[~rim])


def test_image_fov_falls_back_to_otsu_when_the_corners_do_not_read_the_surround():
    """A two-tone frame (20 on the left half, 70 on the right): the corners' median (45) is the level of
    neither half, the surround rule takes the whole frame, and Otsu's cut separates the aperture."""
    height, width, cy, cx, radius = DISCS["clipped_top_bottom"]
    mask = disc(height, width, cy, cx, radius)
    image = fundus(mask)
    image[mask] += 60.0
    two_tone = np.where(np.arange(width) < width // 2, 20.0, 70.0).astype(np.float32)
    image[~mask] = np.broadcast_to(two_tone[None, :, None], image.shape)[~mask]
    geometry = image_fov(image)
    assert geometry.found and geometry.rule == "otsu"
    np.testing.assert_array_equal(geometry.mask, mask)
    assert geometry.diameter == pytest.approx(2 * least_squares_circle(boundary_points(mask))[2], abs=0.05)


def test_image_fov_finds_the_disc_on_a_white_surround():
    """A photograph pasted on white: the aperture is darker than its surround, which no cut from below finds."""
    height, width, cy, cx, radius = DISCS["full"]
    mask = disc(height, width, cy, cx, radius)
    image = fundus(mask)
    image[~mask] = 240.0
    geometry = image_fov(image)
    assert geometry.found and geometry.rule == "surround"
    assert geometry.diameter == pytest.approx(2 * least_squares_circle(boundary_points(mask))[2], abs=3.0)


def test_mask_diameter_is_none_for_a_mask_that_is_no_disc():
    square = np.zeros((100, 120), bool)
    square[20:80, 30:90] = True
    assert mask_diameter(square) is None
    assert mask_diameter(np.zeros((50, 50), bool)) is None


# ----------------------------------------------------------------- fov_mask threshold rule


def numpy_fov_rule(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mask, intensity, threshold) of ``max(red, luminance) > max(15, 0.06 * p99)`` in float64."""
    image = np.asarray(image, np.float64)
    luminance = image @ np.array([0.299, 0.587, 0.114])
    intensity = np.maximum(image[..., 0], luminance)
    threshold = max(15.0, 0.06 * float(np.percentile(intensity, 99)))
    return intensity > threshold, intensity, threshold


def test_fov_mask_is_intensity_above_15_when_p99_is_not_bright():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 31, (64, 80, 3)).astype(np.float32)  # p99 <= 30: the cut is 15
    image[0, 0] = [15, 0, 0]  # exactly at the cut: outside (strictly greater is inside)
    image[0, 1] = [16, 0, 0]  # red alone lifts it in
    image[0, 2] = [0, 25, 0]  # luminance 14.7: out
    image[0, 3] = [0, 26, 0]  # luminance 15.3: in
    expected, intensity, threshold = numpy_fov_rule(image)
    assert threshold == 15.0
    got = fov_mask(tf.constant(image)).numpy()
    # a luminance of exactly 15 (e.g. grey 15) falls either side with float rounding
    decided = np.abs(intensity - 15.0) > 1e-4
    np.testing.assert_array_equal(got[decided], expected[decided])
    assert got[0, :4].tolist() == [False, True, False, True]


@pytest.mark.parametrize("seed", [0, 1])
def test_fov_mask_threshold_follows_p99_of_a_bright_image(seed):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.0, 40.0, (100, 120, 3))
    image[rng.random((100, 120)) < 0.05] = 255.0  # p99 at 255: the cut is 0.06 * 255 = 15.3
    image[:10] = rng.uniform(14.0, 17.0, (10, 120, 3))  # many values around the cut
    expected, intensity, threshold = numpy_fov_rule(image)
    assert threshold > 15.25
    got = fov_mask(tf.constant(image, tf.float32)).numpy()
    differ = got != expected
    # the 256-bin histogram's p99 is within one grey level of NumPy's interpolated percentile
    assert (np.abs(intensity[differ] - threshold) <= 1.0).all()
    # and pixels between 15 and 15.3 are outside, which a plain "> 15" would keep
    between = (intensity > 15.0) & (intensity < threshold - 0.1)
    assert between.any() and not got[between].any()


# ----------------------------------------------------------------- scale_factor


@pytest.mark.parametrize(
    ("model_diameter", "image_diameter", "found", "expected"),
    [
        (540.0, 270.0, True, 2.0),
        (540.0, 1080.0, True, 0.5),
        (540.0, 540.0 / (1 + 0.9 * SCALE_TOLERANCE), True, 1.0),  # inside the tolerance band
        (540.0, 540.0 * (1 + 0.9 * SCALE_TOLERANCE), True, 1.0),
        (540.0, 540.0 / (1 + 1.5 * SCALE_TOLERANCE), True, 1 + 1.5 * SCALE_TOLERANCE),  # just outside
        (540.0, 270.0, False, 1.0),  # no FOV found
        (540.0, 0.0, True, 1.0),  # no diameter
        (540.0, 540.0 / (MAX_FACTOR * 1.1), True, 1.0),  # out of range: a failed estimate
        (540.0, 540.0 / (MIN_FACTOR * 0.9), True, 1.0),
        (540.0, 540.0 / MAX_FACTOR, True, MAX_FACTOR),  # the range is inclusive
    ],
)
def test_scale_factor(model_diameter, image_diameter, found, expected):
    factor = scale_factor(model_diameter, image_diameter, found)
    assert factor.dtype == tf.float32 and factor.shape == ()
    assert float(factor) == pytest.approx(expected, rel=1e-5)


def test_scale_factor_takes_tensors():
    factors = [float(scale_factor(tf.constant(600.0), tf.constant(d), tf.constant(f)))
               for d, f in [(300.0, True), (300.0, False)]]
    assert factors == [pytest.approx(2.0), 1.0]


# ----------------------------------------------------------------- resample / resize_to


@pytest.mark.parametrize(
    ("shape", "factor", "size"),
    [((12, 18, 3), 1 / 3, (4, 6)), ((7, 9, 3), 2.2, (15, 20)), ((2, 10, 13, 1), 0.7, (7, 9))],
)
def test_resample_sizes_are_rounded_scaled_sizes(shape, factor, size):
    images = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    out = resample(images, factor).numpy()
    assert out.shape == shape[:-3] + size + shape[-1:]
    assert out.dtype == np.float32
    assert size == tuple(int(np.floor(n * factor + 0.5)) for n in shape[-3:-1])


@pytest.mark.parametrize("factor", [1.0, 1.04, 0.96])
def test_resample_is_identity_when_the_size_does_not_change(factor):
    image = np.random.default_rng(2).uniform(0, 255, (10, 11, 3)).astype(np.float32)
    np.testing.assert_array_equal(resample(image, factor).numpy(), image)  # 10 * 1.04 rounds to 10


def test_resize_to_keeps_constants_and_averages_when_shrinking():
    constant = np.full((30, 36, 3), 77.0, np.float32)
    np.testing.assert_allclose(resize_to(constant, [17, 50]).numpy(), 77.0, atol=1e-3)
    # a one-pixel checkerboard shrunk 3x: a point sample would alias to 0 / 255 stripes,
    # an area average is mid-grey
    checker = ((np.indices((90, 90)).sum(axis=0) % 2) * 255.0).astype(np.float32)[..., None]
    small = resize_to(checker, [30, 30]).numpy()[2:-2, 2:-2]
    np.testing.assert_allclose(small, 127.5, atol=255 * 0.06)
    point_sampled = tf.image.resize(checker, [30, 30], method="bilinear", antialias=False).numpy()[2:-2, 2:-2]
    assert np.abs(point_sampled - 127.5).max() > 100  # the check above can fail


# ----------------------------------------------------------------- check_scale


@pytest.mark.parametrize(
    ("given", "expected"),
    [("auto", "auto"), (" Auto ", "auto"), ("NONE", "none"), ("multi", "multi"), (" Multi ", "multi"),
     ("0.5", 0.5), (2, 2.0), (np.float32(1.5), 1.5),
     (MIN_FACTOR, MIN_FACTOR), (MAX_FACTOR, MAX_FACTOR), ("8", 8.0),
     ("1080px", "1080px"), (" 1080 PX ", "1080px"), ("1080.0px", "1080px"), ("540.5px", "540.5px"),
     ("64px", "64px"), ("4096px", "4096px"), ("1e3px", "1000px")],
)
def test_check_scale_accepts(given, expected):
    got = check_scale(given)
    assert got == pytest.approx(expected) if isinstance(expected, float) else got == expected
    assert type(got) is type(expected)
    assert check_scale(got) == got  # normalised: checking again changes nothing


ANY = (r"`scale` must be 'auto', 'multi', 'adaptive', 'none', a field-of-view diameter such as '1080px' or a positive "
       r"factor; got ")
DIAMETER = r"`scale` must be a field-of-view diameter between 64 and 4096 px; got "


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("fast", ANY + r"'fast'\."),
        ("multiple", ANY + r"'multiple'\."),
        ("multi px", ANY + r"'multi px'\."),
        ("", ANY + r"''\."),
        (True, ANY + r"True\."),
        (None, ANY + r"None\."),
        ("px", ANY + r"'px'\."),
        ("wide px", ANY + r"'wide px'\."),
        ("1080pxx", ANY + r"'1080pxx'\."),
        ("1080 mm", ANY + r"'1080 mm'\."),
        (0, r"`scale` must be a factor between 0\.05 and 8\.0; got 0\."),
        (-1.0, r"`scale` must be a factor between 0\.05 and 8\.0; got -1\.0\."),
        (8.5, r"`scale` must be a factor between 0\.05 and 8\.0; got 8\.5\."),
        ("0.01", r"`scale` must be a factor between 0\.05 and 8\.0; got 0\.01\."),
        (float("nan"), r"`scale` must be a factor between 0\.05 and 8\.0; got nan\."),
        ("inf", r"`scale` must be a factor between 0\.05 and 8\.0; got inf\."),
        ("63px", DIAMETER + r"'63px'\."),
        ("63.9px", DIAMETER + r"'63\.9px'\."),
        ("4097px", DIAMETER + r"'4097px'\."),
        ("-1080px", DIAMETER + r"'-1080px'\."),
        ("0px", DIAMETER + r"'0px'\."),
        ("nanpx", DIAMETER + r"'nanpx'\."),
        ("infpx", DIAMETER + r"'infpx'\."),
    ],
)
def test_check_scale_rejects(given, message):
    with pytest.raises(ValueError, match=message):
        check_scale(given)


@pytest.mark.parametrize(("given", "shown"), [(0.5, "0.5"), ("0.5", "'0.5'"), ("fast", "'fast'")])
def test_check_scale_without_factors_refuses_them(given, shown):
    """What an exported graph accepts: it resamples by each image's own field of view."""
    with pytest.raises(ValueError, match=r"`scale` must be 'auto', 'multi', 'adaptive', 'none' or a field-of-view "
                                         rf"diameter such as '1080px' \(not a factor\); got {shown}\."):
        check_scale(given, factors=False)
    assert [check_scale(s, factors=False) for s in ("AUTO", "none", "1080 px", "MULTI")] == \
        ["auto", "none", "1080px", "multi"]


def test_working_diameter_of_each_form():
    assert (MIN_DIAMETER, MAX_DIAMETER) == (64.0, 4096.0)
    assert working_diameter("auto", 540.0) == 540.0 and working_diameter("auto", None) is None
    assert working_diameter("1080px", 540.0) == working_diameter("1080px", None) == 1080.0
    assert working_diameter("540.5px", 540.0) == 540.5
    assert working_diameter("none", 540.0) is None and working_diameter(0.5, 540.0) is None
    assert [resamples_by_fov(s) for s in ("auto", "1080px", "none", 0.5, "multi")] == [True, True, False, False, True]


def test_working_diameters_of_multi_are_the_fusion_multiples_of_the_models(monkeypatch):
    from keras_vessel.data import scaling

    assert working_diameters("multi", 540.0) == tuple(m * 540.0 for m in FUSION_MULTIPLES)
    assert working_diameters("auto", 540.0) == (540.0,) and working_diameters("1080px", None) == (1080.0,)
    assert working_diameters("auto", None) is None and working_diameters(0.5, 540.0) is None
    monkeypatch.setattr(scaling, "FUSION_MULTIPLES", (1.0, 1.5))  # the one definition: read where it is used
    assert working_diameters("multi", 100.0) == (100.0, 150.0)
    assert scale_record("Multi") == {"scale": "multi", "multiples": [1.0, 1.5]}
    assert scale_record(0.5) == {"scale": 0.5} and scale_record("auto") == {"scale": "auto"}
    with pytest.raises(ValueError, match=r"^`scale='multi'` needs a model that records its training field-of-view "
                                         r"diameter; this one records none$"):
        working_diameters("multi", None)
    with pytest.raises(ValueError, match=r"^`scale='multi'` has several working diameters; read them with "
                                         r"`working_diameters`$"):
        working_diameter("multi", 540.0)


def test_enlarge_to_adds_into_a_map_in_place():
    rng = np.random.default_rng(0)
    total = rng.random((50, 61)).astype(np.float32)
    start = total.copy()
    for small in (rng.random((20, 24)).astype(np.float32), rng.random((80, 90)).astype(np.float32)):  # up, down
        expected = start + enlarge_to(small, (50, 61))
        assert enlarge_to(small, (50, 61), add_to=total) is total
        np.testing.assert_allclose(total, expected, rtol=0, atol=1e-6)
        start = total.copy()
    with pytest.raises(ValueError, match=r"`add_to` must be a float32 map of shape \(50, 61\); got float64"):
        enlarge_to(small, (50, 61), add_to=np.zeros((50, 61)))


def test_check_scale_accepts_numpy_integers():
    assert check_scale(np.int64(2)) == 2.0


# ----------------------------------------------------------------- prediction_region


def test_prediction_region_grows_the_fov_by_fov_dilation_pixels():
    mask = disc(60, 70, 25.0, 40.0, 22.0)  # touches the top frame
    mask[55, 3] = True  # a lone pixel near a corner
    grown = prediction_region(tf.constant(mask), tf.constant(True)).numpy()
    size = 2 * FOV_DILATION + 1
    expected = ndimage.binary_dilation(mask, structure=np.ones((size, size), bool))
    np.testing.assert_array_equal(grown, expected)
    assert grown.sum() > mask.sum()


def test_prediction_region_is_everything_when_no_fov_was_found():
    mask = disc(40, 50, 20.0, 25.0, 10.0)
    region = prediction_region(tf.constant(mask), tf.constant(False)).numpy()
    assert region.shape == mask.shape and region.all()


# ----------------------------------------------------------------- on the real datasets


@pytest.mark.data
@pytest.mark.parametrize("dataset, root_fixture, diameters", [
    ("drive", "drive_root", (530, 545)),
    ("chase_db1", "chase_root", (885, 930)),
])
def test_real_photographs_are_measured_and_their_whole_fov_is_kept(request, dataset, root_fixture, diameters):
    """The diameter of every DRIVE / CHASE_DB1 image, and `predict --fov auto` never cutting the published
    (DRIVE) or derived (CHASE_DB1) field of view: issue 21 found rim vessels zeroed by the eroded mask."""
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.data.scaling import image_fov, mask_diameter

    root = request.getfixturevalue(root_fixture)
    for spec in open_dataset(dataset, root, "test"):
        sample = spec.load()
        geometry = image_fov(sample.image)
        assert geometry.found and diameters[0] <= geometry.diameter <= diameters[1], (sample.name, geometry)
        assert abs(geometry.diameter - mask_diameter(sample.fov)) <= 0.015 * geometry.diameter
        region = prediction_region(geometry.mask, geometry.found).numpy()
        assert region[sample.fov].all(), sample.name
        assert (region & ~sample.fov).sum() <= 0.06 * sample.fov.sum()


def test_shrinking_uint8_photographs_by_several_factors_never_makes_tensorflow_warn_about_retracing(monkeypatch,
                                                                                                     caplog):
    """--scale multi shrinks each large photograph by several block sides, strip by strip (the last strip of
    each shorter): TensorFlow's retracing warning reached the user's terminal; the result stays `resample`'s."""
    import logging

    from keras_vessel.data import scaling

    monkeypatch.setattr(scaling, "STRIP_PIXELS", 20000)  # two or three strips of each small image
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for height, width in ((203, 190), (151, 177), (97, 260)):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            for block in (2, 3, 4, 5, 6, 7):
                factor = 1.0 / block
                expected = scaling.resample(image.astype(np.float32), factor).numpy()  # the graph op it is a face of
                np.testing.assert_allclose(scaling.shrink_image(image, factor), expected, atol=2e-3)
    assert not [r.getMessage() for r in caplog.records if "retracing" in r.getMessage()]
