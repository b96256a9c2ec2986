"""The leave-one-camera-out protocol (issue 30): train on four cameras, test on the fifth.

Five development sets, one camera each (``../shared/docs/DATASETS.md``): DRIVE,
CHASE_DB1, HRF (its training split), ORVS and LES-AV. Each run trains one
recipe on the prepared training images of four of them (`keras-vessel train`,
fixed budget, early stopping off) and stores its threshold, chosen on those
four's training images (`train` does it). It is then scored on every image
of the fifth camera, none of which it has seen, at the labels' native
resolution: pooled AUC, per-image mean F1, the worst image (AUC and F1) and
thin-vessel sensitivity. Nothing about the left-out camera chooses anything.

Scoring variants of one run (`VARIANTS`): ``auto`` (each photograph resampled
to the FOV diameter the model was trained at, the stored threshold),
``auto_otsu`` (the same probabilities, a per-image Otsu threshold inside the
FOV: the mask rule of item 5), ``fov810`` and ``fov1080`` (each photograph
run at an 810 or 1080 px field of view, 1.5x or 2x the 540 px training
scale: the camera's median FOV diameter gives one factor for the whole
camera; the stored threshold), ``fovclip`` (each camera run at its own
median FOV diameter clipped to 540-1080 px: native size within limits), ``auto_mean`` and
``auto_balanced`` (at auto, the thresholds of rule p1 in which each training camera weighs the same: the
mean of the four cameras' own thresholds, and the threshold maximising the mean of their accuracies), and
``multi`` (`--scale multi`: the mean of the probabilities at 1, 1.5 and 2 times the training FOV diameter,
with the threshold the run stored for that scale), and ``adaptive`` (`--scale adaptive`: ``multi`` for the
photographs whose FOV is at least `keras_vessel.data.scaling.MULTI_SCALE_FROM_FOV` px across, ``auto`` for the
others, each at its stored threshold; a camera whose photographs all run at one of them copies its scores).
``--bundled`` scores the bundled model the same way on the cameras it has never seen.

The screening runs train recipes on the W-Net for 2000 steps. The *general* runs train the shipped recipe
itself (``configs/general.yaml``, the compact U-Net) at full length, 9000 steps per training camera as the
bundled model was trained (rule r1, docs/notebook/2026-12-07-r-full-length-fold.md): 1-2.5 hours each
on 2 cores, resumable. They are judged against issue 30's bar (no left-out camera below `AUC_BAR`).

    .venv/bin/python -m experiments.leave_one_camera_out --records data/cameras --out runs/leave_one_camera_out [--only NAME ...]
    .venv/bin/python -m experiments.leave_one_camera_out --summarize

Records: ``<records>/<camera>`` for each camera, prepared from the split in
`CAMERAS` (prepared here when missing). Resumable: a finished training or
score is not redone; the trainings run `--jobs` at a time with one thread each.
Results go to ``experiments/results/leave_one_camera_out.json``; the rules
written before the runs are in docs/notebook/2026-12-06-h-leave-one-camera-out.md.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.cross_dataset import (
    KERAS_VESSEL,
    REPOSITORY,
    SHARED,
    WNET_SETS,
    finished_run,
    load_results,
    median_fov_diameter,
    protocol_parser,
    save_results,
    summarise,
    train_all,
)

# camera -> (folder in ../shared/data, the split its records are prepared from, the split it is tested on)
CAMERAS: dict[str, tuple[str, str, str]] = {
    "drive": ("DRIVE", "training", "all"),
    "chase_db1": ("CHASE_DB1", "training", "all"),
    "hrf": ("HRF", "all", "all"),
    "orvs": ("ORVS", "training", "all"),
    "les_av": ("LES-AV", "all", "all"),
}
RESULTS = REPOSITORY / "experiments" / "results" / "leave_one_camera_out.json"
# The full-length runs' results (`--results` of those runs; docs/RESULTS.md's table of them reads it)
FULL_LENGTH_RESULTS = REPOSITORY / "experiments" / "results" / "leave_one_camera_out_full.json"
# Today's recipe: configs/general.yaml's (aug_sharp, the joint loss), here on the screening network.
TODAY = ("data.channel=rgb", "data.normalisation=dataset", "data.augment.blur_probability=0",
         "data.augment.jpeg_probability=0", "loss.kind=joint")
RECIPES: dict[str, tuple[str, ...]] = {
    "today": TODAY,
    # every photograph sampled at FOV diameters from 531 to 1360 px (850 / 1.6 .. 850 x 1.6), run at 850
    "wide": (*TODAY, "data.fov_diameter=850", "data.scale_jitter=0.6"),
}
SCREEN_EPOCHS = 20  # of 100 steps: the screening budget on the W-Net (notebook entry h)
# The shipped recipe at full length: its config and its budget per training camera (v1: 18,000 steps over two
# cameras, v2: 45,000 over five), so a run on four cameras gets 36,000 steps.
FULL_LENGTH_RECIPE = "general"
FULL_LENGTH_CONFIG = REPOSITORY / "configs" / "general.yaml"
FULL_LENGTH_STEPS_PER_CAMERA = 9000
AUC_BAR = 0.970  # issue 30: no left-out camera's pooled AUC below it
# Rule s3 (notebook entry s): the FOV diameter from which `--scale multi` is advised, from the five full-length
# folds; the midpoint between two cameras' median FOV diameters (recorded in the results as
# ``median_fov_diameter``), rounded to this many px.
SIZE_BAR_ROUNDING = 100
# Two cameras whose median FOV diameters differ by less than this fraction are of one size (LES-AV and ORVS: 1441
# and 1442 px): no bar between them could tell their photographs apart (rule t's reading of s3).
SAME_SIZE = 0.02
# variant -> (working FOV diameter in px: None = the model's own, a number = that diameter, (low, high) = the
# camera's own FOV diameter clipped to [low, high], "multi" = `--scale multi`, "adaptive" = `--scale adaptive`;
# mask rule: the threshold stored for that scale (for "adaptive" each photograph's mode's), Otsu's, or one of the
# training cameras' thresholds)
VARIANTS: dict[str, tuple[float | tuple[float, float] | str | None, str]] = {
    "auto": (None, "stored"),
    "auto_otsu": (None, "otsu"),
    "fov810": (810.0, "stored"),
    "fov1080": (1080.0, "stored"),
    "fovclip": ((540.0, 1080.0), "stored"),
    "auto_mean": (None, "mean_of_cameras"),
    "auto_balanced": (None, "camera_balanced"),
    "multi": ("multi", "stored"),
    "adaptive": ("adaptive", "stored"),
}
# Rule p1's candidates (notebook entry p): thresholds in which each training camera weighs the same, read from
# the `cameras` record of the run's threshold.json (`keras_vessel.evaluation.camera_thresholds`).
THRESHOLD_CANDIDATES = ("auto_mean", "auto_balanced")
# Rule h3's candidates (notebook entry i): working resolutions at inference for today's model.
RESOLUTION_CANDIDATES = ("fov810", "fov1080", "fovclip")
# The cameras the bundled model (DRIVE + CHASE_DB1) has never seen: scored like a left-out camera.
BUNDLED_UNSEEN = ("hrf", "orvs", "les_av")


@dataclass(frozen=True)
class CameraRun:
    """One training: a recipe on every camera but `left_out`, with one seed: a screening recipe (`RECIPES`) on
    the W-Net for `SCREEN_EPOCHS`, or `FULL_LENGTH_RECIPE` (the shipped recipe) at its full budget."""

    recipe: str
    left_out: str
    seed: int = 0

    @property
    def full_length(self) -> bool:
        return self.recipe == FULL_LENGTH_RECIPE

    @property
    def name(self) -> str:
        network = "" if self.full_length else "_wnet"
        return f"{self.recipe}{network}_without_{self.left_out}_s{self.seed}"

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(camera for camera in CAMERAS if camera != self.left_out)

    @property
    def epochs(self) -> int:
        """Epochs of 100 steps."""
        if self.full_length:
            return FULL_LENGTH_STEPS_PER_CAMERA * len(self.sources) // 100
        return SCREEN_EPOCHS

    def train_command(self, keras_vessel: str, records: Path, out: Path) -> list[str]:
        folders = [records / camera for camera in self.sources]
        if self.full_length:
            return full_length_train_command(keras_vessel, folders, out / self.name, seed=self.seed,
                                             epochs=self.epochs)
        return screen_train_command(keras_vessel, folders, out / self.name, recipe=self.recipe, seed=self.seed,
                                    epochs=self.epochs)


def full_length_train_command(keras_vessel: str, folders: Sequence[Path], output: Path, *, seed: int,
                              epochs: int) -> list[str]:
    """The `keras-vessel train` command of the shipped recipe (`FULL_LENGTH_CONFIG`) on the records `folders`
    for `epochs` of 100 steps, every training photograph trained on (none held out for validation)."""
    listed = ", ".join(str(folder) for folder in folders)
    sets = [f"data.train_records=[{listed}]", "data.validation_images=0", f"train.seed={seed}",
            f"train.epochs={epochs}"]
    return [keras_vessel, "train", "--config", str(FULL_LENGTH_CONFIG), *(p for s in sets for p in ("--set", s)),
            "--output", str(output), "--quiet"]


def screen_train_command(keras_vessel: str, folders: Sequence[Path], output: Path, *, recipe: str, seed: int,
                         epochs: int = SCREEN_EPOCHS, sets: Sequence[str] = ()) -> list[str]:
    """The `keras-vessel train` command of a screening run: `recipe` on the screening W-Net, trained on the
    records `folders` for `epochs` of 100 steps (early stopping off), with further ``--set`` `sets`."""
    listed = ", ".join(str(folder) for folder in folders)
    sets = [f"data.train_records=[{listed}]", f"train.epochs={epochs}", "train.steps_per_epoch=100",
            "train.early_stopping_patience=0", f"train.seed={seed}", *RECIPES[recipe], *WNET_SETS, *sets]
    configs = [REPOSITORY / "configs" / "compact.yaml", REPOSITORY / "configs" / "transfer.yaml"]
    return [keras_vessel, "train", *(p for c in configs for p in ("--config", str(c))),
            *(p for s in sets for p in ("--set", s)), "--output", str(output), "--quiet"]


def planned_runs() -> list[CameraRun]:
    """The screening recipes per left-out camera, side by side, so that partial results are paired; then the
    shipped recipe at full length per left-out camera (hours each: choose them with ``--only``)."""
    return ([CameraRun(recipe, camera) for camera in CAMERAS for recipe in RECIPES]
            + [CameraRun(FULL_LENGTH_RECIPE, camera) for camera in CAMERAS])


def score_model(model_path: Path, camera: str, output: Path, *, data: Path = SHARED,
                variants: Sequence[str] = tuple(VARIANTS), progress: bool = False,
                scored: Mapping[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Score a model on every image of `camera` in each of `variants`; reports go to ``output/eval_<variant>``.

    A clipped variant whose working FOV comes out equal to a fixed variant's (``fovclip`` on a camera
    wider than 1080 px is ``fov1080``) copies that variant's scores, from `scored` (already in the
    results) or from this call, marked ``same_as``. Variants at one working scale (``auto`` and its
    other mask rules) are scored from one prediction of each image (`evaluate_thresholds`).

    The stored threshold is the one beside the model (`train` chose it on the model's training images).
    """
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import Threshold, evaluate_thresholds
    from keras_vessel.evaluation.thresholds import load_threshold
    from keras_vessel.models.inference import inference_scale, load_inference_model

    scored = dict(scored or {})
    folder, _, test_split = CAMERAS[camera]
    samples = open_dataset(camera, data / folder, test_split)
    model = load_inference_model(model_path)
    stored_file = load_threshold(model_path)
    stored = stored_file["threshold"]
    def stored_rule(threshold_file: dict[str, Any]) -> str:
        return f"{threshold_file.get('rule', 'the training threshold')} (stored by train)"

    rules = {"stored": stored_rule(stored_file),
             "mean_of_cameras": "mean of the training cameras' own accuracy-optimal thresholds",
             "camera_balanced": "maximises the mean of the training cameras' accuracies"}
    fixed_fov = any(isinstance(VARIANTS[variant][0], (float, tuple)) for variant in variants)
    camera_diameter = median_fov_diameter(samples) if fixed_fov else None  # reads every image: once
    scores: dict[str, dict[str, Any]] = {}
    # scale -> {variant: (report folder, threshold)}: what is left to evaluate, grouped by working scale
    to_evaluate: dict[str | float, dict[str, tuple[Path, Threshold]]] = {}
    for variant in variants:
        working_fov, mask_rule = VARIANTS[variant]
        if isinstance(working_fov, tuple):
            working_fov = min(max(camera_diameter, working_fov[0]), working_fov[1])
            # the same working FOV and mask rule as a fixed variant already scored: the same evaluation
            known = {**scored, **scores}
            twin = next((other for other, (fov, rule) in VARIANTS.items() if fov == working_fov
                         and rule == mask_rule and other in known), None)
            if twin is not None:
                scores[variant] = {**known[twin], "same_as": twin}
                continue
        scale: str | float = ("auto" if working_fov is None else working_fov if isinstance(working_fov, str)
                              else working_fov / camera_diameter)
        if scale == "adaptive":  # one photograph at a time: the mode it runs at, that mode's stored threshold
            modes = {inference_scale(model, spec.load().image, scale).mode for spec in samples}
            known = {**scored, **scores}
            if len(modes) == 1 and modes <= known.keys():  # every photograph runs as that variant does
                scores[variant] = {**known[next(iter(modes))], "same_as": next(iter(modes)), **adaptive_bar()}
                continue
            multi_file = load_threshold(model_path, scale="multi")
            chosen = Threshold.per_mode(stored, multi_file["threshold"], stored_rule(stored_file),
                                        stored_rule(multi_file))
            report = finished_report(output / f"eval_{variant}", model_path, camera=camera, split=test_split,
                                     images=len(samples), threshold=stored, scale=scale,
                                     threshold_multi=chosen.multi)
            if report is not None and report["protocol"].get("multi_from_fov") == adaptive_bar()["multi_from_fov"]:
                scores[variant] = {**summarise(report), **adaptive_bar()}
            else:
                to_evaluate.setdefault(scale, {})[variant] = (output / f"eval_{variant}", chosen)
            continue
        if mask_rule == "stored" and scale == "multi":  # the threshold the run chose on its multi-scale maps
            multi_file = load_threshold(model_path, scale="multi")
            threshold, rule = multi_file["threshold"], stored_rule(multi_file)
        else:
            threshold = ("otsu" if mask_rule == "otsu" else stored if mask_rule == "stored"
                         else camera_threshold(stored_file, mask_rule, model_path))
            rule = rules.get(mask_rule)
        report = finished_report(output / f"eval_{variant}", model_path, camera=camera, split=test_split,
                                 images=len(samples), threshold=threshold, scale=scale)
        if report is not None:
            scores[variant] = summarise(report)
            continue
        chosen = Threshold.given(threshold, rule)
        to_evaluate.setdefault(scale, {})[variant] = (output / f"eval_{variant}", chosen)
    for scale, group in to_evaluate.items():
        reports = evaluate_thresholds(model, samples, outputs=dict(group.values()), dataset=camera,
                                      split=test_split, model_path=model_path, overlays=False, progress=progress,
                                      predict_options={"scale": scale})
        scores.update({variant: {**summarise(report), **adaptive_bar()} if variant == "adaptive" else summarise(report)
                       for variant, report in zip(group, reports)})
    return {variant: scores[variant] for variant in variants}


