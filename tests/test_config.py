import pytest

from cifar_resnet.config import (Config, ConfigError, config_from_dict, config_to_dict, load_config, override,
                                 save_config)

from conftest import CONFIGS, PRESETS


def test_every_preset_loads_and_round_trips(tmp_path):
    assert len(PRESETS) >= 7
    for path in PRESETS:
        cfg = load_config(path)
        save_config(cfg, tmp_path / "again.yaml")
        assert load_config(tmp_path / "again.yaml") == cfg, path.name


def test_unknown_key_names_its_dotted_path():
    with pytest.raises(ConfigError, match=r"unknown key 'model\.chanels'"):
        config_from_dict({"model": {"chanels": [8]}})
    with pytest.raises(ConfigError, match=r"unknown key 'trian'"):
        config_from_dict({"trian": {}})


def test_wrong_types_are_rejected_with_the_key():
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int"):
        config_from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"model\.channels\[1\]: expected int"):
        config_from_dict({"model": {"channels": [8, 1.5]}})
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int"):
        config_from_dict({"train": {"epochs": True}})
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0  # an int is a valid float


def test_load_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_config(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_override_by_dotted_key():
    cfg = override(Config(), **{"train.epochs": 7, "model.pool": 2})
    assert (cfg.train.epochs, cfg.model.pool) == (7, 2)
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'"):
        override(Config(), **{"train.epoch": 7})


def test_values_out_of_range_name_their_key():
    with pytest.raises(ConfigError, match=r"^train\.momentum: must be at least 0 and below 1, got 1\.0$"):
        config_from_dict({"train": {"momentum": 1.0}})
    with pytest.raises(ConfigError, match=r"^data\.holdout: must be at least 0, got -1$"):
        config_from_dict({"data": {"holdout": -1}})
    with pytest.raises(ConfigError, match=r"train\.epochs: must be at least 1, got 0"):
        override(Config(), **{"train.epochs": 0})


def test_an_empty_file_is_not_a_configuration(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        load_config(tmp_path / "empty.yaml")


def test_a_retired_key_in_an_older_run_record_is_dropped(tmp_path):
    data = config_to_dict(load_config(CONFIGS / "smoke.yaml"))
    data["data"]["policy_group"] = 32  # written by records made before the policies drew per image
    assert config_from_dict(data) == load_config(CONFIGS / "smoke.yaml")
