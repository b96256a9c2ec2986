"""The fine-tuning protocol's photographs, rule, table and resumable command (notebook entry j); no training."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest

import keras_vessel.data.datasets as datasets
from experiments import finetune_protocol as fp
from experiments.cross_dataset import SHARED
from experiments.leave_one_camera_out import CAMERAS
from keras_vessel.data.datasets import Sample, SampleSpec
from keras_vessel.data.datasets.base import file_spec

# --------------------------------------------------------------------------- photographs


def _graded(name, image, label):  # a reader that does not read its label file as it is (ORVS's kind)
    return Sample(name, np.zeros((4, 4, 3), np.uint8), np.eye(4, dtype=bool), np.ones((4, 4), bool))


def _fake_datasets(root: Path) -> dict[tuple[str, str], list[SampleSpec]]:
    """Per (camera, split), specs over empty files under `root`, shaped like each camera's reader."""
    counts = {("drive", "training"): 6, ("drive", "test"): 3, ("chase_db1", "training"): 6, ("chase_db1", "test"): 2,
              ("hrf", "training"): 8, ("orvs", "training"): 7, ("orvs", "test"): 2, ("les_av", "all"): 9}
    out = {}
    for (camera, split), count in counts.items():
        folder = root / camera / split
        folder.mkdir(parents=True)
        specs = []
        for i in range(count):
            name = f"{split[:2]}{i:02d}"
            image, label, mask = (folder / f"{name}.tif", folder / f"{name}_manual1.gif", folder / f"{name}_mask.gif")
            for path in (image, label, mask):
                path.write_bytes(b"")
            if camera == "orvs":
                specs.append(SampleSpec(name, functools.partial(_graded, name, image, label)))
            else:
                specs.append(file_spec(name, image, label, None if camera == "chase_db1" else mask))
        out[(camera, split)] = specs
    return out


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    specs = _fake_datasets(tmp_path / "data")
    monkeypatch.setattr(datasets, "open_dataset", lambda camera, root, split: list(specs[(camera, split)]))
    return tmp_path / "data"


def test_every_camera_has_a_split_and_the_fixed_ones_are_first_five(fake_data):
    assert set(fp.SPLITS) == set(CAMERAS)
    for camera in CAMERAS:
        pool, test, rule = fp.camera_photographs(camera, fake_data)
        pool_names, test_names = [s.name for s in pool], [s.name for s in test]
        assert not set(pool_names) & set(test_names) and pool and test
        if fp.SPLITS[camera][1] is None:  # hrf, les_av: the first five in the reader's order, the rest test
            assert camera in ("hrf", "les_av") and rule.startswith("fixed")
            assert pool_names == [f"{fp.SPLITS[camera][0][:2]}{i:02d}" for i in range(fp.FIXED_POOL)]
            assert len(test_names) == {"hrf": 8, "les_av": 9}[camera] - fp.FIXED_POOL
        else:
            assert all(n.startswith("tr") for n in pool_names) and all(n.startswith("te") for n in test_names)


def test_the_choice_is_fixed_nested_and_inside_the_pool():
    pool = [f"{i:02d}_training" for i in range(21, 41)]
    for camera in CAMERAS:
        chosen = {k: fp.choose(pool, camera, k) for k in fp.KS}
        assert chosen == {k: fp.choose(list(reversed(pool)), camera, k) for k in fp.KS}  # order of the pool: no matter
        assert chosen[1] == chosen[3][:1] and chosen[3] == chosen[5][:3] and len(set(chosen[5])) == 5
        assert set(chosen[5]) <= set(pool)
    assert fp.choose(pool, "drive", 5) != fp.choose(pool, "chase_db1", 5)  # each camera its own draw
    assert fp.choose(pool, "drive", 5) != fp.choose(pool, "drive", 5, seed=1)
    with pytest.raises(ValueError, match="k = 5 photographs asked of a pool of 3"):
        fp.choose(pool[:3], "drive", 5)


@pytest.mark.skipif(not (SHARED / "DRIVE").is_dir(), reason="needs ../shared/data")
def test_the_choice_on_the_datasets_is_the_one_the_rules_note_states():
    """Names only (no image is read): what docs/notebook/2026-12-06-j-finetune-protocol.md lists."""
    expected = {"drive": (["31_training", "30_training", "22_training", "21_training", "23_training"], 20),
                "chase_db1": (["Image_01L", "Image_06R", "Image_06L", "Image_07L", "Image_08R"], 8),
                "hrf": (["02_dr", "01_h", "02_g", "01_g", "01_dr"], 10),
                "orvs": (["2117", "2053", "2113", "2116", "2013"], 8),
                "les_av": (["37", "34", "12", "33", "15"], 17)}
    for camera, (five, tested) in expected.items():
        pool, test, _ = fp.camera_photographs(camera, SHARED)
        assert fp.choose([s.name for s in pool], camera, 5) == five and len(test) == tested
        assert not {s.name for s in pool} & {s.name for s in test}


