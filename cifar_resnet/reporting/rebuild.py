"""Every figure in `figures/` and every table in `results/`, rebuilt from `configs/` and the recorded runs
in `results/runs/` without training: what `cifar-resnet figures` runs. It calls the drawing functions of
`plots` and `run_plots` on what `analysis` and `records` compute, in the same order as the notebooks, so a
notebook and this module write the same files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from . import analysis, design_study, plots, recipe_text, records, run_plots
from ..audience import option, progress_bar
from ..data.cifar10 import BATCH_DIR, DataError, load_cifar10
from ..evaluation import robustness_record
from ..evaluation.evaluate import run_data_root
from ..run_folder import PREDICTIONS


def _save_closed(fig: Figure, stem: Path) -> list[Path]:
    paths = plots.save(fig, stem)
    plt.close(fig)
    return paths


def _save_if_drawn(fig: Figure | None, stem: Path) -> list[Path]:
    """Save `fig`; where there is nothing to draw (None), remove the figure an earlier build left."""
    if fig is not None:
        return _save_closed(fig, stem)
    for suffix in (".pdf", ".png"):
        stem.with_suffix(suffix).unlink(missing_ok=True)
    return []


class _Written(list):
    """The files written, counted on a progress bar as they come."""

    def __init__(self, bar) -> None:
        super().__init__()
        self.bar = bar

    def __iadd__(self, paths):
        self.bar.update(len(paths))
        return super().__iadd__(paths)

    def append(self, path) -> None:
        self.bar.update(1)
        super().append(path)


def figures_data_root(root: Path, best: records.RunRecord | None, data_root: str | None) -> str:
    """Where the figures find CIFAR-10: where the best run's record says it trained (if the files are still
    there), else `data_root`, else $CIFAR10_ROOT, else the clone's data/."""
    recorded = run_data_root(best.path) if best is not None else None
    return recorded or data_root or os.environ.get("CIFAR10_ROOT") or str(root / "data")


def rebuild_all(repo_root: str | Path, *, data_root: str | None = None, study: str = "main",
                log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> list[Path]:
    """Redraw every figure in figures/ and every table in results/ from configs/ and the recorded
    results, without training; returns the files written. The best run's figures come from the
    predictions it recorded, so they are the same on every machine. Figures that need CIFAR-10's images
    (the data set, the confident mistakes) are skipped, said in one line to `log`, where it is not on disk (no
    download; `figures_data_root` says where it is looked for). A progress bar counts the files."""
    root = Path(repo_root)
    figures, results = root / "figures", root / "results"
    with progress_bar(desc="figures", unit="file") as bar:
        written = _Written(bar)
        _rebuild(root, figures, results, written, data_root, study, log)
    return list(written)


def _rebuild(root: Path, figures: Path, results: Path, written: _Written, data_root: str | None, study: str,
             log: Callable[[str], None]) -> None:

    # Notebook 02: the design space and the presets.
    written += _save_closed(plots.params_vs_width(analysis.width_sweep()), figures / "params_vs_width")
    written += _save_closed(plots.params_vs_depth(analysis.depth_sweep()), figures / "params_vs_depth")
    written += _save_closed(plots.params_vs_kernels(analysis.kernel_sweep()), figures / "params_vs_kernels")
    written += records.write_table(analysis.presets_table(root / "configs"), results / "presets_table",
                                   records.PRESETS_COLUMNS)
    design = design_study.design_table(results / design_study.DESIGN_CPU)  # the CPU design study
    if not design.empty:
        written += design_study.write_design_table(design, results / "design_cpu_table")
    written += _save_if_drawn(design_study.design_study_plot(design), figures / "design_cpu")
    trials, importance = analysis.load_search(results, study), analysis.load_importance(results, study)
    if trials is not None:
        written += _save_closed(plots.search_pareto(trials), figures / "search_pareto")
        written += _save_closed(plots.search_history(trials), figures / "search_history")
    if importance is not None:
        written += _save_closed(plots.search_importance(importance), figures / "search_importance")

    # Notebook 04, from the records alone (results/runs: never the runs you train into runs/).
    run_records = records.load_runs(results / "runs")
    seeds = records.seeds_table(run_records)
    written += records.write_table(records.runs_table(run_records), results / "runs_table", records.RUNS_COLUMNS)
    written += records.write_seeds_table(seeds, results / "seeds_table")
    written.append(records.write_runs_readme(run_records, results / "README.md"))
    written += _save_if_drawn(run_plots.params_vs_accuracy(seeds), figures / "params_vs_accuracy")
    best = records.pick_best_run(run_records)[0] if any(r.finished and r.test_acc is not None for r in run_records) else None
    recorded = best is not None and (best.path / PREDICTIONS).is_file()
    if best is not None:
        histories = {r.label: records.load_history(r.path) for r in records.same_model(run_records, best)}
        written += _save_closed(run_plots.learning_curves(histories, ema_decay=recipe_text.ema_decay(best.path)),
                                figures / "learning_curves")
    robustness = robustness_record.load_robustness(best.path) if best is not None else None
    written += _save_if_drawn(run_plots.corruption_accuracy(robustness, title=best.name) if robustness else None,
                              figures / "corruption_accuracy")
    if recorded:
        written += prediction_outputs(best.name, analysis.load_predictions(best.path), figures, results)

    data = figures_data_root(root, best, data_root)
    try:
        train = load_cifar10(data, "train", download=False)
        test = load_cifar10(data, "test", download=False)
    except DataError:
        log(f"figures: the data set's figures and the confident mistakes skipped: no CIFAR-10 in {data}/{BATCH_DIR} "
            f"(give {option('data_root=', '--data-root')} the folder that holds it)")
        return

    # Notebook 01: the data set.
    written += records.write_table(analysis.class_counts(train, test), results / "dataset_stats")
    histograms = analysis.channel_histograms(train.images)
    stats = analysis.channel_stats(histograms)
    written += records.write_table(stats, results / "channel_stats")
    written += _save_closed(plots.class_samples(train), figures / "class_samples")
    written += _save_closed(plots.pixel_histograms(histograms, stats), figures / "pixel_histograms")
    written += _save_closed(plots.augmentations(train), figures / "augmentations")

    # Notebook 04: the best run's mistakes, which need the test images.
    if recorded:
        pred = analysis.load_predictions(best.path, split=test)
        written += _save_closed(run_plots.confident_mistakes(pred, analysis.confident_mistakes(pred)), figures / "confident_mistakes")


def prediction_outputs(name: str, pred: analysis.Predictions, figures: Path, results: Path) -> list[Path]:
    """Confusion matrix, per-class accuracy (figure and table) and reliability diagram of one run's
    recorded predictions."""
    title = f"{name}, {pred.views}"
    matrix = analysis.confusion_matrix(pred.labels, pred.predicted)
    per_class = analysis.per_class_accuracy(matrix)
    bins = analysis.reliability_bins(pred.confidence, pred.correct)
    ece = analysis.expected_calibration_error(pred.confidence, pred.correct)
    written = records.write_table(per_class, results / "per_class_accuracy", records.PER_CLASS_COLUMNS)
    written += _save_closed(run_plots.confusion_matrix(matrix, title=title), figures / "confusion_matrix")
    written += _save_closed(run_plots.per_class_accuracy(per_class, title=title), figures / "per_class_accuracy")
    written += _save_closed(run_plots.reliability_diagram(bins, ece, title=title), figures / "reliability_diagram")
    return written
