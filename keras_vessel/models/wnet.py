"""A W-Net: two small U-Nets in cascade, a few tens of thousands of parameters (issue 23).

After Galdran et al., "The Little W-Net That Could" (lwnet), written from the
paper's description: the first U-Net maps the normalised image to a vessel
logit map; the second sees the normalised image and the first one's
probability and makes the heads. Each U has ``depth`` poolings and
``base_filters * 2**level`` filters per level (the U-Net rule): base 8 and
depth 2 give 8/16/32 filters, as lwnet's, and about 59k parameters for both
U's (the compact U-Net: 1.09M). Same input contract and heads as `keras_vessel.models.unet.build_unet`
(`normalised_input`, float32 logits per head), so the joint loss, saving,
export and serving take it unchanged.

The intermediate map is not a model output and gets no loss of its own: it
is trained end to end through the second U (lwnet also supervises it; that
would need a third head in the loss table). Documented in docs/METHOD_NOTES.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_vessel.checks import check_bool, check_choice, check_heads, check_int
from keras_vessel.models.layers import (
    CHANNELS,
    DEFAULT_MEAN,
    DEFAULT_SCALE,
    DepthToSpace,
    SpaceToDepth,
    normalised_input,
)
from keras_vessel.models.unet import encoder_decoder


def build_wnet(
    *,
    base_filters: int = 8,
    depth: int = 2,
    batch_norm: bool = False,
    heads: Sequence[str] = ("segment", "pixel"),
    channel: str = "green",
    mean: float | Sequence[float] = DEFAULT_MEAN,
    scale: float | Sequence[float] = DEFAULT_SCALE,
    normalisation: str = "global",
    local_sigma: float = 16.0,
    fov_diameter: float | None = None,
    block: int = 1,
) -> keras.Model:
    """Build the W-Net.

    Parameters
    ----------
    base_filters : filters of each U at full resolution; level ``l`` has ``base_filters * 2**l``.
    depth : poolings of each U (the bottleneck is level ``depth``); sizes must be multiples of ``2**depth``.
    batch_norm : batch norm after every conv.
    heads, channel, mean, scale, normalisation, local_sigma, fov_diameter : as in
        `keras_vessel.models.unet.build_unet`.
    block : 1, or run both U's on ``block x block`` pixel groups stacked as channels (`SpaceToDepth`
        after the normalisation; each head predicts ``block**2`` logits per group, put back in place by
        `DepthToSpace`): every pixel is seen and predicted, with 1/block**2 of the activations to move.
        Sizes must then be multiples of ``block * 2**depth``.

    Returns a functional model: input ``(None, None, 3)`` float32 RGB 0-255,
    outputs ``{head: (B, H, W, 1) float32 logits}``.
    """
    base_filters = check_int("base_filters", base_filters, minimum=1)
    depth = check_int("depth", depth, minimum=1, maximum=8)
    batch_norm = check_bool("batch_norm", batch_norm)
    heads = check_heads("heads", heads)
    channel = check_choice("channel", channel, CHANNELS)
    block = check_int("block", block, minimum=1, maximum=16)
    filters = [base_filters * 2**level for level in range(depth + 1)]

    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
    image = normalised_input(inputs, stride=block * 2**depth, channel=channel, mean=mean, scale=scale,
                             normalisation=normalisation, local_sigma=local_sigma, fov_diameter=fov_diameter)
    if block > 1:
        image = SpaceToDepth(block, name="space_to_depth")(image)
    first = encoder_decoder(image, filters, name="first_", batch_norm=batch_norm)
    coarse = keras.layers.Conv2D(block**2, 1, activation="sigmoid", name="first_probability")(first)
    x = keras.layers.Concatenate(name="image_and_first")([image, coarse])
    x = encoder_decoder(x, filters, name="second_", batch_norm=batch_norm)
    outputs = {}
    for head in heads:
        if block == 1:
            outputs[head] = keras.layers.Conv2D(1, 1, dtype="float32", name=head)(x)
        else:
            logits = keras.layers.Conv2D(block**2, 1, dtype="float32", name=f"{head}_blocks")(x)
            outputs[head] = DepthToSpace(block, dtype="float32", name=head)(logits)
    suffix = f"_b{block}" if block > 1 else ""
    return keras.Model(inputs, outputs, name=f"wnet_d{depth}_f{base_filters}{suffix}")
