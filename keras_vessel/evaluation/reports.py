"""Evaluate an inference model on a dataset split and write the reports.

The protocol is the one of METHOD.md section 5, stated at the top of every
report so that numbers are never read out of context: metrics inside the FOV
only, per image then averaged; AUC pooled over all test FOV pixels (matches
the authors) and the per-image mean AUC; the threshold rule is named (0.5,
per-image Otsu, or the accuracy-optimal threshold chosen on TRAINING images
and stored beside the model in ``threshold.json``; never tuned on the test set).

Outputs in `output_dir` (each written atomically, temp file + rename):
``metrics.json``, ``metrics.md``, ``per_image.csv``, ``roc.png`` and
``overlays/<name>.png``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keras_vessel.evaluation import metrics
from keras_vessel.data import scaling
from keras_vessel.data.scaling import FUSION_MULTIPLES, check_scale, scale_record, working_diameter
from keras_vessel.evaluation.thresholds import Threshold, load_sample
from keras_vessel.models.inference import inference_scale, model_working_diameters, predict_probability
from keras_vessel.io import atomic_path, ensure_writable_dir, write_json_atomic, write_png_atomic, write_text_atomic
from keras_vessel.progress import progress as progress_bar

__all__ = ["OVERLAY_COLOURS", "Scores", "evaluate", "overlay_image", "score", "write_reports"]

log = logging.getLogger(__name__)


# Overlay colours (RGB). Thin-vessel misses get their own bright colour so that
# the failure the segment-level loss targets is visible at a glance.
OVERLAY_COLOURS: dict[str, tuple[int, int, int]] = {
    "true_positive": (255, 255, 255),
    "false_positive": (230, 40, 40),
    "false_negative_thick": (40, 90, 255),
    "false_negative_thin": (255, 220, 0),
    "true_negative": (0, 0, 0),
    "outside_fov": (48, 48, 48),
}

# Columns of the summary table: (key in the per-image rows, header).
_SUMMARY_COLUMNS = (
    ("Se", "Se"),
    ("Sp", "Sp"),
    ("Acc", "Acc"),
    ("precision", "Pr"),
    ("F1", "F1"),
    ("MCC", "MCC"),
    ("AUC", "AUC (mean/img)"),
    ("Se_thin", "Se thin"),
    ("Se_thick", "Se thick"),
    ("clDice", "clDice"),
    ("betti0_error", "Betti-0 err"),
    ("betti1_error", "Betti-1 err"),
    ("CAL", "CAL"),
)
_CSV_COLUMNS = (
    "name", "threshold", "scale", "TP", "FP", "TN", "FN", "Se", "Sp", "Acc", "precision", "F1", "MCC",
    "AUC", "Se_thin", "Se_thick", "n_thin", "n_thick", "clDice", "betti0_error",
    "betti1_error", "C", "A", "L", "CAL",
)  # fmt: skip


# ---------------------------------------------------------------------------
# per-image work


def overlay_image(
    binary: np.ndarray, label: np.ndarray, fov: np.ndarray, thickness: np.ndarray, *, thin_max_width: float
) -> np.ndarray:
    """``(H, W, 3)`` uint8 error map: TP white, FP red, FN blue (thick) / yellow (thin)."""
    colours = OVERLAY_COLOURS
    out = np.empty(binary.shape + (3,), dtype=np.uint8)
    out[:] = colours["true_negative"]
    thin = np.isfinite(thickness) & (thickness <= thin_max_width)
    out[binary & label] = colours["true_positive"]
    out[binary & ~label] = colours["false_positive"]
    out[~binary & label & ~thin] = colours["false_negative_thick"]
    out[~binary & label & thin] = colours["false_negative_thin"]
    out[~fov] = colours["outside_fov"]
    return out


def _score_binary(
    binary: np.ndarray, label: np.ndarray, fov: np.ndarray, thickness: np.ndarray, thin_max_width: float
) -> dict[str, float]:
    row: dict[str, float] = {}
    row.update(metrics.confusion_metrics(binary, label, fov))
    row.update(
        metrics.thin_thick_sensitivity(
            binary, label, fov, thickness=thickness, thin_max_width=thin_max_width
        )
    )
    row.update(metrics.topology_metrics(binary, label, fov))
    return row


def _mean_std(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    values = np.array([float(r[key]) for r in rows if key in r and r[key] is not None], dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std())


def _summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    summary: dict[str, float] = {}
    for key, _ in _SUMMARY_COLUMNS:
        mean, std = _mean_std(rows, key)
        if not math.isnan(mean):
            summary[key] = mean
            summary[f"{key}_std"] = std
    return summary


# ---------------------------------------------------------------------------
# writers


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _fmt_metric(summary: Mapping[str, Any], key: str, suffix: str = "") -> str:
    # Betti errors are counts of components/holes: two decimals are plenty.
    return _fmt(summary.get(key + suffix), 2 if key.startswith("betti") else 4)


def _markdown(report: dict[str, Any]) -> str:
    protocol = report["protocol"]
    summary = report["summary"]
    lines = [
        f"# Evaluation: {protocol['dataset']} / {protocol['split']}",
        "",
        "## Protocol",
        "",
        f"- Model: `{protocol['model']}` (heads: {protocol['heads']})",
        f"- Data: {protocol['dataset']}, split `{protocol['split']}`, {protocol['images']} images, "
        "first observer as ground truth",
        "- Pixels: inside the field of view (FOV) only; every metric per image, then averaged",
        f"- Threshold: {protocol['threshold_rule']} (vessel where p >= t)",
        f"- Scale: {_scale_rule(protocol['scale'], protocol.get('model_fov_diameter', 'not recorded'))}",
        "- AUC: pooled over all FOV pixels of all images (the authors' protocol); "
        "the per-image mean AUC is in the table",
        f"- Thin vessels: ground-truth segment thickness <= {protocol['thin_max_width']:g} px "
        "(segments.thickness_map; uncovered vessel pixels take the nearest segment's thickness)",
        "- Topology: clDice; Betti errors with 8-connected vessels and 4-connected holes; "
        "CAL with alpha = beta = 2",
        "",
        "## Results",
        "",
        f"Pooled AUC: **{_fmt(summary.get('AUC_pooled'))}**; "
        f"per-image mean AUC: {_fmt(summary.get('AUC'))}",
        "",
        "| | " + " | ".join(header for _, header in _SUMMARY_COLUMNS) + " |",
        "|---|" + "---|" * len(_SUMMARY_COLUMNS),
        "| model (mean) | " + " | ".join(_fmt_metric(summary, k) for k, _ in _SUMMARY_COLUMNS) + " |",
        "| model (std) | "
        + " | ".join(_fmt_metric(summary, k, "_std") for k, _ in _SUMMARY_COLUMNS)
        + " |",
    ]
    second = report.get("second_observer")
    if second:
        lines.append(
            "| second observer (human) | "
            + " | ".join(_fmt_metric(second["summary"], k) for k, _ in _SUMMARY_COLUMNS)
            + " |"
        )
    lines += [
        "",
        "## Per image",
        "",
        "| image | t | Se | Sp | Acc | Pr | F1 | AUC | Se thin | Se thick | clDice | CAL |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["per_image"]:
        keys = ("threshold", "Se", "Sp", "Acc", "precision", "F1", "AUC", "Se_thin", "Se_thick", "clDice", "CAL")
        lines.append(f"| {row['name']} | " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
    lines += [
        "",
        "Overlays (`overlays/`): TP white, FP red, FN on thick vessels blue, FN on thin "
        "vessels yellow, outside the FOV grey.",
        "",
    ]
    return "\n".join(lines)


def _scale_rule(scale: str | float, model_diameter: Any = "not recorded") -> str:
    """How the report's images were scaled, in words; `model_diameter` is the model's training FOV diameter
    (None: it records none, so "auto" and "adaptive" ran every image at its own grid)."""
    widths = ", ".join(f"{multiple:g}x" for multiple in FUSION_MULTIPLES)
    if scale in ("auto", "adaptive") and model_diameter is None:
        return "each image at its own grid (the model records no training field-of-view diameter)"
    if scale == "multi":
        return (f"each image run at fields of view {widths} as wide as the model's training images (factors per "
                "image in per_image.csv), the probabilities resampled back to the labels' grid and averaged")
    if scale == "adaptive":
        return (f"each image whose field of view is at least {scaling.MULTI_SCALE_FROM_FOV:g} px across run at fields "
                f"of view {widths} as wide as the model's training images and the probabilities averaged, every "
                "other image at one as wide (factors per image in per_image.csv), resampled back to the labels' grid")
    if scale == "auto":
        return ("each image resampled so its field of view is as wide as the model's training images "
                "(factor per image in per_image.csv), probabilities resampled back to the labels' grid")
    if scale == "none":
        return "each image at its own grid"
    diameter = working_diameter(scale, None)  # the N of "Npx"
    if diameter is not None:
        return (f"each image resampled so its field of view is {diameter:g} px across (factor per image in "
                "per_image.csv), probabilities resampled back to the labels' grid")
    return f"every image resampled by {float(scale):g}, probabilities resampled back"


def _cell(value: Any) -> Any:
    """A per_image.csv cell: a list (``"multi"``'s factors) as its numbers separated by spaces."""
    return " ".join(f"{float(v):.6g}" for v in value) if isinstance(value, list) else value


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k, "")) for k in _CSV_COLUMNS})
    return buffer.getvalue()


