import json
import os
import shutil
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from cifar_resnet import run_folder
from cifar_resnet.config import load_config, override, save_config
from cifar_resnet.data.cifar10 import load_cifar10
from cifar_resnet.reporting import analysis, plots, rebuild, run_plots

from conftest import ROOT, pdf_font_sizes

FROM_RECORDS = ["params_vs_width", "params_vs_depth", "params_vs_kernels", "learning_curves", "corruption_accuracy",
                "confusion_matrix", "per_class_accuracy", "reliability_diagram"]
FROM_SEARCH = ["search_pareto", "search_history", "search_importance"]
FROM_DATA = ["class_samples", "pixel_histograms", "augmentations", "confident_mistakes"]
TABLES = ["presets_table.csv", "presets_table.tex", "runs_table.csv", "runs_table.tex", "seeds_table.csv",
          "seeds_table.tex", "README.md", "per_class_accuracy.csv", "per_class_accuracy.tex"]
DATA_TABLES = ["dataset_stats.csv", "channel_stats.csv"]

SEARCH_CSV = """number,state,val_acc,epochs,trainable_params,seconds,channels,params_width
0,complete,0.91,12,2100000,50.0,64-128-256,64
1,pruned,0.62,2,900000,8.0,32-64-128,32
2,complete,0.93,12,4100000,80.0,96-192-384,96
3,over_budget,,0,7300000,0.0,128-256-512,128
4,complete,0.90,12,3000000,60.0,80-160-320,80
"""


def write_records(results, labels):
    """Runs as a GPU would record them, of the smoke recipe: two seeds and one stopped by its time
    limit, with predictions for the images whose `labels` are given."""
    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    rng = np.random.default_rng(0)
    for name, seed, epochs, done in (("best", 0, 4, 4), ("best-seed1", 1, 4, 4), ("best-long", 0, 6, 5)):
        run = results / "runs" / name
        run.mkdir(parents=True)
        save_config(override(cfg, **{"train.seed": seed, "train.epochs": epochs}), run / "config.yaml")
        rows = [{"epoch": e, "lr": 0.1, "train_loss": 2 - e / 4, "train_acc": 0.2 * e, "test_loss": 2 - e / 3,
                 "test_acc": 0.15 * e + seed / 100, "seconds": 1.0} for e in range(1, done + 1)]
        run_folder.write_history(rows, run / "history.csv")
        metrics = {"name": "smoke", "status": "finished" if done == epochs else "time_limit", "eval_split": "test",
                   "params": 5266, "epochs": epochs, "epochs_completed": done, "train_seconds": 4.0 + seed,
                   "wall_seconds": 5.0, "seed": seed, "device": "NVIDIA H200", "tta": "flip"}
        if done == epochs:
            logits = torch.tensor(rng.normal(size=(len(labels), 10)) + 3 * np.eye(10)[labels], dtype=torch.float32)
            probs = torch.softmax(logits, 1)
            run_folder.save_predictions(run / run_folder.PREDICTIONS, probs, torch.tensor(labels), probs_tta=probs.sqrt().softmax(1),
                                        split="test", tta="flip")
            metrics |= {"test_acc": 0.6 + seed / 100, "test_acc_tta": 0.62}
        run_folder.write_metrics(metrics, run / "metrics.json")
    write_robustness(results / "runs" / "best")


def write_robustness(run_dir):
    """robustness.json as `cifar-resnet robustness` writes it, for three corruptions."""
    corruptions = [{"name": n, "family": f, "accuracy": [0.6 - 0.05 * s for s in range(5)]}
                   for n, f in (("contrast", "digital"), ("gaussian_noise", "noise"), ("defocus_blur", "blur"))]
    (run_dir / "robustness.json").write_text(json.dumps(
        {"images": 500, "seed": 0, "device": "cpu", "seconds": 3.0, "generated": True, "clean_acc": 0.6,
         "corruptions": corruptions, "mean_corruption_acc": 0.5}))


def repo_copy(tmp_path, name, labels, search=True):
    """configs/ of the project, recorded runs, and (optionally) a small recorded search."""
    root = tmp_path / name
    shutil.copytree(ROOT / "configs", root / "configs")
    write_records(root / "results", labels)
    if search:
        (root / "results" / "search").mkdir()
        (root / "results" / "search" / "main.csv").write_text(SEARCH_CSV)
        (root / "results" / "search" / "main_importance.csv").write_text("param,importance\nwidth,0.8\nblocks,0.2\n")
    return root


def relative(paths, root):
    return sorted(str(p.relative_to(root)) for p in paths)


