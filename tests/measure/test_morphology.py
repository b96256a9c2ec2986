"""keras_vessel.measure.morphology against analytic phantoms, invariants, and an independent computation on DRIVE."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from keras_vessel.measure import COLUMNS, MEASURES, NORMALISED, RINGS, measure_vessels
from keras_vessel.measure.morphology import box_sizes, fractal_dimension

REPO = Path(__file__).resolve().parents[2]


def capsules(shape: tuple[int, int], pieces: list[tuple[tuple[float, float], tuple[float, float]]],
             width: float) -> np.ndarray:
    """Pixels within width / 2 of any of the line pieces ((y0, x0), (y1, x1)): vessels with round ends."""
    rows, cols = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for (y0, x0), (y1, x1) in pieces:
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((rows - y0) * dy + (cols - x0) * dx) / (dy * dy + dx * dx), 0, 1)
        mask |= (rows - y0 - t * dy) ** 2 + (cols - x0 - t * dx) ** 2 <= (width / 2) ** 2
    return mask


def half_circle(radius: float, width: float) -> np.ndarray:
    """The upper half of a ring of `radius` (centre line) and `width`, cut square at its two ends."""
    size = int(2 * radius + 4 * width)
    rows, cols = np.indices((size, size))
    centre = size / 2
    return (np.abs(np.hypot(rows - centre, cols - centre) - radius) <= width / 2) & (rows <= centre)


# --------------------------------------------------------------------------- phantoms


@pytest.mark.parametrize("width", [3, 4, 5, 6, 7])
@pytest.mark.parametrize("vertical", [False, True])
def test_straight_vessel_of_known_length_and_width(width, vertical):
    mask = np.zeros((80, 400), dtype=bool)
    mask[40 - width // 2: 40 - width // 2 + width, 50:350] = True  # 300 px long
    row = measure_vessels(mask.T if vertical else mask)
    assert abs(row["mean_width_px"] - width) <= 0.5
    assert row["median_width_px"] == width
    assert row["vessel_length_px"] == pytest.approx(300, rel=0.02)
    assert row["tortuosity_arc_chord"] == pytest.approx(1.0, abs=0.005)
    assert row["tortuosity_curvature"] < 1e-5
    assert (row["end_points"], row["branch_points"], row["segments"]) == (2, 0, 1)
    assert row["vessel_area_fraction"] == pytest.approx(300 * width / mask.size)


def test_an_oblique_straight_vessel_is_not_tortuous():
    """The skeleton of a straight vessel at 18 degrees is a staircase: 8% longer than its chord in
    sqrt(2) steps, but its smoothed course is straight."""
    row = measure_vessels(capsules((200, 400), [((20, 20), (120, 320))], 5))
    assert row["tortuosity_arc_chord"] == pytest.approx(1.0, abs=0.005)
    assert row["tortuosity_curvature"] < 1e-5
    assert abs(row["median_width_px"] - 5) <= 1


def test_half_circle_arc_over_chord_is_half_pi():
    row = measure_vessels(half_circle(80, 5))
    assert row["tortuosity_arc_chord"] == pytest.approx(math.pi / 2, rel=0.02)
    assert (row["end_points"], row["branch_points"], row["segments"]) == (2, 0, 1)


def test_curvature_of_a_circular_arc_is_one_over_its_radius_squared():
    row = measure_vessels(half_circle(40, 3))
    assert row["tortuosity_curvature"] == pytest.approx(1 / 40 ** 2, rel=0.1)


def test_fractal_dimension_of_a_filled_square_and_a_line():
    region = np.zeros((600, 600), dtype=bool)
    region[44:556, 44:556] = True  # the grid is anchored at the region's corner
    square = region.copy()
    line = np.zeros_like(region)
    line[300, 44:556] = True
    assert box_sizes(region) == [2, 4, 8, 16, 32, 64]
    assert fractal_dimension(square, region) == pytest.approx(2.0, abs=0.05)
    assert fractal_dimension(line, region) == pytest.approx(1.0, abs=0.05)
    assert measure_vessels(line, region)["fractal_dimension"] == pytest.approx(1.0, abs=0.05)
    assert math.isnan(fractal_dimension(np.zeros_like(region), region))


TREE = [((380, 200), (260, 200)), ((260, 200), (160, 110)), ((260, 200), (160, 290)), ((160, 110), (60, 60)),
        ((160, 110), (60, 160)), ((160, 290), (60, 240)), ((160, 290), (60, 340))]


@pytest.mark.parametrize("pieces, branch_points, end_points, segments", [
    ([((150, 20), (150, 280)), ((20, 150), (280, 150))], 1, 4, 4),  # a plus sign
    ([((150, 150), (40, 60)), ((150, 150), (40, 240)), ((150, 150), (280, 150))], 1, 3, 3),  # a Y
    (TREE, 3, 5, 7),  # a trunk, two branches, four twigs
], ids=["plus", "Y", "tree"])
@pytest.mark.parametrize("width", [1, 3, 5])
def test_branch_and_end_points(pieces, branch_points, end_points, segments, width):
    row = measure_vessels(capsules((400, 400), pieces, width))
    assert (row["branch_points"], row["end_points"], row["segments"]) == (branch_points, end_points, segments)


def test_rings_sum_to_the_whole_fov():
    rows, cols = np.indices((400, 400))
    fov = np.hypot(rows - 200, cols - 200) <= 195
    row = measure_vessels(capsules((400, 400), TREE, 3), fov)
    for name in ("fov_area_px", "vessel_length_px", "branch_points", "end_points", "segments"):
        assert sum(row[f"{ring}_{name}"] for ring in RINGS) == pytest.approx(row[name]), name
    vessel_pixels = sum(row[f"{ring}_vessel_area_fraction"] * row[f"{ring}_fov_area_px"] for ring in RINGS)
    assert vessel_pixels == pytest.approx(row["vessel_area_fraction"] * row["fov_area_px"])
    assert row["fov_area_px"] == fov.sum()
    assert row["fov_diameter_px"] == pytest.approx(390, abs=1)  # the disc of the FOV's area
    assert all(row[f"{ring}_vessel_length_px"] > 0 for ring in RINGS)


def test_per_fov_columns_are_the_px_columns_in_fov_diameters():
    row = measure_vessels(capsules((400, 400), TREE, 3), fov_circle=(200.0, 200.0, 150.0))
    assert row["fov_diameter_px"] == 300.0
    for name, (source, power) in NORMALISED.items():
        for prefix in ("", *(f"{ring}_" for ring in RINGS)):
            assert row[prefix + name] == pytest.approx(row[prefix + source] / 300.0 ** power)


# --------------------------------------------------------------------------- invariants and arguments


def test_columns_in_order_and_types():
    row = measure_vessels(capsules((400, 400), TREE, 3))
    assert tuple(row) == COLUMNS
    assert all(isinstance(row[f"{prefix}{name}"], int) for prefix in ("", "outer_")
               for name in ("branch_points", "end_points", "segments", "fov_area_px"))


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.float32])
def test_inputs_of_any_binary_dtype_are_not_modified(dtype):
    mask = capsules((200, 200), [((20, 20), (180, 150))], 4).astype(dtype) * (255 if dtype is np.uint8 else 1)
    fov = np.ones((200, 200), dtype=dtype)
    before, fov_before = mask.copy(), fov.copy()
    row = measure_vessels(mask, fov)
    np.testing.assert_array_equal(mask, before)
    np.testing.assert_array_equal(fov, fov_before)
    reference = measure_vessels(mask != 0)
    assert row == pytest.approx(reference, nan_ok=True)


def test_vessels_outside_the_fov_do_not_count():
    mask = capsules((200, 200), [((100, 10), (100, 190))], 3)
    fov = np.zeros_like(mask)
    fov[:, :100] = True
    inside = measure_vessels(mask, fov)
    assert inside["vessel_length_px"] == measure_vessels(mask & fov, fov)["vessel_length_px"]
    assert inside["vessel_length_px"] == pytest.approx(measure_vessels(mask)["vessel_length_px"] / 2, rel=0.05)


def test_an_empty_mask():
    row = measure_vessels(np.zeros((64, 64), dtype=bool))
    assert row["vessel_length_px"] == 0 and row["vessel_area_fraction"] == 0
    assert (row["branch_points"], row["end_points"], row["segments"]) == (0, 0, 0)
    assert all(math.isnan(row[name]) for name in ("mean_width_px", "tortuosity_arc_chord", "fractal_dimension"))


@pytest.mark.parametrize("arguments, options, error, message", [
    ((np.zeros((4, 4, 3)),), {}, ValueError, r"`mask` must be a 2-D array, got shape \(4, 4, 3\)"),
    ((np.array([["a"]]),), {}, TypeError, r"`mask` must be a boolean or numeric array, got dtype <U1"),
    ((np.zeros((4, 4)), np.ones((4, 5))), {}, ValueError, r"`fov` must have the shape of `mask` \(4, 4\); got \(4, 5\)"),
    ((np.zeros((4, 4)), np.zeros((4, 4))), {}, ValueError, "`fov` holds no pixel"),
    ((np.zeros((4, 4)),), {"fov_circle": (1, 2)}, ValueError, r"`fov_circle` must be \(cy, cx, radius\)"),
    ((np.zeros((4, 4)),), {"fov_circle": (1, 2, -3)}, ValueError, "`fov_circle radius` must be a positive"),
    ((np.zeros((4, 4)),), {"curvature_sigma": True}, ValueError, r"`curvature_sigma` must be a positive finite "
                                                                  r"number; got True \(bool\)"),
    ((np.zeros((4, 4)),), {"curvature_sigma": 0.0}, ValueError, "`curvature_sigma` must be a positive"),
])
def test_bad_arguments_are_named(arguments, options, error, message):
    with pytest.raises(error, match=message):
        measure_vessels(*arguments, **options)


def test_every_column_is_documented_in_method_notes():
    notes = (REPO / "docs" / "METHOD_NOTES.md").read_text()
    section = re.search(r"^## 9\. .*?(?=^## |\Z)", notes, flags=re.S | re.M)
    assert section, "docs/METHOD_NOTES.md has no section 9"
    missing = [name for name in ("fov_diameter_px", *MEASURES, *NORMALISED, *RINGS) if f"`{name}`" not in section[0]]
    assert not missing, f"not in METHOD_NOTES section 9: {missing}"


# --------------------------------------------------------------------------- an independent computation on DRIVE


def test_drive_manual_mask_against_an_independent_computation(drive_root):
    """Area, skeleton length, widths, end and branch points and box counts of DRIVE's first test manual mask,
    recomputed here with skeletonize, scipy.ndimage convolutions and a plain box count."""
    from keras_vessel.data.preprocessing import read_mask

    mask = read_mask(drive_root / "test" / "1st_manual" / "01_manual1.gif")
    fov = read_mask(drive_root / "test" / "mask" / "01_test_mask.gif")
    row = measure_vessels(mask, fov)
    vessels = mask & fov

    assert row["vessel_area_fraction"] == vessels.sum() / fov.sum()
    skeleton = skeletonize(vessels)
    # steps between 8-neighbours: a diagonal one only where no skeleton pixel turns the corner between them
    orthogonal = (skeleton[:, :-1] & skeleton[:, 1:]).sum() + (skeleton[:-1, :] & skeleton[1:, :]).sum()
    down_right = skeleton[:-1, :-1] & skeleton[1:, 1:] & ~(skeleton[1:, :-1] | skeleton[:-1, 1:])
    down_left = skeleton[:-1, 1:] & skeleton[1:, :-1] & ~(skeleton[:-1, :-1] | skeleton[1:, 1:])
    length = orthogonal + math.sqrt(2) * (down_right.sum() + down_left.sum())
    assert row["vessel_length_px"] == pytest.approx(length, rel=1e-9)

    distance = ndi.distance_transform_edt(np.pad(vessels, 1))[1:-1, 1:-1]
    widths = 2 * distance[skeleton] - 1
    assert row["median_width_px"] == pytest.approx(np.median(widths), abs=1.0)
    assert row["mean_width_px"] == pytest.approx(widths.mean(), abs=0.5)

    padded = np.pad(skeleton, 1)

    def at(dy: int, dx: int) -> np.ndarray:
        return padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]

    neighbours = sum(at(dy, dx).astype(int) for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)))
    neighbours += sum((at(dy, dx) & ~at(dy, 0) & ~at(0, dx)).astype(int) for dy in (-1, 1) for dx in (-1, 1))
    assert row["end_points"] == (skeleton & (neighbours == 1)).sum()
    assert row["branch_points"] == ndi.label(skeleton & (neighbours >= 3), np.ones((3, 3)))[1]

    rows, cols = np.nonzero(fov.any(axis=1))[0], np.nonzero(fov.any(axis=0))[0]
    crop = vessels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    sizes = [2, 4, 8, 16, 32, 64]
    counts = [sum(crop[i:i + size, j:j + size].any() for i in range(0, crop.shape[0], size)
                  for j in range(0, crop.shape[1], size)) for size in sizes]
    assert row["fractal_dimension"] == pytest.approx(-np.polyfit(np.log(sizes), np.log(counts), 1)[0], abs=1e-9)
    assert 1.3 < row["fractal_dimension"] < 1.8
