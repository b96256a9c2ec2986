"""`keras-vessel predict --engine beam`: the local engine's outputs from a Beam pipeline on the DirectRunner
(measures.csv and failures.csv included), resumed, past a corrupt file, bad options in one sentence. Skipped
without the `beam` extra."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, show_result
from PIL import Image

pytest.importorskip("apache_beam", reason="the beam extra is not installed (pip install 'keras-vessel[beam]')")

NAMES = ("eye_a", "eye_b", "eye_c", "eye_d")
CORRUPT = b"\x89PNG\r\n\x1a\n not really"


@pytest.fixture(scope="module")
def photographs(tmp_path_factory) -> Path:
    """Four small synthetic fundus photographs of two sizes (PNG and JPEG)."""
    from keras_vessel.data.datasets import open_dataset

    folder = tmp_path_factory.mktemp("photos")
    specs = open_dataset("synthetic", None, "training", count=4, size=96, seed=3)
    for index, (name, spec) in enumerate(zip(NAMES, specs)):
        image = spec.load().image
        if index % 2:
            image = np.ascontiguousarray(image[:, 8:])  # another size: no stacking across photographs
        Image.fromarray(image).save(folder / f"{name}{'.png' if index < 3 else '.jpg'}")
    return folder


@pytest.fixture(scope="module")
def with_corrupt(photographs, tmp_path_factory) -> Path:
    """The four photographs and ``broken.png``, which does not decode."""
    folder = tmp_path_factory.mktemp("inputs") / "photos"
    shutil.copytree(photographs, folder)
    (folder / "broken.png").write_bytes(CORRUPT)
    return folder


COMMON = ("--threshold", "otsu", "--measure", "--overlay", "--quiet")


@pytest.fixture(scope="module")
def local_and_beam(with_corrupt, tiny_model_file, tmp_path_factory) -> tuple[Path, Path, Path]:
    """Fresh runs of both engines on `with_corrupt`: folders ``local`` and ``beam``, and the model."""
    model = tiny_model_file()
    local, beam = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("beam")
    result = run_cli("predict", with_corrupt, "--output", local, "--model", model, *COMMON)
    assert result.exit_code == 1 and "1 of 5 inputs failed" in result.stderr, show_result(result)
    assert f"(each with its reason in {local / 'failures.csv'})" in result.stderr, show_result(result)
    result = run_cli("predict", with_corrupt, "--output", beam, "--model", model, *COMMON, "--engine", "beam",
                 "--beam-option", "direct_num_workers=2", "--beam-option", "direct_running_mode=multi_threading")
    assert result.exit_code == 1, show_result(result)
    assert "4 photographs done, 0 skipped (already done), 1 failed" in result.stdout, show_result(result)
    return local, beam, model


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _text(folder: Path, name: str, *, copied_from: Path | None = None) -> str:
    """A CSV of `folder` with the folder's path, or that of the folder it was `copied_from`, as ``OUT``
    (measures.csv names each mask by its path)."""
    text = (folder / name).read_text().replace(str(folder), "OUT")
    return text.replace(str(copied_from), "OUT") if copied_from else text


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:  # the mask column names each engine's own folder
        row["mask"] = Path(row["mask"]).name
    return sorted(rows, key=lambda row: row["name"])


def test_beam_writes_what_the_local_engine_writes(local_and_beam):
    local, beam, _ = local_and_beam
    for name in NAMES:
        prob_local, prob_beam = _pixels(local / f"{name}_prob.png"), _pixels(beam / f"{name}_prob.png")
        assert prob_local.dtype == prob_beam.dtype == np.uint16
        assert np.abs(prob_local.astype(np.int64) - prob_beam).max() / 65535 <= 2e-3, name
        for kind in ("mask", "overlay"):
            np.testing.assert_array_equal(_pixels(local / f"{name}_{kind}.png"), _pixels(beam / f"{name}_{kind}.png"))
    for name in NAMES:  # each photograph's marker, written after its files
        marker = f".keras-vessel-predict-{name}"
        assert (beam / marker).read_bytes() == (local / marker).read_bytes(), name
        assert json.loads((beam / marker).read_text())["files"] == [f"{name}_{kind}.png"
                                                                   for kind in ("prob", "mask", "overlay")]
    assert (beam / ".keras-vessel-predict").read_bytes() == (local / ".keras-vessel-predict").read_bytes()


def test_both_engines_write_the_same_measures_and_failures(local_and_beam, with_corrupt):
    local, beam, _ = local_and_beam
    for name in ("measures.csv", "failures.csv"):
        assert _text(local, name) == _text(beam, name), name  # byte for byte, rows in one order
    assert [row["name"] for row in _rows(beam / "measures.csv")] == sorted(NAMES)
    with (beam / "failures.csv").open(newline="") as handle:
        (failure,) = list(csv.DictReader(handle))
    broken = with_corrupt / "broken.png"
    assert (failure["name"], failure["path"]) == ("broken", str(broken))
    assert failure["reason"].startswith(f"cannot decode image file {broken}"), failure


@pytest.mark.parametrize("engine", ["local", "beam"])
def test_a_resumed_run_writes_what_a_fresh_run_writes(local_and_beam, with_corrupt, tmp_path, engine):
    local, beam, model = local_and_beam
    fresh = {"local": local, "beam": beam}[engine]
    out = tmp_path / "out"
    shutil.copytree(fresh, out)
    (out / "eye_c_mask.png").unlink()  # eye_c is redone
    (out / "measures.csv").write_text("".join(line for line in (out / "measures.csv").read_text().splitlines(True)
                                              if not line.startswith("eye_a,")))  # so is eye_a, for its row
    (out / "failures.csv").unlink()  # broken.png fails again
    result = run_cli("predict", with_corrupt, "--output", out, "--model", model, *COMMON, "--engine", engine)
    assert result.exit_code == 1, show_result(result)
    if engine == "beam":
        assert "2 photographs done, 2 skipped (already done), 1 failed" in result.stdout, show_result(result)
        assert f"see {out}/failures.csv" in result.stderr and "Traceback" not in result.stderr, show_result(result)
    else:
        assert "for 2 of 5 images" in result.stdout and "2 of 5 already done" in result.stdout, show_result(result)
    np.testing.assert_array_equal(_pixels(out / "eye_c_mask.png"), _pixels(fresh / "eye_c_mask.png"))
    for name in ("measures.csv", "failures.csv"):
        assert _text(out, name, copied_from=fresh) == _text(fresh, name), name


@pytest.mark.parametrize("engine", ["local", "beam"])
def test_a_failure_fixed_leaves_failures_csv(local_and_beam, with_corrupt, photographs, tmp_path, engine):
    local, beam, model = local_and_beam
    inputs, out = tmp_path / "photos", tmp_path / "out"
    shutil.copytree(with_corrupt, inputs)
    shutil.copytree({"local": local, "beam": beam}[engine], out)
    shutil.copyfile(photographs / "eye_a.png", inputs / "broken.png")  # fixed: a photograph now
    result = run_cli("predict", inputs, "--output", out, "--model", model, *COMMON, "--engine", engine)
    assert result.exit_code == 0, show_result(result)
    assert not (out / "failures.csv").exists()
    rows = {row["name"]: row for row in _rows(out / "measures.csv")}
    assert list(rows) == sorted([*NAMES, "broken"])
    assert rows["broken"]["fov"] == f"found in {inputs / 'broken.png'}"
    same = {"name": "eye_a", "mask": "eye_a_mask.png", "fov": rows["eye_a"]["fov"]}  # the rest as eye_a's
    assert {**rows["broken"], **same} == rows["eye_a"]


def _folder(folder: Path) -> dict[str, bytes]:
    """Every file of `folder` by name, hidden ones included (the folder's path as ``OUT``), but a probability
    map as its file name only: the engines' maps agree within a tolerance (`test_beam_writes_what_the_local_
    engine_writes`), not byte for byte."""
    return {path.name: path.name.encode() if path.name.endswith("_prob.png")
            else path.read_bytes().replace(str(folder).encode(), b"OUT") for path in sorted(folder.iterdir())}


def test_overwrite_rewrites_the_photographs_asked_alike_by_either_engine(local_and_beam, with_corrupt, tmp_path):
    """`predict DIR --output OUT --threshold 0.5`, then (as a run with --overlay killed before its marker
    leaves it) an eye_b_overlay.png that no marker lists, then `predict eye_a.png eye_b.png --output OUT
    --overwrite --threshold otsu --measure`: the overlay used to survive beside the new maps."""
    local, _, model = local_and_beam
    base = tmp_path / "base"
    result = run_cli("predict", with_corrupt, "--output", base, "--model", model, "--threshold", "0.5", "--quiet")
    assert result.exit_code == 1, show_result(result)
    shutil.copyfile(local / "eye_b_overlay.png", base / "eye_b_overlay.png")
    (base / "notes.txt").write_text("not predict's")
    folders = {}
    for engine in ("local", "beam"):
        out = folders[engine] = tmp_path / engine
        shutil.copytree(base, out)
        result = run_cli("predict", with_corrupt / "eye_a.png", with_corrupt / "eye_b.png", "--output", out,
                         "--model", model, "--threshold", "otsu", "--measure", "--overwrite", "--quiet",
                         "--engine", engine)
        assert result.exit_code == 0, show_result(result)
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
            "eye_a_mask.png", "eye_a_prob.png", "eye_b_mask.png", "eye_b_prob.png", "measures.csv", "notes.txt"]
        for name in ("eye_a_mask.png", "eye_b_mask.png"):  # otsu's, as in the fresh run of the fixture
            assert (out / name).read_bytes() == (local / name).read_bytes(), name
    assert _folder(folders["local"]) == _folder(folders["beam"])


def test_an_input_named_as_another_inputs_output_is_one_sentence_before_any_work(photographs, tiny_model_file,
                                                                                 tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    eye, overlay = folder / "eye.png", folder / "eye_overlay.png"
    shutil.copyfile(photographs / "eye_a.png", eye)
    shutil.copyfile(photographs / "eye_b.png", overlay)
    result = run_cli("predict", folder, "--output", folder, "--model", tiny_model_file(), "--threshold", "0.5",
                     "--overwrite", "--quiet", "--engine", "beam")
    # exit 1 and one line, as the local engine (tests/cli/test_failures.py): not a usage error of one argument
    assert result.exit_code == 1 and "Traceback" not in result.stderr, show_result(result)
    assert len(result.stderr.strip().splitlines()) == 1, show_result(result)
    assert (f"input {overlay} has the name of the overlay of input {eye} in the output folder {folder}, which "
            "predicting it would replace or remove") in " ".join(result.stderr.split()), show_result(result)
    assert sorted(p.name for p in folder.iterdir()) == ["eye.png", "eye_overlay.png"]


KILL_AFTER = """
import contextlib, os, keras_vessel.io as io
written = io.atomic_path
@contextlib.contextmanager
def atomic_path(path, **options):  # what both engines write their files with, on a local disk
    with written(path, **options) as temp:
        yield temp
    if os.path.basename(str(path)) == os.environ["KILL_AFTER"]:
        os._exit(9)  # as kill -9 just after that file: no clean-up, no finally
io.atomic_path = atomic_path
"""


@pytest.mark.slow
@pytest.mark.parametrize("engine, kill_after", [("local", "eye_c_mask.png"), ("local", "eye_b_prob.png"),
                                                ("beam", "eye_c_mask.png")])
def test_a_killed_run_resumes_to_the_same_folder_by_either_engine(with_corrupt, tiny_model_file, tmp_path, engine,
                                                                  kill_after):
    """kill -9 `keras-vessel predict` just after it wrote `kill_after`; remove a file of a photograph done (a
    marker without its outputs); run it again with each engine: both folders are alike, and as a fresh run's."""
    import os
    import subprocess
    import sys

    model, killed, fresh = tiny_model_file(), tmp_path / "killed", tmp_path / "fresh"
    options = ["--model", str(model), "--threshold", "otsu", "--overlay", "--quiet"]
    code = KILL_AFTER + "\nimport sys; from keras_vessel_cli.main import cli; sys.exit(cli())"
    process = subprocess.run([sys.executable, "-c", code, "predict", str(with_corrupt), "--output", str(killed),
                              *options, "--engine", engine], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "KILL_AFTER": kill_after, "TF_CPP_MIN_LOG_LEVEL": "3"},
                             cwd=Path(__file__).resolve().parents[2])
    assert process.returncode == 9, process.stderr
    assert (killed / kill_after).exists()
    if (killed / "eye_a_overlay.png").exists():
        (killed / "eye_a_overlay.png").unlink()
    folders = {}
    for resumer in ("local", "beam"):
        out = folders[resumer] = tmp_path / resumer
        shutil.copytree(killed, out)
        result = run_cli("predict", with_corrupt, "--output", out, *options, "--engine", resumer)
        assert result.exit_code == 1 and "Traceback" not in result.stderr, show_result(result)  # broken.png
    result = run_cli("predict", with_corrupt, "--output", fresh, *options)
    assert result.exit_code == 1, show_result(result)
    assert _folder(folders["local"]) == _folder(folders["beam"]) == _folder(fresh)
    for name in NAMES:
        for resumer in ("local", "beam"):
            prob = _pixels(folders[resumer] / f"{name}_prob.png").astype(np.int64)
            assert np.abs(prob - _pixels(fresh / f"{name}_prob.png")).max() / 65535 <= 2e-3, (resumer, name)


@pytest.mark.parametrize("option, message", [
    ("direct_num_worker=2", "Beam has no pipeline option 'direct_num_worker' (did you mean 'direct_num_workers'?)"),
    ("direct_num_workers=two", "argument --direct_num_workers: invalid int value: 'two'"),
    ("runner=NoSuchRunner", "Unexpected pipeline runner: NoSuchRunner"),
])
def test_a_bad_beam_option_is_one_sentence(photographs, tiny_model_file, tmp_path, option, message):
    result = run_cli("predict", photographs, "--output", tmp_path / "out", "--model", tiny_model_file(),
                 "--threshold", "0.5", "--engine", "beam", "--beam-option", option)
    assert result.exit_code == 2, show_result(result)
    assert message in result.stderr and "Traceback" not in result.stderr, show_result(result)
    assert "usage: -" not in result.stderr, show_result(result)  # not argparse's usage of every Beam option
    assert not (tmp_path / "out").exists()


def test_a_pipeline_that_stops_is_one_sentence_and_a_rerun_does_the_rest(with_corrupt, tiny_model_file, tmp_path):
    out = tmp_path / "out"
    (out / "failures.csv").mkdir(parents=True)  # the pipeline's last step cannot write broken.png's failure there
    command = ["predict", with_corrupt / "eye_a.png", with_corrupt / "eye_b.png", with_corrupt / "broken.png",
               "--output", out, "--model", tiny_model_file(), "--threshold", "0.5", "--quiet", "--engine", "beam"]
    result = run_cli(*command)
    assert result.exit_code == 1, show_result(result)
    assert result.stderr == (f"Error: the Beam pipeline stopped in step 'Measures and failures': "
                             f"{out}/failures.csv: Is a directory; fix that and run the command again (it skips "
                             f"the photographs already done in {out})\n"), show_result(result)
    (out / "failures.csv").rmdir()
    result = run_cli(*command)
    assert result.exit_code == 1, show_result(result)
    assert "0 photographs done, 2 skipped (already done), 1 failed" in result.stdout, show_result(result)


def test_a_runner_that_cannot_run_is_one_sentence(photographs, tiny_model_file, tmp_path):
    result = run_cli("predict", photographs / "eye_a.png", "--output", tmp_path / "out", "--model", tiny_model_file(),
                     "--threshold", "0.5", "--quiet", "--engine", "beam", "--beam-option", "runner=PortableRunner")
    assert result.exit_code == 1, show_result(result)
    assert result.stderr.startswith("Error: the Beam pipeline stopped: You must specify a --job_endpoint when using "
                                    "--runner=PortableRunner.") and len(result.stderr.splitlines()) == 1, \
        show_result(result)


WORKER_TEXT = """Traceback (most recent call last):
  File "/k/keras_vessel/io.py", line 49, in atomic_path
    os.replace(temp, path)
IsADirectoryError: [Errno 21] Is a directory: '/o/.failures.csv.x.tmp' -> 'o/failures.csv'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "apache_beam/runners/common.py", line 1512, in apache_beam.runners.common.DoFnRunner.process
RuntimeError: IsADirectoryError: [Errno 21] Is a directory: 'o/failures.csv' [while running 'Measures and failures']
"""


def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize("error, sentence", [
    (RuntimeError(WORKER_TEXT),  # from a worker process (multi_processing): its traceback's text
     " in step 'Measures and failures': o/failures.csv: Is a directory; fix that and run the command again"),
    (_raised_from(RuntimeError("OSError: [Errno 28] No space left on device [while running 'Finish and write']"),
                  OSError(28, "No space left on device", "o/eye_prob.png")),  # in-process: Beam's wrapper of ours
     " in step 'Finish and write': o/eye_prob.png: No space left on device; free some space on that disk or write "
     "somewhere else, then run the command again"),
    (RuntimeError("KeyError: 'x' [while running 'Read and locate']"), " in step 'Read and locate': KeyError: 'x'; fix"),
    (NotImplementedError("You must specify a --job_endpoint.\nAlternatively, a runner."),
     ": You must specify a --job_endpoint. Alternatively, a runner; fix that"),
])
def test_a_pipeline_failure_is_one_sentence_of_what_failed(error, sentence):
    from keras_vessel.errors import PipelineError
    from keras_vessel.serving.beam_engine import pipeline_failure

    failure = pipeline_failure(error, "o")
    assert isinstance(failure, PipelineError) and "\n" not in str(failure)
    assert str(failure).startswith(f"the Beam pipeline stopped{sentence}"), str(failure)
    assert str(failure).endswith(" (it skips the photographs already done in o)")


@pytest.mark.parametrize("args, message", [
    (["--beam-option", "direct_num_workers=2"], "--beam-option is only used with --engine beam"),
    (["--engine", "beam", "--server", "http://localhost:8501", "--model-name", "vessel"],
     "--engine beam runs a local --model on its workers"),
])
def test_beam_options_need_the_beam_engine_and_a_local_model(photographs, tmp_path, args, message):
    result = run_cli("predict", photographs, "--output", tmp_path / "out", "--threshold", "0.5", *args)
    assert result.exit_code == 2 and message in result.stderr, show_result(result)


def test_a_damaged_model_is_one_sentence_before_the_pipeline(photographs, tmp_path):
    (tmp_path / "bad.keras").write_text("not a model")
    result = run_cli("predict", photographs, "--output", tmp_path / "out", "--model", tmp_path / "bad.keras",
                 "--threshold", "0.5", "--engine", "beam")
    assert result.exit_code == 1, show_result(result)
    assert f"could not load model {tmp_path / 'bad.keras'}" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_rerun_with_another_threshold_is_refused_before_any_work(local_and_beam, tmp_path):
    _, beam, model = local_and_beam
    out = tmp_path / "out"
    shutil.copytree(beam, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "failures.csv" in before
    result = run_cli("predict", out / "eye_a_prob.png", "--output", out, "--model", model, "--threshold", "0.5",
                     "--measure", "--overlay", "--quiet", "--engine", "beam")  # the input is never read
    assert result.exit_code == 1, show_result(result)
    assert (f"{out} holds predictions made with another --threshold (otsu; now 0.5); to keep them, give another "
            "--output; to replace them by predictions with these settings, add --overwrite") in result.stderr
    assert "Traceback" not in result.stderr, show_result(result)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("engine", ["local", "beam"])
def test_an_explicit_training_threshold_needs_threshold_json_in_both_engines(photographs, tiny_model_file, tmp_path,
                                                                              engine):
    model = tiny_model_file()
    result = run_cli("predict", photographs, "--output", tmp_path / "out", "--model", model,
                     "--threshold", "train", "--quiet", "--engine", engine)
    assert result.exit_code == 1, show_result(result)
    assert f"no training threshold for {model}: expected {model.parent / 'threshold.json'}" in result.stderr, \
        show_result(result)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_terminal_shows_our_lines_not_beams_or_its_workers_notices(photographs, tiny_model_file, tmp_path):
    # A fresh process, a worker process (README's multi_processing mode): each imports Beam and TensorFlow
    # and logs at INFO; a photograph that fails still says so.
    import subprocess
    import sys

    (tmp_path / "broken.png").write_bytes(CORRUPT)
    command = [str(Path(sys.executable).with_name("keras-vessel")), "predict", str(photographs / "eye_a.png"),
               str(tmp_path / "broken.png"), "--output", str(tmp_path / "out"), "--model", str(tiny_model_file()),
               "--threshold", "0.5", "--engine", "beam", "--beam-option", "direct_running_mode=multi_processing",
               "--beam-option", "direct_num_workers=1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "1 photograph done, 0 skipped (already done), 1 failed" in result.stdout, result.stdout
    assert f"1 photograph failed: see {tmp_path / 'out'}/failures.csv" in result.stderr, result.stderr
    for noise in ("cuda", "cpu_feature_guard", "absl", "apache_beam", "apitools", "INFO:", "WARNING:root"):
        assert noise not in result.stderr, result.stderr
    assert "broken.png" in (tmp_path / "out" / "failures.csv").read_text()


def test_both_engines_note_the_same_photographs_too_small_or_wide_for_the_model(tiny_model_file, tmp_path,
                                                                                monkeypatch):
    """The notes of `PhotographWork.notes`, counted alike by both engines: a photograph whose FOV is under
    LOW_RESOLUTION_FOV_FRACTION of the model's training FOV, one at least MULTI_SCALE_FROM_FOV px across
    (the bar lowered to 300 px here), one in between."""
    from helpers import fundus_disc
    from keras_vessel.data import scaling

    monkeypatch.setattr(scaling, "MULTI_SCALE_FROM_FOV", 300.0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, radius in {"small": 20, "fine": 70, "wide": 160}.items():
        Image.fromarray(fundus_disc(5, (2 * radius + 40,) * 2, radius=radius)).save(photos / f"{name}.png")
    model = tiny_model_file(base_filters=4, depth=2, seed=0, fov_diameter=160.0)
    lines = {}
    for engine in ("local", "beam"):
        result = run_cli("predict", photos, "--output", tmp_path / engine, "--model", model, "--threshold", "0.5",
                         "--quiet", "--engine", engine)
        assert result.exit_code == 0, show_result(result)
        lines[engine] = [line.split(", each named")[0] for line in result.stderr.splitlines()
                         if line.startswith("photographs ")]
    assert lines["local"] == lines["beam"] == [
        "photographs with a field of view at least 300 px across: 1 of 3; --scale adaptive keeps more of their thin "
        "vessels (fused resolutions for these, several times the time; docs/RESULTS.md section 1b)",
        "photographs of low resolution (a field of view under 50% of the model's training FOV, their thin vessels "
        "missed): 1 of 3"], lines
