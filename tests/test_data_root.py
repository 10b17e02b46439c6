"""A run remembers where its CIFAR-10 was (metrics.json's data_root): evaluate, robustness and the figures look
there first, then at what they are given, $CIFAR10_ROOT and ./data (the clone's, for the figures)."""

import json

import pytest

from cifar_resnet import run_folder
from cifar_resnet.cli import main
from cifar_resnet.config import load_config, override
from cifar_resnet.reporting.rebuild import figures_data_root
from cifar_resnet.reporting.records import RunRecord
from cifar_resnet.training.engine import train

from conftest import CONFIGS


@pytest.fixture(scope="module")
def run_elsewhere(synthetic_root, tmp_path_factory):
    """A run trained on data given as data_root (not in its configuration), never downloading."""
    cfg = override(load_config(CONFIGS / "smoke.yaml"), **{"data.download": False, "data.train_subset": 0,
                                                            "data.test_subset": 0, "train.epochs": 1, "train.batch_size": 64})
    out = tmp_path_factory.mktemp("runs") / "run"
    train(cfg, out, data_root=str(synthetic_root), log=None, progress=False)
    return out


@pytest.fixture
def no_data_here(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./data


def test_the_run_records_its_data_folder(run_elsewhere, synthetic_root):
    assert run_folder.read_metrics(run_elsewhere)["data_root"] == str(synthetic_root.absolute())


def test_evaluate_without_a_data_flag_finds_the_runs_data(run_elsewhere, no_data_here, capsys):
    assert main(["evaluate", str(run_elsewhere), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_acc"] == run_folder.read_metrics(run_elsewhere)["test_acc"]


def test_robustness_without_a_data_flag_finds_the_runs_data(run_elsewhere, no_data_here, capsys):
    assert main(["robustness", str(run_elsewhere), "--images", "4", "--device", "cpu", "--overwrite"]) == 0
    assert json.loads((run_elsewhere / "robustness.json").read_text())["images"] == 4


def test_a_recorded_folder_that_is_gone_falls_back_to_the_flag(run_elsewhere, no_data_here, tmp_path, capsys):
    moved = tmp_path / "moved"
    metrics = run_folder.read_metrics(run_elsewhere)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in (run_folder.CONFIG, run_folder.WEIGHTS, run_folder.METRICS):
        (copy / name).write_bytes((run_elsewhere / name).read_bytes())
    run_folder.write_metrics({**metrics, "data_root": str(moved)}, copy / run_folder.METRICS)
    assert main(["evaluate", str(copy), "--device", "cpu"]) == 2  # neither there nor here: one line, what to do
    assert "--data-root" in capsys.readouterr().err
    assert main(["evaluate", str(copy), "--device", "cpu", "--data-root", metrics["data_root"]]) == 0


def test_the_figures_look_where_the_best_run_trained_then_as_told(tmp_path, synthetic_root, monkeypatch):
    (tmp_path / "best").mkdir()
    best = RunRecord(tmp_path / "best", {})
    run_folder.write_metrics({"data_root": str(synthetic_root)}, best.path / run_folder.METRICS)
    monkeypatch.setenv("CIFAR10_ROOT", "/env")
    assert figures_data_root(tmp_path, best, "/given") == str(synthetic_root)
    run_folder.write_metrics({"data_root": str(tmp_path / "gone")}, best.path / run_folder.METRICS)
    assert figures_data_root(tmp_path, best, "/given") == "/given"
    assert figures_data_root(tmp_path, best, None) == "/env"
    monkeypatch.delenv("CIFAR10_ROOT")
    assert figures_data_root(tmp_path, None, None) == str(tmp_path / "data")  # the clone's, not the current folder's
