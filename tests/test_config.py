from __future__ import annotations

import pytest
import yaml

from ec4srec.config import Config, ConfigError, dump_config, load_config


def test_defaults_are_valid():
    config = Config()
    # Config() is a valid run: validate() must accept every default.
    assert config.validate() is config
    # The documented default run is SASRec on Beauty with full-length histories of 50.
    assert (config.data.dataset, config.model.backbone, config.data.max_len) == ("beauty", "sasrec", 50)


def test_dict_round_trip_is_identity():
    config = Config().with_overrides(["train.epochs=7", "method.name=cl4srec",
                                      "method.augmentations=[crop, reorder]",
                                      "method.update_epochs=[3, 5]", "data.data_dir=/x/y"])
    # to_dict -> from_dict reproduces the same config, non-defaults included.
    assert Config.from_dict(config.to_dict()) == config


def test_yaml_dump_and_load_round_trip(tmp_path):
    config = Config().with_overrides(["train.lr=0.0003", "model.backbone=gru4rec",
                                      "method.update_epochs=[2]", "train.tensorboard=false"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    # The config.yaml a run writes loads back to an equal Config.
    assert load_config(path) == config


def test_empty_dict_and_empty_sections_give_defaults():
    # A missing or empty section means "all defaults".
    assert Config.from_dict({}) == Config()
    assert Config.from_dict({"train": None, "model": {}}) == Config()


@pytest.mark.parametrize("override, suggestion", [
    ("train.epoch=5", "train.epochs"),
    ("model.hiden_size=8", "model.hidden_size"),
    ("trian.epochs=5", "train"),
])
def test_unknown_key_suggests_closest(override, suggestion):
    with pytest.raises(ConfigError) as err:
        Config().with_overrides([override])
    # The message names the bad key and the closest valid one, quoted as a whole.
    assert override.split("=")[0].split(".")[0] in str(err.value)
    assert f"'{suggestion}'" in str(err.value)


def test_unknown_key_in_dict_suggests_closest():
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"train": {"epoch": 3}})
    # Keys read from a file get the same suggestion as --set keys.
    assert "'train.epochs'" in str(err.value)


def test_unknown_key_in_yaml_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"train": {"epoch": 3}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    # load_config errors name the file and the key.
    assert str(path) in str(err.value) and "train.epoch" in str(err.value)


@pytest.mark.parametrize("raw, key", [
    ({"train": {"epochs": "ten"}}, "train.epochs"),
    ({"train": {"epochs": True}}, "train.epochs"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"tensorboard": 1}}, "train.tensorboard"),
    ({"model": {"dropout": "high"}}, "model.dropout"),
    ({"method": {"augmentations": "crop"}}, "method.augmentations"),
    ({"method": {"augmentations": ["crop", 3]}}, "method.augmentations[1]"),
    ({"data": {"dataset": 5}}, "data.dataset"),
    ({"train": 3}, "train"),
])
def test_wrong_type_rejected(raw, key):
    with pytest.raises(ConfigError) as err:
        Config.from_dict(raw)
    # A value of the wrong type is rejected and the message names the dotted key.
    assert key in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("train.epochs=0", "train.epochs"),
    ("train.batch_size=-1", "train.batch_size"),
    ("train.lr=0", "train.lr"),
    ("train.patience=0", "train.patience"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.attn_dropout=-0.1", "model.attn_dropout"),
    ("model.hidden_size=0", "model.hidden_size"),
    ("model.num_heads=3", "model.num_heads"),
    ("model.backbone=bert4rec", "model.backbone"),
    ("data.max_len=0", "data.max_len"),
    ("data.short_users=drop", "data.short_users"),
    ("method.mu_e=0", "method.mu_e"),
    ("method.mask_ratio=1.5", "method.mask_ratio"),
    ("method.tau=0", "method.tau"),
    ("method.augmentations=[crop]", "method.augmentations"),
    ("method.augmentations=[crop, crop]", "method.augmentations"),
    ("method.name=bert", "method.name"),
    ("method.update_epochs=[0, 3]", "method.update_epochs"),
    ("train.device=tpu", "train.device"),
    ("train.progress=maybe", "train.progress"),
])
def test_out_of_range_rejected(override, key):
    with pytest.raises(ConfigError) as err:
        Config().with_overrides([override])
    # Range/choice violations are rejected naming the key.
    assert key in str(err.value)


