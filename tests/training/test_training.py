"""Training: run folder contents, resume (kill -9 included), strategies, config errors."""

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from keras_vessel.config import (
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    config_to_dict,
    load_config,
)
from keras_vessel.training import TrainingError, averaged_weights, build_steps, build_training_model, train

PYTHON = sys.executable
CLI = str(Path(sys.executable).with_name("keras-vessel"))


@pytest.fixture(scope="module")
def records(synthetic_records):
    return synthetic_records(count=4, size=96, seed=2)


def small_config(records, **train) -> RunConfig:
    return RunConfig(
        name="tiny",
        data=DataConfig(train_records=str(records), validation_images=1, patch_size=32, batch_size=4),
        model=ModelConfig(name="unet", options={"base_filters": 4, "depth": 2}),
        loss=LossConfig(kind="joint"),
        train=TrainConfig(**{"epochs": 2, "steps_per_epoch": 3, "seed": 1, **train}),
    )


def read_history(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_a_cross_validation_fold_holds_out_its_group_and_chooses_the_threshold_without_it(records, tmp_path):
    from keras_vessel.evaluation import choose_run_threshold, load_threshold

    config = small_config(records, epochs=1)
    config = replace(config, data=replace(config.data, folds=2, fold=0))
    train(config, tmp_path, verbose=0)
    choose_run_threshold(tmp_path, progress=False)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["validation_images"] == ["synthetic_0000", "synthetic_0001"]
    assert run["training_images"] == ["synthetic_0002", "synthetic_0003"]
    assert load_threshold(tmp_path / "model.keras")["images"] == 2  # of the 4 training images


def test_run_folder_holds_everything_needed_to_repeat_and_reuse_the_run(records, tmp_path):
    result = train(small_config(records), tmp_path, verbose=0)
    assert result.status == "completed" and result.epochs_completed == 2
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["seed"] == 1 and run["status"] == "completed"
    assert run["versions"]["tensorflow"] == tf.__version__ and run["versions"]["keras"] == keras.__version__
    assert "git_revision" in run and run["training_images"] == ["synthetic_0000", "synthetic_0001", "synthetic_0002"]
    assert run["validation_images"] == ["synthetic_0003"]
    assert load_config(tmp_path / "config.yaml") == small_config(records)
    history = read_history(tmp_path / "history.csv")
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert {"loss", "segment_loss", "pixel_loss", "val_loss", "val_dice", "learning_rate"} <= set(history[0])
    assert list((tmp_path / "logs").iterdir())  # TensorBoard event files
    assert not (tmp_path / "threshold.json").exists()  # choosing it is the next step, not training's
    from keras_vessel.evaluation import choose_run_threshold

    chosen = choose_run_threshold(tmp_path, progress=False)
    assert list(chosen) == ["auto"]  # trained at each image's own scale: no threshold at --scale multi
    value = chosen["auto"]
    threshold = json.loads((tmp_path / "threshold.json").read_text())
    assert threshold["threshold"] == value and 0 < value < 1 and threshold["images"] == 4
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["threshold"] == value and "threshold_multi" not in info
    assert not (tmp_path / "threshold_multi.json").exists()  # trained at each image's own scale: no multiples

    import keras_vessel.losses  # noqa: F401  registers the custom objects
    model = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert set(model.output_names) == {"segment", "pixel"}
    assert {type(loss).__name__ for loss in model.loss.values()} == {"SegmentLevelLoss", "PixelWiseLoss"}


def test_a_run_trained_at_a_fixed_fov_gets_a_threshold_chosen_on_fused_maps_too(records, tmp_path):
    from keras_vessel.config import records_folders
    from keras_vessel.data.scaling import FUSION_MULTIPLES
    from keras_vessel.data.tfrecords import read_samples
    from keras_vessel.evaluation import (choose_run_threshold, choose_training_threshold, load_threshold,
                                         threshold_path)
    from keras_vessel.models.inference import load_inference_model

    config = small_config(records, epochs=1, steps_per_epoch=2)
    config = replace(config, data=replace(config.data, fov_diameter=80.0))
    train(config, tmp_path, verbose=0)
    chosen = choose_run_threshold(tmp_path, progress=False)
    samples = read_samples(records_folders(config.data))
    fused = choose_training_threshold(load_inference_model(tmp_path / "model.keras"), samples, progress=False,
                                      predict_options={"scale": "multi"})
    assert list(chosen) == ["auto", "multi"] and chosen["multi"] == fused
    assert chosen["auto"] == load_threshold(tmp_path / "model.keras")["threshold"]  # the model's own scale's
    stored = load_threshold(tmp_path / "model.keras", scale="multi")  # chosen on the same images' fused maps
    assert stored["threshold"] == fused and stored["images"] == 4 and stored["multiples"] == list(FUSION_MULTIPLES)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["threshold"] == chosen["auto"] and info["threshold_multi"] == fused
    # `scales` (what `evaluate --tta flip` at one scale asks for): the other scale is neither chosen nor stored
    flips = choose_run_threshold(tmp_path, progress=False, tta="flip", scales=("auto",))
    expected = choose_training_threshold(load_inference_model(tmp_path / "model.keras"), samples, progress=False,
                                         predict_options={"scale": "auto", "tta": "flip"})
    assert flips == {"auto": expected}
    assert not threshold_path(tmp_path / "model.keras", "flip", "multi").exists()
    assert threshold_path(tmp_path / "model.keras", "flip", "auto").exists()
    assert "threshold_multi_tta_flip" not in json.loads((tmp_path / "run.json").read_text())


def test_rerun_resumes_after_the_last_finished_epoch(records, tmp_path):
    train(small_config(records, epochs=1), tmp_path, verbose=0)
    first = read_history(tmp_path / "history.csv")
    result = train(small_config(records, epochs=3), tmp_path, verbose=0)
    history = read_history(tmp_path / "history.csv")
    assert result.epochs_completed == 3 and len(history) == 3
    assert history[0] == first[0]  # the finished epoch was not redone


def test_a_finished_run_without_its_checkpoints_is_refused_not_mixed_with_another(records, tmp_path):
    """checkpoints/ removed (to save disk): a run with other settings used to train into the folder, its rows
    appended to the old history.csv and model.keras replaced; the same settings would train it again."""
    from keras_vessel.errors import OutputError

    train(small_config(records, epochs=1), tmp_path, verbose=0)
    shutil.rmtree(tmp_path / "checkpoints")
    kept = {name: (tmp_path / name).read_bytes() for name in ("history.csv", "model.keras", "run.json")}
    pixel = replace(small_config(records, epochs=1), loss=LossConfig(kind="pixel"))
    with pytest.raises(ConfigError, match=rf"^{tmp_path} holds a run started with other settings \(loss.kind: "
                                          r"'joint' -> 'pixel'\)\. To resume it, use its settings"):
        train(pixel, tmp_path, verbose=0)
    with pytest.raises(OutputError, match=rf"^{tmp_path} holds a run's history.csv, model.keras, run.json but not the "
                                          r"checkpoints/ to resume it from \(removed\?\), so it cannot be resumed, "
                                          rf"and training into it again would mix two runs; to start afresh, give "
                                          rf"another --output or delete {tmp_path}$"):
        train(small_config(records, epochs=2), tmp_path, verbose=0)
    assert {name: (tmp_path / name).read_bytes() for name in kept} == kept
    (tmp_path / "config.yaml").unlink()
    with pytest.raises(OutputError, match=r"holds a run's history.csv, model.keras, run.json but not its config.yaml"):
        train(small_config(records, epochs=1), tmp_path, verbose=0)


def test_a_run_stopped_in_its_first_epoch_resumes_from_the_start_but_not_with_other_settings(records, tmp_path):
    """Nothing finished, so nothing is lost by starting again; but its config.yaml is compared all the same."""
    from keras_vessel.config import save_config

    save_config(small_config(records, epochs=1), tmp_path / "config.yaml")
    (tmp_path / "run.json").write_text(json.dumps({"status": "interrupted", "epochs_completed": 0,
                                                   "started": "then"}))
    with pytest.raises(ConfigError, match=r"holds a run started with other settings \(train.seed: 1 -> 2\)"):
        train(small_config(records, epochs=1, seed=2), tmp_path, verbose=0)
    result = train(small_config(records, epochs=1), tmp_path, verbose=0)
    assert result.epochs_completed == 1 and len(read_history(tmp_path / "history.csv")) == 1
    assert json.loads((tmp_path / "run.json").read_text())["started"] == "then"


def test_a_run_saved_with_the_retired_validation_steps_resumes(records, tmp_path):
    train(small_config(records, epochs=1), tmp_path, verbose=0)
    stored = yaml.safe_load((tmp_path / "config.yaml").read_text())
    stored["train"]["validation_steps"] = 20  # what older versions saved
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    assert train(small_config(records, epochs=2), tmp_path, verbose=0).epochs_completed == 2


def test_pixel_only_run_and_step_schedule(records, tmp_path):
    config = small_config(records, lr_schedule="step", lr_decay_epochs=1, lr_decay_factor=0.5)
    config = replace(config, loss=LossConfig(kind="pixel"))
    train(config, tmp_path, verbose=0)
    history = read_history(tmp_path / "history.csv")
    assert "segment_loss" not in history[0]
    assert float(history[1]["learning_rate"]) == pytest.approx(float(history[0]["learning_rate"]) * 0.5)


def test_training_graph_has_no_python_callbacks(records):
    from keras_vessel.losses import build_losses
    from keras_vessel.models import build_model
    from keras_vessel.data.pipeline import get_dataset

    strategy = tf.distribute.get_strategy()
    model = build_model("unet", base_filters=4, depth=2)
    optimizer = keras.optimizers.Adam()
    train_step, _ = build_steps(model, optimizer, build_losses("joint"), strategy)
    batch = next(iter(get_dataset(records, patch_size=32, batch_size=2)))
    graph = train_step.get_concrete_function(batch).graph.as_graph_def()
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless", "NumpyFunction"}
    assert "While" in ops or "StatelessWhile" in ops  # the thinning loop is in the graph


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data": {"train_records": ""}}, "data.train_records is empty"),
        ({"data": {"train_records": "/nonexistent/records"}}, "data.train_records: .*manifest.json not found"),
        ({"data": {"patch_size": 34}}, "data.patch_size=34 is not divisible by the network's stride 4"),
        ({"model": {"name": "resnet"}}, "model: unknown model name 'resnet'"),
        ({"model": {"options": {"depht": 2}}}, r"model: unknown option\(s\) \['depht'\]"),
        ({"train": {"epochs": 0}}, "train.epochs must be at least 1, got 0"),
        ({"train": {"lr_schedule": "step"}}, "train.lr_decay_epochs must be at least 1"),
        ({"train": {"ema_momentum": 1.0}}, r"train.ema_momentum must be in \[0, 1\)"),
    ],
)
def test_bad_configs_fail_before_training(records, tmp_path, change, message):
    config = small_config(records)
    sections = {"data": config.data, "model": config.model, "train": config.train}
    for section, values in change.items():
        config = replace(config, **{section: replace(sections[section], **values)})
    with pytest.raises(ConfigError, match=message):
        train(config, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("override, message", [
    ("data.min_fov_fraction=2", r"data.min_fov_fraction must be in [0, 1] (the share of a patch that must lie in "
                                r"the field of view), got 2.0"),
    ("data.patch_size=0", "data.patch_size must be at least 8, got 0"),
    ("data.augment.jpeg_quality=500", "data.augment.jpeg_quality must be in [0, 95] (quality is drawn from "
                                      "[jpeg_quality, 95]), got 500"),
    ("data.augment.noise_probability=5", "data.augment.noise_probability must be in [0, 1], got 5.0"),
    ("data.augment.blur_probability=-0.1", "data.augment.blur_probability must be in [0, 1], got -0.1"),
    ("data.augment.brightness=3", "data.augment.brightness must be in [0, 1] (a factor in [1 - b, 1 + b]), got 3.0"),
    ("data.augment.blur_sigma=-1", "data.augment.blur_sigma must be in [0.3, 10]"),
    ("data.augment.noise_variance=-0.001", "data.augment.noise_variance must be in [0, 1]"),
    ("data.augment.clahe_probability=0.8", "data.augment's clahe_probability, contrast_stretch_probability, "
                                           "noise_probability are the chances of one intensity variant per visit "
                                           "and must add up to at most 1, got 0.8 + 0.166667 + 0.166667 = 1.13333"),
    ("loss.vessel_weight=-1", "loss.vessel_weight must be at least 0, got -1.0"),
    ("loss.cldice_alpha=2", "loss.cldice_alpha must be in [0, 1], got 2.0"),
    ("train.learning_rate=-0.001", "train.learning_rate must be positive, got -0.001"),
    ("train.momentum=1.5", "train.momentum must be in [0, 1), got 1.5"),
    ("train.weight_decay=-0.1", "train.weight_decay must be at least 0, got -0.1"),
    ("train.lr_decay_factor=-0.5", "train.lr_decay_factor must be in (0, 1] (the step schedule's multiplier), "
                                   "got -0.5"),
    ("train.early_stopping_patience=-1", "train.early_stopping_patience must be at least 0 (0 turns early stopping "
                                         "off), got -1"),
    ("train.cpu_devices=-2", "train.cpu_devices must be at least 0 (0 or 1 keeps the CPU whole), got -2"),
    ("train.seed=-1", "train.seed must be in [0, 4294967295], got -1"),
    ("data.batch_size=0", "data.batch_size must be at least 1, got 0"),
])
def test_values_out_of_range_are_refused_naming_the_key_the_value_and_the_range(records, tmp_path, override,
                                                                                 message):
    """data.min_fov_fraction=2 used to loop for ever in the input pipeline, jpeg_quality=500 to fail in a TF op
    saying to re-run the command, the others to be accepted silently."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(small_config(records))))
    config = load_config(path, [override])
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        train(config, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("channel", ["green", "grey", "rgb"])
def test_input_standardisation_uses_the_records_statistics_of_the_channel(records, channel):
    from keras_vessel.models.layers import Standardize
    from keras_vessel.data.tfrecords import read_manifest

    config = small_config(records)
    config = replace(config, data=replace(config.data, channel=channel))
    manifest = read_manifest(records)
    stats = manifest["statistics"]
    model = build_training_model(config, manifest)
    (layer,) = [layer for layer in model.layers if isinstance(layer, Standardize)]
    assert layer.channel == channel
    np.testing.assert_allclose(layer.mean, stats[f"{channel}_mean"])
    np.testing.assert_allclose(layer.scale, stats[f"{channel}_std"])
    if channel == "rgb":  # three different colour channels, not green three times
        assert len(set(layer.mean)) == 3


def test_rgb_on_records_without_per_channel_statistics_asks_to_prepare_again(records, tmp_path):
    old_records = tmp_path / "records"
    shutil.copytree(records, old_records)
    manifest = json.loads((old_records / "manifest.json").read_text())
    manifest["statistics"] = {k: v for k, v in manifest["statistics"].items() if not k.startswith("rgb")}
    (old_records / "manifest.json").write_text(json.dumps(manifest))  # as an older prepare wrote it
    config = small_config(old_records)
    config = replace(config, data=replace(config.data, channel="rgb"))
    with pytest.raises(ConfigError, match="data.channel=rgb needs per-channel statistics .* run the same "
                                          "`keras-vessel prepare` command again"):
        train(config, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_multi_worker_without_tf_config_says_what_to_set(records, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(TrainingError, match="multi_worker needs the TF_CONFIG environment variable"):
        train(small_config(records, strategy="multi_worker"), tmp_path, verbose=0)


# --------------------------------------------------------------------- in other processes


def write_config(records, folder: Path, **train) -> Path:
    config = small_config(records, **train)
    path = folder / "tiny.yaml"
    from keras_vessel.config import config_to_dict

    path.write_text(yaml.safe_dump(config_to_dict(config)))
    return path


# `keras-vessel train` under a MirroredStrategy over two logical CPUs: tests/losses/test_topology_losses.py
# (test_cli_trains_joint_with_skeleton_recall_under_mirrored_strategy).


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_local_workers_train_in_lockstep(records, tmp_path):
    config = write_config(records, tmp_path, strategy="multi_worker", epochs=2)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [CLI, "train", "--config", str(config), "--output", str(tmp_path / f"run{index}"), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, out + err
    run = json.loads((tmp_path / "run0" / "run.json").read_text())
    assert run["strategy"] == "multi_worker" and run["replicas"] == 2
    assert len(read_history(tmp_path / "run0" / "history.csv")) == 2
    assert not (tmp_path / "run1" / "model.keras").exists()  # only the chief writes the run folder


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_from_its_last_epoch(records, tmp_path):
    config = write_config(records, tmp_path, epochs=3, steps_per_epoch=40)
    run = tmp_path / "run"
    process = subprocess.Popen([CLI, "train", "--config", str(config), "--output", str(run), "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (run / "history.csv").exists():
        time.sleep(0.2)
    assert (run / "history.csv").exists(), "the first epoch never finished"
    process.send_signal(signal.SIGKILL)
    process.communicate()
    finished = len(read_history(run / "history.csv"))
    assert finished < 3
    # The same command again, in this process (CliRunner): what resumes is on disk, not in the killed process.
    from click.testing import CliRunner

    from keras_vessel_cli.main import cli

    done = CliRunner().invoke(cli, ["train", "--config", str(config), "--output", str(run), "--quiet"])
    assert done.exit_code == 0, f"{done.stdout}\n{done.stderr}\n{done.exception!r}"
    assert f"resuming {run} after epoch {finished} of 3" in done.stderr
    history = read_history(run / "history.csv")
    assert [row["epoch"] for row in history] == ["1", "2", "3"]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_a_saved_model_fine_tunes_with_plain_keras_fit(records, tmp_path):
    """The README's fine-tuning snippet: load the .keras file (compiled with its losses) and fit."""
    from keras_vessel.data.pipeline import get_dataset

    train(small_config(records, epochs=1), tmp_path, verbose=0)
    import keras_vessel.losses  # noqa: F401

    model = keras.saving.load_model(tmp_path / "model.keras")
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(get_dataset(records, patch_size=32, batch_size=4), steps_per_epoch=2, epochs=1, verbose=0)
    assert all(map(lambda v: v == v, history.history["loss"]))  # finite, not NaN
    assert any((a != b).any() for a, b in zip(before, model.get_weights()))


MIRRORED_STEP_SCRIPT = r"""
import numpy as np, tensorflow as tf, keras
from keras_vessel.training import build_steps, split_cpu
from keras_vessel.data.targets import pack_targets
from keras_vessel.losses import build_losses
from keras_vessel.models import build_model
split_cpu(2)
rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
label = (rng.random((4, 16, 16)) < 0.3).astype("float32")
ids = np.where(label > 0, rng.integers(-3, 4, (4, 16, 16)), 0).astype("float32")
target = pack_targets(label, np.ones_like(label), ids, label)
batch = (tf.constant(images), {"segment": target, "pixel": target})

def one_step(strategy, weights):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_model("unet", base_filters=2, depth=1)
        if weights is not None:
            model.set_weights(weights)
        optimizer = keras.optimizers.SGD(0.5)
        optimizer.build(model.trainable_variables)
    start = [w.copy() for w in model.get_weights()]
    train_step, _ = build_steps(model, optimizer, build_losses("joint"), strategy)
    data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))
    values = train_step(next(iter(data)))
    return start, model.get_weights(), {k: float(v) for k, v in values.items()}

start, single, single_values = one_step(tf.distribute.get_strategy(), None)
_, mirrored, mirrored_values = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), start)
moved = max(float(np.abs(a - b).max()) for a, b in zip(single, start))
diff = max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored))
print("RESULT", moved, diff, single_values["loss"], mirrored_values["loss"])
"""


@pytest.mark.slow
def test_mirrored_step_equals_the_single_device_step():
    """Two replicas on half batches must update the weights exactly as one device on the whole batch."""
    done = subprocess.run([PYTHON, "-c", MIRRORED_STEP_SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    moved, diff, single_loss, mirrored_loss = map(float, done.stdout.split("RESULT")[1].split())
    assert moved > 1e-4  # the step did change the weights
    assert diff < 1e-5 * max(1.0, moved) * 10
    assert mirrored_loss == pytest.approx(single_loss, rel=1e-5)


def test_a_diverging_run_stops_on_nan_and_keeps_its_last_good_checkpoint(records, tmp_path):
    config = small_config(records, epochs=3, steps_per_epoch=4, optimizer="sgd", momentum=0.0,
                          learning_rate=1e12)
    with pytest.raises(TrainingError, match="the loss became NaN in epoch 1.*try a lower train.learning_rate"):
        train(config, tmp_path, verbose=0)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "nan"
    assert not (tmp_path / "history.csv").exists()  # no epoch finished
    assert not (tmp_path / "model.keras").exists()  # no diverged model passed off as trained


@pytest.mark.parametrize(
    "losses, patience, stop",
    [([3, 2, 1], 1, False), ([1, 2], 1, True), ([1, 2, 3], 2, True), ([1, 2, 0.5], 2, False), ([1, 2, 3], 0, False)],
)
def test_early_stopping_rule(losses, patience, stop):
    from keras_vessel.training import should_stop_early

    history = [{"epoch": i + 1, "val_loss": value} for i, value in enumerate(losses)]
    assert should_stop_early(history, patience) is stop


def test_trained_keras_file_reloads_in_a_fresh_process_with_safe_mode(records, tmp_path):
    """A process that only imports keras and keras_vessel loads the run's model.keras, losses included."""
    import numpy as np

    train(small_config(records, epochs=1, steps_per_epoch=2), tmp_path, verbose=0)
    images = np.random.default_rng(0).uniform(0, 255, (1, 32, 48, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    model = keras.saving.load_model(tmp_path / "model.keras")
    expected = {name: np.asarray(value) for name, value in model(images).items()}
    script = (
        "import sys, numpy as np, keras, keras_vessel\n"
        "model = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
        "out = model(np.load(sys.argv[2]))\n"
        "np.savez(sys.argv[3], **{k: np.asarray(v) for k, v in out.items()})\n"
        "print(sorted(type(loss).__name__ for loss in model.loss.values()))\n"
    )
    done = subprocess.run([PYTHON, "-c", script, str(tmp_path / "model.keras"), str(tmp_path / "images.npy"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "['PixelWiseLoss', 'SegmentLevelLoss']" in done.stdout
    reloaded = np.load(tmp_path / "out.npz")
    for name, value in expected.items():
        np.testing.assert_allclose(reloaded[name], value, atol=1e-5)


def test_config_class_weights_reach_the_pixel_wise_loss():
    from keras_vessel.training.components import build_run_losses

    config = load_config(None, ["loss.kind=joint", "loss.vessel_weight=1", "loss.background_weight=1"])
    pixel = build_run_losses(config)["pixel"].get_config()
    assert (pixel["vessel_weight"], pixel["background_weight"]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="`background_weight` must be >= 0"):
        build_run_losses(load_config(None, ["loss.background_weight=-1"]))


def test_averaged_weights_are_the_exponential_moving_average_of_the_steps_and_training_keeps_the_raw_ones():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))
    model.set_weights([np.array([[1.0], [2.0]], dtype="float32")])
    optimizer = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.75)
    optimizer.build(model.trainable_variables)
    weight, average = np.array([[1.0], [2.0]]), None
    for gradient in ([[1.0], [0.0]], [[0.0], [4.0]], [[-2.0], [1.0]]):
        optimizer.apply_gradients([(tf.constant(gradient), model.trainable_variables[0])])
        weight = weight - 0.1 * np.array(gradient)  # the oracle: plain SGD, then the average
        average = weight if average is None else 0.75 * average + 0.25 * weight
    with averaged_weights(model, optimizer):
        np.testing.assert_allclose(model.get_weights()[0], average, rtol=1e-6)
    np.testing.assert_allclose(model.get_weights()[0], weight, rtol=1e-6)


def test_a_run_with_weight_averaging_validates_and_saves_the_average(records, tmp_path):
    from keras_vessel.data.pipeline import get_dataset
    from keras_vessel.training import output_names, validate
    from keras_vessel.training.components import build_run_losses

    config = small_config(records, ema_momentum=0.9, epochs=3)
    result = train(config, tmp_path, verbose=0)
    history = read_history(tmp_path / "history.csv")
    assert {"val_loss", "raw_val_loss", "val_dice", "raw_val_dice"} <= set(history[0])
    best = min(history, key=lambda row: float(row["val_loss"]))
    assert float(best["val_loss"]) != pytest.approx(float(best["raw_val_loss"]), rel=1e-4)
    # scored again from the saved file, the model is the averaged weights of its best epoch, not the raw ones
    saved = keras.saving.load_model(result.model_path)
    _, eval_step = build_steps(saved, None, build_run_losses(config), tf.distribute.get_strategy())
    validation = get_dataset(str(records), patch_size=32, batch_size=4, outputs=output_names(config),
                             names=["synthetic_0003"], training=False, min_fov_fraction=config.data.min_fov_fraction,
                             augment=config.data.augment, ignore_outside_fov=config.loss.ignore_outside_fov, seed=0)
    assert validate(eval_step, validation)["val_loss"] == pytest.approx(float(best["val_loss"]), rel=1e-4)
    # and model_raw.keras is the raw weights of the epoch with the best raw validation loss
    best_raw = min(history, key=lambda row: float(row["raw_val_loss"]))
    raw = keras.saving.load_model(tmp_path / "model_raw.keras")
    _, eval_step = build_steps(raw, None, build_run_losses(config), tf.distribute.get_strategy())
    assert validate(eval_step, validation)["val_loss"] == pytest.approx(float(best_raw["raw_val_loss"]), rel=1e-4)


def _renamed_synthetic_records(out: Path, **options) -> Path:
    """Synthetic training images prepared under other names (``other_0000``, ...): a second camera."""
    import functools

    from keras_vessel.data.datasets import SampleSpec, open_dataset
    from keras_vessel.data.tfrecords import write_dataset

    specs = [SampleSpec(spec.name.replace("synthetic", "other"), functools.partial(_renamed, spec))
             for spec in open_dataset("synthetic", None, "training", **options)]
    write_dataset(specs, out, dataset="synthetic", split="training", show_progress=False)
    return out


def _renamed(spec, **kwargs):
    return replace(spec.load(**kwargs), name=spec.name.replace("synthetic", "other"))


def test_a_run_of_several_folders_records_what_each_camera_would_choose(records, tmp_path):
    from keras_vessel.data.tfrecords import read_samples
    from keras_vessel.evaluation import CAMERAS_RULE, choose_run_threshold, choose_training_threshold, load_threshold
    from keras_vessel.evaluation.metrics import ScoreCounts, camera_balanced_threshold
    from keras_vessel.evaluation.thresholds import training_score_counts
    from keras_vessel.models.inference import load_inference_model

    other = _renamed_synthetic_records(tmp_path / "other", count=2, size=128, seed=5)
    config = small_config(records, epochs=1, steps_per_epoch=2)
    config = replace(config, data=replace(config.data, train_records=[str(records), str(other)]))
    train(config, tmp_path, verbose=0)
    chosen = choose_run_threshold(tmp_path, progress=False)
    model = load_inference_model(tmp_path / "model.keras")
    first, second = read_samples([records]), read_samples([other])
    stored = load_threshold(tmp_path / "model.keras")
    cameras = stored["cameras"]
    assert cameras["pooled"] == choose_training_threshold(model, first + second, progress=False)
    # rule p1: each camera weighs the same, the mean of their own thresholds is stored
    assert chosen["auto"] == stored["threshold"] == cameras["mean_of_cameras"] and stored["rule"] == CAMERAS_RULE
    assert cameras["per_camera"] == {str(records): choose_training_threshold(model, first, progress=False),
                                     str(other): choose_training_threshold(model, second, progress=False)}
    assert cameras["images"] == {str(records): 4, str(other): 2}
    assert cameras["mean_of_cameras"] == pytest.approx(np.mean(list(cameras["per_camera"].values())))
    counts = [training_score_counts(model, samples, progress=False) for samples in (first, second)]
    assert cameras["camera_balanced"] == camera_balanced_threshold(counts)
    assert isinstance(counts[0], ScoreCounts) and stored["images"] == 6
    # the same rule for the thresholds of test-time augmentation (`predict --tta d4` reads threshold_tta_d4.json)
    flips = choose_run_threshold(tmp_path, progress=False, tta="flip")["auto"]
    own = [choose_training_threshold(model, samples, progress=False, predict_options={"tta": "flip"})
           for samples in (first, second)]
    assert flips == pytest.approx(np.mean(own)) == load_threshold(tmp_path / "model.keras", tta="flip")["threshold"]
    assert load_threshold(tmp_path / "model.keras")["threshold"] == chosen["auto"]  # the default one is kept
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["threshold_tta_flip"] == flips and info["threshold"] == chosen["auto"]
