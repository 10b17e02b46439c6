"""The architecture search's design space: a YAML file read into a `SearchSpace` (`load_space`), the
candidate a trial draws from it (`sample_config`), and the Optuna sampler and pruner it names. `search`
runs the study.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from ..blocks import BOTTLENECKS
from ..config import Config, ConfigError, ModelConfig, dataclass_from_dict, load_config, override, read_yaml
from ..models import PARAMETER_BUDGET, validate_model_config

CHANNEL_MULTIPLE = 8  # widths are rounded to multiples of 8, the granularity tensor cores work in
MAX_STAGES = 6  # stage 1 keeps 32x32 and each later stage halves it: six stages reach 1x1


# ---- the design space ------------------------------------------------------------------------------
@dataclass
class IntRange:
    """Integers from `low` to `high`, both included, every `step`-th; `log` samples on a log scale."""

    low: int | None = None
    high: int | None = None
    step: int = 1
    log: bool = False


@dataclass
class FloatRange:
    """Reals from `low` to `high`; `log` samples on a log scale."""

    low: float | None = None
    high: float | None = None
    log: bool = False


@dataclass
class ModelSpace:
    """Choices (lists) and ranges for the `ModelConfig` design variables; per-stage ones are drawn per stage."""

    block: list[str] = field(default_factory=lambda: ["basic", "preact"])
    activation: list[str] = field(default_factory=lambda: ["relu"])
    stem_channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # before the width multiplier
    stages: IntRange = field(default_factory=lambda: IntRange(2, 4))  # N, number of stages (1..6)
    base_width: IntRange = field(default_factory=lambda: IntRange(16, 96, 8))  # C_1 before the width multiplier
    growth: list[float] = field(default_factory=lambda: [1.5, 2.0])  # stage multiplier: C_{i+1} = growth * C_i
    width_multiplier: list[float] = field(default_factory=lambda: [1.0])  # scales the stem and every C_i
    blocks: IntRange = field(default_factory=lambda: IntRange(1, 4))  # B_i
    kernels: list[int] = field(default_factory=lambda: [3, 5])  # F_i, odd
    skip_kernels: list[int] = field(default_factory=lambda: [1, 3])  # K_i, odd; used by projection skips only
    pool: list[int] = field(default_factory=lambda: [0])  # P; floors as PyTorch's where it does not divide the map
    # Drawn only where the block uses them (and only where there is more than one choice); the others keep the default.
    shortcut: list[str] = field(default_factory=lambda: ["projection"])  # zero_pad: no parameters (not "pool" blocks)
    expansion: list[int] = field(default_factory=lambda: [4])  # bottleneck blocks: output = expansion * C_i
    se_reduction: list[int] = field(default_factory=lambda: [0])  # squeeze-and-excitation's r; 0 = off
    block_dropout: list[float] = field(default_factory=lambda: [0.0])  # before each block's last conv (not "pool")


@dataclass
class TrainSpace:
    """The training knobs searched with the architecture; everything else comes from the base config."""

    lr: FloatRange = field(default_factory=lambda: FloatRange(0.05, 0.4, log=True))
    weight_decay: FloatRange = field(default_factory=lambda: FloatRange(1e-4, 1e-3, log=True))
    # A weight average with decay d lags ~1/(1-d) steps behind: at the first rungs a 0.999 average would
    # judge the initial weights, so the search trains without one unless told otherwise.
    ema_decay: list[float] = field(default_factory=lambda: [0.0])


@dataclass
class Fidelity:
    """Epochs are the fidelity: every trial's schedule spans max_epochs, and the pruner stops poor ones early."""

    min_epochs: int = 2  # the first epoch at which a trial can be pruned
    max_epochs: int = 18
    reduction_factor: int = 3  # successive halving / hyperband promote 1 in this many trials per rung


@dataclass
class SearchSpace:
    """A search space file: the base config trials start from, the space, and how the study runs."""

    base: Config = field(default_factory=Config)  # in the file: a config path, relative to the space file
    holdout: int = 5000  # validation = the last N training images; the test set is never looked at
    budget: int = PARAMETER_BUDGET  # over-budget candidates are recorded, never trained
    sampler: str = "tpe"  # tpe, or any optuna.samplers class by name: random, gp, cmaes, qmc, nsgaii, ...
    pruner: str = "successive_halving"  # successive_halving | hyperband | median | threshold | none
    prune_below: float = 0.0  # threshold pruner: validation accuracy a trial must keep from min_epochs on
    seed: int | None = None  # sampler seed; leave null with several workers, or they propose the same startups
    heartbeat: int = 60  # seconds between a trial's signs of life; silent for twice this, it is failed and retried
    fidelity: Fidelity = field(default_factory=Fidelity)
    model: ModelSpace = field(default_factory=ModelSpace)
    train: TrainSpace = field(default_factory=TrainSpace)


