"""Reading and writing `.keras` model files: the one loader and the one atomic saver.

`load_model_file` checks what can be checked before Keras opens the archive
(suffix, existence, a whole zip file), loads in safe mode with the custom
objects of keras-vessel registered, and turns every failure into one
sentence naming the file.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import keras

from keras_vessel.io import atomic_path

__all__ = ["load_model_file", "save_model_atomic"]


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


def save_model_atomic(model: keras.Model, path: str | os.PathLike) -> None:
    """`model.save` to a temporary `.keras` file beside `path`, then rename it into place."""
    with atomic_path(path, suffix=".keras") as temp:
        model.save(temp)
