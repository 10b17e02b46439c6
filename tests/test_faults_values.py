"""Values and inputs that ended in a traceback or the wrong words (issue 37): every value a configuration can
hold is checked for what the code downstream takes, every input is bounded before it is read whole, and a
mistake ends in one line naming it and the fix, exit status 2, nothing changed on disk."""

import pytest
import yaml

from cifar_resnet import cli

from conftest import CONFIGS
from faults import no_temporary_files, one_thread, refused, train_argv  # noqa: F401

SMOKE = CONFIGS / "smoke.yaml"


def smoke_with(tmp_path, text: str):
    """configs/smoke.yaml with `text` appended under its own sections (written as YAML text, so that what
    yaml.safe_dump would never write, a key twice say, can be written)."""
    path = tmp_path / "mine.yaml"
    path.write_text(SMOKE.read_text() + text)
    return path


# ---- 7: values beyond what torch takes ------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [("data.cutout", 10**21), ("data.cutout", 33), ("train.epochs", 2**63),
                                        ("train.batch_size", 10**30), ("data.train_subset", -2**64)])
def test_values_torch_cannot_take_are_refused_before_anything_is_written(synthetic_root, tmp_path, capsys, key,
                                                                        value):
    section, name = key.split(".")
    data = yaml.safe_load(SMOKE.read_text())
    data[section][name] = value
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump(data))
    line = refused(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--data-root",
                            str(synthetic_root), "--device", "cpu"], tmp_path)
    assert key in line and not (tmp_path / "run").exists()


# ---- 11: duplicate keys, aliases, a path that is not the preset -------------------------------------------------
def test_a_key_given_twice_is_refused(tmp_path, capsys):
    data = yaml.safe_load(SMOKE.read_text())
    text = yaml.safe_dump(data).replace("  lr: ", "  lr: 0.05\n  lr: ", 1)
    config = tmp_path / "mine.yaml"
    config.write_text(text)
    line = refused(capsys, ["summary", "--config", str(config)], tmp_path)
    assert str(config) in line and "'lr' appears twice" in line


def test_aliases_are_refused_before_they_expand(tmp_path, capsys):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    config = tmp_path / "laughs.yaml"
    config.write_text(laughs)
    line = refused(capsys, ["summary", "--config", str(config)], tmp_path)
    assert "alias" in line


def test_a_file_that_never_ends_is_not_read_whole(tmp_path, capsys):
    config = tmp_path / "huge.yaml"
    config.write_text("# " + "x" * 2_000_000 + "\n")
    line = refused(capsys, ["summary", "--config", str(config)], tmp_path)
    assert "over 1,000,000 bytes" in line


def test_a_missing_path_ending_in_configs_is_not_the_preset(tmp_path, capsys):
    missing = tmp_path / "missing" / "dir" / "configs" / "smoke.yaml"
    line = refused(capsys, ["summary", "--config", str(missing)], tmp_path)
    assert f"configuration file not found: {missing}" in line


def test_a_preset_name_and_configs_name_still_mean_the_preset(capsys):
    assert cli.main(["summary", "--config", "smoke"]) == 0 and cli.main(["summary", "--config", "configs/smoke.yaml"]) == 0


# ---- 8: the search's CSVs, read by figures ----------------------------------------------------------------------
@pytest.mark.parametrize("name, content", [
    ("main_importance.csv", "param,importance\nx,high\n"),      # no numeric column: was StopIteration
    ("main_importance.csv", "a,b\n1,2\n"),                      # no names
    ("main_importance.csv", ""),                                # empty
    ("main_importance.csv", "param,importance\nx,nan\n"),
    ("main.csv", "number,state\n1,complete\n"),                 # not the trials' columns
    ("main.csv", b"\xff\xfe\x00garbage".decode("latin-1")),
])
def test_figures_refuses_a_search_csv_it_cannot_draw_before_drawing_anything(tmp_path, capsys, name, content):
    import shutil

    root = tmp_path / "clone"
    shutil.copytree(CONFIGS, root / "configs")
    (root / "results" / "runs").mkdir(parents=True)
    (root / "results" / "search").mkdir()
    (root / "results" / "search" / name).write_bytes(content.encode("latin-1"))
    line = refused(capsys, ["figures", "--root", str(root)], tmp_path)
    assert str(root / "results" / "search" / name) in line


