"""keras_vessel.measure.files: masks and their FOVs from disk, one CSV row per mask; predict_files(measure=True)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_vessel.measure import COLUMNS, measure_vessels
from keras_vessel.measure.files import (
    ID_COLUMNS,
    MAX_VESSEL_FRACTION,
    FovSource,
    expand_masks,
    fov_circle,
    mask_name,
    measure_files,
    merge_rows,
)

SIZE = 160


def disc(radius: float = 70) -> np.ndarray:
    rows, cols = np.indices((SIZE, SIZE))
    return np.hypot(rows - SIZE / 2, cols - SIZE / 2) <= radius


def vessels(row: int = 80) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[row - 1:row + 2, 20:140] = True
    mask[30:130, 79:82] = True
    return mask


def photograph() -> np.ndarray:
    """A fundus-like RGB image: an orange disc on black, with dark vessels."""
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    image[disc()] = (200, 110, 60)
    image[vessels() & disc()] = (120, 50, 30)
    return image


def save(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array.astype(np.uint8) * 255 if array.dtype == bool else array).save(path)
    return path


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_mask_names_and_predict_folders(tmp_path):
    for stem in ("a", "b"):
        save(tmp_path / f"{stem}.png", photograph())
        save(tmp_path / f"{stem}_prob.png", np.zeros((SIZE, SIZE), np.uint8))
        save(tmp_path / f"{stem}_mask.png", vessels())
    assert expand_masks([tmp_path]) == [tmp_path / "a_mask.png", tmp_path / "b_mask.png"]
    assert [mask_name(p) for p in expand_masks([tmp_path / "*_mask.png"])] == ["a", "b"]
    assert mask_name("x/21_manual1.gif") == "21_manual1" and mask_name("_mask.png") == "_mask"
    with pytest.raises(ValueError, match=r"masks .*a_mask.png and .*a.png have the same name 'a'"):
        expand_masks([tmp_path / "a_mask.png", tmp_path / "a.png"])
    with pytest.raises(ValueError, match="mask .*nothing does not exist"):
        expand_masks([tmp_path / "nothing"])
    with pytest.raises(ValueError, match="mask pattern .* matches no file"):
        expand_masks([str(tmp_path / "*.tif")])
    with pytest.raises(TypeError, match="sequence of paths, not one path"):
        expand_masks(tmp_path)


def test_fov_files_beside_their_masks_are_no_masks_under_auto(tmp_path):
    """``a.png`` with its FOV ``a_fov.png`` beside it (the --fov auto layout) is one mask, not two; a
    ``c_fov.png`` without a ``c.*``, one named as a file, and every file under another --fov are masks."""
    for stem in ("a", "b"):
        save(tmp_path / f"{stem}.png", vessels())
        save(tmp_path / f"{stem}_fov.png", disc())
    save(tmp_path / "c_fov.png", vessels())
    a, a_fov, b, b_fov, c_fov = (tmp_path / f"{stem}.png" for stem in ("a", "a_fov", "b", "b_fov", "c_fov"))
    assert expand_masks([tmp_path]) == [a, b, c_fov]
    assert expand_masks([str(tmp_path / "*.png")], fov=" AUTO ") == [a, b, c_fov]
    assert expand_masks([str(tmp_path / "*_fov.png")]) == [a_fov, b_fov, c_fov]  # no a.png among them
    assert expand_masks([a_fov]) == [a_fov]
    assert expand_masks([tmp_path], fov="none") == [a, a_fov, b, b_fov, c_fov]
    assert expand_masks([tmp_path], fov=tmp_path) == [a, a_fov, b, b_fov, c_fov]
    (tmp_path / "c_fov.png").unlink()
    report = measure_files([tmp_path], tmp_path / "m.csv", progress=False)
    assert not report.failures
    rows = read_csv(tmp_path / "m.csv")
    assert [(row["name"], row["fov"]) for row in rows] == [("a", str(a_fov)), ("b", str(b_fov))]


def test_a_mask_marking_most_of_its_fov_as_vessel_is_refused_as_inverted(tmp_path):
    fov = disc()
    bands = np.zeros((SIZE, SIZE), dtype=bool)
    bands[np.arange(SIZE) % 10 < 3] = True  # 3 rows in 10: about 30% of the FOV, more than real vessels
    fraction = (bands & fov).sum() / fov.sum()  # the reference, counted here
    assert 0.25 < fraction < MAX_VESSEL_FRACTION
    fov_path = save(tmp_path / "fov.png", fov)
    valid = save(tmp_path / "valid.png", bands)
    inverted = save(tmp_path / "inverted.png", ~bands)
    white = save(tmp_path / "white.png", np.ones((SIZE, SIZE), dtype=bool))
    report = measure_files([valid, inverted, white], tmp_path / "m.csv", fov=fov_path, progress=False)
    assert [row["name"] for row in report.rows] == ["valid"]
    assert report.rows[0]["vessel_area_fraction"] == pytest.approx(fraction)
    advice = "of its field of view as vessel (more than 50%): is it inverted? vessels must be white (255) on black (0)"
    assert report.failures == [(inverted, f"mask {inverted} marks {1 - fraction:.0%} {advice}"),
                               (white, f"mask {white} marks 100% {advice}")]
    assert [row["name"] for row in read_csv(tmp_path / "m.csv")] == ["valid"]


def test_fov_beside_the_mask_is_found_in_the_photograph_as_predict_finds_it(tmp_path):
    save(tmp_path / "eye.png", photograph())
    mask = save(tmp_path / "eye_mask.png", vessels())
    fov, how = FovSource("auto").for_mask(mask, (SIZE, SIZE))
    assert how == f"found in {tmp_path / 'eye.png'}"
    assert abs(int(fov.sum()) - int(disc().sum())) < 0.05 * disc().sum()
    cy, cx, radius = fov_circle(fov)
    assert (cy, cx, radius) == pytest.approx((SIZE / 2, SIZE / 2, 70), abs=1.5)


def test_fov_files_by_name_one_file_or_none(tmp_path):
    masks, fovs = tmp_path / "masks", tmp_path / "fovs"
    masks.mkdir(), fovs.mkdir()
    mask = save(masks / "eye.png", vessels())
    save(fovs / "eye_fov.png", disc(60))
    save(fovs / "eye.png", photograph())  # a FOV mask of the name is preferred to the photograph
    assert FovSource(fovs).for_mask(mask, (SIZE, SIZE))[0].sum() == disc(60).sum()
    assert FovSource(str(fovs / "*.png")).for_mask(mask, (SIZE, SIZE))[1] == str(fovs / "eye_fov.png")
    assert FovSource(fovs / "eye_fov.png").for_mask(mask, (SIZE, SIZE))[0].sum() == disc(60).sum()
    assert FovSource("none").for_mask(mask, (SIZE, SIZE))[0].all()
    with pytest.raises(ValueError, match=r"no field of view for mask .*eye.png: no eye_fov.\* or eye.\*"):
        FovSource("auto").for_mask(mask, (SIZE, SIZE))
    with pytest.raises(ValueError, match=r"FOV .*eye_fov.png is 160x160 \(WxH\) but mask .*eye.png is 90x80"):
        FovSource(fovs).for_mask(mask, (80, 90))
    with pytest.raises(ValueError, match="`fov` must be 'auto', 'none', a file, a folder or a glob pattern; .*nope"):
        FovSource(tmp_path / "nope")


def test_measure_files_writes_one_row_per_mask_and_records_failures(tmp_path):
    save(tmp_path / "a.png", photograph())
    save(tmp_path / "a_mask.png", vessels())
    save(tmp_path / "b_mask.png", vessels(60))
    save(tmp_path / "b_fov.png", disc())
    grey = np.arange(SIZE * SIZE, dtype=np.uint32).reshape(SIZE, SIZE) % 200
    save(tmp_path / "c_mask.png", grey.astype(np.uint8))  # not binary
    save(tmp_path / "d_mask.png", vessels())  # no FOV
    out = tmp_path / "out" / "measures.csv"
    report = measure_files([tmp_path], out, progress=False)
    assert [row["name"] for row in report.rows] == ["a", "b"]
    assert [(path.name, "not binary" in reason or "no field of view" in reason)
            for path, reason in report.failures] == [("c_mask.png", True), ("d_mask.png", True)]
    rows = read_csv(out)
    assert list(rows[0]) == list(ID_COLUMNS + COLUMNS)
    assert [row["name"] for row in rows] == ["a", "b"]
    assert rows[1]["fov"] == str(tmp_path / "b_fov.png")
    expected = measure_vessels(vessels(60), disc(), fov_circle=fov_circle(disc()))
    assert float(rows[1]["vessel_length_px"]) == pytest.approx(expected["vessel_length_px"], rel=1e-5)
    assert int(rows[1]["branch_points"]) == expected["branch_points"] == 1
    with pytest.raises(ValueError, match="--output .* is a folder; give the CSV file to write"):
        measure_files([tmp_path / "a_mask.png"], tmp_path, progress=False)


def test_merge_rows_replaces_rows_of_the_same_name(tmp_path):
    source = FovSource("none")
    from keras_vessel.measure.files import measure_row, write_measures

    mask = vessels()
    first = [measure_row(name, f"{name}.png", mask, source.for_mask(Path(name), mask.shape)[0], fov_text="whole")
             for name in ("a", "b")]
    write_measures(tmp_path / "m.csv", first)
    again = measure_row("b", "new.png", mask, np.ones_like(mask), fov_text="whole")
    merged = merge_rows(tmp_path / "m.csv", [again, {**again, "name": "c"}])
    assert [(row["name"], row["mask"]) for row in merged] == [("a", "a.png"), ("b", "new.png"), ("c", "new.png")]


def test_predict_files_measures_beside_the_maps(tmp_path):
    from keras_vessel.serving.prediction import predict_files

    inputs = [save(tmp_path / f"{name}.png", photograph()) for name in ("left", "right")]
    darkness = lambda image: 1.0 - image[..., 1].astype(np.float32) / 255.0  # noqa: E731 - vessels are dark
    out = tmp_path / "out"
    report = predict_files(None, inputs[:1], out, predictor=darkness, threshold=0.7, progress=False, measure=True)
    assert not report.failures
    predict_files(None, inputs[1:], out, predictor=darkness, threshold=0.7, progress=False, measure=True)
    rows = read_csv(out / "measures.csv")
    assert [(row["name"], Path(row["mask"]).name) for row in rows] == [("left", "left_mask.png"),
                                                                       ("right", "right_mask.png")]
    assert rows[0]["fov"] == f"found in {inputs[0]}"
    assert int(rows[0]["branch_points"]) == 1 and float(rows[0]["fov_diameter_px"]) == pytest.approx(140, abs=3)
    # the same numbers as measuring predict's mask file with the FOV found in the photograph
    again = measure_files([out / "left_mask.png"], tmp_path / "again.csv", fov=tmp_path, progress=False)
    assert again.rows[0]["vessel_length_px"] == pytest.approx(float(rows[0]["vessel_length_px"]), rel=1e-5)
