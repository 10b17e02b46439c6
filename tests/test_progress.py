"""Progress bars on the long commands: shown on a terminal (a pseudo-terminal here) and in a notebook, left out
where the output is a pipe or a file, and under --quiet, as tqdm's conventions have it."""

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest

from cifar_resnet import audience
from cifar_resnet.evaluation import predict_images
from cifar_resnet.studies.sweep import load_plan, run_plan

from conftest import ROOT
from test_data_root import run_elsewhere  # noqa: F401 (a fixture: a finished run trained on synthetic data)
from test_sweep import FakeClock, fake_training, write_plan


class Terminal(io.StringIO):
    def isatty(self):
        return True


def on_terminal(monkeypatch) -> Terminal:
    """stderr as a terminal, in the test itself (pytest's capture puts its own back between set-up and the
    test); what tqdm writes to it is kept."""
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    return screen


@pytest.fixture(autouse=True)
def python_again():
    yield
    audience.use_python()


def test_the_bar_shows_on_a_terminal_and_in_a_notebook_not_in_a_pipe_nor_quiet(monkeypatch):
    on_terminal(monkeypatch)
    assert not audience.progress_bar(total=3).disable  # a terminal
    audience.use_command_line(quiet=True)
    assert audience.progress_bar(total=3).disable  # --quiet
    audience.use_python()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert audience.progress_bar(total=3).disable  # a pipe or a file
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # a notebook's stream is no terminal, but shows the bar
    assert not audience.progress_bar(total=3).disable


def in_a_terminal(*argv) -> str:
    """What `python -m cifar_resnet ARGV` shows on a pseudo-terminal (stdout and stderr both)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns, as a window
    process = subprocess.Popen([sys.executable, "-m", "cifar_resnet", *argv], cwd=ROOT, stdout=follower,
                               stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        screen += chunk
    process.wait(timeout=300)
    os.close(leader)
    assert process.returncode == 0, screen.decode(errors="replace")
    return screen.decode(errors="replace")


def test_robustness_shows_its_bar_on_a_terminal_and_not_with_quiet(run_elsewhere):  # noqa: F811
    shown = in_a_terminal("robustness", str(run_elsewhere), "--images", "2", "--device", "cpu", "--overwrite")
    assert "robustness: 100%" in shown and "92/92" in shown  # 2 images, clean and 45 corrupted views each
    quiet = in_a_terminal("robustness", str(run_elsewhere), "--images", "2", "--device", "cpu", "--quiet", "--overwrite")
    assert "robustness:" not in quiet and "wrote" in quiet


def test_predict_counts_batches_of_a_large_input(run_elsewhere, tmp_path, monkeypatch):  # noqa: F811
    terminal = on_terminal(monkeypatch)
    monkeypatch.setattr(predict_images, "BATCH_SIZE", 4)  # 10 images: 3 batches
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    predict_images.predict_file(run_elsewhere, tmp_path / "images.npy", tmp_path / "out.csv", device="cpu", log=lambda m: None)
    assert "predict: 100%" in terminal.getvalue() and "3/3" in terminal.getvalue()


def test_a_sweep_counts_its_runs_and_the_time_left(tmp_path, monkeypatch):
    terminal = on_terminal(monkeypatch)
    plan = load_plan(write_plan(tmp_path, [{"name": "a"}, {"name": "b"}], time_limit=100))
    clock = FakeClock()
    run_plan(plan, tmp_path / "out", log=lambda m: None, train_fn=fake_training(clock)[0], clock=clock)
    screen = terminal.getvalue()
    assert "sweep: 100%" in screen and "2/2" in screen and "88 s of the 100 s limit left" in screen
