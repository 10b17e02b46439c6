"""The report's numbers from the benchmarks in `results/bench/`: the race to 94% against airbench94
(`speed94.json`), the training throughput of the best configuration (`throughput_best.json`) and the race
at equal training time against airbench94 on a CPU (`cpu_race.json`). Each function sets its flag in
`paper_macros.FLAGS` false where its file is missing or incomplete.
"""

from __future__ import annotations

from pathlib import Path

from ..formats import percent, tex_escape, thousands
from .paper_macros import Macros
from .records import number, read_json


def speed(results_dir: Path, m: Macros) -> None:
    """The time-to-94% benchmark against airbench94, from results/bench/speed94.json."""
    data = read_json(results_dir / "bench" / "speed94.json")
    sides = {}
    for side in ("ours", "airbench"):
        entry = data.get(side) if isinstance(data, dict) else None
        values = {k: number(entry.get(k)) if isinstance(entry, dict) else None
                  for k in ("acc_mean", "acc_std", "seconds_mean", "seconds_std")}
        sides[side] = values if all(v is not None for v in values.values()) else None
    ok = isinstance(data, dict) and all(sides.values()) and sides["airbench"]["seconds_mean"] > 0
    m.flag("HaveSpeedBench", ok)
    if not ok:
        return
    m.text("SpeedDevice", tex_escape(str(data.get("device", "unknown"))))
    runs = number(data.get("n_runs"))
    m.text("SpeedRuns", str(int(runs)) if runs is not None else "unknown")
    target = number(data.get("target"))
    target = 94.0 if target is None else target
    m.text("SpeedTarget", f"{target:g}")
    for side, prefix in (("ours", "SpeedOurs"), ("airbench", "SpeedAirbench")):
        v = sides[side]
        m.text(f"{prefix}Name", tex_escape(str(data[side].get("name") or side)))
        m.flag(f"{prefix}Reached", 100 * v["acc_mean"] >= target)
        m.text(f"{prefix}Acc", percent(v["acc_mean"]))
        m.text(f"{prefix}AccStd", percent(v["acc_std"]))
        m.text(f"{prefix}Seconds", f"{v['seconds_mean']:.3f}")  # runs of about 2 s differ by milliseconds
        m.text(f"{prefix}SecondsStd", f"{v['seconds_std']:.3f}")
        params = number(data[side].get("params"))
        m.text(f"{prefix}ParamsM", f"{params / 1e6:.2f}" if params is not None else "unknown")
    m.flag("SpeedSameParams", number(data["ours"].get("params")) is not None
           and data["ours"].get("params") == data["airbench"].get("params"))
    ratio = number(data.get("ratio"))
    if ratio is None:
        ratio = sides["ours"]["seconds_mean"] / sides["airbench"]["seconds_mean"]
    m.text("SpeedRatio", f"{ratio:.3f}")
    m.text("SpeedSlowerPercent", f"{100 * (ratio - 1):.1f}")


def throughput(results_dir: Path, m: Macros) -> None:
    """Training throughput of the best configuration, from results/bench/throughput_best.json."""
    data = read_json(results_dir / "bench" / "throughput_best.json")
    share = data.get("share") if isinstance(data, dict) else None
    values = [number(data.get(k)) if isinstance(data, dict) else None
              for k in ("train_images_per_second", "epoch_seconds_estimate")]
    shares = [number(share.get(k)) if isinstance(share, dict) else None for k in ("data", "forward_backward")]
    ok = all(v is not None for v in values + shares)
    m.flag("HaveThroughputBench", ok)
    if not ok:
        return
    m.text("ThroughputDevice", tex_escape(str(data.get("device", "unknown"))))
    m.text("ThroughputImagesPerSecond", thousands(values[0]))
    m.text("ThroughputEpochSeconds", f"{values[1]:.2f}")
    m.text("ThroughputDataPercent", f"{100 * shares[0]:.1f}")
    m.text("ThroughputStepPercent", f"{100 * shares[1]:.1f}")
    m.flag("ThroughputOnRandomImages", str(data.get("data_source", "")).startswith("random"))


def cpu_race(results_dir: Path, m: Macros) -> None:
    """The CPU preset against airbench94 for the same training seconds on one CPU, from results/bench/cpu_race.json
    (benchmarks/cpu_race.py); a smoke run or an unfinished race counts as none."""
    data = read_json(results_dir / "bench" / "cpu_race.json")
    data = data if isinstance(data, dict) else {}
    sides = [data.get(side) if isinstance(data.get(side), dict) else {} for side in ("ours", "airbench")]
    ours, theirs = (number(side.get("acc_tta")) for side in sides)
    seconds, threads = number(sides[0].get("train_seconds")), number(data.get("threads"))
    ok = data.get("status") == "finished" and not data.get("smoke") and None not in (ours, theirs, seconds, threads)
    m.flag("HaveCpuRace", ok)
    if not ok:
        return
    m.text("CpuRacePreset", tex_escape(str(sides[0].get("name", "unknown"))))
    m.text("CpuRaceThreads", str(int(threads)))
    m.text("CpuRaceOursSeconds", f"{seconds:.0f}")
    m.text("CpuRaceOursAcc", percent(ours))
    m.text("CpuRaceAirbenchAcc", percent(theirs))
