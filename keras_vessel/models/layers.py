"""Custom layers shared by the keras-vessel models.

They put the input contract inside the saved model: a saved `.keras` file or
SavedModel takes plain float32 RGB images on 0-255 and does its own channel
selection, normalisation and size check, so inference code never has to know
the training statistics.

- `Standardize`: RGB 0-255 -> the normalised channel(s) the network sees.
- `LocalStandardize`: the same against each pixel's neighbourhood inside the
  field of view, so brightness, contrast and colour cast of a camera cancel.
- `FovDiameter`: identity that records the field-of-view diameter the network
  was trained at (`keras_vessel.models.model_fov_diameter`), for `--scale auto`.
- `StrideCheck`: identity that fails with a clear message when the image size
  is not a multiple of the network stride (instead of a shape error deep in a
  skip connection); `keras_vessel.models.model_stride` reads it.
- `SpaceToDepth` / `DepthToSpace`: block x block pixel groups <-> channels, so a
  network can run at a fraction of the resolution without dropping a pixel.
- `HeadFusion`: the heads' logits -> the fused vessel probability.
- `MeanProbability`: several models' logits of one head -> the logit of their
  mean probability (what `keras_vessel.models.build_ensemble` outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_vessel.checks import describe, check_choice, check_float, check_heads, check_int

# Luma weights of MATLAB's rgb2gray (ITU-R BT.601), the authors' toolchain.
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)
CHANNELS = ("green", "grey", "rgb")
# Green-channel statistics on 0-255. The mean is the authors' value (METHOD.md
# section 4); the scale is the standard deviation of the DRIVE training images'
# green channel inside the FOV (measured by us: mean 97.28, std 29.13).
DEFAULT_MEAN = 98.19
DEFAULT_SCALE = 29.13


def _channel_count(channel: str) -> int:
    return 3 if channel == "rgb" else 1


def _check_stat(name: str, value: Any, count: int, *, positive: bool) -> float | list[float]:
    """A scalar, or (for 3 output channels) a sequence of 3 per-channel values."""
    minimum = 0.0 if positive else None
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != count or count == 1:
            raise ValueError(
                f"{name} must be a number or, for channel='rgb', a sequence of 3 numbers; "
                f"got {describe(value)} for {count} output channel(s)"
            )
        return [check_float(f"{name}[{i}]", v, minimum=minimum, min_inclusive=False) for i, v in enumerate(value)]
    return check_float(name, value, minimum=minimum, min_inclusive=False)


@keras.saving.register_keras_serializable(package="keras_vessel")
class Standardize(keras.layers.Layer):
    """Select the input channel(s) of an RGB 0-255 image and normalise them.

    ``out = (select(image) - mean) / scale``, where ``select`` is the green
    channel, the BT.601 grey level (MATLAB ``rgb2gray`` weights) or all three
    channels. ``mean``/``scale`` live in the config so statistics measured on
    the training data (e.g. from the TFRecord manifest) travel with the model.

    Parameters
    ----------
    channel : {"green", "grey", "rgb"}
    mean : float, or 3 floats for ``channel="rgb"``; on the 0-255 scale.
    scale : float > 0, or 3 floats for ``channel="rgb"``.

    Input ``(B, H, W, 3)`` float RGB on 0-255; output ``(B, H, W, C)`` float32,
    C = 1 (green/grey) or 3 (rgb). The layer computes in float32 by default
    even under a mixed policy: bfloat16 cannot hold 0-255 values minus a mean
    accurately.
    """

    def __init__(
        self,
        channel: str = "green",
        mean: float | Sequence[float] = DEFAULT_MEAN,
        scale: float | Sequence[float] = DEFAULT_SCALE,
        **kwargs: Any,
    ) -> None:
        channel = check_choice("channel", channel, CHANNELS)
        count = _channel_count(channel)
        mean = _check_stat("mean", mean, count, positive=False)
        scale = _check_stat("scale", scale, count, positive=True)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.channel = channel
        self.mean = mean
        self.scale = scale

    def build(self, input_shape: tuple) -> None:
        if input_shape[-1] is not None and input_shape[-1] != 3:
            raise ValueError(
                f"{self.name}: input must be RGB images (B, H, W, 3), got shape {tuple(input_shape)}"
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        x = _select(ops.cast(inputs, self.compute_dtype), self.channel, self.compute_dtype)
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        scale = ops.convert_to_tensor(self.scale, dtype=self.compute_dtype)
        return (x - mean) / scale

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape[:-1]) + (_channel_count(self.channel),)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"channel": self.channel, "mean": self.mean, "scale": self.scale})
        return config


def _select(x: Any, channel: str, dtype: str) -> Any:
    """The channel(s) a model reads from RGB: green, BT.601 grey or all three."""
    if channel == "green":
        return x[..., 1:2]
    if channel == "grey":
        return ops.sum(x * ops.convert_to_tensor(GREY_WEIGHTS, dtype=dtype), axis=-1, keepdims=True)
    return x


@keras.saving.register_keras_serializable(package="keras_vessel")
class LocalStandardize(keras.layers.Layer):
    """Standardise each pixel against its neighbourhood inside the field of view.

    ``out = (x - m) / sqrt(v + floor**2)`` inside the FOV and 0 outside it,
    where ``m`` and ``v`` are the mean and variance of the selected channel(s)
    over a Gaussian window of ``sigma`` px, weighted by the FOV (a normalised
    convolution, so the dark surround and the patch border do not pull the
    mean down). A pixel is in the FOV when ``max(red, luminance) > 15``, the
    per-pixel part of `keras_vessel.data.preprocessing.derive_fov`: a rule that
    gives a tile the same values as the whole image, so tiled and whole-image
    prediction agree. Camera gain, offset, colour cast and slow illumination
    changes cancel; vessels, narrower than the window, keep their contrast.

    Parameters
    ----------
    channel : {"green", "grey", "rgb"}
    sigma : float > 0, the window's standard deviation in px (at the scale the network runs).
    floor : float > 0, on 0-255: the spread below which a flat region is not amplified further.

    Input ``(B, H, W, 3)`` float RGB on 0-255; output ``(B, H, W, C)`` float32.
    """

    def __init__(self, channel: str = "green", sigma: float = 16.0, floor: float = 1.0, **kwargs: Any) -> None:
        channel = check_choice("channel", channel, CHANNELS)
        sigma = check_float("sigma", sigma, minimum=0.0, maximum=256.0, min_inclusive=False)
        floor = check_float("floor", floor, minimum=0.0, min_inclusive=False)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.channel = channel
        self.sigma = sigma
        self.floor = floor

    def build(self, input_shape: tuple) -> None:
        if input_shape[-1] is not None and input_shape[-1] != 3:
            raise ValueError(
                f"{self.name}: input must be RGB images (B, H, W, 3), got shape {tuple(input_shape)}"
            )
        super().build(input_shape)

    def _blur(self, x: Any) -> Any:
        radius = max(1, int(round(3.0 * self.sigma)))
        offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
        kernel = tf.exp(-0.5 * tf.square(offsets / self.sigma))
        kernel = kernel / tf.reduce_sum(kernel)
        channels = x.shape[-1]
        rows = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
        cols = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
        x = tf.nn.depthwise_conv2d(x, rows, [1, 1, 1, 1], "SAME")
        return tf.nn.depthwise_conv2d(x, cols, [1, 1, 1, 1], "SAME")

    def call(self, inputs: Any) -> Any:
        rgb = ops.cast(inputs, self.compute_dtype)
        luminance = ops.sum(rgb * ops.convert_to_tensor((0.299, 0.587, 0.114), dtype=self.compute_dtype),
                            axis=-1, keepdims=True)
        inside = ops.cast(ops.maximum(rgb[..., :1], luminance) > 15.0, self.compute_dtype)
        x = _select(rgb, self.channel, self.compute_dtype)
        channels = x.shape[-1]
        blurred = self._blur(ops.concatenate([x * inside, x * x * inside, inside], axis=-1))
        weight = blurred[..., 2 * channels:]
        mean = tf.math.divide_no_nan(blurred[..., :channels], weight)
        variance = ops.maximum(tf.math.divide_no_nan(blurred[..., channels : 2 * channels], weight) - mean * mean,
                               0.0)
        return (x - mean) / ops.sqrt(variance + self.floor * self.floor) * inside

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape[:-1]) + (_channel_count(self.channel),)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"channel": self.channel, "sigma": self.sigma, "floor": self.floor})
        return config


@keras.saving.register_keras_serializable(package="keras_vessel")
class FovDiameter(keras.layers.Layer):
    """Identity that records the field-of-view diameter, in px, of the images the network learnt from.

    `keras_vessel.models.model_fov_diameter` reads it; prediction with
    ``scale="auto"`` resamples every image so its FOV has this diameter.
    """

    def __init__(self, diameter: float, **kwargs: Any) -> None:
        diameter = check_float("diameter", diameter, minimum=8.0, maximum=100_000.0)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.diameter = diameter

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"diameter": self.diameter})
        return config


NORMALISATIONS = ("global", "local")


def normalised_input(
    inputs: Any,
    *,
    stride: int,
    channel: str,
    mean: float | Sequence[float],
    scale: float | Sequence[float],
    normalisation: str = "global",
    local_sigma: float = 16.0,
    fov_diameter: float | None = None,
) -> Any:
    """The input layers every model shares: stride check, recorded scale, normalisation.

    ``normalisation="global"`` is `Standardize` (``(x - mean) / scale``),
    ``"local"`` is `LocalStandardize` (``local_sigma``; ``mean``/``scale`` unused).
    """
    normalisation = check_choice("normalisation", normalisation, NORMALISATIONS)
    x = StrideCheck(stride, name="stride_check")(inputs)
    if fov_diameter is not None:
        x = FovDiameter(fov_diameter, name="fov_diameter")(x)
    if normalisation == "local":
        return LocalStandardize(channel=channel, sigma=local_sigma, name="standardize")(x)
    return Standardize(channel=channel, mean=mean, scale=scale, name="standardize")(x)


@keras.saving.register_keras_serializable(package="keras_vessel")
class StrideCheck(keras.layers.Layer):
    """Identity that asserts height and width are multiples of ``stride``.

    A U-Net with ``d`` poolings only reassembles its skip connections when
    the size is divisible by ``2**d``; this layer turns the otherwise obscure
    concat shape error into a message saying what to pad to. Static shapes
    are checked when the layer is built, dynamic ones with a graph assert.
    """

    def __init__(self, stride: int, **kwargs: Any) -> None:
        stride = check_int("stride", stride, minimum=1)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.stride = stride

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 4:
            raise ValueError(f"{self.name}: input must be (B, H, W, C), got shape {tuple(input_shape)}")
        for axis_name, size in (("height", input_shape[1]), ("width", input_shape[2])):
            if size is not None and size % self.stride:
                raise ValueError(
                    f"{self.name}: image {axis_name} {size} is not a multiple of the model "
                    f"stride {self.stride}; pad the image to a multiple of {self.stride}"
                )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        shape = tf.shape(inputs)
        remainder = tf.math.floormod(shape[1:3], self.stride)
        with tf.control_dependencies(
            [
                tf.debugging.assert_equal(
                    remainder,
                    tf.zeros_like(remainder),
                    message=(
                        f"image height and width must be multiples of the model stride "
                        f"{self.stride}; pad the image first (keras_vessel.models.model_stride)"
                    ),
                )
            ]
        ):
            return tf.identity(inputs)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"stride": self.stride})
        return config


class _BlockRearrange(keras.layers.Layer):
    """Shared part of `SpaceToDepth` and `DepthToSpace`: the ``block`` option and its config."""

    def __init__(self, block: int, **kwargs: Any) -> None:
        block = check_int("block", block, minimum=2, maximum=16)
        super().__init__(**kwargs)
        self.block = block

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"block": self.block})
        return config


@keras.saving.register_keras_serializable(package="keras_vessel")
class SpaceToDepth(_BlockRearrange):
    """``(B, H, W, C)`` -> ``(B, H / block, W / block, C * block**2)``: each block x block group of pixels
    becomes one position's channels (`tf.nn.space_to_depth`). Lossless; H and W multiples of ``block``."""

    def call(self, inputs: Any) -> Any:
        return tf.nn.space_to_depth(inputs, self.block)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        b, h, w, c = input_shape
        return (b, None if h is None else h // self.block, None if w is None else w // self.block,
                None if c is None else c * self.block**2)


