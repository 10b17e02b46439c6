"""Nothing overwritten, nothing written through a link, nothing recorded wrongly (issue 37): every file the
project writes goes through the one atomic writer that refuses links, a command that would replace a result
refuses without --overwrite, and set-address is checked whole before its first file changes. Each refusal is
one line and exit status 2, every file that was there is byte-identical after, nothing appears outside the
folders named, and no temporary file is left behind."""

import os
import re
import shutil
import time

import nbformat
import pytest

from cifar_resnet import cli, run_folder

from conftest import CONFIGS, ROOT
from faults import no_temporary_files, one_thread, refused, snapshot, train_argv  # noqa: F401

URL = "https://github.com/someone/cifar_resnet"


# ---- the one atomic writer ------------------------------------------------------------------------------------
PLAIN_WRITES = re.compile(r"\.write_text\(|\.write_bytes\(|open\([^)]*['\"][wax]b?['\"]|nbformat\.write\(|"
                          r"savefig\((?!buffer)|\.to_csv\((?!buffer|index|lineterminator)|torch\.save\((?!state, buffer)")


def test_every_file_the_library_writes_goes_through_the_atomic_writer():
    """A plain write_text follows a link planted at its path and leaves half a file when stopped: only
    files.py opens files for writing."""
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in sorted((ROOT / "cifar_resnet").rglob("*.py"))
             if p.name != "files.py" for n, line in enumerate(p.read_text().splitlines(), 1)
             if PLAIN_WRITES.search(line) and not line.lstrip().startswith("#")]
    assert found == []


# ---- 1: set-address -------------------------------------------------------------------------------------------
@pytest.fixture
def clone(tmp_path):
    """The files set-address writes, copied into tmp_path/clone."""
    root = tmp_path / "clone"
    for name in ("pyproject.toml", "README.md", "report/authors.yaml", "report/authors.tex",
                 *(f"notebooks/{p.name}" for p in sorted((ROOT / "notebooks").glob("0*.ipynb")))):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    return root


def test_set_address_never_writes_through_a_planted_link(clone, tmp_path, capsys):
    secret = tmp_path / "outside.tex"
    secret.write_text("mine\n")
    (clone / "report" / "authors.tex").unlink()
    (clone / "report" / "authors.tex").symlink_to(secret)
    assert cli.main(["set-address", URL, "--root", str(clone)]) == 0
    assert secret.read_text() == "mine\n" and not (clone / "report" / "authors.tex").is_symlink()
    assert f"\\newcommand\\RepoURL{{{URL}}}" in (clone / "report" / "authors.tex").read_text()
    assert no_temporary_files(clone)


def test_set_address_is_checked_whole_before_the_first_file_changes(clone, tmp_path, capsys):
    last = sorted((clone / "notebooks").glob("0*.ipynb"))[-1]
    last.write_text('{"cells": [')  # a notebook cut short: found before pyproject.toml or the README change
    line = refused(capsys, ["set-address", URL, "--root", str(clone)], tmp_path)
    assert str(last) in line and "nothing was written" in line


@pytest.mark.parametrize("authors, shown", [("[Ada, Alan]", "{Ada, Alan}"), ("Ada Lovelace", "{Ada Lovelace}")])
def test_a_list_of_authors_is_printed_as_names(clone, authors, shown):
    """Item 12: `authors: [Ada, Alan]` printed `['Ada', 'Alan']` into the paper."""
    (clone / "report" / "authors.yaml").write_text(f"authors: {authors}\naffiliations: [One, Two]\n")
    assert cli.main(["set-address", URL, "--root", str(clone)]) == 0
    tex = (clone / "report" / "authors.tex").read_text()
    assert f"\\newcommand\\ReportAuthors{shown}" in tex and "\\newcommand\\ReportAffiliations{One \\\\ Two}" in tex


