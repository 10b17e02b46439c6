"""The notebooks' set-up after the clone: where data and runs are kept and how the output names them."""

import os
from pathlib import Path

import pytest

from cifar_resnet import notebook_setup
from cifar_resnet.notebook_setup import Places, prepare


@pytest.fixture
def clone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in notebook_setup.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(notebook_setup, "install", lambda root: pytest.fail("installed in a test"))
    root = tmp_path / "clone"
    root.mkdir()
    return root


def test_in_a_clone_data_and_runs_are_kept_in_it_and_named_relative_to_it(clone, capsys):
    places = prepare(clone, notebook_setup.version_of("cifar_resnet"), cloned=False)
    assert Path.cwd() == clone and places.data_root == clone / "data" and places.runs_dir == clone / "runs"
    assert os.environ["CIFAR10_ROOT"] == str(clone / "data")  # the library's loaders find it there
    assert capsys.readouterr().out == ("set-up: code in this clone of the repository (ROOT); CIFAR-10 in data/ "
                                       "(DATA_ROOT); runs in runs/ (RUNS_DIR)\n")


def test_folders_given_before_the_notebook_win_and_are_named_by_their_variable(clone, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CIFAR_RESNET_RUNS", str(tmp_path / "elsewhere"))
    places = prepare(clone, notebook_setup.version_of("cifar_resnet"), cloned=False)
    assert places.runs_dir == tmp_path / "elsewhere" and places.shown(places.runs_dir, "CIFAR_RESNET_RUNS") == "$CIFAR_RESNET_RUNS"
    assert "runs in $CIFAR_RESNET_RUNS (RUNS_DIR)" in capsys.readouterr().out


def test_on_studio_lab_the_home_folder_keeps_them(clone, monkeypatch, tmp_path):
    home = tmp_path / "studio-lab-user"
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    monkeypatch.setattr(notebook_setup, "install", lambda root: None)  # a runtime without the project installs it
    places = prepare(clone, "0.0.0-not-installed", cloned=False)
    assert places.runs_dir == home / "cifar_resnet-files" / "runs"
    assert places.shown(places.data_root, "CIFAR10_ROOT") == "~/cifar_resnet-files/data/"


def test_a_clone_made_now_installs_its_version_and_your_own_clone_is_left_as_it_is(clone, monkeypatch):
    installed = []
    monkeypatch.setattr(notebook_setup, "install", installed.append)
    prepare(clone, notebook_setup.version_of("cifar_resnet"), cloned=True)  # this version is installed already
    prepare(clone, "0.0.0-not-installed", cloned=False)  # a clone on your machine: you installed it as you chose
    assert installed == []
    prepare(clone, "0.0.0-not-installed", cloned=True)
    assert installed == [clone]


def test_on_colab_without_drive_the_places_are_said_to_be_lost(clone, monkeypatch, capsys):
    monkeypatch.setattr(notebook_setup, "on_colab", lambda: True)
    monkeypatch.setattr(notebook_setup, "install", lambda root: None)
    places = prepare(clone, "0.0.0-not-installed", cloned=False, use_drive=False)
    assert places.keep is None and capsys.readouterr().out.rstrip().endswith("(on the runtime's disk: lost with it)")


def test_drive_paths_are_named_from_my_drive():
    places = Places(Path("/content/cifar_resnet"), notebook_setup.COLAB_KEEP / "data", notebook_setup.COLAB_KEEP / "runs",
                    notebook_setup.COLAB_KEEP, {"CIFAR_RESNET_RUNS": None, "CIFAR10_ROOT": None})
    assert places.shown(places.runs_dir, "CIFAR_RESNET_RUNS") == "MyDrive/cifar_resnet/runs/"
