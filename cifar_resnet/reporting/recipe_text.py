"""A run's recipe in words: every setting of its `config.yaml`, grouped (model, data, optimiser, schedule,
regularisers, precision, evaluation), for the report's recipe table and the notebooks.

Read from the run's own `config.yaml` as written (plain YAML, not the current dataclasses), so an older
record with a key the library no longer has still shows it. A setting this module has no words for is
shown under its own name, never dropped. Only PyYAML is imported.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

GROUPS = ("Model", "Data", "Optimiser", "Schedule", "Regularisers", "Precision", "Evaluation")
# Settings of where the data lives, not of the recipe.
_SIZE = re.compile(r"\b(\d+)x(\d+)\b")  # a kernel or patch size: 3x3
TIMES = r"$\1\\times\2$"
NOT_RECIPE = {"name", "selected_on_test", "data.root", "data.download"}


def _on(value: Any) -> str:
    return "yes" if value else "no"


def _off(unit: str = "") -> Callable[[Any], str]:
    return lambda v: "off" if not v else f"{v:g}{unit}" if isinstance(v, (int, float)) else str(v)


def _stages(value: Any) -> str:
    return "(" + ", ".join(str(v) for v in value) + ")" if isinstance(value, list) else str(value)


def _kernels(value: Any) -> str:
    if isinstance(value, list) and len(set(value)) == 1:
        return f"{value[0]}x{value[0]} in every stage"
    return _stages(value)


def _all_or(noun: str) -> Callable[[Any], str]:
    return lambda v: f"all {noun}" if not v else f"the first {v:,}"


# dotted key -> (group, label, how the value reads)
SETTINGS: dict[str, tuple[str, str, Callable[[Any], str]]] = {
    "model.block": ("Model", "block", lambda v: {"preact": "pre-activation", "basic": "basic",
                                                 "bottleneck": "bottleneck", "preact_bottleneck": "pre-activation bottleneck",
                                                 "pool": "conv, max-pool, one-conv residual"}.get(v, str(v))),
    "model.expansion": ("Model", "bottleneck expansion", str),
    "model.stem": ("Model", "stem", lambda v: {"whiten": "frozen patch whitening"}.get(v, str(v))),
    "model.stem_channels": ("Model", "stem channels", str),
    "model.stem_kernel": ("Model", "stem kernel", lambda v: f"{v}x{v}"),
    "model.channels": ("Model", "channels per stage", _stages),
    "model.blocks": ("Model", "blocks per stage", _stages),
    "model.kernels": ("Model", "conv kernels", _kernels),
    "model.skip_kernels": ("Model", "projection kernels", _kernels),
    "model.strides": ("Model", "strides", _stages),
    "model.shortcut": ("Model", "shortcut", lambda v: {"zero_pad": "zero padding (option A)",
                                                       "zero_pad_end": "zero padding after the channels"}.get(v, str(v))),
    "model.se_reduction": ("Model", "squeeze-and-excitation", lambda v: "off" if not v else f"reduction {v}"),
    "model.conv_bias": ("Model", "conv biases", _on),
    "model.final_norm": ("Model", "final BN and activation", _on),
    "model.pool": ("Model", "pool", lambda v: "global average" if v == 0 else f"{v}x{v} average"),
    "model.pool_stride": ("Model", "pool stride", str),
    "model.pool_type": ("Model", "pool type", lambda v: {"avg": "average"}.get(v, str(v))),
    "model.activation": ("Model", "activation", lambda v: str(v).replace("relu", "ReLU").replace("gelu", "GELU")
                         .replace("silu", "SiLU")),
    "model.block_dropout": ("Model", "dropout in each block", _off()),
    "model.pool_dropout": ("Model", "dropout before the pool", _off()),
    "model.dropout": ("Model", "dropout", _off()),
    "model.zero_init_residual": ("Model", "last BN of each branch zero-initialised", _on),
    "model.num_classes": ("Model", "classes", str),
    "data.holdout": ("Data", "held out", lambda v: "none" if not v else f"last {v:,} images"),
    "data.train_subset": ("Data", "training images", _all_or("50,000")),
    "data.test_subset": ("Data", "test images", _all_or("10,000")),
    "data.crop_padding": ("Data", "random crop, padding", _off(" px")),
    "data.flip": ("Data", "random flip", _on),
    "data.flip_alternate": ("Data", "alternating flip", _on),
    "data.cutout": ("Data", "cutout", lambda v: "off" if not v else f"{v}x{v}"),
    "data.policy": ("Data", "policy", lambda v: {"trivialaugment": "TrivialAugment", "randaugment": "RandAugment",
                                                 "autoaugment": "AutoAugment", "none": "none"}.get(v, str(v))),
    "data.policy_group": ("Data", "images per policy draw", str),
    "train.optimizer": ("Optimiser", "optimiser", lambda v: "SGD" if v == "sgd" else str(v)),
    "train.lr": ("Optimiser", "peak learning rate", lambda v: f"{v:g}"),
    "train.momentum": ("Optimiser", "momentum", lambda v: f"{v:g}"),
    "train.nesterov": ("Optimiser", "Nesterov", _on),
    "train.batch_size": ("Optimiser", "batch", str),
    "train.weight_decay": ("Optimiser", "weight decay", lambda v: f"{v:g}"),
    "train.decay_norm_and_bias": ("Optimiser", "decay on BN and bias", _on),
    "train.grad_clip": ("Optimiser", "gradient clipping", _off()),
    "train.sam_rho": ("Optimiser", "SAM radius", _off()),
    "train.sam_adaptive": ("Optimiser", "adaptive SAM", _on),
    "train.epochs": ("Schedule", "epochs", str),
    "train.schedule": ("Schedule", "schedule", lambda v: "one-cycle" if v == "onecycle" else str(v)),
    "train.pct_start": ("Schedule", "share rising to the peak", lambda v: f"{v:g}"),
    "train.warmup_epochs": ("Schedule", "warm-up epochs", lambda v: f"{v:g}"),
    "train.milestones": ("Schedule", "milestones", lambda v: _stages(v) if v else "none"),
    "train.gamma": ("Schedule", "step factor", lambda v: f"{v:g}"),
    "train.label_smoothing": ("Regularisers", "label smoothing", _off()),
    "train.ema_decay": ("Regularisers", "weight average (EMA) decay", _off()),
    "train.ema_warmup_power": ("Regularisers", "EMA warm-up power", _off()),
    "train.mixup_alpha": ("Regularisers", "MixUp", _off()),
    "train.cutmix_alpha": ("Regularisers", "CutMix", _off()),
    "train.ricap_beta": ("Regularisers", "RICAP", _off()),
    "train.precision": ("Precision", "autocast", lambda v: {"bf16": "bfloat16", "fp16": "float16"}.get(v, str(v))),
    "train.channels_last": ("Precision", "channels-last", _on),
    "train.compile": ("Precision", "torch.compile", _on),
    "train.tta": ("Evaluation", "test-time augmentation", lambda v: {"flip": "flip", "none": "none",
                                                                     "flip_translate": "flip and translate"}.get(v, str(v))),
    "train.eval_every": ("Evaluation", "evaluated every", lambda v: f"{v} epoch{'s' if v != 1 else ''}"),
    "train.seed": ("Evaluation", "seed", str),
}
# Settings that only matter with another one: shown only then.
ONLY_WITH = {"train.pct_start": ("train.schedule", {"onecycle"}),
             "train.warmup_epochs": ("train.schedule", {"cosine", "step", "linear"}),
             "train.milestones": ("train.schedule", {"step"}), "train.gamma": ("train.schedule", {"step"}),
             "train.sam_adaptive": ("train.sam_rho", None), "data.policy_group": ("data.policy", None),
             "data.flip_alternate": ("data.flip", None), "train.ema_warmup_power": ("train.ema_decay", None),
             "model.expansion": ("model.block", {"bottleneck", "preact_bottleneck"}),
             "model.final_norm": ("model.block", {"preact", "preact_bottleneck"}),
             "model.pool_stride": ("model.pool_stride", None)}  # 0: the pool's size, said by model.pool


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """A nested configuration as {dotted key: value}."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(key: str, flat: dict[str, Any]) -> bool:
    if key in NOT_RECIPE:
        return False
    if key in ONLY_WITH:
        other, values = ONLY_WITH[key]
        value = flat.get(other)
        return value in values if values is not None else bool(value) and value != "none"
    return True


