"""`keras-vessel finetune` on synthetic photographs with a tiny model (CliRunner: exit code and stderr).

The timing of the first steps is replaced by a fixed one (`time_steps` is exercised by the slow test),
so the run trains `MIN_STEPS` steps: the budget's arithmetic is tested in tests/training/test_finetune.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from keras_vessel_cli.main import cli

FAST_TIMING = (0.0, 1.0)  # first step, then seconds per step: any budget of --minutes 0.01 gives MIN_STEPS
FOV_DIAMETER = 64.0  # of `fov_model`: the 96 px photographs' FOV is resampled to it (and to 1.5x, 2x for multi)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def show(result) -> str:
    return f"exit {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n{result.exception!r}"


def write_photographs(root: Path, count: int, *, size: int = 96, seed: int = 5) -> Path:
    """`count` synthetic photographs as JPEG in root/images, their labels as PNG in root/labels (`_label`)."""
    from keras_vessel.data.datasets import open_dataset

    (root / "images").mkdir(parents=True), (root / "labels").mkdir()
    for spec in open_dataset("synthetic", None, "training", count=count, size=size, seed=seed):
        sample = spec.load()
        Image.fromarray(sample.image).save(root / "images" / f"{sample.name}.jpg", quality=95)
        Image.fromarray((sample.label * 255).astype(np.uint8)).save(root / "labels" / f"{sample.name}_label.png")
    return root


@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory) -> Path:
    """A tiny untrained pixel-loss U-Net (one head: the cheapest graph to trace)."""
    import keras

    from keras_vessel.models import build_model

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("base") / "tiny.keras"
    build_model("unet", base_filters=4, depth=2, heads=("pixel",)).save(path)
    return path


@pytest.fixture(scope="module")
def fov_model(tmp_path_factory) -> Path:
    """`pixel_model` recording a training FOV diameter, as the bundled model does: `--scale multi` runs it."""
    import keras

    from keras_vessel.models import build_model

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("base") / "tiny_fov.keras"
    build_model("unet", base_filters=4, depth=2, heads=("pixel",), fov_diameter=FOV_DIAMETER).save(path)
    return path


def fine_tune(root: Path, output: Path, model: Path):
    """`keras-vessel finetune` of root's photographs from `model` into `output`, with `FAST_TIMING`."""
    import keras_vessel.training
    from keras_vessel.training import StepTiming

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras_vessel.training, "time_steps", lambda config: StepTiming(*FAST_TIMING))
        result = run("finetune", root / "images", "--labels", root / "labels", "--output", output,
                     "--model", model, "--minutes", "0.01", "--quiet")
    assert result.exit_code == 0, show(result)
    return result


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, pixel_model):
    """One fine-tuning of 3 photographs: (photographs root, run folder, the command's result)."""
    root = write_photographs(tmp_path_factory.mktemp("camera"), 3)
    output = tmp_path_factory.mktemp("runs") / "mine"
    return root, output, fine_tune(root, output, pixel_model)


def test_finetune_writes_a_complete_run_folder(finetuned, pixel_model):
    from keras_vessel.config import load_config
    from keras_vessel.training.finetune import MIN_STEPS

    root, output, result = finetuned
    for name in ("config.yaml", "run.json", "model.keras", "threshold.json", "report.md", "report.json",
                 "history.csv"):
        assert (output / name).is_file(), name
    info = json.loads((output / "run.json").read_text())
    assert info["status"] == "completed"
    digest = hashlib.sha256(pixel_model.read_bytes()).hexdigest()
    assert info["start_from"]["sha256"] == digest == info["finetune"]["base_model"]["sha256"]
    assert [p["name"] for p in info["finetune"]["photographs"]] == [f"synthetic_000{i}" for i in range(3)]
    assert info["finetune"]["photographs"][0]["label"].endswith("labels/synthetic_0000_label.png")
    config = load_config(output / "config.yaml")
    assert config.model.start_from == str(pixel_model) and config.loss.kind == "pixel"
    assert config.train.learning_rate == pytest.approx(1e-4)  # a tenth of the base recipe's default
    assert info["finetune"]["learning_rate_factor"] == 0.1
    # --minutes became steps: the recorded budget is what the config trains
    assert info["finetune"]["budget"]["steps"] == config.train.epochs * config.train.steps_per_epoch == MIN_STEPS
    assert "completed: fine-tuned on 3 photographs (4 steps)" in result.stdout
    assert (f"{output / 'model.keras'} (threshold {info['threshold']:.4f} chosen leave-one-image-out on the "
            "photographs)") in result.stdout
    assert "AUC" in (output / "report.md").read_text()
    # the base records no FOV diameter: nothing to take multiples of, so no threshold for --scale multi
    assert not (output / "threshold_multi.json").exists() and "threshold_multi" not in info
    assert "threshold_multi" not in json.loads((output / "report.json").read_text())