def _write_roc(path: Path, counts: metrics.ScoreCounts, auc: float, second: dict | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fpr, tpr, _ = counts.roc_curve(max_points=2000)
    figure = Figure(figsize=(5, 5), dpi=100)
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, lw=1.5, label=f"model (pooled AUC {auc:.4f})")
    axes.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    if second:
        s = second["summary"]
        axes.plot(1 - s["Sp"], s["Se"], "o", c="red", label="second observer")
    axes.set(xlabel="1 - specificity (FOV pixels)", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1))
    axes.legend(loc="lower right")
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png")


# ---------------------------------------------------------------------------
# the evaluation


@dataclass
class Scores:
    """What `score` measured: per-image ``rows``, the second observer's rows (None unless every
    image has a second label) and the pooled `metrics.ScoreCounts` of all FOV pixels."""

    rows: list[dict[str, Any]]
    second_rows: list[dict[str, Any]] | None
    counts: metrics.ScoreCounts


def score(
    inference_model,
    samples: Iterable,
    *,
    threshold: Threshold,
    thin_max_width: float = 2.0,
    predict_options: Mapping[str, Any] | None = None,
    overlay_dir: Path | None = None,
    progress: bool = True,
) -> Scores:
    """Predict and score every sample, one at a time (memory bounded by one image).

    `overlay_dir`: write ``<name>.png`` error maps there as images are scored.
    """
    return score_thresholds(inference_model, samples, thresholds=[threshold], thin_max_width=thin_max_width,
                            predict_options=predict_options, overlay_dirs=[overlay_dir], progress=progress)[0]


