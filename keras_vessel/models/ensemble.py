"""Seed ensembles: several trained `.keras` models saved as one model.

The ensemble is itself a `.keras` file with the members' heads (see
`keras_vessel.models.build_ensemble`), so `evaluate --threshold train`,
`predict` and `export` take it unchanged, and its training threshold is
chosen for the averaged probabilities, not borrowed from a member.

Like a training run, an ensemble keeps its files beside it under fixed names:
its record `ENSEMBLE_INFO` and its threshold files
(`keras_vessel.evaluation.threshold_paths`, a later layer: callers pass them
to `save_ensemble` as `sidecars`). So each ensemble needs a folder of its own:
`save_ensemble` refuses a folder whose record or sidecar files belong to
another model still there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from keras_vessel.errors import OutputError
from keras_vessel.io import other_model_beside, recorded_model, write_json_atomic
from keras_vessel.provenance import git_revision, package_versions

ENSEMBLE_INFO = "ensemble.json"


class SavedEnsemble(NamedTuple):
    """What `save_ensemble` wrote: the ensemble's `path`, and the sidecar files it `removed` (those of the
    model it replaced, e.g. thresholds that would otherwise be applied to the ensemble)."""

    path: Path
    removed: tuple[Path, ...]


def _member_info(path: Path) -> dict:
    """The member's file, checksum and, when it sits in a training run, that run's seed and revision."""
    info = {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    run = path.with_name("run.json")
    if run.is_file():
        record = json.loads(run.read_text())
        info.update({key: record.get(key) for key in ("name", "seed", "git_revision")})
    return info


def _owners(path: Path, output: Path) -> tuple[list[Path], str]:
    """The models other than `output`, still beside `path`, that the record `path` belongs to, and how that is
    said: the one it names ("belongs"), or, for an ensemble record written before records named their model,
    any other beside it ("may belong")."""
    if recorded_model(path) is None and path.name == ENSEMBLE_INFO:
        return sorted(p for p in path.parent.glob("*.keras") if p.name != output.name), "may belong"
    other = other_model_beside(path, output)
    return ([other] if other else []), "belongs"


def _stale_sidecars(output: Path, sidecars: Sequence[str | Path]) -> list[Path]:
    """The existing `sidecars` of `output` that an ensemble written there replaces.

    They belong to the model replaced at `output` (or to one gone, or are unreadable): describing another
    model, they would be taken for the ensemble's. Raises OutputError when one of them, or the ensemble
    record, belongs to another model still beside `output`.
    """
    sidecars = [p for p in [output.with_name(ENSEMBLE_INFO), *map(Path, sidecars)] if p.is_file()]
    for path in sidecars:
        owners, belongs = _owners(path, output)
        if owners:
            raise OutputError(
                f"{path} {belongs} to {' or '.join(map(str, owners))} "
                "(an ensemble's record and threshold files are kept beside it under fixed names, one model per "
                f"folder); write the ensemble into a folder of its own, e.g. "
                f"--output {output.parent / output.stem / 'model.keras'}"
            )
    return [p for p in sidecars if p.name != ENSEMBLE_INFO]


def save_ensemble(model_paths: Sequence[str | Path], output: str | Path, *, overwrite: bool = False,
                  sidecars: Sequence[str | Path] = ()) -> SavedEnsemble:
    """Average the models in `model_paths` into one `.keras` file at `output`.

    Writes `ENSEMBLE_INFO` beside it (the model it describes, members with
    checksums, seeds and revisions, package versions); both files are written
    atomically. `sidecars` are the other files read for the model at `output`
    under fixed names, JSON recording their model's file name as ``"model"``:
    pass `keras_vessel.evaluation.threshold_paths(output)`. Those of the model
    it replaces (with `overwrite`; or of one gone) are removed just before the
    new model takes its place, and returned in `SavedEnsemble.removed`: choose
    the ensemble's own threshold with ``evaluate --threshold train``.

    Raises FileExistsError when `output` exists and not `overwrite`; ValueError
    for a bad request (see `keras_vessel.models.build_ensemble`), OutputError
    when the ensemble record or a sidecar beside `output` belongs to another
    model still there (each ensemble needs a folder of its own).
    """
    from keras_vessel.models import build_ensemble
    from keras_vessel.models.saving import load_model_file, save_model_atomic

    paths, output = [Path(p) for p in model_paths], Path(output)
    if output.suffix != ".keras":
        raise ValueError(f"the ensemble file must end in .keras, got {str(output)!r}")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass overwrite=True (--overwrite) to replace it")
    if len(set(p.resolve() for p in paths)) != len(paths):
        raise ValueError(f"the same model is listed twice in {[str(p) for p in paths]}; list each member once")
    stale = _stale_sidecars(output, sidecars)
    members = [load_model_file(path) for path in paths]
    try:
        model = build_ensemble(members, labels=[str(path) for path in paths])
    except ValueError as error:
        raise ValueError(f"cannot ensemble {[str(p) for p in paths]}: {error}") from error
    def remove_stale() -> None:  # once the new model is written, just before it replaces the old one
        for path in stale:
            path.unlink(missing_ok=True)

    save_model_atomic(model, output, before_replace=remove_stale)
    write_json_atomic(output.with_name(ENSEMBLE_INFO), {
        "model": output.name,
        "members": [_member_info(path) for path in paths],
        "averaging": "mean of the members' probabilities, head by head",
        "git_revision": git_revision(),
        "versions": package_versions(),
    })
    return SavedEnsemble(output, tuple(stale))
