"""Tests for keras_vessel.data.segments: invariants, synthetic shapes and plain-loop oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from skimage.draw import circle_perimeter, disk as draw_disk, line
from skimage.morphology import dilation, disk, thin

from keras_vessel.data import segments
from keras_vessel.data.datasets import generate_sample
from keras_vessel.data.segments import (
    build_id_mask,
    segment_count,
    segment_widths,
    skeleton_tube,
    thickness_map,
)

HALF = 10  # window 21


# --------------------------------------------------------------------------- #
# synthetic shapes
# --------------------------------------------------------------------------- #
def horizontal_bar(width: int, *, length: int = 60, shape=(41, 80), left: int = 10) -> np.ndarray:
    label = np.zeros(shape, dtype=bool)
    top = shape[0] // 2 - width // 2
    label[top : top + width, left : left + length] = True
    return label


def y_junction(shape=(60, 60), width: int = 3) -> np.ndarray:
    skel = np.zeros(shape, dtype=bool)
    h, w = shape
    centre = (h // 2, w // 2)
    for end in [(h - 5, w // 2), (4, w // 7), (4, w - w // 7)]:
        rr, cc = line(*centre, *end)
        skel[rr, cc] = True
    return ndi.binary_dilation(skel, structure=disk(width // 2).astype(bool))


def ring(shape=(64, 64), radius: int = 22, width: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.hypot(yy - shape[0] // 2, xx - shape[1] // 2)
    return np.abs(d - radius) <= width / 2


def random_vessels(seed: int, shape=(70, 90), n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    skel = np.zeros(shape, dtype=bool)
    for _ in range(n):
        r0, r1 = rng.integers(0, shape[0], size=2)
        c0, c1 = rng.integers(0, shape[1], size=2)
        rr, cc = line(r0, c0, r1, c1)
        skel[rr, cc] = True
    width = rng.integers(0, 4)
    return ndi.binary_dilation(skel, structure=disk(int(width)).astype(bool)) if width else skel


def disc_fov(shape, margin: int = 4) -> np.ndarray:
    fov = np.zeros(shape, dtype=bool)
    rr, cc = draw_disk((shape[0] / 2, shape[1] / 2), min(shape) / 2 - margin, shape=shape)
    fov[rr, cc] = True
    return fov


# --------------------------------------------------------------------------- #
# oracles: plain Python loops over pixels, written independently of the module
# --------------------------------------------------------------------------- #
def oracle_remove_junctions(skel: np.ndarray) -> np.ndarray:
    s = skel.copy()
    h, w = s.shape
    for x in range(w):  # MATLAB order: columns, then rows
        for y in range(h):
            if not s[y, x]:
                continue
            count = 0
            for yy in range(max(0, y - 1), min(h, y + 2)):
                for xx in range(max(0, x - 1), min(w, x + 2)):
                    count += bool(s[yy, xx])
            if count > 3:
                s[y, x] = False
    return s


def oracle_radius(label: np.ndarray, y: int, x: int, half: int = HALF) -> float:
    h, w = label.shape
    best = math.inf
    for yy in range(max(0, y - half), min(h, y + half + 1)):
        for xx in range(max(0, x - half), min(w, x + half + 1)):
            if not label[yy, xx]:
                best = min(best, math.hypot(yy - y, xx - x))
    return half * math.sqrt(2) if best == math.inf else best


def oracle_paint(segs: np.ndarray, reach: np.ndarray, fov: np.ndarray, half: int = HALF):
    """Sequential painting of METHOD.md 1.5 with floor(|p - s|) <= R(s)."""
    h, w = segs.shape
    out = np.zeros((h, w), dtype=np.int64)
    for i in range(1, int(segs.max(initial=0)) + 1):
        pts = [(y, x) for y in range(h) for x in range(w) if segs[y, x] == i]
        for y, x in pts:
            for py in range(h):
                for px in range(w):
                    if abs(py - y) > half or abs(px - x) > half or not fov[py, px]:
                        continue
                    if math.floor(math.sqrt((py - y) ** 2 + (px - x) ** 2)) <= reach[y, x]:
                        out[py, px] = i
        for y, x in pts:
            out[y, x] = -i
    return out


def oracle_compact(mask: np.ndarray) -> np.ndarray:
    ids = sorted({abs(int(v)) for v in mask.ravel() if v})
    new = {old: k + 1 for k, old in enumerate(ids)}
    out = np.zeros_like(mask)
    for (y, x), v in np.ndenumerate(mask):
        if v:
            out[y, x] = int(np.sign(v)) * new[abs(int(v))]
    return out


def oracle_id_mask(label: np.ndarray, fov: np.ndarray, margin: int = 2) -> np.ndarray:
    """build_id_mask from oracles; only the splitting is shared with the module."""
    pieces = oracle_remove_junctions(thin(label))
    segs = segments._split_segments(pieces, min_length=4, max_length=8)
    segs[~fov] = 0
    reach = np.zeros(label.shape, dtype=np.int64)
    for y, x in zip(*np.nonzero(segs)):
        reach[y, x] = math.floor(oracle_radius(label, y, x) + margin)
    return oracle_compact(oracle_paint(segs, reach, fov))


def neighbour_counts(skel: np.ndarray) -> np.ndarray:
    return ndi.convolve(skel.astype(np.int32), np.ones((3, 3), np.int32), mode="constant")


# --------------------------------------------------------------------------- #
# invariants shared by synthetic and real labels
# --------------------------------------------------------------------------- #
def check_invariants(label: np.ndarray, fov: np.ndarray, mask: np.ndarray) -> int:
    assert mask.dtype == np.int32 and mask.shape == label.shape
    assert not mask[~fov].any(), "nonzero ids outside the FOV"
    skel = thin(label)
    assert skel[mask < 0].all(), "a -i pixel is not on the skeleton"
    k = int(np.abs(mask).max(initial=0))
    np.testing.assert_array_equal(np.unique(np.abs(mask[mask != 0])), np.arange(1, k + 1))
    reference_lengths = np.bincount(-mask[mask < 0], minlength=k + 1)[1:]
    assert reference_lengths.max(initial=0) <= 15
    # the segments come from the junction-free skeleton: at most 2 neighbours each
    pieces = segments._remove_junctions(skel)
    assert pieces[mask < 0].all()
    assert (neighbour_counts(pieces)[pieces] <= 3).all()
    return k


# --------------------------------------------------------------------------- #
# build_id_mask
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("width", [1, 3, 5, 7, 9, 15])
def test_radius_matches_bar_half_width(width):
    label = horizontal_bar(width)
    skel = thin(label)
    ys, xs = np.nonzero(skel)
    interior = (xs > 10 + width) & (xs < 70 - width)
    r_floor = segments._skeleton_radius_floor(label, ys[interior], xs[interior], HALF)
    exact = np.array([oracle_radius(label, y, x) for y, x in zip(ys[interior], xs[interior])])
    np.testing.assert_array_equal(r_floor, np.floor(exact))
    assert np.all(np.abs(exact - width / 2) <= 1.0)


@pytest.mark.parametrize("width", [19, 21, 23, 31])
def test_radius_at_and_beyond_the_window(width):
    # width 19: background at 10 px; 21: at 11 px, only diagonally inside the
    # window; 23+: no background in the window -> r = 10 * sqrt(2).
    label = horizontal_bar(width, length=70, shape=(61, 90))
    fov = np.ones_like(label)
    skel = thin(label)
    ys, xs = np.nonzero(skel)
    got = segments._skeleton_radius_floor(label, ys, xs, HALF)
    want = [math.floor(oracle_radius(label, y, x)) for y, x in zip(ys, xs)]
    np.testing.assert_array_equal(got, want)
    if width >= 23:
        assert got.max() == 14
    check_invariants(label, fov, build_id_mask(label, fov))


def test_radius_without_any_background():
    label = np.ones((30, 30), dtype=bool)
    got = segments._skeleton_radius_floor(label, np.array([15, 0]), np.array([15, 0]), HALF)
    np.testing.assert_array_equal(got, [14, 14])


def test_search_region_of_a_bar_has_the_disc_width():
    width = 5  # r = 3, R = 5: the region spans 2 * 5 + 1 rows around the centreline
    label = horizontal_bar(width, length=60)
    mask = build_id_mask(label, np.ones_like(label))
    rows = np.nonzero((mask != 0)[:, 40])[0]
    centre = label.shape[0] // 2
    np.testing.assert_array_equal(rows, np.arange(centre - 5, centre + 6))


@pytest.mark.parametrize(
    "make",
    [
        lambda: horizontal_bar(3),
        lambda: horizontal_bar(6, length=70, left=0),  # touches the left border
        lambda: y_junction(),
        lambda: ring(),
        lambda: random_vessels(0),
        lambda: random_vessels(1),
    ],
    ids=["bar", "border-bar", "y-junction", "ring", "random0", "random1"],
)
def test_invariants_on_synthetic_shapes(make):
    label = make()
    for fov in (np.ones_like(label), disc_fov(label.shape)):
        label_in, fov_in = label.copy(), fov.copy()
        mask = build_id_mask(label, fov)
        np.testing.assert_array_equal(label, label_in)
        np.testing.assert_array_equal(fov, fov_in)
        k = check_invariants(label, fov, mask)
        assert k >= 1


def test_y_junction_pixel_is_not_a_segment():
    label = y_junction(width=1)
    mask = build_id_mask(label, np.ones_like(label))
    skel = thin(label)
    junctions = skel & (neighbour_counts(skel) > 3)
    assert junctions.any()
    # the branch point itself (first junction pixel in column-major order) is deleted
    cx, cy = np.nonzero(junctions.T)
    assert mask[cy[0], cx[0]] >= 0
    assert segment_count(mask) >= 3


def test_ring_without_end_point_is_split_evenly():
    skel = np.zeros((64, 64), dtype=bool)
    rr, cc = circle_perimeter(32, 32, 20)
    skel[rr, cc] = True
    pieces = segments._remove_junctions(skel)
    segs = segments._split_segments(pieces, min_length=4, max_length=8)
    n_pixels = int(pieces.sum())
    lengths = np.bincount(segs[segs > 0])[1:]
    assert lengths.size == n_pixels // 8
    assert lengths.sum() == n_pixels
    assert lengths.max() - lengths.min() <= 1
    labelled, count = ndi.label(segs == 1, structure=np.ones((3, 3)))
    assert count == 1


@pytest.mark.parametrize("length", [3, 4, 8, 9, 15, 16, 23, 60, 119])
def test_straight_piece_split_lengths_and_order(length):
    skel = np.zeros((5, 130), dtype=bool)
    skel[2, 3 : 3 + length] = True
    segs = segments._split_segments(skel, min_length=4, max_length=8)
    if length < 4:
        assert not segs.any()
        return
    n = max(1, length // 8) if length > 8 else 1
    ids = segs[2, 3 : 3 + length]
    # ids increase along the walk from the first end point (the leftmost pixel)
    assert ids[0] == 1 and np.all(np.diff(ids) >= 0) and ids[-1] == n
    sizes = np.bincount(ids)[1:]
    assert set(sizes.tolist()) <= {length // n, -(-length // n)}
    assert 4 <= sizes.min() and sizes.max() <= 15


def test_segment_ids_follow_column_major_order():
    skel = np.zeros((20, 30), dtype=bool)
    skel[15, 2:7] = True  # leftmost piece, lower row: first in column-major order
    skel[3, 10:15] = True
    skel[12, 10:15] = True  # same columns, lower: after the piece above
    segs = segments._split_segments(skel, min_length=4, max_length=8)
    assert segs[15, 2] == 1 and segs[3, 10] == 2 and segs[12, 10] == 3


def test_empty_label_gives_zero_mask():
    label = np.zeros((40, 50), dtype=bool)
    mask = build_id_mask(label, np.ones_like(label))
    assert mask.dtype == np.int32 and mask.shape == (40, 50) and not mask.any()
    assert segment_count(mask) == 0
    assert segment_widths(label, mask).shape == (1,)
    assert not thickness_map(label, mask).any()


def test_fov_excluding_everything_gives_zero_mask():
    label = horizontal_bar(3)
    assert not build_id_mask(label, np.zeros_like(label)).any()


def test_accepts_uint8_inputs_like_gif_files():
    label = horizontal_bar(3)
    want = build_id_mask(label, np.ones_like(label))
    got = build_id_mask(label.astype(np.uint8) * 255, np.full(label.shape, 255, np.uint8))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(4))
def test_fast_thinning_matches_skimage(seed):
    rng = np.random.default_rng(seed)
    images = [
        rng.random((37, 41)) < 0.5,
        ndi.binary_closing(rng.random((50, 45)) < 0.6),
        random_vessels(seed),
        np.ones((23, 30), dtype=bool),
        np.zeros((4, 4), dtype=bool),
        np.kron(random_vessels(seed + 10, shape=(30, 40)), np.ones((5, 5), dtype=bool)),
    ]
    for image in images:
        image_in = image.copy()
        np.testing.assert_array_equal(segments._thin(image), thin(image))
        np.testing.assert_array_equal(image, image_in)


@pytest.mark.parametrize("seed", range(6))
def test_junction_removal_matches_loop_oracle(seed):
    rng = np.random.default_rng(seed)
    # dense random pixels stress the sequential semantics; thinned blobs look real
    noise = rng.random((23, 31)) < (0.25 + 0.1 * (seed % 3))
    blobs = thin(ndi.binary_opening(rng.random((40, 40)) < 0.55))
    for skel in (noise, blobs, thin(random_vessels(seed))):
        skel_in = skel.copy()
        np.testing.assert_array_equal(
            segments._remove_junctions(skel), oracle_remove_junctions(skel)
        )
        np.testing.assert_array_equal(skel, skel_in)


@pytest.mark.parametrize("seed", range(3))
def test_painting_matches_loop_oracle(seed):
    rng = np.random.default_rng(seed)
    shape = (26, 33)
    fov = disc_fov(shape, margin=1)
    segs = np.zeros(shape, dtype=np.int32)
    points = rng.choice(shape[0] * shape[1], size=14, replace=False)
    segs.flat[points] = rng.integers(1, 6, size=14)
    segs[~fov] = 0
    reach = np.zeros(shape, dtype=np.int64)
    reach[segs > 0] = rng.integers(2, 17, size=int((segs > 0).sum()))
    got = segments._paint_id_mask(segs, reach, fov, HALF)
    np.testing.assert_array_equal(got, oracle_paint(segs, reach, fov))


@pytest.mark.parametrize(
    "make",
    [lambda: y_junction(shape=(40, 40)), lambda: random_vessels(3, shape=(36, 44), n=4)],
    ids=["y-junction", "random"],
)
def test_build_id_mask_matches_oracle_pipeline(make):
    label = make()
    fov = disc_fov(label.shape, margin=2)
    np.testing.assert_array_equal(build_id_mask(label, fov), oracle_id_mask(label, fov))


def test_chunked_work_gives_the_same_mask(monkeypatch):
    label = horizontal_bar(27, length=70, shape=(61, 90)) | random_vessels(4, shape=(61, 90))
    fov = disc_fov(label.shape)
    want = build_id_mask(label, fov)
    monkeypatch.setattr(segments, "_PAINT_CHUNK", 500)  # a few pixels per chunk
    np.testing.assert_array_equal(build_id_mask(label, fov), want)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"min_length": 0}, ValueError, "min_length.*>= 1.*got 0"),
        ({"max_length": 2.5}, TypeError, "max_length.*int.*2.5"),
        ({"window": 20}, ValueError, "window.*odd.*got 20"),
        ({"margin": -1}, ValueError, "margin.*>= 0.*got -1"),
        ({"margin": True}, TypeError, "margin.*int.*True"),
    ],
)
def test_build_id_mask_rejects_bad_options(kwargs, error, match):
    label = horizontal_bar(3)
    with pytest.raises(error, match=match):
        build_id_mask(label, np.ones_like(label), **kwargs)


def test_build_id_mask_rejects_bad_arrays():
    label = horizontal_bar(3)
    with pytest.raises(ValueError, match=r"`fov` must have the shape of `label` \(41, 80\)"):
        build_id_mask(label, np.ones((40, 80), bool))
    with pytest.raises(ValueError, match=r"`label` must be a 2-D array, got shape \(2, 41, 80\)"):
        build_id_mask(np.stack([label, label]), np.ones_like(label))
    with pytest.raises(TypeError, match="`label` must be a boolean or numeric array"):
        build_id_mask(np.full((3, 3), "a"), np.ones((3, 3), bool))


# --------------------------------------------------------------------------- #
# skeleton_tube
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_skeleton_tube_matches_reference(radius):
    label = random_vessels(5)
    label_in = label.copy()
    tube = skeleton_tube(label, radius=radius)
    want = dilation(thin(label).astype(np.uint8), disk(radius)).astype(bool) & label
    assert tube.dtype == bool
    np.testing.assert_array_equal(tube, want)
    np.testing.assert_array_equal(label, label_in)
    assert thin(label)[~tube].sum() == 0  # the skeleton is always inside the tube


def test_skeleton_tube_width_on_a_bar():
    label = horizontal_bar(9)
    tube = skeleton_tube(label, radius=1)
    assert tube[:, 40].sum() == 3
    assert not tube[~label].any()


def test_skeleton_tube_rejects_negative_radius():
    with pytest.raises(ValueError, match="radius.*>= 0.*got -1"):
        skeleton_tube(horizontal_bar(3), radius=-1)


# --------------------------------------------------------------------------- #
# widths and counts
# --------------------------------------------------------------------------- #
def test_segment_widths_on_a_hand_made_mask():
    label = np.zeros((6, 8), dtype=bool)
    label[1:4, 0:4] = True  # 12 vessel pixels in region 1
    label[1:3, 5:8] = True  # 6 vessel pixels in region 2
    mask = np.zeros((6, 8), dtype=np.int32)
    mask[0:5, 0:4] = 1
    mask[2, 0:4] = -1  # reference length 4 -> T = 12 / 4
    mask[0:4, 5:8] = 2
    mask[1, 5:8] = -2  # reference length 3 -> T = 6 / 3
    mask[5, 7] = 3  # a region without reference skeleton -> NaN
    widths = segment_widths(label, mask)
    np.testing.assert_allclose(widths[1:3], [3.0, 2.0])
    assert np.isnan(widths[0]) and np.isnan(widths[3])
    tmap = thickness_map(label, mask)
    assert tmap.dtype == np.float32
    np.testing.assert_array_equal(tmap[label & (np.abs(mask) == 1)], 3.0)
    np.testing.assert_array_equal(tmap[label & (np.abs(mask) == 2)], 2.0)
    assert not tmap[~label].any()
    assert segment_count(mask) == 3
    assert segment_count(mask[:, 5:]) == 2  # a crop counts the segments in it


def test_segment_widths_match_loop_oracle():
    label = random_vessels(2)
    fov = np.ones_like(label)
    mask = build_id_mask(label, fov)
    widths = segment_widths(label, mask)
    for i in range(1, segment_count(mask) + 1):
        ref = sum(1 for v in mask.ravel() if v == -i)
        area = sum(1 for v, g in zip(mask.ravel(), label.ravel()) if abs(v) == i and g)
        if ref:
            assert widths[i] == pytest.approx(area / ref)
        else:
            assert np.isnan(widths[i])


def test_euclidean_widths_match_loop_oracle():
    label = random_vessels(2)
    mask = build_id_mask(label, np.ones_like(label), reference="complete")
    widths = segment_widths(label, mask, length="euclidean")
    h, w = mask.shape
    ref_len: dict[int, float] = {}
    for (y, x), v in np.ndenumerate(mask):
        if v >= 0:
            continue
        steps = [
            math.hypot(dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w and mask[y + dy, x + dx] < 0
        ]
        ref_len[-v] = ref_len.get(-v, 0.0) + (sum(steps) / len(steps) if steps else 1.0)
    for i in range(1, segment_count(mask) + 1):
        area = int((label & (np.abs(mask) == i)).sum())
        assert widths[i] == pytest.approx(area / ref_len[i])


def test_authors_reference_inflates_bar_widths():
    # METHOD.md's painting lets region i+1 overwrite part of skeleton i, so T_gt
    # overestimates thick vessels (ref_len shrinks by about R); a 1-px bar stays thin.
    widths = {}
    for width in (1, 3, 7):
        bar = horizontal_bar(width, length=64)
        mask = build_id_mask(bar, np.ones_like(bar))
        widths[width] = float(np.median(thickness_map(bar, mask)[bar]))
    assert 1.0 <= widths[1] <= 2.0
    assert widths[1] < widths[3] < widths[7]
    assert widths[3] >= 5.0 and widths[7] >= 20.0


def interior(label: np.ndarray, *, left: int = 20, length: int = 120, keep: int = 30) -> np.ndarray:
    cols = np.zeros(label.shape, dtype=bool)
    cols[:, left + keep : left + length - keep] = True
    return label & cols


@pytest.mark.parametrize("length", ["pixels", "euclidean"])
@pytest.mark.parametrize("width", range(1, 9))
def test_complete_reference_measures_bar_width(width, length):
    bar = horizontal_bar(width, length=120, shape=(41, 160), left=20)
    mask = build_id_mask(bar, np.ones_like(bar), reference="complete")
    inner = interior(bar)
    tmap = thickness_map(bar, mask, length=length)
    assert np.abs(tmap[inner] - width).max() <= 0.5
    # the per-segment widths agree with the map: every interior pixel's segment measures ~w
    widths = segment_widths(bar, mask, length=length)
    np.testing.assert_allclose(widths[np.unique(np.abs(mask[inner]))], width, atol=0.5)


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8])
def test_euclidean_length_measures_slanted_bar_width(width):
    # a 45-degree bar: each column holds n pixels, so its perpendicular width is
    # n / sqrt(2); counting skeleton pixels would measure n instead
    yy, xx = np.mgrid[:120, :120]
    bar = (np.abs(yy - xx) / math.sqrt(2) <= width / 2) & (xx > 10) & (xx < 110)
    n = int(bar[:, 60].sum())
    mask = build_id_mask(bar, np.ones_like(bar), reference="complete")
    inner = bar & (xx > 35) & (xx < 85)
    np.testing.assert_allclose(thickness_map(bar, mask)[inner], n / math.sqrt(2), atol=0.15)
    np.testing.assert_allclose(thickness_map(bar, mask, length="pixels")[inner], n, atol=0.3)


def oracle_complete_mask(label: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Every region painted in order, then -i on the whole skeleton of segment i."""
    pieces = oracle_remove_junctions(thin(label))
    segs = segments._split_segments(pieces, min_length=4, max_length=8)
    segs[~fov] = 0
    reach = np.zeros(label.shape, dtype=np.int64)
    for y, x in zip(*np.nonzero(segs)):
        reach[y, x] = math.floor(oracle_radius(label, y, x) + 2)
    h, w = label.shape
    regions = np.zeros((h, w), dtype=np.int64)
    for i in range(1, int(segs.max(initial=0)) + 1):
        for y, x in zip(*np.nonzero(segs == i)):
            for py in range(max(0, y - HALF), min(h, y + HALF + 1)):
                for px in range(max(0, x - HALF), min(w, x + HALF + 1)):
                    if fov[py, px] and math.floor(math.hypot(py - y, px - x)) <= reach[y, x]:
                        regions[py, px] = i
    for i in range(1, int(segs.max(initial=0)) + 1):
        regions[segs == i] = -i
    return oracle_compact(regions)