def adaptive_bar() -> dict[str, float]:
    """What an ``adaptive`` score records of the FOV diameter from which it fused (scores of another bar are
    scored again: `_score_missing`)."""
    from keras_vessel.data import scaling

    return {"multi_from_fov": float(scaling.MULTI_SCALE_FROM_FOV)}


def camera_threshold(stored: dict[str, Any], rule: str, model_path: Path) -> float:
    """The threshold `rule` (``mean_of_cameras`` or ``camera_balanced``) of a threshold file's ``cameras``
    record; a run whose threshold was chosen before train recorded it is an error saying what to do."""
    cameras = stored.get("cameras")
    if not cameras or rule not in cameras:
        raise SystemExit(f"{model_path}'s threshold.json has no per-camera thresholds (chosen before 950bf90); "
                         f"delete it and run `python -c 'from keras_vessel.evaluation import choose_run_threshold; "
                         f"choose_run_threshold(\"{model_path.parent}\")'` to choose them")
    return float(cameras[rule])


def finished_report(folder: Path, model_path: Path, *, camera: str, split: str, images: int,
                    threshold: float | str, scale: str | float,
                    threshold_multi: float | None = None) -> dict[str, Any] | None:
    """The evaluation report in `folder` if it scored exactly this: the model file (and was written after
    it), the camera's split and image count, the threshold (and for ``"adaptive"`` the fused one) and the scale;
    else None (evaluate again).
    A scoring stopped half-way, or results lost, resume from the reports already written."""
    path = folder / "metrics.json"
    try:
        report = json.loads(path.read_text())
        written_after_model = path.stat().st_mtime >= Path(model_path).stat().st_mtime
    except (OSError, ValueError):
        return None
    protocol = report.get("protocol", {})
    def same_number(a: Any, b: Any) -> bool:
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            return a == b
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))

    same = (written_after_model and protocol.get("model") == str(model_path) and protocol.get("dataset") == camera
            and protocol.get("split") == split and protocol.get("images") == images
            and same_number(protocol.get("threshold"), threshold) and same_number(protocol.get("scale"), scale)
            and same_number(protocol.get("threshold_multi"), threshold_multi))
    return report if same else None


