"""The recorded GPU runs in results/runs: intact, small enough to commit, and reproducible on a CPU."""

import json
import subprocess

import pytest

from cifar_resnet import analysis, runs
from cifar_resnet.cli import main

from conftest import ROOT

RUNS = ROOT / "results" / "runs"
TREE_LIMIT = 15 * 2**20  # bytes: the repository must stay easy to clone


def test_the_committed_weights_are_the_recorded_ones():
    metrics = runs.read_metrics(RUNS / "best")
    assert runs.file_sha256(RUNS / "best" / runs.WEIGHTS) == metrics["weights_sha256"]
    runs.verify_weights(RUNS / "best")


@pytest.mark.parametrize("name", ["best", "best-seed1"])
def test_recorded_predictions_give_the_recorded_accuracy(name):
    metrics = runs.read_metrics(RUNS / name)
    for tta, key in ((False, "test_acc"), (True, "test_acc_tta")):
        pred = analysis.load_predictions(RUNS / name, tta=tta)
        assert len(pred.labels) == 10_000 and pred.tta == ("flip" if tta else "none")
        # Recomputed on a CPU in fp32 from weights the GPU evaluated in bf16: an image or two apart.
        assert pred.accuracy == pytest.approx(metrics[key], abs=0.001)


def test_the_stopped_run_is_marked_and_has_no_result():
    metrics = runs.read_metrics(RUNS / "best-e170")
    assert metrics["status"] == "time_limit" and metrics["epochs_completed"] < metrics["epochs"]
    assert "test_acc" not in metrics and not (RUNS / "best-e170" / runs.PREDICTIONS).exists()


def test_the_tracked_tree_stays_under_15_mb():
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = [ROOT / p for p in files.decode().split("\0") if p]
    assert sum(p.stat().st_size for p in paths if p.is_file()) < TREE_LIMIT


def test_cifar_resnet_evaluate_reproduces_the_recorded_accuracy_on_the_cpu(real_root, capsys):
    # One evaluation of the committed weights on the 10,000 test images, without and with flip TTA
    # (about two minutes on a laptop CPU).
    metrics = runs.read_metrics(RUNS / "best")
    assert main(["evaluate", str(RUNS / "best"), "--tta", "--device", "cpu", "--data-root", str(real_root)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 10_000 and result["tta"] == "flip"
    assert abs(result["test_acc"] - metrics["test_acc"]) <= 0.001  # within 0.1 points
    assert abs(result["test_acc_tta"] - metrics["test_acc_tta"]) <= 0.001
