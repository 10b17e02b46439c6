import json
import math
import subprocess
import sys

import pytest
import torch

from cifar_resnet.config import load_config, override
from cifar_resnet.evaluation.evaluate import evaluate_run, load_run
from cifar_resnet.run_folder import CheckpointError, load_weights
from cifar_resnet.training.engine import Trainer, TrainingDiverged, train
from cifar_resnet.training.optimizer import lr_factor

from conftest import CONFIGS, ROOT


def smoke(synthetic_root, **changes):
    base = {"data.root": str(synthetic_root), "data.download": False, "data.train_subset": 0, "data.test_subset": 0,
            "train.batch_size": 64, "train.epochs": 3}
    return override(load_config(CONFIGS / "smoke.yaml"), **{**base, **changes})


def test_training_lowers_the_loss_and_writes_the_record(synthetic_root, tmp_path):
    cfg = smoke(synthetic_root, **{"train.epochs": 4})
    metrics = train(cfg, tmp_path / "run", log=None)
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    # smoke.yaml averages the weights: test_acc measures the average, test_acc_raw the trained weights
    assert history[0] == "epoch,lr,train_loss,train_acc,test_loss,test_acc,test_loss_raw,test_acc_raw,seconds"
    assert len(history) == 5 and metrics["eval_weights"] == "ema"
    losses = [float(row.split(",")[2]) for row in history[1:]]
    assert losses[-1] < losses[0]
    for key in ("test_acc", "test_acc_tta", "best_epoch", "params", "epochs", "train_seconds", "wall_seconds",
                "images_per_second", "time_to_acc", "device", "torch_version", "seed", "git_commit", "precision"):
        assert key in metrics, key
    assert metrics["status"] == "finished" and metrics["device"] == "cpu" and metrics["params"] == 5266
    assert metrics["precision"] == "fp32"  # what ran: the CPU computes in fp32 whatever the preset asks
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    # the last epoch evaluates the weights as saved (half precision): the history ends on the recorded
    # loss and accuracy (the loss tells the fp32 weights from the saved ones; the accuracy rarely does)
    assert [float(v) for v in history[-1].split(",")[4:6]] == [metrics["test_loss"], metrics["test_acc"]]
    weights = load_weights(tmp_path / "run" / "model.safetensors")
    from safetensors import safe_open
    with safe_open(tmp_path / "run" / "model.safetensors", "pt") as f:
        assert f.get_tensor("fc.weight").dtype == torch.float16  # stored in half precision
    assert load_config(tmp_path / "run" / "config.yaml") == cfg and "fc.weight" in weights


def test_narrow_strided_projections_train_in_nchw_on_a_cpu(synthetic_root, tmp_path):
    """channels [4, 8]: the second stage's 1x1 projection strides over 4 channels, whose channels-last weight
    gradient oneDNN computes past its buffer on a CPU (a hang in malloc, or a crash): the run trains in NCHW
    and says so once; at 8 channels channels-last stays on."""
    from cifar_resnet.models import create_model
    from cifar_resnet.runtime import channels_last_trains_safely

    narrow = smoke(synthetic_root, **{"model.channels": [4, 8], "train.channels_last": True, "train.epochs": 2})
    cpu = torch.device("cpu")
    assert not channels_last_trains_safely(create_model(narrow.model), cpu)
    assert channels_last_trains_safely(create_model(narrow.model), torch.device("cuda"))
    assert channels_last_trains_safely(create_model(smoke(synthetic_root).model), cpu)
    messages = []
    assert train(narrow, tmp_path / "run", log=messages.append, device="cpu")["status"] == "finished"
    assert sum("train.channels_last ignored on this CPU" in m for m in messages) == 1


def test_evaluate_reproduces_the_recorded_accuracy_exactly(synthetic_root, tmp_path):
    metrics = train(smoke(synthetic_root), tmp_path / "run", log=None)
    again = evaluate_run(tmp_path / "run", tta=True, device="cpu")
    assert again["test_acc"] == metrics["test_acc"] and again["test_acc_tta"] == metrics["test_acc_tta"]


def _weights(run_dir):
    return load_run(run_dir, "cpu")[1].state_dict()


def _history_without_times(run_dir):
    return [row.rsplit(",", 1)[0] for row in (run_dir / "history.csv").read_text().splitlines()]


