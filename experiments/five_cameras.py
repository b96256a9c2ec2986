"""Models on the test photographs of all five cameras: the five-camera W-Net (rules n1 and n2).

The run (``--train``): `configs/general_wnet.yaml` (the general recipe on issue 23's W-Net, 18,900 steps,
seed 0) trained on the fine-tuning pools of all five development cameras
(`experiments.finetune_protocol.pool_records`: DRIVE 21-40, CHASE_DB1 01L-10R and ORVS ``Train/`` from the
leave-one-camera-out records of those splits, HRF's and LES-AV's first five photographs prepared into
``<out>/records/pool_<camera>``), every photograph trained on. Each model (the run, the bundled U-Net, any
``--model NAME=PATH``) is scored on each camera's test photographs
(`experiments.finetune_protocol.camera_photographs`), at the labels' resolution, ``--scale auto``, the
threshold stored beside it: pooled AUC, mean per-image F1, the worst image, thin-vessel sensitivity.
``--speed`` times the two networks side by side at ``auto`` on three of HRF's test photographs (8 MP: rule n1)
and on three of DRIVE's (where the network's share of the time is largest).

The rules were written before the run (docs/notebook/2026-12-07-n-five-camera-wnet.md): n1 ships the run as
the fast model when it is within `FAST_AUC_MARGIN` of the bundled U-Net on DRIVE's and CHASE_DB1's test
photographs, at or above it in pooled AUC and mean F1 on the three other cameras, in at most `FAST_TIME_RATIO`
of its time; n2 reads the cost of three more cameras at the same budget against the two-camera W-Net of
notebook g (`TWO_CAMERA_WNET`).

    .venv/bin/python -m experiments.five_cameras --loco-records RECORDS --out OUT [--train] [--speed]
    .venv/bin/python -m experiments.five_cameras --summarize

Resumable: a finished training or a score of the same model file (by SHA-256) is not redone. Results go to
``experiments/results/five_cameras.json``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.cross_dataset import KERAS_VESSEL, REPOSITORY, SHARED, finished_run, load_results, save_results
from experiments.finetune_protocol import camera_photographs, pool_records, score_once
from experiments.leave_one_camera_out import CAMERAS

RESULTS = REPOSITORY / "experiments" / "results" / "five_cameras.json"
CONFIG = REPOSITORY / "configs" / "general_wnet.yaml"
RUN = "five_wnet_s0"
SEED = 0
BUNDLED = "general_unet_v1"  # the bundled model rule n1 compares with (DRIVE + CHASE_DB1)
FAST = "five_wnet"
BENCHMARK_CAMERAS = ("drive", "chase_db1")  # where the fast model must stay close to the bundled one
NEW_CAMERAS = ("hrf", "orvs", "les_av")  # where it must be at or above it
FAST_AUC_MARGIN = 0.005  # issue 32 item 3: within 0.005 AUC of the bundled model
FAST_TIME_RATIO = 1 / 3  # issue 32 item 3: at a third of its time or less
# Rule n2: notebook g's two-camera general W-Net (configs/general_wnet.yaml on DRIVE + CHASE_DB1, same budget)
TWO_CAMERA_WNET = {"drive": 0.9745, "chase_db1": 0.9818}
BUDGET_AUC_MARGIN = 0.003
# Rule o1 (docs/notebook/2026-12-07-o-bundled-v2.md): the bundled model v2, configs/general.yaml on the five pools
V2 = "general_unet_v2"
# Rule p2 (docs/notebook/2026-12-07-p-camera-balanced-threshold.md): the same at 45,000 steps, judged as o1
V2_LONGER = "general_unet_v2_45k"
V2_AUC_BARS = {"drive": 0.978, "chase_db1": 0.983}  # issue 30's bars for the bundled model


def train_command(run_dir: Path, records: Sequence[Path], *, keras_vessel: str = KERAS_VESSEL) -> list[str]:
    """`keras-vessel train`'s argv for the five-camera run on `records` (one folder per camera)."""
    folders = ", ".join(str(folder) for folder in records)
    return [keras_vessel, "train", "--config", str(CONFIG), "--set", f"data.train_records=[{folders}]",
            "--set", "data.validation_images=0", "--set", f"train.seed={SEED}", "--output", str(run_dir)]


def train(out: Path, *, loco_records: Path, data: Path) -> Path:
    """Train the five-camera run into ``out / RUN`` unless it finished there; its model's path."""
    run_dir = out / RUN
    if not finished_run(run_dir):
        records = [pool_records(camera, loco_records=loco_records, out=out, data=data) for camera in CAMERAS]
        print(f"train {run_dir}", file=sys.stderr, flush=True)
        with (out / f"{RUN}.log").open("a") as log:
            subprocess.run(train_command(run_dir, records), stdout=log, stderr=subprocess.STDOUT, check=True)
    return run_dir / "model.keras"


