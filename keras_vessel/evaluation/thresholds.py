"""Thresholds: how a probability map becomes a vessel mask, and where the training threshold is kept.

A threshold is a number in (0, 1) or "otsu" (per image, inside the FOV)
(`parse_threshold`). The honest number is the accuracy-optimal threshold on
the TRAINING images (`choose_training_threshold`; METHOD.md section 5), stored
beside the model as ``threshold.json`` (``threshold_tta_<mode>.json`` for
test-time augmentation, ``threshold_multi.json`` for fused resolutions,
`threshold_path`) by `save_threshold` and read by `load_threshold`.
`choose_run_threshold` does this for a finished training run (what
`keras-vessel train` runs after training), at each of `THRESHOLD_SCALES` the
run was trained for (`run_threshold_scales`), and stores them with
`store_run_thresholds` (as `keras-vessel finetune` stores its own). `Threshold`
carries a value with the rule that produced it, so reports never show a number
out of context.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keras_vessel.data import scaling
from keras_vessel.data.scaling import check_scale, scale_record
from keras_vessel.evaluation import metrics
from keras_vessel.io import other_model_beside, write_json_atomic
from keras_vessel.models.inference import check_tta, load_inference_model, predict_probability
from keras_vessel.progress import progress as progress_bar

__all__ = [
    "IMAGES_LEFT_OUT_RULE",
    "LEAVE_ONE_OUT_MIN_IMAGES",
    "OWN_IMAGES_RULE",
    "ImagesThreshold",
    "THRESHOLD_FILENAME",
    "THRESHOLD_SCALES",
    "TRAINING_RULE",
    "CAMERAS_RULE",
    "Threshold",
    "camera_thresholds",
    "choose_run_threshold",
    "choose_training_threshold",
    "finished_run_folder",
    "leave_one_image_out_threshold",
    "load_sample",
    "load_threshold",
    "parse_threshold",
    "run_threshold_scales",
    "run_training_samples",
    "save_threshold",
    "store_run_thresholds",
    "threshold_key",
    "threshold_path",
    "threshold_paths",
    "threshold_scale",
    "threshold_scales",
    "training_score_counts",
    "unfinished_run",
]

THRESHOLD_FILENAME = "threshold.json"
# The scales a threshold is chosen at (`threshold_scale`): the model's own, and fused resolutions.
THRESHOLD_SCALES = ("auto", "multi")
TRAINING_RULE = "accuracy-optimal threshold chosen on the training images (pooled FOV accuracy)"
# The threshold of a run of several prepared folders (cameras): rule p1 (docs/notebook, entry p) chose the mean of
# the cameras' own thresholds over the pooled one on the leave-one-camera-out protocol.
CAMERAS_RULE = ("mean of the training cameras' own accuracy-optimal thresholds (each prepared folder one camera, "
                "each weighing the same)")
# The threshold of a model fine-tuned on a few photographs (`leave_one_image_out_threshold`).
LEAVE_ONE_OUT_MIN_IMAGES = 3
IMAGES_LEFT_OUT_RULE = ("median over the {n} photographs of the accuracy-optimal threshold on the other photographs' "
                        "pooled FOV pixels (leave-one-image-out threshold choice; the model was fine-tuned on all {n})")
OWN_IMAGES_RULE = ("accuracy-optimal threshold on the fine-tuning photograph{s} themselves (pooled FOV accuracy; "
                   "fewer than 3 photographs: none can be left out, so it is chosen on pixels the model trained on)")


@dataclass(frozen=True)
class Threshold:
    """A threshold (a number in (0, 1) or "otsu") and the rule that produced it, for reports.

    ``multi``, when given, is the threshold of the images run at fused resolutions under ``scale="adaptive"``
    (`keras_vessel.models.inference.ScaleChoice.mode`), ``value`` that of the others (`for_image`).
    """

    value: float | str
    rule: str
    # a training threshold of several cameras: what each would choose alone (`camera_thresholds`)
    cameras: Mapping[str, Any] | None = None
    multi: float | str | None = None

    @classmethod
    def given(cls, value: str | float, rule: str | None = None) -> "Threshold":
        """A threshold given as a value (`parse_threshold`), with its rule spelled out: `rule`, how a number
        was obtained (spelled ``"RULE (t = value)"``), or else a fixed threshold."""
        value = parse_threshold(value)
        if value == "otsu":
            return cls(value, "per-image Otsu threshold of the probabilities inside the FOV")
        if rule:
            return cls(value, f"{rule} (t = {value:.6g})")
        return cls(value, f"fixed threshold t = {value:g}")

    @classmethod
    def stored(cls, model_path: str | Path, *, heads: str | None = None, tta: str = "none",
               scale: str | float = "auto") -> "Threshold":
        """The training threshold stored beside a model for `tta` and `scale` (`load_threshold`); for
        ``"adaptive"`` both, each for the images run at its scale (`threshold_scales`)."""
        if check_scale(scale) != "adaptive":
            payload = load_threshold(model_path, heads=heads, tta=tta, scale=scale)
            return cls.given(payload["threshold"], payload["rule"])
        single, fused = (load_threshold(model_path, heads=heads, tta=tta, scale=mode) for mode in THRESHOLD_SCALES)
        return cls.per_mode(single["threshold"], fused["threshold"], single["rule"], fused["rule"])

    @classmethod
    def per_mode(cls, single: float, fused: float, single_rule: str, fused_rule: str) -> "Threshold":
        """The threshold of ``scale="adaptive"``: `single` for the images run at one resolution, `fused` for
        those run at fused ones, each with its rule."""
        single, fused = parse_threshold(single), parse_threshold(fused)
        rule = (f"per image, by the resolutions it ran at: one, {single_rule} (t = {single:.6g}); fused (field of "
                f"view at least {scaling.MULTI_SCALE_FROM_FOV:g} px), {fused_rule} (t = {fused:.6g})")
        return cls(single, rule, multi=fused)

    def for_image(self, prob: np.ndarray, fov: np.ndarray, mode: str = "auto") -> float:
        """The number to apply to one image's probabilities (Otsu's is computed inside its FOV), run at `mode`
        (`keras_vessel.models.inference.ScaleChoice.mode`: ``multi`` applies where it is given)."""
        value = self.multi if mode == "multi" and self.multi is not None else self.value
        return metrics.otsu_threshold(prob, fov) if value == "otsu" else float(value)


def load_sample(sample):
    """Accept a `Sample` or a `SampleSpec` (anything with ``load()``)."""
    return sample.load() if hasattr(sample, "load") and not hasattr(sample, "image") else sample


def parse_threshold(value: str | float) -> float | str:
    """Normalise a threshold option: a number in (0, 1) or the string "otsu".

    Strings holding a number ("0.5") are converted, so the CLI and Python
    callers share one rule:

    >>> parse_threshold(" 0.47"), parse_threshold("OTSU")
    (0.47, 'otsu')
    >>> parse_threshold(1)
    Traceback (most recent call last):
    ValueError: `threshold` must be a number in (0, 1) or 'otsu'; got 1.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "otsu":
            return "otsu"
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"`threshold` must be a number in (0, 1) or 'otsu'; got {value!r}."
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ValueError(f"`threshold` must be a number in (0, 1) or 'otsu'; got {value!r}.")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"`threshold` must be a number in (0, 1) or 'otsu'; got {value!r}.")
    return float(value)


