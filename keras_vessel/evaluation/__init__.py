"""Scoring segmentations: metrics inside the FOV, thresholds, and evaluation reports (METHOD.md section 5).

- `keras_vessel.evaluation.metrics`: FOV-restricted confusion metrics, AUC, thin/thick
  sensitivity, topology scores (NumPy, each with an oracle in the tests)
- `keras_vessel.evaluation.thresholds`: `Threshold`, parsing, the training threshold beside a model
- `keras_vessel.evaluation.reports`: `evaluate` = `score` + `write_reports`; `evaluate_thresholds` the same
  at several thresholds from one prediction of each image (`score_thresholds`)
"""

from keras_vessel.evaluation import metrics
from keras_vessel.evaluation.reports import (
    OVERLAY_COLOURS,
    Scores,
    evaluate,
    evaluate_thresholds,
    overlay_image,
    score,
    score_thresholds,
    write_reports,
)
from keras_vessel.evaluation.thresholds import (
    IMAGES_LEFT_OUT_RULE,
    LEAVE_ONE_OUT_MIN_IMAGES,
    OWN_IMAGES_RULE,
    THRESHOLD_FILENAME,
    THRESHOLD_SCALES,
    TRAINING_RULE,
    CAMERAS_RULE,
    ImagesThreshold,
    Threshold,
    choose_run_threshold,
    choose_training_threshold,
    finished_run_folder,
    leave_one_image_out_threshold,
    load_threshold,
    parse_threshold,
    run_threshold_scales,
    save_threshold,
    store_run_thresholds,
    threshold_key,
    threshold_path,
    threshold_paths,
    threshold_scale,
    threshold_scales,
    unfinished_run,
)

__all__ = [
    "IMAGES_LEFT_OUT_RULE",
    "ImagesThreshold",
    "LEAVE_ONE_OUT_MIN_IMAGES",
    "OWN_IMAGES_RULE",
    "OVERLAY_COLOURS",
    "THRESHOLD_FILENAME",
    "THRESHOLD_SCALES",
    "TRAINING_RULE",
    "CAMERAS_RULE",
    "Scores",
    "Threshold",
    "choose_run_threshold",
    "choose_training_threshold",
    "finished_run_folder",
    "evaluate",
    "evaluate_thresholds",
    "leave_one_image_out_threshold",
    "load_threshold",
    "metrics",
    "overlay_image",
    "parse_threshold",
    "run_threshold_scales",
    "save_threshold",
    "score",
    "score_thresholds",
    "store_run_thresholds",
    "threshold_key",
    "threshold_path",
    "threshold_paths",
    "threshold_scale",
    "threshold_scales",
    "unfinished_run",
    "write_reports",
]
