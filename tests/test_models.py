import subprocess
import sys

import pytest
import torch
from torch import nn

from cifar_resnet.config import ConfigError, ModelConfig, load_config
from cifar_resnet.models import OverBudgetError, PARAMETER_BUDGET, count_parameters, create_model, parameter_count

from conftest import CONFIGS, PRESETS, ROOT


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_builds_under_budget_and_gives_logits(path):
    model = create_model(load_config(path).model).eval()
    assert count_parameters(model) <= PARAMETER_BUDGET
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_parameter_count_matches_a_hand_count():
    cfg = ModelConfig(block="basic", stem_channels=4, channels=[4, 8], blocks=[1, 1], kernels=[3, 5],
                      skip_kernels=[1, 3], strides=[1, 2], pool=2)
    bn = lambda c: 2 * c  # weight and bias
    stem = 3 * 4 * 3 * 3 + bn(4)
    stage1 = (4 * 4 * 3 * 3 + bn(4)) * 2  # identity skip: same shape
    stage2 = 4 * 8 * 5 * 5 + bn(8) + 8 * 8 * 5 * 5 + bn(8) + (4 * 8 * 3 * 3 + bn(8))  # 3x3 projection skip
    head = (8 * 8 * 8) * 10 + 10  # 16x16 map pooled by P=2 to 8x8, 8 channels, flattened
    assert count_parameters(create_model(cfg)) == stem + stage1 + stage2 + head


@pytest.mark.parametrize("block", ["basic", "preact"])
def test_skip_connection_variants(block):
    same = ModelConfig(block=block, stem_channels=8, channels=[8], blocks=[1], kernels=[3], skip_kernels=[1], strides=[1])
    assert isinstance(create_model(same).stages[0][0].skip, nn.Identity)
    for k in (1, 3):
        cfg = ModelConfig(block=block, stem_channels=8, channels=[16], blocks=[1], kernels=[3], skip_kernels=[k], strides=[2])
        skip = create_model(cfg).stages[0][0].skip
        conv = skip[0] if isinstance(skip, nn.Sequential) else skip
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (k, k) and conv.stride == (2, 2)
        assert isinstance(skip, nn.Sequential) == (block == "basic")  # pre-activation projections have no BN


def test_a_fresh_block_is_its_skip_connection():
    cfg = ModelConfig(block="basic", stem_channels=8, channels=[8], blocks=[1], kernels=[3], skip_kernels=[1], strides=[1])
    block = create_model(cfg).stages[0][0].eval()
    x = torch.randn(2, 8, 8, 8)
    assert torch.allclose(block(x), torch.relu(x))


def test_over_budget_raises_with_count_and_limit():
    wide = ModelConfig(channels=[256, 512, 1024])
    with pytest.raises(OverBudgetError, match=r"has [\d,]+ trainable parameters, over the budget of 5,000,000"):
        create_model(wide)


def test_parameter_count_is_the_built_networks_without_building_it(monkeypatch):
    cfg = load_config(CONFIGS / "best.yaml").model
    assert parameter_count(cfg) == count_parameters(create_model(cfg)) == 4_289_754
    wide = ModelConfig(channels=[256, 512, 1024])  # over budget: counted all the same, on the meta device
    devices, original = [], nn.Conv2d.reset_parameters

    def reset_parameters(conv):
        devices.append(conv.weight.device)
        original(conv)

    monkeypatch.setattr(nn.Conv2d, "reset_parameters", reset_parameters)
    assert parameter_count(wide) > PARAMETER_BUDGET and {d.type for d in devices} == {"meta"}


def test_inconsistent_design_variables_are_config_errors():
    with pytest.raises(ConfigError, match="model.kernels: has 2 entries"):
        create_model(ModelConfig(kernels=[3, 3]))
    with pytest.raises(ConfigError, match="must be odd"):
        create_model(ModelConfig(kernels=[3, 4, 3]))
    with pytest.raises(ConfigError, match="model.pool"):
        create_model(ModelConfig(pool=3))


def test_summary_command_prints_table_and_count():
    out = subprocess.run([sys.executable, "-m", "cifar_resnet", "summary", "--config", str(CONFIGS / "smoke.yaml")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "Conv2d-1" in out.stdout and "5,266 trainable parameters" in out.stdout


def test_summary_command_refuses_over_budget(tmp_path):
    text = (CONFIGS / "wide_resnet.yaml").read_text().replace("[80, 160, 320]", "[96, 192, 384]")
    (tmp_path / "wider.yaml").write_text(text)
    out = subprocess.run([sys.executable, "-m", "cifar_resnet", "summary", "--config", str(tmp_path / "wider.yaml")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "6,172,122" in out.stderr and "5,000,000" in out.stderr


def test_importing_the_package_stays_light():
    code = "import sys, cifar_resnet; print(sorted(m for m in ('matplotlib', 'optuna', 'pandas', 'seaborn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
