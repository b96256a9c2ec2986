"""The prepared-data format: GZIP TFRecord shards plus `manifest.json`.

Everything the training graph needs that is expensive or impossible in TF ops
(the ID mask of METHOD.md section 1, the skeleton tube, the CLAHE variant) is
computed once here, so training never calls back into Python.

Per image, one `tf.train.Example` with:

| key | content |
|---|---|
| `name` | bytes, the sample name |
| `height`, `width` | int64 |
| `fov_diameter` | float, px: the field of view's diameter (`keras_vessel.data.scaling`) |
| `image`, `clahe` | PNG, RGB uint8 |
| `label`, `fov`, `tube` | PNG, uint8 0/255 |
| `id_mask` | raw little-endian int32 bytes, `height * width` values |

Shards are written under a temporary name, read back once, and renamed when
complete; each shard's sidecar records the fingerprints of its images' input
files and options (`SampleSpec.fingerprint`) and the shard's SHA-256, which the
manifest lists too. The same images prepared with the same options give
the same bytes (`serialize`), in any process and with any number of workers,
so the same checksums. Re-running `prepare` keeps a shard only when it holds
exactly the requested images, unchanged, intact; anything else is prepared
again, with a warning saying why. `verify_shards` checks the checksums
before training. With `workers > 1` the images are prepared in processes
that import neither Keras nor TensorFlow (`keras_vessel.workers`): they load
each image, compute its arrays (`prepare_sample`) and encode them, PNGs and
sidecar statistics included (`encode`), so this process measures what needs
TensorFlow and writes the records. What loading a sample needs of TensorFlow
(a FOV derived from the photograph, `SampleSpec.measure`) is measured here
before and handed to them, the FOV diameter (`with_fov_diameter`) after.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from keras_vessel.io import atomic_path, ensure_writable_dir, file_sha256, removed_if_failed, write_json_atomic
from keras_vessel.locks import folder_lock
from keras_vessel.progress import progress
from keras_vessel.workers import numpy_map

SCHEMA_VERSION = 2  # 2: fov_diameter per image
MANIFEST = "manifest.json"
DEFAULT_IMAGES_PER_SHARD = 8
# Per-image sums a shard's sidecar must hold for the manifest's statistics; a shard
# whose sidecar lacks one (written by an older version) is prepared again.
SUMMARY_KEYS = frozenset({"fov_pixels", "rgb_sum", "rgb_sq_sum", "grey_sum", "grey_sq_sum", "fov_diameter"})
logger = logging.getLogger(__name__)


class PrepareError(ValueError):
    """Prepared data is missing or inconsistent; the message names the path."""


@dataclass(frozen=True)
class PreparedImage:
    """One image's arrays, ready to encode (built in a worker process)."""

    name: str
    image: np.ndarray
    clahe: np.ndarray
    label: np.ndarray
    fov: np.ndarray
    id_mask: np.ndarray
    tube: np.ndarray

    def statistics(self) -> dict[str, Any]:
        """What a shard's sidecar records of this image but its FOV diameter (`EncodedImage.summary`)."""
        rgb = self.image[self.fov].astype(np.float64)  # (FOV pixels, 3)
        grey = cv2.cvtColor(self.image, cv2.COLOR_RGB2GRAY)[self.fov].astype(np.float64)
        return {
            "name": self.name,
            "height": int(self.image.shape[0]),
            "width": int(self.image.shape[1]),
            "segments": int(np.abs(self.id_mask).max(initial=0)),
            "vessel_fraction": float(self.label[self.fov].mean()) if self.fov.any() else 0.0,
            "fov_fraction": float(self.fov.mean()),
            # sums, so the dataset statistics can be pooled exactly over images
            "fov_pixels": int(self.fov.sum()),
            "rgb_sum": rgb.sum(axis=0).tolist(),
            "rgb_sq_sum": np.square(rgb).sum(axis=0).tolist(),
            "grey_sum": float(grey.sum()),
            "grey_sq_sum": float(np.square(grey).sum()),
        }


