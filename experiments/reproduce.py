"""Train and evaluate the reproduction and ablation runs (issues 6 and 7), resumably.

Each run is `keras-vessel train` at one fixed budget (``--epochs`` x 100
steps of 8 crops of 128x128, early stopping off; `model.keras` is the best
epoch on the validation images held out from the training split), then
`keras-vessel evaluate --threshold train` on the test split, and the same
scores on the run's own validation images (`eval_validation/`: the only
scores used to choose between recipes; the test split never is). A finished
step is skipped, so re-running the script after an interruption continues
where it stopped; a run that continues another (`Run.continues`) starts as a
copy of that run's finished folder and resumes after its last epoch. CPU
minutes are the children's `getrusage` user+system time of the train command
(training and the threshold choice); each run's `run.json` holds its seed,
config, versions and revision.

    .venv/bin/python -m experiments.reproduce --out runs/reproduce [--only drive_pixel_s0 ...] [--epochs 10] [--tta d4]

`--tta d4` also evaluates the test split with test-time augmentation
(`eval_train_tta_d4/`, its own threshold chosen on the training images).
Once all its member runs are trained, each planned seed ensemble
(`keras-vessel ensemble`) is scored the same way; its threshold is chosen
for the averaged model on the training images.

`RUNS` is the table of every run of issues 6 and 7, in the order they were
planned: each later recipe was chosen from the earlier runs' VALIDATION
scores (the history and the rules are in docs/notebook/); the table records
what was run, so a fresh clone reproduces the same runs.

Writes experiments/results/reproduce.json (one row per finished run); the
tables in docs/RESULTS.md are made from it by `python -m experiments.summarize`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import add_output_argument, begin, finish

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KERAS_VESSEL_DATA", REPOSITORY.parent / "shared" / "data"))
ROOTS = {"drive": SHARED / "DRIVE", "chase_db1": SHARED / "CHASE_DB1"}
RECORDED = REPOSITORY / "experiments" / "results" / "reproduce.json"  # the committed results


@dataclass(frozen=True)
class Run:
    """One training: the network's config and the dataset's, `--set` values, a budget and a seed."""

    name: str
    dataset: str
    seed: int
    setting: str
    overrides: tuple[str, ...] = ()  # `--set key=value` on top of the configs (loss.kind among them)
    network: str = "configs/compact.yaml"
    epochs: int | None = None  # None: the script's --epochs
    reference: str = "authors"  # `prepare --reference`: the segments' reference skeletons
    continues: str = ""  # a finished run whose epochs this one continues (see `start_from`)

    @property
    def configs(self) -> tuple[str, str]:
        return self.network, f"configs/datasets/{self.dataset}.yaml"

    def train_arguments(self, default_epochs: int) -> list[str]:
        sets = [f"train.seed={self.seed}", f"train.epochs={self.epochs or default_epochs}",
                "train.early_stopping_patience=0", *self.overrides]
        if self.reference != "authors":
            sets.append(f"data.train_records={records_folder(self.dataset, self.reference)}")
        return [*(part for config in self.configs for part in ("--config", config)),
                *(part for value in sets for part in ("--set", value))]


@dataclass(frozen=True)
class Ensemble:
    """`keras-vessel ensemble` of finished runs, scored like a run; its CPU time is the members' sum."""

    name: str
    setting: str
    members: tuple[str, ...]
    dataset: str = "drive"