@pytest.mark.parametrize("authors", ["{first: Ada}", "42", "[Ada, [Alan]]", "'a: [b"])
def test_authors_that_are_not_names_are_refused_in_one_line(clone, tmp_path, capsys, authors):
    (clone / "report" / "authors.yaml").write_text(f"authors: {authors}\n")
    line = refused(capsys, ["set-address", URL, "--root", str(clone)], tmp_path)
    assert "authors.yaml" in line


def test_the_report_numbers_replace_a_planted_link(tmp_path):
    from cifar_resnet.reporting.paper import write_numbers

    secret = tmp_path / "outside.tex"
    secret.write_text("mine\n")
    out = tmp_path / "generated" / "numbers.tex"
    out.parent.mkdir()
    for name in ("numbers.tex", "results_table.tex"):
        (out.parent / name).symlink_to(secret)
    (tmp_path / "results" / "runs").mkdir(parents=True)
    write_numbers(tmp_path / "results", out)
    assert secret.read_text() == "mine\n" and not out.is_symlink() and "\\newcommand" in out.read_text()
    assert no_temporary_files(tmp_path)


# ---- 3: sweep --write-configs ---------------------------------------------------------------------------------
def test_write_configs_keeps_a_users_files_unless_overwrite(tmp_path, capsys):
    plan = str(CONFIGS / "plans" / "ablation.yaml")
    folder = tmp_path / "configs"
    folder.mkdir()
    assert cli.main(["sweep", plan, "--write-configs", str(folder), "--device", "cpu"]) == 0
    mine, *others = sorted(folder.iterdir())
    for path in others:  # only the user's own file of one of those names is there
        path.unlink()
    mine.write_text("mine: true\n")
    line = refused(capsys, ["sweep", plan, "--write-configs", str(folder), "--device", "cpu"], tmp_path)
    assert f"{mine} exists" in line and "--overwrite" in line
    assert cli.main(["sweep", plan, "--write-configs", str(folder), "--device", "cpu", "--overwrite"]) == 0
    assert mine.read_text() != "mine: true\n" and no_temporary_files(tmp_path)


# ---- 6: train --overwrite ---------------------------------------------------------------------------------------
def test_train_overwrite_removes_what_was_made_from_the_old_run(run_copy, synthetic_root, tmp_path, capsys):
    (run_copy / "robustness.json").write_text("{}\n")
    (run_copy / "train.log").write_text("the old run's log\n")
    old = time.time() - 3600
    os.utime(run_copy / "train.log", (old, old))
    (run_copy / "notes.txt").write_text("mine\n")
    assert cli.main(train_argv(synthetic_root, run_copy, "--epochs", "1", "--overwrite")) == 0
    assert not (run_copy / "robustness.json").exists() and not (run_copy / "train.log").exists()
    assert (run_copy / "notes.txt").read_text() == "mine\n" and (run_copy / run_folder.WEIGHTS).is_file()


def test_train_overwrite_keeps_the_log_tee_is_writing(run_copy, synthetic_root, capsys):
    (run_copy / "train.log").write_text("this run's first lines\n")  # just opened by `... | tee train.log`
    assert cli.main(train_argv(synthetic_root, run_copy, "--epochs", "1", "--overwrite")) == 0
    assert (run_copy / "train.log").read_text() == "this run's first lines\n"


# ---- 4, 13: record records only what evaluate would accept --------------------------------------------------------
def record_argv(run, results, *extra):
    return ["record", str(run), "--results", str(results), *extra]


@pytest.mark.parametrize("weights", ["with a fingerprint", "saved before fingerprints"])
def test_record_refuses_weights_that_no_longer_fit_the_configuration(run_copy, tmp_path, capsys, weights):
    if weights == "saved before fingerprints":  # the same tensors, without the configuration's fingerprint
        older = tmp_path / "older" / run_folder.WEIGHTS
        older.parent.mkdir()
        run_folder.save_weights(run_folder.load_weights(run_copy / run_folder.WEIGHTS), older)
        shutil.copyfile(older, run_copy / run_folder.WEIGHTS)
        shutil.rmtree(older.parent)
        metrics = run_folder.read_metrics(run_copy)
        run_folder.write_metrics({**metrics, "weights_sha256": run_folder.file_sha256(run_copy / run_folder.WEIGHTS)},
                                 run_copy / run_folder.METRICS)
    config = run_copy / run_folder.CONFIG
    config.write_text(config.read_text().replace("stem_channels: 8\n", "stem_channels: 12\n"))
    line = refused(capsys, record_argv(run_copy, tmp_path / "results", "--weights"), tmp_path)
    assert (f"{config} changed after" in line if weights == "with a fingerprint"
            else "does not fit the configuration" in line)