def score_thresholds(
    inference_model,
    samples: Iterable,
    *,
    thresholds: Sequence[Threshold],
    thin_max_width: float = 2.0,
    predict_options: Mapping[str, Any] | None = None,
    overlay_dirs: Sequence[Path | None] | None = None,
    progress: bool = True,
) -> list[Scores]:
    """`score` at each of `thresholds`, each sample predicted once: one `Scores` per threshold, in order.

    What does not depend on the threshold (AUC, the pooled counts, the second observer's rows) is computed
    once and shared. `overlay_dirs`: one folder (or None) per threshold for its error maps.
    """
    thresholds = list(thresholds)
    overlay_dirs = list(overlay_dirs) if overlay_dirs is not None else [None] * len(thresholds)
    if not thresholds or len(overlay_dirs) != len(thresholds):
        raise ValueError(f"give one or more thresholds and as many overlay folders (or None); got "
                         f"{len(thresholds)} thresholds and {len(overlay_dirs)} folders.")
    counts = metrics.ScoreCounts()
    rows: list[list[dict[str, Any]]] = [[] for _ in thresholds]
    second_rows: list[dict[str, Any]] = []
    all_second = True
    for item in progress_bar(samples, label="evaluate", enabled=progress):
        sample = load_sample(item)
        options = dict(predict_options or {})
        choice = inference_scale(inference_model, sample.image, options.pop("scale", "auto"))
        if choice.fov is not None and not choice.fov.found:
            log.warning("%s: no field of view found in the image; scored at its own scale", sample.name)
        prob = predict_probability(inference_model, sample.image, fov=sample.fov, name=sample.name,
                                   scale=choice, **options)
        thickness = metrics.vessel_thickness(sample.label, sample.fov)
        scale = choice.factor if len(choice.factors) == 1 else list(choice.factors)  # "multi": each factor
        auc = metrics.roc_auc(prob, sample.label, sample.fov)
        for threshold, threshold_rows, overlay_dir in zip(thresholds, rows, overlay_dirs):
            t = threshold.for_image(prob, sample.fov, choice.mode)
            binary = prob >= t
            row: dict[str, Any] = {"name": sample.name, "threshold": float(t), "scale": scale}
            row.update(_score_binary(binary, sample.label, sample.fov, thickness, thin_max_width))
            row["AUC"] = auc
            threshold_rows.append(row)
            if overlay_dir is not None:
                write_png_atomic(
                    overlay_dir / f"{sample.name}.png",
                    overlay_image(binary, sample.label, sample.fov, thickness, thin_max_width=thin_max_width),
                )
        counts.add(prob, sample.label, sample.fov)
        if sample.second_label is None:
            all_second = False
        else:
            second_row = {"name": sample.name}
            second_row.update(
                _score_binary(sample.second_label, sample.label, sample.fov, thickness, thin_max_width)
            )
            second_rows.append(second_row)
        first = rows[0][-1]
        log.info("%s: Se %.4f Sp %.4f AUC %.4f", sample.name, first["Se"], first["Sp"], first["AUC"])
    second = second_rows if all_second and second_rows else None
    return [Scores(threshold_rows, second, counts) for threshold_rows in rows]


