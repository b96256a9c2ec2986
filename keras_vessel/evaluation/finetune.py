"""The report of a fine-tuning: the base model against the fine-tuned one on the fine-tuning photographs.

Both are scored inside each photograph's FOV: AUC, and F1 / accuracy of the mask at the model's
threshold (the base model's stored one; for the fine-tuned model each photograph's left-out threshold,
`keras_vessel.evaluation.thresholds.leave_one_image_out_threshold`, or the chosen one with fewer than
three photographs). The fine-tuned model has trained on these pixels, so its numbers flatter it: the
report says so, and a fair comparison needs other photographs of the camera (`keras-vessel evaluate`).
The threshold chosen on maps predicted at ``--scale multi`` (when the base model records a fixed FOV
diameter) is recorded beside, not scored: the report's rows are at the model's own scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_vessel.evaluation import metrics
from keras_vessel.evaluation.thresholds import ImagesThreshold, threshold_key
from keras_vessel.io import write_json_atomic, write_text_atomic

__all__ = ["REPORT_NOTE", "finetune_report", "write_finetune_report"]

REPORT_NOTE = ("Scored on the fine-tuning photographs themselves, which the fine-tuned model trained on: its "
               "numbers flatter it. Judge it on other photographs of the same camera (keras-vessel evaluate).")


def finetune_report(names: Sequence[str], base_probs: Sequence[np.ndarray], tuned_probs: Sequence[np.ndarray],
                    labels: Sequence[np.ndarray], fovs: Sequence[np.ndarray], *, base_threshold: float,
                    threshold: ImagesThreshold, fused: ImagesThreshold | None = None,
                    about: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-photograph and mean scores of the base and the fine-tuned model (see the module docstring).

    ``threshold`` is the fine-tuned model's threshold at its own scale (``threshold``, ``threshold_rule``);
    ``fused``, when given, the one chosen on maps predicted at ``--scale multi``, recorded as
    ``threshold_multi`` and ``threshold_multi_rule``. ``about`` (base model, budget, ...) is copied into
    the report. Returns a JSON-ready dict with ``per_image`` rows (``base_AUC``, ``base_F1``,
    ``base_Acc``, ``AUC``, ``F1``, ``Acc``, ``threshold``) and their ``mean``.
    """
    thresholds = threshold.left_out or [threshold.value] * len(names)
    rows = []
    for name, base, tuned, label, fov, t in zip(names, base_probs, tuned_probs, labels, fovs, thresholds):
        before = metrics.confusion_metrics(base, label, fov, threshold=base_threshold)
        after = metrics.confusion_metrics(tuned, label, fov, threshold=t)
        rows.append({"name": name, "base_AUC": metrics.roc_auc(base, label, fov), "base_F1": before["F1"],
                     "base_Acc": before["Acc"], "AUC": metrics.roc_auc(tuned, label, fov), "F1": after["F1"],
                     "Acc": after["Acc"], "threshold": float(t)})
    keys = [key for key in rows[0] if key != "name"]
    return {
        **(about or {}),
        "threshold": threshold.value,
        "threshold_rule": threshold.rule,
        **({threshold_key("multi"): fused.value, f"{threshold_key('multi')}_rule": fused.rule} if fused else {}),
        "base_threshold": float(base_threshold),
        "note": REPORT_NOTE,
        "per_image": rows,
        "mean": {key: float(np.mean([row[key] for row in rows])) for key in keys},
    }


def write_finetune_report(report: dict[str, Any], folder: str | Path) -> Path:
    """Write ``report.json`` and ``report.md`` into `folder`; returns the path of report.md."""
    folder = Path(folder)
    write_json_atomic(folder / "report.json", report)
    mean, fused = report["mean"], threshold_key("multi")
    lines = [
        "# Fine-tuning report", "",
        f"Base model: `{report.get('base_model', {}).get('path', '?')}`. "
        f"Threshold {report['threshold']:.4f}: {report['threshold_rule']}."
        + (f" Threshold at --scale multi {report[fused]:.4f} (threshold_multi.json): the same rule on maps "
           "predicted at --scale multi." if fused in report else ""), "",
        f"{report['note']}", "",
        "| photograph | base AUC | AUC | base F1 | F1 | base Acc | Acc | threshold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in [*report["per_image"], {"name": "**mean**", **mean}]:
        lines.append(f"| {row['name']} | {row['base_AUC']:.4f} | {row['AUC']:.4f} | {row['base_F1']:.4f} | "
                     f"{row['F1']:.4f} | {row['base_Acc']:.4f} | {row['Acc']:.4f} | {row['threshold']:.4f} |")
    lines += ["", f"Base model's masks at its threshold {report['base_threshold']:.4f}; the fine-tuned model's "
              "at each photograph's threshold chosen without it (with fewer than three photographs, the chosen one)."]
    budget = report.get("budget")
    if budget:
        lines += ["", f"Budget: {budget['minutes']:g} min; {budget['steps']} steps at "
                  f"{budget['seconds_per_step']:.3f} s each (measured on this machine)."]
    path = folder / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
