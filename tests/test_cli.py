"""The command line as a newcomer meets it: every refusal is one line on stderr with exit status 2."""

import json

import pytest

from cifar_resnet import cli, run_folder
from cifar_resnet.training.engine import Trainer

from conftest import CONFIGS


def train_cli(synthetic_root, out, *extra):
    return cli.main(["train", "--config", str(CONFIGS / "smoke.yaml"), "--out", str(out),
                     "--data-root", str(synthetic_root), "--device", "cpu", *extra])


def error_line(capsys) -> str:
    """The one line on stderr, besides any progress bar (which redraws itself with carriage returns)."""
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").split("\n") if line.strip()]
    message = [line for line in lines if not line.startswith("smoke: ")]
    assert len(message) == 1, lines
    return message[0] + "\n"


def test_train_refuses_a_folder_that_holds_a_run(synthetic_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(synthetic_root, out, "--epochs", "1") == 0
    first = json.loads((out / run_folder.METRICS).read_text())
    capsys.readouterr()
    assert train_cli(synthetic_root, out, "--epochs", "2") == 2
    assert f"{out} already holds a run: add --resume to continue it, --overwrite to start again" in error_line(capsys)
    assert json.loads((out / run_folder.METRICS).read_text()) == first  # untouched
    assert train_cli(synthetic_root, out, "--resume", "--overwrite") == 2
    assert "either --resume" in error_line(capsys)
    assert train_cli(synthetic_root, out, "--epochs", "2", "--overwrite") == 0
    again = json.loads((out / run_folder.METRICS).read_text())
    assert again["epochs_completed"] == 2 and again["wall_seconds"] != first["wall_seconds"]


def test_ctrl_c_keeps_the_last_checkpoint_and_says_how_to_resume(synthetic_root, tmp_path, capsys, monkeypatch):
    out, calls, step = tmp_path / "run", [], Trainer.train_step

    def interrupted_step(self, x, y):
        calls.append(1)
        if len(calls) == self.steps_per_epoch + 2:  # in the second epoch
            raise KeyboardInterrupt
        return step(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    assert train_cli(synthetic_root, out, "--epochs", "3") == 130
    assert error_line(capsys) == (f"cifar-resnet: interrupted during epoch 2 of 3: the checkpoint after epoch 1 is "
                                  f"kept; continue with: cifar-resnet train --out {out} --resume\n")
    assert run_folder.load_checkpoint(out / run_folder.CHECKPOINT)["epoch"] == 1 and not (out / run_folder.WEIGHTS).exists()
    monkeypatch.setattr(Trainer, "train_step", step)
    assert cli.main(["train", "--out", str(out), "--resume", "--data-root", str(synthetic_root), "--device", "cpu"]) == 0
    metrics = json.loads((out / run_folder.METRICS).read_text())
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 3
    # The wall time covers both sessions: never below the training time, above this session alone.
    assert metrics["wall_seconds"] >= metrics["train_seconds"]
    assert metrics["wall_seconds"] > metrics["session_seconds"]


def test_a_run_of_hours_on_the_cpu_is_refused_with_a_cpu_sized_command(synthetic_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert train_cli(synthetic_root, out, "--epochs", "100000000") == 2
    err = error_line(capsys)
    assert err.startswith("cifar-resnet: error: smoke would train for about ") and " h on this CPU (" in err
    assert "`make train CONFIG=configs/smoke.yaml`" in err and "--allow-slow" in err
    assert not out.exists()  # nothing written
    # bounded by a time limit below an hour (and above an epoch's estimate: issue 37), it may start, and stops
    from cifar_resnet.training import launch_policy

    monkeypatch.setattr(launch_policy, "step_seconds", lambda cfg, device: 1e-6)
    assert train_cli(synthetic_root, out, "--epochs", "100000000", "--time-limit", "1e-3") == 0
    assert json.loads((out / run_folder.METRICS).read_text())["status"] == "time_limit"


@pytest.mark.parametrize("option, message", [
    (["--epochs", "0"], "train.epochs: must be at least 1, got 0"),
    (["--epochs", "-3"], "train.epochs: must be at least 1, got -3"),
])
def test_out_of_range_options_are_one_line_errors(synthetic_root, tmp_path, capsys, option, message):
    assert train_cli(synthetic_root, tmp_path / "run", *option) == 2
    assert error_line(capsys) == f"cifar-resnet: error: {message}\n"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, message", [
    ("", "is empty: a configuration needs at least a model section"),
    ("train: {batch_size: 0}\n", "train.batch_size: must be at least 1, got 0"),
    ("train: {lr: 0.0}\n", "train.lr: must be above 0, got 0.0"),
    ("train: {lr: -0.1}\n", "train.lr: must be above 0, got -0.1"),
])
def test_bad_configuration_files_are_one_line_errors(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert error_line(capsys) == f"cifar-resnet: error: {path}{'' if text == '' else ':'} {message}" + (
        " (start from a preset in configs/)\n" if text == "" else "\n")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_root):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train_cli(synthetic_root, out, "--epochs", "1") == 0
    return out


def evaluate_cli(run_dir, synthetic_root):
    return cli.main(["evaluate", str(run_dir), "--data-root", str(synthetic_root), "--device", "cpu"])


def test_evaluate_says_what_is_missing(finished_run, synthetic_root, tmp_path, capsys):
    capsys.readouterr()
    assert evaluate_cli(tmp_path / "nowhere", synthetic_root) == 2
    assert error_line(capsys).startswith(f"cifar-resnet: error: run folder not found: {tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    assert evaluate_cli(tmp_path / "empty", synthetic_root) == 2
    assert error_line(capsys).startswith(f"cifar-resnet: error: {tmp_path / 'empty'} holds no config.yaml")
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / run_folder.CONFIG).write_bytes((finished_run / run_folder.CONFIG).read_bytes())
    assert evaluate_cli(tmp_path / "unfinished", synthetic_root) == 2
    assert error_line(capsys).startswith(f"cifar-resnet: error: no weights at {tmp_path / 'unfinished' / run_folder.WEIGHTS}")


@pytest.mark.parametrize("keep_record_checksum", [True, False])
def test_evaluate_refuses_damaged_weights_naming_the_file(finished_run, synthetic_root, tmp_path, capsys,
                                                          keep_record_checksum):
    run = tmp_path / "run"
    run.mkdir()
    for name in (run_folder.CONFIG, run_folder.METRICS, run_folder.WEIGHTS):
        (run / name).write_bytes((finished_run / name).read_bytes())
    assert evaluate_cli(run, synthetic_root) == 0
    capsys.readouterr()
    if not keep_record_checksum:  # then the checksum in the file's own metadata catches it
        metrics = json.loads((run / run_folder.METRICS).read_text())
        del metrics["weights_sha256"]
        (run / run_folder.METRICS).write_text(json.dumps(metrics))
    data = bytearray((run / run_folder.WEIGHTS).read_bytes())
    for i in range(len(data) - 1000, len(data)):  # 1,000 bytes of tensor data flipped
        data[i] ^= 0xFF
    (run / run_folder.WEIGHTS).write_bytes(bytes(data))
    assert evaluate_cli(run, synthetic_root) == 2
    err = error_line(capsys)
    assert err.startswith(f"cifar-resnet: error: {run / run_folder.WEIGHTS} is damaged (its ")
    assert ("metrics.json" in err) == keep_record_checksum


def test_record_copies_a_finished_run_into_the_results_and_refuses_to_replace_one(finished_run, tmp_path, capsys):
    results = tmp_path / "results"
    assert cli.main(["record", str(finished_run), "--name", "mine", "--results", str(results)]) == 0
    copied = results / "runs" / "mine"
    assert capsys.readouterr().out.strip() == str(copied)
    recorded = json.loads((copied / run_folder.METRICS).read_text())  # the machine's data folder: the data's name
    assert recorded.pop("data").startswith("not CIFAR-10's test set: 100 test images")
    assert recorded == {k: v for k, v in run_folder.read_metrics(finished_run).items() if k != "data_root"}
    assert (copied / run_folder.PREDICTIONS).is_file() and not (copied / run_folder.WEIGHTS).exists()
    assert cli.main(["record", str(finished_run), "--name", "mine", "--results", str(results)]) == 2
    assert error_line(capsys).startswith(f"cifar-resnet: error: {copied} exists")


def test_train_without_config_trains_the_cpu_preset_on_a_cpu_and_says_why_in_one_line(synthetic_root, tmp_path,
                                                                                     capsys, monkeypatch):
    from cifar_resnet.training import launch_policy

    monkeypatch.setattr(launch_policy, "CPU_PRESET", "smoke")  # the CPU presets' minutes, in seconds
    monkeypatch.setattr(launch_policy, "CPU_FP32_PRESET", "smoke")
    monkeypatch.setenv("CIFAR_RESNET_RUNS", str(tmp_path))
    assert cli.main(["train", "--data-root", str(synthetic_root), "--device", "cpu", "--epochs", "1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "GPU" in line]
    assert len(lines) == 1 and lines[0].startswith("no GPU here and `best` needs one (hours on a CPU), ")
    assert "so training `smoke`: about " in lines[0] and "of training here" in lines[0]
    assert json.loads((tmp_path / "smoke" / run_folder.METRICS).read_text())["status"] == "finished"


def test_train_without_config_is_best_on_a_gpu():
    import torch

    from cifar_resnet.training.launch_policy import default_preset

    assert default_preset(torch.device("cuda")) == ("best", None)


@pytest.mark.parametrize("native_bf16, preset", [(True, "cpu"), (False, "cpu_fp32")])
def test_train_without_config_on_a_cpu_picks_the_preset_its_arithmetic_suits(native_bf16, preset, monkeypatch):
    """`cpu`'s wide network trains one epoch in its 15 minutes where the CPU has no native bf16: `cpu_fp32` there."""
    import torch

    from cifar_resnet.training import launch_policy

    monkeypatch.setattr(launch_policy, "native_cpu_bf16", lambda: native_bf16)
    name, line = launch_policy.default_preset(torch.device("cpu"))
    assert name == preset and line.endswith(f"so training `{preset}`") and ("no bf16" in line) != native_bf16
