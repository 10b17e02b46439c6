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
from ..formats import percent, tex_escape, thousands
from ..models import PARAMETER_BUDGET, final_feature_size, parameter_count
from . import design_study
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


# run-name prefix of the CPU study -> its macro suffix: \DesignCpu<Suffix> lists that variable's choices
CPU_VARIABLES = {"depth": "Depth", "width": "Width", "kernel": "Kernel", "skip": "Skip", "pool": "Pool",
                 "block": "Block", "stem": "Stem", "recipe": "Recipe"}


def cpu_study(results_dir: Path, m: Macros) -> None:
    """The CPU design study's numbers (`\\ifHaveDesignCpu`): the base's accuracy and scale, and per design
    variable its choices, each with its effect against the base in points, marked where the spread hides it, read from
    `design_study.design_table`, the table in results/."""
    folder = Path(results_dir) / design_study.DESIGN_CPU
    table = design_study.design_table(folder)
    m.flag("HaveDesignCpu", not table.empty)
    if table.empty:
        return
    record, runs = design_study.read_record(folder), design_study.load_study(folder)
    base = table[table["choice"] == design_study.BASE].iloc[0]
    m.text("DesignCpuBaseAcc", percent(base["acc_mean"]))
    m.text("DesignCpuBaseStd", f"{100 * base['acc_std']:.2f}")
    m.text("DesignCpuBaseSeeds", str(base["seeds"]))
    m.text("DesignCpuOtherSeeds", str(table[table["choice"] != design_study.BASE]["seeds"].min()))
    m.text("DesignCpuBaseParams", thousands(base["params"]))
    m.text("DesignCpuBaseChannels", ", ".join(map(str, record.get("channels", []))))
    m.text("DesignCpuTrainImages", thousands(record.get("train_images", 0)))
    m.text("DesignCpuDevice", tex_escape(f"{record['cpu']} ({record.get('threads', '?')} threads)")
           if record.get("cpu") else "a CPU")
    m.text("DesignCpuEpochs", str(record.get("epochs", "?")))
    m.text("DesignCpuHoldout", thousands(record.get("holdout", 0)))
    m.text("DesignCpuRuns", str(len(runs)))
    m.text("DesignCpuHours", f"{runs['seconds'].sum() / 3600:.1f}")
    m.text("DesignCpuTorch", tex_escape(record.get("torch_version", "?")))
    m.text("DesignCpuCommit", tex_escape(str(record.get("git_commit", "?"))[:7]))
    for prefix, suffix in CPU_VARIABLES.items():
        rows = table[table["choice"].str.startswith(prefix + "-")]
        phrases = [_choice_text(r, unit=i == 0) for i, (_, r) in enumerate(rows.iterrows())]  # "points" once
        m.text(f"DesignCpu{suffix}", _and(phrases) or "not run")
    resolved = table[table["resolved"]].sort_values("effect")
    m.text("DesignCpuResolved", str(len(resolved)))
    m.text("DesignCpuCompared", str(len(table) - 1))
    for name, part in (("Gains", resolved[resolved["effect"] > 0].iloc[::-1][:3]), ("Losses", resolved[resolved["effect"] < 0][:3])):
        m.text(f"DesignCpu{name}", ", ".join(_choice_text(r, verdict=False) for _, r in part.iterrows()) or "none")


def _choice_text(row, verdict: bool = True, unit: bool = True) -> str:
    """'C = 24/48/96 gained 4.90 points' (a resolved effect), 'F = 5/3/3 cost 0.10 points (within the spread)',
    without `unit` no 'points'; without the verdict 'C = 24/48/96: $+$4.90'."""
    change = tex_escape(row["change"])
    if not verdict:
        return f"{change}: " + f"{100 * row['effect']:+.2f}".replace("-", "$-$")
    said = f"{change} {'gained' if row['effect'] >= 0 else 'cost'} {100 * abs(row['effect']):.2f}" + " points" * unit
    return said if row["resolved"] else f"{said} (within the spread)"


def _and(phrases: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join([", ".join(phrases[:-1]), phrases[-1]] if len(phrases) > 2 else phrases)


ARCHITECTURE_TABLE = "architecture_table.tex"  # beside numbers.tex


def architecture_tex(config: dict | None) -> str | None:
    """The best run's network stage by stage, from its recorded configuration: channels, blocks, conv kernel,
    skip kernel, output size and parameters of the stem, each stage and the classifier, then the total (None
    where the configuration cannot be built)."""
    cfg = _model(config)
    if cfg is None:
        return None
    from ..models import INPUT_SIZE, parameters_by_part

    parts, side, rows = parameters_by_part(cfg), INPUT_SIZE, []
    rows.append(["stem", cfg.stem_channels, "--", cfg.stem_kernel, "--", f"{side}$\\times${side}", parts[0][1]])
    for i, (c, b, f, k, stride) in enumerate(zip(cfg.channels, cfg.blocks, cfg.kernels, cfg.skip_kernels, cfg.strides)):
        side //= stride
        rows.append([f"stage {i + 1}", c, b, f, k, f"{side}$\\times${side}", parts[i + 1][1]])
    pool = "global" if cfg.pool == 0 else f"$P={cfg.pool}$"
    rows.append([f"pool ({pool}), linear", cfg.num_classes, "--", "--", "--", str(cfg.num_classes), parts[-1][1]])
    lines = ["\\begin{tabular}{lrrrrrr}", "\\toprule",
             "Part & $C_i$ & $B_i$ & $F_i$ & $K_i$ & Output & Params \\\\", "\\midrule"]
    lines += [" & ".join(map(str, row[:-1])) + f" & {thousands(row[-1])} \\\\" for row in rows]
    lines += ["\\midrule", f"total & & & & & & {thousands(sum(n for _, n in parts))} \\\\", "\\bottomrule",
              "\\end{tabular}"]
    return "\n".join(lines) + "\n"
