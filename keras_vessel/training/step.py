"""The one distributed training step every strategy shares, validation, and the weight average.

Why a custom step and not `model.fit`: with Keras 3.15 / TF 2.21, `fit` fails
under `MultiWorkerMirroredStrategy` before the first step (keras-team/keras#20585:
`_maybe_symbolic_build` reduces a `PerReplica` batch outside a replica context,
"Attempt to convert a value (PerReplica...) to a Tensor"). A `tf.function` step
run with `strategy.run` over a distributed dataset works for every strategy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from keras_vessel.interrupts import deferred_signals

__all__ = ["averaged_weights", "build_steps", "should_stop_early", "validate", "weight_average_of"]


def build_steps(model, optimizer, losses, strategy):
    """``(train_step, eval_step)``: `tf.function`s running one batch on every replica of `strategy`.

    ``train_step(batch) -> {"loss", "<head>_loss": mean over replicas}`` applies one
    optimizer update; ``eval_step(batch) -> (summed losses, summed tp/fp/fn counts
    at 0.5 and a batch count)`` for `validate`. Per-head losses are global means
    over the batch, as Keras computes them under a strategy.
    """
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
            scaled = optimizer.scale_loss(total)  # the loss scale of mixed_float16; the loss itself otherwise
        gradients = tape.gradient(scaled, model.trainable_variables)
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


def validate(eval_step, validation_data) -> dict[str, float]:
    """Mean losses over the validation batches (``val_*``) and the Dice score at 0.5 (``val_dice``)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    with deferred_signals():  # a distributed iterator is made in Python too
        batches = iter(validation_data)
    while True:
        with deferred_signals("stopping after this validation batch"):  # not inside TensorFlow's Python code
            batch = next(batches, None)
            if batch is None:
                break
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


def should_stop_early(history: list[dict[str, float]], patience: int) -> bool:
    """True when validation loss has not improved for `patience` epochs (0 never stops)."""
    if patience < 1 or not history or "val_loss" not in history[-1]:
        return False
    losses = [row["val_loss"] for row in history]
    best_epoch = int(np.argmin(losses))
    return len(losses) - 1 - best_epoch >= patience


def weight_average_of(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer | None:
    """The optimizer that keeps a moving average of the weights (the inner one of a loss-scale
    optimizer), or None without ``train.ema_momentum``."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner if inner.use_ema else None


@contextlib.contextmanager
def averaged_weights(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> Iterator[None]:
    """Put the optimizer's moving average of the weights in the model for a while (no-op without EMA).

    Validation and the saved model see the average; training continues from
    the raw weights, so a resumed run is the same run. (Keras keeps the
    average in `_model_variables_moving_average`, which its own
    `SwapEMAWeights` callback reads too.)
    """
    optimizer = weight_average_of(optimizer)
    if optimizer is None:
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
