"""The failure cases of issues 24 and 33, each as a user meets it: one sentence, an exit status, no traceback.

Each test's docstring says how to reproduce the case by hand.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from keras_vessel_cli.main import cli

REPO = Path(__file__).resolve().parents[2]
KERAS_VESSEL = [sys.executable, "-c", "import sys; from keras_vessel_cli.main import cli; sys.exit(cli())"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def show(result) -> str:
    return f"exit {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n{result.exception!r}"


def prepare(out: Path, *extra) -> object:
    return run("prepare", "--dataset", "synthetic", "--split", "training", "--out", out, "--quiet", *extra)


def tiny_config(tmp_path: Path, records: Path, **train) -> Path:
    config = {
        "name": "tiny",
        "data": {"train_records": str(records), "validation_images": 1, "patch_size": 32, "batch_size": 2},
        "model": {"name": "unet", "options": {"base_filters": 4, "depth": 2}},
        "loss": {"kind": "pixel"},
        "train": {"epochs": 1, "steps_per_epoch": 2, "learning_rate": 0.002, **train},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("failures") / "records"
    result = prepare(out)
    assert result.exit_code == 0, show(result)
    return out


def test_prepare_redoes_a_folder_that_holds_other_images(tmp_path, caplog):
    """Prepare DRIVE images 21-22 into X, then 23-24 into X: the manifest used to keep listing 21-22."""
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.data.tfrecords import write_dataset

    out = tmp_path / "records"
    first = open_dataset("synthetic", None, "training", count=2, size=64, seed=1)
    write_dataset(first, out, dataset="synthetic", split="training", show_progress=False)
    second = open_dataset("synthetic", None, "training", count=2, size=64, seed=2)  # same names, other images
    with caplog.at_level("WARNING"):
        manifest = write_dataset(second, out, dataset="synthetic", split="training", show_progress=False)
    assert any("images' files or options changed" in record.getMessage()
               and "preparing it again" in record.getMessage() for record in caplog.records)
    truth = [spec.fingerprint() for spec in second]
    sidecar = json.loads(next(out.glob("*.tfrecord.gz.json")).read_text())
    assert [image["fingerprint"] for image in sidecar["images"]] == truth
    assert manifest["shard_sha256"] == [sidecar["sha256"]]
    third = open_dataset("synthetic", None, "training", count=3, size=64, seed=2)[1:]  # other names
    caplog.clear()
    with caplog.at_level("WARNING"):
        write_dataset(third, out, dataset="synthetic", split="training", show_progress=False)
    assert any("holds images ['synthetic_0000', 'synthetic_0001'], not the requested "
               "['synthetic_0001', 'synthetic_0002']" in record.getMessage() for record in caplog.records)


def test_a_damaged_shard_is_redone_by_prepare_and_refused_by_train(tmp_path, records):
    """Truncate a shard (`truncate -s 5000 X/training-00000-of-00003.tfrecord.gz`), then run train / prepare."""
    out = tmp_path / "records"
    assert prepare(out).exit_code == 0
    shard = sorted(out.glob("*.tfrecord.gz"))[0]
    with shard.open("r+b") as handle:
        handle.truncate(5000)
    result = run("train", "--config", tiny_config(tmp_path, out), "--output", tmp_path / "run", "--quiet")
    assert result.exit_code == 1, show(result)
    assert f"{shard} is damaged" in result.stderr and "keras-vessel prepare" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "run.json").exists()  # refused before the run started: no "running" left
    result = prepare(out)
    assert result.exit_code == 0, show(result)
    result = run("train", "--config", tiny_config(tmp_path, out), "--output", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, show(result)


def test_resume_refuses_changed_settings_and_continues_longer(tmp_path, records):
    """Train one epoch, then re-run with `--set train.epochs=2 --set train.learning_rate=0.0001`."""
    config, run_dir = tiny_config(tmp_path, records), tmp_path / "run"
    assert run("train", "--config", config, "--output", run_dir, "--quiet").exit_code == 0
    result = run("train", "--config", config, "--output", run_dir, "--quiet",
                 "--set", "train.epochs=2", "--set", "train.learning_rate=0.0001")
    assert result.exit_code == 1, show(result)
    assert "train.learning_rate: 0.002 -> 0.0001" in result.stderr and "another --output" in result.stderr
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["learning_rate"] == 0.002
    result = run("train", "--config", config, "--output", run_dir, "--quiet", "--set", "train.epochs=2")
    assert result.exit_code == 0, show(result)
    assert f"resuming {run_dir} after epoch 1 of 2" in result.stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["epochs_completed"] == 2
    assert [entry["after_epoch"] for entry in info["resumed"]] == [1]


def test_an_unwritable_output_is_named_before_any_work(tmp_path, records, tiny_model_file):
    """`--out` inside a file (or a folder without write permission): prepare, train, evaluate, export, predict."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    cases = [
        ("prepare", "--dataset", "synthetic", "--out", blocker / "out"),
        ("train", "--config", tiny_config(tmp_path, records), "--output", blocker / "run"),
        ("evaluate", "--model", tiny_model_file(), "--dataset", "synthetic", "--output", blocker / "report"),
        ("export", "--model", tiny_model_file(), "--name", "m", "--version", "1", "--out", blocker / "models"),
        ("predict", image, "--model", tiny_model_file(), "--output", blocker / "predictions", "--threshold", "0.5"),
    ]
    for args in cases:
        result = run(*args, "--quiet") if args[0] not in ("export",) else run(*args)
        assert result.exit_code == 1, (args[0], show(result))
        assert "cannot write to" in result.stderr and str(blocker) in result.stderr, (args[0], show(result))
        assert "Traceback" not in result.stderr


