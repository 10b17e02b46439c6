"""The CPU design study's table, figure and report numbers (`reporting.design_study`, `paper_design.cpu_study`),
from a sweep folder as `cifar-resnet sweep` writes it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cifar_resnet.config import config_to_dict, load_config, override
from cifar_resnet.models import parameter_count
from cifar_resnet.reporting import design_study
from cifar_resnet.reporting.paper import write_numbers
from cifar_resnet.studies.sweep_files import COLUMNS

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "plans" / "design_cpu_base.yaml"
# choice -> (overrides, held-out accuracies with TTA by seed); the base's accuracy without TTA is 1 point lower
STUDY = {"base": ({}, [0.700, 0.704, 0.702]),
         "width-1.5x": ({"model.channels": [24, 48, 96], "model.stem_channels": 24}, [0.750, 0.752]),
         "kernel-5": ({"model.kernels": [5, 3, 3]}, [0.703, 0.699]),
         "recipe-ema": ({"train.ema_decay": 0.98, "train.ema_warmup_power": 1.0}, [0.690, 0.689])}


def plan_study() -> dict:
    """Every choice of configs/plans/design_cpu.yaml with made-up accuracies: the size of the real table."""
    plan = yaml.safe_load((REPO / "configs" / "plans" / "design_cpu.yaml").read_text())
    return {run["name"]: (run.get("overrides", {}), [0.62 + i / 200 + s / 1000 for s in range(len(run["seeds"]))])
            for i, run in enumerate(plan["runs"])}


def write_study(results: Path, study: dict = STUDY) -> Path:
    """A design study's folder under `results`: summary.csv, each run's config.yaml, the base's metrics.json."""
    folder = results / design_study.DESIGN_CPU
    rows = []
    for choice, (changes, accs) in study.items():
        cfg = override(load_config(BASE_CONFIG), **changes)
        for seed, acc in enumerate(accs):
            run = folder / f"{choice}-s{seed}"
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(override(cfg, **{"train.seed": seed}))))
            rows.append({"run": run.name, "seed": seed, "status": "finished", "params": parameter_count(cfg.model),
                         "epochs": 3, "epochs_done": 3, "estimate_s": 150, "seconds": 150.0, "train_seconds": 130.0,
                         "val_acc": acc - 0.01, "val_acc_tta": acc})
    rows.append({**rows[-1], "run": "block-pool-s0", "status": "diverged", "val_acc": None, "val_acc_tta": None})
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(folder / "summary.csv", index=False)
    (folder / "base-s0" / "metrics.json").write_text(json.dumps(
        {"device": "cpu", "cpu": "AMD EPYC", "threads": 2, "torch_version": "2.4.0", "git_commit": "abc1234def"}))
    return folder


def test_one_row_per_choice_with_its_effect_and_whether_the_spread_resolves_it(tmp_path):
    table = design_study.design_table(write_study(tmp_path))
    assert list(table["choice"]) == ["base", "width-1.5x", "kernel-5", "recipe-no-tta", "recipe-ema"]
    rows = table.set_index("choice")
    assert rows.loc["base", "seeds"] == 3 and rows.loc["base", "acc_mean"] == pytest.approx(0.702)
    assert rows.loc["width-1.5x", "effect"] == pytest.approx(0.049) and rows.loc["width-1.5x", "resolved"]
    assert rows.loc["kernel-5", "effect"] == pytest.approx(-0.001) and not rows.loc["kernel-5", "resolved"]
    assert rows.loc["recipe-ema", "resolved"] and rows.loc["recipe-ema", "effect"] < 0
    assert rows.loc["recipe-no-tta", "effect"] == pytest.approx(-0.01) and rows.loc["recipe-no-tta", "change"] == "no TTA"
    # what each choice changes, written from the configurations (the seed and the stem's width follow)
    assert rows.loc["width-1.5x", "change"] == "C = 24/48/96"
    assert rows.loc["kernel-5", "change"] == "F = 5/3/3" and rows.loc["recipe-ema", "change"] == "EMA = 0.98"
    assert "diverged" not in set(table["choice"]) and "block-pool" not in set(table["choice"])