def score(models: Mapping[str, Path], *, out: Path, data: Path, results: dict[str, Any], results_path: Path) -> None:
    """Score each model on each camera's test photographs into ``results["scores"][name][camera]``
    (`experiments.finetune_protocol.score_once`: not again for the same file)."""
    for name, path in models.items():
        slot = results.setdefault("scores", {}).setdefault(name, {})
        for camera in CAMERAS:
            _, test, rule = camera_photographs(camera, data)
            score_once(slot, camera, path, test, out / "scores" / name / camera, camera=camera, split="test",
                       results=results, results_path=results_path, what=name, record={"split": rule})


def time_networks(models: Mapping[str, Path], photographs: Sequence, *, rounds: int = 3) -> dict[str, Any]:
    """Seconds per photograph of each model at ``--scale auto`` (FOV, resampling, network; decoded beforehand),
    interleaved rounds in this process after one warm-up each; the median over rounds and photographs."""
    from keras_vessel.models.inference import load_inference_model, predict_probability

    loaded = {name: load_inference_model(path) for name, path in models.items()}
    images = [spec.load().image for spec in photographs]
    for model in loaded.values():
        predict_probability(model, images[0], scale="auto")
    seconds: dict[str, list[float]] = {name: [] for name in loaded}
    for _ in range(rounds):
        for name, model in loaded.items():
            for image in images:
                start = time.perf_counter()
                predict_probability(model, image, scale="auto")
                seconds[name].append(time.perf_counter() - start)
    return {"photographs": [spec.name for spec in photographs], "size": list(images[0].shape[:2]), "rounds": rounds,
            "seconds": {name: statistics.median(values) for name, values in seconds.items()}}


def fast_verdict(results: Mapping[str, Any]) -> dict[str, Any]:
    """Rule n1: the five-camera W-Net ships as the fast model when every condition holds (None: not measured)."""
    bundled, fast = results["scores"][BUNDLED], results["scores"][FAST]
    checks: dict[str, bool | None] = {}
    for camera in BENCHMARK_CAMERAS:
        checks[f"{camera}_AUC_within"] = (fast[camera]["scores"]["AUC_pooled"]
                                          >= bundled[camera]["scores"]["AUC_pooled"] - FAST_AUC_MARGIN)
    for camera in NEW_CAMERAS:
        checks[f"{camera}_not_below"] = all(fast[camera]["scores"][key] >= bundled[camera]["scores"][key]
                                            for key in ("AUC_pooled", "F1"))
    speed = results.get("speed")
    checks["time_ratio"] = None if speed is None else (
        speed["seconds"][FAST] <= FAST_TIME_RATIO * speed["seconds"][BUNDLED])
    return {"checks": checks, "ship": all(value is True for value in checks.values())}


def budget_verdict(results: Mapping[str, Any]) -> dict[str, Any]:
    """Rule n2: True when three more cameras at the same budget cost the benchmarks at most `BUDGET_AUC_MARGIN`."""
    fast = results["scores"][FAST]
    checks = {camera: fast[camera]["scores"]["AUC_pooled"] >= auc - BUDGET_AUC_MARGIN
              for camera, auc in TWO_CAMERA_WNET.items()}
    return {"checks": checks, "v2_at_v1_budget": all(checks.values())}


def v2_verdict(results: Mapping[str, Any], name: str = V2) -> dict[str, Any]:
    """Rule o1 (and p2 for `V2_LONGER`): the candidate `name` ships as v2 when it meets issue 30's AUC bars and
    is not below v1 in pooled AUC or mean F1 on any of the three cameras v1 had not seen."""
    v1, v2 = results["scores"][BUNDLED], results["scores"][name]
    checks = {f"{camera}_AUC_bar": v2[camera]["scores"]["AUC_pooled"] >= bar for camera, bar in V2_AUC_BARS.items()}
    for camera in NEW_CAMERAS:
        checks[f"{camera}_not_below_v1"] = all(v2[camera]["scores"][key] >= v1[camera]["scores"][key]
                                               for key in ("AUC_pooled", "F1"))
    return {"checks": checks, "ship": all(checks.values())}


