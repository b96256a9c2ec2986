"""Fine-tune a trained model on a few labelled photographs of one camera: what `keras-vessel finetune` runs.

`finetune` matches the photographs to their labels (`keras_vessel.data.datasets.open_labelled`), checks
them, prepares them into the run folder, sizes the recipe to the time budget and trains it with the
training loop of `keras-vessel train` (`keras_vessel.training.finetune`), then chooses the threshold on
the photographs (`keras_vessel.evaluation.leave_one_image_out_threshold`) at the model's own scale and,
when the base model records a fixed FOV diameter (the bundled one does), on maps predicted at
``--scale multi`` too, and writes the report (`keras_vessel.evaluation.finetune`). The output is a normal
run folder: config.yaml, run.json (with the base model's SHA-256 and the photographs used), model.keras,
threshold.json (and threshold_multi.json), report.md and report.json.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FinetuneResult", "finetune"]


@dataclass(frozen=True)
class FinetuneResult:
    """What `finetune` did: the run folder and model, the threshold and its rule, the report (report.json).

    threshold, rule : the threshold at the model's own scale (threshold.json) and how it was chosen.
    thresholds : every stored threshold by threshold scale (`keras_vessel.evaluation.run_threshold_scales`):
        ``{"auto": threshold}``, with ``"multi"`` (threshold_multi.json) when the base model records a
        fixed FOV diameter.
    """

    run_dir: Path
    model_path: Path
    status: str
    threshold: float
    rule: str
    thresholds: dict[str, float]
    report: dict[str, Any]


def finetune(images: str | Path, labels: str | Path, output: str | Path, *, masks: str | Path | None = None,
             model: str | Path | None = None, minutes: float = 10.0, seed: int = 0,
             learning_rate_factor: float | None = None, progress: bool = True) -> FinetuneResult:
    """Fine-tune `model` (the bundled model when None; a `.keras` file or a run folder) on labelled photographs.

    Parameters
    ----------
    images, labels, masks : folders of photographs (any format `keras-vessel predict` reads), of their
        vessel labels and, optionally, of FOV masks, matched by file stem. Without masks the FOV is the
        region `predict` keeps.
    output : the run folder written (created; re-running the same call resumes it).
    minutes : the wall-clock budget of the whole call (a finite number above 0), turned into training steps
        by timing the first steps on this machine (`keras_vessel.training.finetune.steps_for_budget`).
    seed : the run's seed (patches, augmentation).
    learning_rate_factor : the fine-tuning's learning rate over the base recipe's, a finite number above 0
        (None: the default, `keras_vessel.training.finetune.LEARNING_RATE_FACTOR`).
    progress : progress bars on stderr.

    Raises ValueError naming the argument for `minutes`, `seed` or `learning_rate_factor` out of range;
    DatasetError (a ValueError) naming the files for photographs without a label (all listed), a label
    of another size, a label or mask that is not black and white, or a label without vessels;
    ConfigError when `output` holds a fine-tuning of other photographs or settings; FolderLockedError
    while another process writes `output`; TrainingError as `keras_vessel.training.train`. Nothing is
    left in a new `output` that fails before training starts.
    """
    from keras_vessel.data.datasets import open_labelled
    from keras_vessel.data.tfrecords import read_manifest
    from keras_vessel.evaluation import run_threshold_scales
    from keras_vessel.locks import folder_lock
    from keras_vessel.models.inference import load_inference_model
    from keras_vessel.training import RunFolder, time_steps, train
    from keras_vessel.training.finetune import (
        LEARNING_RATE_FACTOR,
        MIN_STEPS,
        base_model_path,
        check_photographs,
        finetune_config,
        plan_finetune,
        prediction_work,
        removed_unless_started,
        steps_for_budget,
    )

    started = time.monotonic()
    _check_finite_positive("minutes", minutes)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int; got {seed!r}.")
    factor = LEARNING_RATE_FACTOR if learning_rate_factor is None else learning_rate_factor
    _check_finite_positive("learning_rate_factor", factor)
    specs = open_labelled(images, labels, masks)
    base = base_model_path(model)
    samples = check_photographs(specs)  # every file read and checked before anything is written
    base_model = load_inference_model(base)
    run = RunFolder(output)
    with folder_lock(run.path, what="the run folder"), removed_unless_started(run):
        plan = plan_finetune(specs, run.path, base=base, minutes=minutes, seed=seed, learning_rate_factor=factor,
                             progress=progress)
        predicting = time.monotonic()
        base_probs = _probabilities(base_model, samples)
        predict_seconds = time.monotonic() - predicting
        config, budget = plan.config, run.read_info().get("finetune", {}).get("budget")
        if config is None:  # a new run: size the recipe to what is left of the budget
            manifest = read_manifest(plan.records)
            timed = finetune_config(base, plan.records, manifest, steps=MIN_STEPS, seed=seed,
                                    learning_rate_factor=factor)
            timing = time_steps(timed)
            left = minutes * 60 - (time.monotonic() - started)
            after = predict_seconds * prediction_work(run_threshold_scales(timed))  # the thresholds' predictions
            steps = steps_for_budget(left, timing, reserve_seconds=1.5 * after)
            config = finetune_config(base, plan.records, manifest, steps=steps, seed=seed,
                                     learning_rate_factor=factor)
            budget = {"minutes": float(minutes), "steps": config.train.epochs * config.train.steps_per_epoch,
                      "seconds_per_step": timing.seconds_per_step, "first_step_seconds": timing.first_seconds,
                      "seconds_before_training": time.monotonic() - started}
        finished: list[Any] = []

        def finish(path: Path) -> None:
            finished.append(_choose_and_report(run, config, samples, base, base_probs, budget))

        result = train(config, run.path, verbose=int(progress), finish=finish,
                       info={"finetune": {**plan.info, "budget": budget}})
    thresholds, report = finished[0]
    threshold = thresholds["auto"]
    return FinetuneResult(run.path, result.model_path, result.status, threshold.value, threshold.rule,
                          {scale: chosen.value for scale, chosen in thresholds.items()}, report)


def _check_finite_positive(name: str, value: Any) -> None:
    """ValueError naming the argument unless `value` is a finite number above 0 (not a bool, inf or NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"`{name}` must be a finite number above 0; got {value!r}.")