# --------------------------------------------------------------------------- the rule and the table


def _score(auc, f1):
    return {"images": 4, "AUC_pooled": auc, "F1": f1, "worst_AUC": auc - 0.03, "worst_F1": f1 - 0.1}


BASE = {camera: (0.95, 0.70) for camera in CAMERAS}


def _results(k5=None, base=BASE, reference=None, minutes=fp.DEFAULT_MINUTES):
    k5 = k5 or {camera: (auc + 0.01, f1 + 0.05) for camera, (auc, f1) in base.items()}
    runs = {fp.run_name(c, 5, minutes): {"camera": c, "k": 5, "minutes": minutes, "seed": 0, "scores": _score(*v),
                                         "finetune": {"wall_seconds": 540.0}} for c, v in k5.items()}
    return {"runs": runs, "base": {c: {"scores": _score(*v)} for c, v in base.items()},
            "reference": {c: {"scores": _score(*v)} for c, v in (reference or {}).items()}}


def test_done_when_k5_beats_the_base_everywhere_and_no_reference_is_far():
    verdict = fp.done_verdict(_results())
    assert verdict["done"] is True and verdict["missing"] == []
    assert all(check["F1_near_reference"] is None for check in verdict["checks"].values())
    near = fp.done_verdict(_results(reference={"drive": (0.97, 0.77)}))  # k = 5's F1 0.75: 0.02 below
    assert near["done"] is True and near["checks"]["drive"]["F1_near_reference"] is True
    line = fp.verdict_line(near, fp.DEFAULT_MINUTES)  # the cameras without a reference are named
    assert line.startswith("Done when") and "met = True; no reference for chase_db1, hrf, orvs, les_av" in line


@pytest.mark.parametrize("k5, reference, failing", [
    ({"orvs": (0.95, 0.80)}, None, "AUC_above_base"),  # equal AUC is not above
    ({"hrf": (0.96, 0.69)}, None, "F1_above_base"),
    ({"drive": (0.97, 0.74)}, {"drive": (0.97, 0.7601)}, "F1_near_reference"),
])
def test_each_condition_of_done_fails_alone(k5, reference, failing):
    scores = {camera: (auc + 0.01, f1 + 0.05) for camera, (auc, f1) in BASE.items()} | k5
    verdict = fp.done_verdict(_results(scores, reference=reference))
    camera = next(iter(k5))
    assert verdict["done"] is False and verdict["checks"][camera][failing] is False
    assert [name for name, value in verdict["checks"][camera].items() if value is False] == [failing]
    assert f"met = False (failing: {camera} {failing})" in fp.table(_results(scores, reference=reference))


def test_no_verdict_until_every_camera_has_its_base_and_k5():
    without_k5 = _results({c: (0.99, 0.9) for c in CAMERAS if c != "les_av"})
    without_base = _results(base={c: v for c, v in BASE.items() if c != "hrf"})
    other_budget = _results(minutes=20.0)
    verdict = fp.done_verdict(without_k5)
    assert verdict["done"] is None and verdict["missing"] == ["les_av"] and "les_av" not in verdict["checks"]
    assert all(check["AUC_above_base"] and check["F1_above_base"] for check in verdict["checks"].values())
    assert fp.done_verdict(without_base)["missing"] == ["hrf"]
    assert fp.done_verdict(other_budget)["missing"] == list(CAMERAS)  # only the default budget decides
    assert fp.done_verdict(other_budget, minutes=20.0)["done"] is True


def test_the_table_has_a_dash_for_every_missing_cell():
    results = {"runs": {fp.run_name("drive", 1): {"camera": "drive", "k": 1, "minutes": 10.0, "seed": 0,
                                                  "scores": _score(0.96, 0.75), "finetune": {"wall_seconds": 534}}},
               "base": {"drive": {"scores": _score(0.95, 0.70)}}, "reference": {}}
    lines = fp.table(results).splitlines()
    drive = next(line for line in lines if line.startswith("| drive"))
    assert drive == "| drive (4) | 0.9500 / 0.700 / 0.600 | 0.9600 / 0.750 / 0.650 | - | - | - | 8.9 / - / - |"
    for camera in list(CAMERAS)[1:]:
        assert f"| {camera} (-) | - | - | - | - | - | - / - / - |" in lines
    assert lines[-1].endswith("no verdict (not scored: drive, chase_db1, hrf, orvs, les_av)")
    twenty = fp.table(_results(minutes=20.0))  # another budget: a table of its own, the default's stays
    assert "Fine-tuned for 10 min" in twenty and "Fine-tuned for 20 min" in twenty


