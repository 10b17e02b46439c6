import json
import subprocess
import sys

import pytest
import torch

from cifar_resnet.config import ConfigError
from cifar_resnet.data.cifar10 import load_cifar10
from cifar_resnet.models import OverBudgetError, PARAMETER_BUDGET, count_parameters
from cifar_resnet.studies.speedrun import (
    ResidualBlock, Speedrun, create_speedrun_model, load_speedrun_config, speedrun_override, train_speedrun,
    triangle,
)

from conftest import CONFIGS, ROOT

TINY = {"widths": [8, 16], "epochs": 2.0, "batch_size": 64, "whiten_bias_epochs": 1.0, "precision": "fp32",
        "compile": False}


@pytest.mark.parametrize("name, params", [("fast94", 1_971_352), ("fast95", 4_604_440)])
def test_presets_are_residual_networks_under_the_budget(name, params):
    cfg = load_speedrun_config(CONFIGS / f"{name}.yaml")
    net = create_speedrun_model(cfg).eval()
    assert count_parameters(net) == params <= PARAMETER_BUDGET  # same counts as airbench94/95: skips are free
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    blocks = [m for m in net.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == len(cfg.widths)
    for block in blocks:  # each block adds its input to its branch's output: a real skip connection
        x = torch.randn(2, block.branch[0].in_channels, 4, 4)
        torch.testing.assert_close(block(x), x + block.branch(x))
    assert not net.whiten.weight.requires_grad  # the whitening conv is frozen, as airbench's


def test_over_budget_and_bad_keys_are_refused(tmp_path):
    cfg = load_speedrun_config(CONFIGS / "fast94.yaml")
    with pytest.raises(OverBudgetError, match="over the budget"):
        create_speedrun_model(speedrun_override(cfg, widths=[256, 1024, 1024]))
    with pytest.raises(ConfigError, match="widths"):
        speedrun_override(cfg, widths=[64, 64, 64, 64, 64])  # five halvings of 31 pixels leave nothing
    (tmp_path / "typo.yaml").write_text("name: x\nepoch: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        load_speedrun_config(tmp_path / "typo.yaml")


def test_whitening_conv_whitens_the_patches_it_was_set_from():
    net = create_speedrun_model(speedrun_override(load_speedrun_config(CONFIGS / "fast94.yaml"), **TINY))
    images = torch.randn(64, 3, 8, 8) @ torch.randn(8, 8)  # correlated pixels
    net.init_whitening(images, eps=0.0)
    out = torch.nn.functional.conv2d(images, net.whiten.weight[:12])  # the positive half
    features = out.permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(features.T @ features / len(features), torch.eye(12), atol=1e-3, rtol=1e-3)


def test_triangular_schedule():
    cfg = load_speedrun_config(CONFIGS / "fast94.yaml")
    assert triangle(0, 100, cfg) == pytest.approx(0.2)
    assert triangle(23, 100, cfg) == pytest.approx(1.0)
    assert triangle(100, 100, cfg) == pytest.approx(0.07)


def test_train_speedrun_on_synthetic_data_is_sane_and_reproducible(synthetic_root):
    cfg = speedrun_override(load_speedrun_config(CONFIGS / "fast94.yaml"), **TINY)
    train, test = load_cifar10(synthetic_root, "train", download=False), load_cifar10(synthetic_root, "test", download=False)
    result = train_speedrun(cfg, train, test, "cpu", seed=0)
    assert set(result) >= {"acc", "acc_tta", "seconds", "params"}
    assert 0 <= result["acc"] <= 1 and 0 <= result["acc_tta"] <= 1 and result["seconds"] > 0
    assert result["params"] == count_parameters(create_speedrun_model(cfg))
    speedrun = Speedrun(cfg, train, test, "cpu")
    first, second = speedrun.run(seed=0), speedrun.run(seed=0)  # the same network, re-initialised in place
    assert (first["acc"], first["acc_tta"]) == (second["acc"], second["acc_tta"]) == (result["acc"], result["acc_tta"])


def test_benchmark_smoke_writes_a_valid_record(synthetic_root, tmp_path):
    out = tmp_path / "speed{target}.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--smoke",
                           "--data-root", str(synthetic_root), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "speed94.json").read_text())
    assert record["status"] == "finished" and record["smoke"] and record["n_runs"] == record["runs_completed"] == 2
    for key in ("device", "torch_version", "git_commit", "timing", "ratio", "airbench", "ours"):
        assert key in record, key
    ours = record["ours"]
    assert len(ours["accs"]) == len(ours["seconds"]) == 2 and ours["params"] > 0
    for key in ("acc_mean", "acc_std", "seconds_mean", "seconds_std"):
        assert ours[key] >= 0
    assert "skipped" in record["airbench"]  # no CUDA here


def test_benchmark_help():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--time-limit" in done.stdout and "airbench" in done.stdout
