"""Segment-level weights and the segment-level loss (METHOD.md sections 2-3).

Everything here is TensorFlow ops only (no `tf.py_function`), so the losses
trace under `tf.function`, run in `model.fit` (also XLA-compiled), under a
`tf.distribute` strategy and in a SavedModel.

Contract (docs/ARCHITECTURE.md): ``y_true`` is float32 ``(B, H, W, 4)`` or
``(B, H, W, 5)`` with the channels `TARGET_CHANNELS` = (label, valid, id_mask,
tube[, length_scale]), built by `pack_targets`; ``y_pred`` is the float
``(B, H, W, 1)`` *logits* of one head. ``length_scale`` (1 when absent) is how
much the patch was enlarged from the image the ID mask was built on, so that
reference skeletons resampled with the patch still measure their length
(see `segment_weights`).

Each loss is a mean over the valid pixels of the whole batch, not a mean of
per-image means: ``sum(weight * CE * valid) / sum(valid)``. To stay correct
under Keras' reduction and under `tf.distribute` (which divides by the number
of replicas only for non-scalar losses), `call` returns per-image
contributions of shape ``(B,)`` whose mean is that value.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from keras_vessel.data.targets import length_scale, unpack_targets
from keras_vessel.checks import check_bool, check_float
from keras_vessel.losses.common import head_logits, mean_over_valid
from keras_vessel.losses.thinning import thin

__all__ = ["BETAS", "SegmentLevelLoss", "segment_weights"]

# (vessel, background inside a search region, other background) class weights.
BETAS = {
    # the gradient the authors' Caffe layer returns, which is what they trained with
    "trained": (0.8, 0.35, 0.2),
    # the forward value their layer reports (the paper's pixel-wise weights)
    "documented": (0.9, 0.1, 0.1),
}


def _as_maps(value: Any, name: str, dtype: tf.DType) -> tuple[tf.Tensor, bool]:
    tensor = tf.convert_to_tensor(value)
    rank = tensor.shape.rank
    if rank not in (3, 4) or (rank == 4 and tensor.shape[-1] not in (None, 1)):
        raise ValueError(f"`{name}` must have shape (B, H, W) or (B, H, W, 1), got shape {tensor.shape}")
    if rank == 4:
        tensor = tensor[..., 0]
    if dtype.is_integer and tensor.dtype.is_floating:
        tensor = tf.round(tensor)
    return tf.cast(tensor, dtype), rank == 4


def _in_xla_context() -> bool:
    """True while tracing for XLA (``tf.function(jit_compile=True)``, Keras' jit_compile)."""
    try:
        from tensorflow.python.ops import control_flow_util  # no public API says this
    except ImportError:  # pragma: no cover - layout of a future TF
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def _segment_index(region: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(B, H, W) per-image ids |M| -> (index unique per (image, id), number of indices).

    Plain graph: ``b * (max_id + 1) + |id|``, the cheapest. Under XLA the
    number of segments must not depend on the data (XLA would recompile for
    every new max id), so the (image, id) keys are ranked by a sort into
    ``0 .. B*H*W - 1``, a bound fixed by the shape. Both are exact.
    """
    batch = tf.shape(region)[0]
    if not _in_xla_context():
        stride = tf.reduce_max(region) + 1
        return tf.range(batch)[:, None, None] * stride + region, batch * stride
    image = tf.range(tf.cast(batch, tf.int64))[:, None, None]
    keys = tf.reshape(image * 2**32 + tf.cast(region, tf.int64), [-1])
    order = tf.argsort(keys)
    ordered = tf.gather(keys, order)
    starts = tf.cast(tf.not_equal(ordered[1:], ordered[:-1]), tf.int32)
    rank = tf.cumsum(tf.concat([tf.zeros([1], tf.int32), starts], axis=0))
    size = tf.size(keys)
    index = tf.scatter_nd(order[:, None], rank, [size])
    return tf.reshape(index, tf.shape(region)), size


def _segment_counts(
    flags: tuple[tf.Tensor, ...], segment: tf.Tensor, num_segments: tf.Tensor
) -> list[tf.Tensor]:
    """Per-segment counts of several (B, H, W) bool maps with one `unsorted_segment_sum`.

    The flags are packed into bit fields of one int64 per pixel (four 15-bit
    fields when a crop has fewer than 2**15 pixels, e.g. 128x128, else two
    31-bit fields and two sums; a count never exceeds the crop's pixels, so
    fields never carry into each other and the sign bit stays clear), so the
    segment sum runs over N int64 values instead of N x 4 floats: faster on
    a CPU, and exact.
    """
    height, width = segment.shape[1], segment.shape[2]
    small = height is not None and width is not None and height * width < 2**15
    bits, per_sum = (15, 4) if small else (31, 2)
    flat_segment = tf.reshape(segment, [-1])
    counts = []
    for start in range(0, len(flags), per_sum):
        group = flags[start : start + per_sum]
        packed = tf.cast(tf.reshape(group[0], [-1]), tf.int64)
        for k, flag in enumerate(group[1:], start=1):
            packed += tf.cast(tf.reshape(flag, [-1]), tf.int64) * (2 ** (bits * k))
        total = tf.math.unsorted_segment_sum(packed, flat_segment, num_segments)
        for k in range(len(group)):
            field = tf.bitwise.bitwise_and(tf.bitwise.right_shift(total, bits * k), 2**bits - 1)
            counts.append(tf.cast(field, tf.float32))
    return counts


def segment_weights(
    prob: Any,
    label: Any,
    id_mask: Any,
    valid: Any,
    *,
    threshold: float = 0.5,
    min_length_ratio: float = 0.8,
    max_iterations: int | None = None,
    length_scale: Any = None,
) -> tf.Tensor:
    """The segment-level weight map ``w = 2 - sim`` of METHOD.md section 2 (no gradient).

    Parameters
    ----------
    prob : (B, H, W) or (B, H, W, 1)
        Vessel probability of one head.
    label : same shape
        Binary ground truth G (nonzero = vessel).
    id_mask : same shape
        ID mask M cropped with the patch: +i on segment i's search region,
        -i on its reference skeleton, 0 elsewhere (ids are per image).
    valid : same shape
        Pixels that count (V, inside the FOV); only used for outliers.
    threshold : float
        B = [prob >= threshold].
    min_length_ratio : float
        A segment is missed (T_pred = 0) unless pred_len > ratio * ref_len.
    max_iterations : int, optional
        Thinning cap, see `keras_vessel.losses.thinning.thin`.
    length_scale : same shape, optional
        Per pixel, how much the patch was enlarged (nearest neighbour for the
        ID mask) from the image the ID mask was built on. Resampling by s
        keeps about s**2 of a skeleton's pixels while its length becomes s
        times as long, so each reference pixel counts 1/s towards ref_len
        (exact in expectation; docs/METHOD_NOTES.md). None: every pixel counts 1.

    Returns
    -------
    float32 tensor of ``prob``'s shape: sim_i on segment i's region (1 where
    the predicted thickness matches, 0 for a missed segment, below 0 when the
    prediction is more than twice too thick), 0 on outliers (B = 1, M = 0,
    G = 0, V = 1), 1 elsewhere, and w = 2 - sim.

    T and ref_len are counted differently, as METHOD.md defines them:
    pred_len counts *every* skeleton pixel of the prediction inside region i
    (junctions, neighbouring vessels crossing the region), ref_len only
    segment i's own pixels. So even a perfect prediction (prob = label) gets
    w > 1 on most segments (8 DRIVE 128x128 crops: 91% of the region pixels,
    30% of all pixels, w up to 2); this is the method as specified, not a
    rounding effect.

    Per-segment counts are taken inside the crop with one
    `tf.math.unsorted_segment_sum` over the batch (segment index
    ``b * (max_id + 1) + |id|``; under XLA a sort ranks the (image, id)
    pairs instead, so the compiled step does not depend on the ids). Segments whose reference skeleton is outside
    the crop (ref_len 0), or whose region holds no ground-truth vessel
    (T_gt = 0, impossible for a consistent ID mask), keep sim = 1.
    """
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"`threshold` must be in (0, 1), got {threshold!r}")
    check_float("`min_length_ratio`", min_length_ratio, minimum=0.0)
    prob, has_channel = _as_maps(prob, "prob", tf.float32)
    label, _ = _as_maps(label, "label", tf.float32)
    ids, _ = _as_maps(id_mask, "id_mask", tf.int32)
    valid, _ = _as_maps(valid, "valid", tf.float32)
    prob = tf.stop_gradient(prob)

    binary = prob >= threshold
    skeleton = thin(binary, max_iterations=max_iterations)
    vessel = label > 0.5
    region = tf.abs(ids)

    segment, num_segments = _segment_index(region)
    inside = region > 0
    ref_len, gt_area, pred_len, pred_area = _segment_counts(
        (ids < 0, vessel & inside, skeleton & inside, binary & inside), segment, num_segments
    )
    if length_scale is not None:
        scale, _ = _as_maps(length_scale, "length_scale", tf.float32)
        per_pixel = tf.where(ids < 0, tf.math.reciprocal_no_nan(scale), 0.0)
        ref_len = tf.math.unsorted_segment_sum(
            tf.reshape(per_pixel, [-1]), tf.reshape(segment, [-1]), num_segments
        )
    t_gt = tf.math.divide_no_nan(gt_area, ref_len)
    found = pred_len > min_length_ratio * ref_len
    t_pred = tf.where(found, tf.math.divide_no_nan(pred_area, pred_len), 0.0)
    counted = (ref_len > 0) & (t_gt > 0)
    sim_segment = tf.where(counted, 1.0 - tf.abs(t_pred - t_gt) / tf.where(counted, t_gt, 1.0), 1.0)

    sim = tf.gather(sim_segment, segment)  # the "no segment" index of each image has sim 1
    outlier = binary & ~inside & ~vessel & (valid > 0.5)
    sim = tf.where(outlier, 0.0, sim)
    weights = tf.stop_gradient(2.0 - sim)
    return weights[..., None] if has_channel else weights


@keras.saving.register_keras_serializable(package="keras_vessel")
class SegmentLevelLoss(keras.losses.Loss):
    """Cross-entropy weighted per pixel by the segment weight w (METHOD.md section 3).

    loss = sum(stop_gradient(w * beta) * CE * V) / sum(V), with w =
    `segment_weights` of this head's own probability sigmoid(y_pred), and
    beta per pixel:

    - ``beta="trained"`` (default): 0.8 on vessel, 0.35 on background inside
      any search region (id_mask != 0), 0.2 on other background: the gradient
      the authors' layer returned, which their training followed.
    - ``beta="documented"``: 0.9 / 0.1, the value their layer reported.

    The gradient w.r.t. the logits is therefore w * beta * V * (p - y) / sum(V).
    """

    def __init__(
        self,
        beta: str = "trained",
        ignore_outside_fov: bool = True,
        threshold: float = 0.5,
        min_length_ratio: float = 0.8,
        max_iterations: int | None = None,
        name: str = "segment_level_loss",
        **kwargs: Any,
    ) -> None:
        if beta not in BETAS:
            raise ValueError(f"`beta` must be one of {sorted(BETAS)}, got {beta!r}")
        self.beta = beta
        self.ignore_outside_fov = check_bool("`ignore_outside_fov`", ignore_outside_fov)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
            raise ValueError(f"`threshold` must be a number in (0, 1), got {threshold!r}")
        self.threshold = float(threshold)
        self.min_length_ratio = check_float("`min_length_ratio`", min_length_ratio, minimum=0.0)
        if max_iterations is not None and (
            isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1
        ):
            raise ValueError(f"`max_iterations` must be a positive int or None, got {max_iterations!r}")
        self.max_iterations = max_iterations
        super().__init__(name=name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        logits = head_logits(y_pred)
        label, valid, id_mask, _ = unpack_targets(y_true)
        if not self.ignore_outside_fov:
            valid = tf.ones_like(valid)
        weights = segment_weights(
            tf.sigmoid(logits),
            label,
            id_mask,
            valid,
            threshold=self.threshold,
            min_length_ratio=self.min_length_ratio,
            max_iterations=self.max_iterations,
            length_scale=length_scale(y_true),
        )
        vessel_beta, region_beta, other_beta = BETAS[self.beta]
        beta = tf.where(
            label > 0.5, vessel_beta, tf.where(tf.not_equal(id_mask, 0), region_beta, other_beta)
        )
        scale = tf.stop_gradient(weights * beta)
        cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=logits)
        return mean_over_valid(scale * cross_entropy * valid, valid)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            beta=self.beta,
            ignore_outside_fov=self.ignore_outside_fov,
            threshold=self.threshold,
            min_length_ratio=self.min_length_ratio,
            max_iterations=self.max_iterations,
        )
        return config
