"""The README's preset table and colab.yaml's estimate are what reporting/preset_times.py computes from the records."""

import re

from cifar_resnet.config import PRESETS_DIR, preset_names
from cifar_resnet.reporting.preset_times import presets_times_markdown, reference, training_time

from conftest import ROOT

RESULTS = ROOT / "results"


def test_the_readme_lists_every_preset_with_its_time_labelled():
    table = presets_times_markdown(RESULTS)
    assert table in (ROOT / "README.md").read_text()
    rows = table.splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == preset_names()
    for row in rows:
        cells = row.split("|")[3:5]
        assert all(cell.strip().endswith(("(measured)", "(estimated)")) for cell in cells), row


def test_only_recorded_runs_count_as_measured():
    assert training_time(RESULTS, "best", "NVIDIA H200").measured
    assert not training_time(RESULTS, "best", "Tesla T4").measured
    assert not training_time(RESULTS, "colab", "NVIDIA H200").measured
    # speed94.json timed the retired speed-run trainer's 10.5 epochs, not today's fast94: an estimate from it
    assert not training_time(RESULTS, "fast94", "NVIDIA H200").measured


def test_the_colab_preset_fits_a_session_and_its_file_states_the_estimate():
    t4 = training_time(RESULTS, "colab", "Tesla T4")
    assert not t4.measured and t4.seconds <= 45 * 60
    comment = (PRESETS_DIR / "colab.yaml").read_text()
    _, rate, _, _ = reference(RESULTS, "colab")
    numbers = [f"{rate:,.0f} images/s", f"{rate * 65 / 989:,.0f} images/s", f"about {t4.seconds / 60:.0f} min"]
    for number in numbers:
        assert number in comment, number
    assert "ESTIMATE" in comment and re.search(r"\b80 epochs\b", comment)


def test_a_cpu_benchmark_gives_its_preset_a_measured_cpu_time_and_accuracy(tmp_path):
    import json
    import shutil

    (tmp_path / "runs" / "best").mkdir(parents=True)
    (tmp_path / "bench").mkdir()
    shutil.copy(RESULTS / "runs" / "best" / "metrics.json", tmp_path / "runs" / "best")
    shutil.copy(RESULTS / "bench" / "speed94.json", tmp_path / "bench")
    from cifar_resnet.config import config_to_dict, load_config

    bench = {"preset": "cpu", "overrides": {}, "train_seconds": 871.2, "test_acc_tta": 0.9123, "cpu": "Some CPU",
             "threads": 2, "config": config_to_dict(load_config("cpu"))}
    (tmp_path / "bench" / "cpu.json").write_text(json.dumps(bench))
    rows = {row.split("`")[1]: row for row in presets_times_markdown(tmp_path).splitlines()[2:]}
    assert rows["cpu"].endswith("| 14.5 min, 91.23% with TTA (measured: Some CPU, 2 threads) |")
    assert rows["best"].endswith("|  |")  # no CPU time is estimated
    (tmp_path / "bench" / "cpu.json").write_text(json.dumps({**bench, "overrides": {"train.epochs": 1}}))
    assert "(a shortened run: train.epochs 1)" in presets_times_markdown(tmp_path)
    (tmp_path / "bench" / "cpu.json").write_text(json.dumps({**bench, "config": {}}))  # an earlier recipe of cpu
    assert presets_times_markdown(tmp_path).splitlines()[4].endswith("|  |")
