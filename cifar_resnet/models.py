"""The ResNet family, built from a `ModelConfig`, and the 5,000,000-parameter budget.

Reads top-down: the whitening stem, the network (stem, stages of the blocks in `blocks.py`, final norm, pool,
classifier) and its stage builder, the map sizes, the checks of a design, then the counts: where the parameters
sit, the layer table, and `create_model`, the only way the rest of the library builds a model (it checks the
budget).
"""

from __future__ import annotations

import contextlib
import io
import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BLOCKS, BOTTLENECKS, PREACT, BlockDesign, ConvBlock, PoolEntry, conv
from .config import ConfigError, ModelConfig, check_options
from .formats import excerpt

PARAMETER_BUDGET = 5_000_000
INPUT_SIZE = 32  # CIFAR-10 images are 32x32
WHITEN_IMAGES = 5000  # training images whose patches set a whitening stem (airbench: 5,000)

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}  # model.activation's choices, in config.py


class OverBudgetError(ValueError):
    """A model with more trainable parameters than the budget allows."""


class WhiteningStem(nn.Module):
    """A frozen k x k conv that whitens image patches (airbench; Page 2018's "bag of tricks"), then act.

    `init_whitening` sets its filters from training images: the eigenvectors of the patches' second-moment
    matrix (the images are normalised, so about their covariance) scaled by 1/sqrt(eigenvalue + eps), each
    followed by its negative so that the activation keeps both signs. Only its bias trains. "same" zero
    padding (for an even k, one more row and column at the bottom and right) keeps 32x32 maps; "valid" has none.
    """

    def __init__(self, kernel: int, activation: type[nn.Module], *, padding: str = "same") -> None:
        super().__init__()
        before, after = (kernel - 1) // 2, kernel // 2  # 'same' padding; torch's padding="same" warns for even k
        self.pad = nn.ZeroPad2d((before, after, before, after)) if padding == "same" else nn.Identity()
        self.conv = nn.Conv2d(3, 2 * 3 * kernel * kernel, kernel, bias=True)
        self.conv.weight.requires_grad_(False)
        nn.init.zeros_(self.conv.bias)
        self.act = activation()

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the filters from normalised float images (N, 3, H, W); a few thousand are enough (airbench: 5,000)."""
        k = self.conv.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]).reshape(-1, 3, k, k)
        self.conv.weight.copy_(torch.cat([filters, -filters]).to(self.conv.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(self.pad(x)))


class ResNet(nn.Module):
    """Stem, stages of residual blocks, (pre-activation: a final BN + act), pool of kernel P, linear classifier."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        validate_model_config(cfg)
        activation = _ACTIVATIONS[cfg.activation]
        design = BlockDesign(activation, shortcut=cfg.shortcut, bias=cfg.conv_bias, se_reduction=cfg.se_reduction,
                             dropout=cfg.block_dropout)
        preact = cfg.block in PREACT

        if cfg.stem == "whiten":
            self.stem = WhiteningStem(cfg.stem_kernel, activation, padding=cfg.stem_padding)
        else:  # a pre-activation network's stem is a bare conv: the first block normalises and activates
            stem = [conv(3, cfg.stem_channels, kernel=cfg.stem_kernel, bias=cfg.conv_bias)]
            if not preact:
                stem += [nn.BatchNorm2d(cfg.stem_channels), activation()]
            self.stem = nn.Sequential(*stem)

        stages, in_channels = [], cfg.stem_channels
        for width, out_channels, blocks, stride, kernel, skip_kernel in zip(
                cfg.channels, stage_outputs(cfg), cfg.blocks, cfg.strides, cfg.kernels, cfg.skip_kernels):
            stages.append(self._make_stage(cfg.block, in_channels, out_channels, width=width, blocks=blocks,
                                           stride=stride, kernel=kernel, skip_kernel=skip_kernel, design=design))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)

        # Pre-activation blocks end un-normalised: one BN + activation before pooling (unless final_norm is off).
        final_norm = preact and cfg.final_norm
        self.final_norm = nn.Sequential(nn.BatchNorm2d(in_channels), activation()) if final_norm else nn.Identity()
        self.pool_dropout = cfg.pool_dropout
        kernel, stride = cfg.pool, cfg.pool_stride or cfg.pool  # a window that does not fit is left out, as torch floors
        if cfg.pool_type == "max":
            self.pool = nn.AdaptiveMaxPool2d(1) if cfg.pool == 0 else nn.MaxPool2d(kernel, stride)
        else:
            self.pool = nn.AdaptiveAvgPool2d(1) if cfg.pool == 0 else nn.AvgPool2d(kernel, stride)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(in_channels * pooled_side(cfg) ** 2, cfg.num_classes, bias=cfg.head_bias)
        self.head_scale = cfg.head_scale
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = cfg.norm_momentum
                m.weight.requires_grad_(not cfg.norm_frozen_weight)
        self.init, self.zero_init = cfg.init, cfg.zero_init_residual
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.weight.requires_grad:
                if self.init == "dirac":  # airbench: near the identity at the start, +accuracy on short schedules
                    nn.init.dirac_(m.weight[:m.in_channels])
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if self.zero_init:
            # Each block starts as its skip connection: +0.2-0.3% for ResNets (Goyal et al. 2017, sec. 5.1).
            for m in self.modules():
                if isinstance(m, tuple(BLOCKS.values())):
                    m.zero_init_residual()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh weights and statistics in place, drawn as a new network's are: a compiled copy stays valid (the
        speed benchmark trains one network many times). `init_from_images` then sets a whitening stem."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()  # a BatchNorm's running statistics too
        if isinstance(self.stem, WhiteningStem):
            nn.init.zeros_(self.stem.conv.bias)
        self._init_weights()

    def init_from_images(self, images: torch.Tensor) -> None:
        """Set what is computed from the training data (normalised images): a whitening stem's filters. A resumed
        or reloaded network then loads the same from its weights."""
        if isinstance(self.stem, WhiteningStem):
            self.stem.init_whitening(images)

    @staticmethod
    def _make_stage(block: str, in_channels: int, out_channels: int, *, width: int, blocks: int, stride: int,
                    kernel: int, skip_kernel: int, design: BlockDesign) -> nn.Sequential:
        if block == "pool":  # a "pool" stage: its entry changes width and size, B one-conv blocks follow
            layers = [PoolEntry(in_channels, out_channels, stride=stride, kernel=kernel, design=design)]
            return nn.Sequential(*layers, *[ConvBlock(out_channels, kernel=kernel, design=design)
                                            for _ in range(blocks)])
        same = {"kernel": kernel, "skip_kernel": skip_kernel, "design": design}
        if block in BOTTLENECKS:
            same["width"] = width
        cls = BLOCKS[block]
        layers = [cls(in_channels, out_channels, stride=stride, **same)]
        layers += [cls(out_channels, out_channels, stride=1, **same) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stages(x)
        x = self.final_norm(x)
        if self.pool_dropout:
            x = F.dropout(x, self.pool_dropout, self.training)
        x = self.pool(x).flatten(1)
        logits = self.fc(self.dropout(x))
        return logits * self.head_scale if self.head_scale != 1 else logits


def stage_outputs(cfg: ModelConfig) -> list[int]:
    """Channels each stage outputs: C_i, or expansion x C_i for bottleneck blocks (C_i is their inner width)."""
    return [c * cfg.expansion for c in cfg.channels] if cfg.block in BOTTLENECKS else list(cfg.channels)


def final_feature_size(cfg: ModelConfig) -> int:
    """Side of the last stage's feature map for 32x32 inputs."""
    side = INPUT_SIZE - (cfg.stem_kernel - 1 if cfg.stem == "whiten" and cfg.stem_padding == "valid" else 0)
    for stride in cfg.strides:
        side //= stride
    return side


def pooled_side(cfg: ModelConfig) -> int:
    """Side of the map the classifier sees: 1 for global pooling, else what PyTorch's pool of kernel P and
    stride `pool_stride` (0: P) leaves, floored: P = 5 on an 8x8 map leaves 1x1 (its last 3 rows and columns unused)."""
    if cfg.pool == 0:
        return 1
    return (final_feature_size(cfg) - cfg.pool) // (cfg.pool_stride or cfg.pool) + 1


# Options that only some block types use, the value meaning "unused", and those blocks.
_WITH_SKIPS = tuple(b for b in BLOCKS if b != "pool")  # a "pool" stage's blocks have one conv and an identity skip
_BLOCK_OPTIONS = {"expansion": (4, BOTTLENECKS), "final_norm": (True, PREACT), "shortcut": ("projection", _WITH_SKIPS),
                  "block_dropout": (0.0, _WITH_SKIPS)}


def validate_model_config(cfg: ModelConfig) -> None:
    """Raise `ConfigError` naming the first inconsistent design variable, or the first value its `option`
    declaration does not allow (`create_model` is also called with a `ModelConfig` that no reader checked)."""
    check_options(cfg, "model")
    n = len(cfg.channels)
    if n == 0:
        raise ConfigError("model.channels: at least one stage is needed")
    for key in ("blocks", "kernels", "skip_kernels", "strides"):
        if len(getattr(cfg, key)) != n:
            raise ConfigError(f"model.{key}: has {len(getattr(cfg, key))} entries but model.channels has {n}; "
                              "give one value per stage")
    for key in ("channels", "blocks", "strides"):
        if any(v < 1 for v in getattr(cfg, key)):
            raise ConfigError(f"model.{key}: every entry must be at least 1, got {getattr(cfg, key)}")
    for key, (unused, blocks) in _BLOCK_OPTIONS.items():
        if getattr(cfg, key) != unused and cfg.block not in blocks:
            raise ConfigError(f"model.{key}: {excerpt(getattr(cfg, key))} applies to {', '.join(blocks)} blocks only, "
                              f"not {cfg.block}; leave it out (or {unused!r})")
    if cfg.shortcut != "projection":
        widths = [cfg.stem_channels, *stage_outputs(cfg)]
        for i, (before, after) in enumerate(zip(widths, widths[1:])):
            if after < before:
                raise ConfigError(f"model.shortcut: {cfg.shortcut} only adds channels, but stage {i + 1} narrows "
                                  f"{before} to {after}; use projection, or widen it")
    if cfg.stem == "whiten" and cfg.stem_channels != 6 * cfg.stem_kernel ** 2:
        raise ConfigError(f"model.stem_channels: a whitening stem of kernel {cfg.stem_kernel} has "
                          f"{6 * cfg.stem_kernel ** 2} channels (each of the {3 * cfg.stem_kernel ** 2} patch directions "
                          f"and its negative), got {cfg.stem_channels}; set stem_channels: {6 * cfg.stem_kernel ** 2}")
    if cfg.stem_kernel < 1:
        raise ConfigError(f"model.stem_kernel: must be at least 1, got {cfg.stem_kernel}")
    stem_kernel = [cfg.stem_kernel] if cfg.stem == "conv" else []  # a whitening stem may be even (airbench: 2)
    for key, values in (("kernels", cfg.kernels), ("skip_kernels", cfg.skip_kernels), ("stem_kernel", stem_kernel)):
        if any(k < 1 or k % 2 == 0 for k in values):
            raise ConfigError(f"model.{key}: kernel sizes must be odd and positive (to keep 'same' padding), "
                              f"got {excerpt(values)}")
    if cfg.stem_padding == "valid" and (cfg.stem != "whiten" or cfg.block != "pool"):
        raise ConfigError("model.stem_padding: valid is for a whitening stem before pool blocks (whose max-pools "
                          f"floor odd sides), got stem {cfg.stem} and block {cfg.block}; set stem_padding: same")
    if cfg.norm_frozen_weight and cfg.zero_init_residual and cfg.block not in PREACT:
        raise ConfigError(f"model.zero_init_residual: a {cfg.block} block zeroes its last BatchNorm weight, which "
                          "norm_frozen_weight would keep at 0 for good; set zero_init_residual: false")
    if cfg.stem_padding == "same" and INPUT_SIZE % math.prod(cfg.strides):
        raise ConfigError(f"model.strides: their product must divide {INPUT_SIZE}, got {excerpt(cfg.strides)}")
    if final_feature_size(cfg) < 1:
        raise ConfigError(f"model.strides: {excerpt(cfg.strides)} shrink the images to nothing; use fewer stages")
    side = final_feature_size(cfg)
    if not 0 <= cfg.pool <= side:
        raise ConfigError(f"model.pool: P={cfg.pool} must lie in 1..{side}, the final {side}x{side} feature map "
                          "(or be 0 for global pooling)")
    if cfg.pool_stride and not cfg.pool:
        raise ConfigError(f"model.pool_stride: {cfg.pool_stride} needs a pool kernel model.pool (global pooling has "
                          "no stride); set pool, or leave pool_stride out")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# The largest design values a configuration may give: the parameters are counted by building the network (on
# the meta device), which values far beyond any network under the budget would overflow or take minutes over.
MAX_DESIGN = {"channels": 65_536, "stem_channels": 65_536, "blocks": 64, "kernels": 31, "skip_kernels": 31,
              "strides": INPUT_SIZE, "stem_kernel": 31, "pool": INPUT_SIZE, "pool_stride": INPUT_SIZE, "expansion": 64}
MAX_STAGES, MAX_BLOCKS = 8, 128  # stages, and residual blocks in all


def check_sizes(cfg: ModelConfig) -> None:
    """`ConfigError` for a design value beyond `MAX_DESIGN` (either sign), more than `MAX_STAGES` entries in a
    per-stage list, more than `MAX_BLOCKS` blocks, or a stem of no channels: checked before a network is built."""
    for key, limit in MAX_DESIGN.items():
        value = getattr(cfg, key)
        if isinstance(value, list) and len(value) > MAX_STAGES:
            raise ConfigError(f"model.{key}: at most {MAX_STAGES} stages, got {len(value)} entries")
        if any(abs(v) > limit for v in (value if isinstance(value, list) else [value])):
            raise ConfigError(f"model.{key}: at most {limit:,} per entry (the most this library builds), "
                              f"got {excerpt(value)}")
    if sum(cfg.blocks) > MAX_BLOCKS:
        raise ConfigError(f"model.blocks: at most {MAX_BLOCKS} blocks in all, got {sum(cfg.blocks)}")
    if cfg.stem_channels < 1:
        raise ConfigError(f"model.stem_channels: must be at least 1, got {cfg.stem_channels}")


def parameter_count(cfg: ModelConfig) -> int:
    """Trainable parameters of the network `cfg` describes, over budget or not, counted on the meta device
    (shapes only: nothing is allocated, so an oversized design costs nothing); `ConfigError` if inconsistent."""
    return count_parameters(_meta_network(cfg))


def _meta_network(cfg: ModelConfig) -> ResNet:
    check_sizes(cfg)
    with torch.device("meta"):
        return ResNet(cfg)


def parameters_by_part(cfg: ModelConfig) -> list[tuple[str, int]]:
    """Where the trainable parameters of `cfg`'s network sit, counted on the meta device: (part, count) for the
    stem, each stage ("stage 2: 128 channels, 2 blocks, 16x16 maps") and the head (final norm and classifier)."""
    model, side = _meta_network(cfg), INPUT_SIZE
    parts = [("stem", count_parameters(model.stem))]
    for i, (c, b, stride, stage) in enumerate(zip(cfg.channels, cfg.blocks, cfg.strides, model.stages)):
        side //= stride
        parts.append((f"stage {i + 1}: {c} channels, {b} blocks, {side}x{side} maps", count_parameters(stage)))
    return parts + [("classifier", count_parameters(model.final_norm) + count_parameters(model.fc))]


def heaviest_stage(cfg: ModelConfig) -> str:
    """The stage that holds the most parameters, in words: "stage 3 (256 channels, 2 blocks, 8x8 maps) holds
    2,099,712 of the 2,777,674 parameters (76%)": where to cut a network over the budget."""
    parts = parameters_by_part(cfg)
    name, count = max(parts[1:-1], key=lambda part: part[1])
    total = sum(n for _, n in parts)
    return f"{name.replace(': ', ' (', 1)}) holds {count:,} of the {total:,} parameters ({count / max(total, 1):.0%})"


def layer_table(cfg: ModelConfig) -> str:
    """torchsummary's table of `cfg`'s network (each layer's output shape and parameters, then the totals),
    over budget or not: the network is built and run on the meta device, shapes only, so it costs nothing."""
    from torchsummary import summary

    model = _meta_network(cfg).eval()
    model.register_forward_pre_hook(lambda module, inputs: tuple(x.to("meta") for x in inputs))
    with contextlib.redirect_stdout(io.StringIO()) as table:
        summary(model, (3, INPUT_SIZE, INPUT_SIZE), device="cpu")  # its input is made on the CPU: the hook moves it
    return table.getvalue()


def check_budget(cfg: ModelConfig, budget: int | None = PARAMETER_BUDGET) -> int:
    """The trainable parameters of `cfg`'s network; `OverBudgetError` over `budget`, naming the stage to cut."""
    n = parameter_count(cfg)  # counted without allocating: an oversized config fails instantly
    if budget is not None and n > budget:
        raise OverBudgetError(f"the model has {n:,} trainable parameters, over the budget of {budget:,}: reduce "
                              f"model.channels or model.blocks; {heaviest_stage(cfg)}")
    return n


def create_model(cfg: ModelConfig, budget: int | None = PARAMETER_BUDGET) -> ResNet:
    """Build the network for `cfg`; raise `OverBudgetError` if it exceeds `budget` trainable parameters."""
    check_budget(cfg, budget)
    return ResNet(cfg)
