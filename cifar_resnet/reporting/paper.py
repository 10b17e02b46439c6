"""The LaTeX report in `report/`: number macros generated from `results/`, and the PDF build.

Every number the report states about this project comes from `report/generated/numbers.tex` and the
results table beside it, which `write_numbers` derives from the recorded runs, so the text can never
drift from the results. A flag such as `\\ifHaveBestRun` is false where a result does not exist yet,
and the text then says so.
A run is read as the figures and tables read it, a `records.RunRecord`, and every value is written with
the formatters of `formats`; the benchmarks' numbers are set by `paper_bench`.
"""

from __future__ import annotations

import csv
import math
import re
import shutil
import statistics
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import paper_bench, paper_design
from ..files import atomic_write_text, make_folder
from ..formats import mean_std, percent, tex_escape, thousands
from ..models import PARAMETER_BUDGET
from .paper_macros import Macros, THRESHOLDS
from .records import RunRecord, accuracy, best_run, last_evaluation, number, read_json, recorded_metrics

BUILD_FILES = (".aux", ".bbl", ".blg", ".fls", ".log", ".out", ".fdb_latexmk")
TEX_INSTALL_HINT = "install texlive-latex-extra texlive-fonts-recommended latexmk"
REQUIRED = ("params", "train_seconds", "epochs_completed")  # besides test_acc, for a run to count
TTA_NAMES = {"flip": "horizontal-flip", "flip_translate": "flip-and-translate"}
SEED_RUN = re.compile(r"best(-seed\d+)?")
STOPPED = "time_limit"  # metrics.json status of a run its time limit stopped
TABLE_FILE = "results_table.tex"  # written beside numbers.tex
RECIPE_FILE = "recipe_table.tex"  # the best run's settings, beside numbers.tex
ROBUSTNESS_FILE = "robustness_table.tex"  # the best run's accuracy under generated corruptions


@dataclass
class StoppedRun(RunRecord):
    """A GPU run that its time limit stopped before the end of its schedule: no final test accuracy, only
    the last evaluation in its `history.csv`."""

    epoch: int = 0  # the epoch of that last evaluation
    last_acc: float = 0.0  # test accuracy at that epoch


def load_results(results_dir: Path) -> list[RunRecord]:
    """The runs under `results_dir/runs/*/metrics.json` that record a test accuracy, sorted by name.

    Unfinished and validation-only runs (no `test_acc`) are left out; unreadable files and runs that
    lack `params`, `train_seconds` or their epochs are left out with a warning.
    """
    runs = []
    for path in recorded_metrics(Path(results_dir) / "runs"):  # hidden folders (a record being written) passed over
        metrics = read_json(path)
        if not isinstance(metrics, dict) or number(metrics.get("test_acc")) is None:
            continue
        missing = [k for k in REQUIRED if number(metrics.get(k)) is None]
        if not 0 <= metrics["test_acc"] <= 1 or missing:
            warnings.warn(f"skipping {path}: test_acc outside [0, 1] or no {', '.join(missing)}", stacklevel=2)
            continue
        runs.append(RunRecord(path.parent, metrics))
    return runs


def _last_test_eval(run_dir: Path) -> tuple[int, float] | None:
    """`records.last_evaluation` of a run, or None (with a warning where its history.csv cannot be read)."""
    if not (run_dir / "history.csv").is_file():
        return None
    try:
        return last_evaluation(run_dir)
    except (OSError, ValueError, KeyError) as err:
        warnings.warn(f"ignoring {run_dir / 'history.csv'}: {err}", stacklevel=3)
        return None


def load_stopped_runs(results_dir: Path) -> list[StoppedRun]:
    """GPU runs under `results_dir/runs` stopped by their time limit, with their last test evaluation."""
    stopped = []
    for path in recorded_metrics(Path(results_dir) / "runs"):  # hidden folders (a record being written) passed over
        metrics = read_json(path)
        if not isinstance(metrics, dict) or metrics.get("status") != STOPPED or metrics.get("eval_split", "test") != "test":
            continue
        last = _last_test_eval(path.parent)
        run = StoppedRun(path.parent, metrics)
        if last is None or not run.on_gpu or any(number(metrics.get(k)) is None for k in REQUIRED + ("epochs",)):
            continue
        run.epoch, run.last_acc = last[0], accuracy(last[1])
        stopped.append(run)
    return stopped