def test_no_study_gives_no_table_no_figure_and_no_report_flag(tmp_path):
    assert design_study.design_table(tmp_path / "absent").empty
    assert design_study.design_study_plot(pd.DataFrame()) is None
    values = write_numbers(tmp_path, tmp_path / "numbers.tex")
    assert values["HaveDesignCpu"] is False


def numbers_in(text: str) -> list[str]:
    return re.findall(r"\d+\.\d+", text)


def test_every_number_the_report_quotes_of_the_study_is_in_its_table(tmp_path):
    write_study(tmp_path)
    values = write_numbers(tmp_path, tmp_path / "generated" / "numbers.tex")
    assert_quotes_match(values, design_study.design_table(tmp_path / design_study.DESIGN_CPU))
    assert values["DesignCpuDevice"] == "AMD EPYC (2 threads)" and values["DesignCpuCommit"] == "abc1234"
    assert values["DesignCpuBaseAcc"] == "70.20" and values["DesignCpuResolved"] == "3"
    assert values["DesignCpuWidth"] == "C = 24/48/96 gained 4.90 points"
    assert values["DesignCpuKernel"] == "F = 5/3/3 cost 0.10 points (within the spread)"
    assert values["DesignCpuPool"] == "not run" and values["DesignCpuLosses"] == "EMA = 0.98: $-$1.25, no TTA: $-$1.00"


def assert_quotes_match(values: dict, table: pd.DataFrame) -> None:
    """Every decimal in the report's study macros is one of the table's cells (accuracy, spread, effect, or a
    number in a choice's description), as the table writes it."""
    cells = " ".join(design_study.mean_std_text(m, s, " ") for m, s in zip(table["acc_mean"], table["acc_std"]))
    allowed = set(numbers_in(cells + " " + " ".join(table["change"]))) | {f"{100 * abs(e):.2f}" for e in table["effect"]}
    quoted = [v for k, v in values.items() if k.startswith("DesignCpu") and isinstance(v, str)
              and k not in ("DesignCpuTorch", "DesignCpuHours")]
    assert quoted
    for text in quoted:
        for number in numbers_in(text):
            assert number in allowed, f"{number} (in {text!r}) is in no cell of the study's table"


def test_the_repository_report_quotes_its_recorded_study_exactly(tmp_path):
    """The committed study: the report's numbers of it are those of the committed table, which regenerates
    from the sweep's records unchanged."""
    if design_study.design_table(REPO / "results" / design_study.DESIGN_CPU).empty:
        pytest.skip("no design study recorded in results/")
    values = write_numbers(REPO / "results", tmp_path / "numbers.tex")
    assert values["HaveDesignCpu"]
    assert_quotes_match(values, pd.read_csv(REPO / "results" / "design_cpu_table.csv"))
    design_study.write_design_table(design_study.design_table(REPO / "results" / design_study.DESIGN_CPU),
                                    tmp_path / "table")
    for suffix in (".csv", ".tex"):
        assert (tmp_path / f"table{suffix}").read_text() == (REPO / "results" / f"design_cpu_table{suffix}").read_text()


def test_the_figure_draws_every_choice(tmp_path):
    table = design_study.design_table(write_study(tmp_path))
    fig = design_study.design_study_plot(table)
    left, right = fig.axes
    assert len(right.get_yticklabels()) == len(table) - 1
    assert {t.get_text() for t in left.texts} >= {"base", "width-1.5x"}


def test_the_readme_says_how_long_the_recorded_study_took():
    runs = design_study.load_study(REPO / "results" / design_study.DESIGN_CPU)
    if runs.empty:
        pytest.skip("no design study recorded in results/")
    readme = (REPO / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `configs/plans/design_cpu.yaml`"))
    assert f"{runs['seconds'].sum() / 3600:.1f} h" in row and "--device cpu" in row
