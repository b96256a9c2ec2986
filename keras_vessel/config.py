"""Typed run configurations, loaded from YAML.

A run is described completely by one `RunConfig`: the resolved config is saved
next to every run's outputs, so a run can be repeated from its own folder.
Unknown keys, keys given twice in one file and values of the wrong type are
rejected with the key and the file named, because a silently ignored typo
(`learing_rate`) wastes a training run. Keys that older versions wrote into every
saved config but that never had an effect (`RETIRED_KEYS`) are read and dropped,
so older run folders and bundled models' configs still load.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the file."""


# Dotted keys that saved configs of older versions hold but that never did anything (validation always
# scored every validation patch): dropped when read, and a run folder holding one still resumes.
RETIRED_KEYS = frozenset({"train.validation_steps"})


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentations of METHOD.md section 4, applied on the fly to training patches."""

    flips: bool = True
    rot90: bool = True
    noise_variance: float = 0.001  # on images scaled to [0, 1], as the authors' Gaussian noise
    noise_probability: float = 1 / 6
    clahe_probability: float = 1 / 6
    contrast_stretch_probability: float = 1 / 6
    # Camera augmentation (0 = off), drawn per patch: photographs from other cameras differ in
    # exposure, contrast, tone curve, white balance, focus and compression.
    brightness: float = 0.0  # multiply by a factor in [1 - b, 1 + b]
    contrast: float = 0.0  # scale deviations from the patch mean by [1 - c, 1 + c]
    gamma: float = 0.0  # tone curve x ** g with log(g) in [-gamma, gamma], on [0, 1]
    colour_balance: float = 0.0  # per-channel gains in [1 - c, 1 + c]
    blur_probability: float = 0.0  # per visit: Gaussian blur, sigma uniform in [0.3, blur_sigma] px
    blur_sigma: float = 1.2
    jpeg_probability: float = 0.0  # per visit: JPEG re-compression, quality uniform in [jpeg_quality, 95]
    jpeg_quality: int = 30


@dataclass(frozen=True)
class DataConfig:
    """Where the prepared records are and how training patches are drawn from them."""

    # a folder written by `keras-vessel prepare`, or a list of them trained on together
    train_records: str | list[str] = ""
    validation_images: int = 2  # held out from the training split, never the test split
    # folds > 0: hold out group `fold` (0-based) of `folds` contiguous groups of the names instead
    # (k-fold cross-validation over the training images; `validation_images` is then unused)
    folds: int = 0
    fold: int = 0
    patch_size: int = 64
    batch_size: int = 8  # global batch, split over replicas
    min_fov_fraction: float = 0.5  # keep a patch only if this much lies in the FOV
    # 0: train at each image's own scale; > 0: resample every image so that its field of view is
    # this many pixels across (DRIVE: about 540), and record it in the model for `--scale auto`
    fov_diameter: float = 0.0
    scale_jitter: float = 0.0  # per visit, scale by a further factor in [1 / (1 + j), 1 + j] (log-uniform)
    # dataset: mean/std of the training set; paper: the authors' mean 98.19; local: each pixel against
    # its neighbourhood's mean and spread inside the FOV (Gaussian window of local_sigma px)
    normalisation: Literal["dataset", "paper", "local"] = "dataset"
    local_sigma: float = 16.0
    channel: Literal["green", "grey", "rgb"] = "green"
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build; `options` go to `keras_vessel.models.build_model`.

    `start_from`: a trained `.keras` training model to start from instead of random weights
    (fine-tuning): its network, weights, normalisation and recorded FOV diameter are kept, so
    `name` and `options` only describe it; its heads must be those of `loss.kind`.
    """

    name: str = "unet"
    options: dict[str, Any] = field(default_factory=dict)
    start_from: str = ""


