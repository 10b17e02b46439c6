"""The path of a new user on Colab or Studio Lab, simulated on the CPU: notebook 03 alone in an empty folder,
and the project installed with pip (not editable) into a fresh environment, run from an empty folder."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from cifar_resnet.config import load_config
from cifar_resnet.data.cifar10 import write_synthetic_cifar10
from cifar_resnet.models import count_parameters, create_model
from cifar_resnet.reporting.address import read_version, setup_cell

from conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "03_training.ipynb"


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """A git repository holding this working tree's files (committed or not), as the remote to clone."""
    repo = tmp_path_factory.mktemp("origin")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() or source.is_symlink():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name, follow_symlinks=False)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run([*git, *args], cwd=repo, check=True)
    return repo


def notebook(repo_url: str | None):
    """Notebook 03, its outputs cleared, with REPO_URL set as a user would set it."""
    nb = nbformat.read(NOTEBOOK, as_version=nbformat.NO_CONVERT)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    cell = setup_cell(nb)
    if repo_url:
        cell.source = cell.source.replace('REPO_URL = "https://github.com/USER/cifar_resnet"', f'REPO_URL = "{repo_url}"')
    choice = next(c for c in nb.cells if c.cell_type == "code" and "CPU_PRESET, CPU_EPOCHS = " in c.source)
    choice.source = re.sub(r"^CPU_PRESET, CPU_EPOCHS = .*$", 'CPU_PRESET, CPU_EPOCHS = "smoke", None', choice.source,
                           count=1, flags=re.M)  # as a user would: the pipeline in seconds on the synthetic images
    return nb


def execute(nb, folder: Path):
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def printed(nb, marker: str) -> str:
    cell = next(c for c in nb.cells if c.cell_type == "code" and marker in c.source)
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """An empty folder for the notebook, CIFAR-10 (synthetic) where the set-up cell keeps it, runs beside."""
    installed, version = importlib.metadata.version("cifar_resnet"), read_version(ROOT)
    if installed != version:  # the set-up cell would then pip install into this environment: never in a test
        pytest.fail(f"this environment's cifar_resnet is {installed}, the notebooks' {version}: run `make setup`")
    folder = tmp_path / "content"
    folder.mkdir()
    monkeypatch.setenv("CIFAR10_ROOT", str(write_synthetic_cifar10(tmp_path / "data", train_per_class=40,
                                                                     test_per_class=10)))
    monkeypatch.setenv("CIFAR_RESNET_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the clone's code, not this checkout's, as on a runtime
    return folder


def test_with_the_placeholder_address_the_first_cell_stops_in_one_line(runtime):
    nb = notebook(None)
    with pytest.raises(CellExecutionError):
        execute(nb, runtime)
    setup = setup_cell(nb)
    (error,) = [out for out in setup.outputs if out.output_type == "error"]
    assert error.ename == "SetupError" and len(error.traceback) == 1
    assert error.traceback[0].startswith("set-up: REPO_URL is the placeholder") and "set REPO_URL" in error.traceback[0]
    later = nb.cells[nb.cells.index(setup) + 1:]
    assert all(c.get("execution_count") is None and not c.get("outputs") for c in later if c.cell_type == "code")
    assert os.listdir(runtime) == []  # nothing cloned


def setup_error(nb, folder: Path) -> str:
    """Execute `nb` in `folder`, expecting its set-up cell to stop: the one line it shows."""
    with pytest.raises(CellExecutionError):
        execute(nb, folder)
    (error,) = [out for out in setup_cell(nb).outputs if out.output_type == "error"]
    assert error.ename == "SetupError" and len(error.traceback) == 1
    return error.traceback[0]


def test_an_address_of_another_repository_is_refused_and_leaves_nothing(runtime, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "README.md").write_text("another project\n")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "other"]):
        subprocess.run([*git, *args], cwd=other, check=True)
    line = setup_error(notebook(str(other)), runtime)
    assert line == f"set-up: {other} is not the cifar_resnet repository: check REPO_URL at the top of this cell"
    assert os.listdir(runtime) == []  # the wrong clone is removed: the right address then clones afresh


