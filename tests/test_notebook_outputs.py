"""The committed notebooks' outputs, as a reader sees them on GitHub: the recorded results, never a CPU
smoke run left in runs/ by the tests or by notebook 03 (whose resume demonstration trains one on purpose),
numbers formatted for reading (no raw dict, no fraction with float noise such as 0.2980000078678131, no
NaN, no accuracy shown both as a fraction and as a percentage), and no folder of the machine that ran them."""

import re

import nbformat
import pytest

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SMOKE_RUNS = ("resume-demo", "CPU smoke run (no result)")
RAW_FRACTION = re.compile(r"(?<![\d.])0\.\d{5,}")  # 0.94855, 0.000778: a fraction, not a percentage
MACHINE_PATH = re.compile(r"(?<![\w.~$-])/(?:tmp|root|home|content|Users|mnt|work|private|var)/")  # /tmp/..., /content/...
MISSING = re.compile(r"\bNaN\b|\bnan\b|<NA>|\bNone\b")  # a missing value as pandas or Python writes it
FRACTION = re.compile(r"(?<![\d.])0\.(\d{3,4})(?![\d%])")  # 0.2980, 0.251
PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s?%")


def shown_text(cell) -> str:
    """The text a reader sees under a code cell: streams and the plain text of results and displays."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


def shown_html(cell) -> str:
    """The HTML of results and displays (pandas tables), which GitHub renders instead of their plain text."""
    parts = [output.get("data", {}).get("text/html", "") for output in cell.get("outputs", [])]
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


def fraction_beside_its_percentage(text: str) -> str | None:
    """A fraction (0.2980) shown where the same value is shown as a percentage (29.80%), or None."""
    percents = [float(p) for p in PERCENT.findall(text)]
    for match in FRACTION.finditer(text):
        value, tolerance = 100 * float(match.group(0)), 0.5 * 10.0 ** (2 - len(match.group(1)))
        if any(abs(value - p) <= tolerance + 1e-9 for p in percents):
            return match.group(0)
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_show_no_smoke_run_and_no_raw_fraction(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        text = shown_text(cell)
        if not path.name.startswith("03_"):
            assert not any(name in text for name in SMOKE_RUNS), f"{path.name}, code cell {i}: a smoke run is shown"
        assert not RAW_FRACTION.search(text), f"{path.name}, code cell {i}: {RAW_FRACTION.search(text).group(0)}"
        assert not re.search(r"^\{'", text, re.M), f"{path.name}, code cell {i}: a raw dict"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_show_no_machine_path_no_nan_and_no_fraction_beside_its_percentage(path):
    """Issue 31: the runs table showed NaN and a blank accuracy, the smoke run's progress bar 0.2980 beside
    29.80%, and the outputs the folders of the machine that executed them (/tmp/cifar_resnet/runs)."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        text, html = shown_text(cell), shown_html(cell)
        for shown in (text, html):
            found = MACHINE_PATH.search(shown) or MISSING.search(shown)
            assert not found, f"{path.name}, code cell {i} shows {found.group(0)!r}: {shown[max(0, found.start() - 80):found.end() + 40]!r}"
        both = fraction_beside_its_percentage(text)
        assert both is None, f"{path.name}, code cell {i} shows {both} as a fraction beside its percentage"


def test_the_check_finds_what_the_issue_found():
    """The outputs the issue reported (notebook 03's dict, notebook 04's seeds table) fail the check."""
    assert RAW_FRACTION.search("{'status': 'finished', 'test_acc': 0.2980000078678131}")
    assert RAW_FRACTION.search("test_acc_std  0.000778") and RAW_FRACTION.search("0.94855")
    assert not RAW_FRACTION.search("94.86%  4,289,754  0.15  1.0")


def test_the_check_finds_the_paths_nan_and_fractions_issue_31_found():
    assert MACHINE_PATH.search("set-up: code in /tmp/cifar_resnet; CIFAR-10 in /work/cifar")
    assert MACHINE_PATH.search("runs in /content/drive/MyDrive/cifar_resnet/runs") and MACHINE_PATH.search("/root/x/")
    assert not MACHINE_PATH.search("runs in $CIFAR_RESNET_RUNS/smoke; results/runs/best; MyDrive/cifar_resnet/runs/")
    assert not MACHINE_PATH.search("~/cifar_resnet-files/runs/ and https://github.com/OWNER/cifar_resnet/tmp/")
    assert MISSING.search("1   best-e170  ...  NVIDIA H200                         NaN     0")
    assert MISSING.search("<td>NaN</td>") and MISSING.search("test_acc  None")
    assert not MISSING.search("Nanjing, nano, 94.91%  -  flip")
    progress = "smoke: 100%|##| 60/60 [00:03<00:00, acc=0.251, epoch=4, test=0.2980]\ntest accuracy 29.80%, 30.00% with TTA"
    assert fraction_beside_its_percentage(progress) == "0.2980"
    assert fraction_beside_its_percentage("acc 0.2980 ... 29.80%") == "0.2980"
    assert fraction_beside_its_percentage("lr 0.0933 train loss 2.2826 acc 15.00% test acc 15.60%") is None
    assert fraction_beside_its_percentage("0.9491 and 94.86%") is None  # different values
