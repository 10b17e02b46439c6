"""Run configuration: dataclasses that map one-to-one onto the YAML files in `configs/`.

A configuration file has three sections, `model`, `data` and `train`, plus a `name`. Every key must be
a field of the matching dataclass and have its type: unknown keys and wrong types are errors that name
the key's dotted path, so a typo never silently falls back to a default. An option's allowed values (its
choices, or its range) are declared beside the field with `option(...)` and checked once, when a
configuration is read (`check_options`); the modules that use an option rely on that.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from .formats import excerpt


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says which key and why."""


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

    # "basic": conv-BN-act-conv-BN, out = act(S(x) + F(x)); "preact": BN-act-conv twice; "pool" (airbench):
    # each stage is conv -> max-pool by its stride -> BN -> act, then B blocks out = x + act(BN(conv(x)))
    block: str = option("basic", choices=("basic", "preact", "pool"), label="block type ")
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
    pool: int = 0  # P, pool kernel before the classifier; 0 = global pooling
    pool_type: str = option("avg", choices=("avg", "max"), label="pool type ")  # that pooling: average or max
    activation: str = option("relu", choices=("relu", "gelu", "silu"))
    dropout: float = option(0.0, low=0, high=1)  # dropout before the classifier
    zero_init_residual: bool = True  # last BN of each residual branch starts at 0 (Goyal et al. 2017)
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


@dataclass
class TrainConfig:
    """The training recipe."""

    epochs: int = option(30, low=1)
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
    compile: bool = False  # torch.compile the model (CUDA only)
    grad_clip: float = option(0.0, low=0)  # max gradient norm; 0 = off
    # test-time augmentation at the final evaluation
    tta: str = option("flip", choices=("none", "flip", "flip_translate"))
    eval_every: int = option(1, low=1)  # evaluate every N epochs (the last epoch is always evaluated)
    seed: int = option(0, low=0)  # below 2^63: torch's generators take no larger seed


