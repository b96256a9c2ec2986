"""What a run config builds: the network, its optimizer and losses, checked before anything starts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from keras_vessel.checks import HEAD_NAMES
from keras_vessel.config import ConfigError, RunConfig, records_folders
from keras_vessel.data.tfrecords import PrepareError, combined_manifest

__all__ = [
    "PAPER_MEAN",
    "RANGES",
    "build_run_losses",
    "build_training_model",
    "check_config",
    "check_ranges",
    "check_stride",
    "make_optimizer",
    "output_names",
    "start_from_model",
    "training_fov_diameter",
]

PAPER_MEAN = 98.19


def output_names(config: RunConfig) -> tuple[str, ...]:
    """The heads the config trains: ``("segment", "pixel")`` for the joint loss, else ``("pixel",)``."""
    return HEAD_NAMES if config.loss.kind == "joint" else ("pixel",)


def _normalisation(config: RunConfig, manifest: dict[str, Any]) -> dict[str, Any]:
    channel = config.data.channel
    if config.data.normalisation == "local":
        return {"channel": channel, "normalisation": "local", "local_sigma": config.data.local_sigma}
    if config.data.normalisation == "paper":
        return {"channel": channel, "mean": PAPER_MEAN, "scale": 1.0}
    stats = manifest["statistics"]
    if f"{channel}_mean" not in stats:
        raise ConfigError(
            f"data.channel={channel} needs per-channel statistics that {config.data.train_records} does not have "
            "(prepared by an older keras-vessel); run the same `keras-vessel prepare` command again: "
            "it re-prepares the shards recorded without them"
        )
    return {"channel": channel, "mean": stats[f"{channel}_mean"], "scale": stats[f"{channel}_std"]}


def build_training_model(config: RunConfig, manifest: dict[str, Any]) -> keras.Model:
    """The network of `config.model`, with heads and normalisation from the config and data;
    with ``model.start_from``, that trained model as it is (`start_from_model`)."""
    from keras_vessel.models import build_model

    if config.model.start_from:
        return start_from_model(config, manifest)
    options = {**_normalisation(config, manifest), "fov_diameter": training_fov_diameter(config, manifest),
               **config.model.options, "heads": output_names(config)}
    try:
        return build_model(config.model.name, **options)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model: {error}") from error


def start_from_model(config: RunConfig, manifest: dict[str, Any]) -> keras.Model:
    """The trained model ``model.start_from`` names, checked against the config it is trained with.

    ConfigError (naming the file) when it cannot be loaded, when its heads are not those of
    ``loss.kind``, or when it records another FOV diameter than the run samples its patches at
    (`training_fov_diameter`; a model that records none must be trained with ``data.fov_diameter: 0``).
    """
    from keras_vessel.models import head_names, model_fov_diameter
    from keras_vessel.models.saving import load_model_file

    path = config.model.start_from
    try:
        model = load_model_file(path)
        heads = head_names(model)
    except (OSError, ValueError) as error:
        raise ConfigError(f"model.start_from: {error}") from error
    if heads != output_names(config):
        raise ConfigError(f"model.start_from: {path} has the heads {list(heads)}, but loss.kind={config.loss.kind} "
                          f"trains {list(output_names(config))}; set loss.kind to "
                          f"{'joint' if len(heads) == 2 else 'pixel'}")
    recorded = model_fov_diameter(model)
    wanted = training_fov_diameter(config, manifest) if config.data.fov_diameter or recorded else None
    if recorded != wanted:
        raise ConfigError(f"model.start_from: {path} was trained at a FOV diameter of "
                          f"{'(none recorded)' if recorded is None else f'{recorded:g} px'}; set data.fov_diameter "
                          f"to {0 if recorded is None else f'{recorded:g}'} so patches are drawn at its scale")
    return model


def training_fov_diameter(config: RunConfig, manifest: dict[str, Any]) -> float:
    """The FOV diameter (px) the network sees: `data.fov_diameter`, or the training images' median."""
    if config.data.fov_diameter:
        return float(config.data.fov_diameter)
    return float(np.median([image["fov_diameter"] for image in manifest["images"]]))