def threshold_scale(scale: str | float) -> str:
    """The scale a stored threshold is chosen at for predictions at `scale` (a `check_scale` choice):
    ``"multi"`` for fused resolutions, whose averaged probabilities are softer than one resolution's and need
    their own threshold (notebook entry m, rule h7), else ``"auto"``: every other scale (``"auto"``,
    ``"1080px"``, a factor, ``"none"``) uses the threshold chosen at the model's own scale.

    ``"adaptive"`` has one per photograph: a ValueError here (`threshold_scales`).

    >>> threshold_scale("multi"), threshold_scale("1080 px")
    ('multi', 'auto')
    """
    scale = check_scale(scale)
    if scale == "adaptive":
        raise ValueError("`scale='adaptive'` masks each photograph at the threshold of the resolutions it ran at: "
                         "read them with `threshold_scales`")
    return "multi" if scale == "multi" else "auto"


def threshold_scales(scale: str | float) -> tuple[str, ...]:
    """The scales of the stored thresholds that predictions at `scale` use: both `THRESHOLD_SCALES` for
    ``"adaptive"`` (each photograph at the one of the resolutions it ran at), else `threshold_scale`'s one.

    >>> threshold_scales("adaptive"), threshold_scales("1080px")
    (('auto', 'multi'), ('auto',))
    """
    return THRESHOLD_SCALES if check_scale(scale) == "adaptive" else (threshold_scale(scale),)


