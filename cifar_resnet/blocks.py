"""The building blocks of the ResNet family (`models.ResNet` puts them together): the conv helper, the skip
connections (a projection, or the zero padding of He et al.'s CIFAR ResNets), squeeze-and-excitation, the
residual blocks (basic, pre-activation, bottleneck and pre-activation bottleneck, each with what `BlockDesign`
sets), and airbench's conv-pool stage entry with its one-conv block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def conv(in_channels: int, out_channels: int, *, kernel: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """A 'same' convolution, bias-free unless `bias` (BatchNorm follows, so a bias would be redundant)."""
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=bias)


@dataclass(frozen=True)
class BlockDesign:
    """What every residual block of a network shares: the `ModelConfig` options beside the per-stage lists."""

    activation: type[nn.Module]
    shortcut: str = "projection"  # model.shortcut: projection, zero_pad or zero_pad_end
    bias: bool = False  # model.conv_bias
    se_reduction: int = 0  # model.se_reduction; 0 = no squeeze-and-excitation
    dropout: float = 0.0  # model.block_dropout, before the block's last conv

    def squeeze_excite(self, channels: int) -> SqueezeExcite | None:
        """The branch's squeeze-and-excitation, or None: an option that is off adds no layer (nor a row to the
        layer table, nor a draw from the random generator that initialises the network)."""
        return SqueezeExcite(channels, self.se_reduction) if self.se_reduction else None


class ZeroPadShortcut(nn.Module):
    """He et al. (2016)'s option A, the shortcut of their CIFAR ResNets: every `stride`-th pixel of x, then zero
    channels up to `out_channels`, half before and half after x's (as akamaster/pytorch_resnet_cifar10) or all
    after them (`end`, as fb.resnet.torch). No parameters."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, end: bool) -> None:
        super().__init__()
        extra = out_channels - in_channels
        before = 0 if end else extra // 2
        self.stride, self.padding = stride, (0, 0, 0, 0, before, extra - before)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::self.stride, ::self.stride], self.padding)


def skip_connection(in_channels: int, out_channels: int, *, stride: int, kernel: int, norm: bool,
                    design: BlockDesign) -> nn.Module:
    """S(x): the identity where shapes allow; otherwise, by `design.shortcut`, a K x K projection of that stride
    (with BN if `norm`; padded by K // 2, so any odd K keeps the residual branch's map; K^2 C_in C_out weights)
    or the parameter-free zero padding of the channels."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if design.shortcut != "projection":
        return ZeroPadShortcut(in_channels, out_channels, stride=stride, end=design.shortcut == "zero_pad_end")
    projection = conv(in_channels, out_channels, kernel=kernel, stride=stride, bias=design.bias)
    return nn.Sequential(projection, nn.BatchNorm2d(out_channels)) if norm else projection


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) of a residual branch: x * sigmoid(fc2(relu(fc1(mean of x over the
    map)))), fc1 to max(1, C // reduction) features; both with biases, 2 C h + C + h parameters."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * scale[:, :, None, None]


def _excite(branch: torch.Tensor, se: SqueezeExcite | None) -> torch.Tensor:
    return branch if se is None else se(branch)


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout where p > 0, as a function: where it is off, the block has no layer for it."""
    return F.dropout(x, p, training) if p else x


class BasicBlock(nn.Module):
    """The original block (He et al. 2016): F(x) = BN(conv(act(BN(conv(x))))), out = act(S(x) + F(x))."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, kernel: int, skip_kernel: int,
                 design: BlockDesign) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, out_channels, kernel=kernel, stride=stride, bias=design.bias)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv(out_channels, out_channels, kernel=kernel, bias=design.bias)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = design.activation()
        self.skip = skip_connection(in_channels, out_channels, stride=stride, kernel=skip_kernel, norm=True,
                                    design=design)
        self.se, self.dropout = design.squeeze_excite(out_channels), design.dropout

    def zero_init_residual(self) -> None:
        """Make F(x) start at zero, so the block starts as its skip connection."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(_dropout(out, self.dropout, self.training)))
        return self.act(self.skip(x) + _excite(out, self.se))


class PreActBlock(nn.Module):
    """The pre-activation block (He et al. 2016b): out = S(x) + conv(act(BN(conv(act(BN(x))))))."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, kernel: int, skip_kernel: int,
                 design: BlockDesign) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv(in_channels, out_channels, kernel=kernel, stride=stride, bias=design.bias)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv(out_channels, out_channels, kernel=kernel, bias=design.bias)
        self.act = design.activation()
        self.skip = skip_connection(in_channels, out_channels, stride=stride, kernel=skip_kernel, norm=False,
                                    design=design)
        self.projects, self.pads = isinstance(self.skip, nn.Conv2d), isinstance(self.skip, ZeroPadShortcut)
        self.se, self.dropout = design.squeeze_excite(out_channels), design.dropout

    def zero_init_residual(self) -> None:
        """Make F(x) start at zero. The last conv, not a BN: a zero BN weight feeds ReLU'(0) = 0, no gradient."""
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        # A projection takes the normalised input, as in the paper; zero padding takes x, and the identity is x.
        shortcut = self.skip(pre) if self.projects else self.skip(x) if self.pads else x
        out = self.act(self.bn2(self.conv1(pre)))
        out = self.conv2(_dropout(out, self.dropout, self.training))
        return shortcut + _excite(out, self.se)


