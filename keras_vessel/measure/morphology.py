"""Vessel morphology of one photograph, from its binary vessel mask inside its field of view.

Pure NumPy/SciPy/scikit-image: `measure_vessels(mask, fov)` returns one row of named measurements
(`COLUMNS`), the same for the whole FOV and for three rings of it (`RINGS`). Every column's formula and
unit is in docs/METHOD_NOTES.md section 9; the choices are also said where they are made here:

* The vessels are ``mask & fov``; outside the FOV and outside the image is background.
* The skeleton is `skimage.morphology.skeletonize` of the vessels. Its pixel graph joins 8-neighbours,
  but not two diagonal neighbours that share a 4-neighbour on the skeleton (the path runs through that
  pixel), so that a staircase corner is no branch point and no step is counted twice. An edge is 1 px
  long, a diagonal one sqrt(2) px.
* End points have one graph neighbour; branch points are the 8-connected clusters of pixels with three
  or more. Segments are the connected pieces of the skeleton left when branch-point pixels are taken
  out, each extended by one step to the branch point it leaves.
* A width is measured at every skeleton pixel from the Euclidean distance transform ``d`` (distance
  from the pixel's centre to the nearest background pixel's centre): ``2 d - 1`` px, or ``2 d`` px
  where a 4-neighbour off the skeleton is as far from the background (the ridge is two pixels wide: a
  vessel of even width, whose centre line runs between pixels). A straight vessel along the rows or
  columns of width ``w`` reads ``w`` exactly, of either parity.
* Curvature is computed on each segment's pixel coordinates smoothed along the segment by a Gaussian
  of ``curvature_sigma`` px (samples), from the first and second derivatives with respect to the arc
  length; ``2 * curvature_sigma`` samples at each end (where the smoothing window leaves the segment)
  and segments too short to keep any sample do not count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.morphology import skeletonize

from keras_vessel.checks import check_binary

__all__ = ["COLUMNS", "MEASURES", "NORMALISED", "RINGS", "measure_vessels"]

# Every measurement of a region (the whole FOV, or one ring): name -> (unit, what it is).
MEASURES: dict[str, tuple[str, str]] = {
    "fov_area_px": ("px^2", "pixels of the region (the FOV, or the ring's part of it)"),
    "vessel_area_fraction": ("1", "vessel pixels / region pixels"),
    "vessel_length_px": ("px", "skeleton length, orthogonal steps 1, diagonal steps sqrt(2)"),
    "length_density": ("1/px", "vessel_length_px / fov_area_px"),
    "mean_width_px": ("px", "mean of the widths at the skeleton pixels"),
    "median_width_px": ("px", "median of the widths at the skeleton pixels"),
    "tortuosity_arc_chord": ("1", "segment arc / chord, mean weighted by arc length"),
    "tortuosity_curvature": ("1/px^2", "mean squared curvature along the smoothed segments, weighted by arc"),
    "fractal_dimension": ("1", "box-counting dimension of the vessel pixels"),
    "branch_points": ("count", "clusters of skeleton pixels with 3 or more neighbours"),
    "end_points": ("count", "skeleton pixels with one neighbour"),
    "segments": ("count", "skeleton pieces between branch and end points"),
}
# `NAME_per_fov` is NAME measured with the FOV diameter as the unit of length: a quantity in px^k divided
# by fov_diameter_px^k. Here: the normalised column, the column it is made of, and k.
NORMALISED: dict[str, tuple[str, int]] = {
    "vessel_length_per_fov": ("vessel_length_px", 1),
    "length_density_per_fov": ("length_density", -1),
    "mean_width_per_fov": ("mean_width_px", 1),
    "median_width_per_fov": ("median_width_px", 1),
    "tortuosity_curvature_per_fov": ("tortuosity_curvature", -2),
}
# Rings of the FOV by the distance from the FOV circle's centre over its radius: [low, high).
RINGS: dict[str, tuple[float, float]] = {"centre": (0.0, 1 / 3), "middle": (1 / 3, 2 / 3), "outer": (2 / 3, math.inf)}
# The columns of `measure_vessels`, in order: the FOV's diameter, the whole FOV's measures, then each ring's
# (``RING_NAME``; the ring's own area, the whole FOV's diameter for its _per_fov columns).
COLUMNS: tuple[str, ...] = ("fov_diameter_px", *MEASURES, *NORMALISED) + tuple(
    f"{ring}_{name}" for ring in RINGS for name in (*MEASURES, *NORMALISED))

_OFFSETS = np.array([(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)])
_STEP = np.hypot(_OFFSETS[:, 0], _OFFSETS[:, 1])
_MIN_BOX_SIZES = 3


# --------------------------------------------------------------------------- validation


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite number; got {value!r} ({type(value).__name__})")
    return float(value)


def _circle(fov_circle: object, fov: np.ndarray) -> tuple[float, float, float]:
    """(cy, cx, radius) as given, or the FOV's centroid and the radius of a disc of its area."""
    if fov_circle is None:
        ys, xs = np.nonzero(fov)
        return float(ys.mean()), float(xs.mean()), math.sqrt(ys.size / math.pi)
    try:
        cy, cx, radius = (float(v) for v in fov_circle)
    except (TypeError, ValueError):
        raise ValueError(f"`fov_circle` must be (cy, cx, radius) in px or None; got {fov_circle!r}") from None
    if not (math.isfinite(cy) and math.isfinite(cx)):
        raise ValueError(f"`fov_circle` must have a finite centre; got {fov_circle!r}")
    return cy, cx, _positive(radius, "fov_circle radius")