@keras.saving.register_keras_serializable(package="keras_vessel")
class DepthToSpace(_BlockRearrange):
    """The inverse of `SpaceToDepth`: ``(B, H, W, C * block**2)`` -> ``(B, H * block, W * block, C)``."""

    def call(self, inputs: Any) -> Any:
        return tf.nn.depth_to_space(inputs, self.block)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        b, h, w, c = input_shape
        return (b, None if h is None else h * self.block, None if w is None else w * self.block,
                None if c is None else c // self.block**2)


@keras.saving.register_keras_serializable(package="keras_vessel")
class HeadFusion(keras.layers.Layer):
    """Fuse the heads' logits into one vessel probability.

    The authors' code does not say how the two heads are combined at test
    time (METHOD.md section 3); the default is the mean of the heads'
    sigmoids, and ``mode`` may pick one head instead.

    Parameters
    ----------
    mode : "mean" or one of ``heads``.
    heads : names of the inputs, in the order they are passed to ``call``.

    ``call(logits)`` takes a list of ``(B, H, W, 1)`` logits ordered like
    ``heads`` and returns ``(B, H, W, 1)`` float32 probabilities.
    """

    def __init__(self, mode: str = "mean", heads: Sequence[str] = ("segment", "pixel"), **kwargs: Any) -> None:
        heads = check_heads("heads", heads)
        if not isinstance(mode, str) or mode not in ("mean",) + heads:
            raise ValueError(
                f"mode must be 'mean' or one of the heads {list(heads)}, got {describe(mode)}"
            )
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mode = mode
        self.heads = heads

    def _as_list(self, inputs: Any) -> list:
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(items) != len(self.heads):
            raise ValueError(
                f"{self.name}: expected {len(self.heads)} logits tensors for heads {list(self.heads)}, "
                f"got {len(items)}"
            )
        return items

    def build(self, input_shape: Any) -> None:
        shapes = input_shape if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple)
        ) else [input_shape]
        self._as_list(shapes)
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        logits = [ops.cast(x, self.compute_dtype) for x in self._as_list(inputs)]
        if self.mode != "mean":
            return ops.sigmoid(logits[self.heads.index(self.mode)])
        probabilities = [ops.sigmoid(x) for x in logits]
        return ops.mean(ops.stack(probabilities, axis=0), axis=0)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            return tuple(input_shape[0])
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"mode": self.mode, "heads": list(self.heads)})
        return config


@keras.saving.register_keras_serializable(package="keras_vessel")
class MeanProbability(keras.layers.Layer):
    """The logit of the mean of several logits' sigmoids.

    An ensemble averages its members' probabilities, not their logits, and
    still returns logits so that it has the same outputs as a training model
    (`HeadFusion` then gives exactly the mean of the members' fused
    probabilities). Probabilities are clipped to [epsilon, 1 - epsilon] before
    the logit, so a saturated mean stays finite.
    """

    def __init__(self, epsilon: float = 1e-7, **kwargs: Any) -> None:
        self.epsilon = check_float("epsilon", epsilon, minimum=0.0, maximum=0.5, min_inclusive=False,
                                   max_inclusive=False)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs: Any) -> Any:
        probabilities = [ops.sigmoid(ops.cast(x, self.compute_dtype)) for x in inputs]
        mean = ops.clip(ops.mean(ops.stack(probabilities, axis=0), axis=0), self.epsilon, 1.0 - self.epsilon)
        return ops.log(mean) - ops.log1p(-mean)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape[0])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


def nested_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `model` and of the models nested in it, depth first (a nested model before its layers)."""
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(nested_layers(layer))
    return layers
