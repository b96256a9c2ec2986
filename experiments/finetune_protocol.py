"""The fine-tuning protocol (issue 31, item 2): a camera left out, then fine-tuned on k of its photographs.

For each development camera X of the leave-one-camera-out protocol (`CAMERAS` of
`experiments.leave_one_camera_out`) the base model is that protocol's *today* run without X
(``<loco-out>/today_wnet_without_X_s0/model.keras``, the screening W-Net; ``--base X=PATH`` gives
another). It is fine-tuned with `keras_vessel.finetune.finetune` (what `keras-vessel finetune`
runs, default 10 minutes) on k = 1, 3 and 5 photographs of X, and every model is scored on X's
test photographs, which no fine-tuning has seen, at the labels' native resolution (each photograph
run at the model's FOV diameter, scale auto, the probability resampled back) with the model's own
stored threshold: pooled AUC, mean per-image F1, the worst image (AUC and F1), and the fine-tuning's
wall time. The base model is scored the same way on the same photographs, and so is a model trained
on X alone: given (``--reference X=PATH``), or trained here (``--train-references``, `ReferenceRun`: the
base models' recipe and budget from scratch on X's whole pool, rule j3 of notebook entry m; the published
pools from the leave-one-camera-out records ``--loco-records``, the 5-photograph pools prepared into
``<out>/records/pool_X``).

Photographs (`SPLITS`, `camera_photographs`, `choose`). DRIVE, CHASE_DB1 and ORVS: the fine-tuning
pool is the published training split (DRIVE 21-40, CHASE_DB1 01L-10R, ORVS ``Train/``), the test
photographs the published test split (DRIVE 01-20, CHASE_DB1 11L-14R, ORVS ``Test/``). HRF (the
15-photograph training split 01-05 that ``../shared/data/HRF`` holds) and LES-AV (22, no published
split): the first `FIXED_POOL` (5) photographs in the reader's order are the pool (HRF 01_dr, 01_g,
01_h, 02_dr, 02_g; LES-AV 12, 15, 33, 34, 37), the others the test photographs (HRF 10, LES-AV 17).
The k photographs are the first k of the pool shuffled by a generator seeded with the camera's name
and `CHOICE_SEED`: fixed, nested (k = 1 within k = 3 within k = 5) and recorded in the results.

The photographs reach `finetune` as files: the original files, linked by symbolic links named after
the sample (``images/21_training.tif -> .../DRIVE/training/images/21_training.tif``, the label and
the FOV mask under the same stem) in ``<out>/photographs/<run>``, removed once the fine-tuning
has finished. FOV masks are given where the dataset ships them (DRIVE, HRF, LES-AV); without them
(CHASE_DB1, ORVS) the FOV is the region `predict` keeps, as for a user without masks. A reader that
does not read its files as they are (ORVS: lossy JPEG labels cut at 127, one label padded) has its
labels written as the reader reads them (binary PNGs) in that folder instead. Nothing is copied into
the repository.

    .venv/bin/python -m experiments.finetune_protocol --loco-out runs/leave_one_camera_out --out runs/finetune_protocol [--only CAMERA ...] [--k 5] [--minutes 10] [--reference drive=PATH ...]
    .venv/bin/python -m experiments.finetune_protocol ... --train-references --loco-records data/cameras
    .venv/bin/python -m experiments.finetune_protocol --summarize

Resumable: a finished fine-tuning or score is not redone (a stopped fine-tuning is resumed by
`finetune` itself). Results go to ``experiments/results/finetune_protocol.json``; the rules written
before the runs are in docs/notebook/2026-12-06-j-finetune-protocol.md; `--summarize` prints the table
and the verdict of issue 31's "done when" (`done_verdict`).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.cross_dataset import (
    KERAS_VESSEL,
    REPOSITORY,
    finished_run,
    load_results,
    protocol_parser,
    save_results,
    summarise,
    train_all,
)
from experiments.leave_one_camera_out import CAMERAS, CameraRun, screen_train_command

RESULTS = REPOSITORY / "experiments" / "results" / "finetune_protocol.json"
KS = (1, 3, 5)  # photographs fine-tuned on
DEFAULT_MINUTES = 10.0  # each fine-tuning's budget (`keras-vessel finetune`'s default)
CHOICE_SEED = 0  # of the order in which a camera's pool is drawn
FIXED_POOL = 5  # photographs of the pool where the protocol defines the split
SEED = 0  # of the fine-tunings (patches, augmentation)
# camera -> (the reader's split holding the fine-tuning pool, the reader's split of the test photographs);
# None: no published test split here, the first FIXED_POOL photographs of the first split are the pool, the rest test
SPLITS: dict[str, tuple[str, str | None]] = {
    "drive": ("training", "test"),
    "chase_db1": ("training", "test"),
    "hrf": ("training", None),  # ../shared/data/HRF is HRF's training split (01-05 of each category)
    "orvs": ("training", "test"),
    "les_av": ("all", None),
}
# The "done when": k = 5 at the default budget beats the base model, its mean F1 this close to the reference.
DONE_K = 5
REFERENCE_F1_MARGIN = 0.02


# --------------------------------------------------------------------------- photographs


def camera_photographs(camera: str, data: Path) -> tuple[list, list, str]:
    """``(pool, test, rule)``: the `SampleSpec`s X can be fine-tuned on, those it is tested on, and how they split."""
    from keras_vessel.data.datasets import open_dataset

    root = data / CAMERAS[camera][0]
    pool_split, test_split = SPLITS[camera]
    pool = open_dataset(camera, root, pool_split)
    if test_split is not None:
        return pool, open_dataset(camera, root, test_split), f"published: {pool_split} / {test_split}"
    rule = (f"fixed: the first {FIXED_POOL} of its {pool_split} split in the reader's order / "
            f"the other {len(pool) - FIXED_POOL}")
    return pool[:FIXED_POOL], pool[FIXED_POOL:], rule


def choose(pool: Sequence[str], camera: str, k: int, *, seed: int = CHOICE_SEED) -> list[str]:
    """The k photographs (names) of `pool` fine-tuned on: the first k of the sorted pool shuffled by a generator
    seeded with `camera` and `seed`, so the choice is fixed and k = 1 within k = 3 within k = 5."""
    if not 1 <= k <= len(pool):
        raise ValueError(f"{camera}: k = {k} photographs asked of a pool of {len(pool)}")
    order = sorted(pool)
    random.Random(f"finetune_protocol:{camera}:{seed}").shuffle(order)
    return order[:k]


def photograph_files(spec) -> dict[str, Any]:
    """The files a reader's sample is read from: ``image``, ``label``, ``mask`` (None: derived) and ``as_is``
    (False when the reader does not read the label as it is on disk, e.g. ORVS's graded JPEG labels)."""
    from keras_vessel.data.datasets.base import load_files

    arguments = spec.load.args
    if getattr(spec.load, "func", None) is load_files:
        _, image, label, mask = arguments[:4]
        return {"image": image, "label": label, "mask": mask, "as_is": True}
    paths = [argument for argument in arguments if isinstance(argument, Path)]
    return {"image": paths[0], "label": paths[1], "mask": None, "as_is": False}


def _record(spec) -> dict[str, Any]:
    """The results' record of one photograph: its name, its original files, whether its label was linked as is."""
    files = photograph_files(spec)
    return {"name": spec.name, **{key: str(files[key]) for key in ("image", "label", "mask") if files[key]},
            "label_as_is": files["as_is"]}


def link_photographs(specs: Sequence, folder: Path) -> dict[str, Path | None]:
    """``folder/images``, ``labels`` and (when every sample has one) ``masks``, one file per sample named after it:
    symbolic links to the original files, or a label written as its reader reads it. Returns the three folders."""
    from keras_vessel.data.datasets.folder import split_stem
    from keras_vessel.io import write_png_atomic

    shutil.rmtree(folder, ignore_errors=True)
    files = [photograph_files(spec) for spec in specs]
    with_masks = all(f["mask"] is not None for f in files)
    folders = {"images": folder / "images", "labels": folder / "labels",
               "masks": folder / "masks" if with_masks else None}
    for path in folders.values():
        if path is not None:
            path.mkdir(parents=True)
    for spec, found in zip(specs, files):
        (folders["images"] / (spec.name + split_stem(found["image"])[1])).symlink_to(found["image"].resolve())
        if found["as_is"]:
            (folders["labels"] / (spec.name + split_stem(found["label"])[1])).symlink_to(found["label"].resolve())
        else:
            write_png_atomic(folders["labels"] / f"{spec.name}.png", spec.load().label.astype("uint8") * 255)
        if with_masks:
            (folders["masks"] / (spec.name + split_stem(found["mask"])[1])).symlink_to(found["mask"].resolve())
    return folders


# --------------------------------------------------------------------------- the references (rule j3)


@dataclass(frozen=True)
class ReferenceRun:
    """A model trained on camera X alone (rule j3, notebook entry m): the base models' recipe, budget and seed
    (`CameraRun`'s *today* run) from scratch on the prepared records of X's whole fine-tuning pool, every
    photograph trained on (``data.validation_images=0``, as `finetune` trains)."""

    camera: str
    records: Path  # the pool's prepared records (`pool_records`)
    seed: int = SEED

    @property
    def name(self) -> str:
        return f"reference_wnet_{self.camera}_s{self.seed}"

    def train_command(self, keras_vessel: str, records: Path | None, out: Path) -> list[str]:
        """`train_all`'s call; `records` is unused (the pool's folder is `self.records`)."""
        base = CameraRun("today", self.camera, seed=self.seed)
        return screen_train_command(keras_vessel, [self.records], out / self.name, recipe=base.recipe,
                                    seed=self.seed, epochs=base.epochs, sets=("data.validation_images=0",))


def pool_records(camera: str, *, loco_records: Path, out: Path, data: Path) -> Path:
    """The prepared records of `camera`'s fine-tuning pool: the leave-one-camera-out records of its published
    training split (the same split), or its fixed pool prepared into ``<out>/records/pool_<camera>`` (resumable).
    SystemExit when the records there do not hold exactly the pool's photographs."""
    from keras_vessel.data.tfrecords import read_manifest, write_dataset

    pool, _, _ = camera_photographs(camera, data)
    if SPLITS[camera][1] is not None:
        assert CAMERAS[camera][1] == SPLITS[camera][0], f"{camera}: the protocol's records are of another split"
        folder = loco_records / camera
        if not (folder / "manifest.json").is_file():
            raise SystemExit(f"no records of {camera}'s training split in {folder}: prepare them with "
                             "experiments.leave_one_camera_out or give --loco-records")
    else:
        folder = out / "records" / f"pool_{camera}"
        write_dataset(pool, folder, dataset=camera, split="pool", show_progress=False)
    held = sorted(image["name"] for image in read_manifest(folder)["images"])
    if held != sorted(spec.name for spec in pool):
        raise SystemExit(f"{folder} holds {', '.join(held)}, not {camera}'s fine-tuning pool "
                         f"({', '.join(sorted(spec.name for spec in pool))}); give another --loco-records or --out")
    return folder


def train_reference(camera: str, *, out: Path, data: Path, loco_records: Path) -> Path:
    """Train `camera`'s `ReferenceRun` into ``<out>/<its name>`` unless finished; returns its model file."""
    run = ReferenceRun(camera, pool_records(camera, loco_records=loco_records, out=out, data=data))
    train_all([run], out, None, jobs=1, keras_vessel=KERAS_VESSEL)
    if not finished_run(out / run.name):
        raise SystemExit(f"the reference {run.name} did not finish; see {out / (run.name + '.log')}")
    return out / run.name / "model.keras"


# --------------------------------------------------------------------------- fine-tuning and scoring


def run_name(camera: str, k: int, minutes: float = DEFAULT_MINUTES, seed: int = SEED,
             learning_rate_factor: float | None = None) -> str:
    """The run folder's name; a learning-rate factor other than the recipe's (None) is part of it."""
    factor = "" if learning_rate_factor is None else f"_lr{learning_rate_factor:g}"
    return f"{camera}_k{k}_{minutes:g}min_s{seed}{factor}"


def finetune_photographs(folders: Mapping[str, Path | None], output: Path, *, base: Path, minutes: float,
                         seed: int, learning_rate_factor: float | None = None) -> dict[str, Any]:
    """Run `keras_vessel.finetune.finetune` on the linked photographs; what it did and its wall time."""
    from keras_vessel.finetune import finetune

    started = time.monotonic()
    result = finetune(folders["images"], folders["labels"], output, masks=folders["masks"], model=base,
                      minutes=minutes, seed=seed, learning_rate_factor=learning_rate_factor, progress=False)
    return {"status": result.status, "threshold": result.threshold, "rule": result.rule,
            "wall_seconds": time.monotonic() - started, "budget": result.report.get("budget")}


def score_model(model_path: Path, samples: Sequence, output: Path, *, camera: str, split: str,
                progress: bool = False) -> dict[str, Any]:
    """`summarise` of the model on `samples` at the labels' native resolution (scale auto) with the threshold stored
    beside it (for the heads it was stored for); the report goes to `output`."""
    from keras_vessel.evaluation import evaluate
    from keras_vessel.evaluation.thresholds import load_threshold
    from keras_vessel.models.inference import load_inference_model

    stored = load_threshold(model_path)
    heads = stored.get("heads") or "mean"
    report = evaluate(load_inference_model(model_path, heads=heads), samples, output_dir=output,
                      threshold=stored["threshold"], threshold_rule=f"stored beside the model: {stored['rule']}",
                      dataset=camera, split=split, model_path=model_path, heads=heads, overlays=False,
                      progress=progress, predict_options={"scale": "auto"})
    return summarise(report)


def _model(path: Path) -> dict[str, str]:
    from keras_vessel.io import file_sha256

    return {"path": str(path), "sha256": file_sha256(path)}


def score_once(slot: dict[str, Any], key: str, path: Path, samples: Sequence, output: Path, *, camera: str,
               split: str, results: dict[str, Any], results_path: Path, what: str,
               record: Mapping[str, Any] | None = None) -> None:
    """Score `path` (`score_model`) into ``slot[key]`` unless the same file (by SHA-256) is scored there already,
    then save `results` to `results_path`; ``record`` (e.g. how the photographs were split) goes beside."""
    model = _model(path)
    entry = slot.get(key)
    if entry and entry["model"]["sha256"] == model["sha256"] and "scores" in entry:
        return
    print(f"score {what} on {len(samples)} {camera} test photographs", file=sys.stderr, flush=True)
    slot[key] = {"model": model, **(record or {}),
                 "scores": score_model(path, samples, output, camera=camera, split=split)}
    save_results(results_path, results)


def _check_base(run_dir: Path, base: dict[str, str]) -> None:
    """SystemExit when the finished fine-tuning in `run_dir` started from another file than `base`."""
    started = json.loads((run_dir / "run.json").read_text()).get("finetune", {}).get("base_model", {})
    if started.get("sha256") not in (None, base["sha256"]):
        raise SystemExit(f"{run_dir} was fine-tuned from {started.get('path')} (SHA-256 {started['sha256'][:12]}...), "
                         f"not {base['path']}; give another --out")


def run_camera(camera: str, *, base: Path, out: Path, results: dict[str, Any], results_path: Path, data: Path,
               minutes: float = DEFAULT_MINUTES, seed: int = SEED, ks: Sequence[int] = KS,
               reference: Path | None = None, train: bool = True, learning_rate_factor: float | None = None) -> None:
    """The base model, the k-photograph fine-tunings and the reference of one camera, each scored; what is done
    (a finished fine-tuning, a score of the same file) is not redone. `learning_rate_factor` (None: the
    recipe's) names its own runs."""
    pool, test, rule = camera_photographs(camera, data)
    order = choose([s.name for s in pool], camera, len(pool))
    test_names = [s.name for s in test]
    split = "test" if SPLITS[camera][1] else f"test ({rule})"
    results.setdefault("photographs", {})[camera] = {"split": rule, "pool": sorted(s.name for s in pool),
                                                     "order": order, "test": test_names}
    base_model = _model(base)
    recorded = results.setdefault("base", {}).get(camera)
    if recorded and recorded["model"]["sha256"] != base_model["sha256"]:
        raise SystemExit(f"{results_path} holds {camera}'s protocol from another base model "
                         f"({recorded['model']['path']}, SHA-256 {recorded['model']['sha256'][:12]}...), not {base}; "
                         "give other --results and --out")
    score_once(results["base"], camera, base, test, out / f"base_{camera}", camera=camera, split=split,
               results=results, results_path=results_path, what=f"the base model {base}")
    by_name = {s.name: s for s in pool}
    for k in ks:
        name = run_name(camera, k, minutes, seed, learning_rate_factor)
        chosen = choose([s.name for s in pool], camera, k)
        facts = {"camera": camera, "k": k, "minutes": minutes, "seed": seed, "base": base_model,
                 **({} if learning_rate_factor is None else {"learning_rate_factor": learning_rate_factor})}
        run_dir = out / name
        entry = results["runs"].get(name)
        if finished_run(run_dir) and (run_dir / "threshold.json").is_file():
            _check_base(run_dir, base_model)
            if entry is None:  # finished, but not in these results (another results file): its time is unknown
                entry = results["runs"][name] = {**facts, "photographs": [{"name": n} for n in chosen],
                                                 "finetune": {"wall_seconds": None}}
        elif not train:
            continue
        else:
            print(f"fine-tune {name} on {', '.join(chosen)} ({minutes:g} min)", file=sys.stderr, flush=True)
            specs = [by_name[n] for n in chosen]
            folders = link_photographs(specs, out / "photographs" / name)
            done = finetune_photographs(folders, run_dir, base=base, minutes=minutes, seed=seed,
                                        learning_rate_factor=learning_rate_factor)
            shutil.rmtree(out / "photographs" / name, ignore_errors=True)
            entry = results["runs"][name] = {**facts, "photographs": [_record(s) for s in specs], "finetune": done}
            save_results(results_path, results)
        if "scores" not in entry:
            print(f"score {name} on {len(test)} {camera} test photographs", file=sys.stderr, flush=True)
            entry["scores"] = score_model(run_dir / "model.keras", test, run_dir / "eval_test", camera=camera,
                                          split=split)
            save_results(results_path, results)
    if reference is not None:
        score_once(results.setdefault("reference", {}), camera, reference, test, out / f"reference_{camera}",
                   camera=camera, split=split, results=results, results_path=results_path,
                   what=f"the reference {reference}")


def run_protocol(cameras: Sequence[str], *, out: Path, results_path: Path, data: Path, loco_out: Path,
                 bases: Mapping[str, Path] | None = None, references: Mapping[str, Path] | None = None,
                 minutes: float = DEFAULT_MINUTES, seed: int = SEED, ks: Sequence[int] = KS,
                 train: bool = True, loco_records: Path | None = None,
                 learning_rate_factor: float | None = None) -> dict[str, Any]:
    """`run_camera` for each of `cameras` whose base model exists (the others are named and skipped), fine-tuned
    on each of `ks` photographs; with `loco_records`, a camera without a reference in `references` gets one
    trained (`train_reference`)."""
    results = load_results(results_path)
    for camera in cameras:
        base = (bases or {}).get(camera) or loco_out / CameraRun("today", camera).name / "model.keras"
        if not base.is_file():
            print(f"skip {camera}: no base model {base} (train it with experiments.leave_one_camera_out, "
                  f"or give --base {camera}=PATH)", file=sys.stderr, flush=True)
            continue
        reference = (references or {}).get(camera)
        if reference is None and loco_records is not None:
            reference = train_reference(camera, out=out, data=data, loco_records=loco_records)
        run_camera(camera, base=base, out=out, results=results, results_path=results_path, data=data,
                   minutes=minutes, seed=seed, ks=ks, reference=reference, train=train,
                   learning_rate_factor=learning_rate_factor)
    return results


# --------------------------------------------------------------------------- the table and the rule


def _runs_at(results: dict[str, Any], minutes: float, seed: int = SEED,
            learning_rate_factor: float | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["camera"], r["k"]): r for r in results.get("runs", {}).values()
            if r["minutes"] == minutes and r["seed"] == seed and "scores" in r
            and r.get("learning_rate_factor") == learning_rate_factor}


