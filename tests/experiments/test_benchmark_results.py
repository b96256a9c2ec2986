"""The experiments' results files are committed; re-running a driver must not lose earlier rows,
the table of runs must cover what was run, and the rules that decide from them decide as written."""

import json

from experiments import cross_validate, reproduce
from keras_vessel.config import load_config


def test_fresh_rows_replace_earlier_ones_and_the_rest_are_kept_in_order():
    earlier = [{"name": "a", "auc": 1}, {"name": "b", "auc": 2}, {"name": "c", "auc": 3}]
    fresh = [{"name": "d", "auc": 40}, {"name": "b", "auc": 20}]
    merged = reproduce.merged_rows(earlier, fresh)
    assert merged == [{"name": "a", "auc": 1}, {"name": "b", "auc": 20}, {"name": "c", "auc": 3},
                      {"name": "d", "auc": 40}]


def test_earlier_rows_come_from_the_results_file_when_there_is_one(tmp_path):
    output = tmp_path / "reproduce.json"
    assert reproduce.earlier_rows(output) == []
    output.write_text(json.dumps({"benchmark": "reproduce", "results": {"runs": [{"name": "a"}]}}))
    assert reproduce.earlier_rows(output) == [{"name": "a"}]


def test_the_table_of_runs_covers_every_committed_row_and_every_run_loads_its_config():
    """Every row of the committed results was made by an entry of RUNS or ENSEMBLES; every run's
    configs and --set values make a valid config (what `keras-vessel train` would read)."""
    names = [run.name for run in reproduce.RUNS] + [ensemble.name for ensemble in reproduce.ENSEMBLES]
    assert len(names) == len(set(names))
    committed = [row["name"] for row in reproduce.earlier_rows(reproduce.RECORDED)]
    assert committed and set(committed) <= set(names)
    by_name = {run.name: run for run in reproduce.RUNS}
    for run in reproduce.RUNS:
        arguments = run.train_arguments(10)
        configs = [reproduce.REPOSITORY / arguments[i + 1] for i, a in enumerate(arguments) if a == "--config"]
        sets = [arguments[i + 1] for i, a in enumerate(arguments) if a == "--set"]
        config = load_config(configs, sets)
        assert config.data.train_records.endswith(("training", "training_complete")), run.name
        assert config.loss.kind in run.setting, run.name
        assert not run.continues or by_name[run.continues].epochs < run.epochs
    for ensemble in reproduce.ENSEMBLES:
        assert set(ensemble.members) <= set(by_name)


def fold_row(fold: int, averaged: list[float], raw: list[float]) -> dict:
    names = [f"{fold}_{image}" for image in range(len(averaged))]
    return {"fold": fold, "held_out": names, **{
        candidate: {"summary": {"AUC_pooled": sum(scores) / len(scores), "Se_thin": scores[0] / 2},
                    "per_image_auc": dict(zip(names, scores))}
        for candidate, scores in (("averaged", averaged), ("raw", raw))}}


def test_cross_validation_adopts_the_challenger_only_as_its_rule_says():

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
    ema, losses = cross_validate.COMPARISONS["ema"], cross_validate.COMPARISONS["joint"]
    # one training gives both weight-average candidates; the losses need one training each
    assert ema.baseline.folder(tmp_path, 3) == ema.challenger.folder(tmp_path, 3) == tmp_path / "fold3"
    assert losses.baseline.folder(tmp_path, 3) != losses.challenger.folder(tmp_path, 3)
    for comparison in (ema, losses):  # the two candidates differ only where the comparison says
        baseline, challenger = comparison.baseline, comparison.challenger
        assert [v for v in baseline.sets if not v.startswith("loss.kind")] == \
            [v for v in challenger.sets if not v.startswith("loss.kind")]
        assert not any(value.startswith(("data.fold", "train.epochs")) for value in baseline.sets)
    assert (ema.baseline.model_file, ema.challenger.model_file) == ("model_raw.keras", "model.keras")
    assert [value for value in losses.baseline.sets if value.startswith("loss.")] == ["loss.kind=pixel"]
    assert [value for value in losses.challenger.sets if value.startswith("loss.")] == ["loss.kind=joint"]


def test_a_fold_trains_each_candidate_once_with_its_fold_and_logs_beside_it(tmp_path):
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
