"""How long each preset trains: measured where a run of it is recorded, otherwise estimated.

An estimate scales the nearest measured recipe: the images per second that a recorded run trained at on
its GPU (the ResNet presets: `results/runs/best`; the speed-run recipes: `results/bench/speed94.json`),
times the ratio of training FLOPs per image (forward and backward, counted by torch), times, for another
GPU, the ratio of the two GPUs' published peak half-precision tensor rates. It leaves out what such ratios
cannot see (torch.compile or not, clocks that throttle, the loader), so every estimate is labelled one
until a run on that GPU is recorded. A preset with a CPU benchmark (`results/bench/<preset>.json`, written by
`benchmarks/cpu.py`) also gets its measured time and accuracy on that CPU; no CPU time is estimated.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import PRESETS_DIR, config_to_dict, load_config, preset_names
from ..models import create_model

TRAIN_IMAGES = 50_000
# NVIDIA's datasheets, dense tensor-core peaks in TFLOPS: H200 (SXM) bf16/fp16 989; T4 fp16 65 (no native bf16).
PEAK_TFLOPS = {"NVIDIA H200": 989.0, "Tesla T4": 65.0}
GPUS = {"H200": "NVIDIA H200", "T4": "Tesla T4"}


@dataclass
class Timing:
    """A preset's training seconds on one GPU, and whether they were measured or estimated."""

    seconds: float
    measured: bool

    def __str__(self) -> str:
        if self.seconds < 1:
            text = "under 1 s"
        else:
            text = f"{self.seconds:.0f} s" if self.seconds < 600 else f"{self.seconds / 60:.0f} min"
        return f"{text} ({'measured' if self.measured else 'estimated'})"


SPEED_PRESETS = ("fast94", "fast95")  # estimated from the speed benchmark's record, the others from `best`'s run
SPEED_BENCH = Path("bench") / "speed94.json"  # under results/


@functools.lru_cache(maxsize=None)
def train_flops_per_image(name: str) -> float:
    """FLOPs of one training image of preset `name`: forward and backward of its network, counted by torch."""
    with torch.device("meta"):  # shapes only: nothing is computed or allocated
        model = create_model(load_config(PRESETS_DIR / f"{name}.yaml").model)
        x = torch.zeros(2, 3, 32, 32)  # two images: BatchNorm needs more than one value per channel
    with FlopCounterMode(display=False) as counter:
        model.train()(x).float().sum().backward()
    return counter.get_total_flops() / 2


def epochs(name: str) -> float:
    """Training epochs of preset `name`."""
    return load_config(PRESETS_DIR / f"{name}.yaml").train.epochs


def trained_images(name: str) -> float:
    """Images preset `name` trains on over its whole schedule (epochs times its training split)."""
    data = load_config(PRESETS_DIR / f"{name}.yaml").data
    return epochs(name) * (data.train_subset or TRAIN_IMAGES - data.holdout)


def _speed_reference(results: Path) -> tuple[str, float, str, bool]:
    """The speed benchmark's recipe as the preset of today: (fast94, its images per second, GPU, whether the
    record ran today's fast94). Records of the retired speed-run trainer keep their recipe flat, epochs included."""
    bench = json.loads((results / SPEED_BENCH).read_text())
    recipe = bench["ours"]["config"]
    ran_epochs = recipe["train"]["epochs"] if "train" in recipe else recipe["epochs"]
    seconds = bench["ours"]["seconds_mean"]  # whole runs: training and the TTA evaluation
    today = recipe == config_to_dict(load_config(PRESETS_DIR / "fast94.yaml"))
    return "fast94", ran_epochs * TRAIN_IMAGES / seconds, bench["device"], today


def reference(results: Path, name: str) -> tuple[str, float, str, bool]:
    """The measured recipe an estimate of `name` scales: (its preset, images per second, GPU, whether the
    measured run is today's preset)."""
    if name in SPEED_PRESETS:
        return _speed_reference(results)
    metrics = json.loads((results / "runs" / "best" / "metrics.json").read_text())
    return "best", metrics["images_per_second"], metrics["device"], True


def training_time(results: Path, name: str, gpu: str) -> Timing:
    """Training seconds of preset `name` on `gpu` (a value of `GPUS`): measured or estimated."""
    ref_name, ref_rate, ref_gpu, ref_today = reference(results, name)
    if ref_name == name and ref_gpu == gpu and ref_today:
        if name == "best":
            metrics = json.loads((results / "runs" / "best" / "metrics.json").read_text())
            return Timing(metrics["train_seconds"], True)
        return Timing(trained_images(name) / ref_rate, True)
    rate = ref_rate * train_flops_per_image(ref_name) / train_flops_per_image(name)
    rate *= PEAK_TFLOPS[gpu] / PEAK_TFLOPS[ref_gpu]
    return Timing(trained_images(name) / rate, False)


def cpu_result(results: Path, name: str) -> str:
    """Preset `name`'s measured training time and test accuracy on a CPU (its benchmark of today's recipe,
    results/bench/<name>.json), or "" without one."""
    path = results / "bench" / f"{name}.json"
    bench = json.loads(path.read_text()) if path.is_file() else {}
    if bench.get("preset") != name or bench.get("config") != config_to_dict(load_config(PRESETS_DIR / f"{name}.yaml")):
        return ""  # another preset, or an earlier recipe of this one
    if bench.get("overrides"):
        return f"(a shortened run: {', '.join(f'{k} {v}' for k, v in bench['overrides'].items())})"
    return (f"{bench['train_seconds'] / 60:.1f} min, {bench['test_acc_tta'] * 100:.2f}% with TTA (measured: "
            f"{bench['cpu']}, {bench['threads']} threads)")


def presets_times_markdown(results: str | Path) -> str:
    """The README's preset table: every preset, its epochs, its training time on an H200 and a T4, and where
    benchmarked, its training time and accuracy on a CPU."""
    results = Path(results)
    lines = ["| preset | epochs | training on an H200 | training on a T4 (Colab) | on a CPU |",
             "| --- | ---: | --- | --- | --- |"]
    for name in preset_names():
        times = [training_time(results, name, GPUS[gpu]) for gpu in ("H200", "T4")]
        budget = load_config(PRESETS_DIR / f"{name}.yaml").train.time_budget
        planned = f"up to {epochs(name):g} (as fit {budget:g} s)" if budget else f"{epochs(name):g}"
        lines.append(f"| `{name}` | {planned} | {times[0]} | {times[1]} | {cpu_result(results, name)} |")
    return "\n".join(lines)