def _architecture(run: RunRecord, m: Macros) -> None:
    """Design variables of the best run, from the `config.yaml` saved in its folder."""
    path = run.path / "config.yaml"
    model = None
    if path.is_file():
        import yaml  # light, and only needed here

        try:
            model = (yaml.safe_load(path.read_text()) or {}).get("model")
        except (yaml.YAMLError, AttributeError) as err:
            warnings.warn(f"ignoring {path}: {err}", stacklevel=3)
    keys = ("channels", "blocks", "kernels", "skip_kernels", "pool", "block", "stem_channels")
    ok = isinstance(model, dict) and all(k in model for k in keys) and all(
        isinstance(model[k], list) and model[k] and all(isinstance(v, int) for v in model[k])
        for k in ("channels", "blocks", "kernels", "skip_kernels"))
    m.flag("HaveBestArch", ok)
    if not ok:
        return
    for macro, key in (("Channels", "channels"), ("Blocks", "blocks"), ("Kernels", "kernels"),
                       ("SkipKernels", "skip_kernels")):
        m.text(f"Best{macro}", ", ".join(str(v) for v in model[key]))
    m.text("BestStages", str(len(model["channels"])))
    m.text("BestStemChannels", str(model["stem_channels"]))
    m.text("BestBlockType", "pre-activation" if model["block"] == "preact" else "basic")
    pool = model["pool"]
    m.text("BestPool", "global average pooling" if pool == 0 else f"${pool}\\times{pool}$ average pooling")
    # Weighted layers on the main path, counted as for ResNet-18: stem, two convs per block, classifier.
    m.text("BestDepth", str(2 + 2 * sum(model["blocks"])))


def _best(runs: list[RunRecord], m: Macros) -> RunRecord | None:
    best = best_run(runs)
    m.flag("HaveBestRun", best is not None)
    if best is None:
        return None
    # Without a run named `best`, picking the most accurate of several runs is a choice made on the test set.
    m.flag("BestPickedOnTest", best.name != "best" and sum(r.on_gpu and r.finished for r in runs) > 1)
    x = best.metrics
    m.text("BestRunName", tex_escape(best.name))
    m.text("BestTestAcc", percent(best.test_acc))
    tta = best.test_acc_tta
    have_tta = tta is not None and x.get("tta") in TTA_NAMES
    m.flag("HaveBestTTA", have_tta)
    if have_tta:
        m.text("BestTestAccTTA", percent(tta))
        m.text("BestTTAName", TTA_NAMES[x["tta"]])
    m.text("BestParams", thousands(x["params"]))
    m.text("BestParamsM", f"{x['params'] / 1e6:.2f}")
    m.text("BestBudgetPercent", f"{100 * x['params'] / PARAMETER_BUDGET:.0f}")
    m.text("BestMinutes", f"{x['train_seconds'] / 60:.1f}")
    m.text("BestSeconds", f"{x['train_seconds']:.0f}")
    m.text("BestEpochs", str(int(x["epochs_completed"])))
    ips = number(x.get("images_per_second"))
    m.flag("HaveBestThroughput", ips is not None)
    if ips is not None:
        m.text("BestImagesPerSecond", thousands(ips))
    m.text("BestDevice", tex_escape(str(x["device"])))
    m.text("BestTorch", tex_escape(str(x.get("torch_version", "unknown"))))
    m.text("BestCommit", tex_escape(str(x.get("git_commit") or "unknown")[:7]))
    m.text("BestPreset", tex_escape(str(x.get("preset") or x.get("name") or "unknown")))
    seed = number(x.get("seed"))
    m.text("BestSeed", str(int(seed)) if seed is not None else "unknown")
    m.flag("BestSelectedOnTest", x.get("selected_on_test") is True)
    reached = x.get("time_to_acc") if isinstance(x.get("time_to_acc"), dict) else {}
    for key, word in THRESHOLDS.items():
        t = number(reached.get(key))
        m.flag(f"HaveBestTimeTo{word}", t is not None)
        if t is not None:
            m.text(f"BestTimeTo{word}", f"{t:.1f}")
    _architecture(best, m)
    return best