# --------------------------------------------------------------------------- the command


def _finished_finetune(output, base, *, wall_seconds):
    """What a finished `finetune` leaves in `output` (model, threshold, run.json naming the base), and returns."""
    output.mkdir(parents=True)
    (output / "model.keras").write_bytes(output.name.encode())
    (output / "threshold.json").write_text('{"threshold": 0.5}')
    (output / "run.json").write_text(json.dumps({"status": "completed", "finetune": {
        "base_model": {"path": str(base), "sha256": fp._model(base)["sha256"]}}}))
    return {"status": "completed", "threshold": 0.5, "rule": "r", "wall_seconds": wall_seconds, "budget": {}}


def test_the_command_fine_tunes_scores_and_resumes_without_redoing(fake_data, tmp_path, monkeypatch, capsys):
    loco, out, results_path = tmp_path / "loco", tmp_path / "runs", tmp_path / "finetune_protocol.json"
    for camera in ("drive", "orvs"):  # les_av has no base model
        base = loco / f"today_wnet_without_{camera}_s0" / "model.keras"
        base.parent.mkdir(parents=True)
        base.write_bytes(camera.encode())
    reference = tmp_path / "drive_alone.keras"
    reference.write_bytes(b"reference")
    tuned, scored, stopped = [], [], {"orvs_k3_10min_s0"}

    def fake_finetune(folders, output, *, base, minutes, seed, learning_rate_factor=None):
        listing = {key: sorted(p.name for p in folder.iterdir()) if folder else None for key, folder in folders.items()}
        links = [p.is_symlink() for p in folders["images"].iterdir()]
        tuned.append((output.name, listing, all(links), base, minutes))
        if output.name in stopped:
            raise KeyboardInterrupt  # stopped during a fine-tuning: nothing of it in the results
        return _finished_finetune(output, base, wall_seconds=300.0)

    def fake_score(model_path, samples, output, *, camera, split, progress=False):
        scored.append((model_path, camera, [s.name for s in samples]))
        return _score(0.95, 0.7)

    monkeypatch.setattr(fp, "finetune_photographs", fake_finetune)
    monkeypatch.setattr(fp, "score_model", fake_score)
    argv = ["--out", str(out), "--results", str(results_path), "--data", str(fake_data), "--loco-out", str(loco),
            "--only", "drive", "orvs", "les_av", "--reference", f"drive={reference}"]
    with pytest.raises(KeyboardInterrupt):
        fp.main(argv)
    assert [t[0] for t in tuned] == ["drive_k1_10min_s0", "drive_k3_10min_s0", "drive_k5_10min_s0",
                                     "orvs_k1_10min_s0", "orvs_k3_10min_s0"]
    _, listing, linked, base, minutes = tuned[2]
    chosen = fp.choose([f"tr{i:02d}" for i in range(6)], "drive", 5)
    assert listing == {"images": sorted(f"{n}.tif" for n in chosen), "labels": sorted(f"{n}.gif" for n in chosen),
                       "masks": sorted(f"{n}.gif" for n in chosen)}  # named after the sample, by symbolic link
    assert linked and base == loco / "today_wnet_without_drive_s0" / "model.keras" and minutes == 10.0
    orvs = fp.choose([f"tr{i:02d}" for i in range(7)], "orvs", 1)[0]
    assert tuned[3][1] == {"images": [f"{orvs}.tif"], "labels": [f"{orvs}.png"], "masks": None}  # label as read
    assert not (out / "photographs" / "drive_k5_10min_s0").exists()  # the links are gone once it has finished
    first = json.loads(results_path.read_text())
    assert sorted(first["runs"]) == ["drive_k1_10min_s0", "drive_k3_10min_s0", "drive_k5_10min_s0",
                                     "orvs_k1_10min_s0"]
    assert [p["name"] for p in first["runs"]["drive_k5_10min_s0"]["photographs"]] == chosen
    assert first["runs"]["drive_k5_10min_s0"]["photographs"][0]["image"].startswith(str(fake_data))  # the originals
    assert first["photographs"]["drive"]["test"] == ["te00", "te01", "te02"]
    assert {path for path, camera, _ in scored} == {
        loco / "today_wnet_without_drive_s0" / "model.keras", reference, loco / "today_wnet_without_orvs_s0" /
        "model.keras", *(out / f"{name}" / "model.keras" for name in first["runs"])}
    assert all(names == ["te00", "te01", "te02"] for _, camera, names in scored if camera == "drive")

    tuned.clear(), scored.clear(), stopped.clear()
    fp.main(argv)  # resumed: the stopped fine-tuning and what never started, nothing else
    assert [t[0] for t in tuned] == ["orvs_k3_10min_s0", "orvs_k5_10min_s0"]
    assert [path.parent.name for path, _, _ in scored] == ["orvs_k3_10min_s0", "orvs_k5_10min_s0"]
    assert "les_av" not in json.loads(results_path.read_text())["base"]
    assert "skip les_av: no base model" in capsys.readouterr().err

    tuned.clear(), scored.clear()
    fp.main(argv)  # all done: nothing again
    assert tuned == [] and scored == []
    results = json.loads(results_path.read_text())
    assert results["reference"]["drive"]["model"]["path"] == str(reference)
    del results["runs"]["drive_k3_10min_s0"]["scores"]
    results_path.write_text(json.dumps(results))
    fp.main(argv)  # a score lost: that score only
    assert tuned == [] and [path.parent.name for path, _, _ in scored] == ["drive_k3_10min_s0"]
    table = capsys.readouterr().out
    assert "| drive (4) |" in table and "5.0 / 5.0 / 5.0" in table and "not scored: chase_db1, hrf, les_av" in table