def load_space(path: str | Path) -> SearchSpace:
    """Read a search space YAML file, rejecting unknown keys, wrong types and empty or inverted ranges."""
    path = Path(path)
    data = read_yaml(path, f"search space file not found: {path} (spaces live in configs/)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {data!r}")
    try:
        if not isinstance(data.get("base"), str):
            raise ConfigError("base: name the config file whose data and train sections the trials start from "
                              f"(relative to the space file), e.g. 'base: fast.yaml'; got {data.get('base')!r}")
        base = dataclasses.asdict(load_config(path.parent / data["base"]))
        space = dataclass_from_dict(SearchSpace, {**data, "base": base}, "")
        _check_space(space)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return space


def _check_space(space: SearchSpace) -> None:
    for section in ("model", "train"):
        for f in dataclasses.fields(getattr(space, section)):
            key, value = f"{section}.{f.name}", getattr(getattr(space, section), f.name)
            if isinstance(value, list) and not value:
                raise ConfigError(f"{key}: give at least one choice")
            if isinstance(value, (IntRange, FloatRange)):
                if value.low is None or value.high is None or value.low > value.high:
                    raise ConfigError(f"{key}: a range needs low <= high, got {dataclasses.asdict(value)}")
                if value.log and (value.low <= 0 or getattr(value, "step", 1) != 1):
                    raise ConfigError(f"{key}: a log range needs low > 0 (and step 1), got {dataclasses.asdict(value)}")
    m, fid = space.model, space.fidelity
    if m.stages.low < 1 or m.stages.high > MAX_STAGES:
        raise ConfigError(f"model.stages: must lie in 1..{MAX_STAGES} (each stage after the first halves the "
                          f"32x32 map), got {m.stages.low}..{m.stages.high}")
    stage = {"channels": [8], "strides": [1], "blocks": [m.blocks.low]}  # widths round up to 8: never below
    for probe in ([{"block": b} for b in m.block] + [{"activation": a} for a in m.activation]
                  + [{**stage, "kernels": [k], "skip_kernels": [s]} for k in m.kernels for s in m.skip_kernels]
                  + [{"shortcut": s} for s in m.shortcut] + [{"block": "bottleneck", "expansion": e} for e in m.expansion]
                  + [{"se_reduction": r} for r in m.se_reduction] + [{"block_dropout": p} for p in m.block_dropout]):
        validate_model_config(ModelConfig(**probe))  # its messages name the same keys: model.block, ...
    if not 1 <= fid.min_epochs <= fid.max_epochs or fid.reduction_factor < 2:
        raise ConfigError(f"fidelity: need 1 <= min_epochs <= max_epochs and reduction_factor >= 2, "
                          f"got {dataclasses.asdict(fid)}")
    if space.holdout < 1:
        raise ConfigError(f"holdout: must be at least 1 (the search validates on held-out training images, "
                          f"never on the test set), got {space.holdout}")
    if space.heartbeat < 1:
        raise ConfigError(f"heartbeat: must be at least 1 second, got {space.heartbeat}")
    if not 1 <= space.budget <= PARAMETER_BUDGET:
        raise ConfigError(f"budget: must lie in 1..{PARAMETER_BUDGET:,} (the library's limit), got {space.budget}")
    make_pruner(space)  # a bad name fails here, not in the first trial
    make_sampler(space)


# ---- one candidate ---------------------------------------------------------------------------------
def _suggest(trial: optuna.trial.BaseTrial, name: str, r: IntRange | FloatRange) -> int | float:
    if isinstance(r, IntRange):
        return trial.suggest_int(name, r.low, r.high, step=r.step, log=r.log)
    return trial.suggest_float(name, r.low, r.high, log=r.log)


def _choose(trial: optuna.trial.BaseTrial, name: str, choices: list, *, applies: bool = True) -> Any:
    """One of `choices`, drawn where there are several and the design uses it; else its one choice, or (where it
    does not apply) `ModelConfig`'s default. A value that is not drawn is no parameter of the trial."""
    if not applies:
        return getattr(ModelConfig(), name)
    return trial.suggest_categorical(name, choices) if len(choices) > 1 else choices[0]