def _score_missing(entry: dict[str, Any], model_path: Path, camera: str, output: Path, *, data: Path,
                   results: dict[str, Any], results_path: Path, what: str,
                   variants: Sequence[str] = tuple(VARIANTS)) -> None:
    missing = [variant for variant in variants if variant not in entry["scores"]
               or (variant == "adaptive" and entry["scores"][variant].get("multi_from_fov")
                   != adaptive_bar()["multi_from_fov"])]
    if missing:
        print(f"score {what} on {camera} ({', '.join(missing)})", file=sys.stderr, flush=True)
        entry["scores"].update(score_model(model_path, camera, output, data=data, variants=missing,
                                           scored=entry["scores"]))
        save_results(results_path, results)


def score_all(runs: Sequence[CameraRun], out: Path, results_path: Path, *, data: Path,
              variants: Sequence[str] = tuple(VARIANTS)) -> dict[str, Any]:
    """Score every finished run on its left-out camera in `variants` (what is already in the results is kept)."""
    results = load_results(results_path)
    for run in runs:
        run_dir = out / run.name
        if not finished_run(run_dir) or not (run_dir / "threshold.json").is_file():
            continue
        entry = results["runs"].setdefault(run.name, {"recipe": run.recipe, "left_out": run.left_out,
                                                       "seed": run.seed, "epochs": run.epochs, "scores": {}})
        info = json.loads((run_dir / "run.json").read_text())
        entry["git_revision"], entry["machine"] = info.get("git_revision"), info.get("machine")
        _score_missing(entry, run_dir / "model.keras", run.left_out, run_dir, data=data, results=results,
                       results_path=results_path, what=run.name, variants=variants)
        if run.full_length:
            record_camera_fov(results, run.left_out, data=data, results_path=results_path)
    return results


