"""Fine-tuning a trained model on a few labelled photographs: the recipe, the step budget, the run folder.

The recipe is a run config like any other (`finetune_config`), trained by the same loop into the same run
folder as `keras-vessel train` (`keras_vessel.training.train`); what differs is where it starts
(``model.start_from``: the base model's weights, normalisation and FOV diameter) and how it is sized:

- the photographs are prepared (`keras_vessel.data.tfrecords.write_dataset`) into the hidden folder
  `RECORDS` of the run folder (`prepare_photographs`);
- learning rate: `LEARNING_RATE_FACTOR` times the base recipe's (1e-4 for the bundled model), constant;
- the base recipe's patch size (smaller when the photographs are), batch, augmentation and scale jitter,
  its loss settings (the loss kind is the one its heads were trained with), no validation images;
- as many steps as fit the time budget (`steps_for_budget`), measured on this machine (`time_steps`),
  less the predictions the thresholds need afterwards (`prediction_work`), cut into at most
  `MAX_EPOCHS` epochs so that a stopped run resumes after the last one.

`keras_vessel.finetune.finetune` runs it all and chooses the thresholds and writes the report afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keras_vessel.config import ConfigError, DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig, load_config
from keras_vessel.data.datasets import Sample, SampleSpec
from keras_vessel.data.scaling import FUSION_MULTIPLES, check_scale
from keras_vessel.data.tfrecords import write_dataset
from keras_vessel.errors import DatasetError, OutputError
from keras_vessel.io import file_sha256
from keras_vessel.training.loop import StepTiming
from keras_vessel.training.run_folder import RunFolder

__all__ = [
    "BASE_CONFIG_NAMES",
    "BUDGET_SHARE",
    "FinetunePlan",
    "LEARNING_RATE_FACTOR",
    "MAX_EPOCHS",
    "MIN_STEPS",
    "RECORDS",
    "base_model_path",
    "base_training_config",
    "check_photographs",
    "finetune_config",
    "plan_finetune",
    "prediction_work",
    "removed_unless_started",
    "schedule",
    "steps_for_budget",
]

logger = logging.getLogger(__name__)

RECORDS = ".photographs"  # the prepared photographs, inside the run folder
LEARNING_RATE_FACTOR = 0.1  # of the base recipe's learning rate
MAX_EPOCHS = 10  # the steps are cut into at most this many epochs (checkpoints, resume points)
MIN_STEPS = 4  # trained even when the budget allows fewer (a warning says so)
BUDGET_SHARE = 0.9  # of the seconds left for the steps: epochs' checkpoints and saves take the rest
# Where a base model's training config is found, beside it: a run folder's, the bundled model's.
BASE_CONFIG_NAMES = ("config.yaml", "training_config.yaml")


def base_model_path(model: str | Path | None) -> Path:
    """The `.keras` file to start from: the bundled model for None, ``FOLDER/model.keras`` for a run folder.

    FileNotFoundError (saying what to give instead) when it does not exist.
    """
    from keras_vessel.models.inference import bundled_model_path

    if model is None:
        return bundled_model_path()
    path = Path(model)
    if path.is_dir():
        if not (path / "model.keras").is_file():
            raise FileNotFoundError(f"{path} is a folder without model.keras; give a run folder or a .keras file")
        return path / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"base model {path} does not exist; give a .keras file or a run folder")
    return path


def base_training_config(base: str | Path) -> RunConfig | None:
    """The config the base model was trained with (`BASE_CONFIG_NAMES` beside it), or None if it has none."""
    for name in BASE_CONFIG_NAMES:
        path = Path(base).with_name(name)
        if path.is_file():
            return load_config(path)
    return None


def check_photographs(specs: Sequence[SampleSpec]) -> list[Sample]:
    """Load every photograph with its label and FOV, refusing what fine-tuning cannot use; returns the samples.

    DatasetError naming the file for an unreadable one, a label or mask of another size than its
    photograph (`keras_vessel.data.datasets.base.load_files`), a label or mask that is not black and
    white (named as the label or FOV mask it is, saying how to save it), or a label that marks no vessel
    inside the field of view. All are read before anything is written.
    """
    samples = []
    for spec in specs:
        sample = spec.load()
        if not (sample.label & sample.fov).any():
            where = "" if sample.fov.all() else " inside its field of view"
            raise DatasetError(f"the label of photograph {spec.name!r} marks no vessel{where}: fine-tuning learns "
                               "from labelled vessels; label them (white on black) or leave the photograph out")
        samples.append(sample)
    return samples


def steps_for_budget(seconds: float, timing: StepTiming, *, reserve_seconds: float = 0.0) -> int:
    """How many training steps fit in `seconds` of wall-clock time.

    ``BUDGET_SHARE * (seconds - timing.first_seconds - reserve_seconds) / timing.seconds_per_step``
    rounded down: the run traces its step again (`first_seconds`), and `reserve_seconds` is kept for
    what follows training (the threshold's and the report's predictions). At least `MIN_STEPS`, also
    when the budget is spent already (`seconds` may be negative).

    >>> steps_for_budget(600, StepTiming(first_seconds=20, seconds_per_step=0.5), reserve_seconds=40)
    972
    >>> steps_for_budget(-5, StepTiming(first_seconds=20, seconds_per_step=0.5))
    4
    """
    if not timing.seconds_per_step > 0:
        raise ValueError(f"`timing.seconds_per_step` must be positive; got {timing.seconds_per_step!r}")
    spare = seconds - timing.first_seconds - reserve_seconds
    return max(MIN_STEPS, math.floor(BUDGET_SHARE * spare / timing.seconds_per_step))


def prediction_work(scales: Sequence[str | float]) -> float:
    """The network work of predicting a photograph at each of `scales`, in predictions at the model's own scale.

    ``"multi"`` runs at each of `FUSION_MULTIPLES` of the training diameter and costs the sum of their
    squares (7.25 with 1x, 1.5x, 2x); every other scale counts one. With the threshold scales of a run
    (`keras_vessel.evaluation.run_threshold_scales`) it is what choosing the fine-tuned model's
    thresholds costs, in units of the base model's prediction time at its own scale.

    >>> prediction_work(["auto"]), prediction_work(["auto", "multi"])
    (1.0, 8.25)
    """
    return float(sum(sum(m * m for m in FUSION_MULTIPLES) if check_scale(scale) == "multi" else 1.0
                     for scale in scales))


def schedule(steps: int) -> tuple[int, int]:
    """``(epochs, steps_per_epoch)`` for `steps` steps: at most `MAX_EPOCHS` epochs, never more steps.

    >>> schedule(972), schedule(4)
    ((10, 97), (4, 1))
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int; got {steps!r}")
    epochs = min(MAX_EPOCHS, steps)
    return epochs, steps // epochs


