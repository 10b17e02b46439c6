"""The committed notebooks' outputs, as a reader sees them on GitHub: the recorded results, never a CPU
smoke run left in runs/ by the tests or by notebook 03 (whose resume demonstration trains one on purpose),
and numbers formatted for reading (no raw dict, no fraction with float noise such as 0.2980000078678131)."""

import re

import nbformat
import pytest

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SMOKE_RUNS = ("resume-demo", "CPU smoke run (no result)")
RAW_FRACTION = re.compile(r"(?<![\d.])0\.\d{5,}")  # 0.94855, 0.000778: a fraction, not a percentage


def shown_text(cell) -> str:
    """The text a reader sees under a code cell: streams and the plain text of results and displays."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_show_no_smoke_run_and_no_raw_fraction(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        text = shown_text(cell)
        if not path.name.startswith("03_"):
            assert not any(name in text for name in SMOKE_RUNS), f"{path.name}, code cell {i}: a smoke run is shown"
        assert not RAW_FRACTION.search(text), f"{path.name}, code cell {i}: {RAW_FRACTION.search(text).group(0)}"
        assert not re.search(r"^\{'", text, re.M), f"{path.name}, code cell {i}: a raw dict"


def test_the_check_finds_what_the_issue_found():
    """The outputs the issue reported (notebook 03's dict, notebook 04's seeds table) fail the check."""
    assert RAW_FRACTION.search("{'status': 'finished', 'test_acc': 0.2980000078678131}")
    assert RAW_FRACTION.search("test_acc_std  0.000778") and RAW_FRACTION.search("0.94855")
    assert not RAW_FRACTION.search("94.86%  4,289,754  0.15  1.0")
