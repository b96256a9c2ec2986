"""Functional models and the helpers every consumer of a model needs.

Models are chosen through the explicit `MODELS` dict (no import-time
registry). Training models take ``(B, H, W, 3)`` float32 RGB on 0-255 and
return a dict of float32 logits ``(B, H, W, 1)`` keyed by head name
(``segment``, ``pixel``); `build_inference_model` wraps one into a model with
a single fused-probability output; `build_ensemble` averages several.
`model_stride` tells training, inference and export what the image size must
be a multiple of.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import keras

from keras_vessel.models.layers import (
    FovDiameter,
    HeadFusion,
    LocalStandardize,
    MeanProbability,
    Standardize,
    StrideCheck,
    nested_layers,
)
from keras_vessel.models.unet import build_unet
from keras_vessel.models.wnet import build_wnet
from keras_vessel.models.yan2018 import build_yan2018

__all__ = [
    "MODELS",
    "FovDiameter",
    "HeadFusion",
    "LocalStandardize",
    "MeanProbability",
    "Standardize",
    "StrideCheck",
    "as_inference_model",
    "build_ensemble",
    "build_inference_model",
    "build_model",
    "build_unet",
    "build_wnet",
    "build_yan2018",
    "head_names",
    "model_fov_diameter",
    "model_stride",
    "record_fov_diameter",
]

MODELS: dict[str, Callable[..., keras.Model]] = {
    "unet": build_unet,
    "wnet": build_wnet,
    "yan2018": build_yan2018,
}


def build_model(name: str, **options: Any) -> keras.Model:
    """Build the model registered in `MODELS` under ``name`` with keyword ``options``.

    Unknown names and options are rejected before anything is built, naming
    the valid choices, so a typo in a config fails at once.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; valid names: {sorted(MODELS)}")
    builder = MODELS[name]
    accepted = [
        p.name for p in inspect.signature(builder).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for model {name!r}; valid options: {sorted(accepted)}"
        )
    return builder(**options)


def model_stride(model: keras.Model) -> int:
    """The number image height and width must be multiples of (``2**poolings``).

    Read from the model's `StrideCheck` layer (nested models included), so it
    survives save/load.
    """
    strides = [layer.stride for layer in nested_layers(model) if isinstance(layer, StrideCheck)]
    if not strides:
        raise ValueError(
            f"model {model.name!r} has no StrideCheck layer; build it with "
            f"keras_vessel.models.build_model (valid names: {sorted(MODELS)})"
        )
    return max(strides)


def model_fov_diameter(model: keras.Model) -> float | None:
    """The FOV diameter (px) the model was trained at, from its `FovDiameter` layer; None if it has none.

    Models trained before keras-vessel recorded their scale have none: they
    are run at each image's own scale.
    """
    diameters = [layer.diameter for layer in nested_layers(model) if isinstance(layer, FovDiameter)]
    return diameters[0] if diameters else None


def record_fov_diameter(model: keras.Model, diameter: float) -> keras.Model:
    """`model` (sharing its weights) behind a `FovDiameter` layer: for a model trained before scales were recorded.

    ``diameter`` is the FOV diameter (px) of the images it was trained on,
    e.g. the median ``fov_diameter`` of its training manifest; prediction
    with ``scale="auto"`` then resamples every image to it.
    """
    if model_fov_diameter(model) is not None:
        raise ValueError(f"model {model.name!r} already records a FOV diameter of "
                         f"{model_fov_diameter(model):g} px")
    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
    outputs = model(FovDiameter(diameter, name="fov_diameter")(inputs))
    return keras.Model(inputs, outputs, name=model.name)


def head_names(model: keras.Model) -> tuple[str, ...]:
    """Names of a training model's heads, in output order (e.g. ``("segment", "pixel")``)."""
    try:
        outputs = model.output
    except (AttributeError, ValueError):  # e.g. a Sequential model never called
        outputs = None
    if not isinstance(outputs, dict):
        raise ValueError(
            f"model {model.name!r} must have dict outputs keyed by head name "
            f"('segment', 'pixel'); got outputs of type {type(outputs).__name__}"
        )
    return tuple(outputs)


