"""The pixel-wise loss (METHOD.md section 3): class-weighted cross-entropy over valid pixels.

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

from keras_vessel.data.targets import unpack_targets
from keras_vessel.checks import check_bool, check_float
from keras_vessel.losses.common import head_logits, mean_over_valid

__all__ = ["PixelWiseLoss"]


@keras.saving.register_keras_serializable(package="keras_vessel")
class PixelWiseLoss(keras.losses.Loss):
    """Class-weighted sigmoid cross-entropy from logits, mean over valid pixels.

    loss = sum(c * CE * V) / sum(V), c = `vessel_weight` on vessel pixels and
    `background_weight` elsewhere (authors: 0.9 / 0.1). With
    ``ignore_outside_fov=False`` every pixel counts (V = 1).
    """

    def __init__(
        self,
        vessel_weight: float = 0.9,
        background_weight: float = 0.1,
        ignore_outside_fov: bool = True,
        name: str = "pixel_wise_loss",
        **kwargs: Any,
    ) -> None:
        self.vessel_weight = check_float("`vessel_weight`", vessel_weight, minimum=0.0)
        self.background_weight = check_float("`background_weight`", background_weight, minimum=0.0)
        self.ignore_outside_fov = check_bool("`ignore_outside_fov`", ignore_outside_fov)
        super().__init__(name=name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        logits = head_logits(y_pred)
        label, valid, _, _ = unpack_targets(y_true)
        if not self.ignore_outside_fov:
            valid = tf.ones_like(valid)
        cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=logits)
        weight = self.vessel_weight * label + self.background_weight * (1.0 - label)
        return mean_over_valid(weight * cross_entropy * valid, valid)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            vessel_weight=self.vessel_weight,
            background_weight=self.background_weight,
            ignore_outside_fov=self.ignore_outside_fov,
        )
        return config
