"""The benchmark scripts' results files are committed; re-running a script must not lose earlier rows,
and the rules that decide from them decide as written."""

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fresh_rows_replace_earlier_ones_and_the_rest_are_kept_in_order():
    reproduce = load_benchmark("reproduce")
    earlier = [{"name": "a", "auc": 1}, {"name": "b", "auc": 2}, {"name": "c", "auc": 3}]
    fresh = [{"name": "d", "auc": 40}, {"name": "b", "auc": 20}]
    merged = reproduce.merged_rows(earlier, fresh)
    assert merged == [{"name": "a", "auc": 1}, {"name": "b", "auc": 20}, {"name": "c", "auc": 3},
                      {"name": "d", "auc": 40}]


def test_earlier_rows_come_from_the_results_file_when_there_is_one(tmp_path):
    reproduce = load_benchmark("reproduce")
    output = tmp_path / "reproduce.json"
    assert reproduce.earlier_rows(output) == []
    output.write_text(json.dumps({"benchmark": "reproduce", "results": {"runs": [{"name": "a"}]}}))
    assert reproduce.earlier_rows(output) == [{"name": "a"}]


def test_choices_between_runs_read_the_committed_results_when_the_run_folders_are_missing(tmp_path, monkeypatch):
    reproduce = load_benchmark("reproduce")
    recorded = tmp_path / "reproduce.json"
    recorded.write_text(json.dumps({"results": {"runs": [
        {"name": "a", "validation": {"AUC_pooled": 0.97}}, {"name": "b", "validation": {"AUC_pooled": 0.98}}]}}))
    monkeypatch.setattr(reproduce, "RECORDED", recorded)
    a, b, c = (reproduce.Run(name, "configs/x.yaml", "drive", 0, name) for name in "abc")
    out = tmp_path / "runs"
    assert reproduce.best_by_validation([a, b], out) is b
    assert reproduce.best_by_validation([a, c], out) is None  # c is in neither place
    folder = out / "a" / "eval_validation"  # a run folder, where there is one, wins over the record
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"summary": {"AUC_pooled": 0.99}}))
    assert reproduce.best_by_validation([a, b], out) is a


def fold_row(fold: int, averaged: list[float], raw: list[float]) -> dict:
    names = [f"{fold}_{image}" for image in range(len(averaged))]
    return {"fold": fold, "held_out": names, **{
        candidate: {"summary": {"AUC_pooled": sum(scores) / len(scores), "Se_thin": scores[0] / 2},
                    "per_image_auc": dict(zip(names, scores))}
        for candidate, scores in (("averaged", averaged), ("raw", raw))}}


def test_cross_validation_adopts_the_challenger_only_as_its_rule_says():
    cross_validate = load_benchmark("cross_validate")

    def verdict(rows, folds=5):
        return cross_validate.verdict(rows, "raw", "averaged", folds)

    four_of_five = [fold_row(0, [0.95, 0.97], [0.96, 0.95])] + [fold_row(k, [0.98], [0.97]) for k in range(1, 4)]
    four_of_five.append(fold_row(4, [0.90], [0.97]))  # the one lower fold drags the mean below zero
    assert verdict(four_of_five)["folds_where_challenger_is_higher"] == 4
    assert verdict(four_of_five)["adopt_challenger"] is False
    four_of_five[-1] = fold_row(4, [0.965], [0.97])
    result = verdict(four_of_five)
    assert result["adopt_challenger"] is True
    assert (result["images"], result["images_where_challenger_is_higher"]) == (6, 4)
    assert result["thin_vessel_se_difference_per_fold"][0] == (0.95 - 0.96) / 2  # averaged minus raw
    assert result["challenger_ahead_on_thin_vessels"] is False  # lower in folds 0 and 4 (first scores)
    three_of_five = four_of_five[:3] + [fold_row(3, [0.96], [0.97]), four_of_five[4]]
    assert verdict(three_of_five)["adopt_challenger"] is False
    assert verdict(four_of_five[:4])["adopt_challenger"] is None  # not every fold scored yet: no decision


def test_each_comparison_trains_what_it_compares_and_no_more(tmp_path):
    cross_validate = load_benchmark("cross_validate")
    ema, losses = cross_validate.COMPARISONS["ema"], cross_validate.COMPARISONS["joint"]
    # one training gives both weight-average candidates; the losses need one training each
    assert ema.baseline.folder(tmp_path, 3) == ema.challenger.folder(tmp_path, 3) == tmp_path / "fold3"
    assert losses.baseline.folder(tmp_path, 3) != losses.challenger.folder(tmp_path, 3)
    for comparison in (ema, losses):  # the two candidates differ only where the comparison says
        baseline, challenger = comparison.baseline, comparison.challenger
        assert baseline.sets == challenger.sets
        assert not any(value.startswith(("data.fold", "train.epochs")) for value in baseline.sets)
    assert (ema.baseline.model_file, ema.challenger.model_file) == ("model_raw.keras", "model.keras")
    assert "loss:\n  kind: pixel" in (BENCHMARKS.parent / losses.baseline.config).read_text()
    assert "loss:\n  kind: joint" in (BENCHMARKS.parent / losses.challenger.config).read_text()


def test_a_fold_trains_each_candidate_once_with_its_fold_and_logs_beside_it(tmp_path):
    cross_validate = load_benchmark("cross_validate")
    fake_cli = tmp_path / "fake-keras-vessel"  # records its arguments and makes the --output folder
    fake_cli.write_text('#!/bin/sh\nall="$*"\nwhile [ $# -gt 0 ]; do\n'
                        '  if [ "$1" = --output ]; then mkdir -p "$2"; echo "$all" >> "$2/argv"; fi; shift\ndone\n')
    fake_cli.chmod(0o755)
    joint = cross_validate.COMPARISONS["joint"].challenger
    out = tmp_path / "runs"
    for _ in range(2):  # the second call finds the fold trained and does nothing
        cross_validate.train_fold(joint, 2, 5, 30, out, str(fake_cli))
    folder = out / "joint" / "fold2"
    calls = (folder / "argv").read_text().splitlines()
    assert len(calls) == 1
    assert "data.folds=5 --set data.fold=2" in calls[0] and "train.epochs=30" in calls[0]
    assert (out / "joint" / "fold2.log").exists()
    assert set(json.loads((folder / "train_cpu.json").read_text())) == {"cpu_seconds", "wall_seconds"}
