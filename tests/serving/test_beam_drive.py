"""`keras-vessel predict --engine beam` on DRIVE's 20 test photographs (issue 32's "done when"): on the
DirectRunner with two workers it writes what the local engine writes from the same inputs (measures.csv and
failures.csv byte for byte), lists a corrupt file among them in its failures.csv, and run again on its output
skips all 20 and writes nothing new.

The local engine is the reference. The model is a tiny untrained, seeded U-Net (fast enough for CI) that
records a training FOV diameter of `FOV_DIAMETER` px, so every photograph (FOV about 540 px across) is
resampled to it and its probability back, as with the bundled model; its heads are scaled so that its
probabilities spread away from 0.5 and a mask at `THRESHOLD` is neither empty nor the whole FOV.
Skipped without DRIVE (../shared/data or $KERAS_VESSEL_DATA) or without the `beam` extra.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import run_cli, show_result
from PIL import Image

pytest.importorskip("apache_beam", reason="the beam extra is not installed (pip install 'keras-vessel[beam]')")

pytestmark = [pytest.mark.data, pytest.mark.slow]

FOV_DIAMETER = 270.0  # px: about half DRIVE's, so the resampling is not the identity
HEAD_GAIN = 40.0  # the heads' kernels x 40: probabilities from 0.49 to about 0.9 instead of 0.498-0.526
THRESHOLD = 0.65  # a fixed mask threshold, the same for both engines (with HEAD_GAIN: 0.5-5% of a FOV above it)
TOLERANCE = 2e-3  # largest difference of probability allowed between the engines
BEAM_OPTIONS = ("--beam-option", "direct_num_workers=2", "--beam-option", "direct_running_mode=multi_threading")
FAILURES_CSV = "failures.csv"
UNTOUCHED_NS = 1_000_000_000 * 10**9  # an mtime no run writes: files that still have it were not rewritten


def _tree(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Each file of `folder` by name: its mtime (ns) and bytes."""
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def drive_test_images(drive_root) -> Path:
    """DRIVE's test photographs' folder (read only: the engines read it in place)."""
    folder = drive_root / "test" / "images"
    assert len(list(folder.glob("*_test.tif"))) == 20, f"expected DRIVE's 20 test photographs in {folder}"
    return folder


@dataclass(frozen=True)
class EngineRuns:
    """What `engines` ran: each engine's output folder, the corrupt input, the photographs' names
    (``01_test``...), and the Beam engine's re-run on its own output: its CliRunner result and the
    folder's files (`_tree`) before and after it."""

    local: Path
    beam: Path
    corrupt: Path
    names: list[str]
    rerun: Any
    before_rerun: dict[str, tuple[int, bytes]]
    after_rerun: dict[str, tuple[int, bytes]]


@pytest.fixture(scope="module")
def engines(drive_test_images, tiny_model_file, tmp_path_factory) -> EngineRuns:
    """Both engines on DRIVE's test photographs and one corrupt file, then the Beam engine again on its own
    output (its files' mtimes set to `UNTOUCHED_NS` first, so that a file rewritten shows)."""
    model = tiny_model_file(fov_diameter=FOV_DIAMETER, head_gain=HEAD_GAIN)
    corrupt = tmp_path_factory.mktemp("inputs") / "corrupt_photograph.tif"
    corrupt.write_bytes(b"II*\x00 and then text: these bytes are no TIFF image")
    local, beam = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("beam")
    common = [drive_test_images, corrupt, "--model", model, "--threshold", THRESHOLD, "--measure", "--quiet"]

    result = run_cli("predict", *common, "--output", local)
    assert result.exit_code == 1, show_result(result)  # the corrupt file
    assert f"for 20 of 21 images to {local}" in result.stdout, show_result(result)
    result = run_cli("predict", *common, "--output", beam, "--engine", "beam", *BEAM_OPTIONS)
    assert result.exit_code == 1, show_result(result)
    assert "beam: 20 photographs done, 0 skipped (already done), 1 failed" in result.stdout, show_result(result)

    for path in beam.iterdir():
        os.utime(path, ns=(UNTOUCHED_NS, UNTOUCHED_NS))
    before = _tree(beam)
    rerun = run_cli("predict", *common, "--output", beam, "--engine", "beam", *BEAM_OPTIONS)
    names = sorted(path.stem for path in drive_test_images.glob("*_test.tif"))
    return EngineRuns(local, beam, corrupt, names, rerun, before, _tree(beam))


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _probability(folder: Path, name: str) -> np.ndarray:
    """``NAME_prob.png`` as probabilities in [0, 1] (it holds round(p * 65535))."""
    pixels = _pixels(folder / f"{name}_prob.png")
    assert pixels.dtype == np.uint16, f"{folder / name}_prob.png is {pixels.dtype}, not 16-bit"
    return pixels / 65535.0


