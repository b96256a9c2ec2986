"""Rule h7's screen (issue 30, notebook entry m): a threshold chosen on fused maps for ``--scale multi``.

For each leave-one-camera-out model (``today_wnet_without_<camera>_s0``): the accuracy-optimal threshold
chosen as `train` chooses it (every image of the run's training records, pooled FOV pixels) but on maps
predicted at ``scale="multi"`` (`keras_vessel.evaluation.thresholds.choose_training_threshold`); then
every photograph of the left-out camera predicted at ``multi`` at the labels' native resolution, with its
AUC and its F1 at the stored threshold (chosen at the model's own scale) and at the fused one. The pooled
AUC must equal entry k's ``fuse3`` (``--reference-results``, the multi_resolution screen's results) to 3
decimals: the same maps.

    .venv/bin/python -m experiments.fused_threshold --runs /work/lab/runs/loco --results fused_threshold.json \
        --reference-results multi_resolution.json

Resumable: each camera's threshold and scores are written to ``--results`` as soon as they are computed.

``--store MODEL --records FOLDER ...`` (no ``--runs``) gives a model trained before `train` chose both thresholds (the bundled
``general_unet``) its ``threshold_multi.json``: chosen on the prepared records of its training images, after
checking that the threshold chosen on them at the model's own scale is its stored ``threshold.json`` (the same
images), within `SAME_THRESHOLD`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from experiments.leave_one_camera_out import CAMERAS
from experiments.per_photograph_resolution import screen_parser

SCALE = "multi"
# How far the threshold chosen again on a model's training images may be from its stored one: a threshold stored
# from exact score counts and one chosen from `ScoreCounts`' bins differ by a few bins (the flat top of the
# accuracy curve), other images by far more.
SAME_THRESHOLD = 1e-4
THRESHOLDS = ("stored", "fused")


def fused_training_threshold(run: Path) -> dict[str, Any]:
    """The accuracy-optimal threshold of run folder `run` on its training images (those `train` chose its
    threshold on: `run_training_samples`) predicted at ``multi``."""
    from keras_vessel.config import load_config
    from keras_vessel.evaluation.thresholds import choose_training_threshold, run_training_samples
    from keras_vessel.models.inference import load_inference_model
    from keras_vessel.training import RunFolder

    folder = RunFolder(run)
    config = load_config(folder.config_path)
    samples = run_training_samples(folder, config)
    model = load_inference_model(folder.model_path, heads=config.train.heads)
    value = choose_training_threshold(model, samples, predict_options={"scale": SCALE})
    return {"threshold": value, "images": len(samples)}


def store_fused_threshold(model_path: Path, records: list[Path]) -> dict[str, Any]:
    """Choose `model_path`'s threshold at ``multi`` on `records` and store it beside the model, once the threshold
    chosen on them at its own scale has been found equal to its stored one (SystemExit otherwise)."""
    from keras_vessel.data.tfrecords import combined_manifest, read_samples
    from keras_vessel.evaluation.thresholds import choose_training_threshold, load_threshold, save_threshold
    from keras_vessel.models.inference import load_inference_model

    stored = load_threshold(model_path)
    samples = read_samples(records)
    model = load_inference_model(model_path, heads=stored.get("heads") or "mean")
    own = choose_training_threshold(model, samples, predict_options={"scale": "auto"})
    if abs(own - stored["threshold"]) > SAME_THRESHOLD or len(samples) != stored.get("images", len(samples)):
        raise SystemExit(f"{len(samples)} images of {', '.join(map(str, records))} give {own:.6f} at the model's own "
                         f"scale, not its stored {stored['threshold']:.6f} ({stored.get('images')} images): not its "
                         "training images")
    fused = choose_training_threshold(model, samples, predict_options={"scale": SCALE})
    path = save_threshold(model_path, fused, heads=stored.get("heads"), dataset=combined_manifest(records)["dataset"],
                          images=len(samples), scale=SCALE)
    return {"own_scale": own, "stored": stored["threshold"], "fused": fused, "images": len(samples), "path": str(path)}


def score_camera(camera: str, run: Path, data: Path, thresholds: dict[str, float]) -> dict[str, Any]:
    """Pooled AUC, worst image AUC and mean per-image F1 at each of `thresholds` on every photograph of
    `camera`, predicted at ``multi``."""
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import metrics
    from keras_vessel.models.inference import load_inference_model, predict_probability

    model = load_inference_model(run / "model.keras")
    folder, _, test_split = CAMERAS[camera]
    counts = metrics.ScoreCounts()
    rows = []
    for spec in open_dataset(camera, data / folder, test_split):
        sample = spec.load()
        prob = predict_probability(model, sample.image, fov=sample.fov, scale=SCALE, name=sample.name)
        counts.add(prob, sample.label, sample.fov)
        row = {"name": sample.name, "AUC": metrics.roc_auc(prob, sample.label, sample.fov)}
        for rule, value in thresholds.items():
            row[f"F1_{rule}"] = metrics.confusion_metrics(prob >= value, sample.label, sample.fov)["F1"]
        rows.append(row)
        print(camera, row, flush=True)
    return {"AUC_pooled": counts.auc(), "worst_AUC": min(row["AUC"] for row in rows),
            **{f"F1_{rule}": statistics.fmean(row[f"F1_{rule}"] for row in rows) for rule in thresholds},
            "per_image": rows}


def table(results: dict[str, Any]) -> list[str]:
    """Markdown: per camera the two thresholds and multi's pooled AUC and mean F1 at each."""
    lines = ["| camera | stored t | fused t | AUC pooled | F1 stored | F1 fused |", "|---" * 6 + "|"]
    for camera in (c for c in CAMERAS if c in results and "scores" in results[c]):
        entry = results[camera]
        scores = entry["scores"]
        lines.append(f"| {camera} | {entry['stored']:.3f} | {entry['fused']['threshold']:.3f} | "
                     f"{scores['AUC_pooled']:.4f} | {scores['F1_stored']:.3f} | {scores['F1_fused']:.3f} |")
    scored = [results[c]["scores"] for c in CAMERAS if c in results and "scores" in results[c]]
    if scored:
        lines.append("| mean | | | " + " | ".join(f"{statistics.fmean(s[key] for s in scored):.{digits}f}"
                                                for key, digits in (("AUC_pooled", 4), ("F1_stored", 3),
                                                                    ("F1_fused", 3))) + " |")
    return lines


