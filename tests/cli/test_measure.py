"""`keras-vessel measure` and `predict --measure`: the CSV's columns, one row per mask, bad inputs in one sentence."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from keras_vessel.measure import COLUMNS
from keras_vessel.measure.files import ID_COLUMNS
from keras_vessel_cli.main import cli

SIZE = 128


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def show(result) -> str:
    return f"exit {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n{result.exception!r}"


def save(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array.astype(np.uint8) * 255 if array.dtype == bool else array).save(path)
    return path


def vessels() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[62:65, 10:118] = True
    mask[20:110, 40:43] = True
    return mask


def disc() -> np.ndarray:
    rows, cols = np.indices((SIZE, SIZE))
    return np.hypot(rows - SIZE / 2, cols - SIZE / 2) <= 60


def rows_of(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def masks(tmp_path) -> tuple[Path, Path]:
    folder, fovs = tmp_path / "masks", tmp_path / "fovs"
    folder.mkdir(), fovs.mkdir()
    for name in ("01", "02", "03"):
        save(folder / f"{name}_mask.png", vessels())
        save(fovs / f"{name}_fov.png", disc())
    return folder, fovs


def test_measure_writes_the_columns_and_one_row_per_mask(masks, tmp_path):
    folder, fovs = masks
    out = tmp_path / "measures.csv"
    result = run("measure", folder, "--output", out, "--fov", fovs, "--quiet")
    assert result.exit_code == 0, show(result)
    assert f"wrote 3 rows of measurements to {out}" in result.stdout
    rows = rows_of(out)
    assert list(rows[0]) == list(ID_COLUMNS + COLUMNS)
    assert [row["name"] for row in rows] == ["01", "02", "03"]
    assert {row["branch_points"] for row in rows} == {"1"} and {row["end_points"] for row in rows} == {"4"}
    assert float(rows[0]["fov_diameter_px"]) == pytest.approx(120, abs=2)

    result = run("measure", folder / "01_mask.png", "--output", tmp_path / "one.csv", "--fov", "none", "--quiet")
    assert result.exit_code == 0, show(result)
    assert [(row["name"], row["fov"], row["fov_area_px"]) for row in rows_of(tmp_path / "one.csv")] == [
        ("01", "whole image", str(SIZE * SIZE))]


@pytest.mark.parametrize("arguments, code, message", [
    (["{tmp}/nothing", "--output", "{tmp}/m.csv"], 2, "Invalid value for MASKS: mask {tmp}/nothing does not exist"),
    (["{tmp}/masks/*.tif", "--output", "{tmp}/m.csv"], 2, "mask pattern '{tmp}/masks/*.tif' matches no file"),
    (["{tmp}/masks", "--output", "{tmp}/m.csv", "--fov", "{tmp}/nope"], 2,
     "Invalid value for --fov: `fov` must be 'auto', 'none', a file, a folder or a glob pattern; {tmp}/nope does "
     "not exist"),
    (["{tmp}/masks", "--output", "{tmp}/masks"], 2, "Invalid value for '--output': File '{tmp}/masks' is a directory"),
    (["{tmp}/masks", "--output", "{tmp}/m.csv"], 1,
     "3 of 3 masks could not be measured: no field of view for mask {tmp}/masks/01_mask.png"),
    (["--output", "{tmp}/m.csv"], 2, "Missing argument 'MASKS...'"),
], ids=["missing", "no-match", "bad-fov", "output-folder", "no-fov", "no-masks"])
def test_bad_inputs_say_one_sentence(masks, tmp_path, arguments, code, message):
    result = run("measure", *[a.format(tmp=tmp_path) for a in arguments], "--quiet")
    assert result.exit_code == code, show(result)
    assert message.format(tmp=tmp_path) in result.stderr, show(result)
    assert "Traceback" not in result.stderr and not (tmp_path / "m.csv").exists()


def test_a_bad_mask_is_reported_and_the_others_are_written(masks, tmp_path):
    folder, fovs = masks
    save(folder / "04_mask.png", (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 7).astype(np.uint8))
    save(fovs / "04_fov.png", disc())
    out = tmp_path / "measures.csv"
    result = run("measure", folder, "--output", out, "--fov", fovs, "--quiet")
    assert result.exit_code == 1, show(result)
    assert f"1 of 4 masks could not be measured: mask {folder / '04_mask.png'} is not binary" in result.stderr
    assert [row["name"] for row in rows_of(out)] == ["01", "02", "03"]


def test_predict_measure_asks_predict_files_for_the_measurements(monkeypatch, tmp_path):
    """The flag reaches `predict_files(measure=True)` (which tests/measure/test_files.py runs end to end)
    and the summary names the CSV."""
    from keras_vessel.serving import prediction

    seen = {}

    def fake_predict_files(model_path, paths, output, **options):
        seen.update(options)
        return prediction.PredictReport()

    monkeypatch.setattr(prediction, "predict_files", fake_predict_files)
    photo = save(tmp_path / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    model = tmp_path / "model.keras"
    model.write_bytes(b"")
    out = tmp_path / "out"
    result = run("predict", photo, "--model", model, "--output", out, "--threshold", "0.5", "--measure", "--quiet")
    assert result.exit_code == 0, show(result)
    assert seen["measure"] is True
    assert f"and their measurements to {out / 'measures.csv'}" in result.stdout
    result = run("predict", photo, "--model", model, "--output", out, "--threshold", "0.5", "--quiet")
    assert seen["measure"] is False and "measurements" not in result.stdout
