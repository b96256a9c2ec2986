"""Seed ensembles: several trained `.keras` models saved as one model.

The ensemble is itself a `.keras` file with the members' heads (see
`keras_vessel.models.build_ensemble`), so `evaluate --threshold train`,
`predict` and `export` take it unchanged, and its training threshold is
chosen for the averaged probabilities, not borrowed from a member.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from keras_vessel.io import write_json_atomic
from keras_vessel.provenance import git_revision, package_versions

ENSEMBLE_INFO = "ensemble.json"


def _member_info(path: Path) -> dict:
    """The member's file, checksum and, when it sits in a training run, that run's seed and revision."""
    info = {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    run = path.with_name("run.json")
    if run.is_file():
        record = json.loads(run.read_text())
        info.update({key: record.get(key) for key in ("name", "seed", "git_revision")})
    return info


def save_ensemble(model_paths: Sequence[str | Path], output: str | Path, *, overwrite: bool = False) -> Path:
    """Average the models in `model_paths` into one `.keras` file at `output`; returns `output`.

    Writes `ensemble.json` beside it (members with checksums, seeds and
    revisions, package versions). Both files are written atomically.
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
    members = [load_model_file(path) for path in paths]
    try:
        model = build_ensemble(members)
    except ValueError as error:
        raise ValueError(f"cannot ensemble {[str(p) for p in paths]}: {error}") from error
    output.parent.mkdir(parents=True, exist_ok=True)
    save_model_atomic(model, output)
    write_json_atomic(output.with_name(ENSEMBLE_INFO), {
        "members": [_member_info(path) for path in paths],
        "averaging": "mean of the members' probabilities, head by head",
        "git_revision": git_revision(),
        "versions": package_versions(),
    })
    return output