def test_the_threshold_follows_the_stated_rule(finetuned):
    """threshold.json = median over photographs i of the accuracy-optimal cut on the others (NumPy oracle)."""
    from keras_vessel.data.datasets import open_labelled
    from keras_vessel.models.inference import load_inference_model, predict_probability
    from keras_vessel.training.finetune import check_photographs

    root, output, _ = finetuned
    stored = json.loads((output / "threshold.json").read_text())
    assert "leave-one-image-out" in stored["rule"] and stored["images"] == 3
    model = load_inference_model(output / "model.keras")
    samples = check_photographs(open_labelled(root / "images", root / "labels"))
    pixels = [(predict_probability(model, s.image, fov=s.fov)[s.fov], s.label[s.fov]) for s in samples]
    left_out = json.loads((output / "report.json").read_text())["per_image"]
    for i, row in enumerate(left_out):
        p = np.concatenate([pixels[j][0] for j in range(3) if j != i])
        y = np.concatenate([pixels[j][1] for j in range(3) if j != i])
        best = max(np.mean((p >= t) == y) for t in np.append(np.unique(p), np.inf))
        assert np.mean((p >= row["threshold"]) == y) == pytest.approx(best)
    assert stored["threshold"] == pytest.approx(np.median([row["threshold"] for row in left_out]))


def test_a_base_with_a_fixed_fov_gets_a_threshold_for_scale_multi_chosen_the_same_way(fov_model, tmp_path):
    """A fine-tuning of the bundled model (which records its FOV diameter) wrote no threshold_multi.json:
    `predict --scale multi --model RUN/model.keras` fell back to the own-scale threshold with a warning."""
    from keras_vessel.data.datasets import open_labelled
    from keras_vessel.data.scaling import FUSION_MULTIPLES
    from keras_vessel.evaluation import leave_one_image_out_threshold, load_threshold
    from keras_vessel.models.inference import load_inference_model, predict_probability
    from keras_vessel.training.finetune import check_photographs

    root, output = write_photographs(tmp_path / "camera", 3), tmp_path / "run"
    result = fine_tune(root, output, fov_model)
    model_path = output / "model.keras"
    stored = json.loads((output / "threshold_multi.json").read_text())
    assert stored["scale"] == "multi" and stored["multiples"] == list(FUSION_MULTIPLES) and stored["images"] == 3
    fused = load_threshold(model_path, scale="multi")
    assert fused["threshold"] == stored["threshold"] and "leave-one-image-out" in fused["rule"]
    own = load_threshold(model_path)
    assert own["scale"] == "auto"
    # the same rule as threshold.json's, on the fine-tuned model's maps at --scale multi
    model = load_inference_model(model_path)
    samples = check_photographs(open_labelled(root / "images", root / "labels"))
    maps = [predict_probability(model, s.image, fov=s.fov, name=s.name, scale="multi") for s in samples]
    expected = leave_one_image_out_threshold(maps, [s.label for s in samples], [s.fov for s in samples])
    assert fused["threshold"] == pytest.approx(expected.value) and fused["rule"] == expected.rule
    info, report = (json.loads((output / name).read_text()) for name in ("run.json", "report.json"))
    assert info["status"] == "completed"
    assert info["threshold"] == report["threshold"] == own["threshold"]
    assert info["threshold_multi"] == report["threshold_multi"] == fused["threshold"]
    assert report["threshold_multi_rule"] == fused["rule"]
    assert f"Threshold at --scale multi {fused['threshold']:.4f} (threshold_multi.json)" in \
        (output / "report.md").read_text()
    assert (f"{model_path} (thresholds {own['threshold']:.4f} at its own scale, {fused['threshold']:.4f} at "
            "--scale multi, chosen leave-one-image-out on the photographs)") in result.stdout
    result = run("predict", "--model", model_path, root / "images", "--scale", "multi", "--output",
                 tmp_path / "maps", "--quiet")
    assert result.exit_code == 0, show(result)
    assert "threshold_multi.json" not in result.stderr and len(list((tmp_path / "maps").glob("*_mask.png"))) == 3


