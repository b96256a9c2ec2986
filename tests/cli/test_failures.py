"""The failure cases of issues 24 and 33, each as a user meets it: one sentence, an exit status, no traceback.

Each test's docstring says how to reproduce the case by hand.
"""

from __future__ import annotations

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
def test_the_terminal_shows_no_cuda_probing(tmp_path):
    """`keras-vessel prepare --dataset synthetic ...` on a machine without a GPU printed
    `Could not find cuda drivers` and `failed call to cuInit` from TensorFlow and from each worker."""
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([*KERAS_VESSEL, "prepare", "--dataset", "synthetic", "--split", "test", "--out",
                           str(tmp_path / "out"), "--workers", "2"],
                          capture_output=True, text=True, env=environment, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    lowered = done.stderr.lower()
    assert "cuda" not in lowered and "cuinit" not in lowered and "absl" not in lowered, done.stderr
    assert "prepare synthetic/test" in done.stderr  # our progress bar still shows


def _looks_finished_and_is_whole(out: Path) -> None:
    """Every file with a final name is complete: shards parse and match their sidecars and the manifest."""
    from keras_vessel.data.tfrecords import file_sha256, read_manifest, verify_shards

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
thresholds.choose_training_threshold = in_the_threshold_step
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


def test_ctrl_c_while_an_epoch_is_saved_waits_until_its_files_agree(tmp_path, records, monkeypatch):
    """Press Ctrl-C just as an epoch ends: the checkpoint of epoch 1 could be written without its history.csv
    row, and the resumed run then had no row for epoch 1."""
    from keras_vessel.training import RunFolder

    write_history = RunFolder.write_history

    def interrupted_while_writing(self, history):
        os.kill(os.getpid(), signal.SIGINT)  # arrives between the checkpoint and the history row
        write_history(self, history)

    monkeypatch.setattr(RunFolder, "write_history", interrupted_while_writing)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # pytest-xdist workers may ignore it
    try:
        run_dir = tmp_path / "run"
        result = run("train", "--config", tiny_config(tmp_path, records, epochs=3), "--output", run_dir, "--quiet")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 130, show(result)
    info = info_of(run_dir)
    assert info["status"] == "interrupted" and info["epochs_completed"] == 1
    assert [row.split(",")[0] for row in (run_dir / "history.csv").read_text().splitlines()[1:]] == ["1"]
    assert (run_dir / "checkpoints" / "ckpt-1.index").exists()


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