class Bottleneck(nn.Module):
    """The bottleneck block (He et al. 2016; the stride in the F x F conv, as torchvision and kuangliu/pytorch-cifar):
    1x1 conv to `width`, F x F conv, 1x1 conv to `out_channels`, each followed by BN (and act but the last);
    out = act(S(x) + F(x))."""

    def __init__(self, in_channels: int, out_channels: int, *, width: int, stride: int, kernel: int,
                 skip_kernel: int, design: BlockDesign) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, width, kernel=1, bias=design.bias)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv(width, width, kernel=kernel, stride=stride, bias=design.bias)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv(width, out_channels, kernel=1, bias=design.bias)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.act = design.activation()
        self.skip = skip_connection(in_channels, out_channels, stride=stride, kernel=skip_kernel, norm=True,
                                    design=design)
        self.se, self.dropout = design.squeeze_excite(out_channels), design.dropout

    def zero_init_residual(self) -> None:
        """Make F(x) start at zero, so the block starts as its skip connection."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(_dropout(out, self.dropout, self.training)))
        return self.act(self.skip(x) + _excite(out, self.se))


class PreActBottleneck(nn.Module):
    """The pre-activation bottleneck (He et al. 2016b, their ResNet-164): the same three convs, each after BN and
    act; out = S(x) + F(x), a projection taking the normalised input."""

    def __init__(self, in_channels: int, out_channels: int, *, width: int, stride: int, kernel: int,
                 skip_kernel: int, design: BlockDesign) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv(in_channels, width, kernel=1, bias=design.bias)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv(width, width, kernel=kernel, stride=stride, bias=design.bias)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv(width, out_channels, kernel=1, bias=design.bias)
        self.act = design.activation()
        self.skip = skip_connection(in_channels, out_channels, stride=stride, kernel=skip_kernel, norm=False,
                                    design=design)
        self.projects, self.pads = isinstance(self.skip, nn.Conv2d), isinstance(self.skip, ZeroPadShortcut)
        self.se, self.dropout = design.squeeze_excite(out_channels), design.dropout

    def zero_init_residual(self) -> None:
        """Make F(x) start at zero: the last conv, as in `PreActBlock`."""
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        shortcut = self.skip(pre) if self.projects else self.skip(x) if self.pads else x
        out = self.act(self.bn2(self.conv1(pre)))
        out = self.act(self.bn3(self.conv2(out)))
        out = self.conv3(_dropout(out, self.dropout, self.training))
        return shortcut + _excite(out, self.se)


class PoolEntry(nn.Module):
    """A "pool" stage's entry (airbench, Jordan 2024): act(BN(max-pool(conv(x)))), the pool's size the stage's
    stride. Pooling before BN leaves BN and the activation a quarter of the work."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, kernel: int, design: BlockDesign) -> None:
        super().__init__()
        self.conv = conv(in_channels, out_channels, kernel=kernel, bias=design.bias)
        self.pool = nn.MaxPool2d(stride) if stride > 1 else nn.Identity()
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = design.activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pool(self.conv(x))))


class ConvBlock(nn.Module):
    """A "pool" stage's residual block: out = x + act(BN(conv(x))), one conv around an identity skip."""

    def __init__(self, channels: int, *, kernel: int, design: BlockDesign) -> None:
        super().__init__()
        self.conv = conv(channels, channels, kernel=kernel, bias=design.bias)
        self.bn = nn.BatchNorm2d(channels)
        self.act = design.activation()
        self.se = design.squeeze_excite(channels)

    def zero_init_residual(self) -> None:
        """Make the branch start at act(0) = 0 (relu, gelu and silu all map 0 to 0): the block is the identity."""
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _excite(self.act(self.bn(self.conv(x))), self.se)


BLOCKS = {"basic": BasicBlock, "preact": PreActBlock, "bottleneck": Bottleneck, "preact_bottleneck": PreActBottleneck,
          "pool": ConvBlock}  # model.block's choices, in config.py
BOTTLENECKS = ("bottleneck", "preact_bottleneck")  # blocks whose C_i is the inner width, expansion x C_i their output
PREACT = ("preact", "preact_bottleneck")  # blocks that leave their output un-normalised