def test_predict_and_evaluate_take_the_run(finetuned, tmp_path):
    root, output, _ = finetuned
    result = run("predict", "--model", output / "model.keras", root / "images", "--output", tmp_path / "maps",
                 "--quiet")
    assert result.exit_code == 0, show(result)
    assert "no threshold.json" not in result.stderr and len(list((tmp_path / "maps").glob("*_mask.png"))) == 3
    result = run("evaluate", "--model", output / "model.keras", "--dataset", "folder", "--root", root,
                 "--split", "all", "--threshold", "train", "--output", tmp_path / "report", "--quiet")
    assert result.exit_code == 0, show(result)
    protocol = json.loads((tmp_path / "report" / "metrics.json").read_text())["protocol"]
    assert "leave-one-image-out" in protocol["threshold_rule"]


def test_resuming_with_other_photographs_is_refused(finetuned, pixel_model, tmp_path):
    root, output, _ = finetuned
    other = tmp_path / "other"
    shutil.copytree(root, other)
    (other / "images" / "synthetic_0002.jpg").unlink()
    (other / "labels" / "synthetic_0002_label.png").unlink()
    before = (output / "run.json").read_bytes()
    result = run("finetune", other / "images", "--labels", other / "labels", "--output", output,
                 "--model", pixel_model, "--minutes", "0.01", "--quiet")
    assert result.exit_code == 1, show(result)
    assert f"{output} holds a fine-tuning on other photographs (left out: synthetic_0002)" in result.stderr
    assert "Traceback" not in result.stderr and (output / "run.json").read_bytes() == before
    result = run("finetune", root / "images", "--labels", root / "labels", "--output", output,
                 "--model", pixel_model, "--minutes", "0.01", "--learning-rate-factor", "0.3", "--quiet")
    assert result.exit_code == 1, show(result)
    assert f"{output} holds a fine-tuning with another --learning-rate-factor (0.1 -> 0.3)" in result.stderr
    assert (output / "run.json").read_bytes() == before


def test_the_learning_rate_factor_scales_the_base_recipes_rate(camera, pixel_model, tmp_path):
    import keras_vessel.training
    from keras_vessel.config import load_config
    from keras_vessel.training import StepTiming

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras_vessel.training, "time_steps", lambda config: StepTiming(*FAST_TIMING))
        result = run("finetune", camera / "images", "--labels", camera / "labels", "--output", tmp_path / "run",
                     "--model", pixel_model, "--minutes", "0.01", "--learning-rate-factor", "0.5", "--quiet")
    assert result.exit_code == 0, show(result)
    assert load_config(tmp_path / "run" / "config.yaml").train.learning_rate == pytest.approx(5e-4)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["finetune"]["learning_rate_factor"] == 0.5


@pytest.fixture
def camera(tmp_path) -> Path:
    return write_photographs(tmp_path / "camera", 2, size=64)


