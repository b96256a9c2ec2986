"""Offline segment machinery: skeleton, ID mask, skeleton tube, segment thickness.

Everything here runs once per training image (by ``prepare``), never in the
training graph, and is pure NumPy/SciPy/scikit-image. The ID mask follows
METHOD.md section 1 (Yan, Yang & Cheng, TBME 2018): the ground-truth skeleton
is cut into short segments, and every segment gets a search region around it;
the segment-level loss later compares predicted and true vessel thickness per
segment. Inputs are never modified.

Choices this module makes where METHOD.md is silent (also in the docstrings):

* Radius when the search window holds no background: ``r = half * sqrt(2)``
  (the farthest distance inside the window), so the search region is the
  whole window. Pixels outside the image are not background.
* Long pieces are split into parts whose lengths differ by at most one pixel
  (boundaries at ``round(k * L / n)``), which keeps every split part within
  ``[max_length, 2 * max_length)`` as METHOD.md promises.
* Segment ids follow MATLAB order: pieces by their first pixel in
  column-major order, then parts along the walk. Segments left without pixels
  (outside the FOV) or without any pixel in the final mask are dropped and the
  ids renumbered 1..K, keeping the order; the painting is unchanged by that.
* ``build_id_mask(..., reference="complete")`` (not the default) keeps every
  segment's whole skeleton as its reference, and ``thickness_map`` weights
  reference pixels by their Euclidean step length, so widths for metrics are
  true widths (METHOD.md's painting shortens the references and inflates them).
"""

from __future__ import annotations

import logging
import math
from numbers import Integral

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk, thin

from keras_vessel.checks import check_binary

try:  # Guo-Hall look-up tables of skimage.morphology.thin (private, stable since 0.13)
    from skimage.morphology._skeletonize import G123_LUT, G123P_LUT
except ImportError:  # pragma: no cover - fall back to the public, slower function
    G123_LUT = G123P_LUT = None

__all__ = [
    "build_id_mask",
    "skeleton_tube",
    "segment_widths",
    "thickness_map",
    "segment_count",
]

logger = logging.getLogger(__name__)

_EIGHT = np.ones((3, 3), dtype=bool)
# Max number of (pixel, window offset) pairs handled at once; bounds memory.
_PAINT_CHUNK = 4_000_000
_REFERENCES = ("authors", "complete")
_LENGTHS = ("pixels", "euclidean")


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
def _check_int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"`{name}` must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return int(value)


