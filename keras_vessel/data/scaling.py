"""Scale normalisation: where the field of view is, how wide it is, and resampling to a target width.

Vessel calibres in pixels scale with the camera's resolution: the same vessel
is 8 px wide in a DRIVE image (FOV about 535 px across) and 50 px wide in a
3504x2336 HRF photograph. A network trained at one scale misses vessels at
another, so every place where a model meets an image resamples the image until
its FOV diameter equals the one the model was trained at (or a working diameter
asked for, ``scale="1080px"``: high-resolution photographs keep more detail above the
training diameter), and resamples the probability back to the image's own grid.
``scale="multi"`` does this at several working diameters, the `FUSION_MULTIPLES` of the
training diameter, and averages the probabilities on the image's grid (the best working
resolution differs per camera; the mean keeps most of each one's gain without choosing).
``scale="adaptive"`` chooses per photograph: ``"multi"`` for one whose field of view is at least
`MULTI_SCALE_FROM_FOV` px across (where fusing paid: docs/RESULTS.md 1b), else ``"auto"`` (`adaptive_mode`).

Everything the exported graph uses here is TensorFlow ops (no `tf.py_function`), so the exported
SavedModel does exactly what local prediction does, and the training
pipeline resamples patches inside `tf.data`:

- `fov_mask(image)`: the bright disc of a fundus photograph, by the rule of
  `keras_vessel.data.preprocessing.derive_fov` (``max(red, luminance)`` above
  ``max(15, 0.06 * p99)``), without its erosion, largest-component and
  hole-filling steps (which have no cheap graph form).
- `fit_fov_circle(mask)`: the circle through the mask's boundary. Many
  cameras clip the FOV at the frame (STARE's 700x605 photographs span the
  full width but not the full height), so neither the mask's extent nor its
  area gives the diameter; the circle is fitted (algebraic least squares,
  re-fitted twice without outlying points) to the left/right ends of every
  row and the top/bottom ends of every column that do not touch the frame.
- `fov_diameter(image)`: both, with a ``found`` flag; an all-black, all-white
  or frame-filling image has no detectable FOV. When the fixed cut fits no
  circle, a cut referred to the surround's own level (`surround_mask`), then
  Otsu's cut, are tried in turn.
- `check_scale(scale)`: the one rule for a scale choice ("auto", "multi", "adaptive", "none", a factor, or a
  working FOV diameter "1080px"); `working_diameters` are the diameters it resamples each image to
  (one, or one per `FUSION_MULTIPLES` for "multi"), `scale_record` what reports record of it.
- `scale_factor(model_diameter, image_diameter)`: the resampling factor, 1
  when the FOV is not found or the change is below `SCALE_TOLERANCE`.
- `resample(image, factor)` / `resize_to(image, size)`: bilinear with
  antialiasing (an area average when shrinking).
- `prediction_region(mask, found)`: where a prediction is kept (the FOV grown
  by a few pixels, so the dim rim keeps its vessels).

Local prediction uses NumPy faces of the same rules (`image_fov`, `image_region`,
`shrink_image`, `enlarge_to`) that take a full-resolution photograph in strips
of rows (`STRIP_PIXELS`), so a 100 MP uint8 image is never copied whole to
float32: they equal the graph ops (the FOV mask and region exactly, the
resampling to float32 rounding).
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import tensorflow as tf

from keras_vessel.data.intensity import LUMA_PER_MILLE

__all__ = [
    "FOV_DILATION",
    "FUSION_MULTIPLES",
    "MAX_DIAMETER",
    "MAX_FACTOR",
    "MIN_DIAMETER",
    "MIN_FACTOR",
    "MULTI_SCALE_FROM_FOV",
    "SCALE_TOLERANCE",
    "FovGeometry",
    "adaptive_mode",
    "block_mean",
    "STRIP_PIXELS",
    "check_scale",
    "enlarge_to",
    "fit_fov_circle",
    "fov_diameter",
    "fov_mask",
    "image_fov",
    "image_region",
    "mask_diameter",
    "otsu_level",
    "prediction_region",
    "resample",
    "resamples_by_fov",
    "resize_to",
    "scale_factor",
    "scale_record",
    "scaled_size",
    "shrink_image",
    "surround_circle",
    "surround_level",
    "surround_mask",
    "working_diameter",
    "working_diameters",
]

# A relative change of scale below this is not worth a resampling (DRIVE images
# are 534-538 px across; a model trained at 540 runs them at their own grid).
SCALE_TOLERANCE = 0.02
# Factors outside this range mean a failed estimate rather than a real camera.
MIN_FACTOR, MAX_FACTOR = 0.05, 8.0
# Working field-of-view diameters (`check_scale`'s "Npx") outside this range, in px, are typos, not cameras.
MIN_DIAMETER, MAX_DIAMETER = 64.0, 4096.0
# Pixels by which the estimated FOV is grown before masking a prediction, so the
# dim rim of the aperture (where vessels still run) is never cut away.
FOV_DILATION = 3
# ``scale="multi"``: the working field-of-view diameters, as multiples of the model's training diameter,
# whose probabilities are averaged. The one definition: everything else reads it (values and count).
FUSION_MULTIPLES: tuple[float, ...] = (1.0, 1.5, 2.0)
# ``scale="adaptive"``: photographs whose field of view is found at least this wide (px) run at ``"multi"``, the
# others at ``"auto"``. Fusing gained on HRF's 8 MP photographs (FOV about 3300 px) and lost at 900-1450 px
# (docs/RESULTS.md 1b; rule s3 of notebook entry s places the bar from the five leave-one-camera-out folds).
MULTI_SCALE_FROM_FOV = 2000.0
_MIN_POINTS = 16


def check_scale(scale: str | float, *, factors: bool = True) -> str | float:
    """The one rule for a scale choice: the choice normalised, else a ValueError of one sentence.

    - ``"auto"``: resample each image so that its field of view is as wide as the model's training
      images (`working_diameters`), run the network there and resample the probability back;
    - ``"multi"``: the same at each of the `FUSION_MULTIPLES` of the training diameter (the field of
      view measured once), the probabilities averaged on the image's grid;
    - ``"adaptive"``: per image, ``"multi"`` when its field of view is found at least
      `MULTI_SCALE_FROM_FOV` px across and the model records its training diameter, else ``"auto"``
      (`adaptive_mode`);
    - ``"Npx"``, N in [`MIN_DIAMETER`, `MAX_DIAMETER`] px (``"1080px"``, ``" 1080 PX"``): the same with a
      field of view N px across, normalised to ``"1080px"`` (a string, so it prints, compares and goes
      into JSON as it was typed);
    - ``"none"``: the image's own grid;
    - a factor in [`MIN_FACTOR`, `MAX_FACTOR`] (strings holding a number too), as a float; refused when
      `factors` is False (an exported graph resamples each image by its own field of view).

    >>> check_scale(" 1080 PX "), check_scale("0.5"), check_scale("Auto"), check_scale(" MULTI ")
    ('1080px', 0.5, 'auto', 'multi')
    """
    expected = ("'auto', 'multi', 'adaptive', 'none', a field-of-view diameter such as '1080px' or a positive "
                "factor" if factors else
                "'auto', 'multi', 'adaptive', 'none' or a field-of-view diameter such as '1080px' (not a factor)")
    given = scale
    if isinstance(scale, str):
        text = scale.strip().lower()
        if text in ("auto", "multi", "adaptive", "none"):
            return text
        if text.endswith("px"):
            try:
                diameter = float(text[:-2])
            except ValueError:
                raise ValueError(f"`scale` must be {expected}; got {scale!r}.") from None
            if not (math.isfinite(diameter) and MIN_DIAMETER <= diameter <= MAX_DIAMETER):
                raise ValueError(f"`scale` must be a field-of-view diameter between {MIN_DIAMETER:g} and "
                                 f"{MAX_DIAMETER:g} px; got {scale!r}.")
            return f"{diameter:.10g}px"
        try:
            scale = float(text)
        except ValueError:
            raise ValueError(f"`scale` must be {expected}; got {scale!r}.") from None
    if not factors or isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise ValueError(f"`scale` must be {expected}; got {given!r}.")
    if not (math.isfinite(float(scale)) and MIN_FACTOR <= float(scale) <= MAX_FACTOR):
        raise ValueError(f"`scale` must be a factor between {MIN_FACTOR} and {MAX_FACTOR}; got {scale!r}.")
    return float(scale)


def resamples_by_fov(scale: str | float) -> bool:
    """Whether a `check_scale` choice measures each image's field of view (``"auto"``, ``"multi"``,
    ``"adaptive"``, ``"Npx"``)."""
    return scale in ("auto", "multi", "adaptive") or (isinstance(scale, str) and scale.endswith("px"))


def adaptive_mode(fov_diameter: float | None, model_diameter: float | None) -> str:
    """What ``scale="adaptive"`` runs one image at: ``"multi"`` when its field of view was found
    (`fov_diameter` px across, None when not found) at least `MULTI_SCALE_FROM_FOV` wide and the model records
    its training diameter (`model_diameter`), else ``"auto"``.

    >>> adaptive_mode(3300.0, 540.0), adaptive_mode(1440.0, 540.0), adaptive_mode(3300.0, None)
    ('multi', 'auto', 'auto')
    """
    wide = fov_diameter is not None and fov_diameter >= MULTI_SCALE_FROM_FOV
    return "multi" if wide and model_diameter is not None else "auto"


def working_diameters(scale: str | float, model_diameter: float | None) -> tuple[float, ...] | None:
    """The field-of-view diameters in px that a `check_scale` choice resamples each image to.

    ``(model_diameter,)`` for ``"auto"`` (None when the model records no training diameter: each image
    runs at its own grid), ``m * model_diameter`` for each of `FUSION_MULTIPLES` for ``"multi"`` (a
    ValueError when the model records none: there is nothing to take multiples of), ``(N,)`` for ``"Npx"``
    (whatever the model records), None for ``"none"`` and for a factor (no FOV is needed). ``"adaptive"``
    is one of ``"auto"`` and ``"multi"`` per image (`adaptive_mode`): a ValueError here.

    >>> working_diameters("auto", 540.0), working_diameters("1080px", None), working_diameters("none", 540.0)
    ((540.0,), (1080.0,), None)
    >>> working_diameters("multi", 540.0) == tuple(m * 540.0 for m in FUSION_MULTIPLES)
    True
    """
    if scale == "adaptive":
        raise ValueError("`scale='adaptive'` resamples each image by its own mode; ask `adaptive_mode` which")
    if scale == "multi":
        if model_diameter is None:
            raise ValueError("`scale='multi'` needs a model that records its training field-of-view diameter; "
                             "this one records none")
        return tuple(float(multiple) * float(model_diameter) for multiple in FUSION_MULTIPLES)
    if scale == "auto":
        return None if model_diameter is None else (float(model_diameter),)
    if resamples_by_fov(scale):
        return (float(scale[:-2]),)
    return None


def working_diameter(scale: str | float, model_diameter: float | None) -> float | None:
    """The one field-of-view diameter in px that a single-scale `check_scale` choice resamples each image to.

    `working_diameters`' only diameter, or None (``"none"``, a factor, ``"auto"`` with a model that
    records no training diameter); a ValueError for ``"multi"``, which has several.

    >>> working_diameter("auto", 540.0), working_diameter("1080px", 540.0), working_diameter("1080px", None)
    (540.0, 1080.0, 1080.0)
    """
    if scale == "multi":
        raise ValueError("`scale='multi'` has several working diameters; read them with `working_diameters`")
    diameters = working_diameters(scale, model_diameter)
    return None if diameters is None else diameters[0]


def scale_record(scale: str | float) -> dict[str, object]:
    """What a report records of a scale choice: ``{"scale": check_scale(scale)}``, and for ``"multi"`` its
    ``"multiples"`` of the training diameter (`FUSION_MULTIPLES`), so a record says which were averaged; for
    ``"adaptive"`` those and the FOV diameter from which it fuses (``"multi_from_fov"``).

    >>> scale_record(" 1080 PX")
    {'scale': '1080px'}
    """
    scale = check_scale(scale)
    if scale in ("multi", "adaptive"):
        record = {"scale": scale, "multiples": [float(multiple) for multiple in FUSION_MULTIPLES]}
        return record | ({"multi_from_fov": MULTI_SCALE_FROM_FOV} if scale == "adaptive" else {})
    return {"scale": scale}


def _intensity(image: tf.Tensor) -> tf.Tensor:
    """`keras_vessel.data.intensity.fov_intensity` in TensorFlow, float32.

    Bit for bit NumPy's float64 result for integer pixel values (the weighted sum is an integer below
    2**24, exact in float32, and one float32 division rounds it as float64 then float32 do: tested on all
    2**24 colours), so the same on every CPU; a float image keeps its fractions (to float32 rounding).
    """
    rgb = tf.cast(image, tf.float32)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red_weight, green_weight, blue_weight = (float(weight) for weight in LUMA_PER_MILLE)
    # not `/ 1000.0`: a traced graph turns that into a product with 0.001, one ulp off for half the sums
    luminance = tf.math.divide_no_nan(red * red_weight + green * green_weight + blue * blue_weight, 1000.0)
    return tf.maximum(red, luminance)


def _histogram(intensity: tf.Tensor) -> tf.Tensor:
    """256 bins of ``floor(intensity)`` on 0-255, float32 counts."""
    levels = tf.cast(tf.clip_by_value(tf.floor(intensity), 0.0, 255.0), tf.int32)
    return tf.math.bincount(tf.reshape(levels, [-1]), minlength=256, maxlength=256, dtype=tf.float32)


def _threshold(intensity: tf.Tensor) -> tf.Tensor:
    """``max(15, 0.06 * p99)``, the 99th percentile read from a 256-bin histogram."""
    cumulative = tf.cumsum(_histogram(intensity))
    p99 = tf.cast(tf.argmax(tf.cast(cumulative >= 0.99 * cumulative[-1], tf.int32)), tf.float32)
    return tf.maximum(15.0, 0.06 * p99)


def otsu_level(intensity: tf.Tensor) -> tf.Tensor:
    """Otsu's level of ``floor(intensity)`` on 0-255: a ``t`` that maximises the between-class variance
    of ``<= t`` against ``> t``; of a run of equal maxima (an empty gap between two modes) the middle one.
    Float32 scalar; 255 for a constant image, so that nothing is above it."""
    histogram = _histogram(intensity)
    levels = tf.range(256, dtype=tf.float32)
    below = tf.cumsum(histogram)
    total = below[-1]
    above = total - below
    sum_below = tf.cumsum(histogram * levels)
    mean_below = sum_below / tf.maximum(below, 1.0)
    mean_above = (sum_below[-1] - sum_below) / tf.maximum(above, 1.0)
    between = below * above * tf.square(mean_above - mean_below)
    between = tf.where((below > 0) & (above > 0), between, -1.0)
    best = tf.reduce_max(between)
    at_best = tf.cast(tf.where(between >= best - 1e-6 * tf.abs(best))[:, 0], tf.float32)  # never empty
    middle = tf.floor((at_best[0] + at_best[-1]) / 2.0)
    return tf.where(best > 0, middle, 255.0)


def fov_mask(image: tf.Tensor) -> tf.Tensor:
    """``(H, W, 3)`` RGB on 0-255 -> ``(H, W)`` bool, True inside the field of view.

    The threshold is ``max(15, 0.06 * p99)`` of ``max(red, luminance)``, the
    99th percentile read from a 256-bin histogram (within 1 grey level of
    NumPy's interpolated percentile).
    """
    intensity = _intensity(image)
    return intensity > _threshold(intensity)


def _ends(mask: tf.Tensor, axis: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Along `axis` of a (H, W) mask: first index, last index, whether the line holds any True."""
    as_int = tf.cast(mask, tf.int32)
    size = tf.shape(mask)[axis]
    first = tf.argmax(as_int, axis=axis, output_type=tf.int32)
    last = size - 1 - tf.argmax(tf.reverse(as_int, [axis]), axis=axis, output_type=tf.int32)
    return first, last, tf.reduce_any(mask, axis=axis)


def _boundary_points(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """x, y and a 0/1 weight of the boundary points that do not lie on the image frame."""
    height, width = tf.shape(mask)[0], tf.shape(mask)[1]
    left, right, rows = _ends(mask, axis=1)  # per row
    top, bottom, cols = _ends(mask, axis=0)  # per column
    row_index = tf.range(height)
    col_index = tf.range(width)
    x = tf.concat([left, right, col_index, col_index], axis=0)
    y = tf.concat([row_index, row_index, top, bottom], axis=0)
    keep = tf.concat(
        [rows & (left > 0), rows & (right < width - 1), cols & (top > 0), cols & (bottom < height - 1)], axis=0
    )
    return tf.cast(x, tf.float32), tf.cast(y, tf.float32), tf.cast(keep, tf.float32)


def _circle(x: tf.Tensor, y: tf.Tensor, weight: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Weighted algebraic (Kasa) fit: centre (cx, cy) and radius; points centred for conditioning."""
    total = tf.maximum(tf.reduce_sum(weight), 1.0)
    mx, my = tf.reduce_sum(weight * x) / total, tf.reduce_sum(weight * y) / total
    u, v = x - mx, y - my
    design = tf.stack([u, v, tf.ones_like(u)], axis=1) * tf.sqrt(weight)[:, None]
    target = ((u * u + v * v) * tf.sqrt(weight))[:, None]
    normal = tf.matmul(design, design, transpose_a=True) + 1e-6 * tf.eye(3)
    solution = tf.linalg.solve(normal, tf.matmul(design, target, transpose_a=True))[:, 0]
    cx, cy = solution[0] / 2.0, solution[1] / 2.0
    radius = tf.sqrt(tf.maximum(solution[2] + cx * cx + cy * cy, 0.0))
    return cx + mx, cy + my, radius


def _median(values: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    chosen = tf.sort(tf.boolean_mask(values, weight > 0))
    count = tf.size(chosen)
    return tf.cond(count > 0, lambda: chosen[count // 2], lambda: tf.constant(0.0))


def fit_fov_circle(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """The circle bounding a FOV mask: ``(cy, cx, radius, found)``, float32 scalars and a bool.

    Fits the row and column ends that do not touch the frame, then twice more
    without the points farther from the circle than ``max(2, 3 x median)``
    px (stray bright pixels, a notch at the optic disc). ``found`` is False
    when fewer than 16 points remain, when the points do not lie on a circle
    (median distance above 1.5 px + 1% of the radius: a rectangular mask), or
    when the radius is below 5% of the image's longer side.
    """
    mask = tf.cast(mask, tf.bool)
    x, y, weight = _boundary_points(mask)
    cx, cy, radius = _circle(x, y, weight)
    for _ in range(2):
        distance = tf.abs(tf.sqrt(tf.square(x - cx) + tf.square(y - cy)) - radius)
        limit = tf.maximum(2.0, 3.0 * _median(distance, weight))
        weight = weight * tf.cast(distance <= limit, tf.float32)
        cx, cy, radius = _circle(x, y, weight)
    distance = tf.abs(tf.sqrt(tf.square(x - cx) + tf.square(y - cy)) - radius)
    longer = tf.cast(tf.reduce_max(tf.shape(mask)), tf.float32)
    found = (
        (tf.reduce_sum(weight) >= _MIN_POINTS)
        & (_median(distance, weight) <= 1.5 + 0.01 * radius)
        & (radius >= 0.05 * longer)
        & tf.math.is_finite(radius)
    )
    return cy, cx, radius, found


# The circle is fitted on the image shrunk (by an integer area average) to at most this many pixels
# on its longer side: a 3504x2336 photograph is measured in 0.1 s instead of 1 s, to within 0.1%.
_FIT_SIDE = 1024
# The surround rule (the second of the three cuts, see `fov_diameter`): the shrunk intensity is averaged
# over 3x3 pixels, the surround's level and noise are read in the four corners (squares of 1/24 of the
# shorter side) and the FOV is where the intensity departs from that level by more than
# max(_SURROUND_MARGIN grey levels, _NOISE_MARGIN robust standard deviations of the corners' noise).
# 10 grey levels: a lower margin takes in the faint glow around DRIVE's aperture
# (this rule alone measures DRIVE within 1.1% of its masks at 10, within 1.6% at 6).
_SMOOTH = 3
_SURROUND_MARGIN = 10.0
_NOISE_MARGIN = 4.0
_MIN_FILL, _MAX_SPILL = 0.9, 0.05
# Which cut measured the image, as `_image_fov` reports it (`FovGeometry.rule`).
_RULES = {0: None, 1: "fixed", 2: "surround", 3: "otsu"}


def _middle(values: tf.Tensor) -> tf.Tensor:
    """The median of all elements (the mean of the two middle ones for an even count)."""
    ordered = tf.sort(tf.reshape(values, [-1]))
    count = tf.size(ordered)
    return (ordered[(count - 1) // 2] + ordered[count // 2]) / 2.0


def surround_level(intensity: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(level, noise)`` of the surround of an ``(H, W)`` intensity, read in its four corners.

    Each corner is a square of ``max(2, min(H, W) // 24)`` px; ``level`` is the median of the four
    corners' medians and ``noise`` the median of their median absolute deviations times 1.4826 (a
    standard deviation for Gaussian noise). Medians, so that one corner holding burnt-in text does not
    move either. The corners of a fundus photograph lie outside its circular aperture whenever the
    aperture is inscribed in the frame or clipped by it.
    """
    height, width = tf.shape(intensity)[0], tf.shape(intensity)[1]
    side = tf.maximum(2, tf.minimum(height, width) // 24)
    corners = [intensity[:side, :side], intensity[:side, width - side:],
               intensity[height - side:, :side], intensity[height - side:, width - side:]]
    medians = [_middle(corner) for corner in corners]
    deviations = [_middle(tf.abs(corner - median)) for corner, median in zip(corners, medians)]
    return _middle(tf.stack(medians)), 1.4826 * _middle(tf.stack(deviations))


def surround_mask(intensity: tf.Tensor) -> tf.Tensor:
    """``(H, W)`` bool: where the 3x3-averaged intensity departs from the surround's level (`surround_level`)
    by more than ``max(10, 4 x noise)``, in either direction (a white surround has a darker FOV).
    The average carries a sharp rim about one pixel outwards (0.3% of a 650 px FOV)."""
    smooth = tf.nn.avg_pool2d(intensity[None, :, :, None], _SMOOTH, 1, "SAME")[0, :, :, 0]
    level, noise = surround_level(smooth)
    return tf.abs(smooth - level) > tf.maximum(_SURROUND_MARGIN, _NOISE_MARGIN * noise)


def surround_circle(intensity: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """`fit_fov_circle` of `surround_mask`: ``(cy, cx, radius, found)``, where ``found`` also needs the mask
    to be that disc: filling 90% of it, and 95% of the mask inside the disc grown by 2 px (a circle through
    a few row ends of noise or texture is no aperture)."""
    mask = surround_mask(intensity)
    cy, cx, radius, found = fit_fov_circle(mask)
    rows = tf.cast(tf.range(tf.shape(intensity)[0]), tf.float32)[:, None]
    cols = tf.cast(tf.range(tf.shape(intensity)[1]), tf.float32)[None, :]
    distance = tf.sqrt(tf.square(rows - cy) + tf.square(cols - cx))
    inside, chosen = tf.cast(distance <= radius, tf.float32), tf.cast(mask, tf.float32)
    fill = tf.math.divide_no_nan(tf.reduce_sum(chosen * inside), tf.reduce_sum(inside))
    spill = tf.math.divide_no_nan(tf.reduce_sum(chosen * tf.cast(distance > radius + 2.0, tf.float32)),
                                  tf.reduce_sum(chosen))
    return cy, cx, radius, found & (fill >= _MIN_FILL) & (spill <= _MAX_SPILL)


def _fit_shrink(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """The integer block side that brings the longer side to at most `_FIT_SIDE` (ceil)."""
    return tf.maximum(1, -(-tf.maximum(height, width) // _FIT_SIDE))


def _fov_rule(small: tf.Tensor, shrink: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Which rule measures an image, from its intensity pooled by `shrink` (`small`, `_FIT_SIDE` px at most).

    Returns ``(rule, cut, cy, cx, radius, found)``: ``rule`` 1 (fixed cut), 2 (surround rule) or 3 (Otsu's
    cut, also when no rule found a circle); ``cut`` the intensity cut whose mask rules 1 and 3 keep; the
    circle ``cy, cx, radius`` in full-resolution pixels (the mask of rule 2 is that disc). Everything a
    full-resolution mask needs (`_rule_mask`), so that the graph and the strips of `image_fov` make one mask.
    """
    cut = _threshold(small)
    _, _, radius, found = fit_fov_circle(small > cut)
    scale = tf.cast(shrink, tf.float32)
    nowhere = tf.constant(0.0)

    def with_fixed_cut() -> tuple[tf.Tensor, ...]:
        return tf.constant(1), cut, nowhere, nowhere, radius * scale, found

    def with_surround_rule() -> tuple[tf.Tensor, ...]:
        # Specks of a grainy surround above the fixed cut, or a dim rim below it, bend the row and column
        # ends off the circle; the surround rule (averaged, and cut just above the surround's own level)
        # follows the aperture. Its mask is the fitted disc: the rule's own mask is ragged on a dim rim.
        s_cy, s_cx, s_radius, s_found = surround_circle(small)
        # pooled pixel k covers full-resolution pixels [k * shrink, (k + 1) * shrink)
        cy, cx = s_cy * scale + (scale - 1.0) / 2.0, s_cx * scale + (scale - 1.0) / 2.0
        return tf.constant(2), cut, cy, cx, s_radius * scale, s_found

    def with_otsu_cut() -> tuple[tf.Tensor, ...]:
        # A surround brighter than the fixed cut (an over-exposed or hazy photograph, a grey frame) joins
        # the FOV and no circle fits; Otsu's cut separates the two modes of such an image.
        otsu_cut = tf.maximum(cut, otsu_level(small) + 0.5)  # levels <= t below, >= t + 1 above
        _, _, otsu_radius, otsu_found = fit_fov_circle(small > otsu_cut)
        return tf.constant(3), otsu_cut, nowhere, nowhere, otsu_radius * scale, otsu_found

    def fallback() -> tuple[tf.Tensor, ...]:
        surround = with_surround_rule()
        return tf.cond(surround[-1], lambda: surround, with_otsu_cut)

    return tf.cond(found, with_fixed_cut, fallback)


def _rule_mask(intensity: tf.Tensor, top: tf.Tensor, rule: tf.Tensor, cut: tf.Tensor, cy: tf.Tensor,
               cx: tf.Tensor, radius: tf.Tensor) -> tf.Tensor:
    """The FOV mask of `_fov_rule`'s answer on rows ``top, top + 1, ...`` of a full-resolution intensity:
    the fitted disc for rule 2, else ``intensity > cut``."""

    def disc() -> tf.Tensor:
        rows = tf.cast(tf.range(top, top + tf.shape(intensity)[0]), tf.float32)[:, None]
        cols = tf.cast(tf.range(tf.shape(intensity)[1]), tf.float32)[None, :]
        return tf.square(rows - cy) + tf.square(cols - cx) <= tf.square(radius)

    return tf.cond(tf.equal(rule, 2), disc, lambda: intensity > cut)


@tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)], reduce_retracing=True)
def _image_fov(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    intensity = _intensity(image)
    shrink = _fit_shrink(tf.shape(intensity)[0], tf.shape(intensity)[1])
    rule, cut, cy, cx, radius, found = _fov_rule(block_mean(intensity[:, :, None], shrink)[:, :, 0], shrink)
    mask = _rule_mask(intensity, tf.constant(0), rule, cut, cy, cx, radius)
    return mask, 2.0 * radius, found, tf.where(found, rule, 0)


def fov_diameter(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(H, W, 3)`` RGB 0-255 -> ``(mask (H, W) bool, diameter float32 px, found bool)`` in TF ops.

    Three cuts, each tried only when the ones before fit no circle (`fit_fov_circle`):

    1. the fixed cut of `fov_mask`; the mask is that rule's;
    2. the surround rule (`surround_mask`, `surround_circle`): the 3x3-averaged intensity departing from the surround's
       level, read in the image corners, by more than max(10, 4 x the corners' noise); its circle
       counts only if the rule's mask fills 90% of the disc and lies 95% inside it (grown by 2 px);
       the mask is the fitted disc;
    3. Otsu's cut (`otsu_level`); the mask is that rule's.

    Images measured by the first cut are measured exactly as before the other two existed.
    """
    mask, diameter, found, _ = _image_fov(tf.cast(image, tf.float32))
    return mask, diameter, found


# The NumPy faces below (`image_fov`, `image_region`, `shrink_image`, `enlarge_to`) serve local
# prediction: they run the same ops on strips of about this many pixels of a full-resolution
# photograph, so that a 100 MP uint8 image is never copied whole to float32 (4 bytes x 3 channels).
STRIP_PIXELS = 1 << 22


def _strip_rows(width: int, multiple: int = 1) -> int:
    """Rows per strip of `STRIP_PIXELS` pixels of an image `width` wide, a multiple of `multiple`."""
    rows = max(1, STRIP_PIXELS // max(int(width), 1))
    return max(multiple, rows // multiple * multiple)


def _float_rows(image: np.ndarray, start: int, rows: int) -> np.ndarray:
    return np.asarray(image[start : start + rows], dtype=np.float32)


@tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32), tf.TensorSpec([], tf.int32)],
             reduce_retracing=True)
def _block_mean_strip(strip: tf.Tensor, block: tf.Tensor) -> tf.Tensor:
    return block_mean(strip, block)


_LUMA_ROW = np.array([LUMA_PER_MILLE], dtype=np.float32)  # (1, 3): cv2.transform's matrix


def _uint8_intensity(strip: np.ndarray) -> np.ndarray:
    """`_intensity` of a uint8 ``(h, W, 3)`` strip as ``(h, W)`` float32, bit for bit, ~6x faster.

    The weighted sum of integer channels is an integer below 2**24, exact in float32, and one float32
    division rounds ``sum / 1000`` to the same float32 as the float64 path (checked for every sum and
    every colour in the tests); rounding is monotone, so the maximum with red may be taken after it.
    """
    luminance = cv2.transform(np.asarray(strip, dtype=np.float32), _LUMA_ROW)
    luminance /= np.float32(1000.0)
    return np.maximum(strip[..., 0], luminance, out=luminance)


@tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)], reduce_retracing=True)
def _float_intensity(strip: tf.Tensor) -> tf.Tensor:
    return _intensity(strip)


def _strip_intensity(image: np.ndarray, start: int, rows: int) -> np.ndarray:
    """`_intensity` of rows ``start, ..., start + rows - 1`` of an ``(H, W, 3)`` image, ``(h, W)`` float32."""
    strip = image[start : start + rows]
    if strip.dtype == np.uint8:
        return _uint8_intensity(strip)
    return _float_intensity(np.asarray(strip, dtype=np.float32)).numpy()


def _disc_rows(top: int, rows: int, width: int, cy: np.float32, cx: np.float32,
               radius: np.float32) -> np.ndarray:
    """`_rule_mask`'s disc on rows ``top, ..., top + rows - 1``: the same float32 operations, in NumPy."""
    down = np.square(np.arange(top, top + rows, dtype=np.float32) - cy)[:, None]
    across = np.square(np.arange(width, dtype=np.float32) - cx)[None, :]
    return down + across <= np.square(radius)


@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([], tf.int32)],
             reduce_retracing=True)
def _small_fov(small: tf.Tensor, shrink: tf.Tensor) -> tuple[tf.Tensor, ...]:
    return _fov_rule(small, shrink)


class FovGeometry:
    """What `image_fov` found in one image: ``mask`` (H, W) bool, ``diameter`` in px, ``found``, and
    ``rule``: the cut that measured it ("fixed", "surround" or "otsu", see `fov_diameter`; None if not found)."""

    __slots__ = ("diameter", "found", "mask", "rule")

    def __init__(self, mask: np.ndarray, diameter: float, found: bool, rule: str | None = None) -> None:
        self.mask, self.diameter, self.found, self.rule = mask, diameter, found, rule

    def __repr__(self) -> str:
        return f"FovGeometry(diameter={self.diameter:.1f}, found={self.found}, rule={self.rule!r})"


def image_fov(image: np.ndarray) -> FovGeometry:
    """NumPy face of `fov_diameter` for one ``(H, W, 3)`` image on 0-255 (uint8 or float): the same rule,
    diameter and mask (bit for bit), with ``rule`` saying which cut measured it.

    The same ops, run on strips of rows (`STRIP_PIXELS`): the pooled intensity the rule is chosen on is
    built strip by strip (strips a whole number of blocks high), and so is the full-resolution mask of the
    chosen rule (its cut, or the surround rule's fitted disc), so the image is never copied whole to float32.
    """
    image = np.asarray(image)
    height, width = image.shape[:2]
    shrink = int(_fit_shrink(tf.constant(height), tf.constant(width)))
    rows = _strip_rows(width, shrink)
    pooled = [_block_mean_strip(_strip_intensity(image, start, rows)[:, :, None], shrink).numpy()[:, :, 0]
              for start in range(0, height // shrink * shrink, rows)]
    small = np.concatenate(pooled) if pooled else np.zeros((0, width // shrink), np.float32)
    rule, cut, cy, cx, radius, found = (value.numpy() for value in
                                        _small_fov(tf.convert_to_tensor(small), tf.constant(shrink)))
    mask = np.empty((height, width), dtype=bool)
    for start in range(0, height, rows):
        if rule == 2:
            mask[start : start + rows] = _disc_rows(start, min(rows, height - start), width, cy, cx, radius)
        else:
            np.greater(_strip_intensity(image, start, rows), cut, out=mask[start : start + rows])
    found = bool(found)
    return FovGeometry(mask, float(2.0 * radius), found, _RULES[int(rule)] if found else None)


def prediction_region(mask: tf.Tensor, found: tf.Tensor) -> tf.Tensor:
    """Where a prediction is kept: the FOV grown by `FOV_DILATION` px, or everywhere if no FOV was found.

    ``(H, W)`` bool in, ``(H, W)`` bool out; the same op masks local
    predictions and the SavedModel's.
    """
    size = 2 * FOV_DILATION + 1
    # a square's maximum is the maximum along rows of the maxima along columns: two 7-px passes, not 49
    along_rows = tf.nn.max_pool2d(tf.cast(mask, tf.float32)[None, :, :, None], [1, size], 1, "SAME")
    grown = tf.nn.max_pool2d(along_rows, [size, 1], 1, "SAME")[0, :, :, 0] > 0
    return tf.logical_or(grown, tf.logical_not(tf.cast(found, tf.bool)))


def mask_diameter(mask: np.ndarray) -> float | None:
    """Diameter in px of the circle fitted to a given ``(H, W)`` bool FOV mask, or None if it is not a disc."""
    _, _, radius, found = fit_fov_circle(tf.convert_to_tensor(np.asarray(mask, dtype=bool)))
    return 2.0 * float(radius.numpy()) if bool(found.numpy()) else None


def scale_factor(model_diameter: tf.Tensor | float, image_diameter: tf.Tensor | float,
                 found: tf.Tensor | bool = True) -> tf.Tensor:
    """How much to enlarge the image: ``model_diameter / image_diameter``, float32 scalar.

    1 when the FOV was not found, when the factor is outside [MIN_FACTOR,
    MAX_FACTOR] (an estimate gone wrong), or when it is within
    `SCALE_TOLERANCE` of 1.

    >>> [round(float(scale_factor(540.0, d)), 3) for d in (920.0, 535.0, 0.0)]
    [0.587, 1.0, 1.0]
    """
    model_diameter = tf.cast(model_diameter, tf.float32)
    image_diameter = tf.cast(image_diameter, tf.float32)
    factor = tf.math.divide_no_nan(model_diameter, image_diameter)
    usable = (
        tf.cast(found, tf.bool)
        & (factor >= MIN_FACTOR)
        & (factor <= MAX_FACTOR)
        & (tf.abs(factor - 1.0) > SCALE_TOLERANCE)
    )
    return tf.where(usable, factor, 1.0)


def scaled_size(height: tf.Tensor, width: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``[round(height * factor), round(width * factor)]`` as int32, each at least 1."""
    size = tf.stack([tf.cast(height, tf.float32), tf.cast(width, tf.float32)]) * tf.cast(factor, tf.float32)
    return tf.maximum(tf.cast(tf.round(size), tf.int32), 1)


def resize_to(images: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Bilinear resampling with antialiasing of ``(..., H, W, C)`` to ``size`` (float32).

    Antialiasing widens the kernel when shrinking, so a downscaled image is an
    area average rather than a sampled one (thin vessels do not alias away). Enlarging
    (neither side shrinks), it changes nothing, and the plain bilinear op (4x faster) is used.
    """
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    enlarging = tf.reduce_all(tf.convert_to_tensor(size, tf.int32) >= shape[-3:-1])
    return tf.cond(enlarging,
                   lambda: tf.image.resize(images, size, method="bilinear", antialias=False),
                   lambda: tf.image.resize(images, size, method="bilinear", antialias=True))


def block_mean(images: tf.Tensor, block: tf.Tensor) -> tf.Tensor:
    """Means of ``block`` x ``block`` pixel blocks of ``(..., H, W, C)`` (a remainder at the end is dropped)."""
    shape = tf.shape(images)
    height, width = shape[-3] // block * block, shape[-2] // block * block
    cropped = images[..., :height, :width, :]
    blocks = tf.concat([shape[:-3], [height // block, block, width // block, block, shape[-1]]], axis=0)
    rank = images.shape.rank
    return tf.reduce_mean(tf.reshape(cropped, blocks), axis=[rank - 2, rank])


def resample(images: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """`resize_to` the size scaled by `factor` (rounded); returns the input unchanged for factor 1.

    ``(H, W, C)`` or ``(B, H, W, C)``. Shrinking by more than half first
    averages blocks of ``floor(1 / factor)`` pixels (the same area average,
    several times faster on a large photograph), then resizes the rest.
    """
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    size = scaled_size(shape[-3], shape[-2], factor)
    block = tf.cast(tf.floor(1.0 / tf.cast(factor, tf.float32)), tf.int32)

    def shrink() -> tf.Tensor:
        return resize_to(block_mean(images, block), size)

    return tf.cond(
        tf.reduce_all(tf.equal(size, shape[-3:-1])),
        lambda: images,
        lambda: tf.cond(block >= 2, shrink, lambda: resize_to(images, size)),
    )


def image_region(mask: np.ndarray, found: bool) -> np.ndarray:
    """NumPy face of `prediction_region`: the mask grown by `FOV_DILATION` px, or all True if not found.

    A square dilation of a binary mask (OpenCV, in place of the max-pooling op: the same pixels, without
    the op's float32 copies of a full-resolution mask).
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    if not found:
        return np.ones(mask.shape, dtype=bool)
    size = 2 * FOV_DILATION + 1
    return cv2.dilate(mask.view(np.uint8), np.ones((size, size), np.uint8)).view(bool)


def shrink_image(image: np.ndarray, factor: float) -> np.ndarray:
    """NumPy face of `resample` for one ``(H, W, C)`` image of any numeric dtype: float32 ``(h, w, C)``.

    Shrinking by more than half, the blocks are averaged strip by strip (strips a whole number of blocks
    high: the same means), so a uint8 photograph is never copied whole to float32; else `resample`. A uint8
    photograph's blocks are averaged by the pooling op, ~4x faster than `block_mean`'s reduction (the same
    means to float32 rounding: the sums of integers are exact).
    """
    image = np.asarray(image)
    height, width = image.shape[:2]
    size = scaled_size(height, width, factor).numpy()
    block = int(np.floor(np.float32(1.0) / np.float32(factor)))
    if block < 2 or tuple(size) == (height, width):
        return resample(np.asarray(image, dtype=np.float32), factor).numpy()
    rows = _strip_rows(width, block)
    if image.dtype == np.uint8:
        pooled = _uint8_pooling(block)
        strips = (pooled(image[start : start + rows]) for start in range(0, height // block * block, rows))
    else:
        strips = (_block_mean_strip(_float_rows(image, start, rows), block)
                  for start in range(0, height // block * block, rows))
    return resize_to(np.concatenate([strip.numpy() for strip in strips]), size).numpy()


def _pooled_uint8(strip: tf.Tensor, block: int) -> tf.Tensor:
    """Means of ``block`` x ``block`` blocks of a uint8 ``(h, W, C)`` strip, float32."""
    return tf.nn.avg_pool2d(tf.cast(strip, tf.float32)[None], block, block, "VALID")[0]


@functools.lru_cache(maxsize=None)
def _uint8_pooling(block: int):
    """`_pooled_uint8` for one block side (the pooling op's window is a constant of its graph), traced once for
    strips of every size. ``--scale multi`` shrinks by several sides: one function retraced per side and strip
    height made TensorFlow warn about retracing on the user's terminal. A partial, not a closure: TensorFlow
    counts traces per code object, which every closure of one definition shares."""
    return tf.function(functools.partial(_pooled_uint8, block=block),
                       input_signature=[tf.TensorSpec([None, None, None], tf.uint8)])


def _bilinear_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `target` samples enlarged from `source`: the two source indices and the second's weight
    (half-pixel centres, clamped at the ends: what an antialiased bilinear resize does when enlarging)."""
    position = (np.arange(target) + 0.5) * (source / target) - 0.5
    first = np.floor(position)
    weight = (position - first).astype(np.float32)
    first = first.astype(np.int64)
    return np.clip(first, 0, source - 1), np.clip(first + 1, 0, source - 1), weight


def enlarge_to(image: np.ndarray, size: tuple[int, int], *, add_to: np.ndarray | None = None) -> np.ndarray:
    """`resize_to` of one ``(h, w)`` float map to ``size`` = ``(H, W)``, float32 (within 1e-4 of it on 0-1).

    Enlarging (H >= h and W >= w), antialiasing changes nothing, so OpenCV's bilinear resize (the same
    half-pixel taps, clamped at the edges) writes the result with no full-size temporaries; otherwise
    `resize_to` itself. `add_to`, an ``(H, W)`` float32 map, receives the result added into it and is
    returned: how ``scale="multi"`` sums its maps. When enlarging, the separable interpolation is then
    built in strips of rows, so that no full-size map is made at all.
    """
    image = np.asarray(image, dtype=np.float32)
    (h, w), (height, width) = image.shape, (int(size[0]), int(size[1]))
    if add_to is not None and (add_to.shape != (height, width) or add_to.dtype != np.float32):
        raise ValueError(f"`add_to` must be a float32 map of shape {(height, width)}; got {add_to.dtype} "
                         f"{add_to.shape}.")
    if height < h or width < w:
        resized = resize_to(image[..., None], [height, width]).numpy()[..., 0]
        if add_to is None:
            return resized
        add_to += resized
        return add_to
    if add_to is None:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    left, right, across = _bilinear_taps(w, width)
    columns = image[:, left] + (image[:, right] - image[:, left]) * across  # (h, W)
    top, bottom, down = _bilinear_taps(h, height)
    rows = _strip_rows(width)
    for start in range(0, height, rows):
        span = slice(start, start + rows)
        upper = columns[top[span]]
        add_to[span] += upper + (columns[bottom[span]] - upper) * down[span, None]
    return add_to
