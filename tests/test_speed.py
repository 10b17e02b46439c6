"""The speed recipes fast94 and fast95: airbench's network and optimisation as presets of the one training
path (models, training/optimizer, the engine), and benchmarks/speed.py that races them."""

import json
import subprocess
import sys

import pytest
import torch

from cifar_resnet.config import ConfigError, load_config, override
from cifar_resnet.models import ConvBlock, OverBudgetError, PARAMETER_BUDGET, count_parameters, create_model
from cifar_resnet.training.engine import Trainer
from cifar_resnet.training.optimizer import Lookahead, lr_factor, make_optimizer, make_scheduler

from conftest import ROOT

TINY = {"model.channels": [8, 16, 16], "data.train_subset": 512, "data.test_subset": 256, "train.epochs": 2,
        "train.eval_every": 2, "train.batch_size": 128, "train.whiten_bias_epochs": 1.0, "train.precision": "fp32",
        "train.compile": False}


@pytest.mark.parametrize("name, params", [("fast94", 1_971_352), ("fast95", 4_604_440)])
def test_presets_are_airbench_networks_with_skips_under_the_budget(name, params):
    cfg = load_config(name)
    net = create_model(cfg.model).eval()
    assert count_parameters(net) == params <= PARAMETER_BUDGET  # airbench94/95's counts: the skips are free
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    blocks = [m for m in net.modules() if isinstance(m, ConvBlock)]
    assert len(blocks) == len(cfg.model.channels)
    for block in blocks:  # each block adds its input to its branch's output: a real skip connection
        x = torch.randn(2, block.conv.in_channels, 4, 4)
        torch.testing.assert_close(block(x), x + block.act(block.bn(block.conv(x))))
    assert not net.stem.conv.weight.requires_grad and net.stem.conv.bias.requires_grad  # frozen whitening
    assert all(not m.weight.requires_grad and m.momentum == 0.4
               for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert net.fc.bias is None and net.head_scale == pytest.approx(1 / 9)


def test_over_budget_and_impossible_shapes_are_refused():
    cfg = load_config("fast94")
    with pytest.raises(OverBudgetError, match="over the budget"):
        create_model(override(cfg, **{"model.channels": [256, 1024, 1024]}).model)
    with pytest.raises(ConfigError, match="shrink the images to nothing"):  # five halvings of 31 pixels
        create_model(override(cfg, **{f"model.{key}": [value] * 5 for key, value in (
            ("channels", 8), ("blocks", 1), ("kernels", 3), ("skip_kernels", 1), ("strides", 2))}).model)
    with pytest.raises(ConfigError, match="zero_init_residual"):  # a frozen BatchNorm weight would stay 0
        create_model(override(cfg, **{"model.zero_init_residual": True}).model)


def test_the_triangular_schedule_runs_from_lr_start_to_lr_end():
    factor = lr_factor(load_config("fast94").train, 100)
    assert factor(0) == pytest.approx(0.2)
    assert factor(23) == pytest.approx(1.0)
    assert factor(100) == pytest.approx(0.07)


def test_norm_biases_learn_faster_and_the_whitening_bias_stops():
    cfg = override(load_config("fast94"), **TINY)
    net = create_model(cfg.model)
    optimizer = make_optimizer(net, cfg.train, torch.device("cpu"))
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert set(groups) == {"weights", "norm_biases", "whiten_bias"}  # no BatchNorm weight, no head bias
    t = cfg.train
    assert groups["norm_biases"]["lr"] == pytest.approx(64 * t.lr)
    # the same shrinkage per step as the weights: lr x weight decay
    assert groups["norm_biases"]["lr"] * groups["norm_biases"]["weight_decay"] == pytest.approx(t.lr * t.weight_decay)
    scheduler = make_scheduler(optimizer, t, steps_per_epoch=4, epochs=t.epochs)  # whiten_bias_epochs 1: 4 steps
    lrs = []
    for _ in range(6):
        lrs.append({group["name"]: group["lr"] for group in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    assert all(step["whiten_bias"] > 0 for step in lrs[:4]) and all(step["whiten_bias"] == 0 for step in lrs[4:])
    assert all(step["weights"] > 0 for step in lrs)


def test_lookahead_pulls_every_k_steps_and_ends_on_the_slow_weights():
    net = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    lookahead = Lookahead(net, every=2, decay=0.5, total_steps=5)
    history = []
    for step in range(1, 6):
        with torch.no_grad():
            net.weight += 1.0  # an optimisation step
        lookahead.step(step)
        history.append(net.weight.detach().clone())
    # step 2 of 5: the slow copy keeps 0.5^2 * (2/5)^3 of itself and the weights are reset to it
    keep = 0.25 * 0.4 ** 3
    torch.testing.assert_close(history[1], torch.full((1, 2), 2.0 * (1 - keep)))
    torch.testing.assert_close(history[4], history[3])  # step 5, the last: back to step 4's slow copy


def test_a_network_trained_again_is_drawn_afresh_in_place(synthetic_root, tmp_path):
    """The speed benchmark's reuse of one (compiled) network: the same seed gives the same run."""
    cfg = override(load_config("fast94"), **TINY)
    net = create_model(cfg.model)
    results = []
    for i, seed in enumerate((0, 0, 1)):
        trainer = Trainer(override(cfg, **{"train.seed": seed}), tmp_path / f"run{i}", data_root=str(synthetic_root),
                          device="cpu", progress=False, log=None, tensorboard=False, network=(net, net))
        for _ in trainer.epochs():
            pass
        trainer.close()
        results.append((trainer.history[-1]["train_loss"], trainer.history[-1]["test_acc"]))
    assert results[0] == results[1] != results[2]


def test_benchmark_smoke_writes_a_valid_record(synthetic_root, tmp_path):
    out = tmp_path / "speed{target}.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--smoke",
                           "--data-root", str(synthetic_root), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "speed94.json").read_text())
    assert record["status"] == "finished" and record["smoke"] and record["n_runs"] == record["runs_completed"] == 2
    for key in ("device", "torch_version", "git_commit", "timing", "ratio", "airbench", "ours"):
        assert key in record, key
    ours = record["ours"]
    assert len(ours["accs"]) == len(ours["seconds"]) == 2 and ours["params"] > 0
    assert ours["config"]["model"]["channels"] == [16, 32, 32]  # the main path's configuration, recorded
    for key in ("acc_mean", "acc_std", "seconds_mean", "seconds_std"):
        assert ours[key] >= 0
    assert "skipped" in record["airbench"]  # no CUDA here


def test_benchmark_help():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--time-limit" in done.stdout and "airbench" in done.stdout
