"""CLI tests for `keras-vessel evaluate` and `keras-vessel predict` (CliRunner).

A tiny untrained, seeded U-Net saved to a temporary .keras file exercises the
mechanics; a few DRIVE images are linked into a temporary DRIVE layout so the
commands run on real files but stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from keras_vessel_cli.main import cli


def _run(args: list[str]):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def _show(result) -> str:
    return f"exit {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n{result.exception!r}"


@pytest.fixture(scope="module")
def model_path(tiny_model_file) -> Path:
    return tiny_model_file(base_filters=4, depth=2, seed=0)


@pytest.fixture(scope="module")
def small_drive(drive_root, tmp_path_factory) -> Path:
    """A DRIVE layout with test images 01-02 and training images 21-22 (symlinks)."""
    root = tmp_path_factory.mktemp("DRIVE")
    picks = {
        "test": {"images": ["{n}_test.tif"], "1st_manual": ["{n}_manual1.gif"],
                 "2nd_manual": ["{n}_manual2.gif"], "mask": ["{n}_test_mask.gif"]},
        "training": {"images": ["{n}_training.tif"], "1st_manual": ["{n}_manual1.gif"],
                     "mask": ["{n}_training_mask.gif"]},
    }  # fmt: skip
    numbers = {"test": ["01", "02"], "training": ["21", "22"]}
    for split, folders in picks.items():
        for folder, patterns in folders.items():
            (root / split / folder).mkdir(parents=True)
            for n in numbers[split]:
                for pattern in patterns:
                    name = pattern.format(n=n)
                    (root / split / folder / name).symlink_to(drive_root / split / folder / name)
    return root


# ---------------------------------------------------------------- evaluate


def test_evaluate_drive_otsu(model_path, small_drive, tmp_path):
    out = tmp_path / "eval"
    result = _run(["evaluate", "--model", model_path, "--dataset", "drive", "--root", small_drive,
                   "--output", out, "--threshold", "otsu"])  # fmt: skip
    assert result.exit_code == 0, _show(result)
    assert "AUC pooled" in result.stdout and "evaluate" in result.stderr  # progress on stderr
    report = json.loads((out / "metrics.json").read_text())
    assert [r["name"] for r in report["per_image"]] == ["01_test", "02_test"]
    assert report["second_observer"] is not None
    assert "Otsu" in report["protocol"]["threshold_rule"]
    assert (out / "roc.png").is_file() and (out / "overlays" / "01_test.png").is_file()
    assert "second observer (human)" in (out / "metrics.md").read_text()


def test_evaluate_train_threshold_missing_then_computed(model_path, small_drive, tmp_path):
    threshold_file = model_path.with_name("threshold.json")
    threshold_file.unlink(missing_ok=True)
    out = tmp_path / "eval"
    base = ["evaluate", "--model", model_path, "--dataset", "drive", "--root", small_drive,
            "--output", out, "--threshold", "train", "--no-overlays", "--quiet"]  # fmt: skip
    result = _run(base)
    assert result.exit_code == 1, _show(result)
    assert "threshold.json" in result.stderr and "--training-root" in result.stderr
    assert not out.exists()

    result = _run(base + ["--training-root", small_drive])
    assert result.exit_code == 0, _show(result)
    stored = json.loads(threshold_file.read_text())
    assert 0 < stored["threshold"] < 1 and stored["heads"] == "mean" and stored["images"] == 2
    assert "saved to" in result.stderr
    report = json.loads((out / "metrics.json").read_text())
    assert report["per_image"][0]["threshold"] == pytest.approx(stored["threshold"])
    assert "training images" in report["protocol"]["threshold_rule"]

    # Stored for heads=mean: asking for the pixel head must not silently reuse it.
    result = _run(base + ["--heads", "pixel"])
    assert result.exit_code == 1, _show(result)
    assert "heads='mean', not heads='pixel'" in result.stderr
    threshold_file.unlink()


def test_a_threshold_stored_by_evaluate_at_another_scale_is_chosen_at_the_models_own(model_path, small_drive,
                                                                                    tmp_path):
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import choose_training_threshold
    from keras_vessel.models.inference import load_inference_model

    threshold_file = model_path.with_name("threshold.json")
    threshold_file.unlink(missing_ok=True)
    result = _run(["evaluate", "--model", model_path, "--dataset", "drive", "--root", small_drive,
                   "--output", tmp_path / "eval", "--threshold", "train", "--training-root", small_drive,
                   "--scale", "1080px", "--no-overlays", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, _show(result)
    stored = json.loads(threshold_file.read_text())
    threshold_file.unlink()
    own = choose_training_threshold(load_inference_model(model_path), open_dataset("drive", small_drive, "training"),
                                    progress=False, predict_options={"scale": "auto"})
    assert stored["threshold"] == pytest.approx(own) and stored["scale"] == "auto"
    assert "model's own scale" in result.stderr


def test_evaluate_and_predict_with_tta(model_path, small_drive, tmp_path):
    out = tmp_path / "eval"
    result = _run(["evaluate", "--model", model_path, "--dataset", "drive", "--root", small_drive,
                   "--output", out, "--threshold", "train", "--training-root", small_drive, "--tta", "flip",
                   "--no-overlays", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, _show(result)
    stored = json.loads(model_path.with_name("threshold_tta_flip.json").read_text())
    report = json.loads((out / "metrics.json").read_text())
    assert report["protocol"]["tta"] == "flip" and stored["tta"] == "flip"
    assert report["per_image"][0]["threshold"] == pytest.approx(stored["threshold"])

    from keras_vessel.models.inference import load_inference_model, predict_probability
    from keras_vessel.data.preprocessing import read_image

    image_path = small_drive / "test" / "images" / "01_test.tif"
    result = _run(["predict", image_path, "--model", model_path, "--output", tmp_path / "pred", "--fov", "none",
                   "--tta", "flip", "--threshold", "train", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, _show(result)
    written = np.asarray(Image.open(tmp_path / "pred" / "01_test_prob.png"), dtype=np.float64) / 65535
    expected = predict_probability(load_inference_model(model_path), read_image(image_path), tta="flip")
    np.testing.assert_allclose(written, expected, atol=2e-5)
    model_path.with_name("threshold_tta_flip.json").unlink()


@pytest.mark.parametrize(
    "extra,code,message",
    [
        (["--threshold", "best"], 2, "--threshold"),
        (["--tta", "d8"], 2, "--tta"),
        (["--heads", "both"], 2, "--heads"),
        (["--training-root", "."], 2, "--training-root is only used with --threshold train"),
    ],
)
def test_evaluate_bad_usage(model_path, small_drive, tmp_path, extra, code, message):
    result = _run(["evaluate", "--model", model_path, "--dataset", "drive", "--root", small_drive,
                   "--output", tmp_path / "o", *extra])  # fmt: skip
    assert result.exit_code == code, _show(result)
    assert message in result.stderr


def test_evaluate_model_errors(small_drive, tmp_path):
    missing = tmp_path / "nope.keras"
    result = _run(["evaluate", "--model", missing, "--dataset", "drive", "--root", small_drive,
                   "--output", tmp_path / "o"])  # fmt: skip
    assert result.exit_code == 2 and "nope.keras" in result.stderr and "does not exist" in result.stderr
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_text("not a zip archive")
    result = _run(["evaluate", "--model", corrupt, "--dataset", "drive", "--root", small_drive,
                   "--output", tmp_path / "o"])  # fmt: skip
    assert result.exit_code == 1, _show(result)
    assert "could not load model" in result.stderr and "corrupt.keras" in result.stderr


def test_evaluate_requires_root_and_valid_layout(model_path, tmp_path):
    result = _run(["evaluate", "--model", model_path, "--dataset", "drive", "--output", tmp_path])
    assert result.exit_code == 2 and "--root is required" in result.stderr
    result = _run(["evaluate", "--model", model_path, "--dataset", "drive", "--root", tmp_path,
                   "--output", tmp_path / "o"])  # fmt: skip
    assert result.exit_code == 1 and "DRIVE" in result.stderr, _show(result)


# ---------------------------------------------------------------- predict


@pytest.fixture()
def input_folder(drive_root, tmp_path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "01_test.tif").symlink_to(drive_root / "test" / "images" / "01_test.tif")
    rgb = np.asarray(Image.open(drive_root / "test" / "images" / "02_test.tif").convert("RGB"))
    crop = rgb[100:228, 100:260]
    Image.fromarray(crop[..., 1]).save(folder / "grey.png")
    Image.fromarray(np.dstack([crop, np.full(crop.shape[:2], 200, np.uint8)])).save(folder / "rgba.png")
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def test_predict_folder_continues_past_bad_file(model_path, input_folder, tmp_path):
    out = tmp_path / "pred"
    result = _run(["predict", "--model", model_path, input_folder, "--output", out, "--overlay"])
    assert result.exit_code == 1, _show(result)
    assert "broken.jpg" in result.stderr and "1 of 4 inputs failed" in result.stderr
    assert f"(each with its reason in {out / 'failures.csv'})" in result.stderr, _show(result)
    assert (out / "failures.csv").read_text().startswith(f"name,path,reason\nbroken,{input_folder / 'broken.jpg'},")
    assert np.asarray(Image.open(out / "grey_overlay.png")).shape == (128, 160, 3)  # RGB, of a grey input too
    assert "wrote probability maps, masks and overlays for 3 of 4 images" in result.stdout
    for stem, shape in (("01_test", (584, 565)), ("grey", (128, 160)), ("rgba", (128, 160))):
        prob = Image.open(out / f"{stem}_prob.png")
        assert prob.mode.startswith("I") and prob.size == shape[::-1]  # 16-bit grey
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
    assert not (out / "broken_prob.png").exists() and not (out / "notes_prob.png").exists()
    # --fov auto: the dark surround of the DRIVE image is outside the FOV -> 0.
    prob = np.asarray(Image.open(out / "01_test_prob.png"))
    assert prob[0, 0] == 0 and prob[292, 282] > 0


def test_predict_again_skips_the_images_done_and_says_so(model_path, tmp_path):
    from keras_vessel.data.datasets import open_dataset

    photos, out = tmp_path / "photos", tmp_path / "pred"
    photos.mkdir()
    for spec in open_dataset("synthetic", None, "training", count=3, size=96, seed=3):
        Image.fromarray(spec.load().image).save(photos / f"{spec.name}.png")
    command = ["predict", "--model", model_path, photos, "--output", out, "--threshold", "0.5", "--measure", "--quiet"]
    result = _run(command)
    assert result.exit_code == 0, _show(result)
    fresh = {path.name: path.read_bytes() for path in out.iterdir()}
    sorted(out.glob("*_mask.png"))[1].unlink()  # a run stopped before it

    result = _run(command)
    assert result.exit_code == 0, _show(result)
    assert (f"wrote probability maps and masks for 1 of 3 images to {out} and their measurements to "
            f"{out / 'measures.csv'}; 2 of 3 already done, skipped") in result.stdout, _show(result)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == fresh
    result = _run([*command, "--overwrite"])
    assert result.exit_code == 0 and "for 3 of 3 images" in result.stdout and "skipped" not in result.stdout, \
        _show(result)


def test_predict_with_fov_file_and_threshold(model_path, drive_root, tmp_path):
    image = drive_root / "test" / "images" / "01_test.tif"
    fov_file = drive_root / "test" / "mask" / "01_test_mask.gif"
    out = tmp_path / "pred"
    result = _run(["predict", "--model", model_path, image, "--output", out, "--fov", fov_file,
                   "--threshold", "otsu", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, _show(result)
    fov = np.asarray(Image.open(fov_file).convert("L")) > 0
    mask = np.asarray(Image.open(out / "01_test_mask.png")) > 0
    prob = np.asarray(Image.open(out / "01_test_prob.png"))
    assert not mask[~fov].any() and not prob[~fov].any() and mask[fov].any()


def test_predict_fov_of_another_size_names_both_files(model_path, drive_root, tmp_path, caplog):
    """Each failed file is reported once, as it fails (the log line `predict: REASON`; it was echoed again
    as `error: REASON`), and listed in the final sentence."""
    small_mask = tmp_path / "small_mask.png"
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(small_mask)
    image = drive_root / "test" / "images" / "01_test.tif"
    with caplog.at_level("WARNING"):
        result = _run(["predict", "--model", model_path, image, "--output", tmp_path / "o",
                       "--fov", small_mask, "--quiet"])  # fmt: skip
    assert result.exit_code == 1, _show(result)
    [failure] = [record.getMessage() for record in caplog.records if record.getMessage().startswith("predict: ")]
    assert "small_mask.png is 12x10" in failure and "01_test.tif is 565x584" in failure
    assert "12x10" not in result.stderr and f"Error: 1 of 1 inputs failed: {image}" in result.stderr  # once


def test_predict_bad_inputs(model_path, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run(["predict", "--model", model_path, empty, "--output", tmp_path / "o"])
    assert result.exit_code == 2 and "holds no image" in result.stderr and "empty" in result.stderr
    result = _run(["predict", "--model", model_path, tmp_path / "*.png", "--output", tmp_path / "o"])
    assert result.exit_code == 2 and "matches no file" in result.stderr
    result = _run(["predict", "--model", model_path, tmp_path / "missing.png", "--output", tmp_path / "o"])
    assert result.exit_code == 2 and "missing.png does not exist" in result.stderr
    result = _run(["predict", "--model", model_path, "--output", tmp_path / "o"])
    assert result.exit_code == 2 and "INPUT" in result.stderr
    result = _run(["predict", "--model", model_path, empty, "--output", tmp_path / "o", "--fov", "nofile.png"])
    assert result.exit_code == 2 and "--fov" in result.stderr
    result = _run(["predict", "--model", model_path, empty, "--output", tmp_path / "o",
                   "--threshold", "train"])  # fmt: skip
    assert result.exit_code == 2 and "holds no image" in result.stderr  # inputs checked first


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize(
    "value, message",
    [("20px", "`scale` must be a field-of-view diameter between 64 and 4096 px; got '20px'."),
     ("wide", "`scale` must be 'auto', 'multi', 'adaptive', 'none', a field-of-view diameter such as '1080px' or a "
              "positive factor; got 'wide'.")],
)
def test_a_bad_scale_is_bad_usage_with_the_librarys_sentence(model_path, drive_root, tmp_path, command, value,
                                                            message):
    image = drive_root / "test" / "images" / "01_test.tif"
    where = [image] if command == "predict" else ["--dataset", "synthetic"]
    result = _run([command, "--model", model_path, *where, "--output", tmp_path / "o", "--scale", value])
    assert result.exit_code == 2, _show(result)
    assert "--scale" in result.stderr and message in " ".join(result.stderr.split()), _show(result)
    assert not (tmp_path / "o").exists()


def test_predict_train_threshold_missing(model_path, drive_root, tmp_path):
    model_path.with_name("threshold.json").unlink(missing_ok=True)
    image = drive_root / "test" / "images" / "01_test.tif"
    result = _run(["predict", "--model", model_path, image, "--output", tmp_path / "o",
                   "--threshold", "train"])  # fmt: skip
    assert result.exit_code == 1, _show(result)
    assert "threshold.json" in result.stderr and "keras-vessel evaluate" in result.stderr


# ------------------------------------------- a model trained in the test, end to end


@pytest.fixture(scope="module")
def trained_model(small_drive, tmp_path_factory) -> Path:
    """Prepare DRIVE 21-22 and train a small joint U-Net on them, all through the CLI."""
    import yaml

    work = tmp_path_factory.mktemp("trained")
    result = _run(["prepare", "--dataset", "drive", "--root", small_drive, "--split", "training",
                   "--out", work / "records", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, _show(result)
    config = {
        "name": "cli-drive-small",
        "data": {"train_records": str(work / "records"), "validation_images": 0, "patch_size": 64,
                 "batch_size": 8},
        "model": {"name": "unet", "options": {"base_filters": 8, "depth": 2}},
        "train": {"epochs": 4, "steps_per_epoch": 40, "learning_rate": 0.003, "seed": 0},
    }  # fmt: skip
    (work / "small.yaml").write_text(yaml.safe_dump(config))
    result = _run(["train", "--config", work / "small.yaml", "--output", work / "run", "--quiet"])
    assert result.exit_code == 0, _show(result)
    assert (work / "run" / "threshold.json").is_file()  # chosen on the training images
    return work / "run" / "model.keras"


def test_evaluate_and_predict_with_a_model_trained_in_the_test(trained_model, small_drive, drive_root, tmp_path):
    out = tmp_path / "eval"
    result = _run(["evaluate", "--model", trained_model, "--dataset", "drive", "--root", small_drive,
                   "--output", out, "--threshold", "train", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, _show(result)
    report = json.loads((out / "metrics.json").read_text())
    threshold = json.loads(trained_model.with_name("threshold.json").read_text())["threshold"]
    assert report["protocol"]["threshold"] == pytest.approx(threshold)
    # 160 steps on two images: far from the paper, far from chance (an untrained net scores ~0.5).
    assert report["summary"]["AUC_pooled"] > 0.9, report["summary"]
    assert report["summary"]["Acc"] > 0.9, report["summary"]

    # predict on the same test image: the mask is the one evaluate scored (same model, threshold, FOV rule).
    image = drive_root / "test" / "images" / "01_test.tif"
    result = _run(["predict", "--model", trained_model, image, "--output", tmp_path / "pred",
                   "--fov", drive_root / "test" / "mask" / "01_test_mask.gif", "--threshold", "train",
                   "--quiet"])  # fmt: skip
    assert result.exit_code == 0, _show(result)
    mask = np.asarray(Image.open(tmp_path / "pred" / "01_test_mask.png")) > 0
    truth = np.asarray(Image.open(drive_root / "test" / "1st_manual" / "01_manual1.gif")) > 0
    fov = np.asarray(Image.open(drive_root / "test" / "mask" / "01_test_mask.gif").convert("L")) > 0
    accuracy = np.mean(mask[fov] == truth[fov])
    per_image = {row["name"]: row for row in report["per_image"]}["01_test"]
    assert accuracy == pytest.approx(per_image["Acc"], abs=1e-3)
    assert accuracy > 0.9


def test_a_runs_tta_threshold_is_chosen_on_its_own_training_images(trained_model, small_drive, tmp_path):
    """`evaluate --tta flip --threshold train` on a run's model without threshold_tta_flip.json: chosen as
    train chose threshold.json (choose_run_threshold), no --training-root needed."""
    from keras_vessel.config import load_config, records_folders
    from keras_vessel.data.tfrecords import read_samples
    from keras_vessel.evaluation import choose_training_threshold
    from keras_vessel.models.inference import load_inference_model

    run = trained_model.parent
    own = trained_model.with_name("threshold.json").read_bytes()
    result = _run(["evaluate", "--model", trained_model, "--dataset", "drive", "--root", small_drive,
                   "--output", tmp_path / "eval", "--threshold", "train", "--tta", "flip", "--no-overlays",
                   "--quiet"])  # fmt: skip
    assert result.exit_code == 0, _show(result)
    stored = json.loads(trained_model.with_name("threshold_tta_flip.json").read_text())
    samples = read_samples(records_folders(load_config(run / "config.yaml").data))
    expected = choose_training_threshold(load_inference_model(trained_model), samples, progress=False,
                                         predict_options={"tta": "flip"})
    assert stored["threshold"] == expected and stored["tta"] == "flip" and stored["images"] == len(samples)
    assert f"chosen on the training images of {run}" in result.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["protocol"]["threshold"] == expected
    assert trained_model.with_name("threshold.json").read_bytes() == own  # the run's own threshold untouched
    assert json.loads((run / "run.json").read_text())["threshold_tta_flip"] == expected


# ------------------------------------------------------------ the bundled model


def test_predict_without_model_uses_the_bundled_drive_model(drive_root, tmp_path):
    from keras_vessel.models.inference import BUNDLED_MODEL

    image = drive_root / "test" / "images" / "01_test.tif"
    result = _run(["predict", image, "--output", tmp_path / "default", "--threshold", "train", "--quiet"])
    assert result.exit_code == 0, _show(result)
    assert f"using the bundled model {BUNDLED_MODEL}" in result.stderr
    result = _run(["predict", "--model", BUNDLED_MODEL, image, "--output", tmp_path / "explicit",
                   "--threshold", "train", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, _show(result)
    for name in ("01_test_prob.png", "01_test_mask.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "default" / name)),
                                      np.asarray(Image.open(tmp_path / "explicit" / name)))
    # The shipped model is a trained one (MODEL_CARD.md: test Acc ~0.95 with this threshold).
    mask = np.asarray(Image.open(tmp_path / "default" / "01_test_mask.png")) > 0
    truth = np.asarray(Image.open(drive_root / "test" / "1st_manual" / "01_manual1.gif")) > 0
    fov = np.asarray(Image.open(drive_root / "test" / "mask" / "01_test_mask.gif").convert("L")) > 0
    assert np.mean(mask[fov] == truth[fov]) > 0.93
    # What ships: the .keras file, its threshold and one TF Serving version folder, together under 10 MB.
    shipped = BUNDLED_MODEL.parent
    versions = [path.parent.name for path in shipped.glob("*/saved_model.pb")]
    assert (shipped / "threshold.json").is_file() and len(versions) == 1 and versions[0].isdigit(), versions
    assert sum(p.stat().st_size for p in shipped.rglob("*") if p.is_file()) < 10_000_000


def test_predict_without_model_and_without_the_bundled_file_says_what_to_pass(monkeypatch, drive_root, tmp_path):
    import keras_vessel.models.inference

    monkeypatch.setattr(keras_vessel.models.inference, "BUNDLED_MODEL", tmp_path / "gone" / "model.keras")
    image = drive_root / "test" / "images" / "01_test.tif"
    result = _run(["predict", image, "--output", tmp_path / "o", "--quiet"])
    assert result.exit_code == 2, _show(result)
    assert "gone/model.keras is missing" in result.stderr and "pass --model PATH" in result.stderr


def test_predict_advises_multi_scale_for_photographs_with_a_wide_field_of_view(tiny_model_file, tmp_path,
                                                                                 monkeypatch):
    """Photographs whose FOV is found at least MULTI_SCALE_FROM_FOV px across are counted and --scale adaptive
    advised, for a model recording its training diameter at --scale auto only; the maps are not changed.
    (The bar lowered to 300 px here: 2000 px photographs would cost seconds each.)"""
    from helpers import fundus_disc
    from keras_vessel.data.scaling import image_fov
    from keras_vessel.models.inference import load_inference_model
    from keras_vessel.data import scaling
    from keras_vessel.serving.prediction import PhotographWork, predict_files

    bar = 300.0
    monkeypatch.setattr(scaling, "MULTI_SCALE_FROM_FOV", bar)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, radius in {"wide": bar / 2 + 10, "just_under": bar / 2 - 10, "small": 60}.items():
        side = int(2 * radius) + 40
        image = fundus_disc(7, (side, side), radius=radius)
        found = image_fov(image)
        assert found.found and (found.diameter >= bar) == (name == "wide"), (name, found)
        Image.fromarray(image).save(photos / f"{name}.png")
    with_diameter = tiny_model_file(base_filters=4, depth=2, seed=0, fov_diameter=64.0)
    report = predict_files(with_diameter, sorted(photos.iterdir()), tmp_path / "a", progress=False)
    assert report.wide_fov == [photos / "wide.png"] and report.failures == []
    for scale in ("multi", "adaptive", "128px"):  # fused already, or another working diameter asked for
        assert predict_files(with_diameter, [photos / "wide.png"], tmp_path / f"b_{scale}", scale=scale,
                             progress=False).wide_fov == []
    work = PhotographWork()
    located = work.locate(photos / "wide.png", np.asarray(Image.open(photos / "wide.png")))
    assert work.notes(located, load_inference_model(with_diameter)).wide_fov
    assert not work.notes(located, load_inference_model(tiny_model_file())).wide_fov  # no diameter: no multiples
    assert not work.notes(located, None).wide_fov  # a predictor (a server) runs at its own settings

    result = _run(["predict", "--model", with_diameter, photos, "--output", tmp_path / "c", "--threshold", "0.5",
                   "--quiet"])
    assert result.exit_code == 0, _show(result)
    assert (f"photographs with a field of view at least {bar:g} px across: 1 of 3; "
            "--scale adaptive keeps more of their thin vessels") in result.stderr, _show(result)
    result = _run(["predict", "--model", with_diameter, photos / "small.png", "--output", tmp_path / "d",
                   "--threshold", "0.5", "--quiet"])
    assert result.exit_code == 0 and "--scale adaptive" not in result.stderr, _show(result)


def test_predict_warns_about_each_photograph_too_small_for_the_models_training_scale(tiny_model_file, tmp_path,
                                                                                     caplog):
    """A photograph whose FOV is found narrower than LOW_RESOLUTION_FOV_FRACTION of the model's training FOV is
    warned about by name with its diameter and listed in the report, at any scale; one above it is not; one
    beyond MAX_FACTOR is said to be predicted at its own size at --scale auto; a model recording no diameter
    and a predictor (a server) warn about nothing."""
    import logging

    from helpers import fundus_disc
    from keras_vessel.data.scaling import MAX_FACTOR, image_fov
    from keras_vessel.serving.prediction import LOW_RESOLUTION_FOV_FRACTION, predict_files

    trained = 160.0
    bar = LOW_RESOLUTION_FOV_FRACTION * trained
    photos = tmp_path / "photos"
    photos.mkdir()
    diameters = {}
    for name, radius in {"fine": bar / 2 + 8, "small": bar / 2 - 8, "tiny": 8}.items():
        image = fundus_disc(7, (int(2 * radius) + 40,) * 2, radius=radius)
        diameters[name] = image_fov(image).diameter
        Image.fromarray(image).save(photos / f"{name}.png")
    assert diameters["fine"] > bar > diameters["small"] > trained / MAX_FACTOR > diameters["tiny"], diameters
    with_diameter = tiny_model_file(base_filters=4, depth=2, seed=0, fov_diameter=trained)
    paths = sorted(photos.iterdir())

    def warnings(model_path, **options) -> tuple[list[Path], list[str]]:
        caplog.clear()
        output = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        with caplog.at_level(logging.WARNING, logger="keras_vessel.serving.prediction"):
            report = predict_files(model_path, paths, output, progress=False, **options)
        assert report.failures == []
        return report.low_resolution, [r.getMessage() for r in caplog.records if "low resolution" in r.getMessage()]

    listed, messages = warnings(with_diameter)
    assert listed == [photos / "small.png", photos / "tiny.png"], listed
    assert len(messages) == 2 and messages[0].startswith(
        f"{photos / 'small.png'}: low resolution: its field of view is {diameters['small']:.0f} px across, under "
        f"{LOW_RESOLUTION_FOV_FRACTION:.0%} of the {trained:.0f} px the model was trained at"), messages
    assert "own size" not in messages[0] and f"more than {MAX_FACTOR:g}x" in messages[1], messages
    listed, messages = warnings(with_diameter, scale="none")  # the photograph lacks the pixels anyway
    assert listed == [photos / "small.png", photos / "tiny.png"] and "own size" not in messages[1], messages
    assert warnings(tiny_model_file(base_filters=4, depth=2, seed=0)) == ([], [])
    assert warnings(None, predictor=lambda image: np.zeros(image.shape[:2], np.float32)) == ([], [])


def test_predict_refuses_the_threshold_of_another_model_in_the_same_folder(model_path, small_drive, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "model.keras").write_bytes(model_path.read_bytes())
    (folder / "mine.keras").write_bytes(model_path.read_bytes())  # a plain model copied beside a trained one
    from keras_vessel.evaluation import save_threshold

    save_threshold(folder / "model.keras", 0.4, heads="mean")
    result = _run(["predict", small_drive / "test" / "images", "--model", folder / "mine.keras",
                   "--output", tmp_path / "out", "--quiet"])  # fmt: skip
    assert result.exit_code != 0, _show(result)
    assert "holds the threshold of" in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert not any((tmp_path / "out").glob("*_mask.png"))  # no masks at a borrowed threshold
    result = _run(["predict", small_drive / "test" / "images", "--model", folder / "model.keras",
                   "--output", tmp_path / "own", "--quiet"])  # its own model reads it
    assert result.exit_code == 0, _show(result)