def save(path: Path, results: dict[str, Any]) -> None:
    temporary = path.with_suffix(".partial")
    temporary.write_text(json.dumps(results, indent=1))
    temporary.replace(path)


def main() -> None:
    from keras_vessel.evaluation.thresholds import load_threshold

    parser = screen_parser(__doc__.splitlines()[0], runs_required=False)
    parser.add_argument("--results", type=Path, help="Results JSON (resumable).")
    parser.add_argument("--reference-results", type=Path,
                        help="The multi_resolution screen's results (entry k), whose fuse3 AUC must be matched.")
    parser.add_argument("--only", nargs="*", default=list(CAMERAS), help="Cameras to score.")
    parser.add_argument("--store", type=Path, metavar="MODEL", help="Store MODEL's threshold_multi.json instead.")
    parser.add_argument("--records", type=Path, nargs="+", help="With --store: its training images' records.")
    arguments = parser.parse_args()
    if arguments.store is not None:
        if not arguments.records:
            parser.error("--store needs --records")
        print(json.dumps(store_fused_threshold(arguments.store, arguments.records), indent=1))
        return
    if arguments.runs is None or arguments.results is None or arguments.reference_results is None:
        parser.error("--runs, --results and --reference-results are required (or --store)")
    results = json.loads(arguments.results.read_text()) if arguments.results.exists() else {}
    reference = json.loads(arguments.reference_results.read_text())
    for camera in arguments.only:
        run = arguments.runs / f"today_wnet_without_{camera}_s0"
        entry = results.setdefault(camera, {"stored": load_threshold(run / "model.keras")["threshold"]})
        if "fused" not in entry:
            entry["fused"] = fused_training_threshold(run)
            save(arguments.results, results)
        if "scores" not in entry:
            entry["scores"] = score_camera(camera, run, arguments.data,
                                           {"stored": entry["stored"], "fused": entry["fused"]["threshold"]})
            expected = reference[camera]["fuse3"]["AUC_pooled"]
            entry["same_maps_as_entry_k"] = round(entry["scores"]["AUC_pooled"], 3) == round(expected, 3)
            save(arguments.results, results)
            if not entry["same_maps_as_entry_k"]:
                raise SystemExit(f"{camera}: pooled AUC at multi {entry['scores']['AUC_pooled']:.4f} is not entry "
                                 f"k's fuse3 {expected:.4f}: not the same maps; stop and look.")
    print("\n".join(table(results)))


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    main()
