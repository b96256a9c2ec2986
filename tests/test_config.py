"""Run configs: typed, unknown keys rejected with the key and the file named."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from keras_vessel.config import ConfigError, RunConfig, config_to_dict, load_config, save_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, payload: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(payload))
    return path


def test_defaults_and_nested_values(tmp_path):
    path = write(tmp_path, {"name": "x", "train": {"epochs": 3}, "data": {"augment": {"flips": False}}})
    config = load_config(path)
    assert config.name == "x"
    assert config.train.epochs == 3
    assert config.train.learning_rate == RunConfig().train.learning_rate
    assert config.data.augment.flips is False


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, {"train": {"learing_rate": 0.1}})
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown key train\.'learing_rate'; did you mean train\.'learning_rate'"):
        load_config(path)


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'optimiser'"):
        load_config(write(tmp_path, {"optimiser": "adam"}))


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"train": {"epochs": "ten"}}, "train.epochs must be an integer, got 'ten'"),
        ({"train": {"epochs": True}}, "train.epochs must be an integer"),
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate must be a number"),
        ({"loss": {"kind": "dice"}}, r"loss.kind must be one of \['joint', 'pixel'\], got 'dice'"),
        ({"train": {"mixed_precision": "yes"}}, r"train.mixed_precision must be one of \[False, True, 'float16', 'bfloat16'\], got 'yes'"),
        ({"data": 3}, "data must be a mapping"),
    ],
)
def test_wrong_types_are_rejected(tmp_path, payload, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, payload))


def test_overrides_apply_on_top_of_the_file(tmp_path):
    path = write(tmp_path, {"train": {"epochs": 3}})
    config = load_config(path, ["train.epochs=7", "loss.kind=pixel", "train.learning_rate=1e-4"])
    assert (config.train.epochs, config.loss.kind, config.train.learning_rate) == (7, "pixel", 1e-4)
    with pytest.raises(ConfigError, match="override 'train.epochs' must look like key.sub=value"):
        load_config(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="unknown key train.'epoch'"):
        load_config(path, ["train.epoch=3"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does-not-exist.yaml does not exist"):
        load_config(tmp_path / "does-not-exist.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad)


def test_saved_config_loads_back_identically(tmp_path):
    config = load_config(write(tmp_path, {"name": "round", "model": {"options": {"depth": 2}}}))
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config
    assert config_to_dict(config)["model"]["options"] == {"depth": 2}


RUN_CONFIGS = ["compact.yaml", "yan2018.yaml", "demo.yaml", "general.yaml", "general_wnet.yaml"]  # whole runs; the rest are parts


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_shipped_run_configs_load(name):
    config = load_config(REPO / "configs" / name)
    assert config.name == Path(name).stem
    assert config.model.name in ("unet", "yan2018", "wnet")


@pytest.mark.parametrize("part", ["transfer.yaml", *(f"datasets/{p.name}" for p in (REPO / "configs" / "datasets").glob("*.yaml"))])
def test_every_config_part_composes_with_each_network(part):
    for network in ("compact.yaml", "yan2018.yaml"):
        config = load_config([REPO / "configs" / network, REPO / "configs" / part])
        assert config.model.name in ("unet", "yan2018")
    assert {path.name for path in (REPO / "configs").glob("*.yaml")} == {*RUN_CONFIGS, "transfer.yaml"}


def test_composition_merges_in_order_bases_first_and_resolves_records_beside_their_file(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "records").mkdir()
    write(tmp_path / "parts", {"name": "net", "model": {"options": {"depth": 2, "base_filters": 4}},
                               "train": {"epochs": 3}}, "net.yaml")
    write(tmp_path / "parts", {"data": {"train_records": "records"}}, "data.yaml")
    top = write(tmp_path, {"base": ["parts/net.yaml", "parts/data.yaml"], "name": "top",
                           "model": {"options": {"depth": 3}}})
    config = load_config([top, write(tmp_path, {"train": {"seed": 7}}, "later.yaml")], ["train.epochs=5"])
    assert config.name == "top"
    assert config.model.options == {"depth": 3, "base_filters": 4}  # mappings merge, later keys win
    assert (config.train.epochs, config.train.seed) == (5, 7)
    assert config.data.train_records == str(tmp_path / "parts" / "records")  # beside the file naming it


def test_composition_errors_name_the_file(tmp_path):
    loop = write(tmp_path, {"base": "b.yaml"}, "a.yaml")
    write(tmp_path, {"base": "a.yaml"}, "b.yaml")
    with pytest.raises(ConfigError, match=r"base: includes form a cycle \(.*a.yaml -> .*b.yaml -> .*a.yaml\)"):
        load_config(loop)
    with pytest.raises(ConfigError, match=r"missing.yaml does not exist \(named under base: in .*c.yaml\)"):
        load_config(write(tmp_path, {"base": ["missing.yaml"]}, "c.yaml"))
    with pytest.raises(ConfigError, match=r"d.yaml: base must be a config file or a list of them, got 3"):
        load_config(write(tmp_path, {"base": 3}, "d.yaml"))
    with pytest.raises(ConfigError, match=r"e.yaml \+ .*f.yaml: unknown key 'dat'"):
        load_config([write(tmp_path, {}, "e.yaml"), write(tmp_path, {"dat": {}}, "f.yaml")])


def test_a_key_given_twice_is_refused_naming_the_file_the_key_and_its_lines(tmp_path):
    """YAML keeps the last of two equal keys: a second `train:` section used to replace the first silently."""
    path = tmp_path / "twice.yaml"
    path.write_text("name: a\ntrain:\n  epochs: 3\ndata:\n  patch_size: 32\ntrain:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: the key 'train' is given twice in the same section \(on "
                                          r"lines 2 and 6\), and YAML would silently keep only the second; keep one"):
        load_config(path)
    path.write_text("model:\n  options: {depth: 2, depth: 3}\n")
    with pytest.raises(ConfigError, match=r"the key 'depth' is given twice in the same section \(on line 2\)"):
        load_config(path)
    base = write(tmp_path, {"train": {"epochs": 3}}, "base.yaml")
    path.write_text(f"base: {base}\ntrain:\n  epochs: 5\n")  # a later file replacing a key is composition
    assert load_config(path).train.epochs == 5
    from keras_vessel.config import read_mapping

    # YAML merge keys may be replaced: that is what they are for
    path.write_text("defaults: &d {epochs: 3, seed: 2}\ntrain:\n  <<: *d\n  epochs: 4\n")
    assert read_mapping(path)["train"] == {"epochs": 4, "seed": 2}


def test_an_empty_section_is_an_empty_mapping(tmp_path):
    """`loss:` with nothing under it is None in YAML: it used to fail ("loss is not a section" under --set)."""
    path = tmp_path / "empty.yaml"
    path.write_text("name: x\nloss:\nmodel:\n  options:\n")
    assert load_config(path) == RunConfig(name="x")
    assert load_config(path, ["loss.kind=pixel", "model.options.depth=2"]).loss.kind == "pixel"
    first = write(tmp_path, {"loss": {"kind": "pixel"}}, "first.yaml")
    assert load_config([first, path]).loss.kind == "pixel"  # a later empty section changes nothing


def test_an_unknown_key_made_by_an_override_names_the_override(tmp_path):
    path = write(tmp_path, {"train": {"epochs": 3}}, "base.yaml")
    with pytest.raises(ConfigError, match=r"^--set nosuch\.x=1: unknown key 'nosuch'; known keys: name, data"):
        load_config(path, ["nosuch.x=1"])
    with pytest.raises(ConfigError, match=r"^--set data\.augmnt\.flips=false: unknown key data\.'augmnt'; did you "
                                          r"mean data\.'augment'"):
        load_config(path, ["data.augmnt.flips=false"])
    with pytest.raises(ConfigError, match=r"^.*base\.yaml: unknown key 'nosuch'"):  # the file's own key: the file
        load_config(write(tmp_path, {"nosuch": {"y": 1}}, "base.yaml"), ["train.epochs=1"])


def test_validation_steps_is_retired_but_old_configs_still_load(tmp_path):
    """train.validation_steps never did anything (validation scores every validation patch): it is no key of
    TrainConfig, no longer saved, and read and dropped from the configs older versions saved (every run folder's
    config.yaml, the bundled model's training_config.yaml)."""
    from keras_vessel.config import RETIRED_KEYS, TrainConfig

    assert "validation_steps" not in {f.name for f in dataclasses.fields(TrainConfig)}
    assert "validation_steps" not in config_to_dict(RunConfig())["train"]
    assert RETIRED_KEYS == {"train.validation_steps"}
    assert load_config(write(tmp_path, {"train": {"epochs": 2, "validation_steps": 20}})).train.epochs == 2
    assert load_config(REPO / "saved_models" / "general_unet" / "training_config.yaml").name == "general"
    for path in (REPO / "configs").rglob("*.yaml"):
        assert "validation_steps" not in path.read_text(), path
