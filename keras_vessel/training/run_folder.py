"""A training run's folder: everything a run writes and reads back to resume.

| file | content |
|---|---|
| `config.yaml` | the resolved config |
| `run.json` | seed, package versions, git revision, machine, strategy, records' checksums, status, resumes |
| `history.csv` | one row per finished epoch (with `train.ema_momentum`, `raw_val_*` scores the raw weights) |
| `checkpoints/` | model + optimizer + epoch, every epoch (resume point) |
| `logs/` | TensorBoard scalars |
| `model.keras` | the best model on validation (the last one without validation); the weight average with EMA |
| `model_raw.keras` | with EMA and validation only: the best raw weights, what the run would ship without EMA |
| `threshold.json` | written by `keras_vessel.evaluation.thresholds.choose_run_threshold` (a fine-tuning's by `keras_vessel.finetune`), not by training (with `threshold_multi.json` for `--scale multi` when it was trained at a fixed `data.fov_diameter`) |

``run.json``'s ``status`` is ``running`` while a process trains or finishes
the run (`keras-vessel train` chooses the threshold after training), then
``completed`` or ``early_stopped`` once everything is written, ``nan``,
``interrupted`` (Ctrl-C, SIGTERM) or ``failed`` (with ``error``). ``trained``
(how training ended, its epochs, the epochs asked for) is recorded as soon as
training ends: a run that has it but is not completed was stopped after
training, and a re-run only finishes it.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import keras

from keras_vessel.config import RETIRED_KEYS, ConfigError, RunConfig, config_to_dict, read_mapping, save_config
from keras_vessel.errors import OutputError
from keras_vessel.io import write_json_atomic, write_text_atomic
from keras_vessel.models.saving import save_model_atomic

__all__ = ["FINISHED_STATUSES", "RunFolder"]

# run.json's status of a run whose training ended and whose threshold is chosen (`keras_vessel.training.train`)
FINISHED_STATUSES = ("completed", "early_stopped")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunFolder:
    """The files of one run in `path`; only the chief process (`chief=True`) writes them."""

    def __init__(self, path: str | Path, *, chief: bool = True) -> None:
        self.path = Path(path)
        self.chief = chief
        self.info: dict[str, Any] = {}

    config_path = property(lambda self: self.path / "config.yaml")
    info_path = property(lambda self: self.path / "run.json")
    history_path = property(lambda self: self.path / "history.csv")
    checkpoints = property(lambda self: self.path / "checkpoints")
    logs = property(lambda self: self.path / "logs")
    model_path = property(lambda self: self.path / "model.keras")
    raw_model_path = property(lambda self: self.path / "model_raw.keras")

    def read_info(self) -> dict[str, Any]:
        """The stored run.json, or {} for a new folder."""
        return json.loads(self.info_path.read_text()) if self.info_path.is_file() else {}

    def check_resume(self, config: RunConfig, records: dict[str, str],
                     start_from: dict[str, str] | None = None) -> dict[str, Any] | None:
        """Refuse to resume with other settings or other data, or a run that cannot be resumed; returns the
        stored run.json ({} when it has none yet; None for a new folder).

        Whenever the folder holds a config.yaml, only ``train.epochs`` may differ from it (to train a
        finished run longer; `RETIRED_KEYS` are not compared): any other key that differs from it, or
        prepared records whose manifest changed since the run started, or a ``model.start_from`` file
        whose SHA-256 differs from the one recorded (`start_from`: path and sha256), raise ConfigError
        naming them and saying how to start afresh. A folder holding what finished epochs leave
        (`finished_files`) without the checkpoints to resume from (removed to save space), or a run's
        files without its config.yaml, raises OutputError: training into it would mix two runs' history
        and replace their model. A run stopped before its first epoch ended has none of them and resumes
        (from the start).
        """
        fresh = f"to start afresh, give another --output or delete {self.path}"
        checkpointed = (self.checkpoints / "checkpoint").is_file()  # the CheckpointManager's index
        finished = self.finished_files()
        if not self.config_path.is_file():
            held = [*finished, *(["checkpoints/"] if checkpointed else [])]
            if held:
                raise OutputError(f"{self.path} holds a run's {', '.join(held)} but not its config.yaml, so it "
                                  f"cannot be resumed; {fresh}")
            return None
        stored = read_mapping(self.config_path)
        changed = [(key, old, new) for key, old, new in _differences(stored, config_to_dict(config))
                   if key != "train.epochs" and key not in RETIRED_KEYS]
        if changed:
            shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changed)
            raise ConfigError(f"{self.path} holds a run started with other settings ({shown}). To resume it, "
                              f"use its settings (only train.epochs may change, to train longer); {fresh}")
        if finished and not checkpointed:
            raise OutputError(f"{self.path} holds a run's {', '.join(finished)} but not the checkpoints/ to resume "
                              f"it from (removed?), so it cannot be resumed, and training into it again would mix "
                              f"two runs; {fresh}")
        info = self.read_info()
        for folder, digest in (info.get("records") or {}).items():
            if records.get(folder, digest) != digest:
                raise ConfigError(f"the prepared data in {folder} changed since {self.path} started (prepare "
                                  f"was run again with other images or options); {fresh}")
        recorded = (info.get("start_from") or {}).get("sha256")
        if start_from and recorded and recorded != start_from["sha256"]:
            raise ConfigError(f"the model {start_from['path']} that {self.path} starts from changed since the run "
                              f"started (SHA-256 {recorded[:12]}... -> {start_from['sha256'][:12]}...); {fresh}")
        return info

    def finished_files(self) -> list[str]:
        """The names of what finished epochs leave in the folder: history.csv, model.keras, model_raw.keras,
        and run.json when it records finished epochs ([] for a new run, or one stopped in its first epoch)."""
        info = self.read_info() if self.info_path.is_file() else {}
        return ([path.name for path in (self.history_path, self.model_path, self.raw_model_path) if path.is_file()]
                + (["run.json"] if info.get("epochs_completed") or info.get("trained") else []))

    def start(self, config: RunConfig, info: dict[str, Any]) -> None:
        """Write config.yaml and run.json with status "running"."""
        self.info = {**info, "status": "running"}
        if self.chief:
            save_config(config, self.config_path)
            write_json_atomic(self.info_path, self.info)

    def update(self, **fields: Any) -> None:
        """Record `fields` in run.json (keeping what it holds)."""
        if not self.info:
            self.info = self.read_info()
        self.info.update(fields)
        if self.chief:
            write_json_atomic(self.info_path, self.info)

    def stop(self, status: str, epochs: int, **fields: Any) -> None:
        """Record how the run ended: its status, the epochs done and when.

        Keeps what other writers added to run.json since (the threshold step's ``threshold``).
        """
        if self.chief:
            try:
                self.info = {**self.read_info(), **self.info}
            except (OSError, ValueError):
                pass  # a damaged run.json is written again from what this process knows
        self.update(status=status, epochs_completed=epochs, finished=_now(), **fields)

    def save_model(self, model: keras.Model, *, raw: bool = False) -> None:
        if self.chief:
            save_model_atomic(model, self.raw_model_path if raw else self.model_path)

    def read_history(self) -> list[dict[str, float]]:
        """The finished epochs' rows of history.csv (epoch as int)."""
        if not self.history_path.is_file():
            return []
        with self.history_path.open() as handle:
            rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
        for row in rows:
            row["epoch"] = int(row["epoch"])
        return rows

    def write_history(self, history: list[dict[str, float]]) -> None:
        if not self.chief:
            return
        keys: list[str] = []
        for row in history:
            keys.extend(key for key in row if key not in keys)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        write_text_atomic(self.history_path, buffer.getvalue())


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every leaf that differs between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [item for key in keys for item in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    old = list(old) if isinstance(old, tuple) else old
    new = list(new) if isinstance(new, tuple) else new
    return [] if old == new else [(prefix.rstrip("."), old, new)]
