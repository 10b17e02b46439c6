"""Public designs of this assignment, each written as a configuration of the library and checked against a
reference written here from the paper or the design's description: the same trainable-parameter count and,
given the same weights (and BatchNorm statistics), the same outputs. Where a design has dropout, the two are
also compared in training mode from the same seed, which checks where the dropout sits."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_resnet.config import ConfigError, ModelConfig, load_config
from cifar_resnet.models import count_parameters, create_model, parameter_count

from conftest import ROOT


# ---- references -------------------------------------------------------------------------------------------
def conv3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)


class PaperBlock(nn.Module):
    """He et al. (2016), section 4.2: two 3x3 convs; where the shape changes, the shortcut is option A (every
    second pixel, zero channels: half on each side, or all after with `zeros_after`), or a 1x1 projection + BN."""

    def __init__(self, cin, cout, stride, shortcut="A", zeros_after=False, bias=False):
        super().__init__()
        self.conv1, self.bn1 = conv3(cin, cout, stride, bias), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3(cout, cout, 1, bias), nn.BatchNorm2d(cout)
        self.changes, self.stride, self.extra, self.zeros_after = stride != 1 or cin != cout, stride, cout - cin, zeros_after
        if self.changes and shortcut == "B":
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=bias), nn.BatchNorm2d(cout))

    def skip(self, x):
        if not self.changes:
            return x
        if hasattr(self, "shortcut"):
            return self.shortcut(x)
        x = x[:, :, ::self.stride, ::self.stride]
        before = 0 if self.zeros_after else self.extra // 2
        zeros = lambda n: x.new_zeros(x.shape[0], n, x.shape[2], x.shape[3])  # noqa: E731
        return torch.cat([zeros(before), x, zeros(self.extra - before)], dim=1)

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.skip(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR (He et al. 2016): a 3x3 conv of 16, three stages of n blocks at 16, 32 and 64
    channels, global average pooling, a linear classifier. `pool_dropout`: dropout on the last map."""

    def __init__(self, n, widths=(16, 32, 64), pool_dropout=0.0, **block):
        super().__init__()
        self.conv, self.bn = conv3(3, widths[0], bias=block.get("bias", False)), nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for cout, stride in zip(widths, (1, 2, 2)):
            for i in range(n):
                layers.append(PaperBlock(cin, cout, stride if i == 0 else 1, **block))
                cin = cout
        self.layers, self.fc, self.pool_dropout = nn.Sequential(*layers), nn.Linear(cin, 10), pool_dropout

    def forward(self, x):
        out = self.layers(F.relu(self.bn(self.conv(x))))
        out = F.dropout(out, self.pool_dropout, self.training) if self.pool_dropout else out
        return self.fc(out.mean((2, 3)))


class PreActBlock(nn.Module):
    """He et al. (2016b): BN-ReLU-conv twice; a projection (1x1, no BN) takes the pre-activated input. WRN
    (Zagoruyko and Komodakis 2016) adds dropout between the convs; SE (Hu et al. 2018) scales the branch."""

    def __init__(self, cin, cout, stride, dropout=0.0, se=0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv3(cout, cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.dropout = dropout

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        skip = self.shortcut(pre) if hasattr(self, "shortcut") else x
        out = F.relu(self.bn2(self.conv1(pre)))
        out = F.dropout(out, self.dropout, self.training) if self.dropout else out
        return self.conv2(out) + skip


class Bottleneck(nn.Module):
    """He et al. (2016)'s bottleneck, the stride in the 3x3 conv: 1x1 to `width`, 3x3, 1x1 to 4 x width, BN
    after each; the projection (1x1 + BN) wherever the shape changes. `se`: squeeze-and-excitation's r."""

    def __init__(self, cin, width, stride, se=0):
        super().__init__()
        cout = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.shortcut(x) if hasattr(self, "shortcut") else x))


class PreActBottleneck(nn.Module):
    """He et al. (2016b)'s ResNet-164 block: BN-ReLU before each of the three convs, 4 x width out."""

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = 4 * width
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, width, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(width), conv3(width, width, stride)
        self.bn3, self.conv3 = nn.BatchNorm2d(width), nn.Conv2d(width, cout, 1, bias=False)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        skip = self.shortcut(pre) if hasattr(self, "shortcut") else x
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return self.conv3(F.relu(self.bn3(out))) + skip


