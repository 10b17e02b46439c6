"""The configuration's sections: the dataclasses `ModelConfig`, `DataConfig` and `TrainConfig`, one field per
key of a configuration file's `model`, `data` and `train` sections, each declared with `option(...)` where its
values are limited (its choices, or its range). `config` reads files into them and checks every value once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


def option(default: Any, *, choices: Sequence[str] = (), label: str = "", low: float | None = None,
           high: float | None = None, above: bool = False,
           accepts: tuple[Callable[[Any], bool], str] | None = None) -> Any:
    """A dataclass field with its allowed values: one of `choices` (`label` names what it is in the error),
    or a number of at least `low` (above it if `above`) and below `high`; `accepts` is a (test, description)
    pair for an open set of values."""
    return field(default=default, metadata={"choices": tuple(choices), "label": label, "low": low, "high": high,
                                            "above": above, "accepts": accepts})


def _torch_optimizer(name: str) -> bool:
    """Whether `torch.optim.<name>` is an optimizer the engine can use: one that takes two parameter groups
    (weight decay on one) and a learning rate, and steps without a closure. Tried on two tiny tensors, so
    LBFGS (one group only), SparseAdam (sparse gradients only) and the abstract `Optimizer` are refused."""
    import torch  # only for names other than sgd and adamw: reading a configuration needs no torch

    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
        return False
    weights, bias = torch.ones(2, 2, requires_grad=True), torch.ones(2, requires_grad=True)
    try:
        optimizer = cls([{"params": [weights], "weight_decay": 1e-4}, {"params": [bias], "weight_decay": 0.0}], lr=0.1)
        (weights.sum() + bias.sum()).backward()
        optimizer.step()
    except Exception:
        return False
    return True


@dataclass
class ModelConfig:
    """The ResNet design variables. Lists have one entry per stage i."""

    # "basic": conv-BN-act-conv-BN, out = act(S(x) + F(x)); "preact": BN-act-conv twice, out = S(x) + F(x);
    # "bottleneck" (He et al. 2016): 1x1 conv to C_i, F_i x F_i conv (the stride), 1x1 conv to expansion * C_i, BN
    # after each, out = act(S(x) + F(x)); "preact_bottleneck": the same convs, each after BN-act; "pool" (airbench):
    # each stage is conv -> max-pool by its stride -> BN -> act, then B blocks out = x + act(BN(conv(x)))
    block: str = option("basic", choices=("basic", "preact", "bottleneck", "preact_bottleneck", "pool"),
                        label="block type ")
    expansion: int = option(4, low=1)  # bottleneck blocks: a stage outputs expansion * C_i channels
    # "conv": a trained conv; "whiten" (airbench): a frozen conv whose filters whiten the stem_kernel x stem_kernel
    # patches of the training images, each with its negative (stem_channels = 6 * stem_kernel^2), then act
    stem: str = option("conv", choices=("conv", "whiten"), label="stem ")
    stem_channels: int = 64  # channels of the stem conv that maps the 3-channel image
    stem_kernel: int = 3  # stem conv kernel (odd for "conv", any for "whiten"); the stem never downsamples
    channels: list[int] = field(default_factory=lambda: [64, 128, 256])  # C_i, channels of stage i
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2])  # B_i, residual blocks in stage i
    kernels: list[int] = field(default_factory=lambda: [3, 3, 3])  # F_i, conv kernel size (odd) in stage i
    skip_kernels: list[int] = field(default_factory=lambda: [1, 1, 1])  # K_i, projection-skip kernel (odd)
    strides: list[int] = field(default_factory=lambda: [1, 2, 2])  # stride of stage i's first block
    # S(x) where a block changes the shape: "projection", a K_i x K_i conv of its stride (+ BN after a post-activation
    # block); "zero_pad" (He et al. 2016's option A): every stride-th pixel, zero channels added on both sides, no
    # parameters; "zero_pad_end": the zero channels after x's
    shortcut: str = option("projection", choices=("projection", "zero_pad", "zero_pad_end"), label="shortcut ")
    se_reduction: int = option(0, low=0)  # squeeze-and-excitation on each residual branch, C_i / r hidden; 0 = off
    conv_bias: bool = False  # every conv has a bias (nn.Conv2d's default; redundant before BatchNorm)
    final_norm: bool = True  # pre-activation blocks: one BN + act before the pool (False: none, as kuangliu's)
    pool: int = 0  # P, pool kernel before the classifier; 0 = global pooling; floors as PyTorch's where P does not divide
    pool_stride: int = option(0, low=0)  # that pool's stride; 0 = P
    pool_type: str = option("avg", choices=("avg", "max"), label="pool type ")  # that pooling: average or max
    activation: str = option("relu", choices=("relu", "gelu", "silu"))
    block_dropout: float = option(0.0, low=0, high=1)  # dropout before each residual block's last conv (WRN's)
    pool_dropout: float = option(0.0, low=0, high=1)  # dropout on the last feature map, before the pool
    dropout: float = option(0.0, low=0, high=1)  # dropout before the classifier
    zero_init_residual: bool = True  # last BN of each residual branch starts at 0 (Goyal et al. 2017)
    # airbench's choices (Jordan 2024), off by default. "dirac": PyTorch's default init, then each conv's first
    # in_channels filters pass their input through, so every block starts near the identity; else kaiming normal
    init: str = option("kaiming", choices=("kaiming", "dirac"), label="init ")
    norm_frozen_weight: bool = False  # BatchNorm weights stay 1 and only their biases learn (the conv scales)
    norm_momentum: float = option(0.1, low=0, high=1, above=True)  # PyTorch's convention (airbench's 0.6 is 0.4)
    head_bias: bool = True  # the classifier's bias
    head_scale: float = option(1.0, low=0, above=True)  # the logits are multiplied by this (airbench: 1/9)
    # a whitening stem's padding: "same" keeps 32x32 maps, "valid" (airbench) gives 33 - stem_kernel; the
    # "pool" block's max-pools then floor odd sides (31 -> 15 -> 7 -> 3)
    stem_padding: str = option("same", choices=("same", "valid"), label="stem padding ")
    num_classes: int = 10  # CIFAR-10's; the reader refuses any other number


@dataclass
class DataConfig:
    """Where CIFAR-10 comes from and how training batches are augmented (on the GPU)."""

    root: str = ""  # folder holding cifar-10-batches-py; "" = $CIFAR10_ROOT, else ./data
    download: bool = True  # fetch the official archive when the files are absent
    holdout: int = option(0, low=0)  # last N training images held out as a validation set (for tuning); 0 = none
    train_subset: int = option(0, low=0)  # use only the first N training images (quick tests); 0 = all
    test_subset: int = option(0, low=0)  # evaluate on the first N test images (quick tests); 0 = all
    # random crop after reflect-padding by N pixels (= translate); 0 = off; a reflection needs N below 32
    crop_padding: int = option(4, low=0, high=32)
    flip: bool = True  # random horizontal flip
    flip_alternate: bool = False  # airbench's derandomised flip: random in epoch 1, then each image alternates
    cutout: int = option(0, low=0, high=33)  # side of the square zeroed at a random place in each image; 0 = off
    # autoaugment is its CIFAR-10 policy; per image, batched
    policy: str = option("none", choices=("none", "trivialaugment", "randaugment", "autoaugment"), label="policy ")
    # "batch": each training batch is augmented as it is drawn; "epoch" (airbench): the whole shuffled training
    # set is augmented at the start of each epoch and batches are slices of it (fewer, larger kernels; on a GPU
    # it holds the epoch as float32, 600 MB for CIFAR-10)
    augment_per: str = option("batch", choices=("batch", "epoch"), label="augment_per ")


@dataclass
class TrainConfig:
    """The training recipe."""

    epochs: int = option(30, low=1)  # with a time_budget, the most epochs
    # seconds of training to fill: the epochs (at most train.epochs) are fitted to this machine from the first
    # epoch's early steps, then refitted from the whole first epoch; metrics.json says how many ran; 0 = off
    time_budget: float = option(0.0, low=0)
    batch_size: int = option(512, low=1)
    optimizer: str = option("sgd", accepts=(lambda name: name.lower() in ("sgd", "adamw") or _torch_optimizer(name),
                                            "sgd, adamw or a torch.optim class name"))
    lr: float = option(0.2, low=0, above=True)  # peak learning rate
    momentum: float = option(0.9, low=0, high=1)  # SGD momentum (beta1 for Adam-type optimizers)
    nesterov: bool = True
    weight_decay: float = option(5e-4, low=0)
    decay_norm_and_bias: bool = False  # False: no weight decay on BatchNorm and bias parameters
    schedule: str = option("onecycle", choices=("onecycle", "cosine", "linear", "step", "constant"))
    warmup_epochs: float = option(0.0, low=0)  # linear warm-up (cosine, step, linear); onecycle uses pct_start
    pct_start: float = option(0.25, low=0, high=1, above=True)  # onecycle: share of training rising to the peak
    milestones: list[float] = field(default_factory=list)  # step: epochs where lr is multiplied by gamma
    gamma: float = option(0.1, low=0, above=True)
    label_smoothing: float = option(0.0, low=0, high=1)
    mixup_alpha: float = option(0.0, low=0)  # 0 = off
    cutmix_alpha: float = option(0.0, low=0)  # 0 = off; with both on, each batch uses one of the two
    ricap_beta: float = option(0.0, low=0)  # RICAP (Takahashi et al. 2018): four images patched into one; 0 = off
    sam_rho: float = option(0.0, low=0)  # SAM radius (Foret et al. 2021): two passes per step; 0 = off
    sam_adaptive: bool = False  # ASAM (Kwon et al. 2021): the radius scales with each weight's magnitude
    ema_decay: float = option(0.0, low=0, high=1)  # exponential moving average of the weights, per step; 0 = off
    # its warm-up (timm's ModelEmaV3): decay min(ema_decay, 1 - (1 + n)^-power) at the n-th update, so the
    # average starts as the weights and lags ~n^power steps; 0 = ema_decay from the start; 0.75 for ~10k steps
    ema_warmup_power: float = option(0.0, low=0)
    # autocast; auto is bf16 or fp16 on CUDA and fp32 on a CPU, where only bf16 autocasts (if the CPU has it natively)
    precision: str = option("auto", choices=("auto", "bf16", "fp16", "fp32"))
    channels_last: bool = True
    # torch.compile the training forward pass (the first steps compile it: ~45 s on two CPU cores, where it then
    # trains 1.5x faster, results/bench/cpu_compile.json; a time budget pays that once)
    compile: bool = False
    grad_clip: float = option(0.0, low=0)  # max gradient norm; 0 = off
    # test-time augmentation at the final evaluation
    tta: str = option("flip", choices=("none", "flip", "flip_translate"))
    eval_every: int = option(1, low=1)  # evaluate every N epochs (the last epoch is always evaluated)
    seed: int = option(0, low=0)  # below 2^63: torch's generators take no larger seed
    # airbench's optimisation (Jordan 2024), off by default. BatchNorm biases learn bias_lr_scale times faster;
    # their weight decay is divided by it, so that they shrink per step as the weights do (airbench: 64)
    bias_lr_scale: float = option(1.0, low=0, above=True)
    lr_start: float = option(0.0, low=0)  # onecycle: the first step's lr, as a share of the peak (airbench: 0.2)
    lr_end: float = option(0.0, low=0)  # onecycle: the last step's (airbench: 0.07)
    whiten_bias_epochs: float = option(0.0, low=0)  # a whitening stem's bias learns this long, then stays; 0 = always
    # lookahead (Zhang et al. 2019, as airbench): every k steps the weights and BatchNorm statistics move to a slow
    # copy that keeps decay^k * (t/T)^3 of itself at step t of T, and the last step ends on it; 0 = off
    lookahead_every: int = option(0, low=0)
    lookahead_decay: float = option(0.95, low=0, high=1)
