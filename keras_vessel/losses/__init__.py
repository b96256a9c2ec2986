"""The losses of METHOD.md sections 2, 3 and 6, in TF ops only (no `tf.py_function`).

They trace under `tf.function`, run in `model.fit` (also XLA-compiled), under a
`tf.distribute` strategy and in a SavedModel. ``y_true`` is the target tensor
of `keras_vessel.data.targets`; ``y_pred`` the float ``(B, H, W, 1)`` logits of
one head.

- `keras_vessel.losses.pixel`: `PixelWiseLoss`
- `keras_vessel.losses.segment`: `segment_weights`, `SegmentLevelLoss`
- `keras_vessel.losses.topology`: clDice, Skeleton Recall, soft Dice, `CombinedLoss`
- `keras_vessel.losses.thinning`: Guo-Hall thinning in TF ops
- `build_losses`: the losses of a run config, by output name

Importing this package registers every loss, so a compiled `.keras` training
model reloads.
"""

from __future__ import annotations

import keras

from keras_vessel.checks import check_bool, check_float
from keras_vessel.losses.pixel import PixelWiseLoss
from keras_vessel.losses.segment import BETAS, SegmentLevelLoss, segment_weights
from keras_vessel.losses.thinning import thin
from keras_vessel.losses.topology import ClDiceLoss, CombinedLoss, SkeletonRecallLoss, SoftDiceLoss, soft_skeleton

__all__ = [
    "BETAS",
    "EXTRA_LOSSES",
    "LOSS_KINDS",
    "ClDiceLoss",
    "CombinedLoss",
    "PixelWiseLoss",
    "SegmentLevelLoss",
    "SkeletonRecallLoss",
    "SoftDiceLoss",
    "build_losses",
    "segment_weights",
    "soft_skeleton",
    "thin",
]

LOSS_KINDS = ("joint", "pixel")
EXTRA_LOSSES = ("none", "cldice", "skeleton_recall")


def build_losses(
    kind: str = "joint",
    *,
    beta: str = "trained",
    ignore_outside_fov: bool = True,
    vessel_weight: float = 0.9,
    background_weight: float = 0.1,
    extra: str = "none",
    extra_weight: float = 1.0,
    cldice_alpha: float = 0.5,
    cldice_iterations: int = 10,
) -> dict[str, keras.losses.Loss]:
    """Losses by output name, for ``model.compile(loss=...)``.

    ``"joint"``: ``{"segment": SegmentLevelLoss, "pixel": PixelWiseLoss}``,
    added with weight 1 each as the authors did; ``"pixel"``: the pixel-only
    baseline ``{"pixel": PixelWiseLoss}`` on the same network.
    ``vessel_weight`` / ``background_weight`` are the pixel-wise head's class
    weights: the paper's 0.9 / 0.1 by default, 1 / 1 for plain cross-entropy.

    ``extra`` adds a topology term of `keras_vessel.losses.topology`
    (METHOD.md section 6) to the base loss of *every* head, as one
    `CombinedLoss` per head:

    - ``"cldice"``: ``base + extra_weight * ((1 - a) * SoftDice + a * clDice)``
      with ``a = cldice_alpha`` -- clDice "mixed with Dice" as in Shit et al.
      (their L = (1 - a) L_dice + a L_clDice, a = 0.5 in their code);
      ``cldice_alpha=1`` adds clDice alone.
    - ``"skeleton_recall"``: ``base + extra_weight * SkeletonRecall``.

    For ``"joint"`` both heads get the term: the heads are fused at inference
    (``train.heads: mean``), so a topology term on one head only would be
    diluted in the fused map, and both heads share the backbone anyway.
    ``extra="none"`` returns exactly the paper's losses.
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"`kind` must be one of {LOSS_KINDS}, got {kind!r}")
    if beta not in BETAS:
        raise ValueError(f"`beta` must be one of {sorted(BETAS)}, got {beta!r}")
    if extra not in EXTRA_LOSSES:
        raise ValueError(f"`extra` must be one of {EXTRA_LOSSES}, got {extra!r}")
    check_bool("`ignore_outside_fov`", ignore_outside_fov)
    extra_weight = check_float("`extra_weight`", extra_weight, minimum=0.0)
    cldice_alpha = check_float("`cldice_alpha`", cldice_alpha, minimum=0.0)
    if cldice_alpha > 1.0:
        raise ValueError(f"`cldice_alpha` must be in [0, 1], got {cldice_alpha!r}")
    losses: dict[str, keras.losses.Loss] = {}
    if kind == "joint":
        losses["segment"] = SegmentLevelLoss(beta=beta, ignore_outside_fov=ignore_outside_fov)
    losses["pixel"] = PixelWiseLoss(vessel_weight, background_weight, ignore_outside_fov=ignore_outside_fov)
    if extra == "none":
        return losses

    def with_extra(base: keras.losses.Loss) -> keras.losses.Loss:
        if extra == "cldice":
            terms = [
                SoftDiceLoss(ignore_outside_fov=ignore_outside_fov),
                ClDiceLoss(iterations=cldice_iterations, ignore_outside_fov=ignore_outside_fov),
            ]
            weights = [extra_weight * (1.0 - cldice_alpha), extra_weight * cldice_alpha]
        else:
            terms = [SkeletonRecallLoss(ignore_outside_fov=ignore_outside_fov)]
            weights = [extra_weight]
        return CombinedLoss([base, *terms], [1.0, *weights], name=f"{base.name}_with_{extra}")

    return {head: with_extra(base) for head, base in losses.items()}
