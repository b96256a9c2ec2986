"""Topology-aware losses beyond the paper: clDice and Skeleton Recall (METHOD.md section 6).

The paper's losses live in `keras_vessel.losses`; these are the two later
losses the config can add on top of them (``loss.extra``), kept apart so
that module stays about the paper.

- `ClDiceLoss` (Shit et al., CVPR 2021): soft skeletons by iterated min/max
  pooling (`soft_skeleton`), loss = 1 - harmonic mean of the topology
  precision and sensitivity. The paper mixes it with a soft Dice loss
  (`SoftDiceLoss`), which `build_losses` does through `CombinedLoss`.
- `SkeletonRecallLoss` (Kirchhoff et al., ECCV 2024): 1 - soft recall of the
  prediction on the thin tube around the ground-truth skeleton, which is
  precomputed offline and stored in the records (``tube`` channel).

Same contract as `keras_vessel.losses`: ``y_true`` is float32
``(B, H, W, 4)`` = (label, valid, id_mask, tube), ``y_pred`` the
``(B, H, W, 1)`` logits of one head, and `call` returns one value per image
``(B,)``. These losses are per-image ratios, so the batch loss is the mean of
the per-image values; that mean is exactly what Keras' reduction computes,
also under `tf.distribute` (local mean, then 1/replicas), so a mirrored step
equals the single-device step. TensorFlow ops only: no Python callbacks in
the graph.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from keras_vessel.data.targets import unpack_targets
from keras_vessel.checks import check_bool, check_float, check_int
from keras_vessel.losses.common import head_logits

__all__ = [
    "ClDiceLoss",
    "CombinedLoss",
    "SkeletonRecallLoss",
    "SoftDiceLoss",
    "soft_skeleton",
]


# ------------------------------------------------------------------ helpers


def _shifted(image: tf.Tensor, axis: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The two 1-pixel neighbours of every pixel of (B, H, W) along `axis` (1 or 2), edges replicated.

    Replicating the edge gives a 3-wide min/max exactly what pooling with SAME
    padding gives (the padding never wins), and the gradient of a neighbour
    that wins at the border still reaches the edge pixel.
    """
    paddings = [[0, 0], [0, 0], [0, 0]]
    paddings[axis] = [1, 1]
    padded = tf.pad(image, paddings, mode="SYMMETRIC")
    if axis == 1:
        return padded[:, :-2, :], padded[:, 2:, :]
    return padded[:, :, :-2], padded[:, :, 2:]


def _soft_erode(image: tf.Tensor) -> tf.Tensor:
    """Soft erosion of (B, H, W): min over the 3x1 and 1x3 windows (the 4-neighbour cross).

    The clDice paper's ``min(-maxpool3x1(-x), -maxpool1x3(-x))``, written as
    elementwise minima of shifted slices: same values, but 3-4x cheaper
    forward and backward on a CPU than one-channel pooling and its gradient.
    """
    up, down = _shifted(image, 1)
    left, right = _shifted(image, 2)
    return tf.minimum(tf.minimum(tf.minimum(up, down), tf.minimum(left, right)), image)


def _soft_dilate(image: tf.Tensor) -> tf.Tensor:
    """Soft dilation of (B, H, W): the 3x3 max pool, as two separable 3-wide maxima."""
    up, down = _shifted(image, 1)
    rows = tf.maximum(tf.maximum(up, down), image)
    left, right = _shifted(rows, 2)
    return tf.maximum(tf.maximum(left, right), rows)