def _seeds(runs: list[RunRecord], m: Macros) -> None:
    """Mean and sample standard deviation over the finished `best`, `best-seed1`, ... GPU runs."""
    seeds = [r for r in runs if r.on_gpu and r.finished and SEED_RUN.fullmatch(r.name)]
    m.flag("HaveSeedSpread", len(seeds) >= 2)
    if len(seeds) < 2:
        return
    accs = [r.test_acc for r in seeds]
    m.text("SeedCount", str(len(seeds)))
    m.text("SeedMeanAcc", percent(statistics.mean(accs)))
    m.text("SeedStdAcc", percent(statistics.stdev(accs)))
    m.text("SeedMinAcc", percent(min(accs)))
    m.text("SeedMaxAcc", percent(max(accs)))
    # The spread in points as the text prints it: the difference of the two printed accuracies.
    m.text("SeedAccRange", f"{float(percent(max(accs))) - float(percent(min(accs))):.2f}")
    m.text("SeedMeanSeconds", f"{statistics.mean(r.metrics['train_seconds'] for r in seeds):.0f}")
    walls = [number(r.metrics.get("wall_seconds")) for r in seeds]
    m.text("SeedMaxWallSeconds", f"{max(walls):.0f}" if all(w is not None for w in walls) else "unknown")
    tta = [r.test_acc_tta for r in seeds]
    have_tta = all(t is not None for t in tta)
    m.flag("HaveSeedSpreadTTA", have_tta)
    if have_tta:
        m.text("SeedMeanAccTTA", percent(statistics.mean(tta)))
        m.text("SeedStdAccTTA", percent(statistics.stdev(tta)))
        m.text("SeedTTAGain", f"{100 * (statistics.mean(tta) - statistics.mean(accs)):.2f}")


def _stopped(stopped: list[StoppedRun], best: RunRecord | None, runs: list[RunRecord], m: Macros) -> None:
    """The longest-planned run of the best configuration that its time limit stopped, if any."""
    same = [s for s in stopped if best is None or s.metrics.get("name") == best.metrics.get("name")]
    m.flag("HaveStoppedRun", bool(same))
    if not same:
        return
    run = max(same, key=lambda s: (s.metrics["epochs"], s.name))
    m.text("StoppedRunName", tex_escape(run.name))
    m.text("StoppedAcc", percent(run.last_acc))
    m.text("StoppedEpoch", str(run.epoch))
    m.text("StoppedEpochsPlanned", str(int(run.metrics["epochs"])))
    m.text("StoppedSeconds", f"{run.metrics['train_seconds']:.0f}")
    finished = [r.test_acc for r in runs if r.on_gpu and r.finished and SEED_RUN.fullmatch(r.name)]
    m.flag("StoppedAboveSeeds", bool(finished) and run.last_acc > max(finished))
    seed = number(run.metrics.get("seed"))
    m.text("StoppedSeed", str(int(seed)) if seed is not None else "unknown")


def _per_class(results_dir: Path, best: RunRecord | None, m: Macros) -> None:
    """Hardest and easiest classes from results/per_class_accuracy.csv, used only if that table's overall
    accuracy is the best run's, without or with its TTA, to 5 test images (another run's differs by more)."""
    path = results_dir / "per_class_accuracy.csv"
    rows: list[tuple[str, int, int]] = []
    if best is not None and path.is_file():
        try:
            with path.open(newline="") as f:
                rows = [(r["class"], int(r["correct"]), int(r["total"])) for r in csv.DictReader(f)]
        except (OSError, ValueError, KeyError) as err:
            warnings.warn(f"ignoring {path}: {err}", stacklevel=3)
            rows = []
    total, correct = sum(t for _, _, t in rows), sum(c for _, c, _ in rows)
    gaps = {tta: abs(correct - acc * total) for tta, acc in ((False, best and best.test_acc),
                                                               (True, best and best.test_acc_tta)) if acc}
    with_tta = min(gaps, key=gaps.get, default=False)
    ok = total > 0 and bool(gaps) and gaps[with_tta] <= 5
    m.flag("HavePerClass", ok)
    m.flag("PerClassWithTTA", ok and with_tta)
    if not ok:
        return
    recorded = best.test_acc_tta if with_tta else best.test_acc
    m.text("PerClassOverallAcc", percent(correct / total))
    m.text("PerClassRecordedAcc", percent(recorded))
    gap = round(abs(correct - recorded * total))
    m.flag("PerClassDiffers", gap > 0)
    m.text("PerClassGapImages", str(gap))
    m.text("PerClassGapWord", "image" if gap == 1 else "images")
    ranked = sorted(rows, key=lambda r: r[1] / r[2])
    for macro, (name, right, n) in (("PerClassWorst", ranked[0]), ("PerClassSecondWorst", ranked[1]),
                                    ("PerClassBest", ranked[-1])):
        m.text(f"{macro}Name", tex_escape(name))
        m.text(f"{macro}Acc", percent(right / n))


