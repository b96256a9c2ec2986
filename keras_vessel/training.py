"""Training under `tf.distribute`: one device, mirrored, or multi-worker.

Why a custom step and not `model.fit`: with Keras 3.15 / TF 2.21, `fit` fails
under `MultiWorkerMirroredStrategy` before the first step (keras-team/keras#20585:
`_maybe_symbolic_build` reduces a `PerReplica` batch outside a replica context,
"Attempt to convert a value (PerReplica...) to a Tensor"). A `tf.function` step
run with `strategy.run` over a distributed dataset works for every strategy,
so all of them share that one step: the same Keras model, losses and
optimizer, the same checkpoints, resume logic and logs. The model is still
compiled with its losses and optimizer, so a saved `.keras` file can be
fine-tuned with a plain `model.fit` on one device.

A run folder holds:

| file | content |
|---|---|
| `config.yaml` | the resolved config |
| `run.json` | seed, package versions, git revision, machine, strategy, status |
| `history.csv` | one row per finished epoch (with `train.ema_momentum`, `raw_val_*` scores the raw weights) |
| `checkpoints/` | model + optimizer + epoch, every epoch (resume point) |
| `logs/` | TensorBoard scalars |
| `model.keras` | the best model on validation (the last one without validation); the weight average with EMA |
| `model_raw.keras` | with EMA and validation only: the best raw weights, what the run would ship without EMA |
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import yaml

from keras_vessel.errors import TrainingError
from keras_vessel.config import ConfigError, RunConfig, config_to_dict, records_folders, save_config
from keras_vessel.io import ensure_writable_dir, write_json_atomic, write_text_atomic
from keras_vessel.models.saving import save_model_atomic
from keras_vessel.pipeline import get_dataset, split_names
from keras_vessel.provenance import cpu_speed_flags, git_revision, machine_info, package_versions
from keras_vessel.tfrecords import MANIFEST, PrepareError, combined_manifest, file_sha256, verify_shards

logger = logging.getLogger(__name__)
PAPER_MEAN = 98.19


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    model_path: Path
    epochs_completed: int
    status: str  # "completed", "early_stopped" or "nan"
    history: list[dict[str, float]]


def split_cpu(devices: int) -> None:
    """Expose the CPU as `devices` logical devices, so mirrored training runs without GPUs.

    Must happen before TensorFlow initialises its devices, i.e. first thing in a process.
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
        )
    except RuntimeError as error:
        if len(tf.config.list_logical_devices("CPU")) != devices:
            raise TrainingError(
                f"train.cpu_devices={devices}: TensorFlow was already initialised in this process "
                f"({error}); set it in a fresh process"
            ) from error


