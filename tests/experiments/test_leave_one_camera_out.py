"""The leave-one-camera-out protocol's runs and rules (docs/notebook/2026-12-06-h-leave-one-camera-out.md)."""

from pathlib import Path

import pytest

from experiments import leave_one_camera_out as loco
from experiments.leave_one_camera_out import CAMERAS, CameraRun, mask_rule_verdict, planned_runs, pooled, screen_verdict
from helpers import run_config
from keras_vessel.config import config_to_dict, load_config
from keras_vessel.data.datasets import DATASETS

REPO = Path(__file__).resolve().parents[2]


def test_five_cameras_each_a_reader_and_a_split_it_has():
    assert list(CAMERAS) == ["drive", "chase_db1", "hrf", "orvs", "les_av"]
    for camera, (folder, train_split, test_split) in CAMERAS.items():
        assert camera in DATASETS and folder
        assert test_split == "all"  # a left-out camera is tested on every image we have of it
        assert train_split in ("training", "all")


def test_every_run_trains_on_the_four_other_cameras(tmp_path):
    runs = planned_runs()
    assert len(runs) == len(CAMERAS) * (len(loco.RECIPES) + 1) and len({r.name for r in runs}) == len(runs)
    for run in runs:
        if run.full_length:
            continue  # test_a_full_length_run_is_the_shipped_recipe_at_the_bundled_models_budget
        config = run_config(run, tmp_path / "records")
        assert config.data.train_records == [str(tmp_path / "records" / c) for c in CAMERAS if c != run.left_out]
        assert config.model.name == "wnet" and config.loss.kind == "joint" and config.train.seed == run.seed
        assert config.train.epochs * config.train.steps_per_epoch == loco.SCREEN_EPOCHS * 100
        assert config.train.early_stopping_patience == 0
        wide = run.recipe == "wide"
        assert (config.data.fov_diameter, config.data.scale_jitter) == ((850.0, 0.6) if wide else (540.0, 0.2))


def _without(config, *keys):
    data = config_to_dict(config)
    data["data"] = {k: v for k, v in data["data"].items() if k not in ("train_records", *keys)}
    data["train"] = {k: v for k, v in data["train"].items() if k not in ("epochs",)}
    return {k: v for k, v in data.items() if k not in ("name", "model")}


def test_today_is_the_general_configs_recipe_and_wide_differs_only_in_scale():
    """'today' must be what ships (configs/general.yaml) but for records, budget and network."""
    general = load_config([REPO / "configs" / "general.yaml"])
    today = run_config(CameraRun("today", "drive"))
    wide = run_config(CameraRun("wide", "drive"))
    assert _without(today) == _without(general)
    assert _without(wide, "fov_diameter", "scale_jitter") == _without(today, "fov_diameter", "scale_jitter")


def _scores(**by_camera):
    return {camera: {"AUC_pooled": auc, "F1": f1, "worst_AUC": auc - 0.02, "worst_F1": f1 - 0.1, "Se_thin": 0.4}
            for camera, (auc, f1) in by_camera.items()}


def _results(recipe_scores):
    runs = {}
    for (recipe, variant), by_camera in recipe_scores.items():
        for camera, score in by_camera.items():
            entry = runs.setdefault(f"{recipe}_{camera}", {"recipe": recipe, "left_out": camera, "seed": 0,
                                                           "scores": {}})
            entry["scores"][variant] = score
    return {"runs": runs}


BASE = dict(drive=(0.97, 0.78), chase_db1=(0.96, 0.70), hrf=(0.95, 0.70), orvs=(0.97, 0.66), les_av=(0.98, 0.80))


def _shifted(delta_auc, delta_f1, **override):
    out = {c: (a + delta_auc, f + delta_f1) for c, (a, f) in BASE.items()}
    out.update(override)
    return out


@pytest.mark.parametrize("candidate, advance, failing", [
    (_shifted(0.003, 0.0), True, None),
    (_shifted(0.0015, 0.01), False, "mean_AUC"),
    (_shifted(0.003, -0.001), False, "mean_F1"),
    (_shifted(0.004, 0.01, hrf=(0.944, 0.75)), False, "no_camera_worse"),  # 0.006 below on one camera
])
def test_the_screening_rule_as_written(candidate, advance, failing):
    results = _results({("today", "auto"): _scores(**BASE), ("wide", "auto"): _scores(**candidate)})
    verdict = screen_verdict(pooled(results, "today", "auto"), pooled(results, "wide", "auto"))
    assert verdict["advance"] is advance
    assert [k for k, ok in verdict["checks"].items() if not ok] == ([failing] if failing else [])