def soft_skeleton(prob: Any, iterations: int = 10) -> tf.Tensor:
    """Soft skeleton of a probability map (Shit et al. 2021, Algorithm 1).

    What an opening removes at each erosion depth is the part of the shape that
    is exactly that thick, i.e. its centre line; accumulating it over
    `iterations` erosions gives a differentiable skeleton of structures up to
    about ``2 * iterations + 1`` pixels wide. Min/max pooling ignores the
    padding, so the image border neither erodes nor grows the shape. The
    opening of the k-th erosion is the dilation of the (k+1)-th, which the
    next step reuses: 3 min/max passes per iteration instead of 5.

    Parameters
    ----------
    prob : (B, H, W) or (B, H, W, 1) float
        Values in [0, 1] (probabilities, or a binary mask).
    iterations : int
        Number of soft erosions (>= 0).

    Returns
    -------
    float32 tensor of ``prob``'s shape, in [0, 1]; differentiable in ``prob``.

    Examples
    --------
    >>> bar = tf.pad(tf.ones([1, 3, 8]), [[0, 0], [2, 2], [0, 0]])  # rows 2-4 of 7
    >>> [round(float(v), 3) for v in tf.reduce_max(soft_skeleton(bar, 3), axis=2)[0]]
    [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    """
    iterations = check_int("`iterations`", iterations, minimum=0)
    image = tf.cast(tf.convert_to_tensor(prob), tf.float32)
    rank = image.shape.rank
    if rank not in (3, 4) or (rank == 4 and image.shape[-1] not in (None, 1)):
        raise ValueError(f"`prob` must have shape (B, H, W) or (B, H, W, 1), got shape {image.shape}")
    if rank == 4:
        image = image[..., 0]
    eroded = _soft_erode(image)
    skeleton = tf.nn.relu(image - _soft_dilate(eroded))  # image - open(image)
    for _ in range(iterations):
        image = eroded
        eroded = _soft_erode(image)
        delta = tf.nn.relu(image - _soft_dilate(eroded))
        skeleton = skeleton + tf.nn.relu(delta - skeleton * delta)
    return skeleton[..., None] if rank == 4 else skeleton


def _targets(y_true: tf.Tensor, y_pred: tf.Tensor, ignore_outside_fov: bool):
    """(P, label, valid, tube), each (B, H, W) float32; P is sigmoid(logits) masked to valid."""
    logits = head_logits(y_pred)
    label, valid, _, tube = unpack_targets(y_true)
    if not ignore_outside_fov:
        valid = tf.ones_like(valid)
    return tf.sigmoid(logits) * valid, label * valid, valid, tube * valid