@dataclass(frozen=True)
class LossConfig:
    """`joint` is the paper's segment-level + pixel-wise loss; `pixel` the baseline."""

    kind: Literal["joint", "pixel"] = "joint"
    beta: Literal["trained", "documented"] = "trained"
    ignore_outside_fov: bool = True
    # pixel-wise head's class weights: the paper's 0.9 / 0.1, or 1 / 1 for plain cross-entropy
    vessel_weight: float = 0.9
    background_weight: float = 0.1
    extra: Literal["none", "cldice", "skeleton_recall"] = "none"
    extra_weight: float = 1.0
    cldice_alpha: float = 0.5  # extra=cldice: (1 - alpha) * soft Dice + alpha * clDice
    cldice_iterations: int = 10  # soft-skeleton iterations


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and the run's bookkeeping."""

    epochs: int = 20
    steps_per_epoch: int = 100
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.99  # sgd only
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "step", "cosine"] = "constant"
    lr_decay_epochs: int = 0  # step schedule: multiply by lr_decay_factor every N epochs
    lr_decay_factor: float = 0.1
    ema_momentum: float = 0.0  # >0: validate and save a moving average of the weights (e.g. 0.999)
    early_stopping_patience: int = 0  # 0 disables early stopping
    seed: int = 0
    deterministic: bool = False
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker"] = "auto"
    cpu_devices: int = 0  # >1 splits the CPU into logical devices (try mirrored without GPUs)
    # false: float32; "float16": mixed_float16 with dynamic loss scaling (GPUs such as T4, V100, consumer
    # cards); "bfloat16" (or true): mixed_bfloat16 (TPUs, recent GPUs, CPUs with AVX-512-BF16 or AMX).
    # Training only: model.keras is saved in float32 either way (models.saving.float32_model)
    mixed_precision: Literal[False, True, "float16", "bfloat16"] = False
    heads: Literal["mean", "segment", "pixel"] = "mean"  # head fusion at inference


@dataclass(frozen=True)
class RunConfig:
    """One training run."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_config(paths: str | Path | typing.Sequence[str | Path] | None,
                overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Read one YAML run config, or several composed, and apply `key.sub=value` overrides on top.

    Composition: a file may name others under ``base:`` (a path or a list,
    relative to the file), which are read first; several `paths` are read in
    order. Later values replace earlier ones key by key (mappings are merged,
    anything else replaced), so ``configs/compact.yaml`` (a network and its
    training budget) plus ``configs/datasets/drive.yaml`` (where the records
    are) plus ``--set loss.kind=pixel`` make a run. Relative
    ``data.train_records`` folders are resolved against the folder of the
    file that names them when they exist there, else against the working
    directory. Unknown keys are rejected naming the key and the file.
    """
    raw: dict[str, Any] = {}
    sources: list[str] = []
    if isinstance(paths, (str, Path)):
        paths = [paths]
    for path in paths or ():
        _merge(raw, _read_composed(Path(path), seen=()))
        sources.append(str(path))
    for override in overrides:
        _apply_override(raw, override)
    return _build(RunConfig, raw, source=_Source(" + ".join(sources) or "<defaults>", overrides), prefix="")


class _Source:
    """Where a key's value came from, for error messages: the ``--set`` that set it, its section or a
    key inside it (the override that made a misspelt section), else the config files."""

    def __init__(self, files: str, overrides: typing.Sequence[str]) -> None:
        self.files = files
        self.overrides = [(text.partition("=")[0].strip(), text) for text in reversed(overrides)]  # last wins

    def __call__(self, key: str) -> str:
        for name, text in self.overrides:
            if key == name or key.startswith(name + ".") or name.startswith(key + "."):
                return f"--set {text}"
        return self.files