def test_no_verdict_before_all_five_cameras_are_scored():
    partial = {c: s for c, s in BASE.items() if c != "les_av"}
    results = _results({("today", "auto"): _scores(**BASE), ("wide", "auto"): _scores(**_shifted(0.01, 0.1))})
    del results["runs"]["wide_les_av"]
    summary = pooled(results, "wide", "auto")
    assert set(summary["cameras"]) == set(partial) and not summary["complete"]
    assert screen_verdict(pooled(results, "today", "auto"), summary)["advance"] is None
    assert "no verdict (not all five cameras scored)" in loco.table(results)
    assert "| - |" in loco.table(results)  # the left-out camera not yet scored


def test_the_mask_rule_needs_the_mean_and_four_of_five_cameras():
    three_higher = _shifted(0.0, 0.05, orvs=(0.97, 0.60), les_av=(0.98, 0.79))
    four_higher = _shifted(0.0, 0.05, orvs=(0.97, 0.60))
    for otsu, expected, higher in ((three_higher, False, 3), (four_higher, True, 4)):
        results = _results({("today", "auto"): _scores(**BASE), ("today", "auto_otsu"): _scores(**otsu)})
        verdict = mask_rule_verdict(pooled(results, "today", "auto"), pooled(results, "today", "auto_otsu"))
        assert verdict == {"otsu": expected, "higher": higher}


@pytest.mark.parametrize("candidates, choice", [
    ({"fov810": _shifted(0.003, 0), "fov1080": _shifted(0.005, 0), "fovclip": _shifted(0.001, 0)}, "fov1080"),
    ({"fov810": _shifted(0.003, 0), "fov1080": _shifted(0.008, 0, drive=(0.964, 0.7)), "fovclip": _shifted(0, 0)},
     "fov810"),  # the best mean loses 0.006 on one camera
    ({"fov810": _shifted(0.0019, 0), "fov1080": _shifted(-0.01, 0), "fovclip": _shifted(0.001, 0)}, "auto"),
])
def test_the_resolution_rule_as_written(candidates, choice):
    verdict, table = _judged(candidates, loco.resolution_verdict, loco.RESOLUTION_CANDIDATES)
    assert verdict["choice"] == choice
    assert f"rule h3): {choice}" in table


def _judged(candidates, rule, names):
    """`rule`'s verdict on today's runs scored BASE at auto and `candidates` in the variants `names`, and the table."""
    results = _results({("today", "auto"): _scores(**BASE),
                        **{("today", name): _scores(**by_camera) for name, by_camera in candidates.items()}})
    return rule(pooled(results, "today", "auto"), {name: pooled(results, "today", name) for name in names}), \
        loco.table(results)


def test_the_clipped_working_resolution_follows_the_camera_within_limits(monkeypatch, tmp_path):
    scales = {}
    monkeypatch.setattr(loco, "median_fov_diameter", lambda samples: diameter)
    monkeypatch.setattr("keras_vessel.data.datasets.open_dataset", lambda *a, **k: [])
    monkeypatch.setattr("keras_vessel.evaluation.thresholds.load_threshold", lambda path: {"threshold": 0.5})
    monkeypatch.setattr("keras_vessel.models.inference.load_inference_model", lambda path: None)
    monkeypatch.setattr(loco, "summarise", lambda report: report)

    def fake_evaluate(model, samples, *, outputs, predict_options, **kwargs):
        return [predict_options["scale"]] * len(outputs)

    monkeypatch.setattr("keras_vessel.evaluation.evaluate_thresholds", fake_evaluate)
    for diameter, expected in ((400.0, 540 / 400), (900.0, 1.0), (3000.0, 1080 / 3000)):
        scales[diameter] = loco.score_model(tmp_path / "m.keras", "hrf", tmp_path, variants=("fovclip", "fov810"))
        assert scales[diameter]["fovclip"] == pytest.approx(expected)
        assert scales[diameter]["fov810"] == pytest.approx(810 / diameter)