RUNS = [
    Run('drive_pixel_s0', 'drive', 0, 'pixel', overrides=('loss.kind=pixel',)),
    Run('drive_joint_s0', 'drive', 0, 'joint', overrides=('loss.kind=joint',)),
    Run('drive_pixel_s1', 'drive', 1, 'pixel', overrides=('loss.kind=pixel',)),
    Run('drive_joint_s1', 'drive', 1, 'joint', overrides=('loss.kind=joint',)),
    Run('drive_pixel_s2', 'drive', 2, 'pixel', overrides=('loss.kind=pixel',)),
    Run('drive_joint_s2', 'drive', 2, 'joint', overrides=('loss.kind=joint',)),
    Run('chase_db1_pixel_s0', 'chase_db1', 0, 'pixel', overrides=('loss.kind=pixel',)),
    Run('chase_db1_joint_s0', 'chase_db1', 0, 'joint', overrides=('loss.kind=joint',)),
    Run('drive_pixel_cldice_s0', 'drive', 0, 'pixel+cldice', overrides=('loss.kind=pixel', 'loss.extra=cldice')),
    Run('drive_pixel_skelrecall_s0', 'drive', 0, 'pixel+skelrecall',
        overrides=('loss.kind=pixel', 'loss.extra=skeleton_recall'),
    ),
    Run('drive_joint_skelrecall_s0', 'drive', 0, 'joint+skelrecall',
        overrides=('loss.kind=joint', 'loss.extra=skeleton_recall'),
    ),
    Run('drive_pixel_cldice_s1', 'drive', 1, 'pixel+cldice', overrides=('loss.kind=pixel', 'loss.extra=cldice')),
    Run('drive_pixel_skelrecall_s1', 'drive', 1, 'pixel+skelrecall',
        overrides=('loss.kind=pixel', 'loss.extra=skeleton_recall'),
    ),
    Run('drive_joint_skelrecall_s1', 'drive', 1, 'joint+skelrecall',
        overrides=('loss.kind=joint', 'loss.extra=skeleton_recall'),
    ),
    Run('drive_pixel_cldice_s2', 'drive', 2, 'pixel+cldice', overrides=('loss.kind=pixel', 'loss.extra=cldice')),
    Run('drive_pixel_skelrecall_s2', 'drive', 2, 'pixel+skelrecall',
        overrides=('loss.kind=pixel', 'loss.extra=skeleton_recall'),
    ),
    Run('drive_joint_skelrecall_s2', 'drive', 2, 'joint+skelrecall',
        overrides=('loss.kind=joint', 'loss.extra=skeleton_recall'),
    ),
    Run('drive_pixel_bce_s0', 'drive', 0, 'pixel, plain BCE',
        overrides=('loss.kind=pixel', 'loss.vessel_weight=1', 'loss.background_weight=1'),
    ),
    Run('drive_pixel_bce_noaug_s0', 'drive', 0, 'pixel, plain BCE, no intensity aug',
        overrides=(
            'loss.kind=pixel',
            'loss.vessel_weight=1',
            'loss.background_weight=1',
            'data.augment.noise_probability=0',
            'data.augment.clahe_probability=0',
            'data.augment.contrast_stretch_probability=0',
        ),
    ),
    Run('drive_best_recipe_3000steps_s0', 'drive', 0, 'pixel, 3000 steps', overrides=('loss.kind=pixel',), epochs=30),
    Run('drive_joint_3000steps_s0', 'drive', 0, 'joint, 3000 steps', overrides=('loss.kind=joint',), epochs=30),
    Run('drive_best_recipe_3000steps_s1', 'drive', 1, 'pixel, 3000 steps', overrides=('loss.kind=pixel',), epochs=30),
    Run('drive_joint_3000steps_s1', 'drive', 1, 'joint, 3000 steps', overrides=('loss.kind=joint',), epochs=30),
    Run('drive_best_recipe_3000steps_s2', 'drive', 2, 'pixel, 3000 steps', overrides=('loss.kind=pixel',), epochs=30),
    Run('drive_joint_3000steps_s2', 'drive', 2, 'joint, 3000 steps', overrides=('loss.kind=joint',), epochs=30),
    Run('drive_joint_skelrecall_3000steps_s0', 'drive', 0, 'joint+skelrecall, 3000 steps',
        overrides=('loss.kind=joint', 'loss.extra=skeleton_recall'),
        epochs=30,
    ),
    Run('drive_joint_complete_3000steps_s0', 'drive', 0, 'joint, complete reference skeletons, 3000 steps',
        overrides=('loss.kind=joint',),
        epochs=30,
        reference='complete',
    ),
    Run('drive_joint_complete_3000steps_s1', 'drive', 1, 'joint, complete reference skeletons, 3000 steps',
        overrides=('loss.kind=joint',),
        epochs=30,
        reference='complete',
    ),
    Run('drive_joint_complete_3000steps_s2', 'drive', 2, 'joint, complete reference skeletons, 3000 steps',
        overrides=('loss.kind=joint',),
        epochs=30,
        reference='complete',
    ),
    Run('drive_best_recipe_cosine_3000steps_s0', 'drive', 0, 'pixel, 3000 steps, cosine decay',
        overrides=('loss.kind=pixel', 'train.lr_schedule=cosine'),
        epochs=30,
    ),
    Run('drive_best_recipe_rgb_3000steps_s0', 'drive', 0, 'pixel, 3000 steps, RGB input (green statistics)',
        overrides=('loss.kind=pixel', 'data.channel=rgb'),
        epochs=30,
    ),
    Run('drive_best_recipe_9000steps_s0', 'drive', 0, 'pixel, 9000 steps', overrides=('loss.kind=pixel',), epochs=90),
    Run('drive_best_recipe_rgb_9000steps_s0', 'drive', 0, 'pixel, 9000 steps, RGB input',
        overrides=('loss.kind=pixel', 'data.channel=rgb'),
        epochs=90,
    ),
    Run('drive_best_recipe_rgb_3000steps_s1', 'drive', 1, 'pixel, 3000 steps, RGB input',
        overrides=('loss.kind=pixel', 'data.channel=rgb'),
        epochs=30,
    ),
    Run('drive_best_recipe_rgb_3000steps_s2', 'drive', 2, 'pixel, 3000 steps, RGB input',
        overrides=('loss.kind=pixel', 'data.channel=rgb'),
        epochs=30,
    ),
    Run('drive_best_recipe_rgb_9000steps_s1', 'drive', 1, 'pixel, 9000 steps, RGB input',
        overrides=('loss.kind=pixel', 'data.channel=rgb'),
        epochs=90,
    ),
    Run('drive_best_recipe_rgb_15000steps_s0', 'drive', 0, 'pixel, 15000 steps (continuing 9000 steps), RGB input',
        overrides=('loss.kind=pixel', 'data.channel=rgb'),
        epochs=150,
        continues='drive_best_recipe_rgb_9000steps_s0',
    ),
    Run('drive_best_recipe_rgb_15000steps_s1', 'drive', 1, 'pixel, 15000 steps (continuing 9000 steps), RGB input',
        overrides=('loss.kind=pixel', 'data.channel=rgb'),
        epochs=150,
        continues='drive_best_recipe_rgb_9000steps_s1',
    ),
    Run('drive_best_recipe_rgb_ema_9000steps_s0', 'drive', 0, 'pixel, 9000 steps, RGB input, weight average 0.999',
        overrides=('loss.kind=pixel', 'data.channel=rgb', 'train.ema_momentum=0.999'),
        epochs=90,
    ),
    Run('drive_best_recipe_rgb_ema_9000steps_s1', 'drive', 1, 'pixel, 9000 steps, RGB input, weight average 0.999',
        overrides=('loss.kind=pixel', 'data.channel=rgb', 'train.ema_momentum=0.999'),
        epochs=90,
    ),
    Run('drive_joint_rgb_9000steps_s0', 'drive', 0, 'joint, 9000 steps, RGB input',
        overrides=('loss.kind=joint', 'data.channel=rgb'),
        epochs=90,
    ),
    Run('drive_joint_rgb_9000steps_s1', 'drive', 1, 'joint, 9000 steps, RGB input',
        overrides=('loss.kind=joint', 'data.channel=rgb'),
        epochs=90,
    ),
    Run('drive_best_recipe_rgb_width16_9000steps_s0', 'drive', 0, 'pixel, 9000 steps, RGB input, base_filters 16',
        overrides=('loss.kind=pixel', 'data.channel=rgb', 'model.options.base_filters=16'),
        epochs=90,
    ),
    Run('drive_best_recipe_rgb_width16_9000steps_s1', 'drive', 1, 'pixel, 9000 steps, RGB input, base_filters 16',
        overrides=('loss.kind=pixel', 'data.channel=rgb', 'model.options.base_filters=16'),
        epochs=90,
    ),
    Run('chase_db1_pixel_rgb_3000steps_s0', 'chase_db1', 0, 'pixel, 3000 steps, RGB input',
        overrides=('loss.kind=pixel', 'data.channel=rgb'),
        epochs=30,
    ),
    Run('chase_db1_joint_rgb_3000steps_s0', 'chase_db1', 0, 'joint, 3000 steps, RGB input',
        overrides=('loss.kind=joint', 'data.channel=rgb'),
        epochs=30,
    ),
    Run('chase_db1_pixel_rgb_3000steps_s1', 'chase_db1', 1, 'pixel, 3000 steps, RGB input',
        overrides=('loss.kind=pixel', 'data.channel=rgb'),
        epochs=30,
    ),
    Run('chase_db1_joint_rgb_3000steps_s1', 'chase_db1', 1, 'joint, 3000 steps, RGB input',
        overrides=('loss.kind=joint', 'data.channel=rgb'),
        epochs=30,
    ),
    Run('chase_db1_pixel_rgb_3000steps_s2', 'chase_db1', 2, 'pixel, 3000 steps, RGB input',
        overrides=('loss.kind=pixel', 'data.channel=rgb'),
        epochs=30,
    ),
    Run('chase_db1_joint_rgb_3000steps_s2', 'chase_db1', 2, 'joint, 3000 steps, RGB input',
        overrides=('loss.kind=joint', 'data.channel=rgb'),
        epochs=30,
    ),
    Run('chase_db1_pixel_3000steps_s0', 'chase_db1', 0, 'pixel, 3000 steps',
        overrides=('loss.kind=pixel',),
        epochs=30,
    ),
    Run('chase_db1_joint_3000steps_s0', 'chase_db1', 0, 'joint, 3000 steps',
        overrides=('loss.kind=joint',),
        epochs=30,
    ),
    Run('chase_db1_pixel_3000steps_s1', 'chase_db1', 1, 'pixel, 3000 steps',
        overrides=('loss.kind=pixel',),
        epochs=30,
    ),
    Run('chase_db1_joint_3000steps_s1', 'chase_db1', 1, 'joint, 3000 steps',
        overrides=('loss.kind=joint',),
        epochs=30,
    ),
    Run('chase_db1_pixel_3000steps_s2', 'chase_db1', 2, 'pixel, 3000 steps',
        overrides=('loss.kind=pixel',),
        epochs=30,
    ),
    Run('chase_db1_joint_3000steps_s2', 'chase_db1', 2, 'joint, 3000 steps',
        overrides=('loss.kind=joint',),
        epochs=30,
    ),
    Run('chase_db1_pixel_9000steps_s0', 'chase_db1', 0, 'pixel, 9000 steps',
        overrides=('loss.kind=pixel',),
        epochs=90,
    ),
    Run('chase_db1_joint_9000steps_s0', 'chase_db1', 0, 'joint, 9000 steps',
        overrides=('loss.kind=joint',),
        epochs=90,
    ),
    Run('chase_db1_pixel_9000steps_s1', 'chase_db1', 1, 'pixel, 9000 steps',
        overrides=('loss.kind=pixel',),
        epochs=90,
    ),
    Run('chase_db1_joint_9000steps_s1', 'chase_db1', 1, 'joint, 9000 steps',
        overrides=('loss.kind=joint',),
        epochs=90,
    ),
    Run('chase_db1_pixel_9000steps_s2', 'chase_db1', 2, 'pixel, 9000 steps',
        overrides=('loss.kind=pixel',),
        epochs=90,
    ),
    Run('chase_db1_joint_9000steps_s2', 'chase_db1', 2, 'joint, 9000 steps',
        overrides=('loss.kind=joint',),
        epochs=90,
    ),
]

