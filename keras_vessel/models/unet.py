"""A compact U-Net with sibling segment/pixel heads that trains on a CPU.

Same topology as the authors' network (METHOD.md section 4, see `yan2018`):
encoder levels of two convs + 2x2 max pooling, a bottleneck, decoder levels
of a 2x2 stride-2 transposed conv + ReLU, concat [upsampled, skip] and two
convs, then a 1x1 conv to one logit per head. Differences, all to make it
cheap: 3x3 kernels everywhere, ``base_filters * 2**level`` filters, optional
batch norm, ``depth`` poolings (``depth=2`` is the "shallow" network used to
test the paper's claim that the segment-level loss helps shallow networks),
and by default the full-resolution decoder is shared by the heads
(``head_convs=0``): the joint model then costs the pixel-only model plus one
1x1 conv, so the comparison of the two losses is not a comparison of network
sizes. ``head_convs=2`` gives each head its own two full-resolution convs
instead, as the authors' branches do (measured: 1.24-1.39x the pixel-only
training step, see docs/RESULTS.md).

Outputs are float32 logits ``(B, H, W, 1)`` in a dict keyed by head name
(``segment``, ``pixel``); the final 1x1 convs are float32 layers so a
``mixed_bfloat16`` policy still yields float32 logits for the losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_vessel.checks import check_bool, check_choice, check_float, check_heads, check_int
from keras_vessel.models.layers import CHANNELS, DEFAULT_MEAN, DEFAULT_SCALE, normalised_input


def _conv_block(x, filters: int, *, name: str, batch_norm: bool, kernel_size: int = 3):
    x = keras.layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=not batch_norm, name=f"{name}_conv"
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def encoder_decoder(x, filters: Sequence[int], *, name: str = "", batch_norm: bool = False, dropout: float = 0.0,
                    last_level: bool = True):
    """The U: ``len(filters) - 1`` levels of two convs + 2x2 max pooling, a bottleneck of ``filters[-1]``,
    and decoder levels of a 2x2 stride-2 transposed conv + ReLU, concat [upsampled, skip] and two convs.

    ``last_level=False`` stops after the full-resolution concat (the heads then have their own convs).
    ``name`` prefixes every layer name (a W-Net has two U's). Returns the full-resolution features.
    """
    depth = len(filters) - 1
    skips = []
    for level in range(depth):
        x = _conv_block(x, filters[level], name=f"{name}enc{level + 1}_1", batch_norm=batch_norm)
        x = _conv_block(x, filters[level], name=f"{name}enc{level + 1}_2", batch_norm=batch_norm)
        if dropout and level == depth - 1:
            x = keras.layers.Dropout(dropout, name=f"{name}enc{level + 1}_dropout")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"{name}pool{level + 1}")(x)

    x = _conv_block(x, filters[depth], name=f"{name}bottleneck_1", batch_norm=batch_norm)
    x = _conv_block(x, filters[depth], name=f"{name}bottleneck_2", batch_norm=batch_norm)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}bottleneck_dropout")(x)

    for level in reversed(range(depth)):
        x = keras.layers.Conv2DTranspose(
            filters[level], 2, strides=2, activation="relu", name=f"{name}up{level + 1}"
        )(x)
        x = keras.layers.Concatenate(name=f"{name}concat{level + 1}")([x, skips[level]])
        if level == 0 and not last_level:
            break  # at full resolution the heads are the decoder (as in the authors' net)
        x = _conv_block(x, filters[level], name=f"{name}dec{level + 1}_1", batch_norm=batch_norm)
        x = _conv_block(x, filters[level], name=f"{name}dec{level + 1}_2", batch_norm=batch_norm)
    return x


def build_unet(
    *,
    base_filters: int = 16,
    depth: int = 4,
    batch_norm: bool = False,
    dropout: float = 0.0,
    heads: Sequence[str] = ("segment", "pixel"),
    channel: str = "green",
    mean: float | Sequence[float] = DEFAULT_MEAN,
    scale: float | Sequence[float] = DEFAULT_SCALE,
    head_convs: int = 0,
    head_filters: int | None = None,
    normalisation: str = "global",
    local_sigma: float = 16.0,
    fov_diameter: float | None = None,
) -> keras.Model:
    """Build the compact U-Net.

    Parameters
    ----------
    base_filters : filters at full resolution; level ``l`` has ``base_filters * 2**l``.
    depth : number of 2x2 poolings; input sizes must be multiples of ``2**depth``.
    batch_norm : batch norm after every encoder/decoder conv (not in the heads).
    dropout : rate applied, like the authors, after the deepest encoder level
        and after the bottleneck; 0 disables it.
    heads : ``("segment", "pixel")`` for the joint model, ``("pixel",)`` for
        the pixel-only baseline.
    channel, mean, scale, normalisation, local_sigma : the input normalisation,
        `keras_vessel.models.layers.normalised_input` (global `Standardize`
        with mean/scale, or `LocalStandardize` with local_sigma).
    fov_diameter : FOV diameter (px) of the training images, recorded for
        ``scale="auto"`` prediction; None records nothing.
    head_convs : 3x3 convs each head has of its own at full resolution. 0
        (default): one shared full-resolution decoder level and a 1x1 conv per
        head. N > 0: no shared full-resolution convs; each head stacks N.
    head_filters : filters of each head's own convs (default ``base_filters``).

    Returns a functional model: input ``(None, None, 3)`` float32 RGB 0-255,
    outputs ``{head: (B, H, W, 1) float32 logits}``.
    """
    base_filters = check_int("base_filters", base_filters, minimum=1)
    depth = check_int("depth", depth, minimum=1, maximum=8)
    batch_norm = check_bool("batch_norm", batch_norm)
    dropout = check_float("dropout", dropout, minimum=0.0, maximum=1.0, max_inclusive=False)
    heads = check_heads("heads", heads)
    channel = check_choice("channel", channel, CHANNELS)
    head_convs = check_int("head_convs", head_convs, minimum=0, maximum=8)
    head_filters = base_filters if head_filters is None else check_int("head_filters", head_filters, minimum=1)

    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
    x = normalised_input(inputs, stride=2**depth, channel=channel, mean=mean, scale=scale,
                         normalisation=normalisation, local_sigma=local_sigma, fov_diameter=fov_diameter)

    x = encoder_decoder(x, [base_filters * 2**level for level in range(depth + 1)], batch_norm=batch_norm,
                        dropout=dropout, last_level=not head_convs)
    outputs = {}
    for head in heads:
        h = x
        for index in range(1, head_convs + 1):
            h = keras.layers.Conv2D(
                head_filters, 3, padding="same", activation="relu", name=f"{head}_conv{index}"
            )(h)
        outputs[head] = keras.layers.Conv2D(1, 1, dtype="float32", name=head)(h)
    return keras.Model(inputs, outputs, name=f"unet_d{depth}_f{base_filters}")