def finetune_config(base: str | Path, records: str | Path, manifest: dict[str, Any], *, steps: int,
                    seed: int = 0, learning_rate_factor: float = LEARNING_RATE_FACTOR) -> RunConfig:
    """The fine-tuning recipe for `base` (a `.keras` training model) on the photographs prepared in `records`.

    Read from the base model and its training config (`base_training_config`; the defaults of
    `keras_vessel.config` when it has none): see the module docstring. The patch size is the base
    recipe's, or the largest multiple of the network's stride that fits the smallest photograph
    at the base model's FOV diameter. `manifest` is the prepared folder's. The learning rate is
    `learning_rate_factor` times the base recipe's.
    """
    from keras_vessel.models import head_names, model_fov_diameter, model_stride
    from keras_vessel.models.saving import load_model_file

    model = load_model_file(base)
    heads, diameter, stride = head_names(model), model_fov_diameter(model) or 0.0, model_stride(model)
    recipe = base_training_config(base) or RunConfig()
    epochs, steps_per_epoch = schedule(steps)

    def side(image: dict[str, Any]) -> float:  # the shorter side at the training scale
        scale = diameter / image["fov_diameter"] if diameter and image.get("fov_diameter") else 1.0
        return min(image["width"], image["height"]) * scale

    fits = int(min(side(image) for image in manifest["images"])) // stride * stride
    patch_size = min(recipe.data.patch_size, fits)
    if patch_size < max(stride, 8):
        raise DatasetError(f"the photographs are too small to fine-tune on: the smallest is {fits} px across at the "
                           f"model's scale, smaller than its stride {stride}")
    return RunConfig(
        name="finetune",
        data=dataclasses.replace(recipe.data, train_records=str(Path(records).resolve()), validation_images=0,
                                 folds=0, fold=0, patch_size=patch_size, fov_diameter=float(diameter)),
        model=ModelConfig(name=recipe.model.name, options=dict(recipe.model.options), start_from=str(base)),
        loss=dataclasses.replace(recipe.loss, kind="joint" if len(heads) == 2 else "pixel"),
        train=TrainConfig(epochs=epochs, steps_per_epoch=steps_per_epoch, optimizer=recipe.train.optimizer,
                          learning_rate=learning_rate_factor * recipe.train.learning_rate,
                          momentum=recipe.train.momentum, seed=seed, heads=recipe.train.heads),
    )


@dataclass(frozen=True)
class FinetunePlan:
    """What `plan_finetune` found and prepared.

    run : the run folder. base : the `.keras` file started from. records : the prepared photographs.
    info : run.json's ``finetune`` entry (base model and its SHA-256, photographs, minutes, seed).
    config : the stored config of a run being resumed (None for a new run: size it with
        `finetune_config`).
    """

    run: RunFolder
    base: Path
    records: Path
    info: dict[str, Any]
    config: RunConfig | None