def threshold_path(model_path: str | Path, tta: str = "none", scale: str | float = "auto") -> Path:
    """Where the training threshold of a `.keras` model for `tta` and `scale` is stored: beside it.

    Test-time augmentation and fused resolutions change the probabilities, hence the best threshold, so each
    `tta` mode and each `threshold_scale` has its own file: ``threshold.json``, ``threshold_tta_d4.json``,
    ``threshold_multi.json``, ``threshold_tta_d4_multi.json``.
    """
    check_tta(tta)
    parts = [THRESHOLD_FILENAME.removesuffix(".json")]
    if tta != "none":
        parts.append(f"tta_{tta}")
    if threshold_scale(scale) != "auto":
        parts.append(threshold_scale(scale))
    return Path(model_path).with_name("_".join(parts) + ".json")


def threshold_paths(model_path: str | Path) -> list[Path]:
    """Every file `threshold_path` may name beside `model_path` (each TTA mode at each threshold scale)."""
    from keras_vessel.models.inference import TTA_MODES

    return [threshold_path(model_path, tta, scale) for tta in TTA_MODES for scale in THRESHOLD_SCALES]


def save_threshold(
    model_path: str | Path,
    threshold: float,
    *,
    rule: str = TRAINING_RULE,
    heads: str | None = None,
    dataset: str | None = None,
    images: int | None = None,
    tta: str = "none",
    scale: str | float = "auto",
    cameras: Mapping[str, Any] | None = None,
) -> Path:
    """Store a threshold beside the model as `threshold_path` (of `tta` and `scale`); returns its path.

    `cameras` (`camera_thresholds`), when given, is recorded beside it for a model trained on several
    prepared folders: what each folder's images alone and each camera weighing the same would choose.

    `scale` records how the images were resampled when it was chosen
    (`keras_vessel.models.inference.predict_probability`; `keras_vessel.data.scaling.scale_record`:
    with its ``multiples`` for ``"multi"``), and decides the file: ``"multi"`` has its own.
    """
    threshold = parse_threshold(threshold)
    if not isinstance(threshold, float):
        raise ValueError(f"`threshold` must be a number to store; got {threshold!r}.")
    path = threshold_path(model_path, tta, scale)
    payload = {
        "threshold": threshold,
        "rule": rule,
        "model": Path(model_path).name,
        "heads": heads,
        "tta": tta,
        **scale_record(scale),
        "dataset": dataset,
        "images": images,
        **({"cameras": dict(cameras)} if cameras else {}),
    }
    write_json_atomic(path, payload)
    return path