def _read_composed(path: Path, *, seen: tuple[Path, ...]) -> dict[str, Any]:
    """One file with its ``base:`` files merged under it, records folders resolved."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" + (f" (named under base: in {seen[-1]})" if seen else ""))
    if path.resolve() in seen:
        raise ConfigError(f"{path}: base: includes form a cycle ({' -> '.join(str(p) for p in (*seen, path))})")
    loaded = read_mapping(path)
    bases = loaded.pop("base", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise ConfigError(f"{path}: base must be a config file or a list of them, got {bases!r}")
    raw: dict[str, Any] = {}
    for base in bases:
        _merge(raw, _read_composed(path.parent / base, seen=(*seen, path.resolve())))
    records = (loaded.get("data") or {}).get("train_records") if isinstance(loaded.get("data"), dict) else None
    if isinstance(records, str) and records:
        loaded["data"]["train_records"] = _beside(path, records)
    elif isinstance(records, list):
        loaded["data"]["train_records"] = [_beside(path, r) if isinstance(r, str) else r for r in records]
    _merge(raw, loaded)
    return raw


def read_mapping(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in the file `path` ({} for an empty file), as written: no ``base:`` read, nothing resolved.

    ConfigError naming the file when it is not valid YAML, holds something else than a mapping at the
    top level, or gives a key twice in one mapping (YAML would keep the last one silently: a second
    ``train:`` section would replace the first), naming the key and both lines.
    """
    try:
        loaded = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except _DuplicateKeyError as error:
        first, second = error.lines
        where = f"on line {first}" if first == second else f"on lines {first} and {second}"
        raise ConfigError(f"{path}: the key {error.key!r} is given twice in the same section ({where}), and YAML "
                          "would silently keep only the second; keep one, with all the values it should hold") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one mapping: the key and the two lines (1-based)."""

    def __init__(self, key: Any, lines: tuple[int, int], mark: yaml.Mark) -> None:
        super().__init__(None, None, f"found the key {key!r} a second time", mark)
        self.key, self.lines = key, lines


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.safe_load`'s loader, refusing a key given twice in one mapping (`_DuplicateKeyError`).

    Keys merged in with ``<<:`` may be replaced, as YAML means them to be.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = lines.get(key)
            except TypeError:  # an unhashable key: the base class refuses it
                continue
            if first is not None:
                raise _DuplicateKeyError(key, (first, line), key_node.start_mark)
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Merge `update` into `into`: mappings key by key, anything else replaced; an empty section
    (None in YAML) changes nothing."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif value is not None or not isinstance(into.get(key), dict):
            into[key] = value


def records_folders(data: DataConfig) -> list[str]:
    """`data.train_records` as a list of folders (one folder, or several trained on together).

    >>> records_folders(DataConfig(train_records="data/drive/training"))
    ['data/drive/training']
    """
    records = data.train_records
    return [records] if isinstance(records, str) else list(records)


def _beside(config_path: Path, folder: str) -> str:
    """A relative folder resolved against the config file's folder when it exists there only."""
    if Path(folder).is_absolute():
        return folder
    beside = config_path.parent / folder
    return str(beside) if beside.exists() and not Path(folder).exists() else folder


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass, ready for YAML or JSON."""
    return dataclasses.asdict(config)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically) so the run can be repeated."""
    from keras_vessel.io import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like key.sub=value, e.g. train.epochs=5")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:  # new, or an empty section (None in YAML)
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise ConfigError(f"override {override!r}: the value {value!r} is {problem}; quote strings and close "
                          "brackets, e.g. --set 'data.train_records=[a, b]'") from None


def _build(cls: type, raw: Any, *, source: _Source, prefix: str) -> Any:
    if raw is None and prefix:  # an empty section
        raw = {}
    if not isinstance(raw, dict):
        section = prefix.rstrip(".")
        raise ConfigError(f"{source(section)}: {section or 'top level'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in raw if key not in names and prefix + str(key) not in RETIRED_KEYS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f"; did you mean {prefix}{close[0]!r}?" if close else f"; known keys: {', '.join(names)}"
        raise ConfigError(f"{source(prefix + str(key))}: unknown key {prefix}{key!r}{hint}")
    values = {}
    for name in names:
        if name in raw:
            values[name] = _convert(hints[name], raw[name], source=source, key=prefix + name)
    return cls(**values)


def _convert(hint: Any, value: Any, *, source: _Source, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source=source, prefix=key + ".")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{source(key)}: {key} must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (dict,):
        if value is None:  # an empty mapping in YAML
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source(key)}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        if typing.get_args(hint) == (str, list[str]):
            if isinstance(value, str) or (
                isinstance(value, list) and value and all(isinstance(item, str) and item for item in value)
            ):
                return value
            raise ConfigError(f"{source(key)}: {key} must be a folder or a non-empty list of folders, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source(key)}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source(key)}: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source(key)}: {key} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{source(key)}: {key} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source(key)}: {key} must be a string, got {value!r}")
        return value
    return value
