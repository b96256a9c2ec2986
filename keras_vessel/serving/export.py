"""Export a model as a TensorFlow SavedModel in the TF Serving layout.

``export_saved_model`` writes ``out_dir/NAME/VERSION/`` (``saved_model.pb`` +
``variables/``), the layout ``tensorflow_model_server --model_base_path=out_dir/NAME``
serves, with two signatures:

``serving_default``
    ``images``: float32 ``[batch, height, width, 3]`` RGB on 0-255, any size
    -> ``probability``: float32 ``[batch, height, width]`` in [0, 1].
``predict_image``
    ``image_bytes``: string ``[batch]`` of encoded PNG/JPEG images (all of one
    size within a request) -> ``probability`` as above and ``mask_png_bytes``:
    string ``[batch]``, PNG-encoded binary masks (0/255, ``probability >=
    threshold``; the threshold is fixed at export time, one per mode with
    ``scale="adaptive"``). The ``_bytes``
    suffix makes TF Serving's REST API return it base64-encoded
    (``{"b64": ...}``); without it the raw PNG bytes would not be valid JSON.

Everything the client would otherwise have to know happens inside the graph:
finding the field of view and resampling the image so that it is as wide as
the model's training images (``scale="auto"``, `keras_vessel.data.scaling`) or
as a working diameter fixed at export (``scale="1080px"``; the probability is
resampled back and set to 0 outside the field of view), or at each of the
`FUSION_MULTIPLES` of the training diameter with the probabilities averaged
(``scale="multi"``: the field of view measured once, one run at the image's own grid
when none is found), or per image one of the two (``scale="adaptive"``: ``"multi"`` when its
field of view is found at least `keras_vessel.data.scaling.MULTI_SCALE_FROM_FOV` px across,
as read at export time and fixed in the graph, and the model records its training diameter,
else ``"auto"``; the mask at the threshold of the mode it ran at), padding
to the network stride (bottom/right, by reflection like
`keras_vessel.models.inference.predict_probability`, by edge replication when the
image is smaller than the pad), cropping back, decoding, thresholding and PNG
encoding. Bad requests fail with a ``tf.debugging`` assertion whose message
says what was expected. The SavedModel needs neither keras_vessel nor Keras to
load. What the graph fixes (heads, scale, each mode's threshold and working
diameters, the bar between modes) and the source model's SHA-256 are recorded
for people in the version folder's `EXPORT_RECORD` (``assets.extra/``, which
TF Serving does not load). See ``saved_models/README.md`` for serving it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import keras
import tensorflow as tf

from keras_vessel.checks import FUSIONS
from keras_vessel.io import raise_named, remove_stale_staging, staging_dir, umask, write_json_atomic
from keras_vessel.locks import folder_lock
from keras_vessel.models.saving import deflate_keras_file, load_model_file
from keras_vessel.models import as_inference_model, model_stride
from keras_vessel.models.inference import model_working_diameters
from keras_vessel.data import scaling
from keras_vessel.data.scaling import check_scale, fov_diameter, prediction_region, resample, resize_to, scale_factor

__all__ = ["EXPORT_RECORD", "SIGNATURES", "export_keras_model", "export_saved_model", "mask_thresholds",
           "version_folder_state"]

log = logging.getLogger(__name__)

SIGNATURES = ("serving_default", "predict_image")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_SAVED_MODEL_ENTRIES = frozenset({"saved_model.pb", "variables", "assets", "assets.extra", "fingerprint.pb",
                                  "keras_metadata.pb"})
EXPORT_RECORD = "assets.extra/keras_vessel.json"  # in the version folder: what the graph fixes, for people


def _pad_indices(size: tf.Tensor, pad: tf.Tensor, reflect: tf.Tensor) -> tf.Tensor:
    """Gather indices padding an axis of ``size`` by ``pad`` at the end (NumPy reflect/edge)."""
    index = tf.range(size + pad)
    reflected = tf.where(index < size, index, 2 * (size - 1) - index)
    edge = tf.minimum(index, size - 1)
    return tf.where(reflect, reflected, edge)


class _VesselServing(tf.Module):
    """The exported graph: the Keras inference model plus scaling, padding, decoding and encoding.

    `diameters` maps each mode an image may run at (``"auto"``, ``"multi"``: the threshold scales,
    `keras_vessel.evaluation.THRESHOLD_SCALES`) to the field-of-view diameters (px) it resamples every image to
    (`model_working_diameters` of the export's scale): one, or several whose probabilities are averaged (one run
    at the image's own grid when its FOV is not found); None runs images at their own grid. With both modes
    (``scale="adaptive"``), an image runs at ``"multi"`` when its FOV is found at least `multi_from_fov` px
    across, else at ``"auto"``. `thresholds` maps each mode to the mask threshold of the images run at it.
    """

    def __init__(self, model: keras.Model, *, stride: int, thresholds: dict[str, float],
                 diameters: dict[str, tuple[float, ...] | None], multi_from_fov: float | None = None) -> None:
        super().__init__(name="keras_vessel_serving")
        # Track the weights, not the Keras model: a tracked model adds its own traced call functions to the
        # SavedModel (three more copies of the network graph), which no signature uses.
        self.weights = list(model.weights)
        object.__setattr__(self, "_model", model)
        self._stride = stride
        self._thresholds = dict(thresholds)
        self._diameters = {mode: tuple(targets or ()) for mode, targets in diameters.items()}
        self._multi_from_fov = multi_from_fov

    def _probability(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(probability [batch, H, W], threshold [batch])``: each image's probability and the mask threshold of
        the mode it ran at (`_one_image`)."""
        # A loaded signature does not check its input shape; EnsureShape fails at run time
        # with "Shape of tensor images [..] is not compatible with expected shape [?,?,?,3]".
        images = tf.ensure_shape(images, [None, None, None, 3], name="images")
        shape = tf.shape(images)
        checks = [
            tf.debugging.assert_positive(
                shape[:3],
                message="images must be a non-empty [batch, height, width, 3] batch "
                "(batch, height and width all > 0)",
            ),
            tf.debugging.assert_all_finite(images, message="images must not contain NaN or Inf"),
        ]
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        with tf.control_dependencies(
            [
                tf.debugging.assert_greater_equal(
                    tf.reduce_min(images), 0.0, message="images must be RGB on 0-255 (found a value < 0)"
                ),
                tf.debugging.assert_less_equal(
                    tf.reduce_max(images), 255.0, message="images must be RGB on 0-255 (found a value > 255)"
                ),
            ]
        ):
            images = tf.identity(images)
        return tf.map_fn(self._one_image, images, fn_output_signature=(
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([], tf.float32)))

    # One traced function that both signatures call: inlined, the network and the scaling would be in the
    # SavedModel once per map_fn body (0.5 MB more for the compact U-Net).
    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)], autograph=False)
    def _one_image(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """What `keras_vessel.serving.prediction.predict_files` does with one image at the export's scale, in
        graph ops: its probability and the threshold of the mode it ran at (float32 scalar)."""
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        mask, diameter, found = fov_diameter(image)  # once, whatever the number of working diameters

        def at(factor: tf.Tensor) -> tf.Tensor:
            """The probability of the image resampled by `factor`, resampled back to its grid."""
            probability = self._network(resample(image, factor)[None])[0]
            return tf.cond(
                tf.reduce_all(tf.equal(tf.shape(probability), [height, width])),
                lambda: probability,
                lambda: resize_to(probability[..., None], [height, width])[..., 0],
            )

        def mean_over(targets: tuple[float, ...]) -> tf.Tensor:
            maps = [at(scale_factor(target, diameter, found)) for target in targets]
            return maps[0] if len(maps) == 1 else tf.add_n(maps) / float(len(maps))

        def run(targets: tuple[float, ...]) -> tf.Tensor:
            if not targets:
                return at(tf.constant(1.0))
            if len(targets) == 1:
                return mean_over(targets)
            # no FOV found: one run at the image's own grid, as local prediction does
            return tf.cond(found, lambda: mean_over(targets), lambda: at(tf.constant(1.0)))

        if len(self._diameters) == 1:
            (mode, targets), = self._diameters.items()
            probability, threshold = run(targets), tf.constant(self._thresholds[mode], tf.float32)
        else:  # "adaptive" (`keras_vessel.data.scaling.adaptive_mode`), compared in float64 as in NumPy
            wide = tf.cast(diameter, tf.float64) >= tf.constant(self._multi_from_fov, tf.float64)
            fused = tf.logical_and(tf.cast(found, tf.bool), wide)
            # fused only when the FOV is found: the mean over the multiples needs no fallback
            probability = tf.cond(fused, lambda: mean_over(self._diameters["multi"]),
                                  lambda: run(self._diameters["auto"]))
            threshold = tf.where(fused, tf.constant(self._thresholds["multi"], tf.float32),
                                 tf.constant(self._thresholds["auto"], tf.float32))
        probability = tf.clip_by_value(probability, 0.0, 1.0)
        return tf.where(prediction_region(mask, found), probability, 0.0), threshold

    def _network(self, images: tf.Tensor) -> tf.Tensor:
        """The model on a batch padded to its stride by reflection, cropped back: (B, H, W) float32."""
        shape = tf.shape(images)
        height, width = shape[1], shape[2]
        pad_h = tf.math.floormod(-height, self._stride)
        pad_w = tf.math.floormod(-width, self._stride)
        reflect = tf.logical_and(pad_h < height, pad_w < width)
        padded = tf.gather(images, _pad_indices(height, pad_h, reflect), axis=1)
        padded = tf.gather(padded, _pad_indices(width, pad_w, reflect), axis=2)
        probability = self._model(padded, training=False)
        return tf.cast(probability[:, :height, :width, 0], tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def serve(self, images: tf.Tensor) -> dict:
        return {"probability": self._probability(images)[0]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def predict_image(self, image_bytes: tf.Tensor) -> dict:
        image_bytes = tf.ensure_shape(image_bytes, [None], name="image_bytes")
        count = tf.size(image_bytes)
        prefix8 = tf.strings.substr(image_bytes, 0, 8)
        prefix3 = tf.strings.substr(image_bytes, 0, 3)
        is_image = tf.logical_or(tf.equal(prefix8, _PNG_MAGIC), tf.equal(prefix3, _JPEG_MAGIC))
        checks = [
            tf.debugging.assert_positive(count, message="image_bytes must hold at least one image"),
            tf.debugging.assert_equal(
                is_image,
                tf.ones_like(is_image),
                message="image_bytes must hold encoded PNG or JPEG images; an element has neither "
                "a PNG nor a JPEG signature",
            ),
        ]
        with tf.control_dependencies(checks):
            image_bytes = tf.identity(image_bytes)

        def decode(data: tf.Tensor) -> tf.Tensor:
            image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
            image.set_shape([None, None, 3])
            return image

        first_size = tf.shape(decode(image_bytes[0]))[:2]

        def decode_same_size(data: tf.Tensor) -> tf.Tensor:
            image = decode(data)
            with tf.control_dependencies(
                [
                    tf.debugging.assert_equal(
                        tf.shape(image)[:2],
                        first_size,
                        message="all images in one predict_image request must have the same height "
                        "and width; send differently sized images in separate requests",
                    )
                ]
            ):
                return tf.identity(image)

        images = tf.map_fn(
            decode_same_size, image_bytes, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8)
        )
        probability, threshold = self._probability(tf.cast(images, tf.float32))
        masks = tf.cast(probability >= threshold[:, None, None], tf.uint8) * tf.constant(255, tf.uint8)
        mask_png = tf.map_fn(
            lambda mask: tf.io.encode_png(mask[..., None]),
            masks,
            fn_output_signature=tf.TensorSpec([], tf.string),
        )
        return {"probability": probability, "mask_png_bytes": mask_png}


def export_saved_model(
    keras_model_path_or_model: keras.Model | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str,
    version: int,
    overwrite: bool = False,
    threshold: float | Mapping[str, float] = 0.5,
    heads: str = "mean",
    scale: str = "auto",
) -> Path:
    """Write the model as ``out_dir/name/version/`` for TF Serving and return that path.

    Parameters
    ----------
    keras_model_path_or_model : a training or inference model, or a ``.keras`` file of one.
    out_dir : the model base folder's parent (created if missing).
    name : model name, the folder TF Serving's ``--model_name`` points at.
    version : positive int; TF Serving serves the highest version by default.
    overwrite : replace an existing ``name/version`` folder instead of failing.
    threshold : probability at and above which ``mask_png_bytes`` marks a vessel: a number in (0, 1) for every
        image, or one per mode ``{"auto": t, "multi": t}`` (`keras_vessel.evaluation.THRESHOLD_SCALES`), each
        image masked at the one of the mode it runs at (``"multi"`` at ``scale="multi"``, ``"multi"`` or
        ``"auto"`` per image at ``scale="adaptive"``, else ``"auto"``), as
        `keras_vessel.serving.prediction.predict_files` masks.
    heads : head fusion for a training model (``"mean"``, ``"segment"``, ``"pixel"``).
    scale : ``"auto"``: every image is resampled in the graph so that its field
        of view is as wide as the model's training images
        (`keras_vessel.data.scaling`), as local prediction does; ``"Npx"``
        (e.g. ``"1080px"``, N in 64-4096): so that it is N px across, as
        ``predict --scale Npx`` does; ``"multi"``: at each of the
        `keras_vessel.data.scaling.FUSION_MULTIPLES` of the training diameter, the
        probabilities averaged; ``"adaptive"``: ``"multi"`` for an image whose field of
        view is found at least `keras_vessel.data.scaling.MULTI_SCALE_FROM_FOV` px across
        (the value when exporting, fixed in the graph), else ``"auto"``, as
        ``predict --scale adaptive`` does; ``"none"``: at its own grid. A factor is
        refused (`keras_vessel.data.scaling.check_scale`). Either way the
        probability is 0 outside the field of view found in the image
        (everywhere kept when none is found).

    The version folder is written next to its final place and renamed into
    it, so a server polling ``out_dir/name`` never sees a half-written version.
    ``out_dir/name`` is locked meanwhile (`keras_vessel.locks.folder_lock`):
    another process exporting into it gets a FolderLockedError.
    """
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"name must be a non-empty model name of letters, digits, '_', '.', '-' "
            f"(a folder name), got {name!r}"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be an int >= 1 (TF Serving version folder), got {version!r}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {overwrite!r} (type {type(overwrite).__name__})")
    thresholds = mask_thresholds(threshold)
    if not isinstance(heads, str) or heads not in FUSIONS:
        raise ValueError(f"heads must be one of {list(FUSIONS)}, got {heads!r}")
    scale = check_scale(scale, factors=False)

    target = Path(out_dir) / name / str(version)
    with folder_lock(target.parent, what="the model folder"):  # one export at a time; none leaves an empty NAME
        state = version_folder_state(target)
        if state in ("complete", "other") and not overwrite:
            raise FileExistsError(
                f"SavedModel version folder already exists: {str(target)!r}; "
                "pass overwrite=True to replace it or choose another version"
            )
        if state == "incomplete":
            log.warning("%s holds no complete SavedModel (an export that stopped?); exporting it again", target)
        model = load_model_file(keras_model_path_or_model)
        try:
            model = as_inference_model(model, heads=heads)
        except ValueError as error:
            if isinstance(keras_model_path_or_model, keras.Model):
                raise
            raise ValueError(f"{str(keras_model_path_or_model)!r}: {error}") from error
        remove_stale_staging(target.parent, str(version))
        stride = model_stride(model)
        shown = None if isinstance(keras_model_path_or_model, keras.Model) else str(keras_model_path_or_model)
        modes = _mode_diameters(model, scale, shown)
        multi_from_fov = float(scaling.MULTI_SCALE_FROM_FOV) if len(modes) > 1 else None
        module = _VesselServing(model, stride=stride, thresholds=thresholds, diameters=modes,
                                multi_from_fov=multi_from_fov)
        # The functions themselves, not concrete functions traced here: save traces them in its own context
        # (a different variable policy), so concrete functions traced outside it were a second copy of every
        # function in saved_model.pb (0.6 MB of 1.27 for the compact U-Net).
        signatures = {"serving_default": module.serve, "predict_image": module.predict_image}
        staging = staging_dir(target.parent, str(version))
        try:
            tf.saved_model.save(module, str(staging), signatures=signatures)
            (staging / EXPORT_RECORD).parent.mkdir()
            write_json_atomic(staging / EXPORT_RECORD, _export_record(keras_model_path_or_model, heads, scale,
                                                                      stride, thresholds, modes, multi_from_fov))
            os.chmod(staging, 0o777 & ~umask())  # mkdtemp makes 0700 folders; a server user must read them
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise_named(error, target, temp=staging)  # a full disk names the version, not the staging
    runs = "; ".join((f"{mode}: " if len(modes) > 1 else "") + f"threshold {thresholds[mode]:g}, run at "
                     + ("each image's own grid" if targets is None else
                        "a field of view of " + " / ".join(f"{d:g}" for d in targets) + " px")
                     for mode, targets in modes.items())
    fused_from = "" if multi_from_fov is None else f"; multi from a field of view of {multi_from_fov:g} px"
    log.info("exported %s (stride %d, %s%s) to %s", model.name, stride, runs, fused_from, target)
    return target


def mask_thresholds(threshold: float | Mapping[str, float]) -> dict[str, float]:
    """An export's mask threshold, checked, as one per mode of `keras_vessel.evaluation.THRESHOLD_SCALES`:
    a number in (0, 1) (predict's rule, `keras_vessel.evaluation.parse_threshold`; the same for both modes),
    or ``{"auto": t, "multi": t}`` of such numbers; a ValueError of one sentence otherwise ('otsu' and numbers
    in text are the command line's: an export holds numbers).

    >>> mask_thresholds(0.4), mask_thresholds({"multi": 0.7, "auto": 0.3})
    ({'auto': 0.4, 'multi': 0.4}, {'auto': 0.3, 'multi': 0.7})
    """
    from keras_vessel.evaluation import THRESHOLD_SCALES, parse_threshold

    per_mode = dict(threshold) if isinstance(threshold, Mapping) else dict.fromkeys(THRESHOLD_SCALES, threshold)
    if set(per_mode) == set(THRESHOLD_SCALES) and not any(isinstance(value, str) for value in per_mode.values()):
        with contextlib.suppress(ValueError):  # parse_threshold's, for a value outside (0, 1)
            return {mode: float(parse_threshold(per_mode[mode])) for mode in THRESHOLD_SCALES}
    per_mode_shown = ", ".join(repr(mode) + ": t" for mode in THRESHOLD_SCALES)
    raise ValueError(f"threshold must be a number in (0, 1) or one per mode, {{{per_mode_shown}}}, got {threshold!r}")


def _mode_diameters(model: keras.Model, scale: str, shown: str | None) -> dict[str, tuple[float, ...] | None]:
    """The modes images run at under the `check_scale` choice `scale` (threshold scales,
    `keras_vessel.evaluation.threshold_scale`), each with its working diameters (`model_working_diameters`):
    for ``"adaptive"`` both, or ``"auto"`` alone (at each image's own grid) with a model that records no
    training diameter; else the one of `scale` (a ValueError of one sentence for ``"multi"`` with such a
    model)."""
    from keras_vessel.evaluation import threshold_scale

    if scale != "adaptive":
        return {threshold_scale(scale): model_working_diameters(model, scale, name=shown)}
    fused = model_working_diameters(model, scale, name=shown)  # "multi"'s, or None: the model records none
    return {"auto": None} if fused is None else {"auto": model_working_diameters(model, "auto"), "multi": fused}


def _export_record(source, heads: str, scale: str, stride: int, thresholds: Mapping[str, float],
                   modes: Mapping[str, tuple[float, ...] | None], multi_from_fov: float | None) -> dict:
    """`EXPORT_RECORD`'s content: what the exported graph fixes (heads, scale, each mode's threshold and
    working diameters, the bar between them), the source model (its SHA-256 when a file) and the versions."""
    from keras_vessel.io import file_sha256
    from keras_vessel.provenance import own_version

    model = ({"path": None, "sha256": None} if isinstance(source, keras.Model) else
             {"path": str(source), "sha256": file_sha256(source)})
    runs = {mode: {"threshold": thresholds[mode], "fov_diameters": None if targets is None else list(targets)}
            for mode, targets in modes.items()}
    return {"keras_vessel": own_version(), "tensorflow": tf.__version__, "model": model,
            "signatures": list(SIGNATURES), "heads": heads, "scale": scale, "stride": stride,
            "multi_from_fov": multi_from_fov, "modes": runs}


def version_folder_state(folder: str | os.PathLike) -> str:
    """What a TF Serving version folder holds: ``"missing"``; ``"complete"`` (``saved_model.pb`` and the
    variables' index); ``"incomplete"`` (empty, or parts of a SavedModel only: an export that stopped);
    ``"other"`` (files no SavedModel has, which an export replaces only when told to)."""
    folder = Path(folder)
    if not folder.exists():
        return "missing"
    if (folder / "saved_model.pb").is_file() and (folder / "variables" / "variables.index").is_file():
        return "complete"
    if folder.is_dir() and all(entry.name in _SAVED_MODEL_ENTRIES for entry in folder.iterdir()):
        return "incomplete"
    return "other"


def export_keras_model(keras_model_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy a training run's ``.keras`` model without its optimizer state and return the new path.

    A run's ``model.keras`` carries Adam's two moment estimates, tripling the
    file. What ships (``saved_models/``) and what users fine-tune from needs
    only the architecture, the weights and the compiled losses (a fresh,
    unbuilt optimizer of the same configuration is compiled in, so plain
    ``model.fit`` still works). The training thresholds beside the source
    (`keras_vessel.evaluation.threshold_paths`: ``threshold.json``, and for
    test-time augmentation and ``--scale multi`` their own files) are copied
    beside the result.
    """
    from keras_vessel.evaluation import threshold_paths

    source, path = Path(keras_model_path), Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"expected a destination ending in .keras, got {str(path)!r}")
    model = load_model_file(source, compile=True)
    if getattr(model, "optimizer", None) is None or not getattr(model, "loss", None):
        raise ValueError(f"{str(source)!r} is not a compiled training model (no optimizer or loss)")
    optimizer = model.optimizer.__class__.from_config(model.optimizer.get_config())
    model.compile(optimizer=optimizer, loss=model.loss)

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path.parent, path.name)
    staging = staging_dir(path.parent, path.name)
    try:
        model.save(staging / path.name)
        deflate_keras_file(staging / path.name)  # about a tenth smaller
        thresholds = [threshold for threshold in threshold_paths(source) if threshold.is_file()]
        for threshold in thresholds:
            shutil.copyfile(threshold, staging / threshold.name)
        os.replace(staging / path.name, path)
        for threshold in thresholds:
            os.replace(staging / threshold.name, path.with_name(threshold.name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