def load_threshold(model_path: str | Path, *, heads: str | None = None, tta: str = "none",
                   scale: str | float = "auto") -> dict[str, Any]:
    """Read `threshold_path` (of `tta` and `scale`) beside the model: ``{"threshold": t, "rule": ..., ...}``.

    Raises FileNotFoundError saying how to create it, ValueError when malformed,
    when it records another model still beside it as its own (``"model"``),
    when the file records that it was chosen at another `threshold_scale` (or, fused, at other
    `keras_vessel.data.scaling.FUSION_MULTIPLES`), or,
    if `heads` is given, when it was computed for other heads (the fused
    probability, hence the best threshold, depends on them).
    """
    path = threshold_path(model_path, tta, scale)
    mode = threshold_scale(scale)
    flags = ("" if tta == "none" else f" --tta {tta}") + ("" if mode == "auto" else f" --scale {mode}")
    if not path.is_file():
        unfinished = unfinished_run(model_path) if tta == "none" else None
        if unfinished:
            raise FileNotFoundError(f"no training threshold for {model_path}: {unfinished}")
        raise FileNotFoundError(
            f"no training threshold for {model_path}{flags}: expected {path}. Create it with "
            f"`keras-vessel evaluate --threshold train --training-root ROOT{flags} ...` (computes the "
            f"accuracy-optimal threshold on the training split and saves it there), or in Python "
            f"with keras_vessel.evaluation.choose_training_threshold + save_threshold."
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        threshold = parse_threshold(payload["threshold"])
        if not isinstance(threshold, float):
            raise ValueError("not a number")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not a valid threshold file ({error}); expected JSON like "
            f'{{"threshold": 0.47, "rule": "..."}}.'
        ) from None
    owner = other_model_beside(path, model_path)
    if owner is not None:
        raise ValueError(
            f"{path} holds the threshold of {owner}, not of {model_path} (a threshold depends on the weights; "
            f"threshold files are kept beside their model under fixed names, one model per folder); put "
            f"{Path(model_path).name} in a folder of its own and choose its threshold there with "
            f"`keras-vessel evaluate --threshold train --training-root ROOT{flags} ...`, or pass --threshold NUMBER."
        )
    payload["threshold"] = threshold
    payload.setdefault("rule", TRAINING_RULE)
    chosen_at = payload.get("scale")
    if chosen_at is not None and _chosen_at(chosen_at) != mode:
        raise ValueError(
            f"{path} records a threshold chosen at --scale {chosen_at}, not for --scale {mode}; delete it and "
            f"run `keras-vessel evaluate --threshold train --training-root ROOT{flags} ...` to choose it again."
        )
    multiples = payload.get("multiples")
    fused_now = scale_record("multi")["multiples"]
    if mode == "multi" and multiples is not None and multiples != fused_now:
        raise ValueError(
            f"{path} records a threshold chosen on maps fused at {multiples} times the training diameter, not at "
            f"{fused_now} (keras_vessel.data.scaling.FUSION_MULTIPLES); delete it and run `keras-vessel evaluate "
            f"--threshold train --training-root ROOT{flags} ...` to choose it again."
        )
    stored = payload.get("heads")
    if heads is not None and stored is not None and stored != heads:
        raise ValueError(
            f"{path} holds the threshold for heads={stored!r}, not heads={heads!r}; use "
            f"--heads {stored} or recompute it for these heads (delete the file and run "
            f"`keras-vessel evaluate --threshold train --training-root ROOT --heads {heads}{flags} ...`)."
        )
    return payload


def _chosen_at(recorded: Any) -> str | None:
    """`threshold_scale` of a threshold file's recorded scale; None when it is not a valid scale."""
    try:
        return threshold_scale(recorded)
    except (ValueError, TypeError):
        return None


def finished_run_folder(model_path: str | Path) -> Path | None:
    """The run folder whose training `model_path` is (its ``model.keras``, run.json saying the run finished:
    ``completed`` or ``early_stopped``), or None (a model outside a run folder, or a run not finished).
    `choose_run_threshold` can choose such a model's thresholds on its own training images."""
    from keras_vessel.training import FINISHED_STATUSES

    run, info = _model_run(model_path)
    finished = run is not None and run.config_path.is_file() and info.get("status") in FINISHED_STATUSES
    return run.path if finished else None


