"""The recorded runs and their table files (`reporting/records.py`), and the recorded GPU runs in results/runs: intact,
small enough to commit, and reproducible on a CPU."""

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest

from cifar_resnet import audience, run_folder
from cifar_resnet.cli import main
from cifar_resnet.config import load_config, override, save_config
from cifar_resnet.reporting import analysis, records

from conftest import CONFIGS, ROOT, write_predictions

RUNS = ROOT / "results" / "runs"
TREE_LIMIT = 26 * 2**20  # bytes: easy to clone, and every call to a lent GPU carries the tracked tree (at most 26 MB)


def test_the_committed_weights_are_the_recorded_ones():
    metrics = run_folder.read_metrics(RUNS / "best")
    assert run_folder.file_sha256(RUNS / "best" / run_folder.WEIGHTS) == metrics["weights_sha256"]
    run_folder.verify_weights(RUNS / "best")


@pytest.mark.parametrize("name", ["best", "best-seed1"])
def test_recorded_predictions_give_the_recorded_accuracy(name):
    metrics = run_folder.read_metrics(RUNS / name)
    for tta, key in ((False, "test_acc"), (True, "test_acc_tta")):
        pred = analysis.load_predictions(RUNS / name, tta=tta)
        assert len(pred.labels) == 10_000 and pred.tta == ("flip" if tta else "none")
        # Recomputed on a CPU in fp32 from weights the GPU evaluated in bf16: an image or two apart.
        assert pred.accuracy == pytest.approx(metrics[key], abs=0.001)


def test_the_stopped_run_is_marked_and_has_no_result():
    metrics = run_folder.read_metrics(RUNS / "best-e170")
    assert metrics["status"] == "time_limit" and metrics["epochs_completed"] < metrics["epochs"]
    assert "test_acc" not in metrics and not (RUNS / "best-e170" / run_folder.PREDICTIONS).exists()


def test_the_tracked_tree_stays_under_15_mb():
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = [ROOT / p for p in files.decode().split("\0") if p]
    assert sum(p.stat().st_size for p in paths if p.is_file()) < TREE_LIMIT