def _probabilities(model, samples: Sequence[Any], scale: str = "auto") -> list[np.ndarray]:
    """Each sample's probability at `scale` (the model's own by default), 0 outside its FOV."""
    from keras_vessel.models.inference import predict_probability

    return [predict_probability(model, s.image, fov=s.fov, name=s.name, scale=scale) for s in samples]


def _choose_and_report(run, config, samples, base: Path, base_probs, budget):
    """The thresholds and the report: ``({threshold scale: ImagesThreshold}, report.json's content)``.

    At each of `keras_vessel.evaluation.run_threshold_scales` (the model's own scale; ``"multi"`` too when
    the base model records a fixed FOV diameter, which the run's config carries), the fine-tuned model
    predicts the photographs and `leave_one_image_out_threshold` chooses on those maps. Once all are chosen
    they are stored beside the model and in run.json (`store_run_thresholds`), then the report is written
    (report.md, report.json; scored at the model's own scale). Each file is written atomically, and run.json
    says "completed" only after this returns (`keras_vessel.training.train`'s ``finish``).
    """
    from keras_vessel.evaluation import (
        leave_one_image_out_threshold,
        load_threshold,
        run_threshold_scales,
        store_run_thresholds,
        threshold_path,
    )
    from keras_vessel.evaluation.finetune import finetune_report, write_finetune_report
    from keras_vessel.models.inference import load_inference_model
    from keras_vessel.training.finetune import RECORDS

    heads = config.train.heads
    model = load_inference_model(run.model_path, heads=heads)
    labels, fovs = [s.label for s in samples], [s.fov for s in samples]
    probs = {scale: _probabilities(model, samples, scale) for scale in run_threshold_scales(config)}
    chosen = {scale: leave_one_image_out_threshold(maps, labels, fovs) for scale, maps in probs.items()}
    store_run_thresholds(run, chosen, heads=heads, dataset=RECORDS.strip("."), images=len(samples))
    base_threshold = load_threshold(base)["threshold"] if threshold_path(base).is_file() else 0.5
    info = run.read_info()
    report = finetune_report([s.name for s in samples], base_probs, probs["auto"], labels, fovs,
                             base_threshold=base_threshold, threshold=chosen["auto"],
                             fused=chosen.get("multi"),
                             about={"base_model": info["finetune"]["base_model"], "budget": budget})
    write_finetune_report(report, run.path)
    return chosen, report