def _model_run(model_path: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(the RunFolder whose model.keras `model_path` is, its run.json)``; ``(None, {})`` for a model outside
    a run folder or a run.json that cannot be read."""
    from keras_vessel.training import RunFolder

    run = RunFolder(Path(model_path).parent)
    if run.model_path.name != Path(model_path).name:
        return None, {}
    try:
        return run, run.read_info()
    except (OSError, ValueError):
        return None, {}


def unfinished_run(model_path: str | Path) -> str | None:
    """Why a training run's model has no threshold yet and what to do, or None.

    A sentence when `model_path` is the ``model.keras`` of a run folder whose run.json says the run did
    not finish (a status other than ``completed`` or ``early_stopped``: ``running``, ``interrupted``,
    ``failed``, ``nan``; it stopped before or while choosing its threshold); None for a finished run, for a
    model outside a run folder, or when run.json cannot be read.
    """
    from keras_vessel.training import FINISHED_STATUSES

    run, info = _model_run(model_path)
    status = info.get("status")
    if run is None or not status or status in FINISHED_STATUSES:
        return None
    return (f"its training run {run.path} did not finish (run.json says {status!r}); run its command again to "
            f"finish it (`{info.get('command') or 'keras-vessel train ... --output ' + str(run.path)}`): once "
            "training has ended, it only chooses the threshold")


def choose_training_threshold(
    inference_model,
    samples: Iterable,
    *,
    progress: bool = True,
    predict_options: Mapping[str, Any] | None = None,
) -> float:
    """The accuracy-optimal threshold over the FOV pixels of TRAINING `samples`.

    Store it with the model (`save_threshold`) and evaluate the test split with
    it: an honest alternative to tuning the threshold on the test images.
    Images are predicted one at a time and their pixels pooled in
    `metrics.ScoreCounts`, whose memory does not grow with the images; the
    threshold is a `metrics.SCORE_BINS` bin edge (see `ScoreCounts`).
    """
    counts = training_score_counts(inference_model, samples, progress=progress, predict_options=predict_options)
    return counts.accuracy_optimal_threshold()


def training_score_counts(
    inference_model,
    samples: Iterable,
    *,
    progress: bool = True,
    predict_options: Mapping[str, Any] | None = None,
) -> metrics.ScoreCounts:
    """The `metrics.ScoreCounts` of `inference_model`'s probabilities on `samples` (prepared images,
    `load_sample` items), predicted one at a time with `predict_options` (`predict_probability`'s).

    Raises ValueError for no samples.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("`samples` is empty; need at least one training image.")
    counts = metrics.ScoreCounts()
    scale = dict(predict_options or {}).get("scale", "auto")
    fused = isinstance(scale, str) and threshold_scale(scale) == "multi"
    label = "threshold at --scale multi" if fused else "threshold"
    for item in progress_bar(samples, label=label, enabled=progress):
        sample = load_sample(item)
        prob = predict_probability(inference_model, sample.image, fov=sample.fov, name=sample.name,
                                   **dict(predict_options or {}))
        counts.add(prob, sample.label, sample.fov)
    return counts


@dataclass(frozen=True)
class ImagesThreshold:
    """A threshold chosen on a few labelled images (`leave_one_image_out_threshold`).

    value : the threshold. rule : how it was chosen, for threshold.json and reports.
    left_out : per image, the threshold chosen without its pixels (None with fewer than
        `LEAVE_ONE_OUT_MIN_IMAGES` images).
    """

    value: float
    rule: str
    left_out: list[float] | None


def leave_one_image_out_threshold(probs, labels, fovs) -> ImagesThreshold:
    """The threshold of a model fine-tuned on these images, from its probabilities on them.

    With at least `LEAVE_ONE_OUT_MIN_IMAGES` images, image i's threshold t_i is the
    accuracy-optimal threshold (`metrics.accuracy_optimal_threshold`) on the pooled FOV pixels
    of the other images, and the result is the median of the t_i (`IMAGES_LEFT_OUT_RULE`): no
    image chooses its own threshold, and one odd image cannot pull it far. With fewer, the
    accuracy-optimal threshold on all of them (`OWN_IMAGES_RULE`). `probs`, `labels` and `fovs`
    are equally long lists of ``(H, W)`` maps (float, bool, bool); sizes may differ between images.

    >>> import numpy as np
    >>> probs = [np.array([[0.9, 0.2]]), np.array([[0.7, 0.4]]), np.array([[0.8, 0.1]])]
    >>> labels = [np.array([[True, False]])] * 3
    >>> chosen = leave_one_image_out_threshold(probs, labels, [None] * 3)
    >>> [round(t, 3) for t in chosen.left_out], round(chosen.value, 3)
    ([0.55, 0.5, 0.55], 0.55)
    """
    probs, labels, fovs = list(probs), list(labels), list(fovs)
    if not probs or not len(probs) == len(labels) == len(fovs):
        raise ValueError(f"`probs`, `labels` and `fovs` must be equally long, non-empty lists; got "
                         f"{len(probs)}, {len(labels)} and {len(fovs)}.")
    count = len(probs)
    fovs = [np.ones(np.shape(prob), bool) if fov is None else fov for prob, fov in zip(probs, fovs)]
    if count < LEAVE_ONE_OUT_MIN_IMAGES:
        value = metrics.accuracy_optimal_threshold(probs, labels, fovs)
        return ImagesThreshold(value, OWN_IMAGES_RULE.format(s="" if count == 1 else "s"), None)
    left_out = []
    for i in range(count):
        others = [j for j in range(count) if j != i]
        left_out.append(metrics.accuracy_optimal_threshold([probs[j] for j in others], [labels[j] for j in others],
                                                           [fovs[j] for j in others]))
    return ImagesThreshold(float(np.median(left_out)), IMAGES_LEFT_OUT_RULE.format(n=count), left_out)


def run_threshold_scales(config) -> tuple[str, ...]:
    """The `THRESHOLD_SCALES` a run's thresholds are chosen at, from its `keras_vessel.config.RunConfig`.

    All of them for a run trained at a fixed field-of-view diameter (``data.fov_diameter``: the diameter
    ``--scale multi`` takes multiples of); only the model's own (``"auto"``) for a run trained at each
    image's own scale, which records only its images' median diameter and has no working resolution to
    take multiples of (`predict --scale multi` then says so).
    """
    return THRESHOLD_SCALES if config.data.fov_diameter else THRESHOLD_SCALES[:1]


def threshold_key(scale: str | float) -> str:
    """The key of the threshold chosen at `threshold_scale(scale)` in run.json and in reports.

    >>> threshold_key("auto"), threshold_key("multi")
    ('threshold', 'threshold_multi')
    """
    mode = threshold_scale(scale)
    return "threshold" if mode == "auto" else f"threshold_{mode}"


def store_run_thresholds(run, chosen: Mapping[str, Any], *, heads: str | None, dataset: str | None,
                         images: int, tta: str = "none") -> dict[str, float]:
    """Store a run's chosen thresholds beside its model and record them in its run.json; returns their values.

    `run` is a `keras_vessel.training.RunFolder`; `chosen` maps each threshold scale (a
    `run_threshold_scales` entry) to what was chosen there, anything with ``value`` and ``rule``
    (`Threshold`, `ImagesThreshold`). Call it once all are chosen: each is saved as its `threshold_path`
    (`save_threshold`, atomically), then run.json records every value under its `threshold_key`
    (followed by ``_tta_<mode>`` for thresholds of test-time augmentation `tta`).
    Returns ``{threshold scale: value}`` in the order of `chosen`.
    """
    for scale, threshold in chosen.items():
        save_threshold(run.model_path, threshold.value, rule=threshold.rule, heads=heads, dataset=dataset,
                       images=images, scale=scale, tta=tta, cameras=getattr(threshold, "cameras", None))
    values = {scale: float(threshold.value) for scale, threshold in chosen.items()}
    suffix = "" if tta == "none" else f"_tta_{tta}"
    run.update(**{threshold_key(scale) + suffix: value for scale, value in values.items()})
    return values


def run_training_samples(run, config, *, by_folder: bool = False) -> list | dict[str, list]:
    """The samples a training run's thresholds are chosen on: the prepared training images of `config`
    (the run's resolved `keras_vessel.config.RunConfig`), without the held-out group for a cross-validation
    fold (its names from `run`'s run.json; `run` a `keras_vessel.training.RunFolder`).

    A list, or with `by_folder` ``{records folder: its samples}`` in the config's order (a folder left
    without samples maps to an empty list).
    """
    from keras_vessel.config import records_folders
    from keras_vessel.data.tfrecords import read_samples

    names = run.read_info().get("training_images") if config.data.folds else None
    folders = records_folders(config.data)
    if by_folder:
        return {str(folder): read_samples([folder], names=names) for folder in folders}
    return read_samples(folders, names=names)


def choose_run_threshold(run_dir: str | Path, *, progress: bool = True, tta: str = "none",
                         scales: Sequence[str] | None = None) -> dict[str, float]:
    """Choose and store the thresholds of a finished training run on its training images.

    Reads the run's config.yaml and run.json (`keras_vessel.training.RunFolder`):
    the accuracy-optimal threshold over its prepared training images (for a
    cross-validation fold, without the held-out group, which stands in for
    test images: `run_training_samples`) at each of `run_threshold_scales`:
    the model's own scale, saved as ``threshold.json`` beside ``model.keras``
    (run.json's ``threshold``), and, for a run trained at a fixed field-of-view
    diameter (``data.fov_diameter``, the multiples ``--scale multi`` runs at),
    the same at ``--scale multi`` as ``threshold_multi.json`` (run.json's
    ``threshold_multi``); nothing is stored before all are chosen
    (`store_run_thresholds`). A run of several prepared folders (cameras)
    stores the mean of each folder's own accuracy-optimal threshold instead
    (`CAMERAS_RULE`): the pooled one is set by the camera with the most pixels;
    each file records every candidate (`camera_thresholds`, the pooled one
    included). With `tta` (``"flip"``, ``"d4"``), the same on the maps of that
    test-time augmentation, saved as its `threshold_path` (``threshold_tta_d4.json``,
    ...; run.json's ``threshold_tta_d4``, ...), as `predict --tta` reads them; `train`
    chooses only the default, ``"none"``. `scales`: only these of `run_threshold_scales` (what
    ``evaluate --tta d4`` at one scale needs: ``"multi"`` with ``"d4"`` is 24 network passes per photograph).
    Returns ``{threshold scale: value}``: ``{"auto": t}`` or ``{"auto": t, "multi": t_multi}``.
    """
    from keras_vessel.config import load_config, records_folders
    from keras_vessel.data.tfrecords import combined_manifest
    from keras_vessel.training import RunFolder

    check_tta(tta)
    run = RunFolder(run_dir)
    config = load_config(run.config_path)
    folders = records_folders(config.data)
    by_folder = run_training_samples(run, config, by_folder=True)
    model = load_inference_model(run.model_path, heads=config.train.heads)
    chosen = {}
    for scale in run_threshold_scales(config):
        if scales is not None and scale not in scales:
            continue
        options = {"scale": scale, "tta": tta}
        counts = {folder: training_score_counts(model, samples, progress=progress, predict_options=options)
                  for folder, samples in by_folder.items() if samples}
        pooled = metrics.ScoreCounts()
        for group in counts.values():
            pooled.merge(group)
        if len(counts) > 1:
            cameras = {"pooled": pooled.accuracy_optimal_threshold(), **camera_thresholds(counts)}
            chosen[scale] = Threshold(cameras["mean_of_cameras"], CAMERAS_RULE, cameras)
        else:
            chosen[scale] = Threshold(pooled.accuracy_optimal_threshold(), TRAINING_RULE)
    dataset = combined_manifest(folders)["dataset"]
    images = sum(len(samples) for samples in by_folder.values())
    return store_run_thresholds(run, chosen, heads=config.train.heads, dataset=dataset, images=images, tta=tta)


def camera_thresholds(counts: Mapping[str, metrics.ScoreCounts]) -> dict[str, Any]:
    """What a model's training images of several cameras would choose, camera by camera.

    `counts` maps each camera (a prepared folder) to the `metrics.ScoreCounts` of its training images.
    Returns ``{"per_camera": {camera: its own accuracy-optimal threshold}, "mean_of_cameras": their mean,
    "camera_balanced": metrics.camera_balanced_threshold (the mean of the cameras' accuracies maximised),
    "images": {camera: images}}``: the candidates of a threshold in which each camera weighs the same
    (the pooled threshold weighs each pixel the same; docs/METHOD_NOTES.md).
    """
    own = {camera: group.accuracy_optimal_threshold() for camera, group in counts.items()}
    return {
        "per_camera": own,
        "mean_of_cameras": float(np.mean(list(own.values()))),
        "camera_balanced": metrics.camera_balanced_threshold(list(counts.values())),
        "images": {camera: group.images for camera, group in counts.items()},
    }