@pytest.mark.parametrize("damage, message", [
    ("unmatched", r"no label in \S+labels for 1 photograph: extra; no photograph in \S+images for 1 label: "
                  r"stray.png"),
    ("size", r"size mismatch: \S+synthetic_0001_label.png is 64x40 \(WxH\) but its image \S+synthetic_0001.jpg "
             r"is 64x64"),
    ("empty", "the label of photograph 'synthetic_0000' marks no vessel inside its field of view"),
    ("grey", r"Error: label \S+synthetic_0000_label.png is not binary: expected at most two distinct values, "
             r"found 256: .*; save it as a black-and-white PNG, 0 and 255 only"),
])
def test_bad_photographs_are_refused_before_anything_is_written(camera, pixel_model, tmp_path, damage, message):
    if damage == "unmatched":
        shutil.copy(camera / "images" / "synthetic_0000.jpg", camera / "images" / "extra.jpg")
        shutil.copy(camera / "labels" / "synthetic_0000_label.png", camera / "labels" / "stray.png")
    elif damage == "size":
        Image.new("L", (64, 40)).save(camera / "labels" / "synthetic_0001_label.png")
    elif damage == "grey":  # a label saved with grey levels (anti-aliased, or a probability map)
        Image.fromarray(np.arange(64 * 64).reshape(64, 64).astype(np.uint8)).save(
            camera / "labels" / "synthetic_0000_label.png")
    else:
        Image.new("L", (64, 64)).save(camera / "labels" / "synthetic_0000_label.png")
    result = run("finetune", camera / "images", "--labels", camera / "labels", "--output", tmp_path / "run",
                 "--model", pixel_model, "--quiet")
    assert result.exit_code == 1, show(result)
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
    import re

    assert re.search(message, result.stderr), show(result)
    assert not (tmp_path / "run").exists()


def test_a_failure_before_training_leaves_nothing(camera, pixel_model, tmp_path, monkeypatch):
    import keras_vessel.training

    def broken(config):
        raise ValueError("the timing broke")

    monkeypatch.setattr(keras_vessel.training, "time_steps", broken)
    result = run("finetune", camera / "images", "--labels", camera / "labels", "--output", tmp_path / "run",
                 "--model", pixel_model, "--quiet")
    assert result.exit_code == 1 and "Error: the timing broke" in result.stderr, show(result)
    assert not (tmp_path / "run").exists()  # the prepared photographs were removed with the folder


@pytest.mark.parametrize("args, message", [
    (["--minutes", "0"], "Invalid value for '--minutes': must be a finite number above 0, got 0"),
    (["--minutes", "inf"], "Invalid value for '--minutes': must be a finite number above 0, got inf"),
    (["--minutes", "nan"], "Invalid value for '--minutes': must be a finite number above 0, got nan"),
    (["--seed", "-1"], "Invalid value for '--seed'"),
    (["--learning-rate-factor", "0"], "Invalid value for '--learning-rate-factor'"),
    (["--learning-rate-factor", "inf"], "Invalid value for '--learning-rate-factor': must be a finite number above "
                                        "0, got inf"),
])
def test_bad_options_are_usage_errors(camera, tmp_path, args, message):
    result = run("finetune", camera / "images", "--labels", camera / "labels", "--output", tmp_path / "run", *args)
    assert result.exit_code == 2 and message in result.stderr, show(result)
    result = run("finetune", tmp_path / "nowhere", "--labels", camera / "labels", "--output", tmp_path / "run")
    assert result.exit_code == 2 and "does not exist" in result.stderr, show(result)


def test_a_folder_holding_other_files_is_refused(camera, pixel_model, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    result = run("finetune", camera / "images", "--labels", camera / "labels", "--output", tmp_path / "run",
                 "--model", pixel_model, "--quiet")
    assert result.exit_code == 1, show(result)
    assert "is not empty (notes.txt) and holds no fine-tuning" in result.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_one_photograph_with_the_real_timing_and_export(pixel_model, tmp_path):
    root = write_photographs(tmp_path / "one", 1)
    output = tmp_path / "run"
    result = run("finetune", root / "images", "--labels", root / "labels", "--output", output,
                 "--model", pixel_model, "--minutes", "0.5", "--quiet")
    assert result.exit_code == 0, show(result)
    assert "fine-tuned on 1 photograph" in result.stdout and "chosen on the photographs themselves" in result.stdout
    info = json.loads((output / "run.json").read_text())
    assert info["finetune"]["budget"]["seconds_per_step"] > 0
    assert "themselves" in json.loads((output / "threshold.json").read_text())["rule"]
    result = run("export", "--model", output / "model.keras", "--name", "mine", "--version", "1",
                 "--out", tmp_path / "served", "--threshold", "train")
    assert result.exit_code == 0, show(result)