def test_a_failed_prepare_leaves_no_empty_folder(tmp_path):
    """`keras-vessel prepare --dataset drive --root EMPTY --out NEW`: NEW used to be left behind, empty."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "training").mkdir()
    result = run("prepare", "--dataset", "folder", "--root", tmp_path / "empty", "--out", tmp_path / "new")
    assert result.exit_code == 1, show(result)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("value, message", [
    ("train.epochs=[1", "the value '[1' is expected ',' or ']'"),
    ("train.learning_rate=.nan", "train.learning_rate must be a finite number"),
    ("train.learning_rate=.inf", "train.learning_rate must be a finite number"),
])
def test_bad_set_values_are_one_sentence(tmp_path, records, value, message):
    """`keras-vessel train --config C --set 'train.epochs=[1'` used to end in a yaml traceback."""
    result = run("train", "--config", tiny_config(tmp_path, records), "--set", value)
    assert result.exit_code == 1, show(result)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_truncated_model_file_is_called_damaged(tmp_path, tiny_model_file):
    """`head -c 3000 model.keras > broken.keras; keras-vessel predict img.png --model broken.keras`."""
    broken = tmp_path / "broken.keras"
    broken.write_bytes(tiny_model_file().read_bytes()[:3000])
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    result = run("predict", image, "--model", broken, "--output", tmp_path / "out", "--threshold", "0.5")
    assert result.exit_code == 1, show(result)
    assert f"{broken} is damaged or incomplete" in result.stderr
    assert "File not found" not in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_marks_the_run_interrupted_and_exits_130(tmp_path, records, monkeypatch):
    """Press Ctrl-C during `keras-vessel train`: run.json used to stay at "running", exit status 1."""
    import keras_vessel.training.loop as training

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "validate", interrupt)
    run_dir = tmp_path / "run"
    result = run("train", "--config", tiny_config(tmp_path, records), "--output", run_dir, "--quiet")
    assert result.exit_code == 130, show(result)
    assert "interrupted" in result.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"


def test_a_huge_image_is_one_logged_sentence(tmp_path, monkeypatch, caplog):
    """A 10000x10000 photo used to print PIL's DecompressionBombWarning with a source line."""
    from keras_vessel.data.preprocessing import read_image

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: above the warning, below the error
    with caplog.at_level("WARNING"):
        assert read_image(path).shape == (40, 40, 3)
    [record] = caplog.records
    assert f"{path} is a very large image (40x40" in record.getMessage()