def record_camera_fov(results: dict[str, Any], camera: str, *, data: Path, results_path: Path) -> None:
    """Record `camera`'s median FOV diameter over the photographs it is scored on (px, `median_fov_diameter`)
    in ``results["median_fov_diameter"]`` unless it is there (rule s3 orders the cameras by it)."""
    from keras_vessel.data.datasets import open_dataset

    recorded = results.setdefault("median_fov_diameter", {})
    if camera not in recorded:
        folder, _, test_split = CAMERAS[camera]
        recorded[camera] = round(median_fov_diameter(open_dataset(camera, data / folder, test_split)), 1)
        save_results(results_path, results)


def score_bundled(out: Path, results_path: Path, *, data: Path) -> dict[str, Any]:
    """Score the bundled model (trained on DRIVE and CHASE_DB1) on each camera it has never seen."""
    from keras_vessel.models.inference import BUNDLED_MODEL

    results = load_results(results_path)
    for camera in BUNDLED_UNSEEN:
        entry = results.setdefault("bundled", {}).setdefault(camera, {"model": BUNDLED_MODEL.parent.name,
                                                                      "scores": {}})
        _score_missing(entry, BUNDLED_MODEL, camera, out / f"bundled_{camera}", data=data, results=results,
                       results_path=results_path, what=BUNDLED_MODEL)
    return results