def _check_id_mask(id_mask: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    id_mask = np.asarray(id_mask)
    if id_mask.ndim != 2:
        raise ValueError(f"`id_mask` must be a 2-D array, got shape {id_mask.shape}")
    if not np.issubdtype(id_mask.dtype, np.integer):
        raise TypeError(f"`id_mask` must be an integer array, got dtype {id_mask.dtype}")
    if shape is not None and id_mask.shape != shape:
        raise ValueError(
            f"`id_mask` must have the shape of `label` {shape}, got {id_mask.shape}"
        )
    return id_mask


# --------------------------------------------------------------------------- #
# step 1: skeleton
# --------------------------------------------------------------------------- #
# Weights of skimage.morphology.thin's neighbour code, as (dy, dx, bit).
_CODE = (
    (-1, -1, 8), (-1, 0, 4), (-1, 1, 2), (0, -1, 16),
    (0, 1, 1), (1, -1, 32), (1, 0, 64), (1, 1, 128),
)


def _thin(label: np.ndarray) -> np.ndarray:
    """``skimage.morphology.thin(label)``, pixel for pixel, touching only the boundary.

    skimage re-codes the whole image twice per iteration; thick vessels need many
    iterations, which dominates on HRF-sized images. Guo-Hall never deletes an
    interior pixel (both look-up tables are False at code 255), so each
    sub-iteration only needs the neighbour codes of foreground pixels with a
    background neighbour; the deletions of a sub-iteration are still applied
    all at once, and we stop after an iteration that deletes nothing, as skimage.
    """
    label = np.asarray(label, dtype=bool)
    if G123_LUT is None or G123_LUT[255] or G123P_LUT[255]:  # pragma: no cover
        return thin(label)
    h, w = label.shape
    stride = w + 2
    padded = np.pad(label, 1).view(np.uint8).ravel().copy()
    offsets = np.array([dy * stride + dx for dy, dx, _ in _CODE], dtype=np.int64)
    bits = np.array([bit for _, _, bit in _CODE], dtype=np.uint8)
    interior = ndi.binary_erosion(label, structure=_EIGHT, border_value=0)
    ys, xs = np.nonzero(label & ~interior)
    boundary = (ys + 1) * stride + (xs + 1)
    marks = np.zeros(padded.size, dtype=bool)  # de-duplicates the next boundary
    changed = True
    while changed:
        changed = False
        for lut in (G123_LUT, G123P_LUT):
            if boundary.size == 0:
                break
            code = np.zeros(boundary.size, dtype=np.uint8)
            for offset, bit in zip(offsets.tolist(), bits.tolist()):
                code |= padded[boundary + offset] * np.uint8(bit)
            delete = lut[code]
            if not delete.any():
                continue
            changed = True
            gone = boundary[delete]
            padded[gone] = 0
            near = (gone[:, None] + offsets[None, :]).ravel()
            near = near[padded[near] == 1]
            marks[boundary[~delete]] = True
            marks[near] = True
            boundary = np.flatnonzero(marks)
            marks[boundary] = False
    return padded.reshape(h + 2, w + 2)[1:-1, 1:-1].astype(bool)


# --------------------------------------------------------------------------- #
# step 2: radius
# --------------------------------------------------------------------------- #
def _window_offsets(half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (dy, dx) of a (2 half + 1)^2 window and their squared lengths, nearest first."""
    dy, dx = np.mgrid[-half : half + 1, -half : half + 1]
    dy, dx = dy.ravel(), dx.ravel()
    d2 = dy * dy + dx * dx
    order = np.argsort(d2, kind="stable")
    return dy[order], dx[order], d2[order]


def _skeleton_radius_floor(
    label: np.ndarray, ys: np.ndarray, xs: np.ndarray, half: int
) -> np.ndarray:
    """floor(r(s)) for skeleton pixels: distance to the nearest background pixel in the window.

    Exact integer arithmetic: squared distances are integers, so the floor of the
    Euclidean distance is ``isqrt(d2)``. A global distance transform is exact when it
    is <= half (that background pixel lies inside the window); the rare thicker
    pixels are searched in their window directly. No background in the window gives
    ``r = half * sqrt(2)``: the vessel is at least as wide as the window can tell, so
    the search region becomes the whole window.
    """
    none_found = int(math.isqrt(2 * half * half))  # floor(half * sqrt(2))
    n = ys.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if label.all():
        return np.full(n, none_found, dtype=np.int64)
    dist = ndi.distance_transform_edt(label)[ys, xs]
    d2 = np.rint(dist * dist).astype(np.int64)
    out = np.empty(n, dtype=np.int64)
    near = d2 <= half * half
    out[near] = _isqrt(d2[near])
    far_all = np.flatnonzero(~near)
    h, w = label.shape
    oy, ox, od2 = _window_offsets(half)
    step = max(1, _PAINT_CHUNK // oy.size)
    for lo in range(0, far_all.size, step):
        far = far_all[lo : lo + step]
        py = ys[far, None] + oy[None, :]
        px = xs[far, None] + ox[None, :]
        inside = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        background = np.zeros(py.shape, dtype=bool)
        background[inside] = ~label[py[inside], px[inside]]
        found = background.any(axis=1)
        first = background.argmax(axis=1)  # offsets are sorted nearest first
        out[far] = np.where(found, _isqrt(od2[first]), none_found)
    return out


def _isqrt(values: np.ndarray) -> np.ndarray:
    """Element-wise exact integer square root (floor) of non-negative int64 values."""
    root = np.floor(np.sqrt(values.astype(np.float64))).astype(np.int64)
    root -= (root * root > values).astype(np.int64)
    root += ((root + 1) * (root + 1) <= values).astype(np.int64)
    return root


# --------------------------------------------------------------------------- #
# step 3: junctions and segments
# --------------------------------------------------------------------------- #
def _remove_junctions(skeleton: np.ndarray) -> np.ndarray:
    """Delete junction pixels one at a time in column-major order (a new array).

    A skeleton pixel whose 3x3 window (itself included, clipped at the border)
    holds more than 3 skeleton pixels is deleted, and the deletion is seen by
    the pixels visited after it, exactly as the authors' sequential MATLAB loop.
    Deletions only lower counts, so only pixels that start above the threshold
    can ever be deleted: we visit just those, in column-major order.
    """
    skel = np.asarray(skeleton, dtype=bool)
    counts = ndi.convolve(skel.astype(np.uint8), _EIGHT.astype(np.uint8), mode="constant")
    # np.nonzero on the transpose walks columns first, then rows: MATLAB order.
    cx, cy = np.nonzero((skel & (counts > 3)).T)
    padded = np.pad(skel, 1)
    for y, x in zip(cy.tolist(), cx.tolist()):
        if np.count_nonzero(padded[y : y + 3, x : x + 3]) > 3:
            padded[y + 1, x + 1] = False
    return padded[1:-1, 1:-1]


def _split_segments(pieces: np.ndarray, *, min_length: int, max_length: int) -> np.ndarray:
    """Label the junction-free skeleton as segments (int32 image, 0 = none).

    Every pixel of ``pieces`` has at most two 8-neighbours, so each component is
    a path or a closed loop. Pieces shorter than ``min_length`` are dropped; a
    piece of L > max_length pixels is cut into n = floor(L / max_length) parts
    along the curve, part k covering walk positions [round(k L / n),
    round((k+1) L / n)). The walk starts at the path end that comes first in
    column-major order; a loop starts at its first pixel in column-major order
    and steps first to the neighbour that comes first in that order.
    Segment ids: pieces in column-major order of their first pixel, then parts
    along the walk.
    """
    h, w = pieces.shape
    # Column-major linear index c = x * h + y; work on the transpose so that
    # NumPy's C order *is* column-major order of the original.
    flat = np.ascontiguousarray(pieces.T).ravel()
    comp, n_comp = ndi.label(pieces.T, structure=_EIGHT)
    comp = comp.ravel()
    out = np.zeros(h * w, dtype=np.int32)
    if n_comp == 0:
        return out.reshape(w, h).T.copy()
    sizes = np.bincount(comp, minlength=n_comp + 1)
    keep = sizes >= min_length
    keep[0] = False
    pixels = np.flatnonzero(keep[comp])  # ascending column-major index
    if pixels.size == 0:
        return out.reshape(w, h).T.copy()

    # Up to two neighbours per pixel, as column-major indices (-1 = none).
    x0, y0 = np.divmod(pixels, h)
    nbr = np.full((pixels.size, 2), -1, dtype=np.int64)
    filled = np.zeros(pixels.size, dtype=np.int64)
    for dx in (-1, 0, 1):  # visiting neighbours in column-major order
        for dy in (-1, 0, 1):
            if dx == 0 and dy == 0:
                continue
            yy, xx = y0 + dy, x0 + dx
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            cand = xx * h + yy
            ok[ok] = flat[cand[ok]]
            rows = np.flatnonzero(ok)
            nbr[rows, filled[rows]] = cand[rows]
            filled[rows] += 1
    index_of = np.full(h * w, -1, dtype=np.int64)
    index_of[pixels] = np.arange(pixels.size)
    degree = filled.tolist()
    nbr_idx = np.where(nbr >= 0, index_of[np.maximum(nbr, 0)], -1).tolist()
    comp_of = comp[pixels]

    # Start of each kept piece: first end point (degree <= 1), else its first pixel.
    is_end = filled <= 1
    start_of: dict[int, int] = {}
    first_of: dict[int, int] = {}
    for i, (c, end) in enumerate(zip(comp_of.tolist(), is_end.tolist())):
        first_of.setdefault(c, i)
        if end:
            start_of.setdefault(c, i)
    order_labels = np.zeros(pixels.size, dtype=np.int32)
    next_id = 1
    for c in sorted(first_of, key=first_of.__getitem__):
        start = start_of.get(c, first_of[c])
        walk = [start]
        prev, cur = -1, start
        while True:
            a, b = nbr_idx[cur]
            nxt = a if a != prev else b
            if degree[cur] == 0 or nxt == -1 or nxt == start:
                break
            walk.append(nxt)
            prev, cur = cur, nxt
        length = len(walk)
        n = max(1, length // max_length) if length > max_length else 1
        pos = np.arange(length)
        part = (n * (2 * pos + 1) - 1) // (2 * length)
        order_labels[walk] = next_id + part
        next_id += n
    out[pixels] = order_labels
    return out.reshape(w, h).T.copy()


# --------------------------------------------------------------------------- #
# steps 4-5: regions and painting
# --------------------------------------------------------------------------- #
def _disc_offsets(q: int, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets p - s with floor(|p - s|) <= q, clipped to the (2 half + 1)^2 window."""
    dy, dx, d2 = _window_offsets(half)
    inside = d2 < (q + 1) * (q + 1)  # floor(d) <= q  <=>  d < q + 1
    return dy[inside], dx[inside]


def _paint_id_mask(
    segments: np.ndarray, reach: np.ndarray, fov: np.ndarray, half: int, *, complete: bool = False
) -> np.ndarray:
    """Sequential painting of METHOD.md 1.5, computed in closed form.

    ``segments`` holds segment ids on skeleton pixels, ``reach`` the integer
    floor(R(s)) there. Painting +i on region i and then -i on skeleton i for
    i = 1..K leaves, at every pixel, +j for the largest j whose region covers
    it, except on a skeleton pixel of segment k when no later region covers it
    (then -k): its own region always covers it. So one max-reduction over all
    (skeleton pixel, disc offset) pairs gives the mask, grouped by radius so
    each group shares one offset stencil. ``complete=True`` paints all regions
    first and then -k on every skeleton pixel of every segment k (skeletons are
    disjoint, so each keeps its full reference skeleton).
    """
    h, w = segments.shape
    ys, xs = np.nonzero(segments)
    ids = segments[ys, xs]
    q = reach[ys, xs]
    region = np.zeros(h * w, dtype=np.int32)
    for radius in np.unique(q).tolist():
        sel = q == radius
        sy, sx, sid = ys[sel], xs[sel], ids[sel]
        oy, ox = _disc_offsets(int(radius), half)
        step = max(1, _PAINT_CHUNK // oy.size)
        for lo in range(0, sy.size, step):
            py = sy[lo : lo + step, None] + oy[None, :]
            px = sx[lo : lo + step, None] + ox[None, :]
            val = np.broadcast_to(sid[lo : lo + step, None], py.shape)
            ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
            np.maximum.at(region, (py[ok] * w + px[ok]), val[ok])
    region = region.reshape(h, w)
    region[~fov] = 0
    mask = region.copy()
    if complete:
        own = segments > 0  # already inside the FOV
    else:
        own = (segments > 0) & (region == segments)
    mask[own] = -segments[own]
    return mask


def _compact_ids(mask: np.ndarray) -> np.ndarray:
    """Renumber the ids present in ``mask`` to 1..K, keeping their order and signs."""
    present = np.unique(np.abs(mask))
    present = present[present > 0]
    if present.size == 0 or present[-1] == present.size:
        return mask
    lut = np.zeros(int(present[-1]) + 1, dtype=np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return (np.sign(mask) * lut[np.abs(mask)]).astype(np.int32)


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def build_id_mask(
    label: np.ndarray,
    fov: np.ndarray,
    *,
    min_length: int = 4,
    max_length: int = 8,
    window: int = 21,
    margin: int = 2,
    reference: str = "authors",
) -> np.ndarray:
    """The segment ID mask of METHOD.md section 1 for one full image.

    Parameters
    ----------
    label, fov : (H, W) array_like
        Binary ground truth and field of view (nonzero = True).
    min_length : int
        Pieces with fewer skeleton pixels are dropped (authors: 4).
    max_length : int
        Pieces longer than this are cut into floor(L / max_length) parts of
        nearly equal length (authors: 8, so segments have 4-15 pixels).
    window : int
        Odd side of the square window that caps the radius search and clips
        each disc (authors: 21).
    margin : int
        Search radius R(s) = r(s) + margin (authors: 2).
    reference : {"authors", "complete"}
        Which skeleton pixels keep ``-i``. ``"authors"`` (default, METHOD.md
        1.5 to the letter): for i = 1..K, +i on region i then -i on skeleton
        i, so region i+1 overwrites the end of skeleton i and the reference
        skeleton is usually shorter than its segment (T_gt = area / ref_len is
        then inflated: a straight bar of width 7 measures about 21).
        ``"complete"``: all regions first (later ids still win overlaps), then
        -i on every pixel of every segment's skeleton. Segment skeletons are
        disjoint, so nothing is lost and every reference skeleton is whole;
        T_gt then measures the true width (a bar of width w gives about w).
        Use it for thickness statistics (thin/thick vessels), or to train with
        an unbiased T_gt.

    Returns
    -------
    (H, W) int32
        ``+i`` on the search region of segment i (later ids win overlaps),
        ``-i`` on the reference skeleton of segment i (see ``reference``),
        0 elsewhere and everywhere outside the FOV. Ids 1..K are all
        present and ordered as MATLAB would label them: pieces by their first
        pixel in column-major order, then parts along the curve. (With
        ``"authors"``, a segment left with no pixel at all is dropped before
        numbering; ``"complete"`` never drops one, so K can differ.)

    Notes
    -----
    r(s) is the Euclidean distance from skeleton pixel s to the nearest
    background pixel of ``label`` inside the window around s (pixels beyond
    the image border are not background). If the window holds no background,
    r(s) = (window // 2) * sqrt(2), the farthest in-window distance, so the
    search region is the whole window (any r >= that minus the margin gives
    the same region). The skeleton is exactly ``skimage.morphology.thin``
    (computed by a boundary-only equivalent, tested pixel for pixel).
    Segments are built on the full image; METHOD.md's authors built them per
    64x64 patch. With ``reference="authors"`` region i+1 overwrites part of
    skeleton i, so most reference skeletons (-i) are shorter than their
    segment (on DRIVE 21, 21 of 858 segments keep no -i pixel at all); that
    is the authors' semantics and the default. The two modes paint the same
    regions: off the skeleton, |M| is identical (up to renumbering).

    Examples
    --------
    >>> bar = np.zeros((9, 30), bool); bar[3:6, 2:28] = True
    >>> mask = build_id_mask(bar, np.ones_like(bar))
    >>> int(mask.max()), mask.dtype.name
    (3, 'int32')
    """
    label = check_binary("label", label)
    fov = check_binary("fov", fov)
    if fov.shape != label.shape:
        raise ValueError(f"`fov` must have the shape of `label` {label.shape}, got {fov.shape}")
    min_length = _check_int(min_length, "min_length", minimum=1)
    max_length = _check_int(max_length, "max_length", minimum=1)
    window = _check_int(window, "window", minimum=1)
    if window % 2 == 0:
        raise ValueError(f"`window` must be odd, got {window}")
    margin = _check_int(margin, "margin", minimum=0)
    if not isinstance(reference, str) or reference not in _REFERENCES:
        raise ValueError(
            f"`reference` must be one of {', '.join(map(repr, _REFERENCES))}, got {reference!r}"
        )
    half = window // 2

    skeleton = _thin(label)
    pieces = _remove_junctions(skeleton)
    segments = _split_segments(pieces, min_length=min_length, max_length=max_length)
    segments[~fov] = 0
    ys, xs = np.nonzero(segments)
    reach = np.zeros(label.shape, dtype=np.int64)
    reach[ys, xs] = _skeleton_radius_floor(label, ys, xs, half) + margin
    painted = _paint_id_mask(segments, reach, fov, half, complete=reference == "complete")
    mask = _compact_ids(painted)
    logger.debug("build_id_mask: %d segments on a %s image", int(mask.max(initial=0)), mask.shape)
    return mask


def skeleton_tube(label: np.ndarray, *, radius: int = 1) -> np.ndarray:
    """The ground-truth skeleton thickened to a thin tube, kept inside the label.

    The Skeleton Recall target (Kirchhoff et al., ECCV 2024): the skeleton (here
    ``thin(label)``, the same skeleton as the ID mask; Kirchhoff use
    ``skeletonize``) dilated by ``disk(radius)`` and intersected with the label,
    as their 2-D code does. Their 2-D code dilates twice with a cross, which
    equals ``radius=2``; ``radius=0`` gives the bare skeleton.

    Returns an (H, W) bool array.
    """
    label = check_binary("label", label)
    radius = _check_int(radius, "radius", minimum=0)
    skeleton = _thin(label)
    if radius == 0:
        return skeleton
    return ndi.binary_dilation(skeleton, structure=disk(radius).astype(bool)) & label


def _reference_step_lengths(reference: np.ndarray) -> np.ndarray:
    """Curve length each reference-skeleton pixel stands for (float64, 0 off it).

    The mean length of the steps to its 8-neighbours on the reference skeleton
    (1 for a horizontal/vertical step, sqrt(2) for a diagonal one); 1 for an
    isolated pixel. Junction-free skeletons give every pixel at most two
    neighbours, so the sum over a segment is its Euclidean length, to within
    one step at the ends.
    """
    h, w = reference.shape
    padded = np.pad(reference, 1)
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            near = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            total += near * math.hypot(dy, dx)
            count += near
    steps = np.where(count > 0, total / np.maximum(count, 1), 1.0)
    return np.where(reference, steps, 0.0)


def _check_length(length: object) -> str:
    if not isinstance(length, str) or length not in _LENGTHS:
        raise ValueError(
            f"`length` must be one of {', '.join(map(repr, _LENGTHS))}, got {length!r}"
        )
    return length


def segment_widths(
    label: np.ndarray, id_mask: np.ndarray, *, length: str = "pixels"
) -> np.ndarray:
    """Ground-truth mean thickness of every segment, indexed by segment id.

    T_gt_i = #{label and |M| = i} / len_i: vessel area in the search region
    divided by the reference skeleton length (M = -i). Returns a float64
    array of length max|M| + 1; entry 0, and any segment whose reference
    skeleton is absent (for example overwritten, or cropped away), is NaN.

    ``length="pixels"`` (default) counts the -i pixels: exactly METHOD.md 2.2,
    the T_gt the segment loss uses. ``length="euclidean"`` weights each -i pixel
    by its step lengths (sqrt(2) along diagonals, see
    `_reference_step_lengths`), because a pixel count under-measures a slanted
    centreline by up to sqrt(2) and so over-estimates the width of slanted
    vessels; use it to measure vessel width.

    Which mask to pass: with ``build_id_mask(..., reference="complete")``
    every reference skeleton is whole and a straight bar of width w measures
    exactly w (away from its ends). With the default ``reference="authors"``
    region i+1 overwrites the end of skeleton i, the reference length shrinks
    and T_gt over-estimates the width (a bar of width 1 measures 1.6, width 3
    about 5.4 to 6, width 7 about 21 to 28): fine for reproducing the authors'
    loss, wrong as a width.
    """
    label = check_binary("label", label)
    id_mask = _check_id_mask(id_mask, label.shape)
    length = _check_length(length)
    ids = np.abs(id_mask).astype(np.int64).ravel()
    size = int(ids.max(initial=0)) + 1
    area = np.bincount(ids, weights=label.ravel(), minlength=size)
    reference = id_mask < 0
    if length == "euclidean":
        per_pixel = _reference_step_lengths(reference)
    else:
        per_pixel = reference.astype(np.float64)
    ref_len = np.bincount(ids, weights=per_pixel.ravel(), minlength=size)
    widths = np.full(size, np.nan)
    ok = ref_len > 0
    ok[0] = False
    widths[ok] = area[ok] / ref_len[ok]
    return widths


def thickness_map(
    label: np.ndarray, id_mask: np.ndarray, *, length: str = "euclidean"
) -> np.ndarray:
    """Per-pixel segment thickness on the label, for thin/thick sensitivity.

    Each label pixel gets the width of the segment region it lies in
    (`segment_widths` with ``length``; Euclidean by default since this map is
    meant as a vessel width); 0 on background, outside every region, and in
    regions of segments whose width is undefined (no reference skeleton).
    Pass ``build_id_mask(label, fov, reference="complete")`` to get true
    widths; an ``"authors"`` mask inflates them (see `segment_widths`).
    Returns (H, W) float32.
    """
    label = check_binary("label", label)
    id_mask = _check_id_mask(id_mask, label.shape)
    widths = np.nan_to_num(segment_widths(label, id_mask, length=length), nan=0.0)
    return np.where(label, widths[np.abs(id_mask)], 0.0).astype(np.float32)


def segment_count(id_mask: np.ndarray) -> int:
    """Number of distinct segments present (distinct nonzero |id|).

    Equals K = max|M| for a full mask from :func:`build_id_mask`; for a crop it
    counts the segments that reach into it.
    """
    id_mask = _check_id_mask(id_mask)
    ids = np.unique(np.abs(id_mask))
    return int(np.count_nonzero(ids))