@pytest.mark.slow
def test_a_parallel_prepare_shows_no_cuda_probing_and_writes_what_a_serial_one_does(tmp_path):
    """`keras-vessel prepare --dataset synthetic ...` on a machine without a GPU printed
    `Could not find cuda drivers` and `failed call to cuInit` from TensorFlow and from each worker.
    Its two workers must also write the same files as one (the same manifest, so the same shard checksums)."""
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([*KERAS_VESSEL, "prepare", "--dataset", "synthetic", "--split", "test", "--out",
                           str(tmp_path / "out"), "--workers", "2"],
                          capture_output=True, text=True, env=environment, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    lowered = done.stderr.lower()
    assert "cuda" not in lowered and "cuinit" not in lowered and "absl" not in lowered, done.stderr
    assert "prepare synthetic/test" in done.stderr  # our progress bar still shows
    result = run("prepare", "--dataset", "synthetic", "--split", "test", "--out", tmp_path / "serial", "--quiet",
                 "--workers", "1")
    assert result.exit_code == 0, show(result)
    parallel, serial = (json.loads((tmp_path / folder / "manifest.json").read_text()) for folder in ("out", "serial"))
    assert len(parallel["images"]) == 8 and parallel == serial


def _looks_finished_and_is_whole(out: Path) -> None:
    """Every file with a final name is complete: shards parse and match their sidecars and the manifest."""
    from keras_vessel.data.tfrecords import read_manifest, verify_shards
    from keras_vessel.io import file_sha256

    for shard in out.glob("*.tfrecord.gz"):
        sidecar = shard.with_name(shard.name + ".json")
        if sidecar.exists():
            assert json.loads(sidecar.read_text())["sha256"] == file_sha256(shard)
    if (out / "manifest.json").exists():
        read_manifest(out)
        verify_shards(out)


@pytest.mark.slow
def test_killing_prepare_and_export_leaves_nothing_half_written(tmp_path, tiny_model_file):
    """kill -9 `keras-vessel prepare` / `keras-vessel export` at random moments, then look at what is left."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    out = tmp_path / "records"
    command = [*KERAS_VESSEL, "prepare", "--dataset", "synthetic", "--split", "training", "--out", str(out),
               "--quiet"]
    for delay in sorted(rng.uniform(4.0, 14.0, size=2)):
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        _looks_finished_and_is_whole(out)
    assert subprocess.run(command, cwd=REPO, capture_output=True, timeout=600).returncode == 0
    _looks_finished_and_is_whole(out)
    assert len(json.loads((out / "manifest.json").read_text())["images"]) == 20

    models = tmp_path / "models"
    export = [*KERAS_VESSEL, "export", "--model", str(tiny_model_file()), "--name", "m", "--version", "1",
              "--out", str(models)]
    for delay in rng.uniform(4.0, 10.0, size=1):
        process = subprocess.Popen(export, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        version = models / "m" / "1"
        if version.exists():  # renamed into place only when complete: it must load and answer
            tf.saved_model.load(str(version)).signatures["serving_default"](images=tf.zeros([1, 32, 32, 3]))
        assert not any(path.name == "1" for path in (models / "m").glob("*") if path != version)


# Issue 33: run state that is true, one writer per folder, SIGTERM. These send real signals to a real
# `keras-vessel` child process; `inject` runs Python in it first, to hold it in the threshold step.

SLOW_THRESHOLD_STEP = """
import os, pathlib, time
import keras_vessel.evaluation.thresholds as thresholds
def in_the_threshold_step(*args, **kwargs):
    pathlib.Path(os.environ["THRESHOLD_STEP_MARK"]).touch()
    time.sleep(300)
thresholds.training_score_counts = in_the_threshold_step
"""

HOLD_LOCK = """
import sys, time
from keras_vessel.locks import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""


def child(*args, inject: str = "", env: dict | None = None) -> subprocess.Popen:
    """`keras-vessel ARGS` in a child process, with Ctrl-C handled as in a terminal (pytest-xdist workers
    may ignore SIGINT, and children inherit that)."""
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)\n" + inject
            + "\nfrom keras_vessel_cli.main import cli; sys.exit(cli())")
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the child ended first (exit {process.returncode}): {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the child")
        time.sleep(0.2)


def info_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.parametrize("signum, exit_status, last_line, state", [
    (signal.SIGINT, 130, "interrupted", "interrupted"),
    (signal.SIGKILL, -signal.SIGKILL, "", "running"),
], ids=["ctrl-c", "kill-9"])  # SIGTERM stops as Ctrl-C does: test_ctrl_c_and_sigterm_stop_training_...
def test_a_run_stopped_in_the_threshold_step_is_not_completed_and_a_rerun_only_finishes_it(
        tmp_path, records, caplog, signum, exit_status, last_line, state):
    """Press Ctrl-C (or `kill -TERM PID`, `kill -9 PID`) while `keras-vessel train` shows
    `threshold [###  ] 2/20`: run.json used to say "completed" without threshold.json (predict then used 0.5).
    Then re-run the same command: it must choose the threshold only, without training again."""
    from keras_vessel.locks import LOCK_FILENAME

    config, run_dir, mark = tiny_config(tmp_path, records), tmp_path / "run", tmp_path / "in-threshold-step"
    process = child("train", "--config", config, "--output", run_dir, "--quiet", inject=SLOW_THRESHOLD_STEP,
                    env={"THRESHOLD_STEP_MARK": str(mark)})
    wait_for(mark.exists, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == exit_status, stderr
    assert stderr.strip().endswith(last_line) and "Traceback" not in stderr, stderr
    info = info_of(run_dir)
    assert info["status"] == state and info["trained"]["epochs"] == 1 and "threshold" not in info
    assert not (run_dir / "threshold.json").exists()
    assert (run_dir / LOCK_FILENAME).exists() == (signum == signal.SIGKILL)  # only kill -9 leaves its lock
    result = run("export", "--model", run_dir / "model.keras", "--name", "m", "--version", "1", "--out",
                 tmp_path / "models", "--threshold", "train")
    assert result.exit_code == 1, show(result)
    assert f"its training run {run_dir} did not finish (run.json says {state!r}); run its command again" in result.stderr
    assert not (tmp_path / "models" / "m").exists()

    model_saved, history = (run_dir / "model.keras").stat().st_mtime_ns, (run_dir / "history.csv").read_text()
    with caplog.at_level("WARNING"):
        result = run("train", "--config", config, "--output", run_dir, "--quiet")
    assert result.exit_code == 0, show(result)
    assert (f"resuming {run_dir} after epoch 1 of 1 (training completed; only the steps after training run)"
            in result.stderr)
    assert (run_dir / "model.keras").stat().st_mtime_ns == model_saved  # not trained again
    assert (run_dir / "history.csv").read_text() == history
    info = info_of(run_dir)
    stored = json.loads((run_dir / "threshold.json").read_text())["threshold"]
    assert info["status"] == "completed" and info["threshold"] == stored
    assert f"threshold {stored:.4f} on its training images" in result.stdout
    taken_over = f"was locked by PID {process.pid} on host {socket.gethostname()}"
    assert (taken_over in caplog.text and "taking the lock over" in caplog.text) == (signum == signal.SIGKILL)
    assert not (run_dir / LOCK_FILENAME).exists()


@pytest.mark.parametrize("signum, exit_status, last_line", [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "terminated"),
], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_stop_training_after_the_current_step(tmp_path, records, signum, exit_status, last_line):
    """`timeout 60 keras-vessel train ...` (SIGTERM, as `docker stop` and SLURM preemption send it) used to exit
    143 without a word, run.json left "running"; a Ctrl-C inside a long TF step was ignored for minutes."""
    config, run_dir = tiny_config(tmp_path, records, epochs=500), tmp_path / "run"
    process = child("train", "--config", config, "--output", run_dir, "--quiet")
    wait_for((run_dir / "history.csv").exists, process)  # in the epochs, past the first step's tracing
    sent = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == exit_status, stderr
    assert time.monotonic() - sent < 20, "the signal waited for more than the current step"
    assert stderr.strip().endswith(last_line) and "Traceback" not in stderr, stderr
    info = info_of(run_dir)
    assert info["status"] == "interrupted" and 1 <= info["epochs_completed"] < 500 and "trained" not in info


def train_here_with_ctrl_c(tmp_path: Path, records: Path) -> tuple[object, Path]:
    """`keras-vessel train` of the tiny config for 3 epochs into tmp_path/run, in this process, with Ctrl-C
    raising KeyboardInterrupt as in a terminal (pytest-xdist workers may ignore SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run_dir = tmp_path / "run"
        return run("train", "--config", tiny_config(tmp_path, records, epochs=3), "--output", run_dir,
                   "--quiet"), run_dir
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_an_epoch_is_saved_waits_until_its_files_agree(tmp_path, records, monkeypatch):
    """Press Ctrl-C just as an epoch ends: the checkpoint of epoch 1 could be written without its history.csv
    row, and the resumed run then had no row for epoch 1."""
    from keras_vessel.training import RunFolder

    write_history = RunFolder.write_history

    def interrupted_while_writing(self, history):
        os.kill(os.getpid(), signal.SIGINT)  # arrives between the checkpoint and the history row
        write_history(self, history)

    monkeypatch.setattr(RunFolder, "write_history", interrupted_while_writing)
    result, run_dir = train_here_with_ctrl_c(tmp_path, records)
    assert result.exit_code == 130, show(result)
    info = info_of(run_dir)
    assert info["status"] == "interrupted" and info["epochs_completed"] == 1
    assert [row.split(",")[0] for row in (run_dir / "history.csv").read_text().splitlines()[1:]] == ["1"]
    assert (run_dir / "checkpoints" / "ckpt-1.index").exists()


@pytest.mark.parametrize("which, note", [(0, "this step"), (1, "this validation batch")],
                         ids=["train", "validation"])
def test_ctrl_c_inside_a_step_acts_after_it(tmp_path, records, monkeypatch, capfd, which, note):
    """Ctrl-C raised its KeyboardInterrupt wherever Python was, also half-way through TensorFlow's Python code
    around a step (its iterator, the function call), which is not written to be stopped there: a run beside a
    training once died of a heap corruption ("corrupted size vs. prev_size") instead of exiting 130."""
    import keras_vessel.training.loop as loop

    build_steps, taken = loop.build_steps, []

    def steps_interrupted_inside(*args):
        steps = list(build_steps(*args))
        step = steps[which]

        def interrupted(batch):
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the step
            taken.append(step(batch))
            return taken[-1]

        steps[which] = interrupted
        return tuple(steps)

    monkeypatch.setattr(loop, "build_steps", steps_interrupted_inside)
    result, run_dir = train_here_with_ctrl_c(tmp_path, records)
    assert result.exit_code == 130, show(result)
    assert len(taken) == 1  # the step ran to its end, then training stopped
    assert f"stopping after {note} (Ctrl-C again to stop at once)" in capfd.readouterr().err  # os.write(2, ...)
    info = info_of(run_dir)
    assert info["status"] == "interrupted" and info["epochs_completed"] == 0


def test_sigterm_stops_a_parallel_prepare_without_finishing_its_images(tmp_path):
    """`timeout 20 keras-vessel prepare --dataset synthetic --out X --workers 2`: SIGTERM exited 143 without a
    word, and with workers the parent first waited for every image still queued (44 s here)."""
    from keras_vessel.locks import LOCK_FILENAME

    out = tmp_path / "records"
    process = child("prepare", "--dataset", "synthetic", "--split", "training", "--out", out, "--workers", "2",
                    "--quiet")
    wait_for(lambda: (out / LOCK_FILENAME).exists(), process)
    time.sleep(3)  # the workers are starting or preparing their first images
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    waited = time.monotonic() - sent
    assert process.returncode == 143, stderr
    assert stderr.strip().endswith("terminated") and "Traceback" not in stderr, stderr
    assert waited < 20, f"waited {waited:.0f} s: for the queued images too"
    assert not (out / "manifest.json").exists() and not (out / LOCK_FILENAME).exists()


def test_a_second_train_on_a_run_folder_is_refused_naming_the_first(tmp_path, records):
    """Start `keras-vessel train --config C --output R` in two terminals: both used to exit 0, R holding B's
    config and history and A's message pointing at B's model."""
    config, run_dir = tiny_config(tmp_path, records, epochs=500), tmp_path / "run"
    first = child("train", "--config", config, "--output", run_dir, "--quiet")
    try:
        wait_for((run_dir / "history.csv").exists, first)
        result = run("train", "--config", config, "--output", run_dir, "--quiet")
        assert result.exit_code == 1, show(result)
        assert (f"the run folder {run_dir} is in use by PID {first.pid} on host {socket.gethostname()}"
                in result.stderr and "choose another folder" in result.stderr), show(result)
        assert "Traceback" not in result.stderr
        assert info_of(run_dir)["command"].startswith("-c train")  # still the first process's run
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130 and info_of(run_dir)["status"] == "interrupted"


def test_prepare_and_export_refuse_a_folder_another_process_writes(tmp_path, tiny_model_file, caplog):
    """Run `keras-vessel prepare --out X` (or `export --out M --name N`) while another one writes there; then
    `kill -9` that one and run again: its lock is taken over, with a notice."""
    out, models = tmp_path / "records", tmp_path / "models"
    holders = [subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], cwd=REPO, text=True,
                                stdout=subprocess.PIPE) for folder in (out, models / "m")]
    export = ("export", "--model", tiny_model_file(), "--name", "m", "--version", "1", "--out", models)
    try:
        assert [holder.stdout.readline().strip() for holder in holders] == ["held", "held"]
        host = socket.gethostname()
        result = prepare(out)
        assert result.exit_code == 1, show(result)
        assert f"the prepared-data folder {out} is in use by PID {holders[0].pid} on host {host}" in result.stderr
        result = run(*export)
        assert result.exit_code == 1, show(result)
        assert f"the model folder {models / 'm'} is in use by PID {holders[1].pid} on host {host}" in result.stderr
        assert not (models / "m" / "1").exists() and not (out / "manifest.json").exists()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    with caplog.at_level("WARNING"):
        result = run(*export)
    assert result.exit_code == 0, show(result)
    assert f"the model folder {models / 'm'} was locked by PID {holders[1].pid} on host {host}" in caplog.text
    assert "which ended without releasing it; taking the lock over" in caplog.text
    assert (models / "m" / "1" / "saved_model.pb").exists()


@pytest.mark.parametrize("engine", ["local", "beam"])
def test_predict_refuses_an_output_folder_another_predict_writes(tmp_path, tiny_model_file, engine):
    """Two `keras-vessel predict ... --output out --measure` at once, on halves of a folder: each rewrote
    measures.csv from what it had read, so the rows of one were lost."""
    if engine == "beam":
        pytest.importorskip("apache_beam")
    photo, out = _photo(tmp_path / "photos" / "eye.png"), tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run("predict", photo, "--model", tiny_model_file(), "--output", out, "--threshold", "0.5",
                     "--measure", "--quiet", "--engine", engine)
        _assert_one_sentence(result, f"the output folder {out} is in use by PID {holder.pid} on host "
                                     f"{socket.gethostname()}")
        assert sorted(p.name for p in out.iterdir()) == [".keras-vessel.lock"]  # the holder's, nothing of ours
    finally:
        holder.kill()
        holder.wait()
    result = run("predict", photo, "--model", tiny_model_file(), "--output", out, "--threshold", "0.5", "--quiet",
                 "--engine", engine)
    assert result.exit_code == 0, show(result)
    assert (out / "eye_mask.png").is_file() and not (out / ".keras-vessel.lock").exists()


# --- issue 33: a full disk, a read-only file system, staging left by a killed export ------------------

def _disk_full(path) -> Exception:
    """What TensorFlow raises when a write finds the disk full (its file errors carry only the text)."""
    import tensorflow as tf

    return tf.errors.ResourceExhaustedError(None, None, f"{path}; No space left on device")


def _assert_one_sentence(result, *fragments) -> None:
    assert result.exit_code == 1, show(result)
    for fragment in fragments:
        assert str(fragment) in result.stderr, show(result)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, show(result)


def test_a_full_disk_during_prepare_names_the_shard_and_leaves_no_folder(tmp_path, monkeypatch):
    """`mount -t tmpfs -o size=300k tmpfs /mnt/small; keras-vessel prepare --dataset synthetic --out
    /mnt/small/records`: a 40-line traceback ending in `ResourceExhaustedError ... No space left on device`."""
    import tensorflow as tf

    class FullDiskWriter:
        def __init__(self, path, options=None):
            self.path = path

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, record):
            raise _disk_full(self.path)

    monkeypatch.setattr(tf.io, "TFRecordWriter", FullDiskWriter)
    out = tmp_path / "new" / "records"
    result = prepare(out)
    _assert_one_sentence(result, f"{out / 'training-00000-of-00003.tfrecord.gz'}: No space left on device",
                         "free some space on that disk or write somewhere else")
    assert not (tmp_path / "new").exists()  # nothing written: no empty folder, no temporary shard


def test_a_full_disk_during_export_names_the_version_and_leaves_no_staging(tmp_path, monkeypatch,
                                                                          tiny_model_file):
    """`keras-vessel export --model M --name m --version 1 --out /mnt/small/models` (a 300 kB tmpfs): a
    40-line traceback; the same with `--format tflite` left an empty `models/m/1/`."""
    import tensorflow as tf

    def fill_the_disk(module, folder, signatures=None):
        Path(folder, "saved_model.pb").write_bytes(b"half")
        raise _disk_full(Path(folder, "variables", "variables.data-00000-of-00001.tempstate123"))

    monkeypatch.setattr(tf.saved_model, "save", fill_the_disk)
    models = tmp_path / "models"
    result = run("export", "--model", tiny_model_file(), "--name", "m", "--version", "1", "--out", models)
    _assert_one_sentence(result, f"{models / 'm' / '1'}: No space left on device", "write somewhere else")
    assert not models.exists()  # no staging, no empty NAME folder

    real_write = Path.write_bytes

    def full(self, data):
        if self.name.startswith(".m.tflite."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() says: no file name
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    (models / "m").mkdir(parents=True)
    result = run("export", "--model", tiny_model_file(), "--name", "m", "--version", "1", "--out", models,
                 "--format", "tflite")
    _assert_one_sentence(result, f"{models / 'm' / '1' / 'm.tflite'}: No space left on device")
    assert [p.name for p in (models / "m").iterdir()] == []  # no empty version folder


def test_a_full_disk_during_evaluate_names_the_file(tmp_path, monkeypatch, tiny_model_file):
    """`keras-vessel evaluate ... --output /mnt/small/report` with room for all but roc.png: it said only
    "No space left on device"."""
    from matplotlib.figure import Figure

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", full)
    report = tmp_path / "report"
    result = run("evaluate", "--model", tiny_model_file(), "--dataset", "synthetic", "--output", report,
                 "--no-overlays", "--quiet")
    _assert_one_sentence(result, f"{report / 'roc.png'}: No space left on device")
    assert not list(report.glob(".*"))  # no temporary file left


def test_a_read_only_run_folder_during_train_names_the_file(tmp_path, records, monkeypatch):
    """`mount -o remount,ro` the run folder's file system while `keras-vessel train` runs (or fill it):
    train said "Read-only file system" (or "No space left on device") without a path."""
    import keras

    def read_only(self, path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(keras.Model, "save", read_only)
    run_dir = tmp_path / "run"
    result = run("train", "--config", tiny_config(tmp_path, records), "--output", run_dir, "--quiet")
    _assert_one_sentence(result, f"{run_dir / 'model.keras'}: Read-only file system",
                         "that file system is read-only: write somewhere else")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def _dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_export_redoes_an_incomplete_version_and_removes_stale_staging(tmp_path, tiny_model_file, caplog):
    """`kill -9` an export mid-way (or make `models/m/1/` by hand): the hidden `.1.partial-*` stayed for
    ever, and an empty `models/m/1/` was refused as "already exists" (or served as version 1)."""
    import socket

    version = tmp_path / "models" / "m" / "1"
    version.mkdir(parents=True)
    stale = version.parent / f".1.partial-{_dead_pid()}@{socket.gethostname()}-abcd1234"
    (stale / "variables").mkdir(parents=True)
    live = version.parent / f".1.partial-{os.getpid()}@{socket.gethostname()}-efgh5678"
    live.mkdir()
    with caplog.at_level("WARNING"):
        result = run("export", "--model", tiny_model_file(), "--name", "m", "--version", "1",
                     "--out", tmp_path / "models")
    assert result.exit_code == 0, show(result)
    assert (version / "saved_model.pb").is_file() and not stale.exists() and live.exists()
    messages = [record.getMessage() for record in caplog.records]
    assert f"removed {stale}, the staging folder of an export that stopped (process" in " ".join(messages)
    assert f"{version} holds no complete SavedModel (an export that stopped?); exporting it again" in messages
    result = run("export", "--model", tiny_model_file(), "--name", "m", "--version", "1",
                 "--out", tmp_path / "models")
    _assert_one_sentence(result, f"{version} already exists; pass --overwrite")  # a complete one is kept

    lite = tmp_path / "lite" / "m" / "1"
    lite.mkdir(parents=True)
    (lite / "m.tflite").write_bytes(b"half")  # killed before m.json was written: it was "already exists"
    result = run("export", "--model", tiny_model_file(), "--name", "m", "--version", "1", "--out", tmp_path / "lite",
                 "--format", "tflite")
    assert result.exit_code == 0, show(result)
    assert f"{lite / 'm.tflite'} is left from an export that stopped; exporting again" in result.stderr
    assert (lite / "m.json").is_file() and (lite / "m.tflite").stat().st_size > 1000


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_into_its_input_folder_skips_its_own_outputs(tmp_path, tiny_model_file, caplog):
    """`keras-vessel predict DIR --output DIR --overlay` twice: the second run wrote `*_mask_mask.png` and
    `*_prob_prob.png` and reported "3 of 3 images"."""
    folder = tmp_path / "photos"
    _photo(folder / "eye.png")
    _photo(folder / "vessel_mask.png")  # the user's own image, not one predict wrote
    args = ["predict", folder, "--model", tiny_model_file(), "--output", folder, "--threshold", "0.5", "--quiet"]
    result = run(*args, "--overlay")
    assert result.exit_code == 0, show(result)
    assert "for 2 of 2 images" in result.stdout
    for stem in ("eye", "vessel_mask"):  # each photograph's marker lists its files
        assert json.loads((folder / f".keras-vessel-predict-{stem}").read_text())["files"] == [
            f"{stem}_{kind}.png" for kind in ("prob", "mask", "overlay")]
    written = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".keras-vessel-predict"))
    for marker in folder.glob(".keras-vessel-predict*"):  # as a keras-vessel that wrote no marker left it
        marker.unlink()
    result = run(*args, "--overlay")  # which settings made them is not known: not predicted into again
    assert result.exit_code == 1 and "that do not record the settings that made them" in result.stderr, show(result)
    for skipped in (6, 4):  # by name pattern (NAME_prob.png beside NAME_mask.png); then by the marker alone
        with caplog.at_level("WARNING"):
            result = run(*args, "--overlay", *(["--overwrite"] if skipped == 6 else []))
        assert result.exit_code == 0, show(result)
        if skipped == 6:  # --overwrite: both predicted again
            assert "for 2 of 2 images" in result.stdout, show(result)
        else:  # a re-run: vessel_mask's files are all there (done), eye's mask and overlay are not
            assert "for 1 of 2 images" in result.stdout and "1 of 2 already done, skipped" in result.stdout, \
                show(result)
        assert f"folder {folder}: skipping {skipped} files that keras-vessel predict wrote" in caplog.text
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".keras-vessel-predict")) == written
        caplog.clear()
        (folder / "eye_mask.png").unlink()  # eye_prob.png is now known by eye's marker only
        (folder / "eye_overlay.png").unlink()
    result = run("predict", folder / "*_prob.png", *args[2:])  # a usage error, as for any INPUT naming no image
    assert result.exit_code == 2 and "Traceback" not in result.stderr, show(result)
    assert (f"pattern '{folder / '*_prob.png'}' holds only files that keras-vessel predict wrote (NAME_prob.png, "
            "NAME_mask.png, NAME_overlay.png); give the folder of the photographs") in result.stderr


@pytest.mark.parametrize("status", ["interrupted", "running", "completed"])
def test_predict_refuses_the_model_of_a_run_stopped_before_its_threshold(tmp_path, tiny_model_file, status):
    """Stop `keras-vessel train --output run` in its threshold step, then `keras-vessel predict img.png --model
    run/model.keras --output out`: it used to mask at 0.5 silently. Of a finished run without threshold.json
    (deleted by hand), 0.5 is still used and said."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.keras").write_bytes(Path(tiny_model_file()).read_bytes())
    command = f"keras-vessel train --config tiny.yaml --output {run_dir}"
    (run_dir / "run.json").write_text(json.dumps({"status": status, "command": command}))
    out = tmp_path / "out"
    result = run("predict", _photo(tmp_path / "img.png"), "--model", run_dir / "model.keras", "--output", out)
    if status == "completed":
        assert result.exit_code == 0, show(result)
        said = f"no threshold.json beside {run_dir / 'model.keras'}: masks every photograph at threshold 0.5"
        assert said in result.stderr
        return
    _assert_one_sentence(result, f"no training threshold for {run_dir / 'model.keras'}: its training run {run_dir} "
                                 f"did not finish (run.json says {status!r}); run its command again to finish it "
                                 f"(`{command}`)")
    assert not out.exists()


def test_predict_refuses_two_inputs_of_one_name(tmp_path, tiny_model_file):
    """`keras-vessel predict left/img.tif right/img.tif --output out`: the second was written as
    `img_tif_prob.png`, silently."""
    left, right = _photo(tmp_path / "left" / "img.tif"), _photo(tmp_path / "right" / "img.tif")
    out = tmp_path / "out"
    result = run("predict", left, right, "--model", tiny_model_file(), "--output", out, "--threshold", "0.5")
    _assert_one_sentence(result, f"inputs {left} and {right} would both be written as img_prob.png and "
                                 f"img_mask.png in {out}; rename one of them")
    assert not out.exists()


def test_predict_refuses_an_input_named_as_another_inputs_output(tmp_path, tiny_model_file):
    """`keras-vessel predict photos --output photos --overlay`, photos holding eye.png and the user's own
    eye_overlay.png: predicting eye.png replaced it (without --overlay, --overwrite removed it)."""
    photos = tmp_path / "photos"
    eye, overlay = _photo(photos / "eye.png"), _photo(photos / "eye_overlay.png")
    before = overlay.read_bytes()
    for extra in (["--overlay"], ["--overwrite"]):
        result = run("predict", photos, "--model", tiny_model_file(), "--output", photos, "--threshold", "0.5",
                     "--quiet", *extra)
        _assert_one_sentence(result, f"input {overlay} has the name of the overlay of input {eye} in the output "
                                     f"folder {photos}, which predicting it would replace or remove")
    assert sorted(p.name for p in photos.iterdir()) == ["eye.png", "eye_overlay.png"]
    assert overlay.read_bytes() == before


def test_a_patch_larger_than_every_training_image_is_refused(tmp_path, records):
    """`keras-vessel train --config C --set data.patch_size=512` on 256-px synthetic records: accepted, then
    stuck for ever looking for a patch with enough field of view, at 5 GB."""
    result = run("train", "--config", tiny_config(tmp_path, records), "--output", tmp_path / "run",
                 "--set", "data.patch_size=512", "--quiet")
    _assert_one_sentence(result, "data.patch_size 512 is larger than every training image: the largest, "
                                 "synthetic_", "is 256x256 px (WxH); choose data.patch_size of at most 256")
    assert not (tmp_path / "run").exists()
    from keras_vessel.config import load_config
    from keras_vessel.training.components import check_config

    check_config(load_config(tiny_config(tmp_path, records), ["data.patch_size=512", "data.fov_diameter=600"]))
    with pytest.raises(ValueError, match=r"the largest, synthetic_\d+, is 2\d\dx2\d\d px \(WxH\) at "
                                         r"data.fov_diameter 200; choose data.patch_size of at most 2\d\d"):
        check_config(load_config(tiny_config(tmp_path, records), ["data.patch_size=512", "data.fov_diameter=200"]))


def test_set_errors_name_the_set_not_the_config_file(tmp_path, records):
    """`keras-vessel train --config C --set train.epochs=two`: the error said `C: train.epochs must be an
    integer`, blaming a file that says nothing of it."""
    config = tiny_config(tmp_path, records)
    for value, sentence in (("train.epochs=two", "--set train.epochs=two: train.epochs must be an integer"),
                            ("train.epoch=2", "--set train.epoch=2: unknown key train.'epoch'")):
        result = run("train", "--config", config, "--set", value)
        _assert_one_sentence(result, sentence)
        assert str(config) not in result.stderr
    result = run("train", "--config", config, "--set", "train.epochs=2", "--set", "data.batch_size=x")
    _assert_one_sentence(result, f"--set data.batch_size=x: data.batch_size must be an integer")


def test_train_refuses_a_run_folder_inside_the_records(tmp_path, records):
    """`keras-vessel train --config C --output data/drive/training/run` (inside data.train_records): the run
    was written among the shards."""
    result = run("train", "--config", tiny_config(tmp_path, records), "--output", records / "run", "--quiet")
    _assert_one_sentence(result, f"the run folder {records / 'run'} is inside the prepared-records folder "
                                 f"{records} (data.train_records); choose a run folder outside it, e.g. runs/tiny")
    assert not (records / "run").exists()



def test_a_full_disk_stops_predict_at_the_first_image(tmp_path, tiny_model_file, monkeypatch):
    """`keras-vessel predict DIR --output /mnt/small/out` (a full tmpfs): every image failed in turn, one line
    each, none naming the file it could not write."""
    for name in ("a.png", "b.png", "c.png"):
        _photo(tmp_path / "photos" / name)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setitem(Image.SAVE, "PNG", full)  # what PIL calls to write a PNG
    out = tmp_path / "out"
    result = run("predict", tmp_path / "photos", "--model", tiny_model_file(), "--output", out,
                 "--threshold", "0.5", "--quiet")
    _assert_one_sentence(result, f"{out / 'a_prob.png'}: No space left on device; free some space")
    assert not out.exists()  # no temporary file, no marker listing nothing, no empty folder
