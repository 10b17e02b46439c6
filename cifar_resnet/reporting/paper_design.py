"""The report's design-variable numbers: what each design variable of the best run costs in parameters
(counted by building its network with that one variable changed), and what the design study measured.

The design study is a plan run by `cifar-resnet sweep` into `results/sweeps/design/` (not recorded yet);
its `summary.csv` names each run `<variable>-<value>` (`width-64`, `kernels-5`, `block-basic`, ...).
Where a variable has finished runs there, `\\ifHaveDesign<Var>` is true and `\\Design<Var>Result` lists
their test accuracies; until then the text says what is not measured, under no heading of its own.
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
import warnings
from pathlib import Path

from ..config import ModelConfig
from ..formats import percent, tex_escape
from ..models import PARAMETER_BUDGET, final_feature_size, parameter_count
from .paper_macros import DESIGN_VARIABLES, Macros
from .records import number

DESIGN_STUDY = Path("sweeps") / "design" / "summary.csv"  # under results/
# summary.csv's run-name prefix -> the macro suffix of that design variable
VARIABLES = dict(zip(("width", "kernels", "skip_kernels", "pool", "depth", "block", "recipe"), DESIGN_VARIABLES))


def _model(config: dict | None) -> ModelConfig | None:
    model = (config or {}).get("model")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    if not isinstance(model, dict) or not set(model) <= fields:
        return None
    try:
        cfg = ModelConfig(**model)
        parameter_count(cfg)
    except Exception as err:  # an old or damaged record: the costs are left out, never guessed
        warnings.warn(f"the best run's model cannot be built ({err}): no design costs", stacklevel=3)
        return None
    return cfg


def _millions(cfg: ModelConfig) -> str:
    return f"{parameter_count(cfg) / 1e6:.2f}"


def costs(config: dict | None, m: Macros) -> None:
    """Parameter counts of the best run's network with one design variable changed (`\\ifHaveDesignCosts`)."""
    cfg = _model(config)
    m.flag("HaveDesignCosts", cfg is not None)
    if cfg is None:
        return
    n = len(cfg.channels)
    change = lambda **kw: dataclasses.replace(cfg, **kw)  # noqa: E731
    m.text("DesignParamsM", _millions(cfg))
    m.text("DesignWiderM", _millions(change(channels=[c + c // 4 for c in cfg.channels])))
    m.text("DesignDeeperM", _millions(change(blocks=[b + 1 for b in cfg.blocks])))
    m.text("DesignFiveM", _millions(change(kernels=[5] * n)))
    m.text("DesignSkipThreeM", _millions(change(skip_kernels=[3] * n)))
    m.text("DesignPoolTwoM", _millions(change(pool=final_feature_size(cfg) // 2)))  # pooled to 2x2
    m.text("DesignLastStagePercent", f"{_last_stage_share(cfg):.0f}")
    m.text("DesignBudgetM", f"{PARAMETER_BUDGET / 1e6:g}")


def _last_stage_share(cfg: ModelConfig) -> float:
    """Percent of the network's parameters in its last stage."""
    from .analysis import params_by_part

    parts = params_by_part(cfg)
    return 100 * float(parts["share"].iloc[len(cfg.channels)])


def study(results_dir: Path, m: Macros) -> None:
    """The design study's finished runs by variable: `value: mean test accuracy (n runs)`."""
    path = Path(results_dir) / DESIGN_STUDY
    rows: list[dict] = []
    if path.is_file():
        try:
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("status") == "finished"]
        except (OSError, csv.Error) as err:
            warnings.warn(f"ignoring {path}: {err}", stacklevel=3)
    m.flag("HaveDesignStudy", bool(rows))
    for key, suffix in VARIABLES.items():
        by_value: dict[str, list[float]] = {}
        for r in rows:
            variable, _, value = str(r.get("run", "")).rpartition("-")
            acc = number(_float(r.get("test_acc")))
            if variable == key and acc is not None:
                by_value.setdefault(value, []).append(acc)
        m.flag(f"HaveDesign{suffix}", bool(by_value))
        if by_value:
            m.text(f"Design{suffix}Result", "; ".join(
                f"{tex_escape(v)}: {percent(statistics.mean(a))}\\% ($n={len(a)}$)" for v, a in by_value.items()))


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
