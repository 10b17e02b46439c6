"""What the fault tests share: a snapshot of folders, `refused` (one line, exit status 2, nothing changed, nothing
written outside), the train command line, and small folders that are full or read-only (tmpfs mounts where this
process may mount, else skipped with the reason)."""

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import torch

from cifar_resnet import cli

from conftest import CONFIGS, ROOT

SMOKE = str(CONFIGS / "smoke.yaml")


def snapshot(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under `roots` (links as their target's name), and every folder, by path."""
    found = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_symlink():
                found[str(p)] = "link:" + os.readlink(p)
            elif p.is_file():
                found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_dir():
                found[str(p)] = "folder"
            else:
                found[str(p)] = "other"
    return found


def _outside(roots) -> tuple:
    """What a command must not change beyond the folders it was given: the clone's tracked and untracked files
    (as git sees them), what lies beside each root (the test session's temporary folder, for a test's
    tmp_path) and the default runs folder ($CIFAR_RESNET_RUNS)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                                capture_output=True, text=True).stdout
    except OSError:
        status = ""
    beside = {str(p) for root in roots for p in Path(root).resolve().parent.iterdir()}
    runs = os.environ.get("CIFAR_RESNET_RUNS")
    return status, beside, snapshot(Path(runs)) if runs and Path(runs).is_dir() else {}


def refused(capsys, argv: list[str], *roots: Path, status: int = 2) -> str:
    """Run the command; assert exit `status` (2), one line on stderr, `roots` unchanged (no file or folder
    changed, added or removed) and nothing written outside them; return the line."""
    before, outside = snapshot(*roots), _outside(roots)
    capsys.readouterr()
    assert cli.main(argv) == status
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cifar-resnet: error: " if status == 2 else "cifar-resnet: "), err
    assert snapshot(*roots) == before
    assert _outside(roots) == outside
    return lines[0]


def train_argv(synthetic_root, out, *extra) -> list[str]:
    return ["train", "--config", SMOKE, "--out", str(out), "--data-root", str(synthetic_root), "--device", "cpu",
            *extra]


def no_temporary_files(*roots: Path) -> bool:
    """No file or folder under `roots` is a temporary one of an atomic write or a record."""
    return not [p for root in roots for p in Path(root).rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks on a busy CPU: one thread is many times faster than several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mount(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextlib.contextmanager
def small_disk(folder: Path, free: int):
    """`folder` on a 1 MiB tmpfs with about `free` bytes left (a filler file takes the rest); skipped where this
    process cannot mount one (not root, or a sandbox without mount)."""
    if not _mount(folder, "size=1m"):
        pytest.skip("cannot mount a 1 MiB tmpfs here (needs root and a mount namespace): the full-disk cases need one")
    try:
        stats = os.statvfs(folder)
        filler = folder / "filler"
        filler.write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - free))
        yield folder
    finally:
        _unmount(folder)


@contextlib.contextmanager
def read_only(folder: Path, fill=None):
    """`folder`, holding what `fill(folder)` writes, made read-only: chmod for a user that is not root (whom
    permissions do not stop), else a tmpfs remounted read-only; skipped where neither is possible."""
    if os.geteuid() != 0:
        folder.mkdir(parents=True, exist_ok=True)
        if fill:
            fill(folder)
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(0o555)
        try:
            yield folder
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    if not _mount(folder, "size=64m"):
        pytest.skip("cannot mount a tmpfs here (a read-only folder for root needs one)")
    try:
        if fill:
            fill(folder)
        if subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode:
            pytest.skip("cannot remount a tmpfs read-only here")
        yield folder
    finally:
        _unmount(folder)