def _sum(x: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(x, axis=[1, 2])


# ------------------------------------------------------------------- losses


class _RatioLoss(keras.losses.Loss):
    """Shared arguments of the per-image ratio losses below."""

    def __init__(self, smooth: float, ignore_outside_fov: bool, name: str, **kwargs: Any) -> None:
        self.smooth = check_float("`smooth`", smooth, minimum=0.0, min_inclusive=False)
        self.ignore_outside_fov = check_bool("`ignore_outside_fov`", ignore_outside_fov)
        super().__init__(name=name, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(smooth=self.smooth, ignore_outside_fov=self.ignore_outside_fov)
        return config


@keras.saving.register_keras_serializable(package="keras_vessel")
class SoftDiceLoss(_RatioLoss):
    """Soft Dice per image: 1 - (2 sum(P G) + s) / (sum(P) + sum(G) + s) over valid pixels.

    The region term clDice is mixed with in Shit et al.; `smooth` keeps an
    image without vessels finite (loss 0 when nothing is predicted there).
    """

    def __init__(
        self, smooth: float = 1.0, ignore_outside_fov: bool = True, name: str = "soft_dice_loss", **kwargs: Any
    ) -> None:
        super().__init__(smooth, ignore_outside_fov, name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        prob, label, _, _ = _targets(y_true, y_pred, self.ignore_outside_fov)
        dice = (2.0 * _sum(prob * label) + self.smooth) / (_sum(prob) + _sum(label) + self.smooth)
        return 1.0 - dice


@keras.saving.register_keras_serializable(package="keras_vessel")
class ClDiceLoss(_RatioLoss):
    """clDice loss per image (Shit et al., CVPR 2021): 1 - harmonic mean of Tprec and Tsens.

    With P = sigmoid(logits) and G the label, both restricted to the valid
    pixels, and S the `soft_skeleton`:

    Tprec = (sum(S(P) G) + s) / (sum(S(P)) + s): how much of the predicted
    skeleton lies inside the true vessels (penalises spurious branches);
    Tsens = (sum(S(G) P) + s) / (sum(S(G)) + s): how much of the true
    skeleton the prediction covers (penalises gaps). A broken or missing thin
    vessel costs Tsens in proportion to its *length*, not its area, which is
    why thin vessels matter to this loss while they barely move a pixel loss.

    `iterations` must reach half the width of the widest vessel (DRIVE: ~10).
    """

    def __init__(
        self,
        iterations: int = 10,
        smooth: float = 1.0,
        ignore_outside_fov: bool = True,
        name: str = "cldice_loss",
        **kwargs: Any,
    ) -> None:
        self.iterations = check_int("`iterations`", iterations, minimum=0)
        super().__init__(smooth, ignore_outside_fov, name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        prob, label, valid, _ = _targets(y_true, y_pred, self.ignore_outside_fov)
        skeleton_pred = soft_skeleton(prob, self.iterations) * valid
        skeleton_true = soft_skeleton(label, self.iterations) * valid
        precision = (_sum(skeleton_pred * label) + self.smooth) / (_sum(skeleton_pred) + self.smooth)
        sensitivity = (_sum(skeleton_true * prob) + self.smooth) / (_sum(skeleton_true) + self.smooth)
        return 1.0 - 2.0 * precision * sensitivity / (precision + sensitivity)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(iterations=self.iterations)
        return config


@keras.saving.register_keras_serializable(package="keras_vessel")
class SkeletonRecallLoss(_RatioLoss):
    """Skeleton Recall loss per image (Kirchhoff et al., ECCV 2024).

    loss = 1 - (sum(P T) + s) / (sum(T) + s), T the precomputed tube around
    the ground-truth skeleton (``y_true[..., 3]``), restricted to the valid
    pixels. Only recall: the base loss already penalises false positives,
    and a tube computed offline costs no skeletonisation per step.
    """

    def __init__(
        self,
        smooth: float = 1.0,
        ignore_outside_fov: bool = True,
        name: str = "skeleton_recall_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(smooth, ignore_outside_fov, name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        prob, _, _, tube = _targets(y_true, y_pred, self.ignore_outside_fov)
        recall = (_sum(prob * tube) + self.smooth) / (_sum(tube) + self.smooth)
        return 1.0 - recall


@keras.saving.register_keras_serializable(package="keras_vessel")
class CombinedLoss(keras.losses.Loss):
    """Weighted sum of per-image losses: sum_k weights[k] * losses[k].call(y_true, y_pred).

    One Keras loss per head (``model.compile`` takes one per output), so a
    base loss plus topology terms are logged and saved as one object. Each
    part's unreduced ``(B,)`` values are summed before Keras reduces, so the
    distributed scaling of the base loss is untouched. The parts are stored
    with `keras.saving.serialize_keras_object`, so a `.keras` file reloads
    them in safe mode.
    """

    def __init__(
        self,
        losses: list[Any],
        weights: list[float] | None = None,
        name: str = "combined_loss",
        **kwargs: Any,
    ) -> None:
        if not isinstance(losses, (list, tuple)) or not losses:
            raise ValueError(f"`losses` must be a non-empty list of keras losses, got {losses!r}")
        parts = []
        for index, loss in enumerate(losses):
            if isinstance(loss, dict):
                loss = keras.saving.deserialize_keras_object(loss)
            if not isinstance(loss, keras.losses.Loss):
                raise TypeError(
                    f"`losses[{index}]` must be a keras.losses.Loss, got {loss!r} of type {type(loss).__name__}"
                )
            parts.append(loss)
        if weights is None:
            weights = [1.0] * len(parts)
        if not isinstance(weights, (list, tuple)) or len(weights) != len(parts):
            raise ValueError(f"`weights` must be a list of {len(parts)} numbers (one per loss), got {weights!r}")
        checked = []
        for index, weight in enumerate(weights):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0.0:
                raise ValueError(f"`weights[{index}]` must be a number >= 0, got {weight!r}")
            checked.append(float(weight))
        self.losses = parts
        self.weights = checked
        super().__init__(name=name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return tf.add_n([weight * loss.call(y_true, y_pred) for loss, weight in zip(self.losses, self.weights)])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            losses=[keras.saving.serialize_keras_object(loss) for loss in self.losses],
            weights=list(self.weights),
        )
        return config