def test_a_clipped_resolution_equal_to_a_fixed_one_reuses_its_scores(monkeypatch, tmp_path):
    evaluated = []
    monkeypatch.setattr(loco, "median_fov_diameter", lambda samples: 3300.0)
    monkeypatch.setattr("keras_vessel.data.datasets.open_dataset", lambda *a, **k: [])
    monkeypatch.setattr("keras_vessel.evaluation.thresholds.load_threshold", lambda path: {"threshold": 0.5})
    monkeypatch.setattr("keras_vessel.models.inference.load_inference_model", lambda path: None)
    monkeypatch.setattr(loco, "summarise", lambda report: {"scale": report})

    def fake_evaluate(model, samples, *, outputs, predict_options, **kwargs):
        evaluated.append(predict_options["scale"])
        return [predict_options["scale"]] * len(outputs)

    monkeypatch.setattr("keras_vessel.evaluation.evaluate_thresholds", fake_evaluate)
    already = {"fov1080": {"scale": 1080 / 3300}}
    scores = loco.score_model(tmp_path / "m.keras", "hrf", tmp_path, variants=("fovclip",), scored=already)
    assert scores["fovclip"] == {"scale": 1080 / 3300, "same_as": "fov1080"} and evaluated == []
    scores = loco.score_model(tmp_path / "m.keras", "hrf", tmp_path, variants=("fov810", "fovclip"))
    assert evaluated == [pytest.approx(810 / 3300), pytest.approx(1080 / 3300)]  # no fov1080 to copy


def test_scoring_resumes_from_a_report_of_exactly_this_evaluation(monkeypatch, tmp_path):
    import json
    import os

    model = tmp_path / "model.keras"
    model.write_bytes(b"weights")
    evaluated = []
    monkeypatch.setattr("keras_vessel.data.datasets.open_dataset", lambda *a, **k: ["a", "b"])
    monkeypatch.setattr("keras_vessel.evaluation.thresholds.load_threshold", lambda path: {"threshold": 0.7})
    monkeypatch.setattr("keras_vessel.models.inference.load_inference_model", lambda path: None)
    monkeypatch.setattr(loco, "summarise", lambda report: report["protocol"])
    monkeypatch.setattr("keras_vessel.evaluation.evaluate_thresholds",
                        lambda *a, outputs, **k: evaluated.extend(t.value for t in outputs.values())
                        or [{"protocol": {"fresh": True}}] * len(outputs))

    def report(variant, **changes):
        protocol = {"model": str(model), "dataset": "drive", "split": "all", "images": 2, "scale": "auto",
                    "threshold": "otsu" if variant == "auto_otsu" else 0.7, **changes}
        (tmp_path / f"eval_{variant}").mkdir(exist_ok=True)
        (tmp_path / f"eval_{variant}" / "metrics.json").write_text(json.dumps({"protocol": protocol}))

    report("auto")
    report("auto_otsu")
    scores = loco.score_model(model, "drive", tmp_path, variants=("auto", "auto_otsu"))
    assert evaluated == [] and scores["auto"]["threshold"] == 0.7 and scores["auto_otsu"]["threshold"] == "otsu"
    for changes in ({"threshold": 0.71}, {"images": 3}, {"model": "other.keras"}, {"scale": 0.5}):
        report("auto", **changes)
        assert loco.score_model(model, "drive", tmp_path, variants=("auto",))["auto"] == {"fresh": True}
    report("auto")
    os.utime(model, (os.path.getmtime(model) + 60,) * 2)  # the model was written again after the report
    assert loco.score_model(model, "drive", tmp_path, variants=("auto",))["auto"] == {"fresh": True}
    assert evaluated == [0.7] * 5


def test_the_table_shows_every_variant_of_today_and_other_recipes_at_auto():
    variants = {(recipe, variant): _scores(**BASE) for recipe in loco.RECIPES for variant in loco.VARIANTS}
    rows = [line.split(" | ")[:2] for line in loco.table(_results(variants)).splitlines() if line.startswith("| ")]
    assert rows[1:] == [["| today", v] for v in loco.VARIANTS] + [[f"| {r}", "auto"] for r in loco.RECIPES
                                                                   if r != "today"]


