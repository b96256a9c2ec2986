"""The cross-dataset protocol's scoring and rules (docs/notebook/2026-12-02-cross-dataset-protocol.md)."""

import json
from pathlib import Path

import pytest

from experiments import cross_dataset
from experiments.cross_dataset import (
    NEW_RECIPE_AS_RUN,
    RECIPES,
    Run,
    loss_verdict,
    planned_runs,
    pooled,
    recipe_verdict,
    summarise,
)
from helpers import run_config
from keras_vessel.config import config_to_dict, load_config

REPO = Path(__file__).resolve().parents[2]


def report(aucs, f1s, pooled_auc=0.97):
    rows = [{"name": f"im{i}", "AUC": auc, "F1": f1, "threshold": 0.6, "scale": 0.58}
            for i, (auc, f1) in enumerate(zip(aucs, f1s))]
    return {"per_image": rows, "summary": {"AUC_pooled": pooled_auc, "AUC": sum(aucs) / len(aucs),
                                           "F1": sum(f1s) / len(f1s), "Acc": 0.95, "Se": 0.8, "Sp": 0.98,
                                           "Se_thin": 0.4}}


def test_summarise_names_the_worst_image_by_auc_and_by_f1():
    scores = summarise(report([0.98, 0.91, 0.95], [0.60, 0.80, 0.55]))
    assert (scores["worst_AUC"], scores["worst_AUC_image"]) == (0.91, "im1")
    assert (scores["worst_F1"], scores["worst_F1_image"]) == (0.55, "im2")
    assert scores["images"] == 3 and scores["scales"] == [0.58] and scores["AUC_pooled"] == 0.97


def test_summarise_lists_every_factor_of_multi_scale_images():
    multi = report([0.98, 0.97], [0.7, 0.8])
    multi["per_image"][0]["scale"], multi["per_image"][1]["scale"] = [0.3, 0.45, 0.6], [0.31234, 0.45, 0.6]
    assert summarise(multi)["scales"] == [0.3, 0.312, 0.45, 0.6]


def scores(in_auc, cross_auc, worst, f1=0.7):
    return {"AUC_pooled": in_auc}, {"AUC_pooled": cross_auc, "worst_AUC": worst, "worst_F1": f1, "F1": f1}


def results(table):
    """{(recipe, loss, source, seed): (in-domain AUC, cross AUC, worst cross image AUC)} -> a results dict."""
    runs = {}
    for (recipe, loss, source, seed), (in_auc, cross_auc, worst) in table.items():
        target = "chase_db1" if source == "drive" else "drive"
        own, other = scores(in_auc, cross_auc, worst)
        own.update(worst_AUC=in_auc, worst_F1=0.8, F1=0.8, Se_thin=0.5)
        runs[f"{recipe}_{loss}_{source}_s{seed}"] = {"recipe": recipe, "loss": loss, "source": source, "seed": seed,
                                                     "scores": {"auto": {source: own, target: other}}}
    return {"runs": runs}


def test_pooled_averages_seeds_and_takes_the_worst_image_per_seed():
    data = results({
        ("new", "pixel", "drive", 0): (0.978, 0.970, 0.95), ("new", "pixel", "chase_db1", 0): (0.980, 0.960, 0.93),
        ("new", "pixel", "drive", 1): (0.976, 0.972, 0.96), ("new", "pixel", "chase_db1", 1): (0.982, 0.964, 0.90),
    })
    row = pooled(data, "new", "pixel")
    assert row["seeds"] == [0, 1]
    assert row["in_drive"] == pytest.approx(0.977) and row["in_chase_db1"] == pytest.approx(0.981)
    assert row["cross_drive_to_chase_db1"] == pytest.approx(0.971)
    assert row["cross_mean"] == pytest.approx((0.970 + 0.960 + 0.972 + 0.964) / 4)
    assert row["worst_AUC"] == pytest.approx((0.93 + 0.90) / 2)  # the lower direction of each seed


def pooled_row(in_drive, in_chase, cross, worst):
    return {"in_drive": in_drive, "in_chase_db1": in_chase, "cross_mean": cross, "worst_AUC": worst}


