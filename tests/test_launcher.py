"""`search --devices`: one worker per GPU, Ctrl-C forwarded; `train` under torchrun refused in one line."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from cifar_resnet.cli import main
from cifar_resnet.config import ConfigError
from cifar_resnet.studies.search_workers import parse_devices, worker_argv, worker_names

from conftest import CONFIGS, ROOT
from test_search import space_file

TORCHRUN_REFUSAL = "cifar-resnet: error: train runs on one device; under torchrun (WORLD_SIZE=2)"


def test_devices_name_and_pin_one_worker_each():
    assert parse_devices("0,1, 3") == ["0", "1", "3"]
    assert worker_names(["0", "1", "3"]) == ["gpu0", "gpu1", "gpu3"]
    assert worker_names(["0", "0", "1"]) == ["gpu0-1", "gpu0-2", "gpu1"]  # two workers on one GPU
    for bad in ("", "0,,1", "cuda:0", "0;1", "-1"):
        with pytest.raises(ConfigError, match="--devices: give GPU indices"):
            parse_devices(bad)


def test_workers_get_every_option_but_the_launchers():
    options = {"command": "search", "func": print, "devices": "0,1", "space": "s.yaml", "study": "x", "trials": 5,
               "storage": None, "work_dir": "runs/search", "allow_slow": True, "timeout": None}
    assert worker_argv(options) == ["search", "--space", "s.yaml", "--study", "x", "--trials", "5",
                                    "--work-dir", "runs/search", "--allow-slow"]


def test_a_device_beside_devices_is_one_line(tmp_path, capsys):
    assert main(["search", "--space", "s.yaml", "--study", "x", "--trials", "1", "--devices", "0,1",
                 "--device", "cuda:1"]) == 2
    assert capsys.readouterr().err.startswith("cifar-resnet: error: --device cuda:1 with --devices")


def test_ctrl_c_reaches_every_worker_and_each_puts_its_trial_back(synthetic_root, tmp_path):
    # Trials of 20 epochs: both workers are surely inside one when the signal comes.
    space = space_file(tmp_path, pruner="none", budget=5_000_000, seed=None, heartbeat=60, **{"fidelity.max_epochs": 20})
    log = tmp_path / "launcher.log"
    with open(log, "w") as output:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "cifar_resnet", "search", "--space", str(space), "--study", "c", "--trials", "2",
             "--out", str(tmp_path), "--work-dir", str(tmp_path / "runs"), "--device", "cpu", "--devices", "0,1"],
            cwd=ROOT, env={**os.environ, "CIFAR10_ROOT": str(synthetic_root)}, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "runs" / "c").glob("trial_*/checkpoint.pt"))) < 2:  # both workers in a trial
            assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=60) == 130, log.read_text()
    finally:
        if launcher.poll() is None:
            launcher.kill()
    lines = log.read_text().splitlines()
    assert lines[-1].startswith("study 'c': ") and lines[-1].endswith("workers: gpu0 interrupted, gpu1 interrupted")
    for name in ("gpu0", "gpu1"):
        assert f"[{name}] cifar-resnet: interrupted" in lines
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'runs' / 'c.db'}")
    interrupted = study.get_trials(states=(TrialState.FAIL,))
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(interrupted) == 2 and not study.get_trials(states=(TrialState.RUNNING,))
    assert sorted(t.user_attrs["run"] for t in waiting) == sorted(f"trial_{t.number}" for t in interrupted)


def test_train_under_world_size_above_one_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--config", str(CONFIGS / "smoke.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith(TORCHRUN_REFUSAL) and not (tmp_path / "run").exists()


def test_torchrun_train_ends_in_the_one_line(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m",
                             "cifar_resnet", "train", "--config", str(CONFIGS / "smoke.yaml"), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and not out.exists()
    refusals = [line for line in result.stderr.splitlines() if line.startswith("cifar-resnet: error:")]
    assert len(refusals) == 2 and all(line.startswith(TORCHRUN_REFUSAL) for line in refusals), result.stderr
    assert "--devices" in refusals[0]