@pytest.mark.parametrize("command", ["record", "record without weights", "evaluate"])
def test_a_configuration_changed_after_training_is_found_by_its_fingerprint(run_copy, tmp_path, capsys, command):
    """The same network, another recipe: the weights still load, the record would report the wrong recipe."""
    config = run_copy / run_folder.CONFIG
    text = config.read_text()
    config.write_text(re.sub(r"\n  lr: [^\n]*", "\n  lr: 0.123", text, count=1))
    assert config.read_text() != text
    argv = {"record": record_argv(run_copy, tmp_path / "results", "--weights"),
            "record without weights": record_argv(run_copy, tmp_path / "results"),
            "evaluate": ["evaluate", str(run_copy), "--device", "cpu"]}[command]
    line = refused(capsys, argv, tmp_path)
    assert f"{config} changed after" in line


@pytest.mark.parametrize("cut", ["mid-line", "a row short"])
def test_record_refuses_a_history_cut_short(run_copy, tmp_path, capsys, cut):
    history = run_copy / run_folder.HISTORY
    data = history.read_bytes()
    history.write_bytes(data[:-7] if cut == "mid-line" else data[:data.rstrip(b"\n").rfind(b"\n") + 1])
    line = refused(capsys, record_argv(run_copy, tmp_path / "results"), tmp_path)
    assert str(history) in line


@pytest.mark.parametrize("key", ["epochs_completed", "eval_split", "test_acc"])
def test_record_refuses_metrics_without_what_a_finished_run_has(run_copy, tmp_path, capsys, key):
    metrics = run_folder.read_metrics(run_copy)
    del metrics[key]
    run_folder.write_metrics(metrics, run_copy / run_folder.METRICS)
    line = refused(capsys, record_argv(run_copy, tmp_path / "results"), tmp_path)
    assert key in line and str(run_copy / run_folder.METRICS) in line


def test_a_run_on_other_data_is_recorded_by_that_name_and_never_tabled_as_cifar10(run_copy, tmp_path):
    from cifar_resnet.reporting import records

    assert cli.main(record_argv(run_copy, tmp_path / "results", "--name", "synthetic")) == 0
    recorded = tmp_path / "results" / "runs" / "synthetic"
    data = run_folder.read_metrics(recorded)["data"]
    assert data.startswith("not CIFAR-10's test set: 100 test images") and "data_root" not in run_folder.read_metrics(recorded)
    runs = records.load_runs(tmp_path / "results" / "runs")
    assert records.runs_table(runs)["test_acc"].isna().all()
    readme = records.write_runs_readme(runs, tmp_path / "README.md").read_text()
    assert f"measured on {data}: no CIFAR-10 test accuracy" in readme


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_finished_run_recorded_without_weights_says_so(run_copy, tmp_path, capsys, command):
    """Item 13: not "the run has not finished; train it"."""
    assert cli.main(record_argv(run_copy, tmp_path / "results", "--name", "kept")) == 0
    recorded = tmp_path / "results" / "runs" / "kept"
    images = tmp_path / "images.npy"
    __import__("numpy").save(images, __import__("numpy").zeros((2, 32, 32, 3), "uint8"))
    argv = (["evaluate", str(recorded), "--device", "cpu"] if command == "evaluate"
            else ["predict", str(recorded), str(images), "--out", str(tmp_path / "p.csv"), "--device", "cpu"])
    line = refused(capsys, argv, tmp_path)
    assert "recorded without its weights" in line and "has not finished" not in line