ENSEMBLES = [
    Ensemble("drive_pixel_3000steps_ensemble", "pixel, 3000 steps, 3-seed ensemble",
             tuple(f"drive_best_recipe_3000steps_s{seed}" for seed in (0, 1, 2))),
    Ensemble("drive_joint_3000steps_ensemble", "joint, 3000 steps, 3-seed ensemble",
             tuple(f"drive_joint_3000steps_s{seed}" for seed in (0, 1, 2))),
    Ensemble("drive_rgb_9000steps_ensemble", "pixel, 9000 steps, RGB input, 2-seed ensemble",
             tuple(f"drive_best_recipe_rgb_9000steps_s{seed}" for seed in (0, 1))),
]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_logged(command: list[str], log: Path) -> None:
    print("$", " ".join(command), flush=True)
    with open(log, "a") as stream:
        subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, check=True)


def run_costed(command: list[str], log: Path) -> dict[str, float]:
    """`run_logged`, returning the command's CPU seconds (children's user+system) and wall seconds."""
    cpu_before, started = children_cpu_seconds(), time.perf_counter()
    run_logged(command, log)
    return {"cpu_seconds": children_cpu_seconds() - cpu_before, "wall_seconds": time.perf_counter() - started}


def records_folder(dataset: str, reference: str) -> Path:
    return Path("data") / dataset / ("training" if reference == "authors" else f"training_{reference}")


