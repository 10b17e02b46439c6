"""Each piece of advice in its three forms: a Python call (the library's default, what a notebook reads), a flag
on the command line in a clone, and preset names or a `git clone` line on the command line after `pip install`."""

import pytest
import torch

from cifar_resnet import audience
from cifar_resnet.cli import main
from cifar_resnet.config import load_config
from cifar_resnet.data.cifar10 import DataError, load_cifar10
from cifar_resnet.reporting.address import read_address
from cifar_resnet.reporting.records import require_clone
from cifar_resnet.training.launch_policy import Estimate, SlowRunError, refuse_slow_run

from conftest import ROOT


@pytest.fixture(params=[audience.PYTHON, audience.COMMAND_LINE, audience.INSTALLED])
def reader(request, monkeypatch, tmp_path):
    """Each form in turn: Python; the command line in a clone's root; the command line in an empty folder."""
    if request.param != audience.PYTHON:
        audience.use_command_line()
        monkeypatch.chdir(ROOT if request.param == audience.COMMAND_LINE else tmp_path)
    assert audience.form() == request.param
    yield request.param
    audience.use_python()


def message(error_type, call) -> str:
    with pytest.raises(error_type) as caught:
        call()
    return str(caught.value)


def test_the_cpu_refusal_names_a_cpu_sized_run_as_the_reader_starts_one(reader):
    cfg = load_config("best")
    text = message(SlowRunError, lambda: refuse_slow_run(cfg, Estimate(120, 10_000, 2.0), torch.device("cpu"), log=None))
    expected, absent = {
        audience.PYTHON: (('train(load_config("smoke"), out_dir)', "allow_slow=True"), ("make train", "--")),
        audience.COMMAND_LINE: (("make train CONFIG=configs/smoke.yaml", "--allow-slow"), ("allow_slow=", "load_config")),
        audience.INSTALLED: (("cifar-resnet train --config smoke", "--allow-slow"), ("make train", "configs/", "allow_slow=")),
    }[reader]
    assert all(part in text for part in expected) and not any(part in text for part in absent), text


def test_resuming_is_the_call_or_the_flag(reader):
    text = audience.resume_advice("runs/best")
    assert text == ('train(cfg, "runs/best", resume=True)' if reader == audience.PYTHON
                    else "cifar-resnet train --out runs/best --resume")


def test_resuming_a_folder_under_the_runs_variable_is_advice_that_runs_anywhere(reader):
    """A folder shown as $CIFAR_RESNET_RUNS/x (issue 31: no machine path in a saved notebook) is the notebooks'
    RUNS_DIR / "x" in Python (the set-up cell's folder, which it exports as $CIFAR_RESNET_RUNS)."""
    text = audience.resume_advice("$CIFAR_RESNET_RUNS/smoke")
    assert text == ('train(cfg, RUNS_DIR / "smoke", resume=True)'
                    if reader == audience.PYTHON else "cifar-resnet train --out $CIFAR_RESNET_RUNS/smoke --resume")


def test_missing_data_names_data_root_as_the_reader_gives_it(reader, tmp_path):
    text = message(DataError, lambda: load_cifar10(tmp_path / "nowhere", download=False))
    assert ("data_root=" in text) == (reader == audience.PYTHON) and ("--data-root" in text) != (reader == audience.PYTHON)


def test_a_command_that_needs_a_clone_says_how_to_get_one(reader, tmp_path):
    text = message(Exception, lambda: require_clone(tmp_path, "cifar-resnet figures"))
    clone = f"git clone {read_address(ROOT)}"
    assert (clone in text) == (reader != audience.COMMAND_LINE)  # in a clone, --root names it
    assert ("--root CLONE" in text) == (reader != audience.PYTHON) and ("root=" in text) == (reader == audience.PYTHON)


def test_the_command_line_sets_the_form_and_puts_it_back(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no clone here: as after `pip install`
    assert main(["figures", "--root", str(tmp_path)]) == 2
    assert f"get one with `git clone {read_address(ROOT)}`" in capsys.readouterr().err
    assert audience.form() == audience.PYTHON  # main() leaves the library's default behind