def test_variants_limits_what_is_scored(monkeypatch, tmp_path):
    import json

    run = CameraRun("wide", "orvs")
    (tmp_path / "runs" / run.name).mkdir(parents=True)
    (tmp_path / "runs" / run.name / "run.json").write_text(json.dumps({"git_revision": "x", "machine": {}}))
    (tmp_path / "runs" / run.name / "threshold.json").write_text('{"threshold": 0.5}')
    asked = []
    monkeypatch.setattr(loco, "finished_run", lambda folder: True)
    monkeypatch.setattr(loco, "score_model", lambda *a, variants, **k: asked.append(list(variants)) or
                        {v: {"AUC_pooled": 0.9} for v in variants})
    monkeypatch.setattr(loco, "table", lambda results: "")
    loco.main(["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "r.json"), "--no-train",
               "--only", run.name, "--variants", "auto", "auto_otsu"])
    assert asked == [["auto", "auto_otsu"]]
    with pytest.raises(SystemExit):
        loco.main(["--no-train", "--variants", "fov999"])


@pytest.mark.parametrize("candidates, choice", [
    ({"auto_mean": _shifted(0, 0.012), "auto_balanced": _shifted(0, 0.015)}, "auto_balanced"),
    ({"auto_mean": _shifted(0, 0.015), "auto_balanced": _shifted(0, 0.015)}, "auto_balanced"),  # a tie
    ({"auto_mean": _shifted(0, 0.02), "auto_balanced": _shifted(0, 0.03, drive=(0.97, 0.755))}, "auto_mean"),
    ({"auto_mean": _shifted(0, 0.009), "auto_balanced": _shifted(0, 0.03, hrf=(0.95, 0.67))}, "auto"),
])
def test_the_threshold_rule_as_written(candidates, choice):
    """Rule p1: +0.01 mean F1 over the pooled threshold, no camera more than 0.02 below, then the higher mean."""
    verdict, table = _judged(candidates, loco.threshold_rule_verdict, loco.THRESHOLD_CANDIDATES)
    assert verdict["choice"] == choice
    assert f"rule p1): {choice}" in table


def test_the_threshold_candidates_are_read_from_the_runs_threshold_file(monkeypatch, tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"weights")
    evaluated = []
    cameras = {"mean_of_cameras": 0.61, "camera_balanced": 0.64}
    stored = {"threshold": 0.74, "cameras": cameras}
    monkeypatch.setattr("keras_vessel.data.datasets.open_dataset", lambda *a, **k: ["a"])
    monkeypatch.setattr("keras_vessel.evaluation.thresholds.load_threshold", lambda path: stored)
    monkeypatch.setattr("keras_vessel.models.inference.load_inference_model", lambda path: None)
    monkeypatch.setattr(loco, "summarise", lambda report: report)
    monkeypatch.setattr("keras_vessel.evaluation.evaluate_thresholds",
                        lambda *a, outputs, **k: evaluated.append([(t.value, t.rule) for t in outputs.values()])
                        or [{"folder": folder.name} for folder in outputs])
    scores = loco.score_model(model, "drive", tmp_path, variants=("auto", "auto_mean", "auto_balanced"))
    assert len(evaluated) == 1  # one scale: each image predicted once for the three thresholds
    assert [t for t, _ in evaluated[0]] == [0.74, 0.61, 0.64]
    assert "mean of the training cameras" in evaluated[0][1][1] and "(t = 0.61)" in evaluated[0][1][1]
    assert scores == {v: {"folder": f"eval_{v}"} for v in ("auto", "auto_mean", "auto_balanced")}
    del stored["cameras"]
    with pytest.raises(SystemExit, match="no per-camera thresholds"):
        loco.score_model(model, "drive", tmp_path, variants=("auto_balanced",))


def test_a_full_length_run_is_the_shipped_recipe_at_the_bundled_models_budget(tmp_path):
    """Rule r1: configs/general.yaml on the four other cameras, 9000 steps per camera, no validation images."""
    general = load_config([REPO / "configs" / "general.yaml"])
    full = [run for run in planned_runs() if run.full_length]
    assert sorted(run.left_out for run in full) == sorted(CAMERAS)
    for run in full:
        config = run_config(run, tmp_path / "records")
        assert run.name == f"general_without_{run.left_out}_s0"
        assert config.data.train_records == [str(tmp_path / "records" / c) for c in CAMERAS if c != run.left_out]
        assert config.train.epochs * config.train.steps_per_epoch == 36_000  # 4 cameras x 9000
        assert config.data.validation_images == 0 and config.train.early_stopping_patience == 0
        assert config.model == general.model
        assert _without(config, "validation_images") == _without(general, "validation_images")
        assert "--quiet" in run.train_command("keras-vessel", tmp_path, tmp_path)