@dataclass
class Config:
    """A whole run: the network, the data and the recipe."""

    name: str = "run"
    selected_on_test: bool = False  # was any choice in this recipe made by looking at test accuracy?
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _check_type(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {excerpt(value)}")
        (item,) = typing.get_args(hint)
        return [_check_type(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {excerpt(value)} is none of {hint}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{path}: expected null, got {excerpt(value)}")
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 2**1023:  # beyond what a float holds
            raise ConfigError(f"{path}: must be a finite number, got {excerpt(value)}")
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{path}: expected {hint.__name__}, got {value!r}")
    if hint in (int, float, str, bool):
        if not isinstance(value, hint):
            raise ConfigError(f"{path}: expected {hint.__name__}, got {excerpt(value)}")
        if hint is float and not math.isfinite(value):  # .nan and .inf: no recipe has them, and they diverge
            raise ConfigError(f"{path}: must be a finite number, got {value!r}")
        if hint is int and not -2**63 <= value < 2**63:  # torch's int64: a larger one overflows at the first batch
            raise ConfigError(f"{path}: must be below 2^63 (what torch's integers hold), got {excerpt(value)}")
        if hint is str and "\0" in value:  # no name or path may hold one
            raise ConfigError(f"{path}: must not hold a NUL character, got {excerpt(value)}")
        return value
    if dataclasses.is_dataclass(hint):
        return dataclass_from_dict(hint, value, path)
    raise ConfigError(f"{path}: unsupported type {hint}")  # pragma: no cover - a bug in a dataclass


def dataclass_from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types; errors name the key under `path`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {excerpt(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        shown = key if isinstance(key, str) and len(key) <= 60 else excerpt(key)  # a key may be a whole document
        dotted = f"{path}.{shown}" if path else shown
        if key not in known:
            raise ConfigError(f"unknown key '{dotted}'; known keys here: {', '.join(known)}")
        kwargs[key] = _check_type(value, hints[key], dotted)
    return cls(**kwargs)


def declared(key: str) -> dict:
    """What `option` declared for the dotted `key` of a `Config` ("train.tta"): choices, label, low, ..."""
    section, name = key.split(".")
    return {f.name: f.metadata for f in dataclasses.fields(typing.get_type_hints(Config)[section])}[name]


def check_value(key: str, value: Any) -> None:
    """Raise a one-line `ConfigError` naming `key`, `value` and the allowed values, where the `option`
    declaration of the dotted `key` does not allow `value` (for functions also called without a `Config`)."""
    _check(key, value, declared(key))


def _check(key: str, value: Any, allowed: Any) -> None:
    if allowed.get("choices") and value not in allowed["choices"]:
        raise ConfigError(f"{key}: unknown {allowed['label']}{excerpt(value)}; choose {', '.join(allowed['choices'])}")
    if allowed.get("accepts") and not allowed["accepts"][0](value):
        raise ConfigError(f"{key}: unknown {excerpt(value)}; choose {allowed['accepts'][1]}")
    low, high, above = allowed.get("low"), allowed.get("high"), allowed.get("above")
    if low is None and high is None:
        return
    below = low is not None and (value <= low if above else value < low)
    if below or (high is not None and value >= high):
        low_text = f"{'above' if above else 'at least'} {low}" if low is not None else ""
        high_text = f"below {high}" if high is not None else ""
        raise ConfigError(f"{key}: must be {' and '.join(t for t in (low_text, high_text) if t)}, got {excerpt(value)}")


def check_options(section: Any, path: str) -> None:
    """Raise `ConfigError` for the first field of dataclass instance `section` (dotted `path`) whose value is
    outside what its `option` declaration allows; nested dataclasses are checked too."""
    for f in dataclasses.fields(section):
        value, key = getattr(section, f.name), f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value):
            check_options(value, key)
        elif f.metadata:
            _check(key, value, f.metadata)


# Keys that earlier versions wrote into run records, dropped on reading so that those records still load.
# data.policy_group: the policies drew one operation per group of images; they now draw per image.
_RETIRED_KEYS = {"data": ("policy_group",)}


def config_from_dict(data: dict) -> Config:
    """Build a `Config` from a plain mapping, rejecting unknown keys, wrong types and values not allowed."""
    if isinstance(data, dict):
        data = {section: ({k: v for k, v in values.items() if k not in _RETIRED_KEYS.get(section, ())}
                          if isinstance(values, dict) else values) for section, values in data.items()}
    cfg = dataclass_from_dict(Config, data, "")
    check_options(cfg, "")
    check_relations(cfg)
    return cfg


CIFAR10_CLASSES, CIFAR10_TRAIN_IMAGES = 10, 50_000  # what the data set is (data.cifar10 reads it)


def check_relations(cfg: Config) -> None:
    """Raise a one-line `ConfigError` for values that each pass their own `option` but not the code that uses
    them: a classifier for another number of classes, a holdout that leaves no training image, milestones
    that are no epochs, Nesterov momentum without momentum."""
    m, d, t = cfg.model, cfg.data, cfg.train
    if m.num_classes != CIFAR10_CLASSES:
        raise ConfigError(f"model.num_classes: CIFAR-10 has {CIFAR10_CLASSES} classes, got {excerpt(m.num_classes)}")
    if d.holdout >= CIFAR10_TRAIN_IMAGES:
        raise ConfigError(f"data.holdout: must leave training images, so below CIFAR-10's {CIFAR10_TRAIN_IMAGES:,}, "
                          f"got {excerpt(d.holdout)}")
    if t.seed >= 2**63:
        raise ConfigError(f"train.seed: must be below 2^63 (torch's generators take no larger seed), got {excerpt(t.seed)}")
    for i, milestone in enumerate(t.milestones):
        if milestone < 0:
            raise ConfigError(f"train.milestones[{i}]: must be an epoch (at least 0), got {milestone!r}")
    if t.optimizer.lower() == "sgd" and t.nesterov and t.momentum == 0:
        raise ConfigError("train.nesterov: Nesterov momentum needs train.momentum above 0; set nesterov: false, "
                          "or a momentum such as 0.9")


class _StrictLoader(yaml.SafeLoader):
    """YAML as `safe_load` reads it, but a key given twice in one mapping is an error (not the last one
    silently winning), and so is an alias: a configuration has no need of one, and nested aliases expand
    exponentially (a "billion laughs" file)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=True) for key, _ in node.value]
        twice = next((k for i, k in enumerate(keys) if isinstance(k, typing.Hashable) and k in keys[:i]), None)
        if twice is not None:
            raise yaml.constructor.ConstructorError(None, None, f"the key {twice!r} appears twice", node.start_mark)
        return super().construct_mapping(node, deep)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "an alias (*name): write the value out instead",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


YAML_MAX_BYTES = 1_000_000  # a configuration, plan or search space is a few kB: a larger file is no such thing


def read_yaml(path: Path, missing: str) -> Any:
    """The YAML data of `path` ({} when empty); `ConfigError` with `missing` if absent, or if not valid YAML
    (duplicate keys and aliases included), or larger than `YAML_MAX_BYTES`."""
    if not path.is_file():
        raise ConfigError(missing)
    try:
        with open(path, "rb") as f:
            data = f.read(YAML_MAX_BYTES + 1)
        if len(data) > YAML_MAX_BYTES:
            raise ConfigError(f"{path}: over {YAML_MAX_BYTES:,} bytes, so no configuration: give the YAML file itself")
        return yaml.load(data.decode(), Loader=_StrictLoader) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8), so not YAML: give a YAML file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or type(err).__name__})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0][:100]})") from None


PRESETS_DIR = Path(__file__).parent / "configs"  # the presets ship inside the package (configs/ links here)


def preset_names() -> list[str]:
    """The presets that `--config NAME` accepts: best, colab, fast, smoke, ..."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def config_path(name_or_path: str | Path) -> Path:
    """The file a `--config` value means: the path itself where it exists, else the packaged preset it names
    (`colab`, `colab.yaml` or `configs/colab.yaml`, so that an installed copy trains without a clone)."""
    path = Path(name_or_path)
    packaged = PRESETS_DIR / f"{path.stem}.yaml"
    named = path.parent in (Path("."), Path("configs"))  # a name, or configs/NAME: never a path elsewhere
    if not path.is_file() and path.suffix in ("", ".yaml") and named and packaged.is_file():
        return packaged
    return path


def load_config(path: str | Path) -> Config:
    """Read a YAML configuration file, or the preset it names (`config_path`), into a `Config`."""
    path = config_path(path)
    data = read_yaml(path, f"configuration file not found: {path} (give a YAML file or a preset name: "
                           f"{', '.join(preset_names())})")
    if not data:
        raise ConfigError(f"{path} is empty: a configuration needs at least a model section "
                          "(start from a preset in configs/)")
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def config_to_dict(cfg: Config) -> dict:
    """The configuration as plain data, ready for YAML or JSON."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path, *, new: bool = False) -> None:
    """Write the configuration as YAML that `load_config` reads back unchanged (atomically; with `new`, never
    over an existing file, `files.atomic_write_bytes`)."""
    from .run_folder import atomic_write_text  # torch loads with it: reading a configuration needs none

    atomic_write_text(Path(path), config_yaml(cfg), new=new)


def config_yaml(cfg: Config) -> str:
    """The configuration as the YAML text `save_config` writes."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def override(cfg: Config, **dotted: Any) -> Config:
    """A copy of `cfg` with values replaced by dotted key, e.g. `override(cfg, **{"train.epochs": 5})`."""
    data = config_to_dict(cfg)
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown key '{key}'")
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"unknown key '{key}'")
        node[leaf] = value
    return config_from_dict(data)