def prepare(dataset: str, cli: str, reference: str = "authors") -> None:
    out = records_folder(dataset, reference)
    # always: prepare keeps complete shards and redoes only what is missing or outdated
    out.parent.mkdir(parents=True, exist_ok=True)
    run_logged([cli, "prepare", "--dataset", dataset, "--root", str(ROOTS[dataset]), "--split", "training",
                "--out", str(out), "--workers", "2", "--reference", reference], out.parent / "prepare.log")


def train_and_evaluate(run: Run, out: Path, epochs: int, cli: str, tta: str) -> None:
    folder = out / run.name
    log = out / f"{run.name}.log"
    cpu_path = folder / "train_cpu.json"
    prepare(run.dataset, cli, run.reference)
    if not cpu_path.exists():
        start_from(run, out)
        cost = run_costed([cli, "train", *run.train_arguments(epochs), "--output", str(folder), "--quiet"], log)
        if run.continues:  # the whole training's cost: the continued run's, then this one's
            earlier = json.loads((out / run.continues / "train_cpu.json").read_text())
            cost = {**{key: earlier[key] + cost[key] for key in cost}, "continued": cost}
        cpu_path.write_text(json.dumps(cost))
    evaluate_all(run.dataset, folder, validation_images(folder), cli, tta, log)