def table(results: Mapping[str, Any]) -> str:
    """The RESULTS table: each model's pooled AUC / mean F1 per camera, their means and the worst image's AUC."""
    cameras = list(CAMERAS)
    header = ["model", *(f"{camera} AUC / F1" for camera in cameras), "mean AUC", "mean F1", "worst image AUC"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, by_camera in results["scores"].items():
        if not all(camera in by_camera for camera in cameras):
            continue
        scores = [by_camera[camera]["scores"] for camera in cameras]
        cells = [f"{s['AUC_pooled']:.4f} / {s['F1']:.3f}" for s in scores]
        lines.append("| " + " | ".join([name, *cells, f"{statistics.mean(s['AUC_pooled'] for s in scores):.4f}",
                                        f"{statistics.mean(s['F1'] for s in scores):.3f}",
                                        f"{min(s['worst_AUC'] for s in scores):.3f}"]) + " |")
    for candidate, rule in ((V2, "Rule o1 (bundled v2)"), (V2_LONGER, "Rule p2 (v2, 45,000 steps)")):
        if all(name in results["scores"] for name in (BUNDLED, candidate)):
            verdict = v2_verdict(results, candidate)
            lines.append("")
            lines.append(f"{rule}: ship = {verdict['ship']} ({_said(verdict['checks'])})")
    if BUNDLED in results["scores"] and FAST in results["scores"]:
        timed = []
        for key, what in (("speed", "8 MP photograph"), ("speed_drive", "DRIVE image")):
            if key in results:
                seconds = results[key]["seconds"]
                timed.append(f"per {what}: " + ", ".join(f"{name} {value:.2f}" for name, value in seconds.items())
                             + f" (ratio {seconds[FAST] / seconds[BUNDLED]:.2f})")
        if timed:
            lines.append("")
            lines.append("Seconds at auto (FOV, resampling, network; side by side) " + "; ".join(timed))
        fast, budget = fast_verdict(results), budget_verdict(results)
        lines.append("")
        lines.append(f"Rule n1 (fast model): ship = {fast['ship']} ({_said(fast['checks'])})")
        lines.append(f"Rule n2 (v2 at v1's budget) = {budget['v2_at_v1_budget']} ({_said(budget['checks'])})")
    return "\n".join(lines)


def _said(checks: Mapping[str, bool | None]) -> str:
    """A rule's checks in a few words: the ones it misses and those not measured, or that all hold."""
    said = [f"{what}: {', '.join(key for key, value in checks.items() if value is state)}"
            for what, state in (("misses", False), ("not measured", None))
            if any(value is state for value in checks.values())]
    return "; ".join(said) or "every check holds"


def bundled_name(model: Path, results: Mapping[str, Any] | None = None) -> str:
    """The results' name of the bundled model `model`: the name its very file (SHA-256) was scored under
    already (version 2 shipped as the candidate ``general_unet_v2_45k``), else ``general_unet_vN``, N its
    highest served version."""
    if results:
        from keras_vessel.io import file_sha256

        sha256 = file_sha256(model)
        for name, cameras in results.get("scores", {}).items():
            if any(entry.get("model", {}).get("sha256") == sha256 for entry in cameras.values()):
                return name
    versions = [int(folder.name) for folder in model.parent.iterdir() if folder.name.isdigit()]
    return f"{model.parent.name}_v{max(versions)}"


def parse_models(values: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` options as a mapping; SystemExit naming the value without ``=``."""
    models = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--model {value!r}: give NAME=PATH to a .keras file")
        models[name] = Path(path)
    return models


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/five_cameras"), help="Folder of the run and scores.")
    parser.add_argument("--loco-records", type=Path, default=Path("data/cameras"),
                        help="The leave-one-camera-out records (<camera> folders of the training splits).")
    parser.add_argument("--data", type=Path, default=SHARED, help="The development sets (../shared/data).")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Results JSON.")
    parser.add_argument("--train", action="store_true", help="Train the five-camera run first (resumable).")
    parser.add_argument("--model", action="append", default=[], help="Also score NAME=PATH.keras.")
    parser.add_argument("--speed", action="store_true", help="Time the bundled and the five-camera model.")
    parser.add_argument("--summarize", action="store_true", help="Only print the table from the results.")
    args = parser.parse_args(argv)
    results = load_results(args.results)
    if not args.summarize:
        from keras_vessel.models.inference import bundled_model_path

        run_model = args.out / RUN / "model.keras"
        if args.train:
            run_model = train(args.out, loco_records=args.loco_records, data=args.data)
        bundled = bundled_model_path()
        models = {bundled_name(bundled, results): bundled, **parse_models(args.model)}
        if finished_run(args.out / RUN):  # its thresholds are chosen once training has ended
            models[FAST] = run_model
        score(models, out=args.out, data=args.data, results=results, results_path=args.results)
        if args.speed and FAST in models:
            pair = {BUNDLED: bundled, FAST: models[FAST]}  # v1 and v2 are the same network: the same time
            for key, camera in (("speed", "hrf"), ("speed_drive", "drive")):  # the rule's 8 MP; DRIVE's size
                _, test, _ = camera_photographs(camera, args.data)
                results[key] = time_networks(pair, test[:3])
            save_results(args.results, results)
    print(table(results))


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    main()
