"""The training targets every loss reads: one float32 tensor with a channel per map.

``y_true`` is ``(..., H, W, 4)`` or ``(..., H, W, 5)`` float32 with the channels
`TARGET_CHANNELS` (docs/ARCHITECTURE.md):

0. ``label``: 1.0 vessel, 0.0 background
1. ``valid``: 1.0 where the pixel counts (inside the FOV, or everywhere)
2. ``id_mask``: the int32 ID mask of `keras_vessel.data.segments.build_id_mask`
   stored as float32 (exact: ids stay far below 2**24)
3. ``tube``: 1.0 on the thin tube around the ground-truth skeleton (skeleton recall)
4. ``length_scale`` (optional, 1 when absent): how much the patch was enlarged
   from the image the ID mask was built on (`keras_vessel.data.pipeline`), so
   that resampled reference skeletons still measure their length.

The input pipeline packs them (`pack_targets`) and the losses unpack them, so
this module sits in the data layer, below the losses.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

__all__ = ["ID_MASK", "LABEL", "LENGTH_SCALE", "TARGET_CHANNELS", "TUBE", "VALID", "length_scale",
           "pack_targets", "unpack_targets"]

TARGET_CHANNELS = ("label", "valid", "id_mask", "tube", "length_scale")
LABEL, VALID, ID_MASK, TUBE, LENGTH_SCALE = range(len(TARGET_CHANNELS))


def pack_targets(label: Any, valid: Any, id_mask: Any, tube: Any, length_scale: Any = None) -> tf.Tensor:
    """Stack the per-pixel targets into the float32 ``y_true`` the losses read.

    Each part is ``(..., H, W)`` (stacked on a new last axis) or
    ``(..., H, W, 1)`` (concatenated); all must have the same shape.
    Returns ``(..., H, W, 4)`` float32 in `TARGET_CHANNELS` order, or
    ``(..., H, W, 5)`` with `length_scale` (the patch's resampling factor,
    constant per patch). The ID mask is stored exactly (ids stay far below 2**24).
    """
    given = (label, valid, id_mask, tube) + (() if length_scale is None else (length_scale,))
    parts = [tf.cast(tf.convert_to_tensor(part), tf.float32) for part in given]
    shapes = [part.shape for part in parts]
    for name, shape in zip(TARGET_CHANNELS, shapes):
        if not shape.is_compatible_with(shapes[0]):
            raise ValueError(
                f"pack_targets: `{name}` must have the shape of `label` {shapes[0]}, got {shape}"
            )
    rank = shapes[0].rank
    if rank is not None and rank >= 3 and shapes[0][-1] == 1:
        return tf.concat(parts, axis=-1)
    return tf.stack(parts, axis=-1)


def unpack_targets(y_true: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(..., H, W, 4)`` -> ``(label, valid, id_mask, tube)``, each ``(..., H, W)``.

    label, valid and tube are float32; id_mask is int32 (rounded, so float
    noise from augmentation cannot shift an id).
    """
    y_true = _check_targets(y_true)
    y_true = tf.cast(y_true, tf.float32)
    label = y_true[..., LABEL]
    valid = y_true[..., VALID]
    id_mask = tf.cast(tf.round(y_true[..., ID_MASK]), tf.int32)
    tube = y_true[..., TUBE]
    return label, valid, id_mask, tube


def _check_targets(y_true: Any) -> tf.Tensor:
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank is not None and (y_true.shape.rank < 3 or y_true.shape[-1] not in (None, 4, 5)):
        raise ValueError(
            f"`y_true` must have shape (..., H, W, 4) or (..., H, W, 5) with channels {TARGET_CHANNELS}, "
            f"got shape {y_true.shape}"
        )
    return y_true


def length_scale(y_true: Any) -> tf.Tensor:
    """The ``length_scale`` channel of ``y_true`` as ``(..., H, W)`` float32; ones for 4-channel targets."""
    y_true = tf.cast(_check_targets(y_true), tf.float32)
    if y_true.shape[-1] == 4:
        return tf.ones_like(y_true[..., 0])
    return y_true[..., LENGTH_SCALE]
