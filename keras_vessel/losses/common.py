"""What every loss shares: one head's logits and the batch mean over valid pixels."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

__all__ = ["head_logits", "mean_over_valid"]


def head_logits(y_pred: Any) -> tf.Tensor:
    """One head's logits as float32 (B, H, W), also under a mixed_float16 policy."""
    y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
    rank = y_pred.shape.rank
    if rank not in (3, 4) or (rank == 4 and y_pred.shape[-1] not in (None, 1)):
        raise ValueError(f"`y_pred` must be logits of shape (B, H, W, 1), got shape {y_pred.shape}")
    return y_pred[..., 0] if rank == 4 else y_pred


def mean_over_valid(weighted: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """(B, H, W) weighted terms -> (B,) whose mean is sum(weighted) / sum(valid)."""
    batch = tf.cast(tf.shape(weighted)[0], tf.float32)
    per_image = tf.reduce_sum(weighted, axis=[1, 2])
    return tf.math.divide_no_nan(per_image * batch, tf.reduce_sum(valid))
