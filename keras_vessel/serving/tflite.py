"""Export a model for phones and edge devices as a LiteRT (TFLite) flat buffer.

``export_tflite`` writes ``NAME.tflite`` and ``NAME.json`` (the input
contract). The network and its input normalisation are inside the file, as in
the `.keras` model: input ``images`` float32 ``[1, H, W, 3]`` RGB on 0-255
(H and W multiples of the model's stride; fixed at export with
``input_size``, else resizable with ``Interpreter.resize_tensor_input``),
output ``probability`` float32 ``[1, H, W]``. What is not inside, because it
needs data-dependent control flow that LiteRT's built-in operators do not
have: finding the field of view and resampling the photograph so that it is
``fov_diameter`` px across (`keras_vessel.data.scaling`: the model's training
diameter, or the working diameter of ``scale="1080px"``), and the threshold;
``NAME.json`` gives both numbers so an app can do them. With ``scale="multi"``
it gives ``fov_diameters`` instead (and no ``fov_diameter``, so an app that reads
only that one fails rather than running one scale): the app runs the
photograph at each and averages the probabilities resampled back.
With ``scale="adaptive"`` the app chooses per photograph: when its field of view
is found at least ``multi_from_fov`` px across
(`keras_vessel.data.scaling.MULTI_SCALE_FROM_FOV` when exporting), it runs it as
for ``"multi"`` at each of ``fov_diameters`` and masks at ``threshold_multi``; else
it resamples it so that its field of view is ``fov_diameter_auto`` px across (the
training diameter; at its own size when none is found) and masks at
``threshold``. Again no ``fov_diameter``, for the same reason. A model that records
no training diameter has nothing to fuse: its JSON is ``"auto"``'s (``fov_diameter``
None: run at the photograph's own size, masked at ``threshold``).

Weights: ``float32``; ``float16`` (half the size, computed in float32 on
CPUs, in float16 on GPU delegates); ``int8`` (dynamic-range quantisation:
int8 weights, float activations, about a quarter of the size).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import keras
import tensorflow as tf

from keras_vessel.checks import FUSIONS, check_choice
from keras_vessel.io import atomic_path, write_json_atomic
from keras_vessel.locks import folder_lock
from keras_vessel.models import as_inference_model, model_stride
from keras_vessel.models.inference import model_working_diameters
from keras_vessel.models.saving import load_model_file
from keras_vessel.data.scaling import check_scale, scale_record

__all__ = ["WEIGHTS", "export_tflite"]

WEIGHTS = ("float32", "float16", "int8")


def export_tflite(
    keras_model_path_or_model: keras.Model | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str,
    weights: str = "float32",
    input_size: int | None = None,
    heads: str = "mean",
    threshold: float | Mapping[str, float] | None = None,
    scale: str = "auto",
) -> Path:
    """Write ``out_dir/NAME.tflite`` and ``out_dir/NAME.json``; returns the ``.tflite`` path.

    Parameters
    ----------
    keras_model_path_or_model : a training or inference model, or a ``.keras`` file of one.
    out_dir : created if missing; locked while written (`keras_vessel.locks.folder_lock`: another process
        exporting into it gets a FolderLockedError), and removed again if the export fails and leaves it empty.
    name : the files' stem.
    weights : ``"float32"``, ``"float16"`` or ``"int8"`` (dynamic range).
    input_size : a fixed square input (a multiple of the stride), or None for a resizable one.
    heads : head fusion of a training model.
    threshold : recorded in the JSON for the app's mask (e.g. the training threshold): None, a number in
        (0, 1), or one per mode ``{"auto": t, "multi": t}`` (`keras_vessel.serving.export.mask_thresholds`), of
        which ``"threshold"`` records the one of `scale`'s mode (`keras_vessel.evaluation.threshold_scale`);
        for ``"adaptive"``, ``"threshold"`` records ``"auto"``'s and ``"threshold_multi"`` ``"multi"``'s.
    scale : what the JSON's ``fov_diameter`` (px) tells the app to resample each photograph's field of view
        to: the model's training diameter (``"auto"``), N (``"Npx"``, e.g. ``"1080px"``) or none
        (``"none"``: run photographs at their own size); for ``"multi"``, ``fov_diameters`` (the
        `keras_vessel.data.scaling.FUSION_MULTIPLES` of the training diameter; a ValueError for a model
        that records none) and ``multiples``, whose probabilities the app averages; for ``"adaptive"``, those
        and ``multi_from_fov``, the field of view (px) from which the app fuses, and ``fov_diameter_auto``, the
        training diameter below it (a model that records none never fuses: its JSON is ``"auto"``'s, with
        ``fov_diameter`` None). A factor is refused (`keras_vessel.data.scaling.check_scale`).
    """
    scale = check_scale(scale, factors=False)
    _thresholds(threshold, scale)  # checked before any work
    weights = check_choice("weights", weights, WEIGHTS)
    heads = check_choice("heads", heads, FUSIONS)
    model = as_inference_model(load_model_file(keras_model_path_or_model), heads=heads)
    stride = model_stride(model)
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int)
                                   or input_size < stride or input_size % stride):
        raise ValueError(f"input_size must be a positive multiple of the model's stride {stride}, got {input_size!r}")
    shown = None if isinstance(keras_model_path_or_model, keras.Model) else str(keras_model_path_or_model)
    diameters = model_working_diameters(model, scale, name=shown)
    if scale == "adaptive" and diameters is None:  # a model that records no training diameter never fuses
        scale = "auto"
    thresholds = _thresholds(threshold, scale)
    if diameters is None:
        resample, fov = "before running, pad the photograph to the stride", {"fov_diameter": None}
    elif scale in ("multi", "adaptive"):
        resample = _FUSED
        fov = {"fov_diameters": list(diameters)}
        if scale == "adaptive":
            resample = (f"when the photograph's field of view is found at least multi_from_fov px across: {resample}, "
                        f"masked at threshold_multi; else {_SINGLE.format('fov_diameter_auto')} (at its own size when "
                        "no field of view is found), masked at threshold")
            fov["fov_diameter_auto"] = model_working_diameters(model, "auto")[0]
    else:
        resample, fov = _SINGLE.format("fov_diameter"), {"fov_diameter": diameters[0]}
    with folder_lock(out_dir, what="the TFLite output folder") as out_dir:  # one writer; none leaves an empty folder
        side = input_size
        blob = _convert(model, [1, side, side, 3], weights)
        target = out_dir / f"{name}.tflite"
        with atomic_path(target) as temp:
            temp.write_bytes(blob)
        write_json_atomic(out_dir / f"{name}.json", {
            "model": f"{name}.tflite",
            "input": {"name": "images", "dtype": "float32", "shape": [1, side, side, 3],
                      "layout": "RGB on 0-255; height and width multiples of the stride", "stride": stride},
            "output": {"name": "probability", "dtype": "float32", "shape": [1, side, side],
                       "meaning": "vessel probability in [0, 1]"},
            **fov,
            **scale_record(scale),
            "resample": resample,
            **thresholds,
            "weights": weights,
            "heads": heads,
        })
    return target


# What NAME.json's "resample" tells the app to do with a photograph at one working diameter (that of the key
# formatted in), and at several.
_SINGLE = ("before running, resample the photograph so that its field of view is {} px across "
           "(bilinear, antialiased) and pad it to the stride; resample the probability back")
_FUSED = ("for each of fov_diameters: resample the photograph so that its field of view is that many px across "
          "(bilinear, antialiased), pad it to the stride, run it and resample the probability back; the "
          "probability is the mean of these (one run at the photograph's own size when no field of view is found)")


def _thresholds(threshold: float | Mapping[str, float] | None, scale: str) -> dict[str, float | None]:
    """NAME.json's thresholds (`export_tflite`'s `threshold`) at the `check_scale` choice `scale`."""
    from keras_vessel.evaluation import THRESHOLD_SCALES, threshold_scale
    from keras_vessel.serving.export import mask_thresholds

    # None records none (the app chooses); a number or one per mode is checked as the SavedModel's
    per_mode = dict.fromkeys(THRESHOLD_SCALES) if threshold is None else mask_thresholds(threshold)
    if scale == "adaptive":
        return {"threshold": per_mode["auto"], "threshold_multi": per_mode["multi"]}
    return {"threshold": per_mode[threshold_scale(scale)]}


def _convert(model: keras.Model, shape: list, weights: str) -> bytes:
    """The model as a flat buffer, its variables frozen into constants first.

    Keras 3 variables are not frozen by the converter itself (the flat buffer
    would read uninitialised resource variables), hence
    `convert_variables_to_constants_v2` (TensorFlow has no public name for it).
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
    def serve(images: tf.Tensor) -> dict:
        return {"probability": tf.cast(model(images, training=False)[..., 0], tf.float32)}

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # the converter's deprecation notice about trackable_obj is not the user's
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [convert_variables_to_constants_v2(serve.get_concrete_function())]
        )
    finally:
        absl.setLevel(level)
    if weights != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if weights == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()