def test_cifar_resnet_evaluate_reproduces_the_recorded_accuracy_on_the_cpu(real_root, capsys):
    # One evaluation of the committed weights on the 10,000 test images, without and with flip TTA
    # (about two minutes on a laptop CPU).
    metrics = run_folder.read_metrics(RUNS / "best")
    assert main(["evaluate", str(RUNS / "best"), "--tta", "--device", "cpu", "--data-root", str(real_root)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 10_000 and result["tta"] == "flip"
    assert abs(result["test_acc"] - metrics["test_acc"]) <= 0.001  # within 0.1 points
    assert abs(result["test_acc_tta"] - metrics["test_acc_tta"]) <= 0.001


def _record(root, name, config=None, **metrics):
    run = root / "runs" / name
    run.mkdir(parents=True)
    base = {"name": name, "params": 1000, "epochs_completed": 5, "train_seconds": 10.0, "wall_seconds": 12.0,
            "seed": 0, "tta": "flip", "test_acc_tta": None}
    (run / "metrics.json").write_text(json.dumps({**base, **metrics}))
    if config is not None:
        save_config(config, run / "config.yaml")
    return run


def _finished_record(root, name, **metrics):
    """A run folder as a finished run leaves it, less its predictions: config, metrics, 5 epochs of history."""
    run = _record(root, name, load_config(CONFIGS / "smoke.yaml"), eval_split="test", epochs=5, **metrics)
    run_folder.write_history([{"epoch": e, "test_acc": 0.5} for e in range(1, 6)], run / run_folder.HISTORY)
    return run


def test_best_run_is_best_then_most_accurate_gpu_run_then_the_smoke_run(tmp_path):
    _record(tmp_path, "smoke-cpu", device="cpu", test_acc=0.99)
    runs = records.load_runs(tmp_path / "runs")
    best, reason = records.pick_best_run(runs)
    assert best.name == "smoke-cpu" and "CPU run" in reason and "means little" in reason
    _record(tmp_path, "a", device="NVIDIA H100", test_acc=0.93)
    _record(tmp_path, "b", device="NVIDIA H100", test_acc=0.95)
    _record(tmp_path, "c", device="NVIDIA H100", test_acc=None, status="time_limit")  # never the best
    best, reason = records.pick_best_run(records.load_runs(tmp_path / "runs"))
    assert best.name == "b" and "optimistic" in reason
    _record(tmp_path, "best", device="NVIDIA H100", test_acc=0.94)
    assert records.pick_best_run(records.load_runs(tmp_path / "runs"))[0].name == "best"
    table = records.runs_table(records.load_runs(tmp_path / "runs"))
    assert table["run"].tolist() == ["a", "b", "best", "c", "smoke-cpu"]
    with pytest.raises(FileNotFoundError, match="train one first"):
        records.pick_best_run([])


def test_the_report_and_the_tables_read_one_record_of_a_run_and_write_numbers_alike(tmp_path):
    from cifar_resnet import formats
    from cifar_resnet.reporting import paper

    _record(tmp_path, "smoke-cpu", device="cpu", test_acc=0.99)
    _record(tmp_path, "b", device="NVIDIA H100", test_acc=0.9490999579, test_acc_tta=0.95)
    _record(tmp_path, "odd", device=1, test_acc=0.999)  # a device that is no name: never a GPU result
    recorded = records.load_runs(tmp_path / "runs")
    assert records.best_run(recorded).name == "b" == records.pick_best_run(recorded)[0].name
    assert records.best_run([r for r in recorded if not r.on_gpu]) is None
    assert [type(r) for r in paper.load_results(tmp_path)] == [records.RunRecord] * 3
    assert paper.best_run is records.best_run and paper.tex_escape is records.tex_escape is formats.tex_escape
    b = recorded[0]
    assert (b.test_acc, b.test_acc_tta) == (0.9491, 0.95)  # float32 noise rounded away, as the report states it
    assert formats.thousands(12345.6) == "12{,}346" and formats.thousands(4_815_940) == "4{,}815{,}940"
    assert formats.percent(0.9491) == "94.91" and formats.tex_escape(3) == "3"


def test_runs_of_one_recipe_are_summarised_over_seeds(tmp_path):
    cfg = load_config(CONFIGS / "smoke.yaml")
    _record(tmp_path, "a", override(cfg, **{"train.seed": 0}), device="NVIDIA H200", test_acc=0.9491, test_acc_tta=0.9515)
    _record(tmp_path, "b", override(cfg, **{"train.seed": 1}), device="NVIDIA H200", test_acc=0.9480, test_acc_tta=0.9505,
            train_seconds=20.0, seed=1)
    _record(tmp_path, "longer", override(cfg, **{"train.epochs": 9}), device="NVIDIA H200", test_acc=0.96)
    _record(tmp_path, "stopped", override(cfg, **{"train.seed": 2}), device="NVIDIA H200", status="time_limit")
    seeds = records.seeds_table(records.load_runs(tmp_path / "runs"))
    assert seeds["runs"].tolist() == ["a b", "longer"] and seeds["seeds"].tolist() == [2, 1]
    pair = seeds.iloc[0]
    assert pair["test_acc_mean"] == pytest.approx(0.94855) and pair["test_acc_std"] == pytest.approx(0.000778, abs=1e-6)
    assert pair["train_seconds_mean"] == 15.0 and pd.isna(seeds.iloc[1]["test_acc_std"])
    assert records.mean_std(pair["test_acc_mean"], pair["test_acc_std"]) == "94.86 ± 0.08"
    assert records.mean_std(0.96, float("nan")) == "96.00"
    paths = records.write_seeds_table(seeds, tmp_path / "seeds")
    tex = paths[1].read_text()
    assert "a & -- & 1{,}000 & 2 & 94.86 $\\pm$ 0.08 & 95.10 $\\pm$ 0.07 & 15.0 s \\\\" in tex
    assert "longer & -- & 1{,}000 & 1 & 96.00 & -- & 10.0 s \\\\" in tex


def test_recorded_gpu_runs_keep_their_provenance_and_the_stopped_run_has_no_result():
    run_records = records.load_runs(ROOT / "results" / "runs")
    table = records.runs_table(run_records).set_index("run")
    assert {"best", "best-seed1", "best-e170"} <= set(table.index)
    assert table.loc["best", "status"] == "finished" and table.loc["best", "device"] == "NVIDIA H200"
    assert table.loc["best-e170", "status"] == "time_limit" and pd.isna(table.loc["best-e170", "test_acc"])
    for r in (r for r in run_records if r.on_gpu):  # imported from the GPU records; the cpu run was trained here
        source = r.metrics["provenance"]
        assert source["git_commit"].startswith("528e4a8") and f"--seed {r.metrics['seed']}" in source["command"]
    best, _ = records.pick_best_run(run_records)
    assert best.name == "best" and (best.path / "model.safetensors").is_file()
    assert not (ROOT / "results" / "runs" / "best-seed1" / "model.safetensors").exists()  # the tree stays small
    seeds = records.seeds_table(run_records)
    assert seeds.loc[seeds["model"] == "best", "seeds"].tolist() == [2]  # best and best-seed1; not the stopped run
    epoch, acc = records.last_evaluation(ROOT / "results" / "runs" / "best-e170")
    assert epoch == 164 and acc > 0.9


def test_a_finished_run_is_recorded_into_results_runs(tmp_path):
    run = _finished_record(tmp_path / "mine", "best", device="NVIDIA H100", test_acc=0.9, status="finished")
    with pytest.raises(FileNotFoundError, match="no finished run"):
        records.record_run(run, tmp_path / "results")
    write_predictions(run, np.full((2, 10), 0.1, np.float32), [0, 1])
    (run / "model.safetensors").write_bytes(b"weights")
    recorded = records.record_run(run, tmp_path / "results", name="mine-1")
    assert recorded == tmp_path / "results" / "runs" / "mine-1"
    assert sorted(p.name for p in recorded.iterdir()) == ["config.yaml", "history.csv", "metrics.json",
                                                          "predictions.safetensors"]
    with pytest.raises(FileExistsError, match="exists"):
        records.record_run(run, tmp_path / "results", name="mine-1")
    assert records.newest_run(tmp_path / "mine" / "runs").name == "best"
    assert records.newest_run(tmp_path / "nothing") is None


def test_a_record_forgets_the_folder_its_data_was_in_on_the_machine_that_trained_it(tmp_path):
    run = _finished_record(tmp_path / "mine", "best", device="NVIDIA H100", test_acc=0.9, status="finished",
                           data_root="/home/someone/data")
    write_predictions(run, np.full((2, 10), 0.1, np.float32), [0, 1])
    recorded = records.record_run(run, tmp_path / "results", name="mine-1")
    kept = json.loads((recorded / "metrics.json").read_text())
    assert "data_root" not in kept and kept["test_acc"] == 0.9
    assert kept["data"].startswith("not CIFAR-10's test set: 2 test images in data")  # what it was measured on
    assert json.loads((run / "metrics.json").read_text())["data_root"] == "/home/someone/data"  # the run keeps it


def test_latex_table_is_booktabs_with_escaped_text_and_formatted_numbers(tmp_path):
    table = pd.DataFrame({"run": ["best_seed1", "smoke-cpu"], "params": [4_815_940, 5266], "acc": [0.9512, None]})
    columns = {"run": records.Column("Run"), "params": records.Column("Params", "r", records.thousands),
               "acc": records.Column("Acc.", "r", records.percent)}
    paths = records.write_table(table, tmp_path / "t", columns)
    assert [p.name for p in paths] == ["t.csv", "t.tex"]
    assert paths[1].read_text() == ("\\begin{tabular}{lrr}\n\\toprule\nRun & Params & Acc. \\\\\n\\midrule\n"
                                    "best\\_seed1 & 4{,}815{,}940 & 95.12 \\\\\nsmoke-cpu & 5{,}266 & -- \\\\\n"
                                    "\\bottomrule\n\\end{tabular}\n")
    assert paths[0].read_text().splitlines()[0] == "run,params,acc"


def test_runs_table_keeps_integers_and_marks_missing_values(tmp_path):
    _record(tmp_path, "a", device="NVIDIA H100 80GB HBM3", test_acc=0.951234, status="finished", epochs=5)
    (tmp_path / "runs" / "b").mkdir()
    (tmp_path / "runs" / "b" / "metrics.json").write_text('{"name": "b", "device": "cpu", "params": 7}')
    table = records.runs_table(records.load_runs(tmp_path / "runs"))
    assert table.to_csv(index=False, lineterminator="\n").splitlines()[1:] == [
        "a,a,1000,finished,5,5,10.0,12.0,NVIDIA H100 80GB HBM3,0.9512,,flip,0", "b,b,7,,,,,,cpu,,,,"]
    tex = records.to_latex(table, records.RUNS_COLUMNS)
    assert "a & a & 1{,}000 & 5 & finished & 10.0 s & 12.0 s & H100 80GB HBM3 & 95.12 & -- & 0 \\\\" in tex
    assert "b & b & 7 & -- & -- & -- & -- & CPU & -- & -- & -- \\\\" in tex


def test_tables_for_display_show_percentages_not_fractions():
    table = records.seeds_table(records.load_runs(ROOT / "results" / "runs"))
    shown = records.for_display(table)
    assert shown.loc[0, "test_acc_mean"] == "94.86%" and shown.loc[0, "test_acc_std"] == "0.08%"
    assert shown.loc[0, "params"] == "4,289,754" and shown.loc[0, "train_seconds_mean"] == "166.5"
    assert table.loc[0, "test_acc_mean"] == 0.94855  # the table itself, and the files, keep the fractions


def test_tables_for_display_write_a_missing_value_as_a_dash():
    """The run stopped by its time limit has no accuracy, no TTA and no TTA mode: '-' in each, never a blank
    or NaN (issue 31)."""
    shown = records.for_display(records.runs_table(records.load_runs(ROOT / "results" / "runs")))
    stopped = shown[shown["run"] == "best-e170"].iloc[0]
    assert stopped["test_acc"] == stopped["test_acc_tta"] == stopped["tta"] == "-"
    assert "nan" not in shown.to_string().lower() and "<NA>" not in shown.to_string()


def test_messages_show_a_run_folder_without_the_machine_s_path(tmp_path, monkeypatch):
    """A notebook's saved output names no folder of the machine that ran it (issue 31): a run folder is shown
    relative to the working directory, or to $CIFAR_RESNET_RUNS; elsewhere as given."""
    (tmp_path / "clone").mkdir()
    monkeypatch.chdir(tmp_path / "clone")
    monkeypatch.setenv(run_folder.RUNS_ENV, str(tmp_path / "elsewhere"))
    assert audience.shown_path(tmp_path / "clone" / "runs" / "smoke") == "runs/smoke"
    assert audience.shown_path(tmp_path / "elsewhere" / "smoke") == "$CIFAR_RESNET_RUNS/smoke"
    assert audience.shown_path("/somewhere/else") == "/somewhere/else"


def test_the_newest_gpu_run_passes_over_cpu_smoke_runs(tmp_path):
    for age, (name, device) in enumerate((("smoke", "cpu"), ("on-gpu", "NVIDIA H200"))):
        run = _record(tmp_path, name, device=device, test_acc=0.5)
        (run / run_folder.PREDICTIONS).touch()
        os.utime(run / run_folder.METRICS, (1e9 - age, 1e9 - age))  # the smoke run is the newer one
    assert records.newest_run(tmp_path / "runs").name == "smoke"
    assert records.newest_run(tmp_path / "runs", gpu_only=True).name == "on-gpu"