def _mean_std(values: list[float]) -> str:
    """Percentages as `mean ± sample std`, or the value alone for a single run."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean_std(statistics.mean(values), std, pm="\\,$\\pm$\\,")


def results_table(runs: list[RunRecord], stopped: list[StoppedRun]) -> str:
    """The GPU results as a bare booktabs tabular: finished runs grouped by configuration and epochs (mean ±
    sample std over seeds, with their number n), then each run its time limit stopped, marked with a dagger.
    Empty when there is no GPU result."""
    groups: dict[tuple[str, int], list[RunRecord]] = {}
    for r in runs:
        if r.on_gpu and r.finished:
            key = (str(r.metrics.get("name") or r.name), int(r.metrics["epochs_completed"]))
            groups.setdefault(key, []).append(r)
    rows = []
    for (name, epochs), group in sorted(groups.items()):
        tta = [r.test_acc_tta for r in group]
        tta_cell = _mean_std(tta) if all(t is not None for t in tta) else "--"
        seconds = statistics.mean(r.metrics["train_seconds"] for r in group)
        rows.append(f"{tex_escape(name)} & {epochs} & {len(group)} & "
                    f"{_mean_std([r.test_acc for r in group])} & {tta_cell} & {seconds:.0f} \\\\")
    for s in stopped:
        rows.append(f"{tex_escape(str(s.metrics.get('name') or s.name))} & "
                    f"{s.epoch}/{int(s.metrics['epochs'])}$^\\dagger$ & 1 & {percent(s.last_acc)} & -- & "
                    f"{s.metrics['train_seconds']:.0f} \\\\")
    if not rows:
        return ""
    return ("\\begin{tabular}{lrrccr}\n\\toprule\n"
            "Config & Epochs & $n$ & Acc.\\ (\\%) & TTA (\\%) & Train (s) \\\\\n\\midrule\n"
            + "\n".join(rows) + "\n\\bottomrule\n\\end{tabular}\n")


def _recipe_and_average(best: RunRecord | None, m: Macros, tables: dict[str, str]) -> None:
    """The best run's recipe table (its config.yaml's training settings; the text states the network) and how fast its weight average
    forgets the initial weights: the half-life, in epochs, of their share of the average at full decay, and
    the power of its warm-up where it has one."""
    from .recipe_text import load_config_yaml, recipe, recipe_latex

    config = load_config_yaml(best.path) if best is not None else None
    m.flag("HaveRecipe", config is not None)
    paper_design.costs(config, m)
    architecture = paper_design.architecture_tex(config)
    m.flag("HaveArchTable", architecture is not None)
    tables[paper_design.ARCHITECTURE_TABLE] = architecture or "% No best run.\n"
    tables[RECIPE_FILE] = (recipe_latex({g: v for g, v in recipe(config).items() if g != "Model"}, tex_escape)
                           if config else "% No best run.\n")
    train = (config or {}).get("train") or {}
    data = (config or {}).get("data") or {}
    decay, batch = number(train.get("ema_decay")), number(train.get("batch_size"))
    ok = decay is not None and 0 < decay < 1 and batch is not None and batch > 0
    m.flag("HaveBestEMA", ok)
    if not ok:
        return
    images = (number(data.get("train_subset")) or 50_000) - (number(data.get("holdout")) or 0)
    steps = math.ceil(images / batch)
    m.text("BestEMADecay", f"{decay:g}")
    m.text("BestStepsPerEpoch", str(steps))
    m.text("BestEMAHalfLifeEpochs", f"{math.log(0.5) / math.log(decay) / steps:.1f}")
    # train.ema_warmup_power p > 0: the decay after n updates is min(decay, 1 - (1 + n)^-p), as timm's ModelEmaV3.
    power = number(train.get("ema_warmup_power"))
    m.flag("BestEMAWarmup", power is not None and power > 0)
    if power is not None and power > 0:
        m.text("BestEMAWarmupPower", f"{power:g}")


def _robustness(best: RunRecord | None, m: Macros, tables: dict[str, str]) -> None:
    """The best run's accuracy under generated corruptions, from its robustness.json."""
    from ..evaluation.robustness_record import CIFAR10C_TYPES, corruption_label, load_robustness, mean_accuracy, robustness_latex

    record = load_robustness(best.path) if best is not None else None
    m.flag("HaveRobustness", record is not None)
    tables[ROBUSTNESS_FILE] = robustness_latex(record) if record else "% No robustness.json.\n"
    if record is None:
        return
    m.text("RobustImages", thousands(record["images"]))
    m.text("RobustCleanAcc", percent(record["clean_acc"]))
    m.text("RobustMeanAcc", percent(record["mean_corruption_acc"]))
    m.text("RobustCount", str(len(record["corruptions"])))
    m.text("RobustTypesTotal", str(CIFAR10C_TYPES))
    m.text("RobustCommit", tex_escape(str(record.get("git_commit") or "unknown")[:7]))
    m.text("RobustTorch", tex_escape(str(record.get("torch_version") or "unknown")))
    worst = min(record["corruptions"], key=mean_accuracy)
    m.text("RobustWorstName", tex_escape(corruption_label(worst["name"]).lower()))
    m.text("RobustWorstAcc", percent(mean_accuracy(worst)))
    seconds = number(record.get("seconds"))
    m.flag("RobustTimed", seconds is not None)
    if seconds is not None:
        m.text("RobustSeconds", f"{seconds:.0f}")
        device = str(record.get("device", "unknown"))
        m.text("RobustDevice", "CPU" if device.lower() == "cpu" else tex_escape(device))