def make_strategy(name: str, *, cpu_devices: int = 0) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy a config names; failures say what to fix."""
    if cpu_devices > 1:
        split_cpu(cpu_devices)
    try:
        if name == "auto":
            gpus = tf.config.list_logical_devices("GPU")
            return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
        if name == "one_device":
            device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
            return tf.distribute.OneDeviceStrategy(device)
        if name == "mirrored":
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            return tf.distribute.MirroredStrategy([device.name for device in devices])
        if name == "multi_worker":
            if "TF_CONFIG" not in os.environ:
                raise TrainingError(
                    "train.strategy=multi_worker needs the TF_CONFIG environment variable "
                    '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                    '"task": {"type": "worker", "index": 0}})'
                )
            return tf.distribute.MultiWorkerMirroredStrategy()
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        if isinstance(error, TrainingError):
            raise
        raise TrainingError(f"could not start the {name!r} strategy: {error}") from error
    raise ConfigError(f"train.strategy must be auto, one_device, mirrored or multi_worker, got {name!r}")


def _output_names(config: RunConfig) -> tuple[str, ...]:
    return ("segment", "pixel") if config.loss.kind == "joint" else ("pixel",)


def _normalisation(config: RunConfig, manifest: dict[str, Any]) -> dict[str, Any]:
    channel = config.data.channel
    if config.data.normalisation == "local":
        return {"channel": channel, "normalisation": "local", "local_sigma": config.data.local_sigma}
    if config.data.normalisation == "paper":
        return {"channel": channel, "mean": PAPER_MEAN, "scale": 1.0}
    stats = manifest["statistics"]
    if f"{channel}_mean" not in stats:
        raise ConfigError(
            f"data.channel={channel} needs per-channel statistics that {config.data.train_records} does not have "
            "(prepared by an older keras-vessel); run the same `keras-vessel prepare` command again: "
            "it re-prepares the shards recorded without them"
        )
    return {"channel": channel, "mean": stats[f"{channel}_mean"], "scale": stats[f"{channel}_std"]}


def build_training_model(config: RunConfig, manifest: dict[str, Any]) -> keras.Model:
    """The network of `config.model`, with heads and normalisation from the config and data."""
    from keras_vessel.models import build_model

    options = {**_normalisation(config, manifest), "fov_diameter": training_fov_diameter(config, manifest),
               **config.model.options, "heads": _output_names(config)}
    try:
        return build_model(config.model.name, **options)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model: {error}") from error


def training_fov_diameter(config: RunConfig, manifest: dict[str, Any]) -> float:
    """The FOV diameter (px) the network sees: `data.fov_diameter`, or the training images' median."""
    if config.data.fov_diameter:
        return float(config.data.fov_diameter)
    return float(np.median([image["fov_diameter"] for image in manifest["images"]]))