# ---- 10, 14: paths too long or holding a newline, command-line mistakes, a failed download, a LaTeX error ----------
def test_an_out_too_long_for_the_system_is_refused_before_an_epoch(synthetic_root, tmp_path, capsys):
    out = tmp_path / "/".join(["d" * 200] * 20)  # each name fits; the whole path passes PATH_MAX (4,096 bytes)
    line = refused(capsys, train_argv(synthetic_root, out), tmp_path)
    assert "bytes long" in line and "limit of" in line and "choose a shorter one" in line and len(line) < 400


def test_a_name_too_long_is_named_as_such(synthetic_root, tmp_path, capsys):
    line = refused(capsys, train_argv(synthetic_root, tmp_path / ("n" * 300)), tmp_path)
    assert "a name in it is 300 bytes long" in line


@pytest.mark.parametrize("argv", [["train", "--time-limit", "1h"], ["train", "--epochs", "1.5"], ["train", "--nope"],
                                  ["trian"], ["sweep"]])
def test_a_command_line_mistake_is_one_line(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("cifar-resnet: error: ") and "--help" in err


def test_a_data_root_with_a_newline_is_one_line(tmp_path, capsys):
    line = refused(capsys, train_argv(tmp_path / "two\nlines", tmp_path / "run"), tmp_path)
    assert "two\\nlines" in line


def test_a_failed_download_leaves_none_of_the_folders_it_made(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils

    from cifar_resnet.data.cifar10 import DataError, load_cifar10

    def offline(*args, download_root, **kwargs):
        __import__("os").makedirs(download_root, exist_ok=True)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    (tmp_path / "kept").mkdir()
    with pytest.raises(DataError):
        load_cifar10(tmp_path / "kept" / "a" / "b" / "data")
    assert [p.name for p in tmp_path.rglob("*")] == ["kept"]


def test_a_latex_error_at_the_authors_line_points_at_authors_yaml(tmp_path):
    from cifar_resnet.reporting.address import authors_hint as _authors_hint

    (tmp_path / "report.tex").write_text("\\documentclass{article}\n\\author{\\ReportAuthors}\n\\begin{document}\n")
    assert "authors.yaml" in _authors_hint(tmp_path, ["./report.tex:2: Undefined control sequence."])
    assert _authors_hint(tmp_path, ["./report.tex:3: Undefined control sequence."]) == ""


# ---- inputs bounded before they are read whole -------------------------------------------------------------------
def test_an_npz_that_unpacks_past_the_limit_is_refused_before_it_is_read(run_copy, tmp_path, capsys, monkeypatch):
    import numpy as np

    from cifar_resnet.data import user_images

    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, data=np.zeros((2000, 32, 32, 3), np.uint8))  # 6 MB of zeros in a few kB
    monkeypatch.setattr(user_images, "MAX_INPUT_BYTES", 1_000_000)
    line = refused(capsys, ["predict", str(run_copy), str(bomb), "--out", str(tmp_path / "p.csv"), "--device", "cpu"],
                   tmp_path)
    assert str(bomb) in line and "(unpacked), over the 1,000,000" in line


def test_a_pipe_as_input_is_refused_not_read(run_copy, tmp_path, capsys):
    import os

    os.mkfifo(tmp_path / "images.pkl")
    line = refused(capsys, ["predict", str(run_copy), str(tmp_path / "images.pkl"), "--out", str(tmp_path / "p.csv"),
                            "--device", "cpu"], tmp_path)
    assert "not a regular file" in line