@pytest.fixture(scope="module")
def test_labels(synthetic_root):
    return load_cifar10(synthetic_root, "test", download=False).labels.numpy()


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory, synthetic_root, test_labels):
    tmp = tmp_path_factory.mktemp("rebuild")
    roots = [repo_copy(tmp, name, test_labels) for name in ("a", "b")]
    return [(root, rebuild.rebuild_all(root, data_root=str(synthetic_root))) for root in roots]


def test_rebuild_all_writes_every_figure_and_table(two_builds):
    root, written = two_builds[0]
    figures = [f"figures/{name}.{ext}" for name in FROM_RECORDS + FROM_SEARCH + FROM_DATA for ext in ("pdf", "png")]
    tables = [f"results/{name}" for name in TABLES + DATA_TABLES]
    assert relative(written, root) == sorted(figures + tables)
    assert all(p.stat().st_size > 0 for p in written)
    assert (root / "figures" / "confusion_matrix.pdf").read_bytes().startswith(b"%PDF")
    assert b"/Type3" not in (root / "figures" / "params_vs_width.pdf").read_bytes()  # TrueType fonts only


def test_rebuilt_files_are_byte_identical(two_builds):
    (root_a, written_a), (root_b, written_b) = two_builds
    assert relative(written_a, root_a) == relative(written_b, root_b)
    for path in written_a:
        twin = root_b / path.relative_to(root_a)
        assert path.read_bytes() == twin.read_bytes(), f"{path.relative_to(root_a)} differs between two builds"
        if path.suffix in (".csv", ".tex", ".pdf"):
            assert str(root_a).encode() not in path.read_bytes()  # no absolute paths baked in


def test_without_the_data_set_everything_but_the_images_is_built_from_the_records(tmp_path, test_labels):
    root = repo_copy(tmp_path, "c", test_labels, search=False)
    said = []
    written = rebuild.rebuild_all(root, data_root=str(tmp_path / "nowhere"), log=said.append)
    assert len(said) == 1 and "skipped: no CIFAR-10 in" in said[0] and "--data-root" not in said[0]  # one line
    assert relative(written, root) == sorted([f"figures/{n}.{e}" for n in FROM_RECORDS for e in ("pdf", "png")]
                                             + [f"results/{n}" for n in TABLES])
    assert not (tmp_path / "nowhere").exists()  # never downloads


