"""CLI tests for `keras-vessel prepare` and `keras-vessel train` (CliRunner: exit code and stderr)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import run_cli, show_result


@pytest.fixture(scope="module")
def synthetic_records(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "training"
    result = run_cli("prepare", "--dataset", "synthetic", "--split", "training", "--out", out)
    assert result.exit_code == 0, show_result(result)
    assert "prepared 20 images" in result.stdout
    assert "prepare synthetic/training" in result.stderr  # the progress bar
    return out


def test_prepare_writes_a_manifest_and_rerun_is_a_no_op(synthetic_records):
    manifest = json.loads((synthetic_records / "manifest.json").read_text())
    assert len(manifest["images"]) == 20 and manifest["id_mask_reference"] == "authors"
    before = {p: p.stat().st_mtime_ns for p in synthetic_records.glob("*.tfrecord.gz")}
    result = run_cli("prepare", "--dataset", "synthetic", "--split", "training", "--out", synthetic_records, "--quiet")
    assert result.exit_code == 0, show_result(result)
    assert {p: p.stat().st_mtime_ns for p in synthetic_records.glob("*.tfrecord.gz")} == before
    result = run_cli("prepare", "--dataset", "synthetic", "--split", "training", "--out", synthetic_records,
                 "--reference", "complete", "--quiet")
    assert result.exit_code == 1
    assert "was prepared with reference='authors', not 'complete'" in result.stderr


def test_prepare_only_named_photographs_in_the_split_order(tmp_path):
    out = tmp_path / "two"
    result = run_cli("prepare", "--dataset", "synthetic", "--split", "training", "--out", out, "--quiet",
                     "--only", "synthetic_0003", "--only", "synthetic_0001")
    assert result.exit_code == 0, show_result(result)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [image["name"] for image in manifest["images"]] == ["synthetic_0001", "synthetic_0003"]
    result = run_cli("prepare", "--dataset", "synthetic", "--split", "training", "--out", tmp_path / "none",
                     "--only", "synthetic_0001", "--only", "photo_7")
    assert result.exit_code == 1, show_result(result)
    assert "has no photograph named photo_7; its photographs are synthetic_0000, synthetic_0001" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "none").exists()


def test_prepare_needs_a_root_for_real_datasets(tmp_path):
    result = run_cli("prepare", "--dataset", "drive", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "--root is required for --dataset drive" in result.stderr


def test_prepare_names_the_expected_layout(tmp_path):
    (tmp_path / "not-drive").mkdir()
    result = run_cli("prepare", "--dataset", "drive", "--root", tmp_path / "not-drive", "--out", tmp_path / "out")
    assert result.exit_code == 1, show_result(result)
    assert "Error:" in result.stderr and "expected" in result.stderr and "not-drive" in result.stderr
    assert "Traceback" not in result.stderr


def test_prepare_rejects_an_unknown_dataset(tmp_path):
    result = run_cli("prepare", "--dataset", "messidor", "--out", tmp_path)
    assert result.exit_code == 2 and "'messidor' is not one of" in result.stderr


def write_config(folder: Path, records: Path, **train) -> Path:
    config = {
        "name": "cli-tiny",
        "data": {"train_records": str(records), "validation_images": 2, "patch_size": 32, "batch_size": 4},
        "model": {"name": "unet", "options": {"base_filters": 4, "depth": 2}},
        "train": {"epochs": 1, "steps_per_epoch": 2, **train},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("fov_diameter", [None, 96], ids=["own-scale", "fixed-fov"])
def test_train_runs_and_reports_where_the_model_is_and_its_thresholds(synthetic_records, tmp_path, fov_diameter):
    """The last line gives every threshold train stored: at a fixed data.fov_diameter, the one chosen on fused maps
    (threshold_multi.json, for --scale multi) too; it used to give the own-scale one only."""
    config = write_config(tmp_path, synthetic_records)
    fov = ["--set", f"data.fov_diameter={fov_diameter}"] if fov_diameter else []
    result = run_cli("train", "--config", config, "--output", tmp_path / "run", "--quiet", "--set", "train.seed=3",
                     *fov)
    assert result.exit_code == 0, show_result(result)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["seed"] == 3
    line = f"completed after 1 epoch; model: {tmp_path / 'run' / 'model.keras'} "
    if fov_diameter:
        assert result.stdout.strip().endswith(f"{line}(thresholds {info['threshold']:.4f} at its own scale, "
                                              f"{info['threshold_multi']:.4f} at --scale multi, on its training "
                                              "images)"), show_result(result)
    else:
        assert "threshold_multi" not in info
        assert result.stdout.strip().endswith(f"{line}(threshold {info['threshold']:.4f} on its training images)"), \
            show_result(result)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.epohcs=3"], "unknown key train.'epohcs'; did you mean train.'epochs'"),
        (["--set", "data.train_records=/nowhere"], "data.train_records: /nowhere/manifest.json not found"),
        (["--set", "data.patch_size=30"], "data.patch_size=30 is not divisible by the network's stride 4"),
        (["--set", "train.strategy=multi_worker"], "needs the TF_CONFIG environment variable"),
        (["--set", "nosuch.x=1"], "Error: --set nosuch.x=1: unknown key 'nosuch'; known keys: name, data"),
        (["--set", "data.min_fov_fraction=2"], "Error: data.min_fov_fraction must be in [0, 1]"),
    ],
)
def test_train_bad_config_is_a_clear_error(synthetic_records, tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = write_config(tmp_path, synthetic_records)
    result = run_cli("train", "--config", config, "--output", tmp_path / "run", "--quiet", *args)
    assert result.exit_code == 1, show_result(result)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_train_config_file_with_a_key_twice_or_an_empty_section(synthetic_records, tmp_path):
    """A second `train:` section used to replace the first silently; `--set loss.kind=pixel` on a file with an
    empty `loss:` section said "loss is not a section"."""
    config = write_config(tmp_path, synthetic_records)
    config.write_text(config.read_text() + "train:\n  seed: 1\n")
    result = run_cli("train", "--config", config, "--output", tmp_path / "run", "--quiet")
    assert result.exit_code == 1, show_result(result)
    assert f"Error: {config}: the key 'train' is given twice in the same section (on lines " in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()
    config = write_config(tmp_path, synthetic_records)
    config.write_text(config.read_text() + "loss:\n")
    result = run_cli("train", "--config", config, "--output", tmp_path / "run", "--quiet", "--set", "loss.kind=pixel")
    assert result.exit_code == 0, show_result(result)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["loss"]["kind"] == "pixel"


def test_train_missing_config_file(tmp_path):
    result = run_cli("train", "--config", tmp_path / "nope.yaml")
    assert result.exit_code == 1 and "nope.yaml does not exist" in result.stderr


def test_cli_choices_match_the_library():
    from keras_vessel.data.datasets import DATASETS
    from keras_vessel.checks import FUSIONS
    from keras_vessel.models.inference import TTA_MODES
    from keras_vessel_cli.options import DATASET_NAMES, HEADS, TTA_CHOICES

    assert DATASET_NAMES == list(DATASETS)
    assert TTA_CHOICES == list(TTA_MODES)
    assert HEADS == list(FUSIONS)
