"""Seed ensembles: the averaged probabilities (NumPy oracle), the saved file, the CLI command."""

from __future__ import annotations

import hashlib
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from keras_vessel.models.ensemble import ENSEMBLE_INFO, save_ensemble
from keras_vessel.models.inference import load_inference_model
from keras_vessel.models import build_ensemble, build_inference_model, build_model, head_names, model_stride
from keras_vessel_cli.main import cli

IMAGES = np.random.default_rng(0).uniform(0, 255, (2, 16, 12, 3)).astype("float32")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _members(count: int = 3, heads=("segment", "pixel")) -> list[keras.Model]:
    members = []
    for seed in range(count):
        keras.utils.set_random_seed(seed)
        members.append(build_model("unet", base_filters=4, depth=2, heads=heads))
    return members


def _oracle(members: list[keras.Model]) -> np.ndarray:
    """Mean over members of each member's fused probability (the mean of its heads' sigmoids)."""
    fused = []
    for member in members:
        logits = member(IMAGES)
        fused.append(np.mean([_sigmoid(logits[head]) for head in head_names(member)], axis=0))
    return np.mean(fused, axis=0)


def test_ensemble_probability_is_the_mean_of_the_members():
    members = _members()
    ensemble = build_ensemble(members)
    out = keras.ops.convert_to_numpy(build_inference_model(ensemble)(IMAGES))
    np.testing.assert_allclose(out, _oracle(members), rtol=0, atol=1e-6)
    single = keras.ops.convert_to_numpy(build_inference_model(members[0])(IMAGES))
    assert np.abs(out - single).max() > 1e-3  # the members differ, so the test could fail
    assert head_names(ensemble) == ("segment", "pixel") and model_stride(ensemble) == 4


def test_ensemble_keeps_each_head():
    members = _members(2)
    out = build_ensemble(members)(IMAGES)
    for head in ("segment", "pixel"):
        expected = np.mean([_sigmoid(m(IMAGES)[head]) for m in members], axis=0)
        np.testing.assert_allclose(_sigmoid(out[head]), expected, rtol=0, atol=1e-6)


def test_ensemble_rejects_one_model_and_mismatched_heads():
    with pytest.raises(ValueError, match=r"at least 2 models, got 1"):
        build_ensemble(_members(1))
    mixed = _members(1) + _members(1, heads=("pixel",))
    with pytest.raises(ValueError, match=r"member 1 .* has \['pixel'\]"):
        build_ensemble(mixed)


def test_save_ensemble_writes_a_model_the_inference_code_loads(tiny_model_file, tmp_path):
    paths = [tiny_model_file(seed=seed) for seed in (0, 1)]
    output = save_ensemble(paths, tmp_path / "ens" / "model.keras")
    loaded = load_inference_model(output)
    members = [keras.saving.load_model(p, compile=False) for p in paths]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(IMAGES)), _oracle(members), rtol=0, atol=1e-6)

    info = json.loads((output.parent / ENSEMBLE_INFO).read_text())
    assert [m["sha256"] for m in info["members"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert info["versions"]["keras"] == keras.__version__
    assert sorted(p.name for p in output.parent.iterdir()) == [ENSEMBLE_INFO, "model.keras"]  # no temp files


def test_save_ensemble_rejects_bad_requests(tiny_model_file, tmp_path):
    path = tiny_model_file(seed=0)
    with pytest.raises(ValueError, match=r"listed twice"):
        save_ensemble([path, path], tmp_path / "model.keras")
    with pytest.raises(ValueError, match=r"must end in \.keras"):
        save_ensemble([path, tiny_model_file(seed=1)], tmp_path / "model.h5")
    (tmp_path / "model.keras").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match=r"already exists; pass overwrite=True"):
        save_ensemble([path, tiny_model_file(seed=1)], tmp_path / "model.keras")
    assert (tmp_path / "model.keras").read_bytes() == b"keep me"


def test_cli_ensemble_writes_the_model_and_reports_bad_members_clearly(tiny_model_file, tmp_path):
    paths = [str(tiny_model_file(seed=seed)) for seed in (0, 1)]
    output = tmp_path / "ens" / "model.keras"
    result = CliRunner().invoke(cli, ["ensemble", *paths, "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert f"wrote {output}: the mean of 2 models' probabilities" in result.output
    assert output.is_file()

    result = CliRunner().invoke(cli, ["ensemble", *paths, "--output", str(output)])
    assert result.exit_code == 1 and "already exists; pass overwrite=True (--overwrite)" in result.output

    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    result = CliRunner().invoke(cli, ["ensemble", paths[0], str(broken), "--output", str(tmp_path / "x.keras")])
    assert result.exit_code == 1 and "could not load model" in result.output and "broken.keras" in result.output
    assert "Traceback" not in result.output