def write_numbers(results_dir: Path, out_path: Path) -> dict[str, str | bool]:
    """Write the report's number macros, derived from `results_dir`, to `out_path` (numbers.tex), and the
    results, recipe and robustness tables beside it.

    Returns the macros by name (without backslash): strings for values, booleans for the
    `\\ifName` flags. A CPU-only run never counts as a result.
    """
    results_dir, out_path = Path(results_dir), Path(out_path)
    runs = load_results(results_dir)
    stopped = load_stopped_runs(results_dir)
    m = Macros()
    m.text("NumRuns", str(len(runs)))
    m.text("NumGPURuns", str(sum(r.on_gpu for r in runs)))
    m.text("BudgetM", f"{PARAMETER_BUDGET / 1e6:g}")
    best = _best(runs, m)
    _seeds(runs, m)
    _stopped(stopped, best, runs, m)
    paper_bench.speed(results_dir, m)
    paper_bench.throughput(results_dir, m)
    paper_bench.cpu_race(results_dir, m)
    _per_class(results_dir, best, m)
    table = results_table(runs, stopped)
    m.flag("HaveResultsTable", bool(table))
    tables = {TABLE_FILE: table or "% No GPU result recorded yet.\n"}
    _recipe_and_average(best, m, tables)
    _robustness(best, m, tables)
    paper_design.study(results_dir, m)
    paper_design.cpu_study(results_dir, m)
    make_folder(out_path.parent)
    # All made before any is written, each atomically (never through a link): a failure leaves the old set.
    for name, text in tables.items():
        atomic_write_text(out_path.parent / name, text)
    atomic_write_text(out_path, m.render())
    return m.values


def build_report(repo_root: Path) -> Path:
    """Regenerate the number macros from `repo_root/results` and build `report/report.pdf` with latexmk."""
    report_dir = Path(repo_root) / "report"
    write_numbers(Path(repo_root) / "results", report_dir / "generated" / "numbers.tex")
    from .address import authors_hint

    latexmk = shutil.which("latexmk")
    if latexmk is None:
        raise RuntimeError(f"latexmk not found: {TEX_INSTALL_HINT} (e.g. with apt-get)")
    # Build from scratch (about a second): latexmk cannot see a figure or table appear, since report.tex
    # only tests for it, and a partial set of old auxiliary files can make it run bibtex first and fail.
    for suffix in BUILD_FILES:
        (report_dir / f"report{suffix}").unlink(missing_ok=True)
    cmd = [latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error", "report.tex"]
    proc = subprocess.run(cmd, cwd=report_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in proc.stdout.splitlines() if line.startswith(("./", "!"))]
        detail = "; ".join(errors[-3:] or proc.stdout.splitlines()[-3:])
        raise RuntimeError(f"latexmk failed (exit {proc.returncode}){authors_hint(report_dir, errors)}: {detail} "
                           f"(see {report_dir / 'report.log'})")
    return report_dir / "report.pdf"

