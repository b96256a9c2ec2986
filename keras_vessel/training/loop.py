"""`train`: one resumable run under any `tf.distribute` strategy (one device, mirrored, multi-worker).

Every strategy shares one `tf.function` step (`keras_vessel.training.step`),
the same Keras model, losses and optimizer, checkpoints and logs. The model is
still compiled with its losses and optimizer, so a saved `.keras` file can be
fine-tuned with a plain `model.fit` on one device. The run folder's files are
described in `keras_vessel.training.run_folder`; choosing the threshold on the
training images is a separate step
(`keras_vessel.evaluation.thresholds.choose_run_threshold`, which
`keras-vessel train` runs after training).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from keras_vessel.config import RunConfig, records_folders
from keras_vessel.data.pipeline import get_dataset, split_names
from keras_vessel.data.tfrecords import MANIFEST, verify_shards
from keras_vessel.errors import OutputError, TrainingError
from keras_vessel.interrupts import deferred_signals
from keras_vessel.io import ensure_writable_dir, file_sha256
from keras_vessel.locks import folder_lock
from keras_vessel.provenance import git_revision, machine_info, package_versions
from keras_vessel.training.components import (
    build_run_losses,
    build_training_model,
    check_config,
    check_stride,
    make_optimizer,
    output_names,
)
from keras_vessel.training.run_folder import RunFolder
from keras_vessel.training.step import averaged_weights, build_steps, should_stop_early, validate, weight_average_of
from keras_vessel.training.strategy import is_chief, make_strategy, precision_policy, warn_if_precision_is_slow

__all__ = ["StepTiming", "TrainResult", "time_steps", "train"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    model_path: Path
    epochs_completed: int
    status: str  # "completed", "early_stopped" or "nan"
    history: list[dict[str, float]]
    chief: bool = True  # False in a multi-worker run's other workers, which write no run folder


def train(config: RunConfig, output_dir: str | Path, *, verbose: int = 1,
          finish: Callable[[Path], Any] | None = None, info: dict[str, Any] | None = None) -> TrainResult:
    """Train (or resume) the run described by `config` into `output_dir`.

    Re-running on the same folder resumes after the last finished epoch (a
    killed run loses at most the epoch in progress) if the config is the same
    but for ``train.epochs``; otherwise ConfigError says what differs. A folder
    holding a run that cannot be resumed (its checkpoints/ or config.yaml were
    removed) is refused with OutputError (`RunFolder.check_resume`). Damaged
    prepared records are refused before the first step (PrepareError).
    Raises TrainingError when the loss becomes NaN or TensorFlow fails.

    `finish(output_dir)` completes the run after training (`keras-vessel train`
    chooses the threshold): run.json says "completed" (or "early_stopped") only
    after it returned. A run stopped in it (Ctrl-C, SIGTERM: "interrupted";
    kill -9: still "running") has ``trained`` in run.json, and a re-run with the
    same settings runs only `finish`, without training again.

    `info`: more fields for run.json (`keras_vessel.training.finetune` records its photographs).
    With ``model.start_from``, run.json records that model's SHA-256 (``start_from``), and a
    resume is refused (ConfigError) once the file has changed.

    The run folder is locked while it is written (`keras_vessel.locks.folder_lock`):
    a second process on it gets a FolderLockedError naming the first.
    Ctrl-C (and SIGTERM) stops training after the current step or validation batch (a KeyboardInterrupt
    raised between them, never inside TensorFlow's Python code), and never between an epoch's checkpoint and
    its history row (`keras_vessel.interrupts.deferred_signals`).
    """
    manifest = check_config(config)
    folders = records_folders(config.data)
    _check_outside_records(Path(output_dir), folders, config.name)
    train_names, validation_names = split_names(folders, config.data.validation_images,
                                                folds=config.data.folds, fold=config.data.fold)
    for folder in folders:
        verify_shards(folder)
    records = {folder: file_sha256(Path(folder) / MANIFEST) for folder in folders}
    start_from = {"path": config.model.start_from, "sha256": file_sha256(config.model.start_from)} \
        if config.model.start_from else None
    run = RunFolder(output_dir)
    ensure_writable_dir(run.path, what="the run folder")

    strategy = _start(config)
    run.chief = is_chief(strategy)
    # only the chief writes the run folder: the other workers of a multi-worker run may share it
    with folder_lock(run.path, what="the run folder") if run.chief else contextlib.nullcontext():
        previous = run.check_resume(config, records, start_from) or {}  # under the lock: what no other process changes
        extra = {**(info or {}), **({"start_from": start_from} if start_from else {})}
        return _train(config, run, strategy, manifest, folders, records, previous,
                      (train_names, validation_names), verbose=verbose, finish=finish, info=extra)


def _train(config, run, strategy, manifest, folders, records, previous, names, *, verbose, finish,
           info) -> TrainResult:
    train_names, validation_names = names
    model, optimizer, losses = _compiled(config, manifest, strategy)
    with strategy.scope():
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

    # non-chief workers write their (identical) checkpoints to a private folder
    checkpoints = run.checkpoints if run.chief else Path(tempfile.mkdtemp(prefix="keras-vessel-worker-"))
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    manager = tf.train.CheckpointManager(checkpoint, str(checkpoints), max_to_keep=2)
    history = run.read_history() if run.chief else []
    resumes = list(previous.get("resumed", []))
    trained = None  # how training ended, when a previous process of this run finished it
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        done = int(epoch_var.numpy())
        history = history[:done]
        trained = _finished_training(previous, done, config)
        resumes.append({"after_epoch": done, "epochs": config.train.epochs, "at": _now()})
        if run.chief:
            print(f"resuming {run.path} after epoch {done} of {config.train.epochs}"
                  + (f" (training {trained['status']}; only the steps after training run)" if trained else ""),
                  file=sys.stderr)
    start_epoch = int(epoch_var.numpy())

    run.start(config, {
        "name": config.name, "seed": config.train.seed, "command": " ".join(sys.argv),
        "git_revision": git_revision(), "versions": package_versions(), "machine": machine_info(),
        "strategy": config.train.strategy, "strategy_class": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync, "training_images": train_names,
        "validation_images": validation_names, "records": records,
        "started": previous.get("started", _now()), "resumed": resumes,
        **({"trained": trained} if trained else {}), **info,
    })

    def save_checkpoint(epoch: int) -> None:
        epoch_var.assign(epoch)
        manager.save(checkpoint_number=epoch)

    try:
        if trained:
            status = trained["status"]
        else:
            train_data, validation_data = _datasets(config, strategy, folders, train_names, validation_names,
                                                    stream_seed=config.train.seed * 100_003 + start_epoch)
            steps = build_steps(model, optimizer, losses, strategy)
            epochs = _Epochs(config, run, model, optimizer, steps, validation_data, history, verbose=verbose)
            with deferred_signals():  # a distributed iterator is made in Python too
                iterator = iter(train_data)
            status = epochs.run(iterator, start_epoch, save_checkpoint)
        if status != "nan":
            if not run.model_path.exists():
                with averaged_weights(model, optimizer):
                    run.save_model(model)
            if not trained:
                run.update(trained={"status": status, "epochs": len(history), "of": config.train.epochs,
                                    "at": _now()})
            if finish is not None and run.chief:
                finish(run.path)
    except BaseException as error:  # record why the run stopped, then let the error through
        interrupted = isinstance(error, KeyboardInterrupt)
        run.stop("interrupted" if interrupted else "failed", len(history),
                 **({} if interrupted else {"error": f"{type(error).__name__}: {error}"}))
        if isinstance(error, tf.errors.OpError):
            raise TrainingError(f"training {run.path} stopped in epoch {len(history) + 1}: {error.message}; "
                                f"re-run the same command to resume after epoch {len(history)}") from None
        raise

    run.stop(status, len(history))
    if status == "nan":
        raise TrainingError(
            f"the loss became NaN in epoch {len(history) + 1}; the last good checkpoint is in "
            f"{run.checkpoints} (try a lower train.learning_rate)"
        )
    return TrainResult(run.path, run.model_path, len(history), status, history, chief=run.chief)


def _compiled(config: RunConfig, manifest: dict[str, Any], strategy: tf.distribute.Strategy):
    """The run's model, optimizer and losses, built and compiled under `strategy` (stride checked)."""
    with strategy.scope():
        model = build_training_model(config, manifest)
        optimizer = make_optimizer(config)
        losses = build_run_losses(config)
        model.compile(optimizer=optimizer, loss=losses)
        optimizer.build(model.trainable_variables)  # before the distributed step is traced, not inside it
    check_stride(model, config)
    return model, optimizer, losses


@dataclass(frozen=True)
class StepTiming:
    """What `time_steps` measured: the first step (input pipeline start and tracing included) and each later one."""

    first_seconds: float
    seconds_per_step: float


def time_steps(config: RunConfig, *, steps: int = 6) -> StepTiming:
    """Time `steps` training steps of `config` on this machine, as `train` would run them; writes nothing.

    The model, optimizer, losses and patch stream are built as for the run and
    thrown away afterwards. A budget in minutes becomes a number of steps with
    it (`keras_vessel.training.finetune.steps_for_budget`). `steps` must be at least 2.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"`steps` must be an int >= 2 (the first step is traced); got {steps!r}")
    manifest = check_config(config)
    folders = records_folders(config.data)
    names, _ = split_names(folders, config.data.validation_images, folds=config.data.folds, fold=config.data.fold)
    strategy = _start(config)
    model, optimizer, losses = _compiled(config, manifest, strategy)
    stream, _ = _datasets(config, strategy, folders, names, [], stream_seed=config.train.seed)
    train_step, _ = build_steps(model, optimizer, losses, strategy)
    started = time.monotonic()
    iterator = iter(stream)
    float(train_step(next(iterator))["loss"])  # float(): wait for the step to finish
    first = time.monotonic() - started
    started = time.monotonic()
    for _ in range(steps - 1):
        float(train_step(next(iterator))["loss"])
    return StepTiming(first, (time.monotonic() - started) / (steps - 1))


def _finished_training(previous: dict, done: int, config: RunConfig) -> dict | None:
    """run.json's ``trained`` when a previous process finished training this run to `done` epochs
    and the config asks for no more (only ``train.epochs`` may have changed); else None."""
    trained = previous.get("trained")
    if not isinstance(trained, dict) or trained.get("epochs") != done or trained.get("of") != config.train.epochs:
        return None
    return trained


def _check_outside_records(output_dir: Path, folders: list[str], name: str) -> None:
    """Refuse a run folder in (or equal to) a prepared-records folder: its files would mix with the shards."""
    for folder in folders:
        if output_dir.resolve().is_relative_to(Path(folder).resolve()):
            raise OutputError(f"the run folder {output_dir} is inside the prepared-records folder {folder} "
                              f"(data.train_records); choose a run folder outside it, e.g. runs/{name}")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _start(config: RunConfig) -> tf.distribute.Strategy:
    """The strategy, with the seed, determinism and precision policy of the config applied."""
    strategy = make_strategy(config.train.strategy, cpu_devices=config.train.cpu_devices)
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = precision_policy(config.train.mixed_precision)
    warn_if_precision_is_slow(policy)
    keras.mixed_precision.set_global_policy(policy)
    return strategy


def _datasets(config: RunConfig, strategy: tf.distribute.Strategy, folders: list[str], train_names: list[str],
              validation_names: list[str], *, stream_seed: int):
    """Distributed training stream and validation grid (None without validation images).

    A resumed run draws a fresh, reproducible patch stream (the seed includes the start epoch).
    """
    data = config.data

    def dataset_fn(names: list[str], training: bool, seed: int):
        def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return get_dataset(
                folders, patch_size=data.patch_size, batch_size=data.batch_size, outputs=output_names(config),
                names=names, training=training, min_fov_fraction=data.min_fov_fraction, augment=data.augment,
                ignore_outside_fov=config.loss.ignore_outside_fov, fov_diameter=data.fov_diameter,
                scale_jitter=data.scale_jitter if training else 0.0, seed=seed, input_context=context,
            )
        return make

    train_data = strategy.distribute_datasets_from_function(dataset_fn(train_names, True, stream_seed))
    validation_data = (strategy.distribute_datasets_from_function(dataset_fn(validation_names, False, 0))
                       if validation_names else None)
    return train_data, validation_data


class _Epochs:
    """The epoch loop: train, validate, keep the best model, log, checkpoint, stop early."""

    def __init__(self, config, run, model, optimizer, steps, validation_data, history, *, verbose):
        self.config, self.folder, self.model, self.optimizer = config, run, model, optimizer
        self.train_step, self.eval_step = steps
        self.validation_data, self.history, self.verbose = validation_data, history, verbose
        self.writer = tf.summary.create_file_writer(str(run.logs)) if run.chief else None
        self.best = min((row["val_loss"] for row in history if "val_loss" in row), default=math.inf)
        self.best_raw = min((row["raw_val_loss"] for row in history if "raw_val_loss" in row), default=math.inf)

    def run(self, iterator, start_epoch: int, checkpoint) -> str:
        """Train epochs `start_epoch`+1 .. train.epochs; returns "completed", "early_stopped" or "nan"."""
        train = self.config.train
        for epoch in range(start_epoch, train.epochs):
            row = self._train(iterator, epoch)
            if row is None:
                return "nan"
            self._validate(row)
            with deferred_signals("stopping once this epoch's files are written"):  # they must agree
                self._save_best(row)
                self.history.append(row)
                checkpoint(epoch + 1)
                self._log(row, epoch + 1)
            if should_stop_early(self.history, train.early_stopping_patience):
                return "early_stopped"
        return "completed"

    def _train(self, iterator, epoch: int) -> dict[str, float] | None:
        train, chief = self.config.train, self.folder.chief
        bar = keras.utils.Progbar(train.steps_per_epoch, verbose=self.verbose if chief else 0, stateful_metrics=None)
        if self.verbose and chief:
            print(f"Epoch {epoch + 1}/{train.epochs}", file=sys.stderr)
        totals: dict[str, float] = {}
        started = time.monotonic()
        for step in range(train.steps_per_epoch):
            with deferred_signals("stopping after this step"):  # here, not inside TensorFlow's Python code
                values = {k: float(v) for k, v in self.train_step(next(iterator)).items()}
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value
            bar.update(step + 1, values=list(values.items()))
            if not math.isfinite(values["loss"]):
                logger.error("loss became %s at epoch %d; stopping, keeping the last good checkpoint",
                             values["loss"], epoch + 1)
                return None
        row = {"epoch": epoch + 1, **{k: v / train.steps_per_epoch for k, v in totals.items()}}
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
        row["seconds"] = time.monotonic() - started
        return row

    def _validate(self, row: dict[str, float]) -> None:
        """Score the validation images: the weights that are saved, and the raw ones (``raw_val_*``) with EMA."""
        if self.validation_data is None:
            return
        if weight_average_of(self.optimizer):
            row.update({f"raw_{k}": v for k, v in validate(self.eval_step, self.validation_data).items()})
        with averaged_weights(self.model, self.optimizer):
            row.update(validate(self.eval_step, self.validation_data))

    def _save_best(self, row: dict[str, float]) -> None:
        """Keep `model.keras` (and `model_raw.keras` with EMA) at their best validation loss."""
        if row.get("raw_val_loss", math.inf) < self.best_raw:
            self.best_raw = row["raw_val_loss"]
            self.folder.save_model(self.model, raw=True)
        if self.validation_data is None or row.get("val_loss", -math.inf) < self.best:
            self.best = row.get("val_loss", self.best)
            with averaged_weights(self.model, self.optimizer):
                self.folder.save_model(self.model)

    def _log(self, row: dict[str, float], epoch: int) -> None:
        self.folder.write_history(self.history)
        if not self.folder.chief:
            return
        with self.writer.as_default(step=epoch):
            for key, value in row.items():
                if key != "epoch":
                    tf.summary.scalar(key, value)
        self.writer.flush()
        if self.verbose:
            print(" - ".join(f"{k}: {v:.4g}" for k, v in row.items() if k != "epoch"), file=sys.stderr)
