"""`keras-vessel measure` and `predict --measure`: the CSV's columns, one row per mask, bad inputs in one sentence."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from keras_vessel.measure import COLUMNS
from keras_vessel.measure.files import ID_COLUMNS
from keras_vessel_cli.main import cli

SIZE = 128
KERAS_VESSEL = str(Path(sys.executable).with_name("keras-vessel"))  # the installed command a user runs


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
     "3 of 3 masks could not be measured: {tmp}/masks/01_mask.png, {tmp}/masks/02_mask.png, "
     "{tmp}/masks/03_mask.png (each with its reason above)"),
    (["--output", "{tmp}/m.csv"], 2, "Missing argument 'MASKS...'"),
], ids=["missing", "no-match", "bad-fov", "output-folder", "no-fov", "no-masks"])
def test_bad_inputs_say_one_sentence(masks, tmp_path, arguments, code, message):
    result = run("measure", *[a.format(tmp=tmp_path) for a in arguments], "--quiet")
    assert result.exit_code == code, show(result)
    assert message.format(tmp=tmp_path) in result.stderr, show(result)
    assert "Traceback" not in result.stderr and not (tmp_path / "m.csv").exists()


def grey() -> np.ndarray:
    return (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 7).astype(np.uint8)


def test_a_bad_mask_is_reported_and_the_others_are_written(masks, tmp_path, caplog):
    folder, fovs = masks
    bad = save(folder / "04_mask.png", grey())
    save(fovs / "04_fov.png", disc())
    out = tmp_path / "measures.csv"
    with caplog.at_level("WARNING"):
        result = run("measure", folder, "--output", out, "--fov", fovs, "--quiet")
    assert result.exit_code == 1, show(result)
    assert f"Error: 1 of 4 masks could not be measured: {bad} (each with its reason above)" in result.stderr
    assert [record.getMessage() for record in caplog.records if record.name.startswith("keras_vessel")] == [
        f"measure: mask {bad} is not binary: expected at most two distinct values, found 7: [0, 1, 2, 3, 4, 5, 6]; "
        "threshold it to 0/255 (of predict's outputs, pass NAME_mask.png, not NAME_prob.png)"]
    assert [row["name"] for row in rows_of(out)] == ["01", "02", "03"]


def test_each_reason_is_printed_once_and_the_last_line_names_the_masks(masks, tmp_path):
    """The user's terminal (a process, not CliRunner, whose logging pytest captures): each failure's reason
    once as it happens, then one line with the count and the names, not the reasons again."""
    folder, fovs = masks
    grey_mask, inverted = save(folder / "02_mask.png", grey()), save(folder / "03_mask.png", ~vessels())
    out = tmp_path / "measures.csv"
    done = subprocess.run([KERAS_VESSEL, "measure", str(folder), "--output", str(out), "--fov", str(fovs), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("is not binary") == 1 and done.stderr.count(f"mask {grey_mask} is not binary") == 1
    assert done.stderr.count("is it inverted?") == 1 and done.stderr.count(f"mask {inverted} marks ") == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: 2 of 3 masks could not be measured: {grey_mask}, {inverted} (each with its reason above)")
    assert "Traceback" not in done.stderr
    assert [row["name"] for row in rows_of(out)] == ["01"]


def test_a_folder_of_masks_with_their_fov_files_beside_them(tmp_path):
    """The --fov auto layout: ``a.png`` and its FOV ``a_fov.png`` in one folder give one row, ``a``."""
    for name in ("a", "b"):
        save(tmp_path / f"{name}.png", vessels())
        save(tmp_path / f"{name}_fov.png", disc())
    out = tmp_path / "out" / "measures.csv"
    result = run("measure", tmp_path, "--output", out, "--quiet")
    assert result.exit_code == 0, show(result)
    assert f"wrote 2 rows of measurements to {out}" in result.stdout
    assert [(row["name"], row["fov"]) for row in rows_of(out)] == [("a", str(tmp_path / "a_fov.png")),
                                                                  ("b", str(tmp_path / "b_fov.png"))]


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