def _measures(folder: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """measures.csv's columns and its rows by name; the mask column as a file name (it names the folder)."""
    with (folder / "measures.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = {row["name"]: {**row, "mask": Path(row["mask"]).name} for row in reader}
        return list(reader.fieldnames), rows


def test_beam_probability_maps_equal_the_local_engines(engines):
    for name in engines.names:
        local, beam = _probability(engines.local, name), _probability(engines.beam, name)
        assert local.shape == beam.shape == (584, 565), name  # back at the photograph's size
        assert np.abs(local - beam).max() <= TOLERANCE, name


def test_beam_masks_equal_the_local_engines_away_from_the_threshold(engines):
    vessel_fractions = []
    for name in engines.names:
        local, beam = _pixels(engines.local / f"{name}_mask.png"), _pixels(engines.beam / f"{name}_mask.png")
        assert set(np.unique(local)) <= {0, 255} and set(np.unique(beam)) <= {0, 255}, name
        near_threshold = np.abs(_probability(engines.local, name) - THRESHOLD) <= TOLERANCE
        differ = local != beam
        assert not (differ & ~near_threshold).any(), f"{name}: {int((differ & ~near_threshold).sum())} pixels differ"
        vessel_fractions.append(np.mean(local > 0))
    # the comparison says something: masks that are neither empty nor everything
    assert 0.005 < np.mean(vessel_fractions) < 0.5, vessel_fractions


def test_beam_measures_equal_the_local_engines(engines):
    local_columns, local_rows = _measures(engines.local)
    beam_columns, beam_rows = _measures(engines.beam)
    assert beam_columns == local_columns
    assert sorted(beam_rows) == sorted(local_rows) == engines.names
    for name in engines.names:
        assert beam_rows[name] == local_rows[name], name


def test_beam_lists_the_corrupt_file_and_only_it_as_failed(engines):
    with (engines.beam / FAILURES_CSV).open(newline="") as handle:
        failures = list(csv.DictReader(handle))
    assert [row["path"] for row in failures] == [str(engines.corrupt)]
    assert str(engines.corrupt) in failures[0]["reason"] and "cannot decode" in failures[0]["reason"], failures


def test_both_engines_write_the_same_csv_files(engines):
    for name in ("measures.csv", FAILURES_CSV):  # the mask column names each engine's own folder
        local = (engines.local / name).read_text().replace(str(engines.local), "OUT")
        assert (engines.beam / name).read_text().replace(str(engines.beam), "OUT") == local, name


def test_a_rerun_on_the_same_output_skips_all_twenty_and_writes_nothing_new(engines):
    rerun, before, after = engines.rerun, engines.before_rerun, engines.after_rerun
    assert rerun.exit_code == 1, show_result(rerun)  # the corrupt file fails again
    assert "beam: 0 photographs done, 20 skipped (already done), 1 failed" in rerun.stdout, show_result(rerun)
    assert sorted(after) == sorted(before)  # no new file
    rewritten = {name for name, (mtime, _) in after.items() if mtime != UNTOUCHED_NS}
    assert not rewritten, rewritten  # failures.csv too: the same failure again is the same file
    assert {name: data for name, (_, data) in after.items()} == {name: data for name, (_, data) in before.items()}
