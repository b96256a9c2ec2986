"""The five-camera driver's rules n1 and n2, table and command (notebook entry n); no training, no scoring."""

import statistics

import pytest

from experiments import five_cameras as fc
from experiments.leave_one_camera_out import CAMERAS

BUNDLED_AUC = {"drive": 0.9785, "chase_db1": 0.9844, "hrf": 0.955, "orvs": 0.978, "les_av": 0.984}


def _scores(auc: dict[str, float], f1: float, worst: float = 0.95) -> dict:
    return {camera: {"model": {"sha256": "x"}, "scores": {"AUC_pooled": value, "F1": f1, "worst_AUC": worst}}
            for camera, value in auc.items()}


def _results(fast_auc: dict[str, float], *, fast_f1: float = 0.80, speed: tuple[float, float] | None = (1.0, 0.3)):
    results = {"scores": {fc.BUNDLED: _scores(BUNDLED_AUC, 0.78, worst=0.93), fc.FAST: _scores(fast_auc, fast_f1)}}
    if speed is not None:
        results["speed"] = {"seconds": {fc.BUNDLED: speed[0], fc.FAST: speed[1]}}
    return results


def _passing() -> dict[str, float]:
    return {"drive": 0.9736, "chase_db1": 0.9795, "hrf": 0.960, "orvs": 0.979, "les_av": 0.985}


def test_n1_ships_only_when_every_condition_holds():
    verdict = fc.fast_verdict(_results(_passing()))
    assert verdict["ship"] and all(verdict["checks"].values())


@pytest.mark.parametrize("camera, value", [("drive", 0.9734), ("chase_db1", 0.9793), ("hrf", 0.954), ("les_av", 0.983)])
def test_n1_fails_on_one_camera(camera, value):
    auc = dict(_passing(), **{camera: value})
    verdict = fc.fast_verdict(_results(auc))
    assert not verdict["ship"]
    assert [key for key, ok in verdict["checks"].items() if not ok] == [
        f"{camera}_AUC_within" if camera in fc.BENCHMARK_CAMERAS else f"{camera}_not_below"]


def test_n1_needs_the_mean_f1_too_and_the_time():
    assert not fc.fast_verdict(_results(_passing(), fast_f1=0.77))["ship"]  # below the bundled 0.78 everywhere
    assert not fc.fast_verdict(_results(_passing(), speed=(1.0, 0.34)))["ship"]  # more than a third
    unmeasured = fc.fast_verdict(_results(_passing(), speed=None))
    assert unmeasured["checks"]["time_ratio"] is None and not unmeasured["ship"]


def test_n2_compares_with_the_two_camera_wnet():
    assert fc.budget_verdict(_results({**_passing(), "drive": 0.9715, "chase_db1": 0.9788}))["v2_at_v1_budget"]
    verdict = fc.budget_verdict(_results({**_passing(), "drive": 0.9714}))
    assert verdict["checks"] == {"drive": False, "chase_db1": True} and not verdict["v2_at_v1_budget"]


