"""A run folder is changed only by a command that says it will (issue 28, items 1, 2, 7 and 11): `--resume`
without a checkpoint, a sweep over folders that hold runs, damaged checkpoints of every shape, and the signals
that end training. Each refusal is one line and exit status 2, every file that was there is byte-identical
after, and nothing appears outside the folders named."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cifar_resnet import cli, run_folder

from conftest import ROOT
from faults import no_temporary_files, one_thread, refused, train_argv  # noqa: F401 (one_thread: an autouse fixture)


def unfinished(run: Path, *keep: str) -> Path:
    """`run` as a run stopped by its time limit after its first epoch whose checkpoint is gone: `keep` of its
    record files stay (metrics.json rewritten as a time-limit stop)."""
    metrics = run_folder.read_metrics(run)
    for name in run_folder.RECORD:
        if name not in keep and name != run_folder.CONFIG:
            (run / name).unlink(missing_ok=True)
    if run_folder.METRICS in keep:
        metrics.update(status="time_limit", epochs=3, epochs_completed=1)
        metrics.pop("test_acc", None)
        (run / run_folder.METRICS).write_text(json.dumps(metrics))
    return run


# ---- 1: --resume without a checkpoint --------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [["--time-limit", "1"], [], ["--epochs", "1"]])
def test_resume_of_a_finished_run_without_its_checkpoint_changes_nothing(run_copy, synthetic_root, capsys, extra):
    """Every search trial's folder looks like this: the search deletes the checkpoints of finished trials."""
    (run_copy / run_folder.CHECKPOINT).unlink()
    argv = ["train", "--out", str(run_copy), "--resume", "--data-root", str(synthetic_root), "--device", "cpu", *extra]
    line = refused(capsys, argv, run_copy.parent)
    assert f"{run_copy} has finished (1 of 1 epochs" in line and "nothing changed" in line


@pytest.mark.parametrize("keep", [(run_folder.METRICS,), (run_folder.HISTORY,), (run_folder.HISTORY, run_folder.METRICS),
                                  (run_folder.WEIGHTS,), (run_folder.PREDICTIONS,)])
def test_resume_of_an_unfinished_run_without_its_checkpoint_is_refused(run_copy, synthetic_root, capsys, keep):
    unfinished(run_copy, *keep)
    line = refused(capsys, train_argv(synthetic_root, run_copy, "--resume"), run_copy.parent)
    assert f"{run_copy} holds a run" in line and "no checkpoint.pt to continue it from: nothing changed" in line
    assert "--overwrite" in line


def test_overwrite_replaces_an_unfinished_run_without_its_checkpoint(run_copy, synthetic_root, capsys):
    unfinished(run_copy, run_folder.METRICS, run_folder.HISTORY)
    assert cli.main(train_argv(synthetic_root, run_copy, "--overwrite", "--epochs", "1")) == 0
    assert run_folder.read_metrics(run_copy)["status"] == "finished"


def test_resume_of_a_folder_holding_only_its_configuration_starts_it(run_copy, synthetic_root, capsys):
    """Stopped in its first epoch: nothing trained is lost by starting from scratch (the Ctrl-C message says
    --resume then too)."""
    unfinished(run_copy)
    assert cli.main(train_argv(synthetic_root, run_copy, "--resume", "--epochs", "1")) == 0
    assert "no checkpoint in" in capsys.readouterr().out


def test_resume_refuses_a_folder_whose_configuration_is_another_runs(run_copy, synthetic_root, capsys):
    unfinished(run_copy)
    line = refused(capsys, train_argv(synthetic_root, run_copy, "--resume", "--epochs", "2"), run_copy.parent)
    assert "belongs to a run with another configuration" in line


# ---- 2: a sweep follows train's rules ---------------------------------------------------------------------------
def write_plan(folder: Path, *names: str, base: str = "smoke") -> Path:
    plan = folder / "plan.yaml"
    plan.write_text(yaml.safe_dump({"base": base, "runs": [{"name": n} for n in names]}))
    return plan


def test_a_sweep_does_not_replace_a_finished_run_without_overwrite(finished_run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out / "a-s0")  # a finished run, and no summary.csv
    plan = write_plan(tmp_path, "a", "b")
    line = refused(capsys, ["sweep", str(plan), "--smoke", "--out", str(out), "--device", "cpu"], tmp_path)
    assert f"{out / 'a-s0'} already holds a run: nothing changed; add --resume to continue them, --overwrite" in line


@pytest.mark.parametrize("name", ["../victim", "../../escaped", "/tmp/absolute", "a/b", ".hidden", "-dash", "", "x" * 120,
                                  "tab\tname", "..", "ünïcode"])
