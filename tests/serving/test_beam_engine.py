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
    assert json.loads((beam / ".keras-vessel-predict").read_text())["files"] == \
        json.loads((local / ".keras-vessel-predict").read_text())["files"]


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
    assert result.stderr == (f"Error: the Beam pipeline stopped in step 'Marker, measures and failures': "
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
RuntimeError: IsADirectoryError: [Errno 21] Is a directory: 'o/failures.csv' [while running 'Marker, measures and failures']
"""


def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize("error, sentence", [
    (RuntimeError(WORKER_TEXT),  # from a worker process (multi_processing): its traceback's text
     " in step 'Marker, measures and failures': o/failures.csv: Is a directory; fix that and run the command again"),
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