def test_the_table_has_a_row_per_model_with_its_means():
    results = _results(_passing())
    lines = fc.table(results).splitlines()
    header = lines[0].split(" | ")
    assert len(header) == 1 + len(CAMERAS) + 3
    row = next(line for line in lines if line.startswith(f"| {fc.FAST} |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[-3] == f"{statistics.mean(_passing().values()):.4f}"
    assert cells[-2] == "0.800" and cells[-1] == "0.950"
    assert "Rule n1 (fast model): ship = True (every check holds)" in lines
    assert "per 8 MP photograph: general_unet_v1 1.00, five_wnet 0.30 (ratio 0.30)" in fc.table(results)
    del results["speed"]
    assert "Rule n1 (fast model): ship = False (not measured: time_ratio)" in fc.table(results)
    incomplete = {"scores": {fc.FAST: _scores({"drive": 0.97}, 0.8)}}
    assert fc.table(incomplete).count("\n") == 1  # header only: a model without every camera gets no row


def test_the_train_command_names_every_folder_and_trains_on_every_photograph(tmp_path):
    folders = [tmp_path / camera for camera in CAMERAS]
    argv = fc.train_command(tmp_path / "run", folders, keras_vessel="kv")
    assert argv[:4] == ["kv", "train", "--config", str(fc.CONFIG)]
    assert f"data.train_records=[{', '.join(map(str, folders))}]" in argv
    assert "data.validation_images=0" in argv and argv[-2:] == ["--output", str(tmp_path / "run")]


def test_model_options_need_a_name_and_a_path():
    assert fc.parse_models(["a=x/m.keras"]) == {"a": fc.Path("x/m.keras")}
    with pytest.raises(SystemExit, match="NAME=PATH"):
        fc.parse_models(["x/m.keras"])


def test_every_experiment_driver_quiets_tensorflow_before_it_runs():
    """A driver run as ``python -m experiments.NAME`` prints our lines, not TensorFlow's CUDA probing."""
    import ast

    from experiments.cross_dataset import REPOSITORY

    loud = []
    for path in sorted((REPOSITORY / "experiments").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                calls = [ast.unparse(statement) for statement in node.body if isinstance(statement, ast.Expr)]
                if not calls or calls[0] != "quiet_tensorflow()":
                    loud.append(path.name)
    assert loud == []


def test_the_bundled_model_is_named_by_its_highest_served_version(tmp_path):
    folder = tmp_path / "general_unet"
    for version in ("1", "2", "10"):
        (folder / version).mkdir(parents=True)
    (folder / "notes").mkdir()
    assert fc.bundled_name(folder / "model.keras") == "general_unet_v10"


def test_the_bundled_model_keeps_the_name_its_file_was_scored_under(tmp_path):
    """v2 shipped as the candidate general_unet_v2_45k: not scored again as general_unet_v2 (o1's candidate)."""
    import hashlib

    folder = tmp_path / "general_unet"
    (folder / "2").mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"weights of v2")
    sha256 = hashlib.sha256(b"weights of v2").hexdigest()
    results = {"scores": {"general_unet_v2": {"drive": {"model": {"sha256": "another file"}}},
                          "general_unet_v2_45k": {"drive": {"model": {"sha256": sha256}}}}}
    assert fc.bundled_name(folder / "model.keras", results) == "general_unet_v2_45k"
    del results["scores"]["general_unet_v2_45k"]
    assert fc.bundled_name(folder / "model.keras", results) == "general_unet_v2"


@pytest.mark.parametrize("change, failing", [
    ({}, []),
    ({"drive": (0.9779, 0.80)}, ["drive_AUC_bar"]),
    ({"chase_db1": (0.9829, 0.80)}, ["chase_db1_AUC_bar"]),
    ({"hrf": (0.97, 0.779)}, ["hrf_not_below_v1"]),  # v1's F1 is 0.78
    ({"orvs": (0.9779, 0.80)}, ["orvs_not_below_v1"]),  # v1's AUC is 0.978
])
@pytest.mark.parametrize("candidate, rule", [(fc.V2, "Rule o1 (bundled v2)"),
                                             (fc.V2_LONGER, "Rule p2 (v2, 45,000 steps)")])
def test_o1_ships_v2_only_at_the_bars_and_not_below_v1_on_the_new_cameras(change, failing, candidate, rule):
    v2 = {"drive": (0.9780, 0.70), "chase_db1": (0.9830, 0.70), "hrf": (0.955, 0.78), "orvs": (0.978, 0.78),
          "les_av": (0.984, 0.78)}
    v2.update(change)
    results = {"scores": {fc.BUNDLED: _scores(BUNDLED_AUC, 0.78),
                          candidate: {camera: {"scores": {"AUC_pooled": auc, "F1": f1, "worst_AUC": 0.95}}
                                      for camera, (auc, f1) in v2.items()}}}
    verdict = fc.v2_verdict(results, candidate)
    assert [key for key, ok in verdict["checks"].items() if not ok] == failing
    assert verdict["ship"] == (not failing)
    said = f"misses: {', '.join(failing)}" if failing else "every check holds"
    assert f"{rule}: ship = {not failing} ({said})" in fc.table(results)


def test_each_model_is_scored_once_per_camera_and_file(tmp_path, monkeypatch):
    from experiments import finetune_protocol as fp

    calls = []
    monkeypatch.setattr(fp, "score_model", lambda path, samples, output, camera, split: calls.append(camera)
                        or {"AUC_pooled": 0.9})
    monkeypatch.setattr(fc, "camera_photographs", lambda camera, data: ([], ["a", "b"], f"split of {camera}"))
    model, results, path = tmp_path / "m.keras", {}, tmp_path / "results.json"
    model.write_bytes(b"one")
    for _ in range(2):
        fc.score({"m": model}, out=tmp_path, data=tmp_path, results=results, results_path=path)
    assert calls == list(CAMERAS)
    assert results["scores"]["m"]["hrf"]["split"] == "split of hrf"
    model.write_bytes(b"another")  # another file under the same name is scored again
    fc.score({"m": model}, out=tmp_path, data=tmp_path, results=results, results_path=path)
    assert calls == list(CAMERAS) * 2