@pytest.mark.parametrize(
    "make",
    [lambda: y_junction(shape=(40, 40)), lambda: random_vessels(3, shape=(36, 44), n=4)],
    ids=["y-junction", "random"],
)
def test_complete_mask_matches_oracle(make):
    label = make()
    fov = disc_fov(label.shape, margin=2)
    np.testing.assert_array_equal(
        build_id_mask(label, fov, reference="complete"), oracle_complete_mask(label, fov)
    )


def check_complete(label: np.ndarray, fov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    authors = build_id_mask(label, fov)
    complete = build_id_mask(label, fov, reference="complete")
    k = check_invariants(label, fov, complete)
    # every segment pixel inside the FOV keeps its -i: the references are whole
    segs = segments._split_segments(
        segments._remove_junctions(thin(label)), min_length=4, max_length=8
    )
    segs[~fov] = 0
    np.testing.assert_array_equal(complete < 0, segs > 0)
    ref_len = np.bincount(-complete[complete < 0], minlength=k + 1)[1:]
    assert ref_len.min(initial=4) >= (4 if fov.all() else 1)  # no segment without -i
    # same regions as the authors' mask: a monotone id map sends complete ids to authors ids
    assert k >= int(np.abs(authors).max(initial=0))
    off = complete >= 0
    np.testing.assert_array_equal(complete[off] != 0, authors[off] != 0)
    pairs = np.unique(np.stack([complete[off], authors[off]]), axis=1)
    assert np.unique(pairs[0]).size == pairs.shape[1]  # one authors id per complete id
    assert np.all(np.diff(pairs[1]) >= 0)  # order kept
    return authors, complete


@pytest.mark.parametrize(
    "make",
    [
        lambda: horizontal_bar(7),
        y_junction,
        ring,
        lambda: random_vessels(0),
        lambda: random_vessels(1),
    ],
    ids=["bar", "y-junction", "ring", "random0", "random1"],
)
def test_complete_reference_keeps_every_skeleton_pixel(make):
    label = make()
    for fov in (np.ones_like(label), disc_fov(label.shape)):
        label_in = label.copy()
        check_complete(label, fov)
        np.testing.assert_array_equal(label, label_in)


def perfect_prediction_ratios(label: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """T_pred / T_gt of METHOD.md 2.2 for B = label, written in NumPy."""
    ids = np.abs(mask).ravel()
    k = int(ids.max(initial=0)) + 1
    area = np.bincount(ids, weights=label.ravel(), minlength=k)
    ref_len = np.bincount(ids, weights=(mask < 0).ravel(), minlength=k)
    pred_len = np.bincount(ids, weights=thin(label).ravel(), minlength=k)
    ok = ref_len > 0
    ok[0] = False
    t_gt = area[ok] / ref_len[ok]
    t_pred = np.where(pred_len[ok] > 0.8 * ref_len[ok], area[ok] / np.maximum(pred_len[ok], 1), 0.0)
    return t_pred / t_gt


def test_perfect_prediction_matches_with_complete_reference():
    sample = generate_sample(0, size=256)
    authors = perfect_prediction_ratios(sample.label, build_id_mask(sample.label, sample.fov))
    complete = perfect_prediction_ratios(
        sample.label, build_id_mask(sample.label, sample.fov, reference="complete")
    )
    assert np.median(complete) == pytest.approx(1.0, abs=0.02)
    assert np.mean(np.abs(complete - 1) <= 0.2) >= 0.8
    assert np.median(authors) < 0.75  # the authors' reference penalises a perfect prediction


def test_thickness_map_matches_synthetic_nominal_widths():
    errors: dict[float, list[np.ndarray]] = {}
    for index in range(3):
        sample, truth = generate_sample(index, size=256, return_widths=True)
        mask = build_id_mask(sample.label, sample.fov, reference="complete")
        tmap = thickness_map(sample.label, mask)
        known = sample.label & (tmap > 0)
        for width in np.unique(truth.width_map[known]):
            sel = known & (truth.width_map == width)
            errors.setdefault(float(width), []).append(tmap[sel] - width)
    medians = {w: float(np.median(np.concatenate(e))) for w, e in errors.items()}
    assert set(medians) >= {1.0, 2.0, 4.0, 8.0}
    for width, error in medians.items():
        assert abs(error) <= 0.6, (width, medians)
    measured = [w + medians[w] for w in sorted(medians)]
    assert np.all(np.diff(measured) > 0)


@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        (
            build_id_mask,
            {"reference": "full"},
            "`reference` must be one of 'authors', 'complete', got 'full'",
        ),
        (build_id_mask, {"reference": None}, "`reference` must be one of .*got None"),
        (
            segment_widths,
            {"length": "chord"},
            "`length` must be one of 'pixels', 'euclidean', got 'chord'",
        ),
        (thickness_map, {"length": 1}, "`length` must be one of .*got 1"),
    ],
)
def test_rejects_bad_reference_and_length(func, kwargs, match):
    label = horizontal_bar(3)
    second = np.ones_like(label) if func is build_id_mask else np.zeros(label.shape, np.int32)
    with pytest.raises(ValueError, match=match):
        func(label, second, **kwargs)