def build_inference_model(model: keras.Model, *, heads: str = "mean") -> keras.Model:
    """Wrap a training model into one whose only output is the vessel probability.

    ``heads="mean"`` averages the heads' sigmoids (the project default, the
    authors did not document a fusion); ``"segment"`` or ``"pixel"`` uses one
    head. The result shares the training model's weights; its output is
    ``(B, H, W, 1)`` float32 and it takes the same RGB 0-255 input.
    """
    names = head_names(model)
    if not isinstance(heads, str) or heads not in ("mean",) + names:
        raise ValueError(
            f"heads must be 'mean' or one of the heads model {model.name!r} has {list(names)}, "
            f"got {heads!r}"
        )
    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
    logits = model(inputs)
    probability = HeadFusion(mode=heads, heads=names, name="probability")([logits[n] for n in names])
    return keras.Model(inputs, probability, name=f"{model.name}_inference")


def as_inference_model(model: keras.Model, *, heads: str = "mean") -> keras.Model:
    """A single-output probability model: a training model wrapped (`build_inference_model`), or an
    inference model as it is (``heads`` must then be its fusion or "mean")."""
    try:
        head_names(model)
    except ValueError:
        if not isinstance(model.layers[-1], HeadFusion):
            raise ValueError(
                f"model {model.name!r} is neither a training model (dict outputs 'segment'/'pixel') "
                "nor an inference model from keras_vessel.models.build_inference_model"
            ) from None
        if heads != "mean" and heads != model.layers[-1].mode:
            raise ValueError(
                f"model {model.name!r} is already an inference model fusing heads with mode "
                f"{model.layers[-1].mode!r}; heads={heads!r} only applies to training models"
            ) from None
        return model
    return build_inference_model(model, heads=heads)


def build_ensemble(members: Sequence[keras.Model], *, name: str = "ensemble",
                   labels: Sequence[str] | None = None) -> keras.Model:
    """One training-style model whose heads average the heads of `members` (probabilities, not logits).

    Seeds disagree most on faint, thin vessels; averaging models trained with
    different seeds is the cheapest gain at inference when training time is
    spent anyway. The result has the members' inputs, head names and recorded
    training FOV diameter (`model_fov_diameter`), so evaluation, prediction
    and export take it like any trained model.

    Raises ValueError for fewer than 2 members, members whose heads differ, or
    members trained at different scales (recorded FOV diameters that differ,
    or one recording a diameter and another none): the ensemble runs every
    member at one scale. `labels` name the members in these messages (e.g.
    their files; default ``member 0 ('unet_d2_f4')``, ...).
    """
    members = list(members)
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 models, got {len(members)}")
    labels = [f"member {i} ({m.name!r})" for i, m in enumerate(members)] if labels is None else list(labels)
    if len(labels) != len(members):
        raise ValueError(f"labels must name each of the {len(members)} members, got {len(labels)}")
    heads = head_names(members[0])
    for label, member in zip(labels[1:], members[1:]):
        if head_names(member) != heads:
            raise ValueError(
                f"every ensemble member needs the heads {list(heads)} of {labels[0]}; "
                f"{label} has {list(head_names(member))}"
            )
    diameters = [model_fov_diameter(member) for member in members]
    if len(set(diameters)) > 1:
        said = ", ".join(f"{label} {'none recorded' if d is None else f'{d:g} px'}"
                         for label, d in zip(labels, diameters))
        raise ValueError(
            f"the members were trained at different FOV diameters ({said}), but an ensemble runs them all at "
            "one scale; ensemble models trained at the same one (keras_vessel.models.record_fov_diameter "
            "records it for a model trained before scales were recorded)"
        )
    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
    # the members usually share a name (same architecture): rename them, names must be unique
    outputs = [keras.Model(m.inputs, m.output, name=f"member_{i}")(inputs) for i, m in enumerate(members)]
    averaged = {head: MeanProbability(name=head)([logits[head] for logits in outputs]) for head in heads}
    return keras.Model(inputs, averaged, name=name)
