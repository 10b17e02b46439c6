"""Presets ship inside the package: `--config NAME` and the old `configs/NAME.yaml` paths both find them."""

import os

import pytest

from cifar_resnet.cli import main
from cifar_resnet.config import PRESETS_DIR, config_path, load_config, preset_names

from conftest import CONFIGS, ROOT


def test_every_preset_in_configs_is_the_packaged_file():
    linked = sorted(p.stem for p in CONFIGS.glob("*.yaml") if not p.stem.startswith("search_space"))
    assert linked == preset_names() and "colab" in linked and "best_colab" not in linked
    for name in linked:
        assert (CONFIGS / f"{name}.yaml").resolve() == (PRESETS_DIR / f"{name}.yaml").resolve()


def test_a_preset_is_found_by_name_and_by_its_configs_path_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here, as after `pip install` outside a clone
    for given in ("colab", "colab.yaml", "configs/colab.yaml"):
        assert config_path(given) == PRESETS_DIR / "colab.yaml"
    assert load_config("colab").name == "colab"


def test_a_file_of_the_same_name_wins_over_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "smoke.yaml").write_text("name: mine\nmodel: {}\n")
    assert load_config("configs/smoke.yaml").name == "mine" and load_config("smoke").name == "smoke"


def test_an_unknown_name_lists_the_presets(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["summary", "--config", "colabb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "configuration file not found: colabb" in err and "colab, " in err


@pytest.mark.parametrize("command", ["figures", "report"])
def test_commands_that_need_a_clone_say_so_instead_of_writing_empty_tables(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cifar-resnet: error: cifar-resnet {command} needs a clone of the repository")
    assert err.count("\n") == 1 and os.listdir(tmp_path) == []


def test_the_clone_check_accepts_the_repository():
    from cifar_resnet.reporting.records import require_clone
    require_clone(ROOT, "cifar-resnet figures")  # no error