def start_from(run: Run, out: Path) -> None:
    """Copy what `train` resumes from (checkpoints, history, best model so far) out of the run it continues.

    With a constant learning rate this is one longer training of the same seed,
    except that the resumed patch stream is drawn afresh (`training.train`).
    """
    folder, earlier = out / run.name, out / run.continues
    if not run.continues or folder.exists():
        return
    if not (earlier / "train_cpu.json").exists():
        raise SystemExit(f"{run.name} continues {run.continues}, which has not finished: run it first")
    temp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    for name in ("checkpoints", "logs"):
        shutil.copytree(earlier / name, temp / name)
    for name in ("history.csv", "model.keras"):
        shutil.copy2(earlier / name, temp / name)
    temp.rename(folder)


def ensemble_and_evaluate(ensemble: Ensemble, out: Path, cli: str, tta: str) -> bool:
    """Average the finished member runs and score the result; False while a member is unfinished."""
    folders = [out / name for name in ensemble.members]
    if not all((folder / "train_cpu.json").exists() for folder in folders):
        return False
    folder, log = out / ensemble.name, out / f"{ensemble.name}.log"
    names = {tuple(sorted(validation_images(member))) for member in folders}
    if len(names) != 1:
        raise SystemExit(f"{ensemble.name}: the members were validated on different images {names}")
    if not (folder / "model.keras").exists():
        run_logged([cli, "ensemble", *(str(member / "model.keras") for member in folders),
                    "--output", str(folder / "model.keras")], log)
    cpu = [json.loads((member / "train_cpu.json").read_text()) for member in folders]
    (folder / "train_cpu.json").write_text(json.dumps({key: sum(c[key] for c in cpu) for key in cpu[0]}))
    evaluate_all(ensemble.dataset, folder, set(names.pop()), cli, tta, log)
    return True


def validation_images(folder: Path) -> set[str]:
    return set(json.loads((folder / "run.json").read_text())["validation_images"])


def evaluate_all(dataset: str, folder: Path, validation: set[str], cli: str, tta: str, log: Path) -> None:
    """Test split at the training threshold (chosen now if training did not store one), validation, TTA."""
    root = str(ROOTS[dataset])

    def evaluate_test(output: str, *options: str) -> None:
        if not (folder / output / "metrics.json").exists():
            run_logged([cli, "evaluate", "--model", str(folder / "model.keras"), "--dataset", dataset,
                        "--root", root, "--split", "test", "--output", str(folder / output),
                        "--threshold", "train", "--training-root", root, *options], log)

    evaluate_test("eval_train")
    if not (folder / "eval_validation" / "metrics.json").exists():
        evaluate_validation(dataset, folder, validation)
    if tta != "none":
        evaluate_test(f"eval_train_tta_{tta}", "--tta", tta, "--no-overlays", "--quiet")


def evaluate_validation(dataset: str, folder: Path, names: set[str]) -> None:
    """Score the held-out validation images `names` at the model's training threshold."""
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import evaluate, load_threshold
    from keras_vessel.models.inference import load_inference_model

    samples = [spec for spec in open_dataset(dataset, ROOTS[dataset], split="training") if spec.name in names]
    model_path = folder / "model.keras"
    stored = load_threshold(model_path)
    evaluate(load_inference_model(model_path), samples, output_dir=folder / "eval_validation",
             threshold=stored["threshold"], threshold_rule=stored["rule"], dataset=dataset, split="validation",
             model_path=model_path, overlays=False, progress=False)


