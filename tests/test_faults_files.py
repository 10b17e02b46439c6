"""Files and folders that are not what they should be (issue 28, items 3, 5, 6 and 9): links and other kinds of
file in a run folder, planted temporary names, a killed or concurrent `record`, folders that are files,
read-only or full. Each refusal is one line and exit status 2, every file that was there is byte-identical
after, nothing appears outside the folders named, and no temporary file is left behind."""

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest

from cifar_resnet import cli, files, run_folder
from cifar_resnet.reporting import records

from conftest import CONFIGS
from faults import (no_temporary_files, one_thread, read_only, refused, small_disk, snapshot,  # noqa: F401
                    train_argv)

SMOKE_SPACE = str(CONFIGS / "search_space_smoke.yaml")


def record_argv(run: Path, results: Path, *extra: str) -> list[str]:
    return ["record", str(run), "--results", str(results), *extra]


# ---- 5: a run folder's files are its own regular files -----------------------------------------------------------
def make_other_kind(path: Path, kind: str, secret: Path) -> None:
    """Put a file of another kind than a regular one of its own at `path`."""
    path.unlink(missing_ok=True)
    if kind == "link":
        path.symlink_to(secret)
    elif kind == "dangling link":
        path.symlink_to(secret.parent / "nothing-here")
    elif kind == "relative link":
        path.symlink_to(os.path.relpath(secret, path.parent))
    elif kind == "hard link":
        os.link(secret, path)
    elif kind == "folder":
        path.mkdir()
        (path / "inside").write_text("x")
    elif kind == "fifo":
        os.mkfifo(path)


KINDS = ["link", "dangling link", "relative link", "hard link", "folder", "fifo"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["train.log", run_folder.CONFIG, run_folder.HISTORY, run_folder.WEIGHTS,
                                  run_folder.METRICS, run_folder.PREDICTIONS])
def test_record_copies_regular_files_only(run_copy, tmp_path, capsys, kind, name):
    secret = tmp_path / "secret"
    secret.write_bytes((run_copy / name).read_bytes() if (run_copy / name).exists() else b"password: hunter2\n")
    make_other_kind(run_copy / name, kind, secret)
    line = refused(capsys, record_argv(run_copy, tmp_path / "results", "--weights"), tmp_path)
    assert str(run_copy / name) in line


@pytest.mark.parametrize("kind", ["link", "hard link", "fifo"])
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_weights_and_records_are_never_read_through_a_link(run_copy, tmp_path, capsys, kind, command):
    for name in (run_folder.WEIGHTS, run_folder.CONFIG, run_folder.METRICS):
        copy = tmp_path / f"outside-{name}"
        shutil.copyfile(run_copy / name, copy)
        make_other_kind(run_copy / name, kind, copy)
        images = tmp_path / "images.npy"
        __import__("numpy").save(images, __import__("numpy").zeros((2, 32, 32, 3), "uint8"))
        argv = (["evaluate", str(run_copy), "--device", "cpu"] if command == "evaluate"
                else ["predict", str(run_copy), str(images), "--out", str(tmp_path / "p.csv"), "--device", "cpu"])
        line = refused(capsys, argv, tmp_path)
        assert str(run_copy / name) in line
        (run_copy / name).unlink()
        shutil.copyfile(copy, run_copy / name)
        copy.unlink()
        images.unlink()


