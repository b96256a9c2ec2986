"""Seed ensembles: the averaged probabilities (NumPy oracle), the saved file, the CLI command."""

from __future__ import annotations

import hashlib
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from keras_vessel.errors import OutputError
from keras_vessel.evaluation.thresholds import save_threshold, threshold_path, threshold_paths
from keras_vessel.models.ensemble import ENSEMBLE_INFO, save_ensemble
from keras_vessel.models.inference import load_inference_model
from keras_vessel.models import (build_ensemble, build_inference_model, build_model, head_names, model_fov_diameter,
                                 model_stride)
from keras_vessel_cli.main import cli

IMAGES = np.random.default_rng(0).uniform(0, 255, (2, 16, 12, 3)).astype("float32")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _members(count: int = 3, heads=("segment", "pixel"), fov_diameter: float | None = None) -> list[keras.Model]:
    members = []
    for seed in range(count):
        keras.utils.set_random_seed(seed)
        members.append(build_model("unet", base_filters=4, depth=2, heads=heads, fov_diameter=fov_diameter))
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


def test_ensemble_rejects_members_trained_at_different_scales():
    """The ensemble runs every member at one scale: members recording different training FOV diameters (or one
    recording none) are refused, each named with its diameter; members at one scale give an ensemble at it."""
    same = _members(2, fov_diameter=540.0)
    assert model_fov_diameter(build_ensemble(same)) == 540.0
    with pytest.raises(ValueError, match=r"different FOV diameters \(member 0 \('unet_d2_f4'\) 540 px, "
                                         r"member 1 \('unet_d2_f4'\) 235\.5 px"):
        build_ensemble([same[0], *_members(1, fov_diameter=235.5)])
    with pytest.raises(ValueError, match=r"a\.keras 540 px, b\.keras none recorded"):
        build_ensemble([same[0], *_members(1)], labels=["a.keras", "b.keras"])


def test_save_ensemble_writes_a_model_the_inference_code_loads(tiny_model_file, tmp_path):
    paths = [tiny_model_file(seed=seed) for seed in (0, 1)]
    output, removed = save_ensemble(paths, tmp_path / "ens" / "model.keras")
    assert removed == ()
    loaded = load_inference_model(output)
    members = [keras.saving.load_model(p, compile=False) for p in paths]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(IMAGES)), _oracle(members), rtol=0, atol=1e-6)

    info = json.loads((output.parent / ENSEMBLE_INFO).read_text())
    assert [m["sha256"] for m in info["members"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert info["versions"]["keras"] == keras.__version__ and info["model"] == "model.keras"
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


def test_a_second_ensemble_in_the_same_folder_is_refused(tiny_model_file, tmp_path):
    """ensemble.json (and the threshold files) are kept per folder: a second ensemble beside the first would
    replace the first's record, so it is refused, the first's record kept; replacing the first is allowed."""
    paths = [tiny_model_file(seed=seed) for seed in (0, 1)]
    first, _ = save_ensemble(paths, tmp_path / "ens" / "first.keras")
    record = first.with_name(ENSEMBLE_INFO)
    before = record.read_text()
    with pytest.raises(OutputError, match=r"ensemble\.json belongs to .*first\.keras.*folder of its own"):
        save_ensemble(paths[::-1], tmp_path / "ens" / "second.keras")
    assert record.read_text() == before and not (tmp_path / "ens" / "second.keras").exists()

    old = json.loads(before)
    del old["model"]  # a record written before records named their model
    record.write_text(json.dumps(old))
    with pytest.raises(OutputError, match=r"ensemble\.json may belong to .*first\.keras"):
        save_ensemble(paths[::-1], tmp_path / "ens" / "second.keras")
    assert save_ensemble(paths[::-1], first, overwrite=True).path == first
    assert [m["sha256"] for m in json.loads(record.read_text())["members"]] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in paths[::-1]]


def test_an_ensemble_beside_another_models_thresholds_is_refused(tiny_model_file, tmp_path):
    """threshold.json beside the output belongs to the model it records: it would be applied to the ensemble."""
    paths = [tiny_model_file(seed=seed) for seed in (0, 1)]
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(paths[0].read_bytes())
    save_threshold(run / "model.keras", 0.4)
    with pytest.raises(OutputError, match=r"threshold\.json belongs to .*model\.keras"):
        save_ensemble(paths, run / "ens.keras", sidecars=threshold_paths(run / "ens.keras"))
    assert threshold_path(run / "model.keras").is_file() and not (run / "ens.keras").exists()


def test_cli_overwrite_removes_the_replaced_models_thresholds(tiny_model_file, tmp_path):
    """--overwrite over a model with stored thresholds removes them (they were chosen for its probabilities)
    and says so: `--threshold train` then finds none for the ensemble instead of applying the old one."""
    paths = [str(tiny_model_file(seed=seed)) for seed in (0, 1)]
    output = tmp_path / "ens" / "model.keras"
    assert CliRunner().invoke(cli, ["ensemble", *paths, "--output", str(output)]).exit_code == 0
    stored = [save_threshold(output, 0.4), save_threshold(output, 0.3, scale="multi"),
              save_threshold(output, 0.45, tta="d4")]
    result = CliRunner().invoke(cli, ["ensemble", *paths[::-1], "--output", str(output), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert ("removed the replaced model's threshold.json, threshold_multi.json, threshold_tta_d4.json"
            in " ".join(result.output.split())), result.output
    assert not any(p.exists() for p in [*stored, *threshold_paths(output)])
    assert sorted(p.name for p in output.parent.iterdir()) == [ENSEMBLE_INFO, "model.keras"]
    result = CliRunner().invoke(cli, ["export", "--model", str(output), "--name", "v", "--version", "1",
                                      "--out", str(tmp_path / "sm"), "--threshold", "train"])
    assert result.exit_code == 1 and "no training threshold for" in result.output, result.output
    assert "Traceback" not in result.output


def test_cli_ensemble_refuses_members_trained_at_different_scales(tiny_model_file, tmp_path):
    paths = [str(tiny_model_file(fov_diameter=540.0)), str(tiny_model_file(seed=1, fov_diameter=235.5))]
    output = tmp_path / "model.keras"
    result = CliRunner().invoke(cli, ["ensemble", *paths, "--output", str(output)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    said = " ".join(result.output.split())
    assert f"{paths[0]} 540 px, {paths[1]} 235.5 px" in said, result.output
    assert "an ensemble runs them all at one scale" in said, result.output
    assert not output.exists()
