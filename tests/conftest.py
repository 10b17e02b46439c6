"""Shared fixtures: a tiny synthetic CIFAR-10 (always) and the real one (where CIFAR10_ROOT points at it)."""

import json
import os
import re
import shutil
import zlib
from pathlib import Path

import pytest
import torch
import yaml

from cifar_resnet import run_folder
from cifar_resnet.config import Config
from cifar_resnet.data.cifar10 import BATCH_DIR, write_synthetic_cifar10

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# ResNet presets: the run configurations (model/data/train); search spaces and speedrun recipes differ.
PRESETS = sorted(p for p in CONFIGS.glob("*.yaml")
                 if "model" in (keys := set(yaml.safe_load(p.read_text()) or {})) and keys <= set(Config.__dataclass_fields__))


@pytest.fixture(scope="session", autouse=True)
def own_runs_folder(tmp_path_factory):
    """Runs written to the default folder go to a temporary one ($CIFAR_RESNET_RUNS), never to your runs/."""
    before = os.environ.get(run_folder.RUNS_ENV)
    os.environ[run_folder.RUNS_ENV] = str(tmp_path_factory.mktemp("runs"))
    yield
    if before is None:
        os.environ.pop(run_folder.RUNS_ENV, None)
    else:
        os.environ[run_folder.RUNS_ENV] = before


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    return write_synthetic_cifar10(tmp_path_factory.mktemp("synthetic"), train_per_class=40, test_per_class=10)


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real CIFAR-10 ($CIFAR10_ROOT, else ./data); skipped where absent, unless REQUIRE_REAL_CIFAR=1 (as in
    CI), where that fails."""
    root = Path(os.environ.get("CIFAR10_ROOT") or ROOT / "data")
    if (root / BATCH_DIR).is_dir():
        return root
    if os.environ.get("REQUIRE_REAL_CIFAR") == "1":
        pytest.fail(f"REQUIRE_REAL_CIFAR=1 but {root} holds no {BATCH_DIR}")
    pytest.skip(f"real CIFAR-10 not available: set CIFAR10_ROOT to a folder holding {BATCH_DIR}")


@pytest.fixture(scope="session")
def finished_run(synthetic_root, tmp_path_factory) -> Path:
    """A finished 1-epoch smoke run on the synthetic data, trained once for the session: never change it (damage
    a `run_copy`)."""
    from cifar_resnet import cli

    out = tmp_path_factory.mktemp("finished") / "smoke"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["train", "--config", str(CONFIGS / "smoke.yaml"), "--out", str(out), "--data-root",
                         str(synthetic_root), "--device", "cpu", "--epochs", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A copy of the finished run to damage, under tmp_path/runs/ (a folder git does not track)."""
    return Path(shutil.copytree(finished_run, tmp_path / "runs" / "smoke"))


def write_predictions(path, probs, labels, tta=None):
    """A run's predictions.safetensors in `path`, as training records them (with flip TTA if `tta` is given)."""
    run_folder.save_predictions(path / run_folder.PREDICTIONS, torch.tensor(probs), torch.tensor(labels),
                                probs_tta=None if tta is None else torch.tensor(tta), split="test",
                                tta="none" if tta is None else "flip")


def pdf_font_sizes(data: bytes) -> list[float]:
    """The font sizes (points) that the text operators (`/F1 7 Tf`) of a matplotlib PDF's content streams set.
    Matplotlib ends a stream's data with a bare newline before `endstream`: a compressed stream's last byte may
    be a carriage return, so none is stripped; fonts and images (not zlib text) are passed over."""
    sizes = []
    for stream in re.finditer(rb"\nstream\n(.*?)\nendstream", data, re.S):
        try:
            body = zlib.decompressobj().decompress(stream.group(1))
        except zlib.error:
            continue
        sizes += [float(size) for size in re.findall(rb"([\d.]+) Tf\b", body)]
    return sizes


def bench_record_and_readme(name: str, opening: str) -> tuple[dict, str]:
    """results/bench/NAME (skipping the test where it is not recorded) and the README's paragraph that begins
    with `opening`, its lines joined by single spaces."""
    path = ROOT / "results" / "bench" / name
    if not path.is_file():
        pytest.skip(f"no {name} recorded in results/bench/")
    readme = (ROOT / "README.md").read_text()
    return json.loads(path.read_text()), " ".join(readme[readme.index(opening):].split("\n\n")[0].split())