def test_a_sweep_run_name_is_one_folder_name(tmp_path, capsys, name):
    (tmp_path / "victim-s0").mkdir()
    (tmp_path / "victim-s0" / run_folder.METRICS).write_text('{"status": "finished"}')
    (tmp_path / "plans").mkdir()
    plan = write_plan(tmp_path / "plans", name)
    for options in (["--dry-run"], ["--smoke", "--device", "cpu"], ["--write-configs", str(tmp_path / "c")]):
        line = refused(capsys, ["sweep", str(plan), "--out", str(tmp_path / "out"), *options], tmp_path)
        assert "runs[0]: " in line and ("must be one folder name" in line and "not a path" in line
                                        or name == "" and "needs a 'name'" in line)


# ---- 7: damaged checkpoints of other shapes ---------------------------------------------------------------------
def _state(run: Path) -> dict:
    return run_folder.load_checkpoint(run / run_folder.CHECKPOINT)


@pytest.mark.parametrize("damage", ["folder", "list", "text epoch", "negative epoch", "float epoch", "no history",
                                    "history of another length", "config a list", "no model", "empty", "link",
                                    "model of strings", "rng missing loader"])
def test_a_damaged_checkpoint_of_any_shape_is_refused(run_copy, synthetic_root, tmp_path, capsys, damage):
    path = run_copy / run_folder.CHECKPOINT
    state = _state(run_copy)
    (run_copy / run_folder.WEIGHTS).unlink()  # killed while writing its record: --resume would finish it
    if damage == "folder":
        path.unlink()
        path.mkdir()
        (path / "inside").write_text("x")
    elif damage == "link":
        (tmp_path / "elsewhere.pt").write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(tmp_path / "elsewhere.pt")
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        changed = {"list": [1, 2, 3], "text epoch": {**state, "epoch": "3"}, "negative epoch": {**state, "epoch": -1},
                   "float epoch": {**state, "epoch": 1.0}, "no history": {k: v for k, v in state.items() if k != "history"},
                   "history of another length": {**state, "history": state["history"] * 2},
                   "config a list": {**state, "config": [1]}, "no model": {k: v for k, v in state.items() if k != "model"},
                   "model of strings": {**state, "model": {"stem.0.weight": "abc"}},
                   "rng missing loader": {**state, "rng": {"torch": state["rng"]["torch"]}}}[damage]
        run_folder.save_checkpoint(changed, path)  # a valid header and checksum around it
    for argv in (train_argv(synthetic_root, run_copy, "--resume", "--epochs", "1"),
                 ["train", "--out", str(run_copy), "--resume", "--data-root", str(synthetic_root), "--device", "cpu"]):
        line = refused(capsys, argv, tmp_path)
        assert str(path) in line and ("delete" in line or "link" in line or "folder" in line)


# ---- 11: SIGTERM and SIGHUP end training as Ctrl-C does; the message after the last epoch -----------------------
def _train_process(synthetic_root, out: Path, epochs: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def default_signals():  # as a terminal starts it, whatever this test process inherited (a CI shell may ignore some)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)

    return subprocess.Popen([sys.executable, "-m", "cifar_resnet", *train_argv(synthetic_root, out, "--epochs", str(epochs))],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return True  # ended, or no /proc: go on


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_keeps_the_checkpoint_and_says_how_to_continue(synthetic_root, tmp_path, signum):
    out = tmp_path / "run"
    process = _train_process(synthetic_root, out, 200)
    while not (out / run_folder.CHECKPOINT).exists() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signum)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("cifar-resnet:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "interrupted during epoch" in lines[0] and "is kept" in lines[0]
    assert lines[0].endswith(f"continue with: cifar-resnet train --out {out} --resume")
    assert run_folder.load_checkpoint(out / run_folder.CHECKPOINT)["epoch"] >= 1 and no_temporary_files(out)


@pytest.mark.parametrize("delay", [0.2, 0.6, 1.5])
def test_ctrl_c_while_the_command_starts_is_one_line(synthetic_root, tmp_path, delay):
    """While torch loads (seconds), before anything is written: one line, exit status 130, no folder made."""
    out = tmp_path / "run"
    process = _train_process(synthetic_root, out, 1)
    began = time.perf_counter()
    while not _loaded(process.pid, "numpy") and time.perf_counter() - began < 60:
        time.sleep(0.01)  # numpy loads first inside the command's own imports: its handlers are set by then
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 130 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("cifar-resnet: "), err
    assert not out.exists() or no_temporary_files(out)


def test_ctrl_c_while_writing_the_record_names_the_last_epoch(synthetic_root, tmp_path, capsys, monkeypatch):
    """Not "epoch 2 of 1": every epoch was trained, the record was being written; --resume then finishes it."""
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_folder, "save_weights", interrupted)
    capsys.readouterr()
    assert cli.main(train_argv(synthetic_root, out, "--epochs", "1")) == 130
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cifar-resnet:")]
    assert "while writing the record after the last epoch (1 of 1)" in line and "epoch 2 of 1" not in line
    assert line.endswith(f"cifar-resnet train --out {out} --resume") and no_temporary_files(out)
    monkeypatch.undo()
    assert cli.main(train_argv(synthetic_root, out, "--resume", "--epochs", "1")) == 0
    assert run_folder.read_metrics(out)["status"] == "finished"