@pytest.mark.parametrize("augment", [{"data.policy": "trivialaugment", "train.mixup_alpha": 0.2},
                                     {"data.flip_alternate": True, "train.ricap_beta": 0.3, "train.sam_rho": 0.1,
                                      "train.grad_clip": 5.0}])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(synthetic_root, tmp_path, augment):
    cfg = smoke(synthetic_root, **augment, **{"model.dropout": 0.1})
    train(cfg, tmp_path / "straight", log=None)
    trainer = Trainer(cfg, tmp_path / "resumed", log=None)
    for stats in trainer.epochs():
        if stats.epoch == 1:
            break  # the process "dies" after epoch 1's checkpoint
    del trainer
    train(cfg, tmp_path / "resumed", resume=True, log=None)
    assert _history_without_times(tmp_path / "straight") == _history_without_times(tmp_path / "resumed")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_time_limit_stops_cleanly_and_resume_finishes(synthetic_root, tmp_path):
    cfg = smoke(synthetic_root, **{"train.epochs": 3})
    partial = train(cfg, tmp_path / "run", time_limit=1e-9, log=None)
    assert partial["status"] == "time_limit" and partial["epochs_completed"] == 0
    assert not (tmp_path / "run" / "model.safetensors").exists()
    done = train(cfg, tmp_path / "run", resume=True, log=None)
    assert done["status"] == "finished" and done["epochs_completed"] == 3


def test_damaged_checkpoint_is_refused(synthetic_root, tmp_path):
    cfg = smoke(synthetic_root, **{"train.epochs": 1})
    train(cfg, tmp_path / "run", log=None)
    path = tmp_path / "run" / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        Trainer(cfg, tmp_path / "run", resume=True, log=None)
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(CheckpointError, match="truncated|damaged"):
        Trainer(cfg, tmp_path / "run", resume=True, log=None)


def test_resume_refuses_another_configuration(synthetic_root, tmp_path):
    cfg = smoke(synthetic_root, **{"train.epochs": 1})
    train(cfg, tmp_path / "run", log=None)
    with pytest.raises(CheckpointError, match=r"another configuration \(differs in: train.lr\)"):
        Trainer(override(cfg, **{"train.lr": 0.5}), tmp_path / "run", resume=True, log=None)


def test_non_finite_loss_stops_with_epoch_and_step(synthetic_root, tmp_path):
    cfg = smoke(synthetic_root, **{"train.lr": 1e30, "train.schedule": "constant", "train.ema_decay": 0.0})
    with pytest.raises(TrainingDiverged, match=r"at epoch \d+, step \d+"):
        train(cfg, tmp_path / "run", log=None)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "linear", "step", "constant"])
def test_schedules_peak_at_one_and_stay_bounded(schedule):
    cfg = override(load_config(CONFIGS / "smoke.yaml"), **{"train.schedule": schedule, "train.warmup_epochs": 1.0,
                                                           "train.milestones": [2.0, 3.0]}).train
    factor = lr_factor(cfg, 100)
    values = [factor(s) for s in range(100)]
    assert all(0 <= v <= 1 for v in values) and math.isclose(max(values), 1.0, abs_tol=0.02)
    if schedule in ("onecycle", "cosine", "linear"):
        assert values[-1] < 0.05


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "RMSprop"])
def test_optimizers_by_name(synthetic_root, tmp_path, optimizer):
    cfg = smoke(synthetic_root, **{"train.optimizer": optimizer, "train.epochs": 1, "train.lr": 0.01})
    assert type(Trainer(cfg, tmp_path / "run", log=None).optimizer).__name__.lower() == optimizer.lower()