def plan_finetune(specs: Sequence[SampleSpec], output: str | Path, *, base: str | Path, minutes: float,
                  seed: int = 0, learning_rate_factor: float = LEARNING_RATE_FACTOR,
                  progress: bool = True) -> FinetunePlan:
    """Check that `output` is new or a fine-tuning of the same photographs, then prepare them into it.

    Call it holding `output`'s lock (`keras_vessel.locks.folder_lock`). A folder holding another run, or
    a fine-tuning of other photographs, another base model (by SHA-256), other minutes, another seed or
    another learning-rate factor, is refused with ConfigError naming what differs; a folder holding other
    files with OutputError.
    """
    run = RunFolder(output)
    base = Path(base)
    info = {
        "base_model": {"path": str(base), "sha256": file_sha256(base)},
        "photographs": [_photograph(spec) for spec in specs],
        "minutes": float(minutes),
        "seed": int(seed),
        "learning_rate_factor": float(learning_rate_factor),
    }
    config = _resumable(run, info)
    records = run.path / RECORDS
    write_dataset(list(specs), records, dataset="photographs", split="training", show_progress=progress)
    return FinetunePlan(run, base, records, info, config)


def _photograph(spec: SampleSpec) -> dict[str, Any]:
    """run.json's record of one photograph: its name, files and fingerprint (`SampleSpec.fingerprint`)."""
    return {"name": spec.name, **{key: str(path) for key, path in _files(spec).items()},
            "fingerprint": spec.fingerprint()}


def _files(spec: SampleSpec) -> dict[str, Path]:
    """The files `spec` reads (`keras_vessel.data.datasets.open_labelled`'s): image, label and, if any, mask."""
    files = [argument for argument in getattr(spec.load, "args", ()) if isinstance(argument, Path)]
    return dict(zip(("image", "label", "mask"), files))


def _resumable(run: RunFolder, info: dict[str, Any]) -> RunConfig | None:
    """The stored config when `run` is a fine-tuning of the same photographs, None when `run` is new."""
    stored = run.read_info().get("finetune") if run.info_path.is_file() else None
    fresh = f"give another --output or delete {run.path}"
    if stored is None:
        held = sorted(path.name for path in run.path.iterdir() if path.name not in (RECORDS, ".keras-vessel.lock")) \
            if run.path.is_dir() else []
        if run.info_path.is_file():
            raise ConfigError(f"{run.path} holds a training run, not a fine-tuning; {fresh}")
        if held:
            raise OutputError(f"{run.path} is not empty ({', '.join(held[:5])}) and holds no fine-tuning; {fresh}")
        return None
    old = {item["name"]: item.get("fingerprint") for item in stored.get("photographs", [])}
    new = {item["name"]: item["fingerprint"] for item in info["photographs"]}
    changes = [f"{label}: {', '.join(names)}" for label, names in (
        ("added", sorted(set(new) - set(old))), ("left out", sorted(set(old) - set(new))),
        ("changed", sorted(name for name in set(old) & set(new) if old[name] != new[name]))) if names]
    if changes:
        raise ConfigError(f"{run.path} holds a fine-tuning on other photographs ({'; '.join(changes)}); to fine-tune "
                          f"on these, {fresh}")
    for key, what in (("base_model", "base model"), ("minutes", "--minutes"), ("seed", "--seed"),
                      ("learning_rate_factor", "--learning-rate-factor")):
        if stored.get(key) is not None and _comparable(stored[key]) != _comparable(info[key]):
            raise ConfigError(f"{run.path} holds a fine-tuning with another {what} ({_shown(stored[key])} -> "
                              f"{_shown(info[key])}); to resume it, give the same; to start afresh, {fresh}")
    if not run.config_path.is_file():
        return None
    return load_config(run.config_path)


def _comparable(value: Any) -> Any:
    return value["sha256"] if isinstance(value, dict) else value


def _shown(value: Any) -> str:
    return f"{value['path']}, SHA-256 {value['sha256'][:12]}..." if isinstance(value, dict) else f"{value:g}"


@contextmanager
def removed_unless_started(run: RunFolder) -> Iterator[RunFolder]:
    """Yield `run`; if the block fails before a new run wrote its run.json, remove the prepared photographs,
    so a refused or stopped fine-tuning leaves nothing half-written (a started run stays, to be resumed)."""
    new = not run.info_path.is_file()
    try:
        yield run
    except BaseException:
        if new and not run.info_path.is_file():
            shutil.rmtree(run.path / RECORDS, ignore_errors=True)
        raise