@pytest.mark.parametrize("override, section, key, expected", [
    ("method.augmentations=[mask, reorder]", "method", "augmentations", ["mask", "reorder"]),
    ("method.update_epochs=[15, 30]", "method", "update_epochs", [15, 30]),
    ("method.update_epochs=null", "method", "update_epochs", None),
    ("train.lr=0.005", "train", "lr", 0.005),
    ("train.lr=3e-4", "train", "lr", 3e-4),
    ("train.lr=1E-2", "train", "lr", 1e-2),
    ("model.dropout=0", "model", "dropout", 0.0),
    ("train.epochs=12", "train", "epochs", 12),
    ("train.tensorboard=false", "train", "tensorboard", False),
    ("train.tensorboard=off", "train", "tensorboard", False),
    ("train.progress=off", "train", "progress", "off"),
    ("train.progress=on", "train", "progress", "on"),
    ("data.data_dir=no", "data", "data_dir", "no"),
    ("data.data_dir=", "data", "data_dir", None),
    ("data.dataset=/tmp/a=b.txt", "data", "dataset", "/tmp/a=b.txt"),
])
def test_set_parsing(override, section, key, expected):
    value = getattr(getattr(Config().with_overrides([override]), section), key)
    # --set values are parsed as YAML scalars/lists and coerced to the field's type.
    assert value == expected and type(value) is type(expected)


def test_yaml_boolean_for_string_field_explained():
    # A YAML file's unquoted on/off for a string field is rejected with a hint to quote it.
    with pytest.raises(ConfigError, match="quote it"):
        Config.from_dict({"train": {"progress": False}})


def test_float_field_rejects_non_numeric_string():
    # Only numeric strings are accepted for floats (YAML 1.1 reads '1e-3' as a string).
    with pytest.raises(ConfigError, match="train.lr"):
        Config().with_overrides(["train.lr=1e"])


@pytest.mark.parametrize("override", ["epochs=3", "train.epochs", "train"])
def test_malformed_override_rejected(override):
    # An override without section.key=value form is a ConfigError, not a crash.
    with pytest.raises(ConfigError):
        Config().with_overrides([override])


def test_overrides_do_not_mutate_original():
    base = Config()
    base.with_overrides(["train.epochs=3"])
    # with_overrides returns a new config and leaves the receiver unchanged.
    assert base.train.epochs == Config().train.epochs


@pytest.mark.parametrize("text, message", [
    ("train: [1, 2]", "train"),
    ("- a\n- b", "mapping"),
    ("train: {epochs: [unclosed", "YAML"),
])
def test_load_config_bad_files(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    # Bad config files raise ConfigError naming the file and the problem, on one line.
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, key, line", [
    ("train:\n  epochs: 3\nmodel:\n  hidden_size: 16\ntrain:\n  lr: 0.01\n", "'train'", 5),
    ("model:\n  hidden_size: 16\n  num_heads: 2\n  hidden_size: 32\n", "'hidden_size'", 4),
], ids=["section", "nested key"])
def test_a_key_given_twice_in_a_config_file_is_an_error(tmp_path, text, key, line):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    # A section or key given twice (any depth) is not silently the last one: the error names
    # the file, the key and the line of the second one, on one line.
    assert str(err.value).startswith(f"{path}:") and f"duplicate key {key} on line {line}" in str(err.value)
    # ... on one line (the CLI prints it as a single error line).
    assert "\n" not in str(err.value)


def test_unparsable_override_is_one_line():
    with pytest.raises(ConfigError) as err:
        Config().with_overrides(["method.augmentations=[crop"])
    # A YAML syntax error in --set names the key and fits on one line.
    assert str(err.value).startswith("method.augmentations:") and "\n" not in str(err.value)


def test_load_config_missing_file(tmp_path):
    # A missing config file is a ConfigError naming the path.
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