def test_command_line_train_and_evaluate(synthetic_root, tmp_path):
    env_root = {"CIFAR10_ROOT": str(synthetic_root)}
    import os
    env = {**os.environ, **env_root}
    run = subprocess.run([sys.executable, "-m", "cifar_resnet", "train", "--config", str(CONFIGS / "smoke.yaml"),
                          "--out", str(tmp_path / "cli"), "--epochs", "2", "--seed", "3"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr
    recorded = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert recorded["seed"] == 3 and recorded["epochs"] == 2
    out = subprocess.run([sys.executable, "-m", "cifar_resnet", "evaluate", str(tmp_path / "cli"), "--device", "cpu"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["test_acc"] == recorded["test_acc"]
    bad = subprocess.run([sys.executable, "-m", "cifar_resnet", "train", "--config", str(tmp_path / "none.yaml")],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("cifar-resnet: error: configuration file not found")


def test_no_configuration_check_on_the_training_step(synthetic_root, tmp_path, monkeypatch):
    """Values are checked when a configuration is read: the training step and evaluation check none."""
    from cifar_resnet import config
    from cifar_resnet.evaluation.evaluate import evaluate

    trainer = Trainer(smoke(synthetic_root, **{"train.precision": "bf16"}), tmp_path / "run", log=None)
    calls, check = [], config._check
    monkeypatch.setattr(config, "_check", lambda key, *rest: calls.append(key) or check(key, *rest))
    x, y = next(iter(trainer.train_loader))
    for _ in range(3):
        trainer.train_step(x, y)
    evaluate(trainer.model, trainer.eval_loader, "flip_translate", trainer.precision)
    trainer.close()
    assert calls == []


def test_an_airbench_style_run_resumes_exactly(synthetic_root, tmp_path):
    """Lookahead's slow weights, the epoch-sliced loader and the stopped whitening bias survive a resume."""
    cfg = override(load_config("fast94"), **{
        "data.root": str(synthetic_root), "data.download": False, "model.channels": [8, 16, 16],
        "train.batch_size": 64, "train.epochs": 3, "train.eval_every": 1, "train.whiten_bias_epochs": 1.0,
        "train.lookahead_every": 3, "train.precision": "fp32", "train.compile": False, "train.tta": "flip"})
    train(cfg, tmp_path / "straight", log=None)
    trainer = Trainer(cfg, tmp_path / "resumed", log=None)
    for stats in trainer.epochs():
        if stats.epoch == 2:
            break
    del trainer
    train(cfg, tmp_path / "resumed", resume=True, log=None)
    assert _history_without_times(tmp_path / "straight") == _history_without_times(tmp_path / "resumed")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_time_budget_fits_the_epochs_and_a_resume_keeps_them(synthetic_root, tmp_path, monkeypatch):
    """train.time_budget: the epochs are fitted after the first epoch's early steps, then after the first epoch
    (here the fit is made to say 3, then 2); the schedule spans them, metrics.json says how many ran, and a
    resumed run keeps what its checkpoint planned."""
    from cifar_resnet.training import time_budget

    fits = iter([3, 2])
    monkeypatch.setattr(time_budget, "fitted_epochs", lambda budget, seconds, most: next(fits))
    cfg = smoke(synthetic_root, **{"train.epochs": 5, "train.time_budget": 60.0, "train.batch_size": 32})
    lines = []
    trainer = Trainer(cfg, tmp_path / "run", log=lines.append)
    for stats in trainer.epochs():
        assert trainer.planned_epochs == 2  # refitted after the first epoch
        break  # the process "dies" after epoch 1's checkpoint
    del trainer
    assert [line.split(" (")[0] for line in lines[:2]] == ["smoke: 3 epochs fit train.time_budget 60 s here",
                                                            "smoke: 2 epochs fit train.time_budget 60 s here"]
    monkeypatch.setattr(time_budget, "fitted_epochs", lambda budget, seconds, most: pytest.fail("refitted on resume"))
    metrics = train(cfg, tmp_path / "run", resume=True, log=None)
    assert metrics["status"] == "finished" and metrics["epochs"] == metrics["epochs_completed"] == 2
    lrs = [float(row.split(",")[1]) for row in (tmp_path / "run" / "history.csv").read_text().splitlines()[1:]]
    assert len(lrs) == 2 and lrs[1] < lrs[0]  # the onecycle schedule ends within the two epochs


def test_a_time_budget_never_plans_more_than_train_epochs(synthetic_root, tmp_path):
    metrics = train(smoke(synthetic_root, **{"train.epochs": 2, "train.time_budget": 1e6}), tmp_path / "run", log=None)
    assert metrics["epochs"] == metrics["epochs_completed"] == 2


def test_compilation_is_paid_once_out_of_the_time_budget(monkeypatch):
    """The warm-up steps' extra time (torch.compile compiling) comes out of the budget once, not out of
    every epoch: 30 s of compilation, then 1 s a step, 10 steps an epoch, leave 7 epochs of a 100 s budget."""
    from cifar_resnet.training import time_budget

    clock = iter([0.0, 31.0, 37.0])  # the first step begins; the warm-up steps end; the 6 timed steps end
    timer = time_budget.StepTimer(10, torch.device("cpu"))
    monkeypatch.setattr(timer, "_now", lambda: next(clock))
    timer.start()
    epoch_seconds = [timer.after_step(step) for step in range(10)]
    assert epoch_seconds[time_budget.WARMUP_STEPS - 1 + timer.timed] == pytest.approx(10.0)
    assert timer.overhead == pytest.approx(29.0)
    assert timer.epochs(100.0, 10.0, 40) == 7 and time_budget.fitted_epochs(100.0, 10.0, 40) == 10


def test_train_compile_compiles_the_network_on_a_cpu(synthetic_root, tmp_path):
    """train.compile on a CPU: the training steps run through torch.compile's graph, and the run finishes."""
    cfg = smoke(synthetic_root, **{"train.epochs": 1, "train.compile": True, "data.train_subset": 128,
                                   "train.batch_size": 64})
    trainer = Trainer(cfg, tmp_path / "run", log=None)
    assert isinstance(trainer.forward, torch._dynamo.eval_frame.OptimizedModule)
    for _ in trainer.epochs():
        pass
    trainer.close()
    assert trainer.epoch == 1 and math.isfinite(trainer.history[-1]["train_loss"])