def make_optimizer(config: RunConfig) -> keras.optimizers.Optimizer:
    """Adam, AdamW or SGD with the config's schedule, weight decay and weight average.

    With ``train.mixed_precision: float16`` it is wrapped in Keras'
    `LossScaleOptimizer`: the step scales the loss (`Optimizer.scale_loss`),
    the optimizer unscales the gradients, skips a step whose gradients
    overflowed and halves the scale (doubling it after 2000 good steps); the
    scale is an optimizer variable, so checkpoints keep it.
    """
    train = config.train
    steps = train.steps_per_epoch
    rate: Any = train.learning_rate
    if train.lr_schedule == "step":
        if train.lr_decay_epochs < 1:
            raise ConfigError("train.lr_decay_epochs must be at least 1 for lr_schedule=step")
        boundaries = [steps * train.lr_decay_epochs * k for k in range(1, train.epochs // train.lr_decay_epochs + 1)]
        values = [train.learning_rate * train.lr_decay_factor**k for k in range(len(boundaries) + 1)]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    elif train.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(train.learning_rate, decay_steps=steps * train.epochs)
    decay = train.weight_decay or None
    ema = {"use_ema": True, "ema_momentum": train.ema_momentum} if train.ema_momentum else {}
    if train.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(rate, momentum=train.momentum, weight_decay=decay, **ema)
    elif decay:
        optimizer = keras.optimizers.AdamW(rate, weight_decay=decay, **ema)
    else:
        optimizer = keras.optimizers.Adam(rate, **ema)
    if train.mixed_precision == "float16":  # float16 gradients underflow without it
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_run_losses(config: RunConfig) -> dict[str, keras.losses.Loss]:
    """The losses of `config.loss`, by output name (`keras_vessel.losses.build_losses`)."""
    from keras_vessel.losses import build_losses

    return build_losses(config.loss.kind, beta=config.loss.beta,
                        ignore_outside_fov=config.loss.ignore_outside_fov,
                        vessel_weight=config.loss.vessel_weight,
                        background_weight=config.loss.background_weight,
                        extra=config.loss.extra, extra_weight=config.loss.extra_weight,
                        cldice_alpha=config.loss.cldice_alpha,
                        cldice_iterations=config.loss.cldice_iterations)


def check_stride(model: keras.Model, config: RunConfig) -> None:
    """Patches must be multiples of the network's stride; a ConfigError says which multiple."""
    from keras_vessel.models import model_stride

    stride = model_stride(model)
    if config.data.patch_size % stride:
        raise ConfigError(
            f"data.patch_size={config.data.patch_size} is not divisible by the network's stride "
            f"{stride} ({config.model.name}); use a multiple of {stride}"
        )


@dataclass(frozen=True)
class _Range:
    """The values a numeric config key allows: ``low`` to ``high`` (None: unbounded), each end closed unless
    open; `note` says what an end means."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""

    def __contains__(self, value: float) -> bool:  # False for NaN
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return bool(above and below)

    def __str__(self) -> str:
        low, high = (f"{end:g}" if isinstance(end, float) else str(end) for end in (self.low, self.high))
        if self.high is None:
            said = ("positive" if self.low == 0 else f"greater than {low}") if self.low_open else f"at least {low}"
        else:
            said = f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        return f"{said} ({self.note})" if self.note else said


_PROBABILITY = _Range(0, 1)
# The numeric keys' allowed values (`check_config`); data.fov_diameter, lr_decay_epochs with the step schedule and
# the validation split (`keras_vessel.data.pipeline.split_names`) are checked where they are used.
RANGES: dict[str, _Range] = {
    "data.patch_size": _Range(8),
    "data.batch_size": _Range(1),
    "data.min_fov_fraction": _Range(0, 1, note="the share of a patch that must lie in the field of view"),
    "data.scale_jitter": _Range(0, 1),
    "data.local_sigma": _Range(0, 256, low_open=True, note="px"),
    "data.augment.noise_variance": _Range(0, 1, note="on images scaled to [0, 1]"),
    "data.augment.noise_probability": _PROBABILITY,
    "data.augment.clahe_probability": _PROBABILITY,
    "data.augment.contrast_stretch_probability": _PROBABILITY,
    "data.augment.brightness": _Range(0, 1, note="a factor in [1 - b, 1 + b]"),
    "data.augment.contrast": _Range(0, 1, note="a factor in [1 - c, 1 + c]"),
    "data.augment.gamma": _Range(0, 2, note="the tone curve x ** g has log(g) in [-gamma, gamma]"),
    "data.augment.colour_balance": _Range(0, 1, note="gains in [1 - c, 1 + c]"),
    "data.augment.blur_probability": _PROBABILITY,
    "data.augment.blur_sigma": _Range(0.3, 10, note="px; sigma is drawn from [0.3, blur_sigma]"),
    "data.augment.jpeg_probability": _PROBABILITY,
    "data.augment.jpeg_quality": _Range(0, 95, note="quality is drawn from [jpeg_quality, 95]"),
    "loss.vessel_weight": _Range(0),
    "loss.background_weight": _Range(0),
    "loss.extra_weight": _Range(0),
    "loss.cldice_alpha": _Range(0, 1),
    "loss.cldice_iterations": _Range(1),
    "train.epochs": _Range(1),
    "train.steps_per_epoch": _Range(1),
    "train.learning_rate": _Range(0, low_open=True),
    "train.momentum": _Range(0, 1, high_open=True),
    "train.weight_decay": _Range(0),
    "train.lr_decay_epochs": _Range(0),
    "train.lr_decay_factor": _Range(0, 1, low_open=True, note="the step schedule's multiplier"),
    "train.ema_momentum": _Range(0, 1, high_open=True, note="0 turns the average off"),
    "train.early_stopping_patience": _Range(0, note="0 turns early stopping off"),
    "train.seed": _Range(0, 2**32 - 1),
    "train.cpu_devices": _Range(0, note="0 or 1 keeps the CPU whole"),
}
_INTENSITY_VARIANTS = ("clahe_probability", "contrast_stretch_probability", "noise_probability")


def check_ranges(config: RunConfig) -> None:
    """ConfigError naming the key, its value and its allowed range (`RANGES`) for the first value out of range;
    also when the intensity variants' probabilities (one variant per visit) add up to more than 1."""
    for key, allowed in RANGES.items():
        value = functools.reduce(getattr, key.split("."), config)
        if value not in allowed:
            raise ConfigError(f"{key} must be {allowed}, got {value}")
    augment = config.data.augment
    total = sum(getattr(augment, name) for name in _INTENSITY_VARIANTS)
    if total > 1:
        shown = " + ".join(f"{getattr(augment, name):g}" for name in _INTENSITY_VARIANTS)
        raise ConfigError(f"data.augment's {', '.join(_INTENSITY_VARIANTS)} are the chances of one intensity variant "
                          f"per visit and must add up to at most 1, got {shown} = {total:g}")


def check_config(config: RunConfig) -> dict[str, Any]:
    """Everything that can be wrong before training starts, reported with the key or path; returns the
    records' combined manifest. Numeric keys are checked against `RANGES` (`check_ranges`)."""
    if not config.data.train_records:
        raise ConfigError("data.train_records is empty: point it at a folder written by `keras-vessel prepare`")
    check_ranges(config)
    data = config.data
    if data.fov_diameter < 0 or 0 < data.fov_diameter < 32:
        raise ConfigError(f"data.fov_diameter must be 0 (each image at its own scale) or a diameter of at "
                          f"least 32 px, got {data.fov_diameter}")
    try:
        manifest = combined_manifest(records_folders(config.data))
    except PrepareError as error:
        raise ConfigError(f"data.train_records: {error}") from error
    _normalisation(config, manifest)  # statistics the records lack fail here, before the run folder exists
    _check_patch_fits(config, manifest)
    return manifest


def _check_patch_fits(config: RunConfig, manifest: dict[str, Any]) -> None:
    """Refuse a patch larger than every training image (at the training scale): no patch would ever hold
    enough field of view, and the input pipeline would look for one for ever, growing its memory."""
    data = config.data

    def size(image: dict[str, Any]) -> tuple[float, float]:  # (width, height) at the training scale
        diameter = image.get("fov_diameter") or 0.0
        scale = data.fov_diameter / diameter if data.fov_diameter and diameter else 1.0
        return image["width"] * scale, image["height"] * scale

    largest = max(manifest["images"], key=lambda image: min(size(image)))
    width, height = size(largest)
    if data.patch_size > min(width, height):
        at = f" at data.fov_diameter {data.fov_diameter:g}" if data.fov_diameter else ""
        raise ConfigError(f"data.patch_size {data.patch_size} is larger than every training image: the largest, "
                          f"{largest['name']}, is {width:.0f}x{height:.0f} px (WxH){at}; choose data.patch_size "
                          f"of at most {int(min(width, height))}")