def test_tables_list_every_run_and_summarise_the_seeds(two_builds):
    root, _ = two_builds[0]
    tex = (root / "results" / "runs_table.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex
    assert "best-long & smoke & 5{,}266 & 5 & time limit & 4.0 s & 5.0 s & H200 & -- & -- & 0 \\\\" in tex
    readme = (root / "results" / "README.md").read_text()
    assert "| best | smoke | 5,266 | 4/4 | finished |" in readme and "| NVIDIA H200 | 60.00% | 62.00% (flip) | 0 |" in readme
    assert "| smoke | 4 | 2 | best best-seed1 | 60.50 ± 0.71 | 62.00 ± 0.00 | 4.5 ± 0.7 s |" in readme
    assert "stopped by its time limit after epoch 5 of 6" in readme and "(epoch 5) gave 75.00%" in readme
    assert "\\pm" in (root / "results" / "seeds_table.tex").read_text()


def test_the_figures_say_on_how_many_images_they_were_measured(test_labels):
    matrix = analysis.confusion_matrix(test_labels, test_labels)
    fig = run_plots.per_class_accuracy(analysis.per_class_accuracy(matrix), title="best")
    assert fig.axes[0].get_title() == f"best\n{len(test_labels):,} test images (10 per class)"
    assert run_plots.confusion_matrix(matrix).axes[0].get_title() == f"{len(test_labels):,} test images"


def test_a_png_shows_each_image_pixel_as_a_whole_square(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    fig, ax = plt.subplots(figsize=(1.3, 1.3))
    plots._image(ax, image)
    dpi = plots.png_dpi(fig)
    assert dpi >= plots.PNG_DPI
    png = plots.save(fig, tmp_path / "one")[1]
    pixels = (plt.imread(png)[..., :3] * 255).round().astype(np.uint8)
    inside = np.flatnonzero((pixels != 255).any(-1).any(0))
    row = pixels[pixels.shape[0] // 2, inside[0]: inside[-1] + 1]
    runs_ = np.diff(np.flatnonzero(np.r_[True, (row[1:] != row[:-1]).any(-1), True]))
    assert len(runs_) == 32 and len(set(runs_.tolist())) == 1 and runs_[0] >= 3  # 32 pixels, k screen pixels each


def test_the_reliability_diagram_of_recorded_predictions_is_the_same_in_any_order(tmp_path):
    # Reproduces a failure: bar heights drawn from recomputed predictions differed in the 7th digit on
    # another CPU. From the recorded predictions, the summation order no longer matters.
    pred = analysis.load_predictions(ROOT / "results" / "runs" / "best")
    order = np.random.default_rng(1).permutation(len(pred.labels))
    shuffled = analysis.Predictions(pred.probs[order], pred.labels[order], pred.tta)
    for name, p in (("a", pred), ("b", shuffled)):
        bins = analysis.reliability_bins(p.confidence, p.correct)
        ece = analysis.expected_calibration_error(p.confidence, p.correct)
        plots.save(run_plots.reliability_diagram(bins, ece, title="best"), tmp_path / name)
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


OTHER_CPU = {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR AVX512_SKX AVX512F AVX2 FMA3",
             "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_figures_from_the_records_are_the_same_bytes_on_another_cpu(tmp_path):
    # Another CPU in effect: numpy without its SIMD kernels beyond the baseline, torch's default kernels,
    # one thread. Figures from recomputed predictions differed in the 7th digit this way; from the
    # recorded ones every byte is the same.
    code = ("import sys, warnings; warnings.simplefilter('ignore'); from cifar_resnet.reporting import rebuild; "
            "rebuild.rebuild_all(sys.argv[1], data_root=sys.argv[2])")
    builds = []
    for name, env in (("here", {}), ("other", OTHER_CPU)):
        root = tmp_path / name
        shutil.copytree(ROOT / "configs", root / "configs")
        shutil.copytree(ROOT / "results" / "runs", root / "results" / "runs", ignore=shutil.ignore_patterns("*.pt"))
        subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path / "nowhere")], env=os.environ | env,
                       check=True, capture_output=True)
        builds.append(root)
    files = sorted(p.relative_to(builds[0]) for p in builds[0].rglob("*") if p.is_file() and "runs" not in p.parts)
    assert {"figures/reliability_diagram.pdf", "figures/confusion_matrix.png", "results/per_class_accuracy.csv"} <= set(map(str, files))
    for path in files:
        assert (builds[0] / path).read_bytes() == (builds[1] / path).read_bytes(), f"{path} differs on another CPU"


def test_importing_the_package_loads_no_plotting_library():
    code = ("import sys, cifar_resnet, cifar_resnet.training.engine, cifar_resnet.cli; "
            "print(sorted(m for m in ('matplotlib', 'seaborn', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def smallest_text(pdf):
    """The smallest font size (points) a matplotlib PDF sets in its content streams."""
    sizes = pdf_font_sizes(pdf.read_bytes())
    assert sizes, f"{pdf.name}: no text found"
    return min(sizes)


def test_no_figure_has_text_under_7_pt_and_notebooks_show_them_at_200_dpi(two_builds):
    root, written = two_builds[0]
    for pdf in (p for p in written if p.suffix == ".pdf"):
        assert smallest_text(pdf) >= plots.MIN_FONT, f"{pdf.name}: text under {plots.MIN_FONT} pt"
    fig = plots.params_vs_depth(analysis.depth_sweep())
    assert fig.dpi >= 200  # a notebook embeds it at figure.dpi: 7 pt text is about 19 pixels high
    plt.close(fig)


def test_accuracy_against_parameters_is_drawn_only_with_two_recipes():
    row = {"model": "a", "epochs": 4, "params": 5266, "device": "NVIDIA H200", "seeds": 2, "runs": "a b",
           "test_acc_mean": 0.6, "test_acc_std": 0.01, "test_acc_tta_mean": 0.62, "test_acc_tta_std": 0.0}
    one = pd.DataFrame([row, row | {"model": "smoke", "device": "cpu"}])
    assert run_plots.params_vs_accuracy(one) is None  # one GPU recipe (and a smoke run) compares nothing
    two = pd.DataFrame([row, row | {"model": "b", "params": 2_000_000, "test_acc_mean": 0.9}])
    ax = run_plots.params_vs_accuracy(two).axes[0]
    assert ax.get_ylim()[0] > 50 and ax.get_xlim()[0] > 1000  # zoomed to the points, not 0-100% and 10^3
    plt.close("all")


def test_learning_curves_say_which_weights_they_evaluate():
    history = pd.DataFrame({"epoch": [1, 2], "lr": [0.1, 0.1], "train_loss": [2.0, 1.5], "train_acc": [0.2, 0.4],
                            "eval_loss": [2.2, 2.0], "eval_acc": [0.1, 0.15], "eval_loss_raw": [1.8, 1.4],
                            "eval_acc_raw": [0.3, 0.5], "seconds": [1.0, 1.0]})
    fig = run_plots.learning_curves({"run": history}, ema_decay=0.9995)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "test, weight average (EMA 0.9995)" in labels and "test, trained weights" in labels
    fig = run_plots.learning_curves({"run": history.drop(columns=["eval_loss_raw", "eval_acc_raw"])})
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "test, trained weights" in labels and not any("average" in label for label in labels)
    plt.close("all")