def _optimizer(config: RunConfig) -> keras.optimizers.Optimizer:
    train = config.train
    steps = train.steps_per_epoch
    rate: Any = train.learning_rate
    if train.lr_schedule == "step":
        if train.lr_decay_epochs < 1:
            raise ConfigError("train.lr_decay_epochs must be at least 1 for lr_schedule=step")
        boundaries = [steps * train.lr_decay_epochs * k for k in range(1, train.epochs // train.lr_decay_epochs + 1)]
        values = [train.learning_rate * train.lr_decay_factor**k for k in range(len(boundaries) + 1)]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    elif train.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(train.learning_rate, decay_steps=steps * train.epochs)
    decay = train.weight_decay or None
    ema = {"use_ema": True, "ema_momentum": train.ema_momentum} if train.ema_momentum else {}
    if train.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=train.momentum, weight_decay=decay, **ema)
    if decay:
        return keras.optimizers.AdamW(rate, weight_decay=decay, **ema)
    return keras.optimizers.Adam(rate, **ema)


@contextlib.contextmanager
def _averaged_weights(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> Iterator[None]:
    """Put the optimizer's moving average of the weights in the model for a while (no-op without EMA).

    Validation and the saved model see the average; training continues from
    the raw weights, so a resumed run is the same run. (Keras keeps the
    average in `_model_variables_moving_average`, which its own
    `SwapEMAWeights` callback reads too.)
    """
    if not optimizer.use_ema:
        yield
        return
    raw = [keras.ops.convert_to_numpy(variable) for variable in model.trainable_variables]
    for variable, average in zip(model.trainable_variables, optimizer._model_variables_moving_average):
        variable.assign(average)
    try:
        yield
    finally:
        for variable, value in zip(model.trainable_variables, raw):
            variable.assign(value)


def _check_config(config: RunConfig) -> dict[str, Any]:
    """Everything that can be wrong before training starts, reported with the key or path."""
    if not config.data.train_records:
        raise ConfigError("data.train_records is empty: point it at a folder written by `keras-vessel prepare`")
    try:
        manifest = combined_manifest(records_folders(config.data))
    except PrepareError as error:
        raise ConfigError(f"data.train_records: {error}") from error
    data = config.data
    if data.fov_diameter < 0 or 0 < data.fov_diameter < 32:
        raise ConfigError(f"data.fov_diameter must be 0 (each image at its own scale) or a diameter of at "
                          f"least 32 px, got {data.fov_diameter}")
    if not 0 <= data.scale_jitter <= 1:
        raise ConfigError(f"data.scale_jitter must be between 0 and 1, got {data.scale_jitter}")
    if not 0 < data.local_sigma <= 256:
        raise ConfigError(f"data.local_sigma must be in (0, 256] px, got {data.local_sigma}")
    train = config.train
    for key, value in (("train.epochs", train.epochs), ("train.steps_per_epoch", train.steps_per_epoch),
                       ("data.batch_size", config.data.batch_size)):
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    if train.learning_rate <= 0:
        raise ConfigError(f"train.learning_rate must be positive, got {train.learning_rate}")
    if not 0 <= train.ema_momentum < 1:
        raise ConfigError(f"train.ema_momentum must be in [0, 1) (0 turns the average off), got {train.ema_momentum}")
    _normalisation(config, manifest)  # statistics the records lack fail here, before the run folder exists
    return manifest


def check_resume(config: RunConfig, output_dir: Path, records: dict[str, str]) -> dict[str, Any] | None:
    """Refuse to resume a run folder with other settings or other data; returns its run.json (None if new).

    Only ``train.epochs`` may change (to train a finished run longer): any
    other key that differs from the stored config.yaml, or prepared records
    whose manifest changed since the run started, raise ConfigError naming
    them and saying how to start afresh.
    """
    stored_path, info_path = output_dir / "config.yaml", output_dir / "run.json"
    if not stored_path.is_file() or not (output_dir / "checkpoints").is_dir():
        return None
    stored = yaml.safe_load(stored_path.read_text()) or {}
    changed = [(key, old, new) for key, old, new in _differences(stored, config_to_dict(config))
               if key != "train.epochs"]
    fresh = f"to start afresh, give another --output or delete {output_dir}"
    if changed:
        shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changed)
        raise ConfigError(f"{output_dir} holds a run started with other settings ({shown}). To resume it, "
                          f"use its settings (only train.epochs may change, to train longer); {fresh}")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    for folder, digest in (info.get("records") or {}).items():
        if records.get(folder, digest) != digest:
            raise ConfigError(f"the prepared data in {folder} changed since {output_dir} started (prepare was "
                              f"run again with other images or options); {fresh}")
    return info


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [item for key in keys for item in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    old = list(old) if isinstance(old, tuple) else old
    new = list(new) if isinstance(new, tuple) else new
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _warn_if_bfloat16_is_emulated() -> None:
    """bfloat16 without AVX-512-BF16/AMX (or a GPU) is emulated: measured 20x slower than fp32."""
    flags = cpu_speed_flags()
    if tf.config.list_logical_devices("GPU") or flags is None:
        return
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        logger.warning(
            "train.mixed_precision=true on a CPU without avx512_bf16/amx_bf16: bfloat16 is emulated "
            "and about 20x slower than float32 here; set train.mixed_precision=false"
        )


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0)


def train(config: RunConfig, output_dir: str | Path, *, verbose: int = 1) -> TrainResult:
    """Train (or resume) the run described by `config` into `output_dir`.

    Re-running on the same folder resumes after the last finished epoch: a
    killed run loses at most the epoch in progress.
    """
    output_dir = Path(output_dir)
    manifest = _check_config(config)
    folders = records_folders(config.data)
    train_names, validation_names = split_names(folders, config.data.validation_images,
                                                folds=config.data.folds, fold=config.data.fold)
    for folder in folders:
        verify_shards(folder)
    records = {folder: file_sha256(Path(folder) / MANIFEST) for folder in folders}
    previous = check_resume(config, output_dir, records)
    ensure_writable_dir(output_dir, what="the run folder")

    strategy = make_strategy(config.train.strategy, cpu_devices=config.train.cpu_devices)
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.train.mixed_precision:
        _warn_if_bfloat16_is_emulated()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if config.train.mixed_precision else "float32")
    chief = _is_chief(strategy)
    # non-chief workers write their (identical) checkpoints to a private folder
    work_dir = output_dir if chief else Path(tempfile.mkdtemp(prefix="keras-vessel-worker-"))
    work_dir.mkdir(parents=True, exist_ok=True)

    outputs = _output_names(config)
    with strategy.scope():
        model = build_training_model(config, manifest)
        optimizer = _optimizer(config)
        losses = _build_losses(config)
        model.compile(optimizer=optimizer, loss=losses)
        # variables must exist before the distributed step is traced, not inside it
        optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    _check_stride(model, config)

    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    manager = tf.train.CheckpointManager(checkpoint, str(work_dir / "checkpoints"), max_to_keep=2)
    history = _read_history(output_dir / "history.csv") if chief else []
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        history = history[: int(epoch_var.numpy())]
    start_epoch = int(epoch_var.numpy())
    resumes = list((previous or {}).get("resumed", []))
    if manager.latest_checkpoint and chief:
        resumes.append({"after_epoch": start_epoch, "epochs": config.train.epochs,
                        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        print(f"resuming {output_dir} after epoch {start_epoch} of {config.train.epochs}", file=sys.stderr)

    run_info = {
        "name": config.name,
        "seed": config.train.seed,
        "command": " ".join(sys.argv),
        "git_revision": git_revision(),
        "versions": package_versions(),
        "machine": machine_info(),
        "strategy": config.train.strategy,
        "strategy_class": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "training_images": train_names,
        "validation_images": validation_names,
        "records": records,
        "status": "running",
        "started": (previous or {}).get("started", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        "resumed": resumes,
    }
    if chief:
        save_config(config, output_dir / "config.yaml")
        write_json_atomic(output_dir / "run.json", run_info)

    def dataset_fn(names, training, epoch_seed):
        def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return get_dataset(
                folders, patch_size=config.data.patch_size, fov_diameter=config.data.fov_diameter,
                scale_jitter=config.data.scale_jitter if training else 0.0,
                batch_size=config.data.batch_size, outputs=outputs, names=names, training=training,
                min_fov_fraction=config.data.min_fov_fraction, augment=config.data.augment,
                ignore_outside_fov=config.loss.ignore_outside_fov, seed=epoch_seed, input_context=context,
            )
        return make

    # a resumed run draws a fresh (but reproducible) patch stream
    stream_seed = config.train.seed * 100_003 + start_epoch
    train_data = strategy.distribute_datasets_from_function(dataset_fn(train_names, True, stream_seed))
    validation_data = (
        strategy.distribute_datasets_from_function(dataset_fn(validation_names, False, 0))
        if validation_names else None
    )
    train_step, eval_step = _make_steps(model, optimizer, losses, strategy)

    writer = tf.summary.create_file_writer(str(output_dir / "logs")) if chief else None
    best = min((row["val_loss"] for row in history if "val_loss" in row), default=math.inf)
    best_raw = min((row["raw_val_loss"] for row in history if "raw_val_loss" in row), default=math.inf)
    status = "completed"
    iterator = iter(train_data)
    model_path = output_dir / "model.keras"
    try:
        for epoch in range(start_epoch, config.train.epochs):
            bar = keras.utils.Progbar(config.train.steps_per_epoch, verbose=verbose if chief else 0,
                                      stateful_metrics=None)
            if verbose and chief:
                print(f"Epoch {epoch + 1}/{config.train.epochs}", file=sys.stderr)
            totals: dict[str, float] = {}
            started = time.monotonic()
            for step in range(config.train.steps_per_epoch):
                values = {k: float(v) for k, v in train_step(next(iterator)).items()}
                for key, value in values.items():
                    totals[key] = totals.get(key, 0.0) + value
                bar.update(step + 1, values=list(values.items()))
                if not math.isfinite(values["loss"]):
                    status = "nan"
                    break
            if status == "nan":
                logger.error("loss became %s at epoch %d; stopping, keeping the last good checkpoint",
                             values["loss"], epoch + 1)
                break
            row = {"epoch": epoch + 1, **{k: v / config.train.steps_per_epoch for k, v in totals.items()}}
            row["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            row["seconds"] = time.monotonic() - started
            if validation_data is not None and optimizer.use_ema:  # the raw weights' scores, to compare
                row.update({f"raw_{k}": v for k, v in _validate(eval_step, validation_data).items()})
                if row["raw_val_loss"] < best_raw:
                    best_raw = row["raw_val_loss"]
                    if chief:
                        save_model_atomic(model, output_dir / "model_raw.keras")
            with _averaged_weights(model, optimizer):
                if validation_data is not None:
                    row.update(_validate(eval_step, validation_data))
                improved = row.get("val_loss", -math.inf) < best or validation_data is None
                if improved:
                    best = row.get("val_loss", best)
                    if chief:
                        save_model_atomic(model, model_path)
            history.append(row)
            epoch_var.assign(epoch + 1)
            manager.save(checkpoint_number=epoch + 1)
            if chief:
                _write_history(output_dir / "history.csv", history)
                with writer.as_default(step=epoch + 1):
                    for key, value in row.items():
                        if key != "epoch":
                            tf.summary.scalar(key, value)
                writer.flush()
            if verbose and chief:
                print(" - ".join(f"{k}: {v:.4g}" for k, v in row.items() if k != "epoch"), file=sys.stderr)
            if _should_stop_early(history, config.train.early_stopping_patience):
                status = "early_stopped"
                break
    except BaseException as error:  # record why the run stopped, then let the error through
        if chief:
            interrupted = isinstance(error, KeyboardInterrupt)
            run_info.update(status="interrupted" if interrupted else "failed", epochs_completed=len(history),
                            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            if not interrupted:
                run_info["error"] = f"{type(error).__name__}: {error}"
            write_json_atomic(output_dir / "run.json", run_info)
        if isinstance(error, tf.errors.OpError):
            raise TrainingError(f"training {output_dir} stopped in epoch {len(history) + 1}: {error.message}; "
                                f"re-run the same command to resume after epoch {len(history)}") from None
        raise

    if chief and status != "nan":
        if not model_path.exists():
            with _averaged_weights(model, optimizer):
                save_model_atomic(model, model_path)
        # a cross-validation fold's held-out images stand in for test images: keep them out of the threshold
        threshold_images = train_names if config.data.folds else None
        run_info["threshold"] = choose_threshold(model_path, config, names=threshold_images, verbose=verbose)
    if chief:
        run_info.update(status=status, epochs_completed=len(history),
                        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_json_atomic(output_dir / "run.json", run_info)
    if status == "nan":
        raise TrainingError(
            f"the loss became NaN in epoch {len(history) + 1}; the last good checkpoint is in "
            f"{output_dir / 'checkpoints'} (try a lower train.learning_rate)"
        )
    return TrainResult(output_dir, model_path, len(history), status, history)


def choose_threshold(model_path: Path, config: RunConfig, *, names: list[str] | None = None,
                     verbose: int = 1) -> float:
    """Store the accuracy-optimal threshold on the training images beside the model.

    Chosen on the training split (never the test split), so evaluation with
    `--threshold train` is honest; `names` limits it to some of those images.
    """
    from keras_vessel.evaluation import choose_training_threshold, save_threshold
    from keras_vessel.inference import load_inference_model
    from keras_vessel.tfrecords import read_samples

    model = load_inference_model(model_path, heads=config.train.heads)
    folders = records_folders(config.data)
    samples = read_samples(folders, names=names)
    threshold = choose_training_threshold(model, samples, progress=bool(verbose))
    dataset = combined_manifest(folders)["dataset"]
    save_threshold(model_path, threshold, heads=config.train.heads, dataset=dataset, images=len(samples))
    return threshold


def _build_losses(config: RunConfig) -> dict[str, keras.losses.Loss]:
    from keras_vessel.losses import build_losses

    return build_losses(config.loss.kind, beta=config.loss.beta,
                        ignore_outside_fov=config.loss.ignore_outside_fov,
                        vessel_weight=config.loss.vessel_weight,
                        background_weight=config.loss.background_weight,
                        extra=config.loss.extra, extra_weight=config.loss.extra_weight,
                        cldice_alpha=config.loss.cldice_alpha,
                        cldice_iterations=config.loss.cldice_iterations)


def _check_stride(model: keras.Model, config: RunConfig) -> None:
    from keras_vessel.models import model_stride

    stride = model_stride(model)
    if config.data.patch_size % stride:
        raise ConfigError(
            f"data.patch_size={config.data.patch_size} is not divisible by the network's stride "
            f"{stride} ({config.model.name}); use a multiple of {stride}"
        )


def _make_steps(model, optimizer, losses, strategy):
    """The one distributed train step and eval step every strategy shares."""
    replicas = strategy.num_replicas_in_sync

    def head_losses(targets, predictions):
        """Per-head losses as Keras computes them: already divided by the replica count."""
        if not isinstance(predictions, dict):  # a model built with list outputs
            predictions = dict(zip(model.output_names, tf.nest.flatten(predictions)))
        per_head = {f"{name}_loss": losses[name](targets[name], predictions[name]) for name in losses}
        return per_head, tf.add_n(list(per_head.values()))

    def unscaled(values):
        return {key: value * replicas for key, value in values.items()}

    def replica_train(batch):
        images, targets = batch
        with tf.GradientTape() as tape:
            predictions = model(images, training=True)
            per_head, loss = head_losses(targets, predictions)
            # Keras scales each loss by 1/replicas and the optimizer sums the
            # replicas' gradients: a global mean. Layer losses are not scaled.
            regularisation = tf.add_n(model.losses) / replicas if model.losses else 0.0
            total = loss + regularisation
        gradients = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return unscaled({"loss": loss, **per_head})

    def replica_eval(batch):
        images, targets = batch
        predictions = model(images, training=False)
        per_head, loss = head_losses(targets, predictions)
        values = unscaled({"loss": loss, **per_head})
        predictions = tf.nest.flatten(predictions)
        first = next(iter(targets.values()))
        label, valid = first[..., 0], first[..., 1]
        probability = tf.add_n([tf.sigmoid(tf.cast(p[..., 0], tf.float32)) for p in predictions])
        vessel = tf.cast(probability / len(predictions) >= 0.5, tf.float32) * valid
        counts = {
            "tp": tf.reduce_sum(vessel * label), "fp": tf.reduce_sum(vessel * (1 - label)),
            "fn": tf.reduce_sum((1 - vessel) * label * valid), "batches": tf.constant(1.0),
        }
        return values, counts

    @tf.function
    def train_step(batch):
        values = strategy.run(replica_train, args=(batch,))
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in values.items()}

    @tf.function(reduce_retracing=True)  # the last validation batch is smaller
    def eval_step(batch):
        values, counts = strategy.run(replica_eval, args=(batch,))
        return ({k: strategy.reduce("SUM", v, axis=None) for k, v in values.items()},
                {k: strategy.reduce("SUM", v, axis=None) for k, v in counts.items()})

    return train_step, eval_step


def _validate(eval_step, validation_data) -> dict[str, float]:
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for batch in validation_data:
        values, batch_counts = eval_step(batch)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        for key, value in batch_counts.items():
            counts[key] = counts.get(key, 0.0) + float(value)
    if not counts.get("batches"):
        return {}
    row = {f"val_{k}": v / counts["batches"] for k, v in sums.items()}
    row["val_dice"] = 2 * counts["tp"] / max(2 * counts["tp"] + counts["fp"] + counts["fn"], 1.0)
    return row


def _should_stop_early(history: list[dict[str, float]], patience: int) -> bool:
    if patience < 1 or not history or "val_loss" not in history[-1]:
        return False
    losses = [row["val_loss"] for row in history]
    best_epoch = int(np.argmin(losses))
    return len(losses) - 1 - best_epoch >= patience


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in history:
        keys.extend(key for key in row if key not in keys)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buffer.getvalue())


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open() as handle:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return rows
