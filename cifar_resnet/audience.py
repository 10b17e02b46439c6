"""Where the output is read, decided in one place: the form of the library's advice, and its progress bars.

A message that tells the user what to do next names it in the reader's own terms (`advise`): in Python (a
notebook or a script, the library's default) the call, `train(cfg, out_dir, resume=True)`; on the command
line the flag, `--resume`; and on the command line outside a clone (after a plain `pip install`: no Makefile,
no configs/ folder) preset names, `--config smoke`, where a clone would name its files. The command line
calls `use_command_line()` once, before it runs a command; nothing else sets the form.

Progress bars (`progress_bar`) follow tqdm's conventions: shown on a terminal and in a notebook, left out
where the output goes to a file or a pipe, and never under `quiet` (the command line's `--quiet`).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

RUNS_ENV = "CIFAR_RESNET_RUNS"  # where your own runs go instead of ./runs (the tests point it at a temporary folder)

PYTHON, COMMAND_LINE, INSTALLED = "python", "command line", "installed"  # the three forms a message takes
_reader = {"command_line": False, "quiet": False}


def use_command_line(*, quiet: bool = False) -> None:
    """Advise in command-line terms from now on (what `cifar-resnet` calls); `quiet`: no progress bars."""
    _reader.update(command_line=True, quiet=quiet)


def use_python() -> None:
    """Advise in Python calls again (the library's default), with progress bars."""
    _reader.update(command_line=False, quiet=False)


def in_clone(folder: str | Path = ".") -> bool:
    """Whether `folder` is a clone's root (its Makefile and configs/), as opposed to a plain `pip install`."""
    return (Path(folder) / "Makefile").is_file() and (Path(folder) / "configs").is_dir()


def form() -> str:
    """The form messages take here: PYTHON, COMMAND_LINE (in a clone) or INSTALLED (command line, no clone)."""
    if not _reader["command_line"]:
        return PYTHON
    return COMMAND_LINE if in_clone() else INSTALLED


def advise(python: str, command_line: str, installed: str | None = None) -> str:
    """The one of the three forms of a piece of advice that fits the reader (`installed` defaults to
    `command_line`, for advice that names no file of a clone)."""
    return {PYTHON: python, COMMAND_LINE: command_line, INSTALLED: installed or command_line}[form()]


def option(python: str, flag: str) -> str:
    """An option's name as the reader gives it: `data_root=` in Python, `--data-root` on the command line."""
    return advise(python, flag)


def resume_advice(out_dir: str | Path) -> str:
    """How to continue the run in `out_dir` (as `shown_path` writes it: `$CIFAR_RESNET_RUNS/x`, which a shell
    expands, and which a notebook names `RUNS_DIR / "x"`, its set-up cell's folder) from its checkpoint."""
    folder = str(out_dir)
    prefix = f"${RUNS_ENV}/"
    python = f'RUNS_DIR / "{folder[len(prefix):]}"' if folder.startswith(prefix) else f'"{folder}"'
    return advise(f"train(cfg, {python}, resume=True)", f"cifar-resnet train --out {folder} --resume")


def progress_bar(iterable=None, **options):
    """A tqdm bar (`tqdm.auto`: a widget in a notebook), shown on a terminal or in a notebook, disabled
    where the output is a file or a pipe (tqdm's `disable=None`) and under `quiet`."""
    with warnings.catch_warnings():  # without ipywidgets, tqdm.auto warns and falls back to text: fine
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

    if _reader["quiet"]:
        disable = True
    else:
        disable = False if "ipykernel" in sys.modules else None  # a notebook's stream is no terminal, but shows it
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **options)


def shows_progress() -> bool:
    """Whether progress bars are shown here (a terminal or a notebook, and not quiet)."""
    return not _reader["quiet"] and (sys.stderr.isatty() or "ipykernel" in sys.modules)


def shown_path(path: str | Path) -> str:
    """`path` as messages write it: relative to the working directory (a clone's root) where it lies there, else
    as `$CIFAR_RESNET_RUNS/...` where it lies in that folder, else as given; so a notebook's saved output names
    no folder of the machine that ran it."""
    path = Path(path)
    runs = os.environ.get(RUNS_ENV)
    for base, name in ((Path.cwd(), None), (Path(runs) if runs else None, f"${RUNS_ENV}")):
        if base is not None and path.resolve().is_relative_to(base.resolve()):
            inside = path.resolve().relative_to(base.resolve())
            return str(Path(name, inside) if name else inside)
    return str(path)
