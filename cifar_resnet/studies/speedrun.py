"""Time to 94%: an airbench-style recipe for a residual network under the 5M-parameter budget.

`train_speedrun(cfg, train, test, device, seed)` trains one network and returns its test accuracy and the
seconds it took. `Speedrun` keeps one network (compiled once) and both splits on the device for repeated
timed runs; `benchmarks/speed.py` races it against airbench (Jordan 2024, arXiv:2404.00498).

The ideas are airbench94's, written for this library: a frozen 2x2 patch-whitening first conv set from the
training images; stages conv -> 2x2 max-pool -> BN -> GELU, each followed here by a residual block
x + GELU(BN(conv(x))) (airbench94 has no skip connections; airbench96 adds them the same way); BatchNorm
weights frozen at 1 and biases at 64x the learning rate; Nesterov SGD on a short triangular schedule;
label smoothing 0.2; lookahead; alternating flip and 2-pixel translation; 6-view test-time augmentation.

Learning rate and weight decay are in airbench's decoupled units: `lr` is per 1024 examples and divided by
the Nesterov step gain 1 + 1/(1 - momentum), and `weight_decay` is the per-step shrinkage for 1024
examples whatever the lr, so each can be tuned alone (myrtle.ai, "How to train your ResNet" part 5).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, config_path, dataclass_from_dict, read_yaml
from ..data.cifar10 import CIFAR10Split, MEAN, STD
from ..data.gpu_loader import crop_flip
from ..runtime import autocast, resolve_precision
from ..evaluation.evaluate import tta_views
from ..models import OverBudgetError, PARAMETER_BUDGET, count_parameters

WHITEN_IMAGES = 5000  # training images whose patches set the whitening conv (airbench: 5,000)
EVAL_BATCH = 2000  # test images per forward pass; 10,000 / 2,000 keeps every batch the same shape
_FLIPS = ("alternate", "random", "none")


@dataclass
class SpeedrunConfig:
    """A fast-training recipe; `configs/fast94.yaml` and `configs/fast95.yaml` are the presets."""

    name: str = "fast94"
    # network
    widths: list[int] = field(default_factory=lambda: [64, 256, 256])  # channels of each stage (each halves the side)
    whiten_kernel: int = 2  # side of the whitening patches; the conv has 2 * 3 * k^2 filters (each with its negative)
    bn_momentum: float = 0.4  # PyTorch convention: weight of each batch in the running statistics (airbench's 0.6 = 1 - 0.4)
    head_scale: float = 1 / 9  # multiplies the logits of the bias-free linear head
    # optimisation
    epochs: float = 10.0
    batch_size: int = 1024
    lr: float = 11.5  # per 1024 examples, decoupled from momentum (see the module docstring)
    momentum: float = 0.85  # Nesterov
    weight_decay: float = 0.0153  # per 1024 examples, decoupled from the learning rate
    bias_lr_scale: float = 64.0  # BatchNorm biases learn this much faster (their weight decay is not scaled)
    label_smoothing: float = 0.2
    whiten_bias_epochs: float = 3.0  # the whitening conv's bias trains this long, then stays
    lr_start: float = 0.2  # triangular schedule, as fractions of the peak: start, ...
    lr_peak_at: float = 0.23  # ... share of the steps spent rising to the peak, ...
    lr_end: float = 0.07  # ... and the value at the last step
    lookahead_every: int = 5  # steps between lookahead updates
    lookahead_decay: float = 0.95  # per step; the slow weights keep decay^every * (t / T)^3 of themselves
    # data
    translate: int = 2  # random translation (reflect-padded crop) by up to this many pixels
    flip: str = "alternate"  # alternate: each image mirrored on every other epoch (airbench) | random | none
    tta: str = "flip_translate"  # none | flip | flip_translate (6 views)
    # execution
    precision: str = "fp16"  # fp16 | bf16 | fp32 autocast on CUDA; the CPU computes in fp32
    channels_last: bool = True
    compile: bool = True  # torch.compile the network (CUDA only); compilation happens in `Speedrun.warmup`


def validate_speedrun_config(cfg: SpeedrunConfig) -> None:
    """Raise `ConfigError` naming the first value that cannot work."""
    if not cfg.widths or min(cfg.widths) < 1:
        raise ConfigError(f"widths: give at least one positive stage width, got {cfg.widths}")
    side = 32 - cfg.whiten_kernel + 1
    for _ in cfg.widths:
        side //= 2
    if cfg.whiten_kernel < 1 or side < 1:
        raise ConfigError(f"widths/whiten_kernel: {len(cfg.widths)} stages after a {cfg.whiten_kernel}x"
                          f"{cfg.whiten_kernel} whitening conv shrink 32x32 images to nothing; use fewer stages")
    if cfg.epochs <= 0 or cfg.batch_size < 1 or cfg.lookahead_every < 1:
        raise ConfigError(f"epochs, batch_size and lookahead_every must be positive, got {cfg.epochs}, "
                          f"{cfg.batch_size}, {cfg.lookahead_every}")
    if not 0 < cfg.lr_peak_at < 1:
        raise ConfigError(f"lr_peak_at: a share of the steps strictly between 0 and 1, got {cfg.lr_peak_at}")
    if cfg.flip not in _FLIPS:
        raise ConfigError(f"flip: unknown {cfg.flip!r}; choose one of {', '.join(_FLIPS)}")
    if cfg.translate < 0:
        raise ConfigError(f"translate: must be 0 or more pixels, got {cfg.translate}")
    tta_views(torch.zeros(1, 3, 4, 4), cfg.tta)  # raises ConfigError for an unknown mode
    autocast(torch.device("cpu"), cfg.precision)  # likewise for the precision


def load_speedrun_config(path: str | Path) -> SpeedrunConfig:
    """Read a YAML recipe; unknown keys and wrong types are errors that name the key."""
    path = config_path(path)
    data = read_yaml(path, f"speedrun configuration not found: {path} (presets: fast94, fast95)")
    try:
        cfg = dataclass_from_dict(SpeedrunConfig, data, "")
        validate_speedrun_config(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return cfg


# ---- the network -------------------------------------------------------------------------------------

def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


def batch_norm(channels: int, momentum: float) -> nn.BatchNorm2d:
    """BatchNorm with its weight frozen at 1: the following conv can scale, so only the bias learns."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=momentum)
    norm.weight.requires_grad_(False)
    return norm