def recipe(config: dict) -> dict[str, list[tuple[str, str]]]:
    """The settings of a configuration (as loaded from its YAML), by group: (label, value in words).

    A key this module does not know is shown under its own name in the group of its section."""
    flat = flatten(config)
    groups: dict[str, list[tuple[str, str]]] = {g: [] for g in GROUPS}
    for key, value in flat.items():
        if not _shown(key, flat):
            continue
        if key in SETTINGS:
            group, label, words = SETTINGS[key]
            groups[group].append((label, words(value)))
        else:
            section = {"model": "Model", "data": "Data"}.get(key.split(".")[0], "Regularisers")
            groups[section].append((key.split(".")[-1].replace("_", " "), str(value)))
    return {g: items for g, items in groups.items() if items}


def load_config_yaml(run_dir: str | Path) -> dict | None:
    """The run's config.yaml as plain YAML, or None where it has none."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    config = yaml.safe_load(path.read_text()) if path.is_file() else None
    return config if isinstance(config, dict) else None


def ema_decay(run_dir: str | Path) -> float | None:
    """The decay of the weight average whose accuracy the run's history records as `<split>_acc`
    (`train.ema_decay`), or None where it evaluates its trained weights."""
    train = (load_config_yaml(run_dir) or {}).get("train")
    decay = train.get("ema_decay") if isinstance(train, dict) else None
    return float(decay) if isinstance(decay, (int, float)) and not isinstance(decay, bool) and decay > 0 else None


# The paper's table reads as a recipe, not a dump: a setting that is off is left out (or said in words
# where its absence matters), a switched-on one is named alone, and the run's identity is not a setting.
NOT_IN_TABLE = {"seed", "classes", "strides", "held out"}
SAID_WHEN_OFF = {"decay on BN and bias": "no weight decay on BN and bias"}
OFF_VALUES = {"off", "no", "none"}


def _phrase(label: str, value: str) -> str | None:
    if label in NOT_IN_TABLE:
        return None
    if value in OFF_VALUES:
        return SAID_WHEN_OFF.get(label)
    return label if value == "yes" else f"{label} {value}"


def recipe_latex(groups: dict[str, list[tuple[str, str]]], escape: Callable[[str], str]) -> str:
    """The recipe as a bare two-column tabular (group, its settings in a phrase each), for a one-column
    table; `escape` escapes LaTeX's special characters."""
    rows = []
    for group, items in groups.items():
        phrases = [p for p in (_phrase(label, value) for label, value in items) if p]
        if phrases:
            rows.append(f"{group} & {'; '.join(_SIZE.sub(TIMES, escape(p)) for p in phrases)} \\\\")
    return ("\\begin{tabular}{@{}l@{\\hspace{4pt}}p{0.78\\columnwidth}@{}}\n\\toprule\n"
            + "\n".join(rows) + "\n\\bottomrule\n\\end{tabular}\n")


def recipe_changes(recorded: dict, today: dict, defaults: dict) -> dict[str, tuple[Any, Any]]:
    """How a preset of today (its resolved configuration, `config_to_dict`) differs from the configuration a
    recorded run saved, its seed, epochs and data aside: {dotted key: (recorded, today)}. A key the record
    predates counts only where today's value is not the option's default (`defaults`, the resolved default
    configuration): the default is what every later option keeps of the old behaviour. A key one side lacks is
    given as None (a retired key, or one the record predates)."""
    old, new, default = flatten(recorded), flatten(today), flatten(defaults)
    aside = NOT_RECIPE | {"train.seed", "train.epochs", "data.holdout", "data.train_subset", "data.test_subset"}
    return {k: (old.get(k), new.get(k)) for k in sorted((set(old) | set(new)) - aside) if old.get(k) != new.get(k)
            and not (k not in old and new.get(k) == default.get(k))}
