"""Tests for keras_vessel.evaluation: thresholds, reports, second observer, overlays."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from keras_vessel import evaluation
from keras_vessel.evaluation import metrics
from keras_vessel.data.datasets import Sample


class RedChannelModel:
    """Probability = red channel / 255: lets a test put any probability map in the image."""

    def __call__(self, batch, training=False):
        return (np.asarray(batch)[..., :1] / 255.0).astype(np.float32)


PREDICT = {"stride": 1}


def _sample(seed: int, *, second: bool = True, shape=(48, 64)) -> tuple[Sample, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, bool)
    label[10:13, 4:60] = True  # thick-ish vessel
    label[30, 4:60] = True  # 1-px vessel
    label[12:24, 20] = True  # a branch, not touching the 1-px vessel
    prob = np.clip(0.45 * label + 0.6 * rng.random(shape), 0, 1)
    red = np.round(prob * 255).astype(np.uint8)
    image = np.dstack([red, np.zeros_like(red), np.zeros_like(red)])
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    fov = (yy - shape[0] / 2) ** 2 / 26**2 + (xx - shape[1] / 2) ** 2 / 34**2 < 1
    second_label = None
    if second:
        second_label = label.copy()
        second_label[30, 4:30] = False  # the second observer misses half the thin vessel
    sample = Sample(name=f"img{seed}", image=image, label=label, fov=fov, second_label=second_label)
    return sample, (red / 255.0).astype(np.float32)


# ---------------------------------------------------------------- thresholds


@pytest.mark.parametrize("value,expected", [("0.5", 0.5), (0.3, 0.3), ("OTSU", "otsu"), (" otsu ", "otsu")])
def test_parse_threshold(value, expected):
    assert evaluation.parse_threshold(value) == expected


@pytest.mark.parametrize("value", ["train", "1.5", 0, 1.0, True, None])
def test_parse_threshold_rejects(value):
    with pytest.raises(ValueError, match=r"must be a number in \(0, 1\) or 'otsu'"):
        evaluation.parse_threshold(value)


def test_threshold_file_round_trip_and_errors(tmp_path):
    model_path = tmp_path / "model.keras"
    with pytest.raises(FileNotFoundError, match="threshold.json.*--training-root"):
        evaluation.load_threshold(model_path)
    path = evaluation.save_threshold(model_path, 0.42, heads="mean", dataset="drive", images=20)
    assert path == tmp_path / "threshold.json"
    loaded = evaluation.load_threshold(model_path)
    assert loaded["threshold"] == 0.42 and loaded["heads"] == "mean" and "training" in loaded["rule"]
    path.write_text('{"rule": "x"}')
    with pytest.raises(ValueError, match="not a valid threshold file"):
        evaluation.load_threshold(model_path)


def test_choose_training_threshold_matches_metrics():
    pairs = [_sample(s) for s in range(3)]
    t = evaluation.choose_training_threshold(
        RedChannelModel(), [s for s, _ in pairs], progress=False, predict_options=PREDICT
    )
    probs = [np.where(s.fov, p, 0) for s, p in pairs]
    expected = metrics.accuracy_optimal_threshold(probs, [s.label for s, _ in pairs], [s.fov for s, _ in pairs])
    assert t == pytest.approx(expected)


# ---------------------------------------------------------------- evaluate


def test_evaluate_writes_consistent_reports(tmp_path):
    pairs = [_sample(s) for s in range(3)]
    samples = [s for s, _ in pairs]
    report = evaluation.evaluate(
        RedChannelModel(), samples, output_dir=tmp_path, threshold="0.5", dataset="toy",
        split="test", model_path="m.keras", progress=False, predict_options=PREDICT,
    )  # fmt: skip
    names = {p.name for p in tmp_path.iterdir()}
    assert {"metrics.json", "metrics.md", "per_image.csv", "roc.png", "overlays"} <= names
    assert not [p for p in tmp_path.rglob("*.tmp")]  # atomic writes leave no temp files
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["summary"]["AUC_pooled"] == pytest.approx(report["summary"]["AUC_pooled"])

    # Per-image rows against an independent recomputation.
    for row, (sample, prob) in zip(report["per_image"], pairs):
        pred, g = prob[sample.fov] >= 0.5, sample.label[sample.fov]
        assert row["TP"] == np.sum(pred & g) and row["FP"] == np.sum(pred & ~g)
        assert row["AUC"] == pytest.approx(roc_auc_score(g, prob[sample.fov]))
    pooled = roc_auc_score(
        np.concatenate([s.label[s.fov] for s in samples]),
        np.concatenate([p[s.fov] for s, p in pairs]),
    )
    assert report["summary"]["AUC_pooled"] == pytest.approx(pooled)
    assert report["summary"]["Se"] == pytest.approx(np.mean([r["Se"] for r in report["per_image"]]))

    with open(tmp_path / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["img0", "img1", "img2"]
    assert float(rows[1]["Acc"]) == pytest.approx(report["per_image"][1]["Acc"])

    text = (tmp_path / "metrics.md").read_text()
    for needle in ("inside the field of view (FOV) only", "pooled over all FOV pixels",
                   "fixed threshold t = 0.5", "toy", "`test`", "m.keras", "second observer"):  # fmt: skip
        assert needle in text, needle
    assert text.index("## Protocol") < text.index("## Results")

    # The second observer misses half the thin vessel and nothing else.
    second = report["second_observer"]["summary"]
    assert second["precision"] == 1.0 and second["Sp"] == 1.0 and second["Se"] < 1.0
    assert second["Se_thin"] < 1.0 and second["Se_thick"] == 1.0

    overlay = np.asarray(Image.open(tmp_path / "overlays" / "img0.png"))
    assert overlay.shape == (48, 64, 3)


class CountingModel(RedChannelModel):
    """`RedChannelModel` that counts the batches it is asked for."""

    calls = 0

    def __call__(self, batch, training=False):
        self.calls += 1
        return super().__call__(batch, training)


def test_evaluate_thresholds_equals_one_evaluate_per_threshold_and_predicts_once(tmp_path):
    """Three thresholds (two numbers, Otsu's per image) from one prediction of each image: each report is
    the one `evaluate` writes alone at that threshold, except for the predictions it did not repeat."""
    samples = [s for s, _ in (_sample(seed) for seed in range(3))]
    chosen = {tmp_path / "low": evaluation.Threshold(0.3, "fixed threshold t = 0.3"),
              tmp_path / "otsu": evaluation.Threshold.given("otsu"),
              tmp_path / "high": evaluation.Threshold(0.7, "a rule (t = 0.7)")}
    shared, alone = CountingModel(), CountingModel()
    reports = evaluation.evaluate_thresholds(shared, samples, outputs=chosen, dataset="toy", progress=False,
                                             predict_options=PREDICT)
    expected = [evaluation.evaluate(alone, samples, output_dir=tmp_path / f"alone_{folder.name}", threshold=t,
                                    dataset="toy", progress=False, predict_options=PREDICT)
                for folder, t in chosen.items()]
    assert alone.calls == 3 * shared.calls > 0
    for folder, report, reference in zip(chosen, reports, expected):
        assert report["per_image"] == reference["per_image"] and report["summary"] == reference["summary"]
        assert report["protocol"] == reference["protocol"]
        assert json.loads((folder / "metrics.json").read_text())["summary"] == reference["summary"]
        assert sorted(p.name for p in (folder / "overlays").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    assert [r["per_image"][0]["threshold"] for r in reports][::2] == [0.3, 0.7]
    assert reports[0]["summary"]["Se"] > reports[2]["summary"]["Se"]  # a lower threshold marks more
    with pytest.raises(ValueError, match="its own report folder"):
        evaluation.evaluate_thresholds(shared, samples, outputs={f"{tmp_path}/a": chosen[tmp_path / "low"],
                                                                 f"{tmp_path}/a/.": chosen[tmp_path / "high"]},
                                       progress=False, predict_options=PREDICT)


def test_evaluate_without_second_observer_and_with_otsu(tmp_path):
    pairs = [_sample(s, second=False) for s in range(2)]
    report = evaluation.evaluate(
        RedChannelModel(), [s for s, _ in pairs], output_dir=tmp_path, threshold="otsu",
        progress=False, overlays=False, predict_options=PREDICT,
    )  # fmt: skip
    assert report["second_observer"] is None
    assert "second observer" not in (tmp_path / "metrics.md").read_text()
    assert not (tmp_path / "overlays").exists()
    for row, (sample, prob) in zip(report["per_image"], pairs):
        assert row["threshold"] == pytest.approx(metrics.otsu_threshold(np.where(sample.fov, prob, 0), sample.fov))
    assert "Otsu" in report["protocol"]["threshold_rule"]


def test_evaluate_training_threshold_rule_is_recorded(tmp_path):
    sample, _ = _sample(0)
    report = evaluation.evaluate(
        RedChannelModel(), [sample], output_dir=tmp_path, threshold=0.37,
        threshold_rule=evaluation.TRAINING_RULE, progress=False, predict_options=PREDICT,
    )  # fmt: skip
    assert report["per_image"][0]["threshold"] == 0.37
    assert "training images" in report["protocol"]["threshold_rule"]
    assert "t = 0.37" in (tmp_path / "metrics.md").read_text()


def test_evaluate_states_a_working_diameter(tmp_path):
    """scale="Npx": the protocol records it normalised and metrics.md states the rule."""
    sample, _ = _sample(0)
    report = evaluation.evaluate(
        RedChannelModel(), [sample], output_dir=tmp_path, progress=False, overlays=False,
        predict_options={**PREDICT, "scale": " 1080 PX"},
    )  # fmt: skip
    assert report["protocol"]["scale"] == "1080px"
    assert "Scale: each image resampled so its field of view is 1080 px across" in (tmp_path / "metrics.md").read_text()


def test_evaluate_rejects_bad_arguments(tmp_path):
    sample, _ = _sample(0)
    with pytest.raises(ValueError, match="`samples` is empty"):
        evaluation.evaluate(RedChannelModel(), [], output_dir=tmp_path)
    with pytest.raises(ValueError, match="or 'otsu'"):
        evaluation.evaluate(RedChannelModel(), [sample], output_dir=tmp_path, threshold="best")
    with pytest.raises(ValueError, match="`thin_max_width` must be a positive number"):
        evaluation.evaluate(RedChannelModel(), [sample], output_dir=tmp_path, thin_max_width=-1)


def test_overlay_colours():
    label = np.zeros((4, 4), bool)
    label[0, :2] = True
    label[1, :2] = True
    binary = np.zeros_like(label)
    binary[0, 0] = binary[3, 3] = True
    fov = np.ones_like(label)
    fov[3, 0] = False
    thickness = np.full(label.shape, np.nan)
    thickness[0, :2] = 5.0
    thickness[1, :2] = 1.0
    out = evaluation.overlay_image(binary, label, fov, thickness, thin_max_width=2.0)
    colours = evaluation.OVERLAY_COLOURS
    assert tuple(out[0, 0]) == colours["true_positive"]
    assert tuple(out[0, 1]) == colours["false_negative_thick"]
    assert tuple(out[1, 0]) == colours["false_negative_thin"]
    assert tuple(out[3, 3]) == colours["false_positive"]
    assert tuple(out[2, 2]) == colours["true_negative"]
    assert tuple(out[3, 0]) == colours["outside_fov"]
    assert len(set(colours.values())) == len(colours)


def test_evaluate_small_unet_on_drive(tmp_path, drive_root):
    keras = pytest.importorskip("keras")
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.models import build_inference_model, build_model

    keras.utils.set_random_seed(0)
    model = build_inference_model(build_model("unet", base_filters=4, depth=2))
    specs = open_dataset("drive", drive_root, "test")[:2]
    report = evaluation.evaluate(model, specs, output_dir=tmp_path, dataset="drive", progress=False)
    assert [r["name"] for r in report["per_image"]] == [s.name for s in specs]
    assert report["protocol"]["images"] == 2
    # DRIVE test has a second observer: the human row must be a good segmentation.
    human = report["second_observer"]["summary"]
    assert 0.7 < human["Se"] < 0.9 and human["Acc"] > 0.93


def test_each_tta_mode_has_its_own_threshold_file(tmp_path):
    model_path = tmp_path / "model.keras"
    evaluation.save_threshold(model_path, 0.4, heads="mean")
    with pytest.raises(FileNotFoundError, match=r"threshold_tta_d4\.json.*--tta d4"):
        evaluation.load_threshold(model_path, tta="d4")  # never the single-pass threshold
    path = evaluation.save_threshold(model_path, 0.37, heads="mean", tta="d4")
    assert path == tmp_path / "threshold_tta_d4.json"
    assert evaluation.load_threshold(model_path, tta="d4")["threshold"] == 0.37
    assert evaluation.load_threshold(model_path)["threshold"] == 0.4
    with pytest.raises(ValueError, match="`tta` must be one of"):
        evaluation.threshold_path(model_path, "d8")


def test_fused_resolutions_have_their_own_threshold_file(tmp_path):
    model_path = tmp_path / "model.keras"
    evaluation.save_threshold(model_path, 0.4, heads="mean")
    with pytest.raises(FileNotFoundError, match=r"threshold_multi\.json.*--scale multi"):
        evaluation.load_threshold(model_path, scale="multi")  # never the single-resolution threshold
    path = evaluation.save_threshold(model_path, 0.3, heads="mean", scale="multi")
    assert path == tmp_path / "threshold_multi.json"
    assert evaluation.load_threshold(model_path, scale=" MULTI")["threshold"] == 0.3
    for scale in ("auto", "1080px", 0.5, "none"):  # every other scale: the model's own scale's threshold
        assert evaluation.load_threshold(model_path, scale=scale)["threshold"] == 0.4
    assert evaluation.threshold_path(model_path, "d4", "multi") == tmp_path / "threshold_tta_d4_multi.json"
    assert set(evaluation.threshold_paths(model_path)) >= {path, tmp_path / "threshold.json",
                                                          tmp_path / "threshold_tta_d4_multi.json"}


def test_a_threshold_file_recording_another_scale_is_refused(tmp_path):
    model_path = tmp_path / "model.keras"
    evaluation.save_threshold(model_path, 0.3, heads="mean", scale="multi")
    evaluation.threshold_path(model_path, scale="multi").replace(tmp_path / "threshold.json")  # misplaced
    with pytest.raises(ValueError, match=r"threshold\.json records a threshold chosen at --scale multi, not for "
                                         r"--scale auto; delete it"):
        evaluation.load_threshold(model_path)
    evaluation.save_threshold(model_path, 0.4, heads="mean", scale="1080px")  # chosen at a single resolution
    assert evaluation.load_threshold(model_path)["threshold"] == 0.4


def test_load_threshold_checks_heads(tmp_path):
    model_path = tmp_path / "model.keras"
    evaluation.save_threshold(model_path, 0.4, heads="mean")
    assert evaluation.load_threshold(model_path, heads="mean")["threshold"] == 0.4
    with pytest.raises(ValueError, match="heads='mean', not heads='pixel'"):
        evaluation.load_threshold(model_path, heads="pixel")


def test_a_threshold_of_another_model_still_beside_it_is_refused_and_a_renamed_models_is_kept(tmp_path):
    trained, copied = tmp_path / "model.keras", tmp_path / "mine.keras"
    evaluation.save_threshold(trained, 0.4, heads="mean")
    trained.write_bytes(b"weights")
    copied.write_bytes(b"weights of another training")  # beside model.keras, whose threshold.json names it
    with pytest.raises(ValueError, match=r"threshold\.json holds the threshold of .*model\.keras, not of "
                                         r".*mine\.keras .*put mine\.keras in a folder of its own"):
        evaluation.load_threshold(copied)
    assert evaluation.load_threshold(trained)["threshold"] == 0.4  # its own model reads it
    trained.unlink()  # model.keras renamed to mine.keras: its records stay its own
    assert evaluation.load_threshold(copied)["threshold"] == 0.4