def test_another_base_model_is_refused_rather_than_mixed(fake_data, tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "score_model", lambda *a, **k: _score(0.95, 0.7))
    monkeypatch.setattr(fp, "finetune_photographs", lambda *a, **k: pytest.fail("no fine-tuning expected"))
    first, second = tmp_path / "a.keras", tmp_path / "b.keras"
    first.write_bytes(b"a"), second.write_bytes(b"b")
    common = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "r.json"), "--data", str(fake_data),
              "--only", "hrf", "--no-train"]
    fp.main([*common, "--base", f"hrf={first}"])
    with pytest.raises(SystemExit, match="from another base model"):
        fp.main([*common, "--base", f"hrf={second}"])
    with pytest.raises(SystemExit):
        fp.main([*common, "--base", f"nowhere={second}"])


def test_k_picks_which_fine_tunings_run(fake_data, tmp_path, monkeypatch):
    base = tmp_path / "loco" / "today_wnet_without_drive_s0" / "model.keras"
    base.parent.mkdir(parents=True)
    base.write_bytes(b"drive")
    tuned = []

    def fake_finetune(folders, output, *, base, minutes, seed, learning_rate_factor=None):
        tuned.append((output.name, len(list(folders["images"].iterdir()))))
        factors.append(learning_rate_factor)
        return _finished_finetune(output, base, wall_seconds=1.0)

    factors = []
    monkeypatch.setattr(fp, "finetune_photographs", fake_finetune)
    monkeypatch.setattr(fp, "score_model", lambda *a, **k: _score(0.95, 0.7))
    argv = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "r.json"), "--data", str(fake_data),
            "--loco-out", str(tmp_path / "loco"), "--only", "drive"]
    fp.main([*argv, "--k", "5"])
    assert tuned == [("drive_k5_10min_s0", 5)]
    fp.main([*argv, "--k", "1", "5"])  # k = 5 is done: only k = 1 runs
    assert tuned[1:] == [("drive_k1_10min_s0", 1)]
    with pytest.raises(SystemExit):
        fp.main([*argv, "--k", "4"])
    # another learning-rate factor (rule j4): runs of its own, tabled apart, the recipe's verdict unchanged
    fp.main([*argv, "--k", "5", "--learning-rate-factor", "0.3"])
    assert tuned[2:] == [("drive_k5_10min_s0_lr0.3", 5)] and factors == [None, None, 0.3]
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["runs"]["drive_k5_10min_s0_lr0.3"]["learning_rate_factor"] == 0.3
    assert "learning_rate_factor" not in results["runs"]["drive_k5_10min_s0"]
    table = fp.table(results)
    assert "Fine-tuned for 10 min;" in table and "Fine-tuned for 10 min at 0.3x the base learning rate;" in table
    assert "(k = 5, 10 min, learning-rate factor 0.3, every camera)" in table
    with pytest.raises(SystemExit):
        fp.main([*argv, "--learning-rate-factor", "0"])


# --------------------------------------------------------------------------- the references (rule j3)


