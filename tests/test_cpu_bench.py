"""The CPU presets' records as notebook 04 shows them: their CPU runs count, the smoke runs do not."""

import json
from pathlib import Path

from cifar_resnet.reporting.cpu_bench import (cpu_bench_summary, cpu_holdout_caption, cpu_holdout_table, cpu_preset_runs,
                                              holdout_records)
from cifar_resnet.reporting.records import RunRecord


def test_only_finished_cpu_runs_of_a_cpu_preset_are_results():
    runs = [RunRecord(Path("a"), {"name": "cpu", "device": "cpu", "status": "finished"}),
            RunRecord(Path("e"), {"name": "cpu_fp32", "device": "cpu", "status": "finished"}),
            RunRecord(Path("b"), {"name": "smoke", "device": "cpu", "status": "finished"}),
            RunRecord(Path("c"), {"name": "cpu", "device": "NVIDIA H200", "status": "finished"}),
            RunRecord(Path("d"), {"name": "cpu", "device": "cpu", "status": "time_limit"})]
    assert [r.name for r in cpu_preset_runs(runs)] == ["a", "e"]


def test_the_summary_and_the_holdout_tables_come_from_the_files(tmp_path):
    assert "python benchmarks/cpu.py --preset cpu writes it" in cpu_bench_summary(tmp_path)
    assert holdout_records(tmp_path) == [] and cpu_holdout_table(tmp_path / "bench" / "cpu_holdout.json").empty
    (tmp_path / "bench").mkdir()
    bench = {"overrides": {}, "test_acc_tta": 0.9012, "tta": "flip_translate", "train_seconds": 870.4,
             "images_per_second": 590.0, "precision": "bf16", "cpu": "Some CPU", "threads": 2,
             "torch_version": "2.x", "git_commit": "abcdef0123"}
    (tmp_path / "bench" / "cpu.json").write_text(json.dumps(bench))
    assert cpu_bench_summary(tmp_path) == ("cpu benchmark: 90.12% with flip_translate TTA after 870 s of training, "
                                           "590 images/s in bf16 on Some CPU with 2 threads (torch 2.x, commit abcdef0)")
    assert "no " in cpu_bench_summary(tmp_path, "cpu_fp32") and holdout_records(tmp_path, "cpu_fp32") == []
    row = {"name": "preset", "params": 1, "time_budget": 168.0, "epochs": 2, "val_acc": 0.8, "val_acc_tta": 0.81,
           "train_seconds": 1.0, "cpu_seconds": 2.0, "changes": {}, "wall_seconds": 3.0, "images_per_second": 301.6}
    record = {"preset": "cpu", "split": "last 5000 training images", "scale": 0.2, "cpu": "Some CPU", "threads": 2,
              "git_commit": "abcdef0123", "chosen": "preset", "candidates": [row]}
    (tmp_path / "bench" / "cpu_holdout.json").write_text(json.dumps(record))
    [path] = holdout_records(tmp_path)
    assert cpu_holdout_table(path).to_dict("records") == [{**{k: v for k, v in row.items()
                                                              if k not in ("changes", "wall_seconds")},
                                                           "images_per_second": 302.0}]
    assert cpu_holdout_caption(path) == ("cpu_holdout.json: 1 candidates around cpu, 0.2 of the preset's time budget "
                                         "each, scored on the last 5000 training images; Some CPU with 2 threads, "
                                         "commit abcdef0; most accurate with TTA: preset")
    # a preset's comparisons are all its files, and only its own (cpu_holdout* is not cpu_fp32_holdout*)
    for name, changes in (("cpu_fp32_holdout.json", {}), ("cpu_fp32_holdout_epochs.json", {"epochs": 3})):
        (tmp_path / "bench" / name).write_text(json.dumps({**record, "preset": "cpu_fp32", **changes,
                                                           "candidates": [{**row, "name": "wider"}]}))
    paths = holdout_records(tmp_path, "cpu_fp32")
    assert [p.name for p in paths] == ["cpu_fp32_holdout.json", "cpu_fp32_holdout_epochs.json"]
    assert holdout_records(tmp_path, "cpu") == [path]
    assert list(cpu_holdout_table(paths[0])["name"]) == ["wider"]
    assert "3 epochs each" in cpu_holdout_caption(paths[1])
