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
    with pytest.raises(ConfigError, match=r"model.pool: P=9 must lie in 1..8, the final 8x8 feature map"):
        create_model(ModelConfig(pool=9))
    with pytest.raises(ConfigError, match="model.pool_stride: 2 needs a pool kernel"):
        create_model(ModelConfig(pool_stride=2))


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


def pool_cfg(**changes) -> ModelConfig:
    """A small airbench-style network: whitening stem, "pool" stages."""
    return ModelConfig(**{"block": "pool", "stem": "whiten", "stem_kernel": 2, "stem_channels": 24, "channels": [8, 16],
                          "blocks": [1, 1], "kernels": [3, 3], "skip_kernels": [1, 1], "strides": [2, 2],
                          "activation": "gelu", **changes})


def test_whitening_stem_whitens_the_patches_it_was_set_from_and_only_its_bias_trains():
    model = create_model(pool_cfg())
    mix = torch.tensor([[1.0, 0.5, 0.2], [0, 1, 0.3], [0, 0, 2]])
    images = torch.einsum("nchw,dc->ndhw", torch.randn(64, 3, 32, 32), mix)  # correlated channels
    images = images + 0.7 * images.roll(1, -1)  # and neighbouring pixels
    model.stem.init_whitening(images, eps=0.0)
    out = model.stem.conv(images)[:, :12]  # the 12 filters, without their negatives; no padding: the same patches
    patches = out.permute(0, 2, 3, 1).reshape(-1, 12)
    assert torch.allclose(patches.T @ patches / len(patches), torch.eye(12), atol=0.05)
    assert torch.equal(model.stem.conv.weight[12:], -model.stem.conv.weight[:12])
    assert not model.stem.conv.weight.requires_grad and model.stem.conv.bias.requires_grad
    assert model.stem(images).shape == (64, 24, 32, 32)  # 'same' padding for the even kernel


def test_pool_stages_count_and_shape():
    cfg = pool_cfg()
    bn = lambda c: 2 * c
    stem = 24 + 0  # the frozen filters are not trainable: only their bias counts
    stage1 = 24 * 8 * 9 + bn(8) + 8 * 8 * 9 + bn(8)  # entry conv (then 2x2 max-pool) and one conv block
    stage2 = 8 * 16 * 9 + bn(16) + 16 * 16 * 9 + bn(16)
    head = 16 * 10 + 10
    model = create_model(cfg)
    assert count_parameters(model) == stem + stage1 + stage2 + head
    assert model.stages(model.stem(torch.randn(2, 3, 32, 32))).shape == (2, 16, 8, 8)
    block = model.stages[0][1].eval()  # zero-initialised: the block starts as the identity
    x = torch.randn(2, 8, 16, 16)
    assert torch.allclose(block(x), x)


def test_pool_type_max_takes_the_maximum():
    model = create_model(pool_cfg(pool_type="max")).eval()
    features = torch.randn(2, 16, 8, 8)
    assert torch.equal(model.pool(features).flatten(1), features.amax((2, 3)))


@pytest.mark.parametrize("changes, message", [
    ({"stem_channels": 16}, "model.stem_channels: a whitening stem of kernel 2 has 24 channels"),
    ({"stem": "conv"}, "model.stem_kernel: kernel sizes must be odd"),
    ({"stem": "patch"}, "model.stem: unknown stem 'patch'; choose conv, whiten"),
])
def test_whitening_stem_errors_name_the_value_and_the_fix(changes, message):
    with pytest.raises(ConfigError, match=message):
        create_model(pool_cfg(**changes))


def test_the_engine_sets_a_whitening_stem_from_images_and_leaves_other_stems_alone():
    images = torch.randn(16, 3, 32, 32)
    model, plain = create_model(pool_cfg()), create_model(ModelConfig(stem_channels=8, channels=[8], blocks=[1],
                                                                        kernels=[3], skip_kernels=[1], strides=[1]))
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    model.init_from_images(images)
    plain.init_from_images(images)
    assert model.stem.conv.weight.abs().sum() > 0 and torch.equal(model.stem.conv.weight[12:], -model.stem.conv.weight[:12])
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())


def test_airbench_model_options():
    """dirac init passes each conv's input through; frozen BatchNorm weights and their momentum; the scaled
    bias-free head; a valid-padded whitening stem floors the pooled sides (31 -> 15 -> 7 -> 3)."""
    from cifar_resnet.config import config_from_dict
    from cifar_resnet.models import final_feature_size

    cfg = config_from_dict({"model": {"block": "pool", "stem": "whiten", "stem_kernel": 2, "stem_channels": 24,
                                      "stem_padding": "valid", "channels": [8, 8, 8], "blocks": [1, 1, 1],
                                      "strides": [2, 2, 2], "init": "dirac", "zero_init_residual": False,
                                      "norm_frozen_weight": True, "norm_momentum": 0.4, "head_bias": False,
                                      "head_scale": 0.5}}).model
    net = create_model(cfg)
    assert final_feature_size(cfg) == 3
    conv = net.stages[1][1].conv  # 8 -> 8 channels, 3x3
    torch.testing.assert_close(conv.weight[:, :, 1, 1], torch.eye(8))
    assert conv.weight[:, :, 0].abs().sum() == 0
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.weight.requires_grad and m.momentum == 0.4 for m in norms)
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    features = net.pool(net.stages(net.stem(x))).flatten(1)
    torch.testing.assert_close(net(x), 0.5 * features @ net.fc.weight.T)
