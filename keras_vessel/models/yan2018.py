"""The authors' two-head U-Net (Yan, Yang, Cheng 2018), width-scalable.

Read from the authors' released Caffe ``train_val.prototxt``/``deploy.prototxt``
(METHOD.md section 4). Layer names follow the Caffe names.

What matches the authors exactly (at ``width=1``)
------------------------------------------------
- 4 max poolings (2x2, stride 2), ReLU after every conv and transposed conv,
  no batch norm, "same" padding (Caffe ``pad = (k - 1) / 2``), zero biases.
- Encoder: conv1_1 128 9x9, conv1_2 128 7x7 | conv2_1 128 5x5, conv2_2 128 3x3 |
  conv3_1 256 3x3, conv3_2 64 3x3 (sic: 64, not 256, in the authors' files) |
  conv4_1 512 3x3, conv4_2 512 3x3, dropout 0.5 | conv5_1 1024 3x3,
  conv5_2 1024 3x3, dropout 0.5.
- The enc4 dropout is in place in Caffe, so both pool4 and the level-4 skip
  connection see the dropped activations; the same here.
- Decoder level l = 4, 3, 2: deconv l (2x2, stride 2, 512/256/128 filters) +
  ReLU, concat [deconv, skip], then dec l_1, dec l_2 with 512/256/128
  filters, all 3x3 except dec2_2 which is 5x5. Level 1: deconv1 (128) + ReLU
  and concat [deconv1, conv1_2]; the heads start from that concat.
- Each head: conv 128 7x7, conv 128 9x9 (both ReLU), 1x1 conv to the output.
  Caffe head 1 (``score``) carries the segment-level loss, head 2
  (``score-2``) the pixel-wise loss; here they are named ``segment``/``pixel``.

What differs, and why
---------------------
- Output: one logit per head with a sigmoid instead of a 2-channel softmax.
  A 2-class softmax equals the sigmoid of the logit difference; the second
  channel is a redundant degree of freedom, so the function class is the same.
- Initialisation: ``kernel_initializer="glorot_uniform"`` by default. Caffe's
  ``xavier`` filler (default ``variance_norm: FAN_IN``) is uniform with limit
  ``sqrt(3 / fan_in)``, i.e. Keras ``"lecun_uniform"``; pass that to match it.
- Input: the model takes RGB 0-255 and selects one channel in a `Standardize`
  layer (green by default; green vs grey is not determinable from the
  authors' files), subtracts 98.19 and divides by ``scale`` (1.0 = the
  authors' plain mean subtraction).
- Caffe ``Crop`` layers are dropped: with "same" padding and sizes divisible
  by 16 the skips already align (`StrideCheck` enforces the size).
- Training-only settings (weight decay 5e-4 on kernels only, bias learning
  rate x2, SGD momentum 0.99) belong to the optimizer, not to this builder.
- ``width`` (ours) multiplies every filter count except the outputs'
  (rounded, at least 1) so the network can be trained on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_vessel.checks import check_choice, check_float, check_heads
from keras_vessel.models.layers import CHANNELS, DEFAULT_MEAN, normalised_input

STRIDE = 16  # 4 poolings

# (name, filters, kernel) in order; "drop" marks an in-place dropout, "pool" a pooling.
ENCODER = (
    ("conv1_1", 128, 9), ("conv1_2", 128, 7), ("pool1",),
    ("conv2_1", 128, 5), ("conv2_2", 128, 3), ("pool2",),
    ("conv3_1", 256, 3), ("conv3_2", 64, 3), ("pool3",),
    ("conv4_1", 512, 3), ("conv4_2", 512, 3), ("dropout4",), ("pool4",),
    ("conv5_1", 1024, 3), ("conv5_2", 1024, 3), ("dropout5",),
)  # fmt: skip
# level: (deconv filters, [(conv name, filters, kernel), ...]); level 1 has no convs (the heads follow).
DECODER = (
    (4, 512, (("dec4_1", 512, 3), ("dec4_2", 512, 3))),
    (3, 256, (("dec3_1", 256, 3), ("dec3_2", 256, 3))),
    (2, 128, (("dec2_1", 128, 3), ("dec2_2", 128, 5))),
    (1, 128, ()),
)
HEAD = (("conv1", 128, 7), ("conv2", 128, 9))


def scaled_filters(filters: int, width: float) -> int:
    """``filters * width`` rounded, at least 1 (how ``width`` scales every layer)."""
    return max(1, int(round(filters * width)))


def build_yan2018(
    *,
    width: float = 1.0,
    heads: Sequence[str] = ("segment", "pixel"),
    channel: str = "green",
    mean: float | Sequence[float] = DEFAULT_MEAN,
    scale: float | Sequence[float] = 1.0,
    dropout: float = 0.5,
    kernel_initializer: str = "glorot_uniform",
    normalisation: str = "global",
    local_sigma: float = 16.0,
    fov_diameter: float | None = None,
) -> keras.Model:
    """Build the authors' network (see the module docstring for what matches).

    Parameters
    ----------
    width : multiplier for every filter count (1.0 = the authors' network).
    heads : ``("segment", "pixel")`` joint, or ``("pixel",)`` pixel-only.
    channel, mean, scale : passed to `Standardize` (defaults: green, 98.19, 1.0).
    normalisation, local_sigma, fov_diameter : as in `keras_vessel.models.unet.build_unet`.
    dropout : rate of the two dropout layers (authors: 0.5).
    kernel_initializer : Keras initializer name for all kernels.

    Returns a functional model: input ``(None, None, 3)`` float32 RGB 0-255
    (sizes multiples of 16), outputs ``{head: (B, H, W, 1) float32 logits}``.
    """
    width = check_float("width", width, minimum=0.0, min_inclusive=False)
    heads = check_heads("heads", heads)
    channel = check_choice("channel", channel, CHANNELS)
    dropout = check_float("dropout", dropout, minimum=0.0, maximum=1.0, max_inclusive=False)
    if not isinstance(kernel_initializer, str):
        raise TypeError(
            f"kernel_initializer must be a Keras initializer name such as 'glorot_uniform', "
            f"got {kernel_initializer!r} (type {type(kernel_initializer).__name__})"
        )
    keras.initializers.get(kernel_initializer)  # fails early on an unknown name

    def conv(x, name: str, filters: int, kernel: int):
        return keras.layers.Conv2D(
            scaled_filters(filters, width),
            kernel,
            padding="same",
            activation="relu",
            kernel_initializer=kernel_initializer,
            name=name,
        )(x)

    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
    x = normalised_input(inputs, stride=STRIDE, channel=channel, mean=mean, scale=scale,
                         normalisation=normalisation, local_sigma=local_sigma, fov_diameter=fov_diameter)

    skips = {}
    for spec in ENCODER:
        name = spec[0]
        if name.startswith("pool"):
            skips[int(name[-1])] = x
            x = keras.layers.MaxPooling2D(2, strides=2, name=name)(x)
        elif name.startswith("dropout"):
            if dropout:
                x = keras.layers.Dropout(dropout, name=name)(x)
        else:
            x = conv(x, *spec)

    for level, up_filters, convs in DECODER:
        x = keras.layers.Conv2DTranspose(
            scaled_filters(up_filters, width),
            2,
            strides=2,
            activation="relu",
            kernel_initializer=kernel_initializer,
            name=f"deconv{level}",
        )(x)
        x = keras.layers.Concatenate(name=f"concat{level}")([x, skips[level]])
        for spec in convs:
            x = conv(x, *spec)

    outputs = {}
    for head in heads:
        h = x
        for suffix, filters, kernel in HEAD:
            h = conv(h, f"{head}_{suffix}", filters, kernel)
        outputs[head] = keras.layers.Conv2D(
            1, 1, kernel_initializer=kernel_initializer, dtype="float32", name=head
        )(h)
    return keras.Model(inputs, outputs, name=f"yan2018_w{width:g}".replace(".", "p"))