# --------------------------------------------------------------------------- tables and rules


def pooled(results: dict[str, Any], recipe: str, variant: str) -> dict[str, Any]:
    """A recipe's scores per left-out camera (mean over its seeds) and their means over cameras."""
    out: dict[str, Any] = {"cameras": {}}
    for camera in CAMERAS:
        mine = [r["scores"][variant] for r in results["runs"].values()
                if r["recipe"] == recipe and r["left_out"] == camera and variant in r["scores"]]
        if mine:
            out["cameras"][camera] = {key: statistics.fmean(s[key] for s in mine)
                                      for key in ("AUC_pooled", "F1", "worst_AUC", "worst_F1", "Se_thin")}
    done = out["cameras"].values()
    for key in ("AUC_pooled", "F1", "worst_AUC"):
        out[key] = statistics.fmean(c[key] for c in done) if done else float("nan")
    out["complete"] = len(out["cameras"]) == len(CAMERAS)
    return out


def _auc_checks(today: dict[str, Any], candidate: dict[str, Any]) -> dict[str, bool]:
    """The AUC part of rules h1 and h3: mean pooled AUC at least 0.002 above, no camera more than 0.005 below."""
    return {
        "mean_AUC": candidate["AUC_pooled"] >= today["AUC_pooled"] + 0.002,
        "no_camera_worse": all(candidate["cameras"][c]["AUC_pooled"] >= today["cameras"][c]["AUC_pooled"] - 0.005
                               for c in CAMERAS),
    }