def scores(folder: Path) -> dict | None:
    """The test scores at the training threshold, the validation scores and the TTA scores of one model."""
    metrics_path = folder / "eval_train" / "metrics.json"
    if not metrics_path.exists():
        return None
    metrics = json.loads(metrics_path.read_text())
    validation_path = folder / "eval_validation" / "metrics.json"
    return {
        **json.loads((folder / "train_cpu.json").read_text()),
        "threshold": metrics["protocol"]["threshold"],
        "summary": metrics["summary"],
        "validation": json.loads(validation_path.read_text())["summary"] if validation_path.exists() else None,
        "tta": {path.parent.name.removeprefix("eval_train_tta_"): json.loads(path.read_text())["summary"]
                for path in sorted(folder.glob("eval_train_tta_*/metrics.json"))},  # test scores, by TTA mode
    }


def finished_row(run: Run, out: Path, epochs: int) -> dict | None:
    folder = out / run.name
    scored = scores(folder)
    if scored is None:
        return None
    run_info = json.loads((folder / "run.json").read_text())
    return {
        "name": run.name, "setting": run.setting, "dataset": run.dataset, "seed": run.seed,
        "config": list(run.configs),
        "command": " ".join(["keras-vessel train", *run.train_arguments(epochs), "--output", str(folder)]),
        "git_revision": run_info.get("git_revision"),
        "machine": run_info.get("machine"),  # CPU minutes compare only between runs on the same kind of CPU
        **({"continues": run.continues} if run.continues else {}),  # its folder started as a copy of that run's
        **scored,
    }


def ensemble_row(ensemble: Ensemble, out: Path) -> dict | None:
    folder = out / ensemble.name
    scored = scores(folder)
    if scored is None:
        return None
    seeds = [json.loads((out / name / "run.json").read_text())["seed"] for name in ensemble.members]
    return {
        "name": ensemble.name, "setting": ensemble.setting, "dataset": ensemble.dataset,
        "seed": "+".join(map(str, seeds)), "members": list(ensemble.members),
        "command": " ".join(["keras-vessel ensemble", *(str(out / m / "model.keras") for m in ensemble.members),
                             "--output", str(folder / "model.keras")]),
        "git_revision": json.loads((folder / "ensemble.json").read_text()).get("git_revision"),
        **scored,  # cpu_seconds and wall_seconds: the members' training, summed
    }


def all_rows(out: Path, epochs: int) -> list[dict]:
    rows = [finished_row(run, out, epochs) for run in RUNS]
    return [row for row in rows + [ensemble_row(e, out) for e in ENSEMBLES] if row]


def merged_rows(earlier: list[dict], fresh: list[dict]) -> list[dict]:
    """Fresh rows replace earlier ones of the same name; earlier rows without a fresh one are kept.

    Run folders live outside the repository (a fresh clone has none), while the
    results file is committed: without this, the first run finished in a new
    `--out` would overwrite every earlier result with its one row.
    """
    fresh_by_name = {row["name"]: row for row in fresh}
    kept = [fresh_by_name.pop(row["name"], row) for row in earlier]
    return kept + list(fresh_by_name.values())


def earlier_rows(output: Path) -> list[dict]:
    return json.loads(output.read_text())["results"]["runs"] if output.exists() else []


def report(row: dict) -> None:
    print(f"{row['name']}: AUC pooled {row['summary']['AUC_pooled']:.4f} Acc {row['summary']['Acc']:.4f} "
          f"({row['cpu_seconds'] / 60:.1f} CPU-min)", flush=True)


def main() -> None:
    from keras_vessel.models.inference import TTA_MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="folder of the run folders")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of 100 steps per run")
    parser.add_argument("--only", nargs="*", help="run names to do (default: all, in plan order)")
    parser.add_argument("--cli", default="keras-vessel", help="the keras-vessel executable")
    parser.add_argument("--tta", choices=list(TTA_MODES), default="none",
                        help="also evaluate the test split with this test-time augmentation")
    add_output_argument(parser, "reproduce", default=RECORDED)
    args = parser.parse_args()
    record = begin("reproduce", args)
    args.out.mkdir(parents=True, exist_ok=True)
    earlier = earlier_rows(args.output)

    def save() -> None:
        finish(record, {"runs": merged_rows(earlier, all_rows(args.out, args.epochs))}, args.output)

    for run in RUNS:
        if args.only and run.name not in args.only:
            continue
        train_and_evaluate(run, args.out, args.epochs, args.cli, args.tta)
        report(finished_row(run, args.out, args.epochs))
        save()
    for ensemble in ENSEMBLES:
        if (args.only and ensemble.name not in args.only) or not ensemble_and_evaluate(
                ensemble, args.out, args.cli, args.tta):
            continue
        report(ensemble_row(ensemble, args.out))
        save()


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    main()
