"""The notebooks' set-up, after their first cell has found or cloned the repository: install the project where
a fresh runtime needs it, and choose where CIFAR-10 and the runs are kept.

Standard library only: the set-up cell imports this module from the clone before the project's
dependencies are installed (the package's `__init__` imports nothing until asked).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

COLAB_KEEP = Path("/content/drive/MyDrive/cifar_resnet")  # on Google Drive: outlives the runtime
STUDIO_LAB_KEEP = "cifar_resnet-files"  # in Studio Lab's home folder, which persists between sessions
VARIABLES = ("CIFAR_RESNET_RUNS", "CIFAR10_ROOT")  # set before the notebook runs, they win


def on_colab() -> bool:
    return "google.colab" in sys.modules


def on_studio_lab() -> bool:
    return Path.home().name == "studio-lab-user"


def version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def install(root: Path) -> None:
    """pip install the clone at `root` (editable, with the analysis extras), keeping the preinstalled torch and
    torchvision (Colab's and Studio Lab's builds match their CUDA) unless torch is older than the project's
    lower bound."""
    lowest = re.search(r"^torch>=([\d.]+)", (root / "requirements.txt").read_text(), re.MULTILINE).group(1)
    have = {name: version_of(name) for name in ("torch", "torchvision")}

    def numbers(version: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", version)[:2])

    if have["torch"] and numbers(have["torch"]) < numbers(lowest):
        print(f"set-up: torch {have['torch']} is older than the project's lower bound {lowest}: pip upgrades it")
        have = {}
    pins = [f"{name}=={version}" for name, version in have.items() if version]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--editable", f"{root}[analysis]", *pins],
                   check=True)


@dataclass(frozen=True)
class Places:
    """Where a notebook keeps things: the clone (`root`), CIFAR-10 (`data_root`) and the runs (`runs_dir`);
    `keep` is the folder that outlives the runtime (Drive, Studio Lab's home), None where that is the clone."""
    root: Path
    data_root: Path
    runs_dir: Path
    keep: Path | None
    given: dict[str, str | None]

    def shown(self, path: Path, variable: str) -> str:
        """`path` as a notebook's output names it: no folder of the machine that ran it is saved with it."""
        if self.given[variable]:
            return f"${variable}"
        place = "MyDrive/cifar_resnet/" if self.keep == COLAB_KEEP else f"~/{self.keep.name}/" if self.keep else ""
        return f"{place}{path.relative_to(self.keep or self.root)}/"


def prepare(root: str | Path, version: str, *, cloned: bool, use_drive: bool = True) -> Places:
    """Install the project where this runtime lacks this version of it (a clone made now, Colab, Studio Lab),
    move to `root`, mount Google Drive on Colab when `use_drive`, choose the places and print them in one line."""
    root = Path(root)
    if version_of("cifar_resnet") != version and (cloned or on_colab() or on_studio_lab()):
        install(root)
    os.chdir(root)
    keep = None
    if on_colab() and use_drive:
        from google.colab import drive

        drive.mount("/content/drive")
        keep = COLAB_KEEP
    elif on_studio_lab():
        keep = Path.home() / STUDIO_LAB_KEEP
    given = {name: os.environ.get(name) for name in VARIABLES}
    os.environ.setdefault("CIFAR10_ROOT", str((keep or root) / "data"))
    places = Places(root, Path(os.environ["CIFAR10_ROOT"]), Path(given["CIFAR_RESNET_RUNS"] or (keep or root) / "runs"),
                    keep, given)
    print(f"set-up: code in {'a clone made now' if cloned else 'this clone of the repository'} (ROOT); CIFAR-10 in "
          f"{places.shown(places.data_root, 'CIFAR10_ROOT')} (DATA_ROOT); runs in "
          f"{places.shown(places.runs_dir, 'CIFAR_RESNET_RUNS')} (RUNS_DIR)"
          + (" (on the runtime's disk: lost with it)" if on_colab() and not keep else ""))
    return places
