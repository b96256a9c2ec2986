"""Reading and writing `.keras` model files: the one loader and the one atomic saver.

`load_model_file` checks what can be checked before Keras opens the archive
(suffix, existence, a whole zip file), loads in safe mode with the custom
objects of keras-vessel registered, and turns every failure into one
sentence naming the file. `save_model_atomic` writes float32 layers whatever
policy a model was trained under (`float32_model`).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import keras

from keras_vessel.io import atomic_path
from keras_vessel.models.layers import nested_layers

__all__ = ["deflate_keras_file", "float32_model", "load_model_file", "save_model_atomic"]


def load_model_file(model_or_path: keras.Model | str | os.PathLike, *, compile: bool = False) -> keras.Model:
    """A Keras model, loaded in safe mode from a ``.keras`` path if need be (a model passes through).

    ``compile=False`` (prediction, export) needs only the graph and weights;
    ``compile=True`` keeps the training losses and optimizer.

    Raises FileNotFoundError for a missing file, ValueError (naming the file)
    for another suffix, a damaged or truncated archive, or one Keras cannot load.
    """
    if isinstance(model_or_path, keras.Model):
        return model_or_path
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise TypeError(
            "expected a keras.Model or the path of a .keras file, "
            f"got {model_or_path!r} (type {type(model_or_path).__name__})"
        )
    path = Path(model_or_path)
    if path.suffix != ".keras":
        raise ValueError(f"model file {path} must be a Keras 3 '.keras' file; got suffix {path.suffix!r}")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist; expected a .keras file written by training")
    if not _whole_zip(path):
        raise ValueError(f"could not load model {path}: {path} is damaged or incomplete (not a whole .keras "
                         "archive); copy it again or re-run the training that wrote it")
    import keras_vessel.losses  # noqa: F401  (registers the custom losses of a compiled training model)

    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad archive
        raise ValueError(
            f"could not load model {path} (expected a .keras file saved by keras-vessel training): "
            f"{type(error).__name__}: {error}"
        ) from error


def _whole_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def save_model_atomic(model: keras.Model, path: str | os.PathLike, *,
                      before_replace: Callable[[], None] | None = None) -> None:
    """`model.save` of `float32_model(model)` to a temporary `.keras` file beside `path`, then rename it
    into place; `before_replace`, if given, is called once the file is written, just before the rename (to
    remove files of the model it replaces)."""
    with atomic_path(path, suffix=".keras") as temp:
        float32_model(model).save(temp)
        if before_replace is not None:
            before_replace()


def float32_model(model: keras.Model) -> keras.Model:
    """`model` itself when every layer computes in float32, else a float32 copy with the same weights.

    A layer built under a mixed policy (``mixed_bfloat16``, ``mixed_float16``; ``train.mixed_precision``)
    keeps that policy in its config, so a `.keras` file saved from it would compute in bfloat16 or
    float16 wherever it is loaded: about 20x slower on CPUs without bfloat16 kernels, and with coarser
    probabilities. The copy (`keras.models.clone_model`, each layer rebuilt from its config with
    ``dtype="float32"``) holds the same variables' values: mixed policies keep variables in float32,
    so nothing is rounded.
    """
    if all(layer.dtype_policy.name == "float32" for layer in nested_layers(model)):
        return model

    def in_float32(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=in_float32, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def deflate_keras_file(path: str | os.PathLike) -> None:
    """Rewrite a ``.keras`` file (a zip archive, which Keras writes uncompressed) with its members
    deflated, in place and atomically: the same members, read by `keras.models.load_model` as before.

    Float32 weights deflate by about a tenth (the bundled U-Net: 4.55 -> 4.09 MB), which keeps the shipped
    model under the project's 10 MB; training runs keep Keras' faster uncompressed files.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as source, atomic_path(path, suffix=".keras") as temp:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as target:
            for member in source.infolist():
                target.writestr(member.filename, source.read(member), compress_type=zipfile.ZIP_DEFLATED)
