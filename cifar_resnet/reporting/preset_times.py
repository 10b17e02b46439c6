"""How long each preset trains: measured where a run of it is recorded, otherwise estimated.

An estimate scales the nearest measured recipe: the images per second that a recorded run trained at on
its GPU (the ResNet presets: `results/runs/best`; the speed-run recipes: `results/bench/speed94.json`),
times the ratio of training FLOPs per image (forward and backward, counted by torch), times, for another
GPU, the ratio of the two GPUs' published peak half-precision tensor rates. It leaves out what such ratios
cannot see (torch.compile or not, clocks that throttle, the loader), so every estimate is labelled one
until a run on that GPU is recorded. A preset with a CPU benchmark (`results/bench/cpu.json`, written by
`benchmarks/cpu.py`) also gets its measured time and accuracy on that CPU; no CPU time is estimated.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import PRESETS_DIR, load_config, preset_names, read_yaml

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


def is_speedrun(name: str) -> bool:
    """The speed-run recipes (fast94, fast95) have their own schema (`studies.speedrun`)."""
    return "model" not in read_yaml(PRESETS_DIR / f"{name}.yaml", name)


@functools.lru_cache(maxsize=None)
def train_flops_per_image(name: str) -> float:
    """FLOPs of one training image of preset `name`: forward and backward of its network, counted by torch."""
    with torch.device("meta"):  # shapes only: nothing is computed or allocated
        if is_speedrun(name):
            from ..studies.speedrun import create_speedrun_model, load_speedrun_config
            model = create_speedrun_model(load_speedrun_config(PRESETS_DIR / f"{name}.yaml"))
        else:
            from ..models import create_model
            model = create_model(load_config(PRESETS_DIR / f"{name}.yaml").model)
        x = torch.zeros(2, 3, 32, 32)  # two images: BatchNorm needs more than one value per channel
    with FlopCounterMode(display=False) as counter:
        model.train()(x).float().sum().backward()
    return counter.get_total_flops() / 2


def epochs(name: str) -> float:
    """Training epochs of preset `name`."""
    if is_speedrun(name):
        from ..studies.speedrun import load_speedrun_config
        return load_speedrun_config(PRESETS_DIR / f"{name}.yaml").epochs
    return load_config(PRESETS_DIR / f"{name}.yaml").train.epochs


def trained_images(name: str) -> float:
    """Images preset `name` trains on over its whole schedule (epochs times its training split)."""
    if is_speedrun(name):
        return epochs(name) * TRAIN_IMAGES
    data = load_config(PRESETS_DIR / f"{name}.yaml").data
    return epochs(name) * (data.train_subset or TRAIN_IMAGES - data.holdout)


def reference(results: Path, name: str) -> tuple[str, float, str]:
    """The measured recipe an estimate of `name` scales: (its preset, images per second, GPU)."""
    if is_speedrun(name):
        bench = json.loads((results / "bench" / "speed94.json").read_text())
        seconds = bench["ours"]["seconds_mean"]  # whole runs: training and the TTA evaluation
        return "fast94", trained_images("fast94") / seconds, bench["device"]
    metrics = json.loads((results / "runs" / "best" / "metrics.json").read_text())
    return "best", metrics["images_per_second"], metrics["device"]


def training_time(results: Path, name: str, gpu: str) -> Timing:
    """Training seconds of preset `name` on `gpu` (a value of `GPUS`): measured or estimated."""
    ref_name, ref_rate, ref_gpu = reference(results, name)
    if ref_name == name and ref_gpu == gpu:
        if name == "best":
            metrics = json.loads((results / "runs" / "best" / "metrics.json").read_text())
            return Timing(metrics["train_seconds"], True)
        return Timing(trained_images(name) / ref_rate, True)
    rate = ref_rate * train_flops_per_image(ref_name) / train_flops_per_image(name)
    rate *= PEAK_TFLOPS[gpu] / PEAK_TFLOPS[ref_gpu]
    return Timing(trained_images(name) / rate, False)


CPU_BENCH = Path("bench") / "cpu.json"  # under results/: the `cpu` preset's benchmark


def cpu_result(results: Path, name: str) -> str:
    """Preset `name`'s measured training time and test accuracy on a CPU (its benchmark), or "" without one."""
    path = results / CPU_BENCH
    bench = json.loads(path.read_text()) if path.is_file() else {}
    if bench.get("preset") != name:
        return ""
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
        lines.append(f"| `{name}` | {epochs(name):g} | {times[0]} | {times[1]} | {cpu_result(results, name)} |")
    return "\n".join(lines)