def done_verdict(results: dict[str, Any], *, minutes: float = DEFAULT_MINUTES,
                 learning_rate_factor: float | None = None) -> dict[str, Any]:
    """Issue 31's "done when": on every camera, k = 5 at `minutes` has a higher pooled AUC and mean F1 than the base
    model, and its mean F1 is at most 0.02 below the reference's where a reference is scored.

    ``done`` is None (no verdict) while a camera lacks its base or k = 5 scores (``missing``); ``checks`` holds
    each scored camera's conditions (``F1_near_reference`` None without a reference).
    """
    runs = _runs_at(results, minutes, learning_rate_factor=learning_rate_factor)
    checks, missing = {}, []
    for camera in CAMERAS:
        base = results.get("base", {}).get(camera, {}).get("scores")
        tuned = runs.get((camera, DONE_K), {}).get("scores")
        if base is None or tuned is None:
            missing.append(camera)
            continue
        reference = results.get("reference", {}).get(camera, {}).get("scores")
        checks[camera] = {
            "AUC_above_base": tuned["AUC_pooled"] > base["AUC_pooled"],
            "F1_above_base": tuned["F1"] > base["F1"],
            "F1_near_reference": None if reference is None else tuned["F1"] >= reference["F1"] - REFERENCE_F1_MARGIN,
        }
    done = None if missing else all(value is not False for check in checks.values() for value in check.values())
    return {"done": done, "missing": missing, "checks": checks}