# --------------------------------------------------------------------------- the skeleton and its pieces


@dataclass
class _Skeleton:
    """Per skeleton pixel: ``coords`` (N, 2) row/col, ``length`` (half its edges, px), ``width`` (px),
    ``degree``; per branch point: one pixel of it (``branch_pixels``); per segment: ``segment_pixel`` (its
    middle pixel), ``arc``, ``chord`` and ``counted`` (a loop or a closed ring has no meaningful chord);
    per curvature sample: ``bend_pixel`` (the pixel it was measured at), ``bend_squared``, ``bend_weight``."""

    coords: np.ndarray
    length: np.ndarray
    width: np.ndarray
    degree: np.ndarray
    branch_pixels: np.ndarray
    segment_pixel: np.ndarray
    arc: np.ndarray
    chord: np.ndarray
    counted: np.ndarray
    bend_pixel: np.ndarray
    bend_squared: np.ndarray
    bend_weight: np.ndarray


def _neighbours(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skeleton pixel coordinates (N, 2) and their graph neighbours (N, 8): indices, -1 for none."""
    coords = np.argwhere(skeleton)
    index = np.full((skeleton.shape[0] + 2, skeleton.shape[1] + 2), -1, dtype=np.int64)
    rows, cols = coords[:, 0] + 1, coords[:, 1] + 1
    index[rows, cols] = np.arange(len(coords))
    neighbours = np.empty((len(coords), len(_OFFSETS)), dtype=np.int64)
    for k, (dy, dx) in enumerate(_OFFSETS):
        found = index[rows + dy, cols + dx]
        if dy and dx:  # a diagonal step is no edge where the path turns through a shared 4-neighbour
            found = np.where((index[rows + dy, cols] >= 0) | (index[rows, cols + dx] >= 0), -1, found)
        neighbours[:, k] = found
    return coords, neighbours


def _widths(vessels: np.ndarray, coords: np.ndarray, on_skeleton: np.ndarray) -> np.ndarray:
    """``2 d - 1`` at each skeleton pixel, ``2 d`` where a 4-neighbour off the skeleton has the same ``d``."""
    distance = ndi.distance_transform_edt(np.pad(vessels, 1))  # outside the image is background
    rows, cols = coords[:, 0] + 1, coords[:, 1] + 1
    here = distance[rows, cols]
    skeleton = np.pad(on_skeleton, 1)
    flat = np.zeros(len(coords), dtype=bool)
    for dy, dx in _OFFSETS[:4]:
        flat |= ~skeleton[rows + dy, cols + dx] & (distance[rows + dy, cols + dx] >= here - 1e-9)
    return 2.0 * here - 1.0 + flat


def _walk(start: int, members: np.ndarray, neighbours: np.ndarray) -> list[int]:
    """The pixels of one segment (a path or a closed ring), in order from `start`."""
    order, seen, current = [start], {start}, start
    while True:
        step = next((n for n in neighbours[current] if n >= 0 and members[n] and n not in seen), None)
        if step is None:
            return order
        order.append(int(step))
        seen.add(int(step))
        current = int(step)


def _smoothed(points: np.ndarray, sigma: float) -> np.ndarray:
    """An ordered segment's (n, 2) pixel coordinates smoothed by a Gaussian of `sigma` samples.

    The segment is extended at each end by its point reflection about that end, so that a straight
    segment stays straight and both end points stay where they are; the kernel is cut at 4 sigma or at
    the segment's length, whichever is shorter.
    """
    radius = min(int(math.ceil(4 * sigma)), len(points) - 1)
    if radius < 1:
        return points.astype(float)
    points = points.astype(float)
    before = 2 * points[0] - points[radius:0:-1]
    after = 2 * points[-1] - points[-2:-radius - 2:-1]
    padded = np.concatenate([before, points, after])
    smooth = ndi.gaussian_filter1d(padded, sigma, axis=0, truncate=radius / sigma)
    return smooth[radius:radius + len(points)]


def _bends(smooth: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample positions, squared curvature (1/px^2) and arc weights (px) along one smoothed segment,
    leaving out ``ceil(2 sigma)`` samples at each end (where the smoothing meets the reflected copy)."""
    trim = int(math.ceil(2 * sigma))
    steps = np.hypot(*np.diff(smooth, axis=0).T)
    if len(smooth) < 2 * trim + 3 or np.any(steps <= 0):
        return np.empty(0, int), np.empty(0), np.empty(0)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    dy, dx = np.gradient(smooth[:, 0], arc), np.gradient(smooth[:, 1], arc)
    ddy, ddx = np.gradient(dy, arc), np.gradient(dx, arc)
    curvature = (dx * ddy - dy * ddx) / np.maximum(dx * dx + dy * dy, 1e-12) ** 1.5
    keep = slice(trim, len(smooth) - trim)
    return np.arange(len(smooth))[keep], curvature[keep] ** 2, np.gradient(arc)[keep]


def _skeleton(vessels: np.ndarray, *, curvature_sigma: float) -> _Skeleton:
    on_skeleton = skeletonize(vessels)
    coords, neighbours = _neighbours(on_skeleton)
    has = neighbours >= 0
    degree = has.sum(axis=1)
    length = 0.5 * (has * _STEP).sum(axis=1)
    width = _widths(vessels, coords, on_skeleton)

    junction = degree >= 3
    cluster_image, _ = ndi.label(on_skeleton & _paint(on_skeleton.shape, coords, junction), np.ones((3, 3)))
    cluster = cluster_image[coords[:, 0], coords[:, 1]]  # 0 off branch points
    branch_pixels = np.array([np.flatnonzero(cluster == c)[0] for c in np.unique(cluster[junction])], dtype=int)

    # segments: the pieces of the graph without branch-point pixels
    inner = ~junction
    source, slot = np.nonzero(has)
    target = neighbours[source, slot]
    keep = inner[source] & inner[target]
    graph = coo_matrix((np.ones(keep.sum()), (source[keep], target[keep])), shape=(len(coords),) * 2)
    _, piece = connected_components(graph, directed=False)
    inner_degree = np.bincount(source[keep], minlength=len(coords))

    segment_pixel, arcs, chords, counted = [], [], [], []
    bend_pixel, bend_squared, bend_weight = [], [], []
    pieces = np.unique(piece[inner])
    members = np.zeros(len(coords), dtype=bool)
    for label in pieces:
        members[:] = (piece == label) & inner
        ids = np.flatnonzero(members)
        ends = ids[inner_degree[ids] <= 1]
        closed = ends.size == 0
        order = _walk(int(ends[0] if ends.size else ids[0]), members, neighbours)
        if closed:
            order.append(order[0])
        else:  # extend each end by one step to the branch point it touches (orthogonal steps first)
            head = [int(n) for n in neighbours[order[0]] if n >= 0 and junction[n]]
            tail = [int(n) for n in neighbours[order[-1]] if n >= 0 and junction[n]]
            if len(order) == 1:  # one pixel between two branch pixels: leave by two different steps
                tail = [n for n in tail if n not in head[:1]]
            order = head[:1] + order + tail[:1]
        points = coords[order]
        smooth = _smoothed(points, curvature_sigma)
        ends_at = (cluster[order[0]], cluster[order[-1]])
        loop = closed or (ends_at[0] > 0 and ends_at[0] == ends_at[1])
        arcs.append(float(np.hypot(*np.diff(smooth, axis=0).T).sum()) if len(order) > 1 else 0.0)
        chords.append(float(np.hypot(*(points[-1] - points[0]))))
        counted.append(not loop and chords[-1] > 0)
        segment_pixel.append(order[len(order) // 2])
        samples, squared, weight = _bends(smooth, curvature_sigma)
        bend_pixel.append(np.asarray(order)[samples])
        bend_squared.append(squared)
        bend_weight.append(weight)

    def joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)

    return _Skeleton(coords=coords, length=length, width=width, degree=degree, branch_pixels=branch_pixels,
                     segment_pixel=np.asarray(segment_pixel, dtype=int), arc=np.asarray(arcs, dtype=float),
                     chord=np.asarray(chords, dtype=float), counted=np.asarray(counted, dtype=bool),
                     bend_pixel=joined(bend_pixel, int), bend_squared=joined(bend_squared, float),
                     bend_weight=joined(bend_weight, float))


def _paint(shape: tuple[int, int], coords: np.ndarray, selected: np.ndarray) -> np.ndarray:
    image = np.zeros(shape, dtype=bool)
    image[coords[selected, 0], coords[selected, 1]] = True
    return image


# --------------------------------------------------------------------------- measures of a region


def box_sizes(region: np.ndarray) -> list[int]:
    """The box sizes of `fractal_dimension` for a region: 2, 4, 8, ... up to the largest power of two
    at most an eighth of the shorter side of the region's bounding box (64 px for a DRIVE FOV)."""
    rows, cols = np.nonzero(np.any(region, axis=1))[0], np.nonzero(np.any(region, axis=0))[0]
    if rows.size == 0:
        return []
    shorter = min(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    sizes, size = [], 2
    while size <= shorter / 8:
        sizes.append(size)
        size *= 2
    return sizes


def fractal_dimension(vessels: np.ndarray, region: np.ndarray) -> float:
    """Box-counting dimension of the True pixels of ``vessels & region``: minus the least-squares slope of
    log(boxes holding a vessel pixel) against log(box size) over `box_sizes` (region), the grid anchored
    at the region's bounding box's top-left corner. NaN without vessels or with fewer than 3 sizes."""
    sizes = box_sizes(region)
    inside = vessels & region
    if len(sizes) < _MIN_BOX_SIZES or not inside.any():
        return math.nan
    rows, cols = np.nonzero(np.any(region, axis=1))[0], np.nonzero(np.any(region, axis=0))[0]
    crop = inside[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    counts = []
    for size in sizes:
        height, width = -(-crop.shape[0] // size) * size, -(-crop.shape[1] // size) * size
        padded = np.zeros((height, width), dtype=bool)
        padded[:crop.shape[0], :crop.shape[1]] = crop
        counts.append(padded.reshape(height // size, size, width // size, size).any(axis=(1, 3)).sum())
    slope = np.polyfit(np.log(sizes), np.log(counts), 1)[0]
    return float(-slope)


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    return float((values * weights).sum() / total) if total > 0 else math.nan


def _region_measures(vessels: np.ndarray, region: np.ndarray, skeleton: _Skeleton) -> dict[str, float]:
    coords = skeleton.coords
    inside = region[coords[:, 0], coords[:, 1]] if len(coords) else np.zeros(0, bool)
    area = int(region.sum())
    length = float(skeleton.length[inside].sum())
    widths = skeleton.width[inside]
    segments = inside[skeleton.segment_pixel] if skeleton.segment_pixel.size else np.zeros(0, bool)
    counted = segments & skeleton.counted
    bends = inside[skeleton.bend_pixel] if skeleton.bend_pixel.size else np.zeros(0, bool)
    return {
        "fov_area_px": area,
        "vessel_area_fraction": float((vessels & region).sum() / area) if area else math.nan,
        "vessel_length_px": length,
        "length_density": length / area if area else math.nan,
        "mean_width_px": float(widths.mean()) if widths.size else math.nan,
        "median_width_px": float(np.median(widths)) if widths.size else math.nan,
        "tortuosity_arc_chord": _weighted_mean(skeleton.arc[counted] / skeleton.chord[counted], skeleton.arc[counted]),
        "tortuosity_curvature": _weighted_mean(skeleton.bend_squared[bends], skeleton.bend_weight[bends]),
        "fractal_dimension": fractal_dimension(vessels, region),
        "branch_points": int(inside[skeleton.branch_pixels].sum()) if skeleton.branch_pixels.size else 0,
        "end_points": int((inside & (skeleton.degree == 1)).sum()),
        "segments": int(segments.sum()),
    }


def _normalised(measures: dict[str, float], diameter: float) -> dict[str, float]:
    return {name: measures[source] / diameter ** power for name, (source, power) in NORMALISED.items()}


def measure_vessels(mask: np.ndarray, fov: np.ndarray | None = None, *,
                    fov_circle: tuple[float, float, float] | None = None,
                    curvature_sigma: float = 3.0) -> dict[str, float]:
    """Morphology of a binary vessel mask inside its field of view: one row of `COLUMNS`.

    Parameters
    ----------
    mask : (H, W) bool or numeric array
        The vessels (nonzero). Not modified.
    fov : (H, W) bool or numeric array, optional
        The field of view (nonzero); the whole image when None. Not modified.
    fov_circle : (cy, cx, radius) in px, optional
        The circle of the FOV: its diameter is ``fov_diameter_px`` and its centre and radius define the
        rings (`RINGS`). When None: the FOV's centroid and the radius of a disc of its area (right for a
        disc, too small for a FOV clipped by the frame: give the fitted circle then).
    curvature_sigma : float, default 3.0
        Gaussian smoothing of the segments' coordinates before their curvature is taken, in px (samples).

    Returns
    -------
    dict
        Column name -> value, in the order of `COLUMNS`: counts as int, the rest as float (NaN where a
        measure is undefined: no vessel, no segment long enough, too small a region).

    Examples
    --------
    A horizontal vessel 5 px wide and 101 px long in a 64 x 128 image:

    >>> mask = np.zeros((64, 128), bool); mask[30:35, 10:111] = True
    >>> row = measure_vessels(mask)
    >>> row["median_width_px"], round(row["tortuosity_arc_chord"], 2), row["end_points"], row["branch_points"]
    (5.0, 1.0, 2, 0)
    """
    vessels = check_binary("mask", mask)
    region = np.ones_like(vessels) if fov is None else check_binary("fov", fov)
    if region.shape != vessels.shape:
        raise ValueError(f"`fov` must have the shape of `mask` {vessels.shape}; got {region.shape}")
    if not region.any():
        raise ValueError("`fov` holds no pixel: the field of view is empty")
    cy, cx, radius = _circle(fov_circle, region)
    sigma = _positive(curvature_sigma, "curvature_sigma")
    vessels &= region
    skeleton = _skeleton(vessels, curvature_sigma=sigma)
    diameter = 2.0 * radius
    whole = _region_measures(vessels, region, skeleton)
    row: dict[str, float] = {"fov_diameter_px": diameter, **whole, **_normalised(whole, diameter)}
    rows, cols = np.indices(region.shape)
    distance = np.hypot(rows - cy, cols - cx) / radius
    for ring, (low, high) in RINGS.items():
        part = _region_measures(vessels, region & (distance >= low) & (distance < high), skeleton)
        row.update({f"{ring}_{name}": value for name, value in {**part, **_normalised(part, diameter)}.items()})
    return row
