"""benchmarks/cpu_race.py: airbench94's own code against the CPU preset `train` picks here, here as a smoke race on
the synthetic data; airbench's side where its sdist is unpacked at AIRBENCH_SDIST, else recorded as skipped."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifar_resnet.training.launch_policy import default_preset
from conftest import ROOT, bench_record_and_readme

sys.path.insert(0, str(ROOT / "benchmarks"))
import cpu_race  # noqa: E402

AIRBENCH = Path(os.environ.get("AIRBENCH_SDIST", "/tmp/ab/airbench-0.1.8"))


def test_a_smoke_race_records_both_sides(synthetic_root, tmp_path):
    out = tmp_path / "race.json"
    patched = (torch.cuda.Event, torch.cuda.synchronize, torch.nn.Module.cuda, torch.nn.Module.half)
    threads = torch.get_num_threads()
    argv = ["--smoke", "--data-root", str(synthetic_root), "--json", str(out), "--threads", "1", "--budget", "1"]
    try:
        assert cpu_race.main(argv + (["--airbench", str(AIRBENCH)] if AIRBENCH.is_dir() else [])) == 0
    finally:
        torch.set_num_threads(threads)
    assert (torch.cuda.Event, torch.cuda.synchronize, torch.nn.Module.cuda, torch.nn.Module.half) == patched
    record = json.loads(out.read_text())
    assert record["status"] == "finished" and record["smoke"] and record["budget"] == 1
    assert record["threads"] == 1 and record["cpu"] and record["torch_version"] == torch.__version__
    assert record["git_commit"] and record["precision"] in ("fp32", "bf16") and record["ours"]["config"]["name"] == default_preset(torch.device("cpu"))[0]
    sides = [record["ours"]] + ([] if "skipped" in record["airbench"] else [record["airbench"]])
    if AIRBENCH.is_dir():
        assert len(sides) == 2, record["airbench"]
        assert record["airbench"]["version"] == "0.1.8" and record["airbench"]["epochs"] > 0
        assert -1 <= record["acc_difference"] <= 1 and record["ratio_seconds"] > 0
    for side in sides:
        assert 0 <= side["acc"] <= 1 and 0 <= side["acc_tta"] <= 1 and side["train_seconds"] > 0, side
    if len(sides) == 1:
        assert record["airbench"]["skipped"] and record["acc_difference"] is None


def test_a_real_race_without_airbench_says_where_to_get_it(tmp_path):
    if subprocess.run([sys.executable, "-c", "import airbench"], cwd=tmp_path, capture_output=True).returncode == 0:
        pytest.skip("airbench is installed here: the real race would start")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_race.py"), "--airbench", str(tmp_path),
                           "--json", str(tmp_path / "race.json")], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)  # a folder with no airbench in it
    assert done.returncode == 2 and "pip download --no-deps --no-binary :all: airbench==0.1.8" in done.stderr
    assert not (tmp_path / "race.json").exists()


def test_the_readme_quotes_the_recorded_race():
    """Each number the README gives of the recorded race is the record's."""
    race, said = bench_record_and_readme("cpu_race.json", "On a CPU, `python benchmarks/cpu_race.py")
    ours, airbench = race["ours"], race["airbench"]
    lead = f"{abs(100 * race['acc_difference']):.2f} points {'ahead' if race['acc_difference'] >= 0 else 'behind'}"
    for quoted in (f"`{ours['name']}` preset", f"{ours['epochs']} epoch", f"{race['budget']:.0f} s budget",
                   f"({ours['train_seconds']:.1f} s", f"reached {100 * ours['acc_tta']:.2f}%",
                   f"trained {airbench['epochs']:.2f} epochs", f"({airbench['train_seconds']:.1f} s)",
                   f"to {100 * airbench['acc_tta']:.2f}%", lead, f"{race['threads']} threads", race["precision"]):
        assert quoted in said, quoted