def _sets(command: list[str]) -> dict[str, str]:
    return dict(command[i + 1].split("=", 1) for i, part in enumerate(command) if part == "--set")


def test_the_reference_is_the_base_recipe_on_the_pool_alone_with_every_photograph():
    from experiments.leave_one_camera_out import CameraRun

    reference = fp.ReferenceRun("hrf", Path("/records/pool_hrf")).train_command("kv", None, Path("/out"))
    base = CameraRun("today", "hrf").train_command("kv", Path("/records"), Path("/out"))
    ours, theirs = _sets(reference), _sets(base)
    assert ours.pop("data.train_records") == "[/records/pool_hrf]" and ours.pop("data.validation_images") == "0"
    theirs.pop("data.train_records")
    assert ours == theirs  # recipe, budget, seed, network: the base models'
    assert reference[reference.index("--output") + 1] == "/out/reference_wnet_hrf_s0"


@pytest.fixture
def fake_records(monkeypatch):
    """`write_dataset` writes a manifest naming the specs; `read_manifest` reads it back unchecked."""
    import keras_vessel.data.tfrecords as tfrecords

    prepared = []

    def write_dataset(specs, folder, *, dataset, split, show_progress=True):
        prepared.append((folder.name, dataset, split))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").write_text(json.dumps({"images": [{"name": s.name} for s in specs]}))

    monkeypatch.setattr(tfrecords, "write_dataset", write_dataset)
    monkeypatch.setattr(tfrecords, "read_manifest", lambda folder: json.loads((Path(folder) / "manifest.json").read_text()))
    return prepared


def test_references_are_trained_on_the_pool_once_and_scored(fake_data, fake_records, tmp_path, monkeypatch):
    loco, loco_records, out = tmp_path / "loco", tmp_path / "records", tmp_path / "runs"
    for camera in ("drive", "les_av"):
        base = loco / f"today_wnet_without_{camera}_s0" / "model.keras"
        base.parent.mkdir(parents=True)
        base.write_bytes(camera.encode())
    (loco_records / "drive").mkdir(parents=True)  # the protocol's records of DRIVE's training split
    (loco_records / "drive" / "manifest.json").write_text(json.dumps({"images": [{"name": f"tr{i:02d}"}
                                                                                 for i in range(6)]}))
    trained, scored = [], []

    def fake_train_all(runs, out_dir, records, *, jobs, keras_vessel):
        for run in runs:
            trained.append((run.name, run.records))
            folder = out_dir / run.name
            folder.mkdir(parents=True)
            (folder / "model.keras").write_bytes(run.name.encode())
            (folder / "run.json").write_text(json.dumps({"status": "completed"}))

    def fake_score(model_path, samples, output, *, camera, split, progress=False):
        scored.append(model_path.parent.name)
        return _score(0.95, 0.7)

    monkeypatch.setattr(fp, "train_all", lambda runs, *a, **k: fake_train_all(
        [r for r in runs if not (a[0] / r.name / "run.json").is_file()], *a, **k))
    monkeypatch.setattr(fp, "score_model", fake_score)
    monkeypatch.setattr(fp, "finetune_photographs", lambda *a, **k: pytest.fail("no fine-tuning expected"))
    argv = ["--out", str(out), "--results", str(tmp_path / "r.json"), "--data", str(fake_data), "--loco-out",
            str(loco), "--only", "drive", "les_av", "--no-train", "--train-references", "--loco-records",
            str(loco_records)]
    fp.main(argv)
    assert trained == [("reference_wnet_drive_s0", loco_records / "drive"),
                       ("reference_wnet_les_av_s0", out / "records" / "pool_les_av")]
    assert fake_records == [("pool_les_av", "les_av", "pool")]  # published pools are not prepared again
    pool = json.loads((out / "records" / "pool_les_av" / "manifest.json").read_text())["images"]
    assert [image["name"] for image in pool] == [f"al{i:02d}" for i in range(fp.FIXED_POOL)]
    results = json.loads((tmp_path / "r.json").read_text())
    assert set(results["reference"]) == {"drive", "les_av"}
    assert "reference_wnet_drive_s0" in scored and "reference_wnet_les_av_s0" in scored

    trained.clear(), scored.clear()
    fp.main(argv)  # done: neither trained nor scored again
    assert trained == [] and scored == []

    (loco_records / "drive" / "manifest.json").write_text(json.dumps({"images": [{"name": "tr00"}]}))
    with pytest.raises(SystemExit, match="not drive's fine-tuning pool"):
        fp.main(argv)  # records of other photographs are refused, not trained on