# ---- 6: temporary files: created exclusively, never through a link, always removed --------------------------------
def test_a_write_replaces_a_link_and_never_writes_through_one(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("mine")
    target = tmp_path / "metrics.json"
    target.symlink_to(victim)
    for planted in [f".{target.name}.{os.getpid()}.tmp", f".{target.name}.tmp"]:  # the old, predictable names
        (tmp_path / planted).symlink_to(victim)
    run_folder.atomic_write_text(target, "{}\n")
    assert victim.read_text() == "mine" and not target.is_symlink() and target.read_text() == "{}\n"


def test_a_temporary_name_taken_by_a_link_is_passed_over(tmp_path, monkeypatch):
    """Even a link planted under the very name the next temporary file draws is never opened (O_EXCL)."""
    victim = tmp_path / "victim"
    victim.write_text("mine")
    names = iter(["planted", "fresh"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    (tmp_path / ".out.csv.planted.tmp").symlink_to(victim)
    run_folder.atomic_write_text(tmp_path / "out.csv", "a,b\n")
    assert victim.read_text() == "mine" and (tmp_path / "out.csv").read_text() == "a,b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.csv.planted.tmp", "out.csv", "victim"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    (tmp_path / "history.csv").write_text("old\n")

    def fails(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", fails)
    with pytest.raises(KeyboardInterrupt):
        run_folder.atomic_write_text(tmp_path / "history.csv", "new\n")
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"] and (tmp_path / "history.csv").read_text() == "old\n"


# ---- 3: a record appears whole or not at all; readers pass over hidden folders ---------------------------------
def test_a_record_interrupted_while_copying_leaves_nothing(run_copy, tmp_path, capsys, monkeypatch):
    writes = []

    def interrupted_on_the_third(path, data):
        writes.append(path)
        if len(writes) == 3:
            raise KeyboardInterrupt
        real(path, data)

    real = files.atomic_write_bytes
    monkeypatch.setattr(files, "atomic_write_bytes", interrupted_on_the_third)
    (tmp_path / "results" / "runs").mkdir(parents=True)
    before = snapshot(tmp_path)
    assert cli.main(record_argv(run_copy, tmp_path / "results", "--weights")) == 130
    assert capsys.readouterr().err.strip() == "cifar-resnet: interrupted"
    assert snapshot(tmp_path) == before and len(writes) == 3


def test_readers_of_the_recorded_runs_pass_over_hidden_folders(run_copy, tmp_path):
    runs = tmp_path / "results" / "runs"
    assert cli.main(record_argv(run_copy, tmp_path / "results", "--name", "kept")) == 0
    for hidden in (".kept.x1y2.tmp", ".draft"):  # what a killed record leaves; anything else hidden
        shutil.copytree(runs / "kept", runs / hidden)
    assert [r.name for r in records.load_runs(runs)] == ["kept"]
    assert records.runs_table(records.load_runs(runs))["run"].tolist() == ["kept"]
    assert [p.parent.name for p in records.recorded_metrics(runs)] == ["kept"]


def test_two_records_of_one_name_at_once_end_one_of_them_in_one_line(run_copy, tmp_path, capsys, monkeypatch):
    """The second to rename its folder finds the first's: one line, and the first's record intact."""
    real, results = records._check_record, tmp_path / "results"

    def the_other_one_finishes_meanwhile(src, weights):
        real(src, weights)
        monkeypatch.setattr(records, "_check_record", real)
        assert cli.main(record_argv(run_copy, results, "--name", "same")) == 0

    monkeypatch.setattr(records, "_check_record", the_other_one_finishes_meanwhile)
    capsys.readouterr()
    assert cli.main(record_argv(run_copy, results, "--name", "same")) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{results / 'runs' / 'same'} exists" in line
    assert sorted(p.name for p in (results / "runs").iterdir()) == ["same"]  # the other one's, whole
    for path in (results / "runs" / "same").iterdir():  # metrics.json: the data's name for the machine's folder
        if path.name == run_folder.METRICS:
            kept = {k: v for k, v in run_folder.read_metrics(run_copy).items() if k != "data_root"}
            assert {k: v for k, v in run_folder.read_metrics(path.parent).items() if k != "data"} == kept
        else:
            assert path.read_bytes() == (run_copy / path.name).read_bytes()


# ---- 9, 3: folders that are files, read-only or full -------------------------------------------------------------
def test_the_runs_folder_naming_a_file(synthetic_root, tmp_path, capsys, monkeypatch):
    (tmp_path / "runs").write_text("not a folder")
    monkeypatch.setenv(run_folder.RUNS_ENV, str(tmp_path / "runs"))
    for argv in (["train", "--config", "smoke", "--data-root", str(synthetic_root), "--device", "cpu"],
                 ["search", "--space", SMOKE_SPACE, "--study", "s", "--trials", "1", "--out", str(tmp_path / "out"),
                  "--data-root", str(synthetic_root), "--device", "cpu"],
                 ["sweep", str(CONFIGS / "plans" / "ablation.yaml"), "--smoke", "--device", "cpu"]):
        line = refused(capsys, argv, tmp_path)
        assert f"{tmp_path / 'runs'} is a file, not a folder" in line and "$CIFAR_RESNET_RUNS" in line


@pytest.mark.parametrize("where", ["an --out inside a file", "an --out that is a folder of files"])
def test_an_out_under_a_file(synthetic_root, tmp_path, capsys, where):
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "run" if where == "an --out inside a file" else tmp_path / "notes.txt" / "a" / "b"
    line = refused(capsys, train_argv(synthetic_root, out), tmp_path)
    assert "notes.txt" in line and "file" in line


def test_read_only_folders_are_refused_before_anything_is_written(run_copy, synthetic_root, tmp_path, capsys,
                                                                  monkeypatch):
    with read_only(tmp_path / "ro") as ro:
        monkeypatch.setenv(run_folder.RUNS_ENV, str(ro))
        for argv in (["train", "--config", "smoke", "--data-root", str(synthetic_root), "--device", "cpu"],
                     train_argv(synthetic_root, ro / "run"),
                     ["search", "--space", SMOKE_SPACE, "--study", "s", "--trials", "1", "--out", str(tmp_path / "o"),
                      "--data-root", str(synthetic_root), "--device", "cpu"],
                     ["search", "--space", SMOKE_SPACE, "--study", "s", "--trials", "1", "--out", str(ro / "out"),
                      "--work-dir", str(tmp_path / "w"), "--data-root", str(synthetic_root), "--device", "cpu"]):
            line = refused(capsys, argv, tmp_path)
            assert str(ro) in line and ("read-only" in line or "permission denied" in line)


def test_a_read_only_results_folder_for_record_and_figures(run_copy, tmp_path, capsys):
    def clone(root):
        shutil.copytree(CONFIGS, root / "configs")
        (root / "results" / "runs").mkdir(parents=True)

    with read_only(tmp_path / "clone", clone) as root:
        line = refused(capsys, record_argv(run_copy, root / "results"), tmp_path)
        assert str(root / "results" / "runs") in line and ("read-only" in line or "permission denied" in line)
        line = refused(capsys, ["figures", "--root", str(root)], tmp_path)
        assert ("read-only" in line or "permission denied" in line)


def test_outputs_in_a_read_only_folder_are_refused_before_anything_is_computed(run_copy, tmp_path, capsys):
    images = tmp_path / "images.npy"
    __import__("numpy").save(images, __import__("numpy").zeros((2, 32, 32, 3), "uint8"))
    with read_only(tmp_path / "ro", lambda ro: shutil.copytree(run_copy, ro / "run")) as ro:
        for argv in (["predict", str(run_copy), str(images), "--out", str(ro / "p.csv"), "--device", "cpu"],
                     ["robustness", str(ro / "run"), "--images", "10", "--device", "cpu"]):
            line = refused(capsys, argv, tmp_path)
            assert str(ro) in line and ("read-only" in line or "permission denied" in line)


def test_a_data_root_that_is_a_file(tmp_path, capsys):
    (tmp_path / "data").write_text("not a folder")
    line = refused(capsys, train_argv(tmp_path / "data", tmp_path / "run"), tmp_path)
    assert f"{tmp_path / 'data'} is a file, not a folder" in line


def test_an_existing_study_in_a_read_only_folder(synthetic_root, tmp_path, capsys):
    def study(work):
        db = sqlite3.connect(work / "s.db")  # a database that exists, of any content
        db.execute("create table t (x)")
        db.commit()
        db.close()

    with read_only(tmp_path / "work", study) as work:
        for where in ([], ["--storage", f"sqlite:///{work / 's.db'}", "--work-dir", str(tmp_path / "trials")]):
            line = refused(capsys, ["search", "--space", SMOKE_SPACE, "--study", "s", "--trials", "1", "--work-dir",
                                    str(work), "--out", str(tmp_path / "out"), "--data-root", str(synthetic_root),
                                    "--device", "cpu", *where], tmp_path)
            assert str(work) in line and ("read-only" in line or "permission denied" in line or "database" in line)


@pytest.mark.parametrize("free", [2_000, 20_000])
def test_a_full_disk_while_recording_leaves_nothing(run_copy, tmp_path, capsys, free):
    with small_disk(tmp_path / "disk", free) as disk:
        (disk / "results" / "runs").mkdir(parents=True)
        line = refused(capsys, record_argv(run_copy, disk / "results", "--weights"), tmp_path)
        assert "no space left" in line and str(disk / "results" / "runs") in line


@pytest.mark.parametrize("free", [3_000, 60_000])
def test_a_full_disk_while_training_leaves_no_temporary_file(synthetic_root, tmp_path, capsys, free):
    """The run folder may keep what was written whole before the disk filled; nothing else changes."""
    with small_disk(tmp_path / "disk", free) as disk:
        before = snapshot(disk)
        capsys.readouterr()
        assert cli.main(train_argv(synthetic_root, disk / "run", "--epochs", "2")) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cifar-resnet:")]
        assert len(lines) == 1 and "no space left" in lines[0] and str(disk / "run") in lines[0], lines
        after = snapshot(disk)
        assert {k: v for k, v in after.items() if not k.startswith(str(disk / "run"))} == before
        assert no_temporary_files(disk)


def test_a_full_disk_while_writing_any_file(tmp_path):
    with small_disk(tmp_path / "disk", 8_192) as disk:
        (disk / "metrics.json").write_text("{}")
        with pytest.raises(run_folder.FolderError, match="no space left on its device"):
            run_folder.atomic_write_bytes(disk / "metrics.json", b"x" * 100_000)
        assert (disk / "metrics.json").read_text() == "{}" and no_temporary_files(disk)