def _cell(scores: dict[str, Any] | None) -> str:
    """``AUC / mean F1 / worst image F1``, or "-"."""
    return "-" if scores is None else f"{scores['AUC_pooled']:.4f} / {scores['F1']:.3f} / {scores['worst_F1']:.3f}"


def _minutes(run: dict[str, Any] | None) -> str:
    seconds = (run or {}).get("finetune", {}).get("wall_seconds")
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def verdict_line(verdict: dict[str, Any], minutes: float, learning_rate_factor: float | None = None) -> str:
    factor = "" if learning_rate_factor is None else f", learning-rate factor {learning_rate_factor:g}"
    what = f"Done when (k = {DONE_K}, {minutes:g} min{factor}, every camera): "
    if verdict["done"] is None:
        return what + f"no verdict (not scored: {', '.join(verdict['missing'])})"
    failing = {camera: [name for name, value in check.items() if value is False]
               for camera, check in verdict["checks"].items()}
    failing = {camera: names for camera, names in failing.items() if names}
    listed = "; ".join(f"{camera} {', '.join(names)}" for camera, names in failing.items())
    unjudged = [camera for camera, check in verdict["checks"].items() if check["F1_near_reference"] is None]
    return (what + f"met = {verdict['done']}" + (f" (failing: {listed})" if failing else "")
            + (f"; no reference for {', '.join(unjudged)}: F1 near the reference not judged" if unjudged else ""))