def _round_channels(width: float) -> int:
    return max(CHANNEL_MULTIPLE, round(width / CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE)


def sample_config(trial: optuna.trial.BaseTrial, space: SearchSpace) -> Config:
    """Draw a candidate: the base config with every design variable and knob taken from `trial`.

    C_i = round8(base_width * growth^(i-1) * width_multiplier); stage 1 has stride 1, later stages 2. The
    config validates on the holdout every epoch and trains for `fidelity.max_epochs`. With
    `optuna.trial.FixedTrial(params)` it rebuilds any recorded trial's config.
    """
    m, t = space.model, space.train
    stages = _suggest(trial, "stages", m.stages)
    multiplier = trial.suggest_categorical("width_multiplier", m.width_multiplier)
    width = _suggest(trial, "base_width", m.base_width)
    growth = trial.suggest_categorical("growth", m.growth)
    block = trial.suggest_categorical("block", m.block)
    model = {
        "block": block,
        "activation": trial.suggest_categorical("activation", m.activation),
        "stem_channels": _round_channels(trial.suggest_categorical("stem_channels", m.stem_channels) * multiplier),
        "channels": [_round_channels(width * growth**i * multiplier) for i in range(stages)],
        "blocks": [_suggest(trial, f"blocks_{i + 1}", m.blocks) for i in range(stages)],
        "kernels": [trial.suggest_categorical(f"kernel_{i + 1}", m.kernels) for i in range(stages)],
        "skip_kernels": [trial.suggest_categorical(f"skip_kernel_{i + 1}", m.skip_kernels) for i in range(stages)],
        "strides": [1] + [2] * (stages - 1),
        "pool": trial.suggest_categorical("pool", m.pool),
        "shortcut": _choose(trial, "shortcut", m.shortcut, applies=block != "pool"),
        "expansion": _choose(trial, "expansion", m.expansion, applies=block in BOTTLENECKS),
        "se_reduction": _choose(trial, "se_reduction", m.se_reduction),
        "block_dropout": _choose(trial, "block_dropout", m.block_dropout, applies=block != "pool"),
    }
    train = {"lr": _suggest(trial, "lr", t.lr), "weight_decay": _suggest(trial, "weight_decay", t.weight_decay),
             "ema_decay": trial.suggest_categorical("ema_decay", t.ema_decay),
             "epochs": space.fidelity.max_epochs, "eval_every": 1}
    return override(space.base, **{f"model.{k}": v for k, v in model.items()},
                    **{f"train.{k}": v for k, v in train.items()}, **{"data.holdout": space.holdout})


def dashed(values: list) -> str:
    """Per-stage values joined by dashes: 64-128-256."""
    return "-".join(map(str, values))


def describe(cfg: Config) -> str:
    """The searched variables of a config on one line."""
    m, t, default = cfg.model, cfg.train, ModelConfig()
    extras = "".join(f" {key} {getattr(m, key)}" for key in ("shortcut", "expansion", "se_reduction", "block_dropout")
                     if getattr(m, key) != getattr(default, key))  # the options a space may draw, where drawn
    return (f"{m.block} stem {m.stem_channels} C {dashed(m.channels)} B {dashed(m.blocks)} F {dashed(m.kernels)} "
            f"K {dashed(m.skip_kernels)} P {m.pool}{extras} lr {t.lr:.3g} wd {t.weight_decay:.2g}")


# ---- the study's sampler and pruner ----------------------------------------------------------------
def make_sampler(space: SearchSpace, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The optuna sampler named in the space: "tpe", "random", "TPESampler", ...; a seeded one is seeded with
    `seed + seed_offset`, so that a resumed study (offset: its trials so far) does not replay earlier samples."""
    samplers = {cls.__name__.lower().removesuffix("sampler"): cls for cls in vars(optuna.samplers).values()
                if isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)}
    cls = samplers.get(space.sampler.lower().removesuffix("sampler"))
    if cls is None:
        raise ConfigError(f"sampler: unknown {space.sampler!r}; choose one of {', '.join(sorted(samplers))}")
    # Multivariate TPE with groups models the parameters that exist only for some stage counts jointly.
    options = {"multivariate": True, "group": True, "constant_liar": True} if cls is optuna.samplers.TPESampler else {}
    try:
        with warnings.catch_warnings():  # chosen in the space file: "experimental" is no news here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(seed=None if space.seed is None else space.seed + seed_offset, **options)
    except TypeError:
        raise ConfigError(f"sampler: {space.sampler!r} needs arguments a space file cannot give; "
                          "use tpe, random, gp, cmaes, qmc or nsgaii") from None


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    """The pruner named in the space, its rungs set by the fidelity."""
    f, p = space.fidelity, optuna.pruners
    pruners = {
        "successive_halving": lambda: p.SuccessiveHalvingPruner(min_resource=f.min_epochs,
                                                                 reduction_factor=f.reduction_factor),
        "hyperband": lambda: p.HyperbandPruner(min_resource=f.min_epochs, max_resource=f.max_epochs,
                                               reduction_factor=f.reduction_factor),
        "median": lambda: p.MedianPruner(n_warmup_steps=f.min_epochs),
        "threshold": lambda: p.ThresholdPruner(lower=space.prune_below, n_warmup_steps=f.min_epochs),
        "none": p.NopPruner,
    }
    if space.pruner not in pruners:
        raise ConfigError(f"pruner: unknown {space.pruner!r}; choose one of {', '.join(pruners)}")
    return pruners[space.pruner]()
