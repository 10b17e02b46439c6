"""Bad inputs and faults as a new user meets them: each ends in one line on stderr and exit status 2, and
every file that existed before is byte-identical after; nothing is written outside where it belongs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar_resnet import cli, run_folder

from conftest import CONFIGS, ROOT
from faults import SMOKE, one_thread, refused, train_argv  # noqa: F401 (one_thread: an autouse fixture)


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- 1, 2: record writes only under results/runs/, and only files that pass evaluate's checks -----------------
@pytest.mark.parametrize("name", ["../../evil", "a/b", "..", ".", ".hidden"])
def test_record_refuses_a_name_that_is_a_path(run_copy, tmp_path, capsys, name):
    (tmp_path / "results" / "runs").mkdir(parents=True)
    line = refused(capsys, ["record", str(run_copy), "--name", name, "--results", str(tmp_path / "results")], tmp_path)
    assert "one folder name" in line and "not a path" in line


def test_record_refuses_weights_with_a_flipped_byte(run_copy, tmp_path, capsys):
    flip_byte(run_copy / run_folder.WEIGHTS)
    line = refused(capsys, ["record", str(run_copy), "--weights", "--results", str(tmp_path / "results")], tmp_path)
    assert f"{run_copy / run_folder.WEIGHTS} is damaged" in line


def test_record_refuses_truncated_predictions(run_copy, tmp_path, capsys):
    path = run_copy / run_folder.PREDICTIONS
    path.write_bytes(path.read_bytes()[:-64])
    line = refused(capsys, ["record", str(run_copy), "--results", str(tmp_path / "results")], tmp_path)
    assert f"{path} is damaged" in line


def test_record_copies_a_sound_run_whole(run_copy, tmp_path, capsys):
    assert cli.main(["record", str(run_copy), "--weights", "--name", "mine", "--results", str(tmp_path / "res")]) == 0
    recorded = tmp_path / "res" / "runs" / "mine"
    assert sorted(p.name for p in (tmp_path / "res" / "runs").iterdir()) == ["mine"]  # no temporary folder left
    assert run_folder.file_sha256(recorded / run_folder.WEIGHTS) == run_folder.file_sha256(run_copy / run_folder.WEIGHTS)


# ---- 3: one process per run folder ----------------------------------------------------------------------------
def test_a_folder_in_use_is_refused_naming_the_process(finished_run, synthetic_root, capsys):
    lock = run_folder.RunLock(finished_run)
    try:
        for extra in (["--resume"], ["--overwrite"]):
            line = refused(capsys, train_argv(synthetic_root, finished_run, *extra), finished_run)
            assert f"{finished_run} is in use by process {os.getpid()}" in line
    finally:
        lock.release()


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path, synthetic_root):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import filelock, sys, time; "
                               f"lock = filelock.FileLock({str(out / run_folder.LOCK)!r}); lock.acquire(); print('held', flush=True); "
                               "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_folder.CheckpointError, match="is in use by another process"):
            run_folder.RunLock(out)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run_folder.RunLock(out).release()  # the operating system released the killed holder's lock


# ---- 4: the tests write their runs where a user's runs never are ------------------------------------------------
def test_train_without_out_writes_into_the_temporary_runs_folder(synthetic_root, capsys):
    default = run_folder.user_runs_dir()
    assert default.is_absolute() and not default.resolve().is_relative_to(ROOT)  # conftest's, not ./runs
    assert cli.main(["train", "--config", SMOKE, "--epochs", "1", "--data-root", str(synthetic_root),
                     "--device", "cpu"]) == 0
    assert (default / "smoke" / run_folder.METRICS).is_file()


def test_make_test_points_both_runs_at_one_temporary_folder(tmp_path):
    """`make test` with a stand-in venv whose python records $CIFAR_RESNET_RUNS for pytest and for nbval."""
    venv, log = tmp_path / "venv", tmp_path / "calls"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$CIFAR_RESNET_RUNS $*" >> {log}\n')
    python.chmod(0o755)
    (venv / ".installed").touch()  # newer than requirements.txt: setup is up to date
    data = tmp_path / "data"
    (data / "cifar-10-batches-py").mkdir(parents=True)
    done = subprocess.run(["make", "-s", "test", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "CIFAR10_ROOT": str(data), "CIFAR_RESNET_RUNS": ""})
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert [c.split(" ")[1:3] for c in calls] == [["-m", "pytest"], ["-m", "pytest"]] and "--nbval" in calls[1]
    folders = {c.split(" ")[0] for c in calls}
    assert len(folders) == 1 and not Path(folders.pop()).exists()  # one temporary folder, deleted afterwards


# ---- 5: tracebacks become one line --------------------------------------------------------------------------
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@needs_no_cuda
def test_train_on_cuda_without_cuda(synthetic_root, tmp_path, capsys):
    line = refused(capsys, train_argv(synthetic_root, tmp_path / "run")[:-1] + ["cuda"], tmp_path)
    assert "--device cuda: this machine has no CUDA GPU; use --device cpu" in line


@needs_no_cuda
def test_evaluate_on_cuda_without_cuda(finished_run, capsys):
    line = refused(capsys, ["evaluate", str(finished_run), "--device", "cuda"], finished_run)
    assert "no CUDA GPU" in line


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_device_torch_does_not_know(finished_run, synthetic_root, tmp_path, capsys, command):
    argv = (train_argv(synthetic_root, tmp_path / "run")[:-1] + ["tpu"] if command == "train"
            else ["evaluate", str(finished_run), "--device", "tpu"])
    line = refused(capsys, argv, tmp_path, finished_run)
    assert "--device tpu: not a device name; use cpu, cuda or cuda:N" in line


def test_out_naming_a_file(synthetic_root, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    line = refused(capsys, train_argv(synthetic_root, tmp_path / "notes.txt"), tmp_path)
    assert "notes.txt is a file, not a run folder: choose another --out" in line


def test_evaluate_a_run_whose_metrics_are_not_json(run_copy, capsys):
    (run_copy / run_folder.METRICS).write_text('{"test_acc": 0.5,')
    line = refused(capsys, ["evaluate", str(run_copy), "--device", "cpu"], run_copy)
    assert f"{run_copy / run_folder.METRICS} is not valid JSON" in line


# ---- 6: a finished run is not resumed ---------------------------------------------------------------------------
def test_resume_on_a_finished_run_changes_nothing(finished_run, synthetic_root, capsys):
    line = refused(capsys, train_argv(synthetic_root, finished_run, "--resume", "--epochs", "1"), finished_run)
    assert f"{finished_run} has finished (1 of 1 epochs): nothing to resume, nothing changed" in line


# ---- 7: values out of range -------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [(["--time-limit", "-5"], "--time-limit must be above 0 seconds, got -5"),
                                            (["--time-limit", "0"], "--time-limit must be above 0 seconds, got 0"),
                                            (["--seed", "-1"], "train.seed: must be at least 0, got -1")])
def test_train_refuses_values_out_of_range(synthetic_root, tmp_path, capsys, extra, message):
    line = refused(capsys, train_argv(synthetic_root, tmp_path / "run", *extra), tmp_path)
    assert message in line


def test_search_refuses_zero_trials(tmp_path, capsys):
    line = refused(capsys, ["search", "--space", str(CONFIGS / "search_space_smoke.yaml"), "--study", "s",
                            "--trials", "0", "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
                   tmp_path)
    assert "--trials 0: a search needs at least 1 trained trial" in line


def test_sweep_refuses_a_time_limit_of_zero(tmp_path, capsys):
    line = refused(capsys, ["sweep", str(CONFIGS / "plans" / "ablation.yaml"), "--time-limit", "0", "--smoke",
                            "--out", str(tmp_path / "out")], tmp_path)
    assert "--time-limit must be above 0 seconds" in line


# ---- 8: an interrupted and resumed run's weights are byte-identical to an uninterrupted run's ------------------
def test_weights_after_sigkill_and_resume_are_byte_identical(synthetic_root, tmp_path):
    """Killed after its first checkpoint (in one process), resumed (in this one): the weights file is the one an
    uninterrupted run writes (in a third), byte for byte."""
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # as one_thread: the same arithmetic
    start = lambda out: subprocess.Popen([sys.executable, "-m", "cifar_resnet", *train_argv(synthetic_root, out, "--epochs", "6")],
                                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uninterrupted, process = start(whole), start(killed)
    while not (killed / run_folder.CHECKPOINT).exists() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL and not (killed / run_folder.METRICS).exists()  # stopped mid-run
    assert cli.main(train_argv(synthetic_root, killed, "--epochs", "6", "--resume")) == 0
    assert uninterrupted.wait() == 0
    assert run_folder.file_sha256(killed / run_folder.WEIGHTS) == run_folder.file_sha256(whole / run_folder.WEIGHTS)
    assert run_folder.read_metrics(killed)["weights_sha256"] == run_folder.read_metrics(whole)["weights_sha256"]
    data = (whole / run_folder.WEIGHTS).read_bytes()  # whatever order a process's hash map has: the keys are sorted
    metadata = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    assert list(metadata) == sorted(metadata) == ["config_sha256", "name", "tensors_sha256"]


# ---- 9: make setup resolves torch and torchvision together, then checks that they work together -------------
@pytest.mark.parametrize("matched", [False, True])
def test_make_setup_checks_torch_and_torchvision(tmp_path, matched):
    """`make setup` with stand-ins for venv and pip: one pip call with TORCH_INDEX as an extra index, then the
    check, which fails in one line naming the fix when torchvision does not fit torch (simulated by a
    torchvision that fails as such a build does) and does not mark the venv as set up."""
    venv, shim = tmp_path / "venv", tmp_path / "shim"
    (venv / "bin").mkdir(parents=True)
    (shim / "torchvision").mkdir(parents=True)
    if not matched:
        (shim / "torchvision" / "__init__.py").write_text(
            'raise RuntimeError("operator torchvision::nms does not exist")\n')
    for name, body in (("pip", f'echo "$*" >> {tmp_path / "pip-calls"}'),
                       ("python", f'PYTHONPATH={shim if not matched else ""} exec {sys.executable} "$@"')):
        (venv / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (venv / "bin" / name).chmod(0o755)
    done = subprocess.run(["make", "-s", "setup", f"VENV={venv}", "PYTHON=true", "TORCH_INDEX=https://example.invalid/cpu"],
                          cwd=ROOT, capture_output=True, text=True)
    calls = (tmp_path / "pip-calls").read_text().splitlines()
    assert calls == ["install -q -r requirements.txt -e . --extra-index-url https://example.invalid/cpu"]
    if matched:
        assert done.returncode == 0 and "work together" in done.stdout and (venv / ".installed").is_file()
    else:
        errors = [line for line in done.stderr.splitlines() if line.startswith("setup: error:")]
        assert done.returncode != 0 and not (venv / ".installed").exists()
        assert len(errors) == 1 and "do not work together (operator torchvision::nms does not exist)" in errors[0]
        assert f"fix: rm -rf {venv} && make setup TORCH_INDEX=https://example.invalid/cpu" in errors[0]


# ---- 10: a plan's paths are the plan file's ---------------------------------------------------------------------
def test_a_plan_runs_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", str(CONFIGS / "plans" / "ablation.yaml"), "--dry-run"]) == 0
    plan = tmp_path / "plans" / "p.yaml"
    plan.parent.mkdir()
    plan.write_text("base: configs/smoke.yaml\nruns:\n  - name: a\n")  # relative to the plan: plans/configs/...
    line = refused(capsys, ["sweep", str(plan), "--dry-run"], tmp_path)
    assert "base (relative to the plan file): configuration file not found" in line
    plan.write_text("base: smoke\nruns:\n  - name: a\n")  # a bare name beside no file: the packaged preset
    assert cli.main(["sweep", str(plan), "--dry-run"]) == 0


# ---- 11: what the messages say is true --------------------------------------------------------------------------
def test_a_dry_run_and_a_smoke_run_estimate_the_same_plan_alike(tmp_path, capsys):
    from cifar_resnet.studies.sweep import sweep

    headers = []
    for options in ({"dry_run": True, "device": "cpu"}, {"write_configs": tmp_path / "c", "smoke": True}):
        messages = []
        sweep(CONFIGS / "plans" / "ablation.yaml", tmp_path / "out", log=messages.append, **options)
        headers.append(messages[0])
    assert headers[0] == headers[1]  # the same expected total and the same runs over the limit


def test_damaged_weights_outside_git_are_not_sent_to_git_checkout(run_copy, capsys):
    flip_byte(run_copy / run_folder.WEIGHTS)
    line = refused(capsys, ["evaluate", str(run_copy), "--device", "cpu"], run_copy)
    assert "is damaged" in line and "git checkout" not in line and "retrain" in line


def test_damaged_recorded_weights_are_restored_from_git():
    weights = ROOT / "results" / "runs" / "best" / run_folder.WEIGHTS
    hint = run_folder._restore_hint(weights)
    assert f"git checkout -- {weights}" in hint