def test_width_functions_reject_bad_masks():
    label = horizontal_bar(3)
    with pytest.raises(TypeError, match="`id_mask` must be an integer array, got dtype float32"):
        segment_widths(label, np.zeros(label.shape, np.float32))
    with pytest.raises(ValueError, match=r"`id_mask` must have the shape of `label` \(41, 80\)"):
        thickness_map(label, np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="`id_mask` must be a 2-D array"):
        segment_count(np.zeros(4, np.int32))


# --------------------------------------------------------------------------- #
# a real DRIVE label
# --------------------------------------------------------------------------- #
@pytest.mark.data
def test_drive_label_invariants(drive_root):
    label = np.asarray(Image.open(drive_root / "training/1st_manual/21_manual1.gif")) > 0
    fov = np.asarray(Image.open(drive_root / "training/mask/21_training_mask.gif")) > 0
    label_in, fov_in = label.copy(), fov.copy()
    mask = build_id_mask(label, fov)
    np.testing.assert_array_equal(label, label_in)
    np.testing.assert_array_equal(fov, fov_in)
    np.testing.assert_array_equal(segments._thin(label), thin(label))
    k = check_invariants(label, fov, mask)
    assert 300 <= k <= 3000
    # the segments cover nearly all of the vessel inside the FOV
    assert (mask[label & fov] != 0).mean() > 0.95
    pieces = segments._remove_junctions(thin(label))
    lengths = np.bincount(segments._split_segments(pieces, min_length=4, max_length=8).ravel())[1:]
    assert lengths.min() >= 4 and lengths.max() <= 15
    widths = segment_widths(label, mask)
    finite = widths[np.isfinite(widths)]
    assert finite.size >= 0.9 * k and finite.min() >= 1.0
    tmap = thickness_map(label, mask)
    assert (tmap[label & fov] > 0).mean() > 0.9
    # the complete reference: no segment loses its skeleton, a perfect prediction scores ~1
    authors, complete = check_complete(label, fov)
    assert np.median(perfect_prediction_ratios(label, complete)) == pytest.approx(1.0, abs=0.05)
    assert np.median(perfect_prediction_ratios(label, authors)) < 0.8
    true_widths = thickness_map(label, complete)[label & fov]
    assert np.median(true_widths) < np.median(thickness_map(label, authors)[label & fov])