def table(results: dict[str, Any]) -> str:
    """The markdown table of docs/RESULTS.md (one per fine-tuning budget) and the verdict of the "done when"."""
    recipes = {(DEFAULT_MINUTES, None), *((r["minutes"], r.get("learning_rate_factor"))
                                          for r in results.get("runs", {}).values())}
    lines = []
    for minutes, factor in sorted(recipes, key=lambda recipe: (recipe[0], recipe[1] is not None, recipe[1] or 0)):
        runs = _runs_at(results, minutes, learning_rate_factor=factor)
        header = ("| camera (test photographs) | base model | " + " | ".join(f"k = {k}" for k in KS)
                  + " | trained on it alone | fine-tuning min (k = " + " / ".join(map(str, KS)) + ") |")
        recipe = "" if factor is None else f" at {factor:g}x the base learning rate"
        lines += [f"Fine-tuned for {minutes:g} min{recipe}; each cell pooled AUC / mean F1 / worst image F1, at each "
                  "model's stored threshold.", "", header, "|" + "---|" * (header.count("|") - 1)]
        for camera in CAMERAS:
            base = results.get("base", {}).get(camera)
            reference = results.get("reference", {}).get(camera)
            count = (base or {}).get("scores", {}).get("images")
            cells = [_cell((base or {}).get("scores")), *(_cell(runs.get((camera, k), {}).get("scores")) for k in KS),
                     _cell((reference or {}).get("scores")), " / ".join(_minutes(runs.get((camera, k))) for k in KS)]
            lines.append(f"| {camera} ({'-' if count is None else count}) | " + " | ".join(cells) + " |")
        verdict = done_verdict(results, minutes=minutes, learning_rate_factor=factor)
        lines += ["", verdict_line(verdict, minutes, factor), ""]
    return "\n".join(lines).rstrip("\n")