# ---- 5: results are found from the clone, not the current folder --------------------------------------------------
@pytest.mark.parametrize("where", ["results", "results/runs", "notebooks"])
def test_record_from_inside_the_clone_lands_in_its_results(run_copy, tmp_path, monkeypatch, where):
    clone = tmp_path / "clone"
    (clone / "results" / "runs").mkdir(parents=True)
    (clone / "notebooks").mkdir()
    (clone / "pyproject.toml").write_text("[project]\n")
    monkeypatch.chdir(clone / where)
    assert cli.main(["record", str(run_copy), "--name", "x"]) == 0
    assert [p.relative_to(clone).as_posix() for p in clone.rglob("x")] == ["results/runs/x"]


def test_record_outside_a_clone_asks_for_results(run_copy, tmp_path, capsys, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    line = refused(capsys, ["record", str(run_copy)], tmp_path)
    assert "no clone" in line and "--results" in line


# ---- a result is replaced only with --overwrite; of two writers racing, one is refused ----------------------------
def test_robustness_keeps_an_existing_record_unless_overwrite(run_copy, tmp_path, capsys):
    (run_copy / "robustness.json").write_text('{"kept": true}\n')
    line = refused(capsys, ["robustness", str(run_copy), "--images", "2", "--device", "cpu"], tmp_path)
    assert f"{run_copy / 'robustness.json'} exists" in line and "--overwrite" in line
    assert cli.main(["robustness", str(run_copy), "--images", "2", "--device", "cpu", "--overwrite"]) == 0
    assert '"clean_acc"' in (run_copy / "robustness.json").read_text() and no_temporary_files(tmp_path)


def test_of_two_writers_of_a_new_file_the_later_is_refused(tmp_path, monkeypatch):
    """The other writer's file appears between the check and the write: it is kept, this one refused."""
    from cifar_resnet import files

    target = tmp_path / "p.csv"

    def other_writer_first(*args, **kwargs):
        target.write_text("theirs\n")
        return real(*args, **kwargs)

    real = files.tempfile.mkstemp
    monkeypatch.setattr(files.tempfile, "mkstemp", other_writer_first)
    with pytest.raises(FileExistsError, match="written by another process meanwhile"):
        files.atomic_write_text(target, "mine\n", new=True)
    assert target.read_text() == "theirs\n" and no_temporary_files(tmp_path)


def test_two_predicts_of_one_out_at_once_end_one_of_them_in_one_line(run_copy, tmp_path, capsys, monkeypatch):
    from cifar_resnet.evaluation import predict_images

    images = tmp_path / "images.npy"
    __import__("numpy").save(images, __import__("numpy").zeros((2, 32, 32, 3), "uint8"))
    out = tmp_path / "p.csv"
    real = predict_images.predict_both

    def the_other_one_finishes_meanwhile(*args, **kwargs):
        monkeypatch.setattr(predict_images, "predict_both", real)
        assert cli.main(["predict", str(run_copy), str(images), "--out", str(out), "--device", "cpu"]) == 0
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_images, "predict_both", the_other_one_finishes_meanwhile)
    capsys.readouterr()
    assert cli.main(["predict", str(run_copy), str(images), "--out", str(out), "--device", "cpu"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{out} exists (written by another process meanwhile)" in line
    assert out.read_text().startswith("ID,Labels") and no_temporary_files(tmp_path)


# ---- 12: user text in results/README.md -------------------------------------------------------------------------
def test_names_with_a_bar_or_a_newline_keep_the_runs_table_whole(tmp_path):
    import json

    from cifar_resnet.reporting import records

    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"name": "mine | yours\nand more", "params": 10, "epochs": 1,
                                                  "epochs_completed": 1, "status": "finished", "train_seconds": 1.0,
                                                  "wall_seconds": 1.0, "device": "cpu|gpu", "test_acc": 0.5,
                                                  "seed": 0}))
    text = records.write_runs_readme(records.load_runs(tmp_path / "runs"), tmp_path / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| a |"))
    assert row.replace("\\|", "").count("|") == 12 and "mine \\| yours and more" in row
