"""The CPU presets' records as notebook 04 shows them: their CPU runs count, the smoke runs do not."""

import json
from pathlib import Path

from cifar_resnet.reporting.cpu_bench import cpu_bench_summary, cpu_holdout_table, cpu_preset_runs
from cifar_resnet.reporting.records import RunRecord


def test_only_finished_cpu_runs_of_a_cpu_preset_are_results():
    runs = [RunRecord(Path("a"), {"name": "cpu", "device": "cpu", "status": "finished"}),
            RunRecord(Path("e"), {"name": "cpu_fp32", "device": "cpu", "status": "finished"}),
            RunRecord(Path("b"), {"name": "smoke", "device": "cpu", "status": "finished"}),
            RunRecord(Path("c"), {"name": "cpu", "device": "NVIDIA H200", "status": "finished"}),
            RunRecord(Path("d"), {"name": "cpu", "device": "cpu", "status": "time_limit"})]
    assert [r.name for r in cpu_preset_runs(runs)] == ["a", "e"]


def test_the_summary_and_the_holdout_table_come_from_the_files(tmp_path):
    assert "python benchmarks/cpu.py --preset cpu writes it" in cpu_bench_summary(tmp_path)
    assert cpu_holdout_table(tmp_path).empty
    (tmp_path / "bench").mkdir()
    bench = {"overrides": {}, "test_acc_tta": 0.9012, "tta": "flip_translate", "train_seconds": 870.4,
             "images_per_second": 590.0, "precision": "bf16", "cpu": "Some CPU", "threads": 2,
             "torch_version": "2.x", "git_commit": "abcdef0123"}
    (tmp_path / "bench" / "cpu.json").write_text(json.dumps(bench))
    assert cpu_bench_summary(tmp_path) == ("cpu benchmark: 90.12% with flip_translate TTA after 870 s of training, "
                                           "590 images/s in bf16 on Some CPU with 2 threads (torch 2.x, commit abcdef0)")
    assert "no " in cpu_bench_summary(tmp_path, "cpu_fp32") and cpu_holdout_table(tmp_path, "cpu_fp32").empty
    row = {"name": "preset", "params": 1, "time_budget": 168.0, "epochs": 2, "val_acc": 0.8, "val_acc_tta": 0.81,
           "train_seconds": 1.0, "cpu_seconds": 2.0, "changes": {}, "wall_seconds": 3.0}
    (tmp_path / "bench" / "cpu_holdout.json").write_text(json.dumps({"candidates": [row]}))
    assert cpu_holdout_table(tmp_path).to_dict("records") == [{k: v for k, v in row.items()
                                                               if k not in ("changes", "wall_seconds")}]
    (tmp_path / "bench" / "cpu_fp32_holdout.json").write_text(json.dumps({"candidates": [{**row, "name": "wider"}]}))
    assert list(cpu_holdout_table(tmp_path, "cpu_fp32")["name"]) == ["wider"]