def evaluate(
    inference_model,
    samples: Iterable,
    *,
    output_dir: str | Path,
    threshold: Threshold | str | float = 0.5,
    threshold_rule: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Score `inference_model` on `samples` (`score`) and write the reports to `output_dir` (`write_reports`).

    Parameters
    ----------
    inference_model : ``(B, H, W, 3)`` 0-255 -> ``(B, H, W, 1)`` probability.
    samples : `Sample`s or `SampleSpec`s (loaded one at a time, so memory stays
        bounded by one image).
    threshold : a `Threshold`, a number in (0, 1) (0.5, or one chosen on
        training images with `choose_training_threshold`) or "otsu" (per
        image, inside the FOV).
    threshold_rule : how a numeric threshold was obtained, for the report
        (default "fixed t"). Never pass one tuned on the test set.
    options : `evaluate_thresholds`' (``dataset``, ``split``, ``model_path``, ``heads``, ``thin_max_width``,
        ``overlays``, ``progress``, ``predict_options``).

    Returns the report also written to ``metrics.json``: ``protocol``,
    ``summary`` (means and stds, ``AUC_pooled``), ``per_image`` rows and
    ``second_observer`` (None unless every sample has a second label).
    """
    if not isinstance(threshold, Threshold):
        threshold = Threshold.given(threshold, threshold_rule)
    return evaluate_thresholds(inference_model, samples, outputs={output_dir: threshold}, **options)[0]


def evaluate_thresholds(
    inference_model,
    samples: Iterable,
    *,
    outputs: Mapping[str | Path, Threshold],
    dataset: str = "unknown",
    split: str = "test",
    model_path: str | Path | None = None,
    heads: str = "mean",
    thin_max_width: float = 2.0,
    overlays: bool = True,
    progress: bool = True,
    predict_options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """`evaluate` at each `Threshold` of `outputs` (report folder -> threshold), each sample predicted once
    (`score_thresholds`); the reports in the order of `outputs`, each as `evaluate` returns it.

    Parameters
    ----------
    dataset, split, model_path, heads : recorded in the protocol.
    thin_max_width : thin/thick limit on the ground-truth segment thickness (px).
    overlays : write ``overlays/<name>.png`` error maps in each folder.
    predict_options : extra keyword arguments of `predict_probability` (tiling, tta, scale). With
        ``scale="multi"`` each row's ``scale`` lists the image's factors and the protocol its ``multiples``;
        a model that records no training diameter is refused before any image (`model_working_diameters`).
    """
    thresholds = list(outputs.values())
    if not thresholds or not all(isinstance(threshold, Threshold) for threshold in thresholds):
        raise ValueError("`outputs` must map one or more report folders to `Threshold`s.")
    if isinstance(thin_max_width, bool) or not isinstance(thin_max_width, (int, float)) or thin_max_width <= 0:
        raise ValueError(f"`thin_max_width` must be a positive number; got {thin_max_width!r}.")
    samples = list(samples)
    if not samples:
        raise ValueError("`samples` is empty; nothing to evaluate.")
    options = dict(predict_options or {})
    scale = check_scale(options.get("scale", "auto"))
    model_working_diameters(inference_model, scale, name=None if model_path is None else str(model_path))
    trained = model_working_diameters(inference_model, "auto")  # (the training diameter,) or None
    folders = [ensure_writable_dir(folder, what="the report folder") for folder in outputs]
    if len(set(folders)) != len(folders):
        raise ValueError(f"each threshold needs its own report folder; got {[str(f) for f in outputs]}.")
    all_scores = score_thresholds(inference_model, samples, thresholds=thresholds, thin_max_width=thin_max_width,
                                  predict_options=predict_options, progress=progress,
                                  overlay_dirs=[folder / "overlays" if overlays else None for folder in folders])
    reports = []
    for folder, threshold, scores in zip(folders, thresholds, all_scores):
        protocol = {
            "dataset": dataset,
            "split": split,
            "images": len(scores.rows),
            "model": str(model_path) if model_path is not None else "(in memory)",
            "heads": heads,
            "tta": options.get("tta", "none"),
            **scale_record(scale),
            "model_fov_diameter": None if trained is None else trained[0],
            "threshold": threshold.value,
            **({"threshold_multi": threshold.multi} if threshold.multi is not None else {}),
            "threshold_rule": threshold.rule,
            "fov_only": True,
            "averaging": "per image, then mean over images",
            "auc": "pooled over all FOV pixels of all images (AUC_pooled); per-image mean (AUC)",
            "thin_max_width": float(thin_max_width),
            "ground_truth": "first observer",
        }
        reports.append(write_reports(scores, protocol, folder))
    return reports


def write_reports(scores: Scores, protocol: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Write ``metrics.json``, ``metrics.md``, ``per_image.csv`` and ``roc.png``; returns the report."""
    summary = _summarise(scores.rows)
    summary["AUC_pooled"] = scores.counts.auc()
    second = None
    if scores.second_rows:
        second = {
            "summary": _summarise(scores.second_rows),
            "per_image": scores.second_rows,
            "note": "second observer's manual segmentation scored against the first observer",
        }
    report = {"protocol": protocol, "summary": summary, "per_image": scores.rows, "second_observer": second}
    write_json_atomic(output_dir / "metrics.json", _jsonable(report))
    write_text_atomic(output_dir / "metrics.md", _markdown(report))
    write_text_atomic(output_dir / "per_image.csv", _csv(scores.rows))
    _write_roc(output_dir / "roc.png", scores.counts, summary["AUC_pooled"], second,
               f"{protocol['dataset']} / {protocol['split']}")
    return report


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value
