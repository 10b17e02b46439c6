import dataclasses
import re

import pytest
import torch

from cifar_resnet.config import (
    Config, ConfigError, config_from_dict, config_to_dict, declared, load_config, override, save_config,
)

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


def _not_allowed(allowed):
    """A value outside what an `option` declaration allows, and the words the error must say about it."""
    if allowed["choices"]:
        return "nosuch", f"unknown {allowed['label']}'nosuch'; choose {', '.join(allowed['choices'])}"
    if allowed["accepts"]:
        return "NoSuchOptimizer", f"unknown 'NoSuchOptimizer'; choose {allowed['accepts'][1]}"
    low = allowed["low"]
    return (low - 1 if not allowed["above"] else low), "must be "


@pytest.mark.parametrize("key", [f"{section}.{f.name}" for section in ("model", "data", "train")
                                 for f in dataclasses.fields(getattr(Config(), section)) if f.metadata])
def test_every_option_refuses_a_value_it_does_not_allow_in_one_line(key):
    section, name = key.split(".")
    allowed = declared(key)
    value, words = _not_allowed(allowed)
    with pytest.raises(ConfigError) as err:
        config_from_dict({section: {name: value}})
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{key}: ") and words in message and repr(value) in message
    if allowed["high"] is not None:  # the top of a range is refused as well
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: must be .*below {allowed['high']}, got"):
            config_from_dict({section: {name: allowed["high"]}})


def test_choices_and_ranges_are_declared_for_every_option_that_has_them():
    declared_keys = {f"{s}.{f.name}" for s in ("model", "data", "train")
                     for f in dataclasses.fields(getattr(Config(), s)) if f.metadata}
    assert {"model.block", "model.activation", "model.dropout", "data.policy", "train.optimizer", "train.schedule",
            "train.precision", "train.tta", "train.epochs", "train.lr", "train.sam_rho", "train.ricap_beta",
            "train.mixup_alpha", "train.cutmix_alpha", "train.seed"} <= declared_keys


def test_the_modules_accept_every_declared_choice():
    from cifar_resnet.blocks import BLOCKS
    from cifar_resnet.models import _ACTIVATIONS
    from cifar_resnet.data.auto_augment import POLICIES
    from cifar_resnet.runtime import resolve_precision

    assert tuple(_ACTIVATIONS) == declared("model.activation")["choices"]
    assert tuple(BLOCKS) == declared("model.block")["choices"]
    assert ("none",) + POLICIES == declared("data.policy")["choices"]
    for precision in declared("train.precision")["choices"]:
        resolve_precision(precision, torch.device("cpu"))