@pytest.mark.parametrize("new, adopt, failing", [
    (pooled_row(0.9755, 0.9785, 0.960, 0.93), True, []),
    (pooled_row(0.9745, 0.9785, 0.960, 0.93), False, ["in_drive"]),  # 0.0025 below on DRIVE
    (pooled_row(0.9755, 0.9785, 0.940, 0.93), False, ["cross_mean"]),
    (pooled_row(0.9755, 0.9785, 0.960, 0.90), False, ["worst_AUC"]),
])
def test_the_recipe_rule_as_written(new, adopt, failing):
    old = pooled_row(0.9770, 0.9800, 0.950, 0.91)
    verdict = recipe_verdict(old, new)
    assert verdict["adopt"] is adopt
    assert [key for key, passed in verdict["checks"].items() if not passed] == failing


def test_the_loss_rule_needs_three_of_four_pairs_and_the_mean():
    def table(joint_cross):
        entries = {}
        for (source, seed), joint in zip([("drive", 0), ("chase_db1", 0), ("drive", 1), ("chase_db1", 1)], joint_cross):
            entries[("new", "pixel", source, seed)] = (0.98, 0.960, 0.9)
            entries[("new", "joint", source, seed)] = (0.98, joint, 0.9)
        return results(entries)

    ahead = loss_verdict(table([0.961, 0.962, 0.959, 0.963]), "new")
    assert (ahead["pairs"], ahead["higher"], ahead["ahead"]) == (4, 3, True)
    assert ahead["mean_difference"] == pytest.approx(0.00125)
    assert loss_verdict(table([0.961, 0.962, 0.950, 0.955]), "new")["ahead"] is False  # 2 of 4
    assert loss_verdict(table([0.961, 0.962, 0.961, 0.940]), "new")["ahead"] is False  # 3 of 4, mean below


def test_the_transfer_config_is_the_recipe_the_protocol_ran():
    base = [REPO / "configs" / "compact.yaml", REPO / "configs" / "datasets" / "drive.yaml"]
    as_run = config_to_dict(load_config(base, list(NEW_RECIPE_AS_RUN)))
    from_file = config_to_dict(load_config([base[0], REPO / "configs" / "transfer.yaml", base[1]]))
    assert as_run == from_file


def test_every_planned_run_builds_a_valid_config(tmp_path):
    runs = planned_runs()
    networks = cross_dataset.WNET_RECIPES
    assert len(runs) == ((len(RECIPES) - len(networks)) * 2 + len(networks)) * 2 * len(cross_dataset.SEEDS)
    assert len({run.name for run in runs}) == len(runs)
    for run in runs:
        config = run_config(run, tmp_path / "records", tmp_path / "runs")
        recipe = networks.get(run.recipe, run.recipe)
        assert config.loss.kind == run.loss and config.train.seed == run.seed
        assert config.model.name == ("wnet" if run.recipe in networks else "unet")
        steps = config.train.epochs * config.train.steps_per_epoch
        assert steps == cross_dataset.STEPS or run.recipe in cross_dataset.WALL_TIME_EPOCHS
        assert config.data.train_records == str(tmp_path / "records" / run.source / "training")
        assert config.data.normalisation == ("local" if recipe.startswith("new") else "dataset")
        assert config.data.fov_diameter == (0.0 if recipe == "old" else 540.0)
        assert (config.data.augment.gamma > 0) == (recipe not in ("old", "aug_nophoto"))
        assert config.data.channel == ("green" if recipe == "new" else "rgb")


def test_the_wnet_runs_differ_from_their_recipe_only_in_the_network_and_budget():
    for small, base in cross_dataset.WNET_RECIPES.items():
        mine, theirs = (config_to_dict(run_config(Run(recipe, "pixel", "drive", 0))) for recipe in (small, base))
        assert mine["model"] == {"name": "wnet", "options": {"base_filters": 8, "depth": 2, "block": 2}, "start_from": ""}
        assert mine["data"] == theirs["data"] and mine["loss"] == theirs["loss"]
        assert {k: v for k, v in mine["train"].items() if k != "epochs"} == \
            {k: v for k, v in theirs["train"].items() if k != "epochs"}


def test_network_rule_needs_in_domain_within_tolerance_and_cross_not_lower():
    compact = {"in_drive": 0.975, "in_chase_db1": 0.978, "cross_mean": 0.94}
    assert cross_dataset.network_verdict(compact, {"in_drive": 0.9731, "in_chase_db1": 0.978,
                                                   "cross_mean": 0.94})["holds"]
    assert not cross_dataset.network_verdict(compact, {"in_drive": 0.9729, "in_chase_db1": 0.979,
                                                       "cross_mean": 0.95})["holds"]
    assert not cross_dataset.network_verdict(compact, {"in_drive": 0.976, "in_chase_db1": 0.979,
                                                       "cross_mean": 0.9399})["holds"]


