"""The ResNet family, built from a `ModelConfig`, and the 5,000,000-parameter budget.

Reads top-down: conv helper, skip connection, the residual blocks (basic, pre-activation, and airbench's
conv-pool stage entry with its one-conv block), the whitening stem, the stage builder, the network, then
`create_model`, the only way the rest of the library builds a model (it checks the budget).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ConfigError, ModelConfig, check_options
from .formats import excerpt

PARAMETER_BUDGET = 5_000_000
INPUT_SIZE = 32  # CIFAR-10 images are 32x32
WHITEN_IMAGES = 5000  # training images whose patches set a whitening stem (airbench: 5,000)

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}  # model.activation's choices, in config.py


class OverBudgetError(ValueError):
    """A model with more trainable parameters than the budget allows."""


def conv(in_channels: int, out_channels: int, *, kernel: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free 'same' convolution (BatchNorm follows, so a bias would be redundant)."""
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)


def skip_connection(in_channels: int, out_channels: int, *, stride: int, kernel: int, norm: bool) -> nn.Module:
    """S(x): the identity where shapes allow, otherwise a K x K strided projection (with BN if `norm`)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    projection = conv(in_channels, out_channels, kernel=kernel, stride=stride)
    return nn.Sequential(projection, nn.BatchNorm2d(out_channels)) if norm else projection


class BasicBlock(nn.Module):
    """The original block (He et al. 2016): F(x) = BN(conv(act(BN(conv(x))))), out = act(S(x) + F(x))."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, kernel: int, skip_kernel: int,
                 activation: type[nn.Module]) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, out_channels, kernel=kernel, stride=stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv(out_channels, out_channels, kernel=kernel)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = activation()
        self.skip = skip_connection(in_channels, out_channels, stride=stride, kernel=skip_kernel, norm=True)

    def zero_init_residual(self) -> None:
        """Make F(x) start at zero, so the block starts as its skip connection."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(self.skip(x) + out)


class PreActBlock(nn.Module):
    """The pre-activation block (He et al. 2016b): out = S(x) + conv(act(BN(conv(act(BN(x))))))."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, kernel: int, skip_kernel: int,
                 activation: type[nn.Module]) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv(in_channels, out_channels, kernel=kernel, stride=stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv(out_channels, out_channels, kernel=kernel)
        self.act = activation()
        self.skip = skip_connection(in_channels, out_channels, stride=stride, kernel=skip_kernel, norm=False)
        self.projects = not isinstance(self.skip, nn.Identity)

    def zero_init_residual(self) -> None:
        """Make F(x) start at zero. The last conv, not a BN: a zero BN weight feeds ReLU'(0) = 0, no gradient."""
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        # A projection skip takes the normalised input, as in the paper; the identity takes x itself.
        shortcut = self.skip(pre) if self.projects else x
        out = self.conv1(pre)
        out = self.conv2(self.act(self.bn2(out)))
        return shortcut + out


class PoolEntry(nn.Module):
    """A "pool" stage's entry (airbench, Jordan 2024): act(BN(max-pool(conv(x)))), the pool's size the stage's
    stride. Pooling before BN leaves BN and the activation a quarter of the work."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, kernel: int,
                 activation: type[nn.Module]) -> None:
        super().__init__()
        self.conv = conv(in_channels, out_channels, kernel=kernel)
        self.pool = nn.MaxPool2d(stride) if stride > 1 else nn.Identity()
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pool(self.conv(x))))


class ConvBlock(nn.Module):
    """A "pool" stage's residual block: out = x + act(BN(conv(x))), one conv around an identity skip."""

    def __init__(self, channels: int, *, kernel: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.conv = conv(channels, channels, kernel=kernel)
        self.bn = nn.BatchNorm2d(channels)
        self.act = activation()

    def zero_init_residual(self) -> None:
        """Make the branch start at act(0) = 0 (relu, gelu and silu all map 0 to 0): the block is the identity."""
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.bn(self.conv(x)))


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
    """Stem, stages of residual blocks, average pool of size P, linear classifier."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        validate_model_config(cfg)
        activation = _ACTIVATIONS[cfg.activation]
        block = {"basic": BasicBlock, "preact": PreActBlock, "pool": ConvBlock}[cfg.block]
        preact = cfg.block == "preact"

        if cfg.stem == "whiten":
            self.stem = WhiteningStem(cfg.stem_kernel, activation, padding=cfg.stem_padding)
        else:  # a pre-activation network's stem is a bare conv: the first block normalises and activates
            stem = [conv(3, cfg.stem_channels, kernel=cfg.stem_kernel)]
            if not preact:
                stem += [nn.BatchNorm2d(cfg.stem_channels), activation()]
            self.stem = nn.Sequential(*stem)

        stages, in_channels = [], cfg.stem_channels
        for out_channels, blocks, stride, kernel, skip_kernel in zip(cfg.channels, cfg.blocks, cfg.strides,
                                                                     cfg.kernels, cfg.skip_kernels):
            stages.append(self._make_stage(block, in_channels, out_channels, blocks=blocks, stride=stride,
                                           kernel=kernel, skip_kernel=skip_kernel, activation=activation))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)

        # Pre-activation blocks end un-normalised: one BN + activation before pooling.
        self.final_norm = nn.Sequential(nn.BatchNorm2d(in_channels), activation()) if preact else nn.Identity()
        side = final_feature_size(cfg)
        if cfg.pool_type == "max":
            self.pool = nn.AdaptiveMaxPool2d(1) if cfg.pool == 0 else nn.MaxPool2d(cfg.pool)
        else:
            self.pool = nn.AdaptiveAvgPool2d(1) if cfg.pool == 0 else nn.AvgPool2d(cfg.pool)
        pooled = 1 if cfg.pool == 0 else side // cfg.pool
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(in_channels * pooled * pooled, cfg.num_classes, bias=cfg.head_bias)
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
                if isinstance(m, (BasicBlock, PreActBlock, ConvBlock)):
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
    def _make_stage(block: type[nn.Module], in_channels: int, out_channels: int, *, blocks: int, stride: int,
                    kernel: int, skip_kernel: int, activation: type[nn.Module]) -> nn.Sequential:
        if block is ConvBlock:  # a "pool" stage: its entry changes width and size, B one-conv blocks follow
            layers = [PoolEntry(in_channels, out_channels, stride=stride, kernel=kernel, activation=activation)]
            return nn.Sequential(*layers, *[block(out_channels, kernel=kernel, activation=activation)
                                            for _ in range(blocks)])
        same = {"kernel": kernel, "skip_kernel": skip_kernel, "activation": activation}
        layers = [block(in_channels, out_channels, stride=stride, **same)]
        layers += [block(out_channels, out_channels, stride=1, **same) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stages(x)
        x = self.final_norm(x)
        x = self.pool(x).flatten(1)
        logits = self.fc(self.dropout(x))
        return logits * self.head_scale if self.head_scale != 1 else logits


def final_feature_size(cfg: ModelConfig) -> int:
    """Side of the last stage's feature map for 32x32 inputs."""
    side = INPUT_SIZE - (cfg.stem_kernel - 1 if cfg.stem == "whiten" and cfg.stem_padding == "valid" else 0)
    for stride in cfg.strides:
        side //= stride
    return side


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
    if cfg.norm_frozen_weight and cfg.zero_init_residual and cfg.block != "preact":
        raise ConfigError(f"model.zero_init_residual: a {cfg.block} block zeroes its last BatchNorm weight, which "
                          "norm_frozen_weight would keep at 0 for good; set zero_init_residual: false")
    if cfg.stem_padding == "same" and INPUT_SIZE % math.prod(cfg.strides):
        raise ConfigError(f"model.strides: their product must divide {INPUT_SIZE}, got {excerpt(cfg.strides)}")
    if final_feature_size(cfg) < 1:
        raise ConfigError(f"model.strides: {excerpt(cfg.strides)} shrink the images to nothing; use fewer stages")
    side = final_feature_size(cfg)
    if cfg.pool < 0 or (cfg.pool and side % cfg.pool):
        raise ConfigError(f"model.pool: P={cfg.pool} must divide the final {side}x{side} feature map "
                          "(or be 0 for global average pooling)")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# The largest design values a configuration may give: the parameters are counted by building the network (on
# the meta device), which values far beyond any network under the budget would overflow or take minutes over.
MAX_DESIGN = {"channels": 65_536, "stem_channels": 65_536, "blocks": 64, "kernels": 31, "skip_kernels": 31,
              "strides": INPUT_SIZE, "stem_kernel": 31, "pool": INPUT_SIZE}
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
    check_sizes(cfg)
    with torch.device("meta"):
        return count_parameters(ResNet(cfg))


def create_model(cfg: ModelConfig, budget: int | None = PARAMETER_BUDGET) -> ResNet:
    """Build the network for `cfg`; raise `OverBudgetError` if it exceeds `budget` trainable parameters."""
    n = parameter_count(cfg)  # counted first without allocating: an oversized config fails instantly
    if budget is not None and n > budget:
        raise OverBudgetError(f"the model has {n:,} trainable parameters, over the budget of {budget:,}: "
                              "reduce model.channels or model.blocks")
    return ResNet(cfg)