@dataclass(frozen=True)
class EncodedImage:
    """One image as a worker process hands it to the writing one (`encode`): its record's features encoded,
    its sidecar statistics, and the arrays its FOV diameter is measured on there (`with_fov_diameter`)."""

    name: str
    features: dict[str, bytes]  # "image", "clahe", "label", "fov", "tube": PNG; "id_mask": raw <i4 bytes
    statistics: dict[str, Any]  # `PreparedImage.statistics`
    image: np.ndarray  # (H, W, 3) uint8 RGB
    fov: np.ndarray  # (H, W) bool
    fov_diameter: float = 0.0  # set by `with_fov_diameter` in the writing process (TF ops)

    def summary(self) -> dict[str, Any]:
        """This image's entry in its shard's sidecar: `statistics` with `fov_diameter` after `fov_fraction`."""
        entry: dict[str, Any] = {}
        for key, value in self.statistics.items():
            entry[key] = value
            if key == "fov_fraction":
                entry["fov_diameter"] = float(self.fov_diameter)
        return entry


def prepare_sample(spec: Any, *, reference: str = "authors", measured: object | None = None) -> PreparedImage:
    """Load one `SampleSpec` and compute everything training needs from it.

    `reference` is passed to `build_id_mask`: "authors" reproduces the authors'
    overwritten reference skeletons, "complete" keeps every segment's whole skeleton.
    `measured` is the spec's ``measure()`` computed elsewhere (`measure_sample`), given to its ``load``
    (which then imports no TensorFlow); None loads with ``load()``.
    """
    from keras_vessel.data.preprocessing import clahe
    from keras_vessel.data.segments import build_id_mask, skeleton_tube

    sample = spec.load() if measured is None else spec.load(measured=measured)
    label = np.asarray(sample.label, dtype=bool) & np.asarray(sample.fov, dtype=bool)
    fov = np.asarray(sample.fov, dtype=bool)
    return PreparedImage(
        name=sample.name,
        image=sample.image,
        clahe=clahe(sample.image),
        label=label,
        fov=fov,
        id_mask=build_id_mask(label, fov, reference=reference),
        tube=skeleton_tube(label),
    )


def encode(prepared: PreparedImage) -> EncodedImage:
    """`prepared`'s record features and statistics (see the module docstring), with NumPy and OpenCV only.

    Worker processes run it (`keras_vessel.workers`): it imports no TensorFlow. The PNGs are OpenCV's,
    the same bytes in any process.
    """
    return EncodedImage(
        name=prepared.name,
        features={
            "image": _png(prepared.image),
            "clahe": _png(prepared.clahe),
            "label": _png(prepared.label),
            "fov": _png(prepared.fov),
            "tube": _png(prepared.tube),
            "id_mask": prepared.id_mask.astype("<i4").tobytes(),
        },
        statistics=prepared.statistics(),
        image=prepared.image,
        fov=prepared.fov,
    )


def prepare_encoded(spec: Any, *, reference: str = "authors", measured: object | None = None) -> EncodedImage:
    """What prepare's workers compute of one `SampleSpec`: `encode` of `prepare_sample` (same arguments)."""
    return encode(prepare_sample(spec, reference=reference, measured=measured))


def with_fov_diameter(encoded: EncodedImage) -> EncodedImage:
    """`encoded` with its FOV diameter: from the image, as inference measures it, else from its FOV mask.

    Training and inference must measure an image's scale the same way, so the
    image rule (`keras_vessel.data.scaling.image_fov`) comes first; the dataset's
    mask is the fallback for images whose surround is not dark.
    """
    from keras_vessel.data.scaling import image_fov, mask_diameter

    geometry = image_fov(encoded.image)
    diameter = geometry.diameter if geometry.found else mask_diameter(encoded.fov)
    if diameter is None:
        raise PrepareError(
            f"image {encoded.name!r}: no circular field of view found in the image or its FOV mask, so its "
            "scale is unknown; give the dataset a FOV mask (e.g. --dataset folder with masks/)"
        )
    return dataclasses.replace(encoded, fov_diameter=float(diameter))


def _png(array: np.ndarray) -> bytes:
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise PrepareError(f"could not PNG-encode an array of shape {array.shape}")
    return encoded.tobytes()