class SEBasicBlock(nn.Module):
    """SE-ResNet's basic block (Hu et al. 2018): the residual branch BN(conv(relu(BN(conv(x))))) is scaled per
    channel by sigmoid(W2 relu(W1 mean(branch))), W1 to C // r features (here 1x1 convs with biases, as in
    kuangliu/pytorch-cifar's SENet18), before the shortcut is added."""

    def __init__(self, cin, cout, stride, r=16):
        super().__init__()
        self.conv1, self.bn1 = conv3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3(cout, cout), nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.fc1, self.fc2 = nn.Conv2d(cout, cout // r, 1), nn.Conv2d(cout // r, cout, 1)

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        weight = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(out, 1)))))
        return F.relu(out * weight + (self.shortcut(x) if hasattr(self, "shortcut") else x))


class FourStageNet(nn.Module):
    """The CIFAR ResNet-18/34/50 family (kuangliu/pytorch-cifar and the class projects built on it): a 3x3 stem
    (with BN-ReLU unless `preact`), stages at strides 1, 2, 2(, 2), a pool, a linear classifier; a
    pre-activation network with `final_norm` ends in BN-ReLU. `pool`: (kernel, stride) of an average pool,
    None for global pooling."""

    def __init__(self, block, widths, blocks, *, stem=64, expansion=1, preact=False, final_norm=False, pool=None,
                 side=None, **options):
        super().__init__()
        self.stem = conv3(3, stem)
        self.bn = None if preact else nn.BatchNorm2d(stem)
        layers, cin = [], stem
        for i, (width, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(block(cin, width, 2 if i and not j else 1, **options))
                cin = width * expansion
        self.layers = nn.Sequential(*layers)
        self.final = nn.BatchNorm2d(cin) if final_norm else None
        self.pool = pool
        pooled = 1 if pool is None else (side - pool[0]) // pool[1] + 1
        self.fc = nn.Linear(cin * pooled * pooled, 10)

    def forward(self, x):
        out = self.stem(x)
        out = self.layers(out if self.bn is None else F.relu(self.bn(out)))
        out = out if self.final is None else F.relu(self.final(out))
        out = out.mean((2, 3)) if self.pool is None else F.avg_pool2d(out, *self.pool).flatten(1)
        return self.fc(out)


# ---- comparison ---------------------------------------------------------------------------------------------
def same_weights(reference: nn.Module, ours: nn.Module) -> None:
    """Give the reference random BatchNorm weights, biases and statistics (its layers' weights are random already),
    then give `ours` the same values, matched in the order both register them (compared by size: a 1x1 conv and
    a linear layer hold the same weights)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in reference.state_dict().items():
            if tensor.is_floating_point() and tensor.dim() == 1:
                scale = name.endswith(("running_var", "weight"))
                tensor.copy_(torch.rand_like(tensor) + 0.5 if scale else torch.randn_like(tensor) * 0.1)
    source, target = list(reference.state_dict().values()), ours.state_dict()
    assert len(source) == len(target), "the two networks hold different numbers of tensors"
    for (name, value), tensor in zip(target.items(), source):
        assert value.numel() == tensor.numel(), f"{name}: {tuple(value.shape)} against {tuple(tensor.shape)}"
    ours.load_state_dict({name: tensor.reshape(value.shape) for (name, value), tensor in zip(target.items(), source)})


def assert_same_network(reference: nn.Module, cfg: ModelConfig, count: int, *, train: bool = False) -> None:
    """The configuration's network has `count` trainable parameters, as the reference, and computes what it does."""
    assert count_parameters(reference) == parameter_count(cfg) == count
    ours = create_model(cfg, budget=None)
    same_weights(reference, ours)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for mode in (False, True) if train else (False,):
            reference.train(mode), ours.train(mode)
            torch.manual_seed(2)
            expected = reference(x)
            torch.manual_seed(2)
            assert torch.allclose(ours(x), expected, rtol=1e-4, atol=1e-4), f"outputs differ (training mode: {mode})"


def cifar_resnet(n: int, **changes) -> ModelConfig:
    """ResNet-(6n+2) of He et al. (2016), option A shortcuts."""
    return ModelConfig(**{"block": "basic", "stem_channels": 16, "channels": [16, 32, 64], "blocks": [n] * 3,
                          "strides": [1, 2, 2], "shortcut": "zero_pad", **changes})


# ---- the designs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, count", [(3, 269_722), (5, 464_154), (9, 853_018)], ids=["resnet20", "resnet32", "resnet56"])
def test_the_papers_cifar_resnets_with_option_a_shortcuts(n, count):
    assert_same_network(CifarResNet(n), cifar_resnet(n), count)


def test_zero_padding_after_the_channels_is_the_other_public_option_a():
    assert_same_network(CifarResNet(3, zeros_after=True), cifar_resnet(3, shortcut="zero_pad_end"), 269_722)
    with pytest.raises(AssertionError, match="outputs differ"):  # the placement of the zeros is seen in the outputs
        assert_same_network(CifarResNet(3, zeros_after=True), cifar_resnet(3), 269_722)


def test_a_projection_costs_its_weights_and_bn():
    projection = cifar_resnet(3, shortcut="projection")
    assert parameter_count(projection) - parameter_count(cifar_resnet(3)) == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    assert_same_network(CifarResNet(3, shortcut="B"), projection, 272_474)


def test_conv_biases_everywhere():
    biases = 16 + 6 * (16 + 32 + 64) + 32 + 64  # the stem, six convs in each stage, two projections
    assert_same_network(CifarResNet(3, shortcut="B", bias=True),
                        cifar_resnet(3, shortcut="projection", conv_bias=True), 272_474 + biases)


def test_preact_resnet18_without_the_final_bn_relu():
    cfg = ModelConfig(block="preact", stem_channels=64, channels=[64, 128, 256, 512], blocks=[2, 2, 2, 2],
                      kernels=[3] * 4, skip_kernels=[1] * 4, strides=[1, 2, 2, 2], pool=4, final_norm=False)
    assert_same_network(FourStageNet(PreActBlock, [64, 128, 256, 512], [2, 2, 2, 2], preact=True, pool=(4, 4),
                                     side=4), cfg, 11_171_146)
    assert parameter_count(ModelConfig(**{**cfg.__dict__, "final_norm": True})) == 11_171_146 + 2 * 512


def test_the_best_public_class_project_with_its_pool_of_5_on_the_8x8_map():
    """davidchiii/deep-miniproject's ModifiedResNet18: blocks 4/4/3 at 64/128/256, F.avg_pool2d(out, 5)."""
    cfg = ModelConfig(stem_channels=64, channels=[64, 128, 256], blocks=[4, 4, 3], pool=5)
    assert_same_network(FourStageNet(PaperBlock, [64, 128, 256], [4, 4, 3], pool=(5, 5), side=8, shortcut="B"),
                        cfg, 4_697_162)
    with pytest.raises(AssertionError, match="outputs differ"):  # global pooling: the same count, other outputs
        assert_same_network(FourStageNet(PaperBlock, [64, 128, 256], [4, 4, 3], pool=(5, 5), side=8, shortcut="B"),
                            ModelConfig(stem_channels=64, channels=[64, 128, 256], blocks=[4, 4, 3]), 4_697_162)


def test_a_pool_kernel_and_stride_given_apart():
    cfg = ModelConfig(stem_channels=32, channels=[32, 64, 128], blocks=[1, 1, 1], pool=4, pool_stride=2)
    reference = FourStageNet(PaperBlock, [32, 64, 128], [1, 1, 1], stem=32, pool=(4, 2), side=8, shortcut="B")
    assert_same_network(reference, cfg, count_parameters(reference))
    assert create_model(cfg).fc.in_features == 128 * 3 * 3  # windows at 0, 2 and 4 of the 8x8 map


def test_bottleneck_resnet50():
    cfg = ModelConfig(block="bottleneck", stem_channels=64, channels=[64, 128, 256, 512], blocks=[3, 4, 6, 3],
                      kernels=[3] * 4, skip_kernels=[1] * 4, strides=[1, 2, 2, 2])
    assert_same_network(FourStageNet(Bottleneck, [64, 128, 256, 512], [3, 4, 6, 3], expansion=4), cfg, 23_520_842)


def test_preact_bottleneck_resnet164():
    cfg = ModelConfig(block="preact_bottleneck", stem_channels=16, channels=[16, 32, 64], blocks=[18, 18, 18])
    reference = FourStageNet(PreActBottleneck, [16, 32, 64], [18, 18, 18], stem=16, expansion=4, preact=True,
                             final_norm=True)
    assert_same_network(reference, cfg, 1_703_258)


def test_se_resnet18():
    cfg = ModelConfig(stem_channels=64, channels=[64, 128, 256, 512], blocks=[2, 2, 2, 2], kernels=[3] * 4,
                      skip_kernels=[1] * 4, strides=[1, 2, 2, 2], se_reduction=16)
    reference = FourStageNet(SEBasicBlock, [64, 128, 256, 512], [2, 2, 2, 2])
    assert_same_network(reference, cfg, count_parameters(reference))
    se = sum(2 * c * (c // 16) + c + c // 16 for c in (64, 64, 128, 128, 256, 256, 512, 512))
    assert parameter_count(cfg) == parameter_count(ModelConfig(**{**cfg.__dict__, "se_reduction": 0})) + se


def test_wide_resnet_16_4_with_dropout_between_the_convs():
    cfg = ModelConfig(block="preact", stem_channels=16, channels=[64, 128, 256], blocks=[2, 2, 2], block_dropout=0.3)
    reference = FourStageNet(PreActBlock, [64, 128, 256], [2, 2, 2], stem=16, preact=True, final_norm=True,
                             dropout=0.3)
    assert_same_network(reference, cfg, 2_748_890, train=True)


def test_dropout_on_the_last_map_before_the_pool():
    assert_same_network(CifarResNet(3, pool_dropout=0.2), cifar_resnet(3, pool_dropout=0.2), 269_722, train=True)
    with pytest.raises(AssertionError, match="training mode: True"):  # after the pool it drops other values
        assert_same_network(CifarResNet(3, pool_dropout=0.2), cifar_resnet(3, dropout=0.2), 269_722, train=True)


# ---- what cannot be built is said ---------------------------------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    ({"expansion": 2}, "model.expansion: 2 applies to bottleneck, preact_bottleneck blocks only, not basic"),
    ({"final_norm": False}, "model.final_norm: False applies to preact, preact_bottleneck blocks only"),
    ({"block": "pool", "stem": "whiten", "stem_kernel": 2, "stem_channels": 24, "shortcut": "zero_pad"},
     "model.shortcut: 'zero_pad' applies to basic, preact, bottleneck, preact_bottleneck blocks only, not pool"),
    ({"shortcut": "zero_pad", "stem_channels": 128}, "model.shortcut: zero_pad only adds channels, but stage 1 narrows 128 to 64"),
])
def test_options_where_they_cannot_apply_are_one_line_errors(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        create_model(ModelConfig(**changes))


def test_summary_tabulates_a_network_over_the_budget_and_names_the_stage_to_cut(tmp_path):
    (tmp_path / "preact18.yaml").write_text(
        "name: preact18\nmodel:\n  block: preact\n  channels: [64, 128, 256, 512]\n  blocks: [2, 2, 2, 2]\n"
        "  kernels: [3, 3, 3, 3]\n  skip_kernels: [1, 1, 1, 1]\n  strides: [1, 2, 2, 2]\n  final_norm: false\n")
    out = subprocess.run([sys.executable, "-m", "cifar_resnet", "summary", "--config", str(tmp_path / "preact18.yaml")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "Conv2d-1" in out.stdout and "Total params: 11,171,146" in out.stdout and "[-1, 512, 4, 4]" in out.stdout
    assert "stage 4 (512 channels, 2 blocks, 4x4 maps) holds 8,392,192 of the 11,171,146 parameters (75%)" in out.stdout
    assert out.stderr.count("\n") == 1 and "11,171,146 trainable parameters, over the budget of 5,000,000" in out.stderr
    assert "stage 4 (512 channels" in out.stderr


def test_a_file_without_a_model_section_says_which_network_it_builds(tmp_path):
    (tmp_path / "recipe.yaml").write_text("name: recipe\ntrain:\n  epochs: 3\n")
    with pytest.warns(UserWarning, match=r"has no model section, so it builds the default network: basic blocks, "
                                         r"stem 64, C 64-128-256, B 2-2-2"):
        load_config(tmp_path / "recipe.yaml")
    out = subprocess.run([sys.executable, "-m", "cifar_resnet", "summary", "--config", str(tmp_path / "recipe.yaml")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"cifar-resnet: note: {tmp_path / 'recipe.yaml'} has no model section")
