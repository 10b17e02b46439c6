"""Run configuration: dataclasses that map one-to-one onto the YAML files in `configs/` (the sections'
fields, with their allowed values, are declared in `config_schema`), read and checked here.

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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_schema import DataConfig, ModelConfig, TrainConfig
from .formats import excerpt


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says which key and why."""


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
    that are no epochs, lookahead beside a weight average, Nesterov momentum without momentum."""
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
    if t.lookahead_every and t.ema_decay:
        raise ConfigError("train.lookahead_every: lookahead and a weight average (train.ema_decay) both average the "
                          "weights; set one of them to 0")
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
        cfg = config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if "model" not in data:  # every key has a default, so the file is valid: say which network that is
        warnings.warn(f"{path} has no model section, so it builds the default network: {model_in_words(cfg.model)}",
                      ConfigNotice, stacklevel=2)
    return cfg


class ConfigNotice(UserWarning):
    """A configuration that is valid but may not say what its author meant (the command line shows it in one line)."""


def model_in_words(m: ModelConfig) -> str:
    """A network's design on one line: "basic blocks, stem 64, C 64-128-256, B 2-2-2, F 3-3-3, K 1-1-1, strides
    1-2-2, global avg pool" (and each other option that is not its default)."""
    dashed = lambda values: "-".join(map(str, values))  # noqa: E731
    pool = "global" if m.pool == 0 else f"P={m.pool}" + (f"/{m.pool_stride}" if m.pool_stride else "")
    default = ModelConfig()
    others = [f"{f.name} {getattr(m, f.name)}" for f in dataclasses.fields(m)
              if f.name not in _IN_WORDS and getattr(m, f.name) != getattr(default, f.name)]
    return ", ".join([f"{m.block} blocks", f"stem {m.stem_channels}", f"C {dashed(m.channels)}",
                      f"B {dashed(m.blocks)}", f"F {dashed(m.kernels)}", f"K {dashed(m.skip_kernels)}",
                      f"strides {dashed(m.strides)}", f"{pool} {m.pool_type} pool", *others])


_IN_WORDS = {"block", "stem_channels", "channels", "blocks", "kernels", "skip_kernels", "strides", "pool", "pool_stride",
             "pool_type"}


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