def screen_verdict(today: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """Entry h's screening rule: a candidate goes on to full-length runs if, over the five left-out cameras,
    its mean AUC is at least 0.002 higher, its mean per-image F1 not lower, and no camera's AUC more than
    0.005 below today's."""
    if not (today["complete"] and candidate["complete"]):
        return {"advance": None, "checks": {}}
    auc = _auc_checks(today, candidate)
    checks = {"mean_AUC": auc["mean_AUC"], "mean_F1": candidate["F1"] >= today["F1"],
              "no_camera_worse": auc["no_camera_worse"]}
    return {"advance": all(checks.values()), "checks": checks}


def mask_rule_verdict(stored: dict[str, Any], otsu: dict[str, Any]) -> dict[str, Any]:
    """Entry h's mask rule: per-image Otsu replaces the stored threshold if its per-image F1 is higher on the
    mean over the five left-out cameras and on at least four of them."""
    if not (stored["complete"] and otsu["complete"]):
        return {"otsu": None, "higher": None}
    higher = sum(otsu["cameras"][c]["F1"] > stored["cameras"][c]["F1"] for c in CAMERAS)
    return {"otsu": otsu["F1"] > stored["F1"] and higher >= 4, "higher": higher}


def threshold_rule_verdict(pooled_scores: dict[str, Any], candidates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Entry p's rule p1: a threshold in which each camera weighs the same replaces the pooled one if its mean
    per-image F1 over the five left-out cameras is at least 0.01 above the pooled threshold's and no camera's
    F1 is more than 0.02 below; of those passing, the higher mean F1 wins (ties to ``auto_balanced``).
    ``choice`` is None without all five cameras, ``"auto"`` (pooled) when none passes. It reads runs whose
    stored threshold (``auto``) is the pooled one, as train stored it before the rule was adopted (the
    results of entry p); a run trained since stores the mean, so its ``auto`` is ``auto_mean``."""
    if not (pooled_scores["complete"] and all(c["complete"] for c in candidates.values())):
        return {"choice": None, "passing": None}
    passing = [name for name, c in candidates.items()
               if c["F1"] >= pooled_scores["F1"] + 0.01
               and all(c["cameras"][k]["F1"] >= pooled_scores["cameras"][k]["F1"] - 0.02 for k in CAMERAS)]
    choice = max(passing, key=lambda name: (candidates[name]["F1"], name == "auto_balanced"), default="auto")
    return {"choice": choice, "passing": passing}


def resolution_verdict(auto: dict[str, Any], candidates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Entry i's rule h3: the working resolution at inference for today's model. A candidate passes if, over the
    five left-out cameras, its mean pooled AUC is at least 0.002 above `auto`'s and no camera's AUC is more
    than 0.005 below; of those passing, the highest mean AUC wins (None: keep the model's own scale)."""
    if not (auto["complete"] and all(c["complete"] for c in candidates.values())):
        return {"choice": None, "passing": None}
    passing = [name for name, c in candidates.items() if all(_auc_checks(auto, c).values())]
    choice = max(passing, key=lambda name: candidates[name]["AUC_pooled"], default="auto")
    return {"choice": choice, "passing": passing}


def bar_verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """Issue 30's bar on one recipe and variant (`pooled`): no left-out camera's pooled AUC below `AUC_BAR`.
    ``holds`` is None until all five cameras are scored unless one scored already falls below (then False);
    ``below`` maps each such camera to its AUC."""
    below = {camera: score["AUC_pooled"] for camera, score in summary["cameras"].items()
             if score["AUC_pooled"] < AUC_BAR}
    return {"holds": False if below else True if summary["complete"] else None, "below": below}


def size_bar_verdict(auto: dict[str, Any], multi: dict[str, Any], diameters: Mapping[str, float]) -> dict[str, Any]:
    """Rule s3 (notebook entry s) on the full-length folds at ``auto`` and ``multi`` (`pooled`): a left-out camera
    *pays* if `multi`'s pooled AUC and mean F1 are both at least `auto`'s. With the cameras ordered by their
    median FOV diameter (`diameters`, px), the bar is the midpoint between the largest camera that does not pay
    and the next larger one, rounded to `SIZE_BAR_ROUNDING` px (the midpoint itself where that would pass either
    camera's median); a camera less than `SAME_SIZE` larger than the one that does not pay stays below with it.
    0 when every camera pays, ``math.inf`` when the largest does not. ``bar`` is None until all five cameras
    are scored at both and their diameters recorded; ``pays`` holds the cameras scored so far, ``order`` the
    cameras by diameter (those recorded)."""
    scored = [c for c in CAMERAS if c in auto["cameras"] and c in multi["cameras"]]
    pays = {c: (multi["cameras"][c]["AUC_pooled"] >= auto["cameras"][c]["AUC_pooled"]
                and multi["cameras"][c]["F1"] >= auto["cameras"][c]["F1"]) for c in scored}
    order = sorted((c for c in CAMERAS if c in diameters), key=lambda c: diameters[c])
    if len(pays) < len(CAMERAS) or len(order) < len(CAMERAS):
        return {"bar": None, "pays": pays, "order": order}
    losing = [index for index, camera in enumerate(order) if not pays[camera]]
    last = losing[-1] if losing else None
    # a camera of the same size as one that does not pay cannot be separated from it: above the bar only if
    # both are (notebook entry t)
    while last is not None and last + 1 < len(order) and \
            diameters[order[last + 1]] < diameters[order[last]] * (1 + SAME_SIZE):
        last += 1
    if last is None:
        bar = 0.0
    elif last == len(order) - 1:
        bar = math.inf
    else:
        below, above = diameters[order[last]], diameters[order[last + 1]]
        bar = float(round((below + above) / 2 / SIZE_BAR_ROUNDING) * SIZE_BAR_ROUNDING)
        if not below < bar <= above:  # rounded past a camera's median: the midpoint itself
            bar = (below + above) / 2
    return {"bar": bar, "pays": pays, "order": order}


def size_bar_line(results: dict[str, Any]) -> str | None:
    """Rule s3's verdict in one line for the full-length table (None before any camera is scored at both)."""
    verdict = size_bar_verdict(pooled(results, FULL_LENGTH_RECIPE, "auto"),
                               pooled(results, FULL_LENGTH_RECIPE, "multi"), results.get("median_fov_diameter", {}))
    if not verdict["pays"]:
        return None
    diameters = results.get("median_fov_diameter", {})

    def cameras(paying: bool) -> str:
        chosen = sorted((c for c, pays in verdict["pays"].items() if pays == paying),
                        key=lambda c: diameters.get(c, math.inf))
        return ", ".join(c + (f" ({diameters[c]:.0f} px)" if c in diameters else "") for c in chosen) or "none"

    bar = verdict["bar"]
    outcome = (f"no verdict ({len(verdict['pays'])} of 5 cameras)" if bar is None
               else "multi for every photograph" if bar == 0
               else "multi for none" if math.isinf(bar)
               else f"multi from a {bar:.0f} px FOV")
    return f"Rule s3 (multi pays: AUC and F1 >= auto's) on {cameras(True)}; not on {cameras(False)}: {outcome}"


def _cell(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def bundled_table(results: dict[str, Any]) -> list[str]:
    """The bundled model on the cameras it has never seen, one row per scoring variant."""
    scored = results.get("bundled", {})
    if not scored:
        return []
    header = ("| bundled model | variant | " + " | ".join(f"{c} AUC / F1 / worst image AUC" for c in BUNDLED_UNSEEN)
              + " | mean AUC | mean F1 |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for variant in VARIANTS:
        scores = [scored[c]["scores"][variant] for c in BUNDLED_UNSEEN if variant in scored.get(c, {}).get("scores", {})]
        if not scores:
            continue
        cells = [(f"{s['AUC_pooled']:.4f} / {s['F1']:.3f} / {s['worst_AUC']:.3f}"
                  if (s := scored.get(c, {}).get("scores", {}).get(variant)) else "-") for c in BUNDLED_UNSEEN]
        complete = len(scores) == len(BUNDLED_UNSEEN)
        means = (f"{statistics.fmean(s['AUC_pooled'] for s in scores):.4f} | "
                 f"{statistics.fmean(s['F1'] for s in scores):.3f}") if complete else "- | -"
        model = next(iter(scored.values()))["model"]
        lines.append(f"| {model} | {variant} | " + " | ".join(cells) + f" | {means} |")
    return ["", *lines]


def _recipe_row(recipe: str, variant: str, summary: dict[str, Any]) -> str:
    cells = []
    for camera in CAMERAS:
        score = summary["cameras"].get(camera)
        cells.append("-" if score is None else f"{score['AUC_pooled']:.4f} / {score['F1']:.3f}")
    worst = min((c["worst_AUC"] for c in summary["cameras"].values()), default=None)
    means = (f"{_cell(summary['AUC_pooled'])} | {_cell(summary['F1'], 3)}" if summary["complete"] else "- | -")
    return f"| {recipe} | {variant} | " + " | ".join(cells) + f" | {means} | {_cell(worst, 3)} |"


def _recipe_header(what: str) -> list[str]:
    header = (f"| {what} | variant | " + " | ".join(f"{c} AUC / F1" for c in CAMERAS)
              + " | mean AUC | mean F1 | worst image AUC |")
    return [header, "|" + "---|" * (header.count("|") - 1)]


def full_length_table(results: dict[str, Any]) -> list[str]:
    """The shipped recipe at full length, at each variant scored, with issue 30's bar for each."""
    rows, verdicts = [], []
    for variant in VARIANTS:
        summary = pooled(results, FULL_LENGTH_RECIPE, variant)
        if not summary["cameras"]:
            continue
        rows.append(_recipe_row(FULL_LENGTH_RECIPE, variant, summary))
        verdict = bar_verdict(summary)
        below = ", ".join(f"{camera} {auc:.4f}" for camera, auc in verdict["below"].items())
        verdicts.append(f"{variant}: " + {True: "holds", False: f"misses ({below})",
                                          None: f"no verdict ({len(summary['cameras'])} of 5)"}[verdict["holds"]])
    if not rows:
        return []
    steps = f"{FULL_LENGTH_STEPS_PER_CAMERA} steps per camera"
    size_bar = size_bar_line(results)
    return ["", *_recipe_header(f"recipe (compact U-Net, {steps})"), *rows, "",
            f"Issue 30's bar (every camera AUC >= {AUC_BAR:.3f}): " + "; ".join(verdicts),
            *([size_bar] if size_bar else [])]


def table(results: dict[str, Any]) -> str:
    """The markdown tables of docs/RESULTS.md (the protocol's runs, the bundled model) and the rules' verdicts."""
    rows, summaries = [], {}
    for recipe in RECIPES:
        for variant in VARIANTS:
            summary = summaries[(recipe, variant)] = pooled(results, recipe, variant)
            if not summary["cameras"] or (recipe != "today" and variant != "auto"):
                continue  # the rules judge other recipes at auto only; the results file has every variant
            rows.append(_recipe_row(recipe, variant, summary))
    lines = [*_recipe_header("recipe (W-Net, 2000 steps)"), *rows] if rows else []
    lines += full_length_table(results)
    lines += bundled_table(results)
    if not rows:  # no screening run: none of the screening rules to state
        return "\n".join(lines).lstrip("\n")
    lines.append("")
    for recipe in RECIPES:
        if recipe != "today":
            verdict = screen_verdict(summaries[("today", "auto")], summaries[(recipe, "auto")])
            lines.append(f"Screening rule: {recipe} advances = "
                         + ("no verdict (not all five cameras scored)" if verdict["advance"] is None
                            else f"{verdict['advance']} ({verdict['checks']})"))
    verdict = resolution_verdict(summaries[("today", "auto")],
                                 {name: summaries[("today", name)] for name in RESOLUTION_CANDIDATES})
    lines.append("Working resolution at inference (today's runs, rule h3): "
                 + ("no verdict" if verdict["choice"] is None else
                    f"{verdict['choice']} (passing: {', '.join(verdict['passing']) or 'none'})"))
    verdict = mask_rule_verdict(summaries[("today", "auto")], summaries[("today", "auto_otsu")])
    lines.append("Mask rule (today's runs): per-image Otsu replaces the stored threshold = "
                 + ("no verdict" if verdict["otsu"] is None else f"{verdict['otsu']} (higher on {verdict['higher']} "
                    "of 5 cameras)"))
    verdict = threshold_rule_verdict(summaries[("today", "auto")],
                                     {name: summaries[("today", name)] for name in THRESHOLD_CANDIDATES})
    if any(summaries[("today", name)]["cameras"] for name in THRESHOLD_CANDIDATES):  # runs from entry p on
        lines.append("Threshold of several cameras (today's runs, rule p1): "
                     + ("no verdict" if verdict["choice"] is None else
                        f"{verdict['choice']} (passing: {', '.join(verdict['passing']) or 'none'})"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = protocol_parser(__doc__.split("\n\n")[0], out="runs/leave_one_camera_out", records="data/cameras",
                             records_help="Folder holding one prepared folder per camera (prepared if missing).",
                             data_help="Folder with the five datasets.", results=RESULTS)
    parser.add_argument("--bundled", action="store_true",
                        help=f"Only score the bundled model on {', '.join(BUNDLED_UNSEEN)} (cameras it has not seen).")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=tuple(VARIANTS),
                        help="Scoring variants of the runs (default: all).")
    args = parser.parse_args(argv)
    if args.summarize:
        print(table(load_results(args.results)))
        return
    if args.bundled:
        print(table(score_bundled(args.out, args.results, data=args.data)))
        return
    runs = [run for run in planned_runs() if args.only is None or run.name in args.only]
    if not args.no_train:
        for camera, (folder, split, _) in CAMERAS.items():
            if not (args.records / camera / "manifest.json").is_file():
                subprocess.run([KERAS_VESSEL, "prepare", "--dataset", camera, "--root", str(args.data / folder),
                                "--split", split, "--out", str(args.records / camera), "--workers", "2", "--quiet"],
                               check=True)
        train_all(runs, args.out, args.records, jobs=args.jobs, keras_vessel=KERAS_VESSEL)
    print(table(score_all(runs, args.out, args.results, data=args.data, variants=args.variants)))


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    main()