class ResidualBlock(nn.Module):
    """out = x + GELU(BN(conv(x))): an identity skip around one 3x3 conv."""

    def __init__(self, channels: int, bn_momentum: float) -> None:
        super().__init__()
        self.branch = nn.Sequential(conv3x3(channels, channels), batch_norm(channels, bn_momentum), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def make_stage(in_channels: int, out_channels: int, bn_momentum: float) -> nn.Sequential:
    """conv -> 2x2 max-pool -> BN -> GELU -> residual block. Pooling before BN leaves it a quarter of the work."""
    return nn.Sequential(conv3x3(in_channels, out_channels), nn.MaxPool2d(2), batch_norm(out_channels, bn_momentum),
                         nn.GELU(), ResidualBlock(out_channels, bn_momentum))


class SpeedrunNet(nn.Module):
    """Frozen whitening conv, GELU, the stages, global max-pool, bias-free linear head times `head_scale`."""

    def __init__(self, cfg: SpeedrunConfig) -> None:
        super().__init__()
        k = cfg.whiten_kernel
        self.whiten = nn.Conv2d(3, 2 * 3 * k * k, k, bias=True)  # 'valid': 32x32 -> (33-k)x(33-k)
        self.whiten.weight.requires_grad_(False)  # set from the data by `init_whitening`, never trained
        self.act = nn.GELU()
        widths = [self.whiten.out_channels, *cfg.widths]
        self.stages = nn.Sequential(*[make_stage(a, b, cfg.bn_momentum) for a, b in zip(widths, widths[1:])])
        self.pool = nn.AdaptiveMaxPool2d(1)  # airbench94's MaxPool2d(3) on the final 3x3 map
        self.head = nn.Linear(cfg.widths[-1], 10, bias=False)
        self.head_scale = cfg.head_scale
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Fresh weights, in place (a compiled copy of the network stays valid)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
                m.reset_parameters()
            if isinstance(m, nn.Conv2d) and m is not self.whiten:
                # Dirac init: the first in_channels filters pass their input through, so every stage starts
                # near the identity (airbench, +accuracy at short schedules).
                nn.init.dirac_(m.weight[:m.in_channels])
        nn.init.zeros_(self.whiten.bias)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Make the first conv whiten k x k patches of `images` (normalised, (N, 3, H, W)).

        Its filters are the eigenvectors of the patches' second-moment matrix (the data are normalised, so
        about their covariance) scaled by 1/sqrt(eigenvalue + eps), each followed by its negative so that
        the GELU after it keeps both signs.
        """
        k = self.whiten.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).reshape(-1, 3, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))
        x = self.stages(x)
        x = self.pool(x).flatten(1)
        return self.head(x) * self.head_scale


def create_speedrun_model(cfg: SpeedrunConfig, budget: int | None = PARAMETER_BUDGET) -> SpeedrunNet:
    """Build the network; raise `OverBudgetError` above `budget` trainable parameters."""
    validate_speedrun_config(cfg)
    with torch.device("meta"):  # count without allocating
        n = count_parameters(SpeedrunNet(cfg))
    if budget is not None and n > budget:
        raise OverBudgetError(f"{cfg.name}: {n:,} trainable parameters, over the budget of {budget:,}: reduce widths")
    return SpeedrunNet(cfg)


# ---- training ----------------------------------------------------------------------------------------

class Lookahead:
    """Every few steps, pull the weights (and BatchNorm statistics) toward a slow copy and reset them to it."""

    def __init__(self, net: nn.Module) -> None:
        self.live = [t for t in net.state_dict().values() if t.is_floating_point()]
        self.slow = [t.clone() for t in self.live]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        torch._foreach_lerp_(self.slow, self.live, 1 - decay)
        torch._foreach_copy_(self.live, self.slow)


def triangle(step: int, total: int, cfg: SpeedrunConfig) -> float:
    """Learning-rate multiplier: linear from lr_start up to 1 at lr_peak_at of the steps, then down to lr_end."""
    peak = int(cfg.lr_peak_at * total)
    if step < peak:
        return cfg.lr_start + (1 - cfg.lr_start) * step / peak
    return 1 + (cfg.lr_end - 1) * (step - peak) / max(total - peak, 1)


def stopwatch(device: torch.device) -> Callable[[], float]:
    """Start timing now, the device idle (CUDA events on a GPU); call the result for the seconds since."""
    if device.type != "cuda":
        start = time.perf_counter()
        return lambda: time.perf_counter() - start
    torch.cuda.synchronize(device)
    begin = torch.cuda.Event(enable_timing=True)
    begin.record()

    def seconds() -> float:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1000

    return seconds


class Speedrun:
    """One recipe, its network and both splits on `device`, ready for repeated timed runs.

    Images stay uint8 (N, 3, 32, 32) on the device. Each epoch translates the whole training set in one
    gather (the loader's `crop_flip`), flips it, normalises it once to the compute dtype, and shuffles it;
    steps then take contiguous slices. `GpuLoader` is not used: its flip is random rather than alternating
    and it augments per batch, a dozen small kernels per step where this costs one slice.
    """

    def __init__(self, cfg: SpeedrunConfig, train: CIFAR10Split, test: CIFAR10Split,
                 device: torch.device | str) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        cuda = self.device.type == "cuda"
        self.precision = resolve_precision(cfg.precision, self.device)  # auto: the device's native choice
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)
        self.train_images, self.train_labels = self._to_device(train)
        self.test_images, self.test_labels = self._to_device(test)
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)
        self.generator = torch.Generator(device=self.device)
        self.net = create_speedrun_model(cfg).to(self.device)
        if cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.params = count_parameters(self.net)
        self.compiled = cfg.compile and cuda
        # Static shapes: training batches and test batches each keep one shape, so each compiles once.
        self.forward = torch.compile(self.net, dynamic=False) if self.compiled else self.net
        self.steps_per_epoch = len(self.train_labels) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"batch_size: {cfg.batch_size} is more than the {len(self.train_labels)} training images")
        self.total_steps = math.ceil(self.steps_per_epoch * cfg.epochs)
        if cuda:
            torch.backends.cudnn.benchmark = True

    def _to_device(self, split: CIFAR10Split) -> tuple[torch.Tensor, torch.Tensor]:
        images = split.images if split.images.shape[1] == 3 else split.images.permute(0, 3, 1, 2)
        return images.contiguous().to(self.device), split.labels.to(self.device)

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> normalised, in the compute dtype and memory format."""
        x = ((images.float() - self.mean) / self.std).to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last if self.cfg.channels_last else torch.contiguous_format)

    def _epoch_data(self, epoch: int, base_flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set for one epoch: translated, flipped, normalised, shuffled."""
        cfg = self.cfg
        images = crop_flip(self.train_images, cfg.translate, cfg.flip == "random", self.generator)
        if cfg.flip == "alternate":
            # Each image is mirrored on every other epoch, from a random start: over two epochs it is seen
            # both ways, which random flips only achieve on average (airbench: "alternating flip").
            flip = base_flip ^ bool(epoch % 2)
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        order = torch.randperm(len(images), device=self.device, generator=self.generator)
        return self._normalize(images[order]), self.train_labels[order]

    def _optimizer(self) -> tuple[torch.optim.SGD, list[float]]:
        cfg = self.cfg
        lr = cfg.lr / (1024 * (1 + 1 / (1 - cfg.momentum)))  # PyTorch's lr: per example, undo Nesterov's gain
        wd = cfg.weight_decay * cfg.batch_size / (1024 * (1 + 1 / (1 - cfg.momentum)))
        norm_biases = [m.bias for m in self.net.modules() if isinstance(m, nn.BatchNorm2d)]
        taken = {id(p) for p in norm_biases} | {id(self.net.whiten.bias)}
        weights = [p for p in self.net.parameters() if p.requires_grad and id(p) not in taken]
        bias_lr = lr * cfg.bias_lr_scale
        # PyTorch multiplies weight decay by the lr: dividing by it makes the shrinkage lr-independent.
        groups = [{"params": [self.net.whiten.bias], "lr": lr, "weight_decay": wd / lr},
                  {"params": norm_biases, "lr": bias_lr, "weight_decay": wd / bias_lr},
                  {"params": weights, "lr": lr, "weight_decay": wd / lr}]
        fused = self.device.type == "cuda"  # one kernel per group instead of several per parameter
        return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True, fused=fused), [lr, bias_lr, lr]

    def train_step(self, optimizer: torch.optim.SGD, x: torch.Tensor, y: torch.Tensor, lrs: list[float]) -> None:
        """One step at the given per-group learning rates. The loss is summed, as the decoupled lr assumes."""
        with autocast(self.device, self.precision):
            logits = self.forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing, reduction="sum")
        loss.backward()
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """(accuracy, accuracy with the recipe's TTA) on the test split, from one pass over the views."""
        self.net.eval()
        layout = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        plain, averaged = [], []
        for images in self.test_images.split(EVAL_BATCH):
            views = tta_views(self._normalize(images), self.cfg.tta)
            with autocast(self.device, self.precision):
                # Same layout for every view: a compiled network then needs a single graph for all of them.
                logits = [self.forward(v.contiguous(memory_format=layout)).float() for v, _ in views]
            plain.append(logits[0])  # the first view is the image itself
            averaged.append(sum(w * out for out, (_, w) in zip(logits, views)))
        accuracy = lambda out: (torch.cat(out).argmax(1) == self.test_labels).float().mean().item()
        return accuracy(plain), accuracy(averaged)

    def run(self, seed: int) -> dict:
        """Train from fresh weights and evaluate. `seconds` covers the whitening init, every training step and
        the final test-time-augmented evaluation (what airbench times), with the device synchronised."""
        cfg = self.cfg
        torch.manual_seed(seed)
        self.generator.manual_seed(seed)
        self.net.reset()
        self.net.train()
        optimizer, base_lrs = self._optimizer()
        whiten_steps = round(self.steps_per_epoch * cfg.whiten_bias_epochs)
        base_flip = torch.rand(len(self.train_labels), device=self.device, generator=self.generator) < 0.5

        elapsed = stopwatch(self.device)
        self.net.init_whitening(self._normalize(self.train_images[:WHITEN_IMAGES]))
        lookahead = Lookahead(self.net)
        step = 0
        for epoch in range(math.ceil(cfg.epochs)):
            images, labels = self._epoch_data(epoch, base_flip)
            for i in range(min(self.steps_per_epoch, self.total_steps - step)):
                batch = slice(i * cfg.batch_size, (i + 1) * cfg.batch_size)
                factor = triangle(step, self.total_steps, cfg)
                # The whitening bias is frozen by a zero lr rather than requires_grad: no recompilation.
                lrs = [base_lrs[0] * factor * (step < whiten_steps), base_lrs[1] * factor, base_lrs[2] * factor]
                self.train_step(optimizer, images[batch], labels[batch], lrs)
                step += 1
                if step % cfg.lookahead_every == 0:
                    lookahead.update(cfg.lookahead_decay ** cfg.lookahead_every * (step / self.total_steps) ** 3)
        lookahead.update(1.0)  # end on the slow weights
        acc, acc_tta = self.evaluate()
        seconds = elapsed()
        return {"acc": acc, "acc_tta": acc_tta, "seconds": seconds, "params": self.params, "seed": seed,
                "epochs": cfg.epochs, "compiled": self.compiled}

    def warmup(self) -> dict:
        """One full untimed run, with a seed no timed run uses: it compiles the network for training and for
        evaluation and lets cuDNN pick its kernels, so later runs measure training alone."""
        return self.run(seed=2**31 - 1)


def train_speedrun(cfg: SpeedrunConfig, train_split: CIFAR10Split, test_split: CIFAR10Split,
                   device: torch.device | str, seed: int) -> dict:
    """Train `cfg` once and return {acc, acc_tta, seconds, params, ...}; on CUDA a warm-up run comes first,
    so `seconds` excludes compilation and autotuning."""
    speedrun = Speedrun(cfg, train_split, test_split, device)
    if speedrun.device.type == "cuda":
        speedrun.warmup()
    return speedrun.run(seed)


def speedrun_override(cfg: SpeedrunConfig, **changes) -> SpeedrunConfig:
    """A checked copy of `cfg` with some fields replaced (e.g. a tiny network for a smoke run)."""
    cfg = dataclass_from_dict(SpeedrunConfig, {**dataclasses.asdict(cfg), **changes}, "")
    validate_speedrun_config(cfg)
    return cfg
