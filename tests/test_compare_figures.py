"""scripts/compare_figures.py, CI's check that the notebooks redraw the committed figures: the same drawing
passes whatever the PDF's bytes, a changed mark or word fails."""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cifar_resnet.reporting.plots import style  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_figures.py"
MISSING = [tool for tool in ("pdftoppm", "pdftotext") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(MISSING) and os.environ.get("REQUIRE_REPORT_BUILD") != "1",
                                reason=f"poppler-utils missing ({', '.join(MISSING)})")


def _load():
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare_figures = _load()


def figure_pdf(y_end: float = 1.0, label: str = "accuracy", title: str = "a") -> bytes:
    """A small figure as the project saves one (embedded TrueType fonts); `title` goes into the metadata only,
    changing the bytes, not the pages."""
    with style():
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [0, y_end])
        ax.set_ylim(0, 1)
        ax.set_ylabel(label)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="pdf", metadata={"Title": title, "CreationDate": None})
        plt.close(fig)
    return buffer.getvalue()


def test_other_bytes_of_the_same_drawing_pass():
    old, new = figure_pdf(title="made with one fontTools"), figure_pdf(title="made with another")
    assert old != new
    assert compare_figures.drawing_difference(old, new) is None


def test_a_moved_line_fails():
    assert compare_figures.drawing_difference(figure_pdf(), figure_pdf(y_end=0.8)) == "page 1 draws something else"


def test_changed_text_fails():
    assert compare_figures.drawing_difference(figure_pdf(), figure_pdf(label="error")) == "its text differs"


def test_the_command_compares_with_the_commit(tmp_path):
    """Run in a repository as CI runs it: exit 0 on a re-saved figure, 1 with one line naming a changed one."""
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "figures").mkdir()
    for name in ("same", "moved"):
        (tmp_path / "figures" / f"{name}.pdf").write_bytes(figure_pdf())
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "figures")
    (tmp_path / "figures" / "same.pdf").write_bytes(figure_pdf(title="re-saved"))

    def compare():
        return subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True)

    passed = compare()
    assert passed.returncode == 0, passed.stdout
    assert passed.stdout.strip() == "compare_figures: 2 of 2 figures draw what HEAD draws"
    (tmp_path / "figures" / "moved.pdf").write_bytes(figure_pdf(y_end=0.5))
    failed = compare()
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[0].startswith("figures/moved.pdf: page 1 draws something else")
