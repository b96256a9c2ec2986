"""Fine-tune a trained model on a few labelled photographs of one camera: what `keras-vessel finetune` runs.

`finetune` matches the photographs to their labels (`keras_vessel.data.datasets.open_labelled`), checks
them, prepares them into the run folder, sizes the recipe to the time budget and trains it with the
training loop of `keras-vessel train` (`keras_vessel.training.finetune`), then chooses the threshold on
the photographs (`keras_vessel.evaluation.leave_one_image_out_threshold`) and writes the report
(`keras_vessel.evaluation.finetune`). The output is a normal run folder: config.yaml, run.json (with the
base model's SHA-256 and the photographs used), model.keras, threshold.json, report.md and report.json.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FinetuneResult", "finetune"]


@dataclass(frozen=True)
class FinetuneResult:
    """What `finetune` did: the run folder and model, the threshold and its rule, the report (report.json)."""

    run_dir: Path
    model_path: Path
    status: str
    threshold: float
    rule: str
    report: dict[str, Any]


def finetune(images: str | Path, labels: str | Path, output: str | Path, *, masks: str | Path | None = None,
             model: str | Path | None = None, minutes: float = 10.0, seed: int = 0,
             progress: bool = True) -> FinetuneResult:
    """Fine-tune `model` (the bundled model when None; a `.keras` file or a run folder) on labelled photographs.

    Parameters
    ----------
    images, labels, masks : folders of photographs (any format `keras-vessel predict` reads), of their
        vessel labels and, optionally, of FOV masks, matched by file stem. Without masks the FOV is the
        region `predict` keeps.
    output : the run folder written (created; re-running the same call resumes it).
    minutes : the wall-clock budget of the whole call, turned into training steps by timing the first
        steps on this machine (`keras_vessel.training.finetune.steps_for_budget`).
    seed : the run's seed (patches, augmentation).
    progress : progress bars on stderr.

    Raises DatasetError (a ValueError) naming the files for photographs without a label (all listed),
    a label of another size, or a label without vessels; ConfigError when `output` holds a fine-tuning
    of other photographs or settings; FolderLockedError while another process writes `output`;
    TrainingError as `keras_vessel.training.train`. Nothing is left in a new `output` that fails
    before training starts.
    """
    from keras_vessel.data.datasets import open_labelled
    from keras_vessel.data.tfrecords import read_manifest
    from keras_vessel.locks import folder_lock
    from keras_vessel.models.inference import load_inference_model
    from keras_vessel.training import RunFolder, time_steps, train
    from keras_vessel.training.finetune import (
        MIN_STEPS,
        base_model_path,
        check_photographs,
        finetune_config,
        plan_finetune,
        removed_unless_started,
        steps_for_budget,
    )

    started = time.monotonic()
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
        raise ValueError(f"`minutes` must be a positive number; got {minutes!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int; got {seed!r}.")
    specs = open_labelled(images, labels, masks)
    base = base_model_path(model)
    samples = check_photographs(specs)  # every file read and checked before anything is written
    base_model = load_inference_model(base)
    run = RunFolder(output)
    with folder_lock(run.path, what="the run folder"), removed_unless_started(run):
        plan = plan_finetune(specs, run.path, base=base, minutes=minutes, seed=seed, progress=progress)
        predicting = time.monotonic()
        base_probs = _probabilities(base_model, samples)
        predict_seconds = time.monotonic() - predicting
        config, budget = plan.config, run.read_info().get("finetune", {}).get("budget")
        if config is None:  # a new run: size the recipe to what is left of the budget
            manifest = read_manifest(plan.records)
            timing = time_steps(finetune_config(base, plan.records, manifest, steps=MIN_STEPS, seed=seed))
            left = minutes * 60 - (time.monotonic() - started)
            steps = steps_for_budget(left, timing, reserve_seconds=1.5 * predict_seconds)
            config = finetune_config(base, plan.records, manifest, steps=steps, seed=seed)
            budget = {"minutes": float(minutes), "steps": config.train.epochs * config.train.steps_per_epoch,
                      "seconds_per_step": timing.seconds_per_step, "first_step_seconds": timing.first_seconds,
                      "seconds_before_training": time.monotonic() - started}
        chosen: list[Any] = []

        def finish(path: Path) -> None:
            chosen.append(_choose_and_report(run, config, samples, base, base_probs, budget))

        result = train(config, run.path, verbose=int(progress), finish=finish,
                       info={"finetune": {**plan.info, "budget": budget}})
    threshold, report = chosen[0]
    return FinetuneResult(run.path, result.model_path, result.status, threshold.value, threshold.rule, report)


def _probabilities(model, samples: Sequence[Any]) -> list[np.ndarray]:
    """Each sample's probability at the model's scale (``scale="auto"``), 0 outside its FOV."""
    from keras_vessel.models.inference import predict_probability

    return [predict_probability(model, s.image, fov=s.fov, name=s.name) for s in samples]


def _choose_and_report(run, config, samples, base: Path, base_probs, budget):
    """The threshold (saved beside the model, recorded in run.json) and the report (report.md, report.json)."""
    from keras_vessel.evaluation import leave_one_image_out_threshold, load_threshold, save_threshold, threshold_path
    from keras_vessel.evaluation.finetune import finetune_report, write_finetune_report
    from keras_vessel.models.inference import load_inference_model
    from keras_vessel.training.finetune import RECORDS

    heads = config.train.heads
    tuned = _probabilities(load_inference_model(run.model_path, heads=heads), samples)
    labels, fovs = [s.label for s in samples], [s.fov for s in samples]
    threshold = leave_one_image_out_threshold(tuned, labels, fovs)
    save_threshold(run.model_path, threshold.value, rule=threshold.rule, heads=heads, dataset=RECORDS.strip("."),
                   images=len(samples))
    base_threshold = load_threshold(base)["threshold"] if threshold_path(base).is_file() else 0.5
    info = run.read_info()
    report = finetune_report([s.name for s in samples], base_probs, tuned, labels, fovs, base_threshold=base_threshold,
                             threshold=threshold, about={"base_model": info["finetune"]["base_model"],
                                                         "budget": budget})
    write_finetune_report(report, run.path)
    run.update(threshold=threshold.value)
    return threshold, report