def test_each_aug_ablation_differs_from_aug_only_in_what_it_takes_out_and_sets_that_to_zero():
    def flat(recipe):
        data = config_to_dict(run_config(Run(recipe, "pixel", "drive", 0)))["data"]
        return {**{k: v for k, v in data.items() if k != "augment"},
                **{f"augment.{k}": v for k, v in data["augment"].items()}}

    aug = flat("aug")
    for name, sets in cross_dataset.AUG_ABLATIONS.items():
        ablation = flat(name)
        changed = {key for key in aug if aug[key] != ablation[key]}
        assert changed == {s.split("=")[0].removeprefix("data.") for s in sets}, name
        assert all(ablation[key] == 0 for key in changed), name


def test_old_recipe_runs_are_scored_as_shipped_and_with_scale_auto():
    assert cross_dataset.scales_of("old") == ("none", "auto")
    assert {cross_dataset.scales_of(recipe) for recipe in cross_dataset.CANDIDATES} == {("auto",)}
    assert Run("new", "joint", "drive", 1).name == "new_joint_drive_s1"


def test_scoring_only_prepares_no_records(tmp_path, capsys):
    """`--no-train` scores finished runs from the datasets themselves: it must not prepare records."""
    from experiments.cross_dataset import main

    main(["--no-train", "--only", "--out", str(tmp_path / "runs"), "--records", str(tmp_path / "records"),
          "--data", str(tmp_path / "data"), "--results", str(tmp_path / "results.json")])
    assert not (tmp_path / "records").exists()
    assert "| recipe | loss |" in capsys.readouterr().out


def test_the_table_gives_no_recipe_verdict_before_both_seeds():
    def with_old_as_shipped(entries):
        data = results(entries)
        for run in data["runs"].values():
            if run["recipe"] == "old":
                run["scores"]["none"] = run["scores"]["auto"]
        return data

    entries = {("old", "pixel", source, seed): (0.976, 0.90, 0.85)
               for source in cross_dataset.DATASETS for seed in (0, 1)}
    entries[("aug", "pixel", "drive", 0)] = entries[("aug", "pixel", "chase_db1", 0)] = (0.977, 0.96, 0.94)
    assert "aug has seeds [0] of [0, 1]: no verdict" in cross_dataset.table(with_old_as_shipped(entries))
    entries[("aug", "pixel", "drive", 1)] = entries[("aug", "pixel", "chase_db1", 1)] = (0.977, 0.96, 0.94)
    assert "adopt aug = True" in cross_dataset.table(with_old_as_shipped(entries))


def without_records_and_budget(config) -> dict:
    """A resolved config as a dict, less what a general model changes from a protocol run."""
    config = config_to_dict(config)
    config["data"].pop("train_records")
    config["train"].pop("epochs")
    config.pop("name")
    return config


def test_the_general_config_trains_the_adopted_recipe_on_both_datasets():
    """configs/general.yaml is the adopted recipe with the loss rule's loss, only with both datasets and the
    shipped model's 18,000 steps (notebook g, rule 5)."""
    general = load_config([REPO / "configs" / "general.yaml"])
    assert general.data.train_records == ["data/drive/training", "data/chase_db1/training"]
    assert general.train.epochs * general.train.steps_per_epoch == 18_000
    protocol = run_config(Run(cross_dataset.GENERAL_RECIPE, cross_dataset.GENERAL_LOSS, "drive", 0))
    assert without_records_and_budget(general) == without_records_and_budget(protocol)


def test_the_general_loss_is_the_loss_rules_verdict_on_the_committed_results():
    verdict = cross_dataset.loss_verdict(json.loads(cross_dataset.RESULTS.read_text()), cross_dataset.GENERAL_RECIPE)
    assert cross_dataset.GENERAL_LOSS == ("joint" if verdict["ahead"] else "pixel")


def test_the_general_wnet_config_is_the_general_config_on_the_protocols_wnet():
    general_wnet = load_config([REPO / "configs" / "general_wnet.yaml"])
    assert general_wnet.model.name == "wnet" and general_wnet.model.options == cross_dataset.WNET_OPTIONS
    general = without_records_and_budget(load_config([REPO / "configs" / "general.yaml"]))
    mine = without_records_and_budget(general_wnet)
    assert {**mine, "model": general["model"]} == general
    (wnet_recipe,) = cross_dataset.WNET_RECIPES
    protocol = run_config(Run(wnet_recipe, cross_dataset.GENERAL_LOSS, "drive", 0))
    assert mine == without_records_and_budget(protocol)
