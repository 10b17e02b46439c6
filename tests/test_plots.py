import shutil
import subprocess
import sys

import pytest

from cifar_resnet import plots

from conftest import ROOT

FROM_RECORDS = ["params_vs_width", "params_vs_depth", "params_vs_kernels", "params_vs_accuracy", "learning_curves"]
FROM_SEARCH = ["search_pareto", "search_history", "search_importance"]
FROM_DATA = ["class_samples", "pixel_histograms", "augmentations", "confusion_matrix", "per_class_accuracy",
             "confident_mistakes", "reliability_diagram"]
TABLES = ["presets_table.csv", "presets_table.tex", "runs_table.csv", "runs_table.tex", "README.md"]
DATA_TABLES = ["dataset_stats.csv", "channel_stats.csv", "per_class_accuracy.csv", "per_class_accuracy.tex"]

SEARCH_CSV = """number,state,val_acc,epochs,trainable_params,seconds,channels,params_width
0,complete,0.91,12,2100000,50.0,64-128-256,64
1,pruned,0.62,2,900000,8.0,32-64-128,32
2,complete,0.93,12,4100000,80.0,96-192-384,96
3,over_budget,,0,7300000,0.0,128-256-512,128
4,complete,0.90,12,3000000,60.0,80-160-320,80
"""


def repo_copy(tmp_path, name, search=True):
    """configs/ and the recorded runs of the project, plus (optionally) a small recorded search."""
    root = tmp_path / name
    shutil.copytree(ROOT / "configs", root / "configs")
    shutil.copytree(ROOT / "results" / "runs", root / "results" / "runs",
                    ignore=shutil.ignore_patterns("checkpoint.pt"))
    if search:
        (root / "results" / "search").mkdir()
        (root / "results" / "search" / "main.csv").write_text(SEARCH_CSV)
        (root / "results" / "search" / "main_importance.csv").write_text("param,importance\nwidth,0.8\nblocks,0.2\n")
    return root


def relative(paths, root):
    return sorted(str(p.relative_to(root)) for p in paths)


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory, synthetic_root):
    tmp = tmp_path_factory.mktemp("rebuild")
    roots = [repo_copy(tmp, name) for name in ("a", "b")]
    return [(root, plots.rebuild_all(root, data_root=str(synthetic_root))) for root in roots]


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


def test_without_the_data_set_only_the_figures_from_the_records_are_built(tmp_path):
    root = repo_copy(tmp_path, "c", search=False)
    with pytest.warns(UserWarning, match="skipped"):
        written = plots.rebuild_all(root, data_root=str(tmp_path / "nowhere"))
    assert relative(written, root) == sorted([f"figures/{n}.{e}" for n in FROM_RECORDS for e in ("pdf", "png")]
                                             + [f"results/{n}" for n in TABLES])
    assert not (tmp_path / "nowhere").exists()  # never downloads


def test_runs_table_tex_lists_the_smoke_run(two_builds):
    root, _ = two_builds[0]
    tex = (root / "results" / "runs_table.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and "smoke-cpu & smoke & 5{,}266 & 4 &" in tex
    readme = (root / "results" / "README.md").read_text()
    assert "| smoke-cpu | smoke | 5,266 | 4 |" in readme and "| cpu | 29.80% | 30.00% (flip) | 0 |" in readme


def test_importing_the_package_loads_no_plotting_library():
    code = ("import sys, cifar_resnet, cifar_resnet.engine, cifar_resnet.cli; "
            "print(sorted(m for m in ('matplotlib', 'seaborn', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