def test_the_multi_variant_runs_at_scale_multi_with_the_threshold_stored_for_it(monkeypatch, tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"weights")
    stored = {"auto": {"threshold": 0.8, "rule": "mean of cameras"}, "multi": {"threshold": 0.7, "rule": "multi rule"}}
    evaluated = []
    monkeypatch.setattr("keras_vessel.data.datasets.open_dataset", lambda *a, **k: ["a"])
    monkeypatch.setattr("keras_vessel.evaluation.thresholds.load_threshold",
                        lambda path, scale="auto": stored[scale])
    monkeypatch.setattr(loco, "median_fov_diameter", lambda samples: pytest.fail("multi needs no FOV diameter"))
    monkeypatch.setattr("keras_vessel.models.inference.load_inference_model", lambda path: None)
    monkeypatch.setattr(loco, "summarise", lambda report: report)

    def fake_evaluate(model, samples, *, outputs, predict_options, **kwargs):
        evaluated.append((predict_options["scale"], [(t.value, t.rule) for t in outputs.values()]))
        return [{"scale": predict_options["scale"]}] * len(outputs)

    monkeypatch.setattr("keras_vessel.evaluation.evaluate_thresholds", fake_evaluate)
    scores = loco.score_model(model, "hrf", tmp_path, variants=("auto", "multi"))
    assert scores == {"auto": {"scale": "auto"}, "multi": {"scale": "multi"}}
    assert [scale for scale, _ in evaluated] == ["auto", "multi"]
    (value, rule), = evaluated[1][1]
    assert value == 0.7 and rule.startswith("multi rule (stored by train)") and "(t = 0.7)" in rule


@pytest.mark.parametrize("aucs, holds, below", [
    ({c: 0.975 for c in CAMERAS}, True, {}),
    ({**{c: 0.975 for c in CAMERAS}, "hrf": 0.9699}, False, {"hrf": 0.9699}),
    ({"hrf": 0.965}, False, {"hrf": 0.965}),  # one fold already misses: no need to wait for the others
    ({"hrf": 0.972}, None, {}),
    ({c: 0.970 for c in CAMERAS}, True, {}),  # the bar itself passes
])
def test_issue_30s_bar_as_written(aucs, holds, below):
    results = _results({(loco.FULL_LENGTH_RECIPE, "auto"): _scores(**{c: (a, 0.7) for c, a in aucs.items()})})
    verdict = loco.bar_verdict(pooled(results, loco.FULL_LENGTH_RECIPE, "auto"))
    assert verdict["holds"] is holds and verdict["below"] == pytest.approx(below)
    text = loco.table(results)
    expected = {True: "holds", False: "misses (hrf", None: "no verdict (1 of 5)"}[holds]
    assert f"Issue 30's bar (every camera AUC >= {loco.AUC_BAR:.3f}): auto: {expected}" in text
    assert f"| {loco.FULL_LENGTH_RECIPE} | auto | " in text and "9000 steps per camera" in text
    assert "W-Net" not in text and "Screening rule" not in text  # no screening run in these results


DIAMETERS = {"drive": 540.0, "chase_db1": 917.0, "orvs": 1414.0, "les_av": 1444.0, "hrf": 3263.0}