# --------------------------------------------------------------------------- command line


def _mapping(parser, pairs: Sequence[str] | None, option: str) -> dict[str, Path]:
    out = {}
    for pair in pairs or ():
        camera, _, path = pair.partition("=")
        if camera not in CAMERAS or not path:
            parser.error(f"{option} takes CAMERA=PATH with CAMERA one of {', '.join(CAMERAS)}; got {pair!r}")
        model = Path(path)
        out[camera] = model / "model.keras" if model.is_dir() else model
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = protocol_parser(__doc__.split("\n\n")[0], out="runs/finetune_protocol", records=None, jobs=False,
                             data_help="Folder with the five datasets.", results=RESULTS,
                             only_help=f"Cameras to fine-tune and score ({', '.join(CAMERAS)}).")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, help="Budget of each fine-tuning.")
    parser.add_argument("--loco-out", type=Path, default=Path("runs/leave_one_camera_out"),
                        help="The leave-one-camera-out runs: the base model of X is today_wnet_without_X_s0.")
    parser.add_argument("--base", action="append", metavar="CAMERA=PATH",
                        help="Another base model for a camera (a .keras file or a run folder).")
    parser.add_argument("--reference", action="append", metavar="CAMERA=PATH",
                        help="A model trained on that camera alone, scored the same way.")
    parser.add_argument("--train-references", action="store_true",
                        help="Train the reference of each camera without --reference (rule j3, `ReferenceRun`).")
    parser.add_argument("--loco-records", type=Path, default=Path("data/cameras"),
                        help="The leave-one-camera-out records (the published pools of --train-references).")
    parser.add_argument("--k", type=int, nargs="+", choices=KS, default=list(KS), dest="ks",
                        help="Numbers of photographs to fine-tune on (the issue's bar is k = 5 alone).")
    parser.add_argument("--learning-rate-factor", type=float, default=None,
                        help="Fine-tune at this fraction of the base learning rate (default: the recipe's); "
                             "its runs are named and tabled apart.")
    args = parser.parse_args(argv)
    if args.summarize:
        print(table(load_results(args.results)))
        return
    if not args.minutes > 0:
        parser.error(f"--minutes must be positive; got {args.minutes}")
    if args.learning_rate_factor is not None and not args.learning_rate_factor > 0:
        parser.error(f"--learning-rate-factor must be positive; got {args.learning_rate_factor}")
    unknown = sorted(set(args.only or ()) - set(CAMERAS))
    if unknown:
        parser.error(f"--only takes cameras ({', '.join(CAMERAS)}); got {', '.join(unknown)}")
    cameras = [camera for camera in CAMERAS if args.only is None or camera in args.only]
    results = run_protocol(cameras, out=args.out, results_path=args.results, data=args.data, loco_out=args.loco_out,
                           bases=_mapping(parser, args.base, "--base"),
                           references=_mapping(parser, args.reference, "--reference"), minutes=args.minutes,
                           ks=sorted(set(args.ks)), train=not args.no_train,
                           loco_records=args.loco_records if args.train_references else None,
                           learning_rate_factor=args.learning_rate_factor)
    print(table(results))


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    main()