def serialize(encoded: EncodedImage) -> bytes:
    """One encoded image (`encode`) and its FOV diameter as a serialised `tf.train.Example` (see the module
    docstring).

    The bytes depend on the arrays only, not on the process writing them: the
    features are written in the order of their keys (a protobuf map's own order
    differs between processes), so a shard's SHA-256 is the same whenever the
    same images are prepared with the same options.
    """
    import tensorflow as tf

    def bytes_feature(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int_feature(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    height, width = encoded.fov.shape
    features = {
        "name": bytes_feature(encoded.name.encode("utf-8")),
        "height": int_feature(height),
        "width": int_feature(width),
        "fov_diameter": tf.train.Feature(float_list=tf.train.FloatList(value=[encoded.fov_diameter])),
        **{key: bytes_feature(value) for key, value in encoded.features.items()},
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def parse_example(serialized: Any) -> dict[str, Any]:
    """Decode one record into tensors: uint8 images (H, W, 3), float32 masks (H, W), int32 ids."""
    import tensorflow as tf

    spec = {
        "name": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "fov_diameter": tf.io.FixedLenFeature([], tf.float32),
        "image": tf.io.FixedLenFeature([], tf.string),
        "clahe": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.string),
        "fov": tf.io.FixedLenFeature([], tf.string),
        "tube": tf.io.FixedLenFeature([], tf.string),
        "id_mask": tf.io.FixedLenFeature([], tf.string),
    }
    record = tf.io.parse_single_example(serialized, spec)
    height = tf.cast(record["height"], tf.int32)
    width = tf.cast(record["width"], tf.int32)

    def mask(key: str) -> tf.Tensor:
        decoded = tf.io.decode_png(record[key], channels=1)[..., 0]
        return tf.cast(decoded > 0, tf.float32)

    return {
        "name": record["name"],
        "fov_diameter": record["fov_diameter"],
        "image": tf.io.decode_png(record["image"], channels=3),
        "clahe": tf.io.decode_png(record["clahe"], channels=3),
        "label": mask("label"),
        "fov": mask("fov"),
        "tube": mask("tube"),
        "id_mask": tf.reshape(
            tf.io.decode_raw(record["id_mask"], tf.int32, little_endian=True), [height, width]
        ),
    }


def shard_paths(out_dir: str | Path, split: str, count: int) -> list[Path]:
    return [Path(out_dir) / f"{split}-{i:05d}-of-{count:05d}.tfrecord.gz" for i in range(count)]


def write_dataset(
    specs: Sequence[Any],
    out_dir: str | Path,
    *,
    dataset: str,
    split: str,
    workers: int = 1,
    images_per_shard: int = DEFAULT_IMAGES_PER_SHARD,
    reference: str = "authors",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Prepare every sample of `specs` into GZIP TFRecord shards and a manifest.

    Resumable: a shard that holds exactly the requested images, unchanged and
    intact, is kept and its images are not recomputed; any other is prepared
    again with a warning saying why. Returns the manifest. Raises PrepareError
    (naming the image or folder), OutputError for an unwritable `out_dir` and
    FolderLockedError while another process writes it (`keras_vessel.locks`).
    """
    if not specs:
        raise PrepareError(f"no images to prepare for dataset {dataset!r}, split {split!r}")
    if workers < 1:
        raise PrepareError(f"workers must be at least 1, got {workers}")
    if reference not in ("authors", "complete"):
        raise PrepareError(f"reference must be 'authors' or 'complete', got {reference!r}")
    with removed_if_failed(out_dir):  # nothing was written: leave no empty folder behind
        ensure_writable_dir(out_dir, what="the prepared-data folder")
        with folder_lock(out_dir, what="the prepared-data folder"):  # one writer; released before the clean-up
            return _write_dataset(specs, Path(out_dir), dataset=dataset, split=split, workers=workers,
                                  images_per_shard=images_per_shard, reference=reference,
                                  show_progress=show_progress)


def _write_dataset(specs: Sequence[Any], out_dir: Path, *, dataset: str, split: str, workers: int,
                   images_per_shard: int, reference: str, show_progress: bool) -> dict[str, Any]:
    import tensorflow as tf

    manifest_path = out_dir / MANIFEST
    if manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text()).get("id_mask_reference", reference)
        except json.JSONDecodeError:
            previous = reference  # a damaged manifest is simply written again
        if previous != reference:
            raise PrepareError(
                f"{out_dir} was prepared with reference={previous!r}, not {reference!r}; "
                "use another --out folder or delete this one"
            )
    groups = [specs[i : i + images_per_shard] for i in range(0, len(specs), images_per_shard)]
    paths = shard_paths(out_dir, split, len(groups))
    fingerprints = {spec.name: spec.fingerprint() for spec in specs}
    sidecars: dict[int, dict[str, Any]] = {}
    todo: list[tuple[int, Any]] = []
    for index, (group, path) in enumerate(zip(groups, paths)):
        problem = _reusable(path, [(spec.name, fingerprints[spec.name]) for spec in group])
        if problem is None:
            sidecars[index] = json.loads(_sidecar(path).read_text())
        else:
            if problem != "missing":
                logger.warning("%s: %s; preparing it again", path, problem)
            todo.extend((index, spec) for spec in group)
    if sidecars:
        logger.info("%d of %d shards already complete in %s", len(sidecars), len(paths), out_dir)

    pending: dict[int, dict[str, EncodedImage]] = {}

    def finish(index: int, spec_name: str, encoded: EncodedImage) -> None:
        pending.setdefault(index, {})[spec_name] = with_fov_diameter(encoded)
        group = groups[index]
        if len(pending[index]) == len(group):
            done = pending.pop(index)
            images = [done[spec.name] for spec in group]
            with atomic_path(paths[index]) as temp:
                with tf.io.TFRecordWriter(str(temp), options="GZIP") as writer:
                    for image in images:
                        writer.write(serialize(image))
                _verify_readable(temp, len(images), shown=paths[index])
            sidecars[index] = {
                "images": [dict(image.summary(), fingerprint=fingerprints[image.name]) for image in images],
                "sha256": file_sha256(paths[index]),
            }
            write_json_atomic(_sidecar(paths[index]), sidecars[index])

    for index, spec, encoded in progress(
        _map_prepare(todo, workers, reference), total=len(todo), label=f"prepare {dataset}/{split}",
        enabled=show_progress,
    ):
        finish(index, spec.name, encoded)

    images = [image for index in range(len(groups)) for image in sidecars[index]["images"]]
    unlabelled = [image["name"] for image in images if image["vessel_fraction"] == 0.0]
    if unlabelled:
        shown = ", ".join(unlabelled[:5]) + (", ..." if len(unlabelled) > 5 else "")
        logger.warning("%d of %d labels mark no vessel inside their field of view (%s): trained on, they teach "
                       "that there are none; check that their vessels are white on black, or leave them out",
                       len(unlabelled), len(images), shown)
    manifest = _manifest(images, dataset=dataset, split=split, shards=paths)
    manifest["shard_sha256"] = [sidecars[index]["sha256"] for index in range(len(groups))]
    manifest["id_mask_reference"] = reference
    write_json_atomic(manifest_path, manifest)
    return manifest


def _reusable(path: Path, wanted: list[tuple[str, str]]) -> str | None:
    """None if the shard at `path` holds exactly the `wanted` (name, fingerprint) images intact, else why not."""
    sidecar = _sidecar(path)
    if not path.exists() or not sidecar.exists():
        return "missing"
    try:
        recorded = json.loads(sidecar.read_text())
    except json.JSONDecodeError:
        return f"its sidecar {sidecar.name} is not valid JSON"
    images = recorded.get("images", [])
    if not all(SUMMARY_KEYS <= image.keys() for image in images) or "sha256" not in recorded:
        return "it was prepared by an older keras-vessel"
    held = [(image["name"], image.get("fingerprint")) for image in images]
    if held != wanted:
        names = [name for name, _ in wanted]
        if [name for name, _ in held] != names:
            return f"it holds images {[name for name, _ in held]}, not the requested {names}"
        return "its images' files or options changed since it was prepared"
    if file_sha256(path) != recorded["sha256"]:
        return "it is damaged (its checksum differs from the one recorded when it was written)"
    return None


def _verify_readable(path: Path, count: int, *, shown: Path) -> None:
    """Re-read a freshly written shard once: every record must parse."""
    import tensorflow as tf

    try:
        parsed = sum(1 for _ in tf.data.TFRecordDataset(str(path), compression_type="GZIP").map(parse_example))
    except tf.errors.OpError as error:
        raise PrepareError(f"{shown} could not be read back after writing ({error.message}); "
                           "check the disk and run prepare again") from None
    if parsed != count:
        raise PrepareError(f"{shown} holds {parsed} records after writing, expected {count}; run prepare again")


def verify_shards(records_dir: str | Path) -> None:
    """Check every shard of a prepared folder against the checksum in its manifest.

    Raises PrepareError naming the first damaged shard and how to redo it;
    training calls this before its first step.
    """
    records_dir = Path(records_dir)
    manifest = read_manifest(records_dir)
    for name, expected in zip(manifest["shards"], manifest.get("shard_sha256", [])):
        if file_sha256(records_dir / name) != expected:
            raise PrepareError(
                f"{records_dir / name} is damaged: its checksum differs from the one in {records_dir / MANIFEST}; "
                f"run the same `keras-vessel prepare ... --out {records_dir}` command again to redo it"
            )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def measure_sample(spec: Any) -> object | None:
    """What loading `spec` needs of TensorFlow, computed here: its ``measure()`` (`SampleSpec.measure`),
    or None when it has none. A failure is a PrepareError naming the image, as in `prepare_sample`."""
    measure = getattr(spec, "measure", None)  # benchmarks pass objects with `name` and `load` only
    return None if measure is None else _explained(spec, measure)


def _map_prepare(todo: list[tuple[int, Any]], workers: int, reference: str):
    """Yield (shard index, spec, EncodedImage: `prepare_encoded`), in parallel processes when workers > 1.

    Each spec is measured here (`measure_sample`: the TensorFlow part of loading it), just before it is
    prepared, so that the workers import no TensorFlow and measuring overlaps with their work.
    """
    measured = ((spec, measure_sample(spec)) for _, spec in todo)
    if workers == 1 or len(todo) <= 1:
        for (index, spec), item in zip(todo, measured):
            yield index, spec, _prepare_or_explain(item, reference)
        return
    prepare = functools.partial(_prepare_or_explain, reference=reference)
    for position, prepared in numpy_map(prepare, measured, workers=min(workers, len(todo))):
        index, spec = todo[position]
        yield index, spec, prepared


def _prepare_or_explain(item: tuple[Any, object | None], reference: str) -> EncodedImage:
    spec, measured = item
    return _explained(spec, functools.partial(prepare_encoded, spec, reference=reference, measured=measured))


def _explained(spec: Any, call):
    """``call()``, a failure other than a ValueError (which names its file) turned into a PrepareError that
    names the image."""
    try:
        return call()
    except ValueError:
        raise
    except Exception as error:  # turn a deep failure into one that names the image
        raise PrepareError(f"preparing {spec.name!r} failed: {type(error).__name__}: {error}") from error


def _manifest(images: list[dict[str, Any]], *, dataset: str, split: str, shards: list[Path]) -> dict[str, Any]:
    pixels = sum(image["fov_pixels"] for image in images)

    def mean_std(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        total = np.sum([image[f"{prefix}_sum"] for image in images], axis=0)
        squares = np.sum([image[f"{prefix}_sq_sum"] for image in images], axis=0)
        mean = total / max(pixels, 1)
        return mean, np.sqrt(np.maximum(squares / max(pixels, 1) - mean * mean, 1e-12))

    rgb_mean, rgb_std = mean_std("rgb")
    grey_mean, grey_std = mean_std("grey")
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "split": split,
        "shards": [path.name for path in shards],
        "images": [
            {key: image[key] for key in ("name", "height", "width", "fov_diameter", "segments", "vessel_fraction",
                                         "fov_fraction")}
            for image in images
        ],
        # intensity statistics inside the FOV, on 0-255, for the model's normalisation layer
        "statistics": {
            "green_mean": float(rgb_mean[1]),
            "green_std": float(rgb_std[1]),
            "grey_mean": float(grey_mean),
            "grey_std": float(grey_std),
            "rgb_mean": rgb_mean.tolist(),
            "rgb_std": rgb_std.tolist(),
        },
        "created_with": {"python": platform.python_version(), "numpy": np.__version__},
    }


def read_manifest(records_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared folder, checked against the shards on disk."""
    records_dir = Path(records_dir)
    path = records_dir / MANIFEST
    if not path.is_file():
        raise PrepareError(
            f"{path} not found: {records_dir} is not a prepared folder; "
            "run `keras-vessel prepare ... --out DIR` first"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PrepareError(f"{path} is not valid JSON ({error}); delete it and re-run prepare") from error
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise PrepareError(
            f"{path} has schema version {manifest.get('schema_version')}, this keras-vessel reads "
            f"{SCHEMA_VERSION}; re-run prepare"
        )
    missing = [name for name in manifest["shards"] if not (records_dir / name).is_file()]
    if missing:
        raise PrepareError(f"{records_dir}: shards listed in the manifest are missing: {', '.join(missing)}")
    if not manifest["images"]:
        raise PrepareError(f"{path} lists no images; re-run prepare on a non-empty split")
    return manifest


def combined_manifest(records_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """One manifest for several prepared folders trained on together.

    Images are listed in folder order, the dataset names joined with "+", and
    the intensity statistics pooled over all FOV pixels (each folder weighted
    by its FOV pixel count), as if the folders had been prepared as one.
    """
    manifests = [read_manifest(folder) for folder in records_dirs]
    if len(manifests) == 1:
        return manifests[0]
    weights = np.array([sum(image["fov_fraction"] * image["height"] * image["width"] for image in m["images"])
                        for m in manifests])
    weights = weights / weights.sum()
    statistics: dict[str, Any] = {}
    for key in ("green", "grey", "rgb"):
        means = np.array([m["statistics"][f"{key}_mean"] for m in manifests], dtype=np.float64)
        stds = np.array([m["statistics"][f"{key}_std"] for m in manifests], dtype=np.float64)
        shape = (-1,) + (1,) * (means.ndim - 1)
        mean = (weights.reshape(shape) * means).sum(axis=0)
        second = (weights.reshape(shape) * (stds**2 + means**2)).sum(axis=0)
        std = np.sqrt(np.maximum(second - mean**2, 1e-12))
        statistics[f"{key}_mean"], statistics[f"{key}_std"] = mean.tolist(), std.tolist()
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": "+".join(m["dataset"] for m in manifests),
        "split": "+".join(dict.fromkeys(m["split"] for m in manifests)),
        "shards": [str(Path(folder) / name) for folder, m in zip(records_dirs, manifests) for name in m["shards"]],
        "images": [image for m in manifests for image in m["images"]],
        "statistics": statistics,
    }


def record_files(records_dir: str | Path) -> list[str]:
    """The shard files of a prepared folder, in manifest order."""
    manifest = read_manifest(records_dir)
    return [str(Path(records_dir) / name) for name in manifest["shards"]]


def read_records(records_dir: str | Path):
    """A `tf.data.Dataset` of parsed full images (`parse_example`), in shard order."""
    import tensorflow as tf

    files = record_files(records_dir)
    return tf.data.TFRecordDataset(files, compression_type="GZIP").map(parse_example)


def read_samples(records_dirs: str | Path | Sequence[str | Path],
                 names: Sequence[str] | None = None) -> list[Any]:
    """Prepared images of one folder or several back as `Sample`s (image, label, FOV), e.g. to pick a threshold."""
    from keras_vessel.data.datasets import Sample

    folders = [records_dirs] if isinstance(records_dirs, (str, Path)) else list(records_dirs)
    records = [record for folder in folders for record in read_records(folder)]
    samples = []
    for record in records:
        name = record["name"].numpy().decode("utf-8")
        if names is None or name in names:
            samples.append(Sample(name=name, image=record["image"].numpy(),
                                  label=record["label"].numpy() > 0, fov=record["fov"].numpy() > 0))
    return samples