@pytest.mark.parametrize("paying, bar", [
    ({"hrf"}, 2400.0),  # (1444 + 3263) / 2 = 2353.5, rounded to 100 px
    (set(CAMERAS), 0.0),  # every camera pays: multi for every photograph
    (set(CAMERAS) - {"hrf"}, float("inf")),  # the largest does not: multi for none
    ({"drive", "orvs", "hrf"}, 2400.0),  # a small camera paying does not move the bar below a larger one losing
    ({"les_av", "hrf"}, 1429.0),  # (1414 + 1444) / 2 = 1429: 1400 would pass ORVS's median, which loses
])
def test_rule_s3s_size_bar_as_written(paying, bar):
    auto = {c: (0.975, 0.75) for c in CAMERAS}
    multi = {c: (0.976, 0.75) if c in paying else (0.976, 0.749) for c in CAMERAS}  # F1 lower: does not pay
    results = _results({(loco.FULL_LENGTH_RECIPE, "auto"): _scores(**auto),
                        (loco.FULL_LENGTH_RECIPE, "multi"): _scores(**multi)})
    results["median_fov_diameter"] = DIAMETERS
    verdict = loco.size_bar_verdict(pooled(results, loco.FULL_LENGTH_RECIPE, "auto"),
                                    pooled(results, loco.FULL_LENGTH_RECIPE, "multi"), DIAMETERS)
    assert verdict["bar"] == bar and {c for c, pays in verdict["pays"].items() if pays} == paying
    assert verdict["order"] == ["drive", "chase_db1", "orvs", "les_av", "hrf"]
    line = next(line for line in loco.table(results).splitlines() if line.startswith("Rule s3"))
    paid = ", ".join(f"{c} ({DIAMETERS[c]:.0f} px)" for c in verdict["order"] if c in paying) or "none"
    assert line.startswith(f"Rule s3 (multi pays: AUC and F1 >= auto's) on {paid}; not on "), line
    assert line.endswith({0.0: ": multi for every photograph", 2400.0: ": multi from a 2400 px FOV",
                          1429.0: ": multi from a 1429 px FOV", float("inf"): ": multi for none"}[bar]), line


def test_rule_s3_waits_for_five_cameras_and_their_diameters():
    auto = {"hrf": (0.962, 0.744), "chase_db1": (0.980, 0.784)}
    multi = {"hrf": (0.981, 0.766), "chase_db1": (0.971, 0.678)}
    results = _results({(loco.FULL_LENGTH_RECIPE, "auto"): _scores(**auto),
                        (loco.FULL_LENGTH_RECIPE, "multi"): _scores(**multi)})
    line = next(line for line in loco.table(results).splitlines() if line.startswith("Rule s3"))
    assert line.endswith("on hrf; not on chase_db1: no verdict (2 of 5 cameras)"), line
    full = _results({(loco.FULL_LENGTH_RECIPE, v): _scores(**{c: (0.97, 0.7) for c in CAMERAS})
                     for v in ("auto", "multi")})
    assert loco.size_bar_verdict(pooled(full, loco.FULL_LENGTH_RECIPE, "auto"), pooled(full, loco.FULL_LENGTH_RECIPE,
                                 "multi"), {c: DIAMETERS[c] for c in list(CAMERAS)[:4]})["bar"] is None
    only_auto = _results({(loco.FULL_LENGTH_RECIPE, "auto"): _scores(**auto)})
    assert not any(line.startswith("Rule s3") for line in loco.table(only_auto).splitlines())