def test_a_folder_left_by_a_failed_set_up_is_named(runtime, origin):
    (runtime / "cifar_resnet").mkdir()
    line = setup_error(notebook(str(origin)), runtime)
    assert line.startswith("set-up: cifar_resnet/ exists here and is not a clone of the project") and "delete it" in line


# Injected before the training cell: the runtime dies right after the first epoch is saved (checkpoint, history).
DISCONNECT = """from cifar_resnet import run_folder as _runs
_write_history = _runs.write_history
def _save_then_disconnect(*args, **kwargs):
    _write_history(*args, **kwargs)
    raise KeyboardInterrupt
_runs.write_history = _save_then_disconnect"""


def disconnect_during_training(nb, folder: Path) -> None:
    """Run the notebook until the runtime 'disconnects' after the first epoch of its training cell."""
    index = next(i for i, c in enumerate(nb.cells) if "train_in_sessions(cfg" in c.source)
    nb.cells.insert(index, nbformat.v4.new_code_cell(DISCONNECT))
    with pytest.raises(CellExecutionError, match="TrainingInterrupted"):
        execute(nb, folder)


def test_notebook_03_alone_clones_trains_and_continues_after_a_disconnect(runtime, origin, tmp_path):
    url = f"file://{origin}"
    run = tmp_path / "runs" / "smoke"
    first = notebook(url)
    disconnect_during_training(first, runtime)
    setup_output = printed(first, "REPO_URL = ")
    assert "the repository has no release tags yet" in setup_output and "cloning its default branch" in setup_output
    assert (runtime / "cifar_resnet" / "pyproject.toml").is_file()
    training = printed(first, "train_in_sessions(cfg")
    assert "starting smoke" in training and "estimated from 3 timed steps" in training and "Run all" in training
    assert (run / "checkpoint.pt").is_file() and not (run / "metrics.json").exists()
    done = len((run / "history.csv").read_text().splitlines()) - 1
    assert done == 1

    second = execute(notebook(url), runtime)  # a new session: the same notebook, run again
    assert "cloning" not in printed(second, "REPO_URL = ")  # the clone is there: not fetched again
    training = printed(second, "train_in_sessions(cfg")
    assert "continuing smoke" in training and f"resuming $CIFAR_RESNET_RUNS/{run.name} after epoch {done}" in training
    history = (run / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2", "3", "4"]
    assert '"status": "finished"' in (run / "metrics.json").read_text()

    third = execute(notebook(url), runtime)
    assert "holds the finished run of smoke" in printed(third, "train_in_sessions(cfg")


def test_a_session_stops_cleanly_before_its_limit(synthetic_root, tmp_path):
    from cifar_resnet.config import override
    from cifar_resnet.training.session import train_in_sessions

    cfg = override(load_config("smoke"), **{"data.root": str(synthetic_root)})
    said = []
    metrics = train_in_sessions(cfg, tmp_path / "run", session_limit=1e-9, log=said.append, progress=False)
    assert metrics["status"] == "time_limit" and metrics["epochs_completed"] == 0
    assert "this session stops before" in said[0] and "estimated from 3 timed steps" in said[0]
    assert said[-1].startswith("stopped without training: epoch 1 does not fit in the session's")
    assert not any(line.startswith("time limit of") for line in said)  # one instruction, not the engine's too


def test_pip_install_outside_a_clone_has_the_presets(origin, tmp_path):
    """`pip install` (not editable) of a clone into a fresh environment that sees this one's packages."""
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, pip, setuptools, ...
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(clone)],
                   check=True, env=env, cwd=tmp_path)
    shutil.rmtree(clone)  # nothing may come from the clone any more
    empty = tmp_path / "empty"
    empty.mkdir()
    for preset in ("colab", "best"):
        result = subprocess.run([env_dir / "bin" / "cifar-resnet", "summary", "--config", preset], cwd=empty, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        expected = count_parameters(create_model(load_config(preset).model))
        assert f"{preset}: {expected:,} trainable parameters" in result.stdout
    assert expected == 4_289_754  # best: the recorded network
    figures = subprocess.run([env_dir / "bin" / "cifar-resnet", "figures"], cwd=empty, env=env, capture_output=True,
                             text=True)
    assert figures.returncode == 2 and "needs a clone of the repository" in figures.stderr
    assert os.listdir(empty) == []