def test_a_full_length_fold_records_its_cameras_median_fov_once(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(loco, "median_fov_diameter", lambda samples: calls.append(len(samples)) or 917.04)
    monkeypatch.setattr("keras_vessel.data.datasets.open_dataset", lambda camera, root, split: [camera] * 28)
    results, path = {"runs": {}}, tmp_path / "results.json"
    for _ in range(2):
        loco.record_camera_fov(results, "chase_db1", data=tmp_path, results_path=path)
    assert results["median_fov_diameter"] == {"chase_db1": 917.0} and calls == [28]
    import json
    assert json.loads(path.read_text())["median_fov_diameter"] == {"chase_db1": 917.0}


class _Spec:
    def __init__(self, name):
        self.name = name

    def load(self):
        return type("Sample", (), {"image": self.name})()


@pytest.mark.parametrize("modes, evaluated_at, copied_from", [
    ({"a": "auto", "b": "auto"}, [], "auto"),  # every photograph below the bar: auto's scores
    ({"a": "multi", "b": "multi"}, [], "multi"),
    ({"a": "auto", "b": "multi"}, ["adaptive"], None),  # mixed: scored, each at its mode's stored threshold
])
def test_the_adaptive_variant_copies_a_variant_its_photographs_all_run_as_else_scores_each_at_its_mode(
        monkeypatch, tmp_path, modes, evaluated_at, copied_from):
    from keras_vessel.data import scaling

    model = tmp_path / "model.keras"
    model.write_bytes(b"weights")
    stored = {"auto": {"threshold": 0.8, "rule": "mean of cameras"}, "multi": {"threshold": 0.7, "rule": "multi rule"}}
    evaluated = []
    monkeypatch.setattr(scaling, "MULTI_SCALE_FROM_FOV", 1234.0)
    monkeypatch.setattr("keras_vessel.data.datasets.open_dataset", lambda *a, **k: [_Spec(n) for n in modes])
    monkeypatch.setattr("keras_vessel.evaluation.thresholds.load_threshold", lambda path, scale="auto": stored[scale])
    monkeypatch.setattr("keras_vessel.models.inference.load_inference_model", lambda path: None)
    monkeypatch.setattr("keras_vessel.models.inference.inference_scale",
                        lambda model, image, scale: type("Choice", (), {"mode": modes[image]})())
    monkeypatch.setattr(loco, "summarise", lambda report: report)

    def fake_evaluate(model, samples, *, outputs, predict_options, **kwargs):
        evaluated.append(predict_options["scale"])
        (threshold,) = outputs.values()
        return [{"value": threshold.value, "multi": threshold.multi}]

    monkeypatch.setattr("keras_vessel.evaluation.evaluate_thresholds", fake_evaluate)
    scored = {"auto": {"AUC_pooled": 0.96}, "multi": {"AUC_pooled": 0.98}}
    scores = loco.score_model(model, "hrf", tmp_path, variants=("adaptive",), scored=scored)
    assert evaluated == evaluated_at
    if copied_from:
        assert scores["adaptive"] == {**scored[copied_from], "same_as": copied_from, "multi_from_fov": 1234.0}
    else:
        assert scores["adaptive"] == {"value": 0.8, "multi": 0.7, "multi_from_fov": 1234.0}
    entry = {"scores": {"adaptive": scores["adaptive"], **scored}}
    calls = []
    monkeypatch.setattr(loco, "score_model", lambda *a, variants, **k: calls.append(variants) or {})
    monkeypatch.setattr(loco, "save_results", lambda *a: None)
    loco._score_missing(entry, model, "hrf", tmp_path, data=tmp_path, results={}, results_path=tmp_path / "r.json",
                        what="run", variants=("auto", "adaptive"))
    monkeypatch.setattr(scaling, "MULTI_SCALE_FROM_FOV", 2400.0)  # the bar moved: adaptive is scored again
    loco._score_missing(entry, model, "hrf", tmp_path, data=tmp_path, results={}, results_path=tmp_path / "r.json",
                        what="run", variants=("auto", "adaptive"))
    assert calls == [["adaptive"]]


def test_rule_s3_keeps_a_paying_camera_of_the_same_size_as_a_losing_one_below_the_bar():
    """ORVS (1442 px) paying and LES-AV (1441 px) not: no bar between 1441 and 1442 px tells their photographs
    apart, so both stay below it and the bar goes between them and HRF."""
    diameters = {"drive": 538.0, "chase_db1": 920.0, "les_av": 1441.0, "orvs": 1441.5, "hrf": 3263.0}
    paying = {"orvs", "hrf"}
    auto = {c: (0.975, 0.75) for c in CAMERAS}
    multi = {c: (0.976, 0.75) if c in paying else (0.974, 0.75) for c in CAMERAS}
    results = _results({(loco.FULL_LENGTH_RECIPE, "auto"): _scores(**auto),
                        (loco.FULL_LENGTH_RECIPE, "multi"): _scores(**multi)})
    verdict = loco.size_bar_verdict(pooled(results, loco.FULL_LENGTH_RECIPE, "auto"),
                                    pooled(results, loco.FULL_LENGTH_RECIPE, "multi"), diameters)
    assert verdict["bar"] == 2400.0  # (1441.5 + 3263) / 2, rounded
    diameters["orvs"] = 1441.0 * (1 + loco.SAME_SIZE) + 1  # another size: the bar between them
    verdict = loco.size_bar_verdict(pooled(results, loco.FULL_LENGTH_RECIPE, "auto"),
                                    pooled(results, loco.FULL_LENGTH_RECIPE, "multi"), diameters)
    assert verdict["bar"] == pytest.approx((1441.0 + diameters["orvs"]) / 2)  # 1400/1500 would pass a median
