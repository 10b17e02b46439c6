"""Plans: runs trained back to back in one process, sized for a GPU that is lent a few minutes at a time.

A plan is a YAML file (examples in `configs/plans/`):

    base: ../best.yaml             # every run starts from this configuration (path relative to the plan file)
    time_limit: 450                # seconds for the whole plan; the command's --time-limit overrides it
    seconds_per_epoch: 1.26        # estimate of one epoch of a run, evaluation included, on the target GPU
    overhead_s: 8                  # per run: building it, the final evaluation with TTA, the record
    compile_s: 40                  # once per network and batch size that torch.compile has not seen here
    overrides: {train.epochs: 60}  # dotted keys (as `config.override`) for every run
    runs:
      - name: recipe
        overrides: {}              # this run's own changes, applied after the plan's
        seeds: [0]                 # one run per seed, into OUT/<name>-s<seed>/
        seconds_per_epoch: 1.26    # optional: this run's own estimate (SAM: twice the base's)
        fill: false                # true: lower train.epochs to what fits in the time left

Sweeps tune on the last `data.holdout` training images, 5,000 unless a plan sets it (the record plan sets 0
to be evaluated on the test set). Before each run the sweep estimates its duration, epochs times seconds per
epoch, scaled by how the runs already done compared with their estimates, plus overheads
(`PlanEstimator`, below); a run that would not end before the limit is skipped
with a message. Each run also gets the time left as its own limit, so an underestimate stops it cleanly
instead of overrunning. `summary.csv` in the output folder is rewritten
after every run: run, seed, status, parameters, epochs, seconds, validation and test accuracy.
`calibrate` files (JSON from benchmarks/throughput.py, one per run name) replace the plan's estimates.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .. import run_folder
from ..audience import option, progress_bar
from ..config import Config, ConfigError, load_config, override, read_yaml
from ..models import OverBudgetError, count_parameters, create_model
from .sweep_files import (COLUMNS, SUMMARY, history_rows, read_summary, summary_row,  # noqa: F401 (SUMMARY: its name)
                          write_configs as write_run_configs, write_summary)

DEFAULT_HOLDOUT = 5000  # training images held out for tuning when a plan does not say
SMOKE = {"data.train_subset": 256, "data.test_subset": 100, "train.compile": False, "train.precision": "fp32",
         "train.channels_last": False, "train.eval_every": 1}  # and networks 16 times narrower, 2 epochs at most
FILL_MARGIN = 0.05  # `fill` plans its epochs 5% slower than estimated: an overrun would cost the whole record
_PLAN_KEYS = ("base", "time_limit", "seconds_per_epoch", "overhead_s", "compile_s", "overrides", "runs")
_RUN_KEYS = ("name", "overrides", "seeds", "seconds_per_epoch", "fill")


@dataclass
class PlannedRun:
    """One run of a plan: its folder name, resolved configuration and estimated seconds per epoch."""

    name: str
    seed: int
    cfg: Config
    params: int
    seconds_per_epoch: float
    fill: bool = False


@dataclass
class Plan:
    """A plan file, resolved: the runs in order and the figures their durations are estimated from."""

    path: Path
    time_limit: float | None
    overhead_s: float
    compile_s: float
    runs: list[PlannedRun]


def _number(data: dict, key: str, where: str, default: float | None) -> float | None:
    value = data.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise ConfigError(f"{where}: {key} must be a non-negative number of seconds, got {value!r}")
    return None if value is None else float(value)


def _mapping(data: dict, key: str, where: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a mapping of dotted keys to values, got {value!r}")
    return value


def smoke_overrides(cfg: Config) -> dict[str, Any]:
    """A tiny version of `cfg` for a CPU dry run: the same layout 16 times narrower, 2 epochs, small subsets."""
    m, t = cfg.model, cfg.train
    return {**SMOKE, "model.channels": [max(4, c // 16) for c in m.channels],
            "model.stem_channels": max(4, m.stem_channels // 16), "train.epochs": min(t.epochs, 2),
            "train.batch_size": min(t.batch_size, 64), "data.holdout": min(cfg.data.holdout, 100)}


def load_plan(path: str | Path, *, smoke: bool = False, calibration: str | Path | None = None,
              seeds: list[int] | None = None) -> Plan:
    """Read and resolve a plan: every run's configuration is built and its network counted (on the meta
    device) before anything trains, so a typo or an over-budget network stops the plan at once. `seeds`
    replaces every run's seeds (a record's second seed in a later GPU call)."""
    path = Path(path)
    data = read_yaml(path, f"plan not found: {path} (plans live in configs/plans/)")
    where = str(path)
    unknown = sorted(set(data) - set(_PLAN_KEYS)) if isinstance(data, dict) else ["(not a mapping)"]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; a plan has {', '.join(_PLAN_KEYS)}")
    if "base" not in data or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise ConfigError(f"{where}: a plan needs 'base' (a configuration file) and a non-empty list 'runs'")
    if not isinstance(data["base"], str):
        raise ConfigError(f"{where}: base: name a configuration file, relative to the plan file "
                          f"(e.g. 'base: ../best.yaml'); got {data['base']!r}")
    relative = path.parent / data["base"]  # a file beside the plan; a bare name (best) may name a preset
    try:
        if not relative.is_file() and Path(data["base"]).name != data["base"]:
            raise ConfigError(f"configuration file not found: {relative}")
        base = load_config(relative if relative.is_file() else data["base"])
    except ConfigError as err:
        raise ConfigError(f"{where}: base (relative to the plan file): {err}") from None
    shared = _mapping(data, "overrides", where)
    default_spe = _number(data, "seconds_per_epoch", where, 1.0)
    measured = _read_calibration(Path(calibration)) if calibration else {}
    planned, names = [], set()
    for i, spec in enumerate(data["runs"]):
        at = f"{where}: runs[{i}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ConfigError(f"{at}: each run needs a 'name' (used for its folder)")
        if bad := sorted(set(spec) - set(_RUN_KEYS)):
            raise ConfigError(f"{at}: unknown key {bad[0]!r}; a run has {', '.join(_RUN_KEYS)}")
        run_seeds = seeds or spec.get("seeds", [0])
        if not (isinstance(run_seeds, list) and run_seeds
                and all(isinstance(s, int) and not isinstance(s, bool) for s in run_seeds)):
            raise ConfigError(f"{at}: seeds must be a non-empty list of integers, got {run_seeds!r}")
        changes = {"data.holdout": DEFAULT_HOLDOUT, **shared, **_mapping(spec, "overrides", at)}
        spe = _number(spec, "seconds_per_epoch", at, default_spe)
        if spec["name"] in measured:
            spe = _seconds_per_epoch_from_throughput(measured[spec["name"]], override(base, **changes)) or spe
        for seed in run_seeds:
            name = run_folder.folder_name(f"{spec['name']}-s{seed}", f"{at}: name (with its seed)", "the sweep's --out")
            if name in names:
                raise ConfigError(f"{at}: run {name!r} appears twice; give runs distinct names or seeds")
            names.add(name)
            try:
                cfg = override(base, **{**changes, "train.seed": seed, "name": name})
                if smoke:
                    cfg = override(cfg, **smoke_overrides(cfg))
                with torch.device("meta"):  # counts (and checks the budget) without allocating
                    params = count_parameters(create_model(cfg.model))
            except (ConfigError, OverBudgetError) as err:
                raise ConfigError(f"{at}: {err}") from None
            planned.append(PlannedRun(name, seed, cfg, params, spe, bool(spec.get("fill", False))))
    return Plan(path, _number(data, "time_limit", where, None), _number(data, "overhead_s", where, 8.0),
                _number(data, "compile_s", where, 40.0), planned)


def _read_calibration(folder: Path) -> dict[str, dict]:
    if not folder.is_dir():
        raise ConfigError(f"calibration folder not found: {folder} (scripts/gpu_calibrate.sh writes it)")
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _seconds_per_epoch_from_throughput(result: dict, cfg: Config) -> float | None:
    """An epoch's seconds from benchmarks/throughput.py's figures: the training images of this run at the
    measured rate, plus one evaluation every `eval_every` epochs."""
    rate = result.get("train_images_per_second")
    if not rate:
        return None
    images = cfg.data.train_subset or 50_000 - cfg.data.holdout
    train = images // cfg.train.batch_size * cfg.train.batch_size / rate
    evaluation = result.get("epoch_seconds_estimate", 0) * result.get("share", {}).get("evaluation", 0)
    return train + evaluation / max(cfg.train.eval_every, 1)


def describe_plan(plan: Plan, compiles: bool) -> tuple[str, float]:
    """A table of the runs with their estimated durations, and the plan's expected total in seconds."""
    estimator, lines, total = PlanEstimator(plan, compiles), [], 0.0
    for run in plan.runs:
        cfg = run.cfg
        if run.fill and plan.time_limit:
            cfg = override(cfg, **{"train.epochs": _fill_epochs(estimator, run, plan.time_limit - total)})
        seconds = estimator.estimate(run, cfg)
        estimator.compiled.add(estimator.key(cfg))
        total += seconds
        fits = "" if plan.time_limit is None or total <= plan.time_limit else "  (over the limit: would be skipped)"
        lines.append(f"  {run.name:<24} {run.params:>10,} params {cfg.train.epochs:>4} epochs "
                     f"~{seconds:5.0f} s (by then ~{total:5.0f} s){fits}")
    limit = f"time limit {plan.time_limit:.0f} s" if plan.time_limit else "no time limit"
    return "\n".join([f"plan {plan.path}: {len(plan.runs)} runs, expected ~{total:.0f} s, {limit}"] + lines), total


def _fill_epochs(estimator: PlanEstimator, run: PlannedRun, seconds_left: float) -> int:
    fitting = int((seconds_left - estimator.fixed(run.cfg)) // (estimator.per_epoch(run) * (1 + FILL_MARGIN)))
    return max(1, min(run.cfg.train.epochs, fitting))


def format_summary(rows: list[dict]) -> str:
    """The summary as a fixed-width table for the log: accuracies to 4 digits, '-' where there is none."""
    import pandas as pd

    cell = lambda k, v: "-" if v is None else f"{v:.4f}" if "_acc" in k else v
    return pd.DataFrame([{k: cell(k, row.get(k)) for k in COLUMNS} for row in rows]).to_string(index=False)


TrainFn = Callable[[Config, Path, "float | None"], dict]


def run_plan(plan: Plan, out_dir: str | Path, *, data_root: str | None = None, device: str | None = None,
             log: Callable[[str], None] = print, train_fn: TrainFn | None = None,
             clock: Callable[[], float] = time.perf_counter, resume: bool = False) -> list[dict]:
    """Train the plan's runs in order into `out_dir`/<run>/, skipping those that would overrun the plan's
    time limit; returns the summary rows (also written to `out_dir`/summary.csv after every run, after the
    rows an earlier call wrote of runs this plan does not hold). With `resume`, a run already finished there
    is kept as it is and one that was stopped continues from its checkpoint.

    `train_fn(cfg, run_dir, time_limit) -> metrics` defaults to the engine's `train`, with the data loaded
    once per distinct split and shared between runs."""
    from ..training.engine import TrainingDiverged, TrainingInterrupted
    from ..training.launch_policy import EpochOverTimeLimit

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if train_fn is None:
        train_fn = _engine_train(data_root, device, log)
    estimator = PlanEstimator(plan, compiles=True)  # torch.compile runs wherever train.compile is set
    earlier = read_summary(out_dir)
    kept = [r for r in earlier if r["run"] not in {run.name for run in plan.runs}]  # another seed's, say
    start, rows = clock(), []
    bar = progress_bar(total=len(plan.runs), desc="sweep", unit="run")  # by run, with the time left of the limit
    for i, run in enumerate(plan.runs, 1):
        left = None if plan.time_limit is None else plan.time_limit - (clock() - start)
        if left is not None:
            bar.set_postfix_str(f"{max(left, 0):.0f} s of the {plan.time_limit:.0f} s limit left")
        cfg, resumed = run.cfg, resume and run_folder.holds_run(out_dir / run.name)
        if resumed and _finished(out_dir / run.name):
            log(f"[{i}/{len(plan.runs)}] {run.name}: finished in an earlier call, kept")
            rows.append(next((r for r in earlier if r["run"] == run.name), None) or summary_row(
                run, cfg, "finished", 0.0, None, run_folder.read_metrics(out_dir / run.name),
                history_rows(out_dir / run.name)))
            write_summary(rows, out_dir, kept)
            bar.update()
            continue
        if resumed:  # its own configuration: a `fill` run's epochs were those of the time then left
            cfg = load_config(out_dir / run.name / run_folder.CONFIG)
        elif run.fill and left is not None:
            cfg = override(cfg, **{"train.epochs": _fill_epochs(estimator, run, left)})
        estimate = estimator.estimate(run, cfg)
        if left is not None and estimate > left:
            log(f"skipping {run.name}: it needs about {estimate:.0f} s and {left:.0f} s of the "
                f"{plan.time_limit:.0f} s limit are left")
            rows.append(summary_row(run, cfg, "skipped", estimate))
            write_summary(rows, out_dir, kept)
            bar.update()
            continue
        log(f"[{i}/{len(plan.runs)}] {run.name}: {cfg.train.epochs} epochs, about {estimate:.0f} s"
            + ("" if left is None else f" of the {left:.0f} s left"))
        began = clock()
        try:
            metrics = train_fn(cfg, out_dir / run.name, None if left is None else max(left - plan.overhead_s, 1.0),
                               **({"resume": True} if resumed else {}))
            status = metrics.get("status", "finished")
        except TrainingDiverged as err:
            metrics, status = {}, "diverged"
            log(f"{run.name} diverged: {err}")
        except EpochOverTimeLimit as err:  # the time left holds no epoch of it here: skipped, as any that won't fit
            metrics, status = {}, "skipped"
            log(f"skipping {run.name}: {err}")
        except TrainingInterrupted as err:  # the whole sweep continues where it stopped, not only this run
            raise TrainingInterrupted(f"{err}; or continue the whole sweep (its finished runs kept): "
                                      f"{option('sweep(..., resume=True)', '`cifar-resnet sweep PLAN --out ' + str(out_dir) + ' --resume`')}") from None
        seconds = clock() - began
        history = history_rows(out_dir / run.name)
        estimator.learn(run, cfg, seconds, [float(r["seconds"]) for r in history])
        rows.append(summary_row(run, cfg, status, estimate, seconds, metrics, history))
        write_summary(rows, out_dir, kept)
        log(f"{run.name}: {status} in {seconds:.0f} s (estimated {estimate:.0f} s)")
        bar.update()
    bar.close()
    log(format_summary(rows))
    log(f"plan done in {clock() - start:.0f} s; summary in {out_dir / SUMMARY}")
    return rows


def _engine_train(data_root: str | None, device: str | None, log: Callable[[str], None]) -> TrainFn:
    from ..data.cifar10 import load_splits
    from ..training.launch_policy import train

    loaded: dict[str, tuple] = {}

    def train_run(cfg: Config, run_dir: Path, time_limit: float | None, resume: bool = False) -> dict:
        d = cfg.data
        key = json.dumps([d.root, d.holdout, d.train_subset, d.test_subset])
        if key not in loaded:  # runs with the same split share the tensors instead of re-reading the files
            loaded.clear()
            loaded[key] = load_splits(cfg, data_root)
        return train(cfg, run_dir, data_root=data_root, device=device, time_limit=time_limit, log=log,
                     progress=False, splits=loaded[key], resume=resume)

    return train_run


def sweep(plan_path: str | Path, out_dir: str | Path, *, time_limit: float | None = None, smoke: bool = False,
          calibration: str | Path | None = None, dry_run: bool = False, write_configs: str | Path | None = None,
          overwrite: bool = False, resume: bool = False, seeds: list[int] | None = None,
          data_root: str | None = None, device: str | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """What `cifar-resnet sweep` does: load the plan, print its runs and expected duration, then run it
    (or only write each run's configuration to `write_configs`, or stop there with `dry_run`); `resume`
    continues a sweep stopped in `out_dir`, `overwrite` trains its runs again."""
    from ..runtime import resolve_device

    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"--time-limit must be above 0 seconds, got {time_limit:g}")
    if resume and overwrite:
        raise ConfigError("give either --resume (continue the sweep) or --overwrite (train its runs again), not both")
    plan = load_plan(plan_path, calibration=calibration, seeds=seeds)
    if time_limit is not None:
        plan.time_limit = time_limit
    # The plan's figures are a GPU's: a dry run and a smoke run describe it as the GPU would run it (compiling).
    on_gpu = smoke or dry_run or resolve_device(device).type == "cuda"
    log(describe_plan(plan, compiles=on_gpu)[0])
    if smoke:  # the same runs, tiny, with no limit: the plan's figures are a GPU's, this only checks the pipeline
        plan = load_plan(plan_path, smoke=True, calibration=calibration, seeds=seeds)
        plan.time_limit = time_limit
        torch.set_num_threads(1)  # networks this small gain nothing from threads, and lose 10-20x on a busy CPU
        log("smoke run: networks 16 times narrower, at most 2 epochs on small subsets, every run trained (no "
            "time limit); the estimates above, and the runs they would skip, are the GPU's")
    if write_configs:
        for path in write_run_configs(plan, write_configs, overwrite=overwrite):
            log(f"wrote {path}")
        return []
    if dry_run:
        return []
    run_folder.writable_folder(out_dir)
    read_summary(Path(out_dir))  # a summary.csv that is not a sweep's is refused before anything trains
    names = [run.name for run in plan.runs]
    if not (overwrite or resume):  # as train: a run is replaced only with --overwrite
        if run_folder.present(Path(out_dir) / SUMMARY):
            raise ConfigError(f"{out_dir} already holds a sweep ({SUMMARY}): add {option('resume=True', '--resume')} "
                              f"to continue it (its finished runs kept), {option('overwrite=True', '--overwrite')} "
                              f"to run it again (its runs are replaced), or choose another {option('out_dir', '--out')}")
        try:
            run_folder.refuse_held_runs(Path(out_dir), names)
        except run_folder.FolderError as err:
            raise run_folder.FolderError(str(err).replace("add --overwrite", "add --resume to continue them, "
                                                          "--overwrite")) from None
    return run_plan(plan, out_dir, data_root=data_root, device=device, log=log, resume=resume)


def _finished(run_dir: Path) -> bool:
    """Whether `run_dir` holds a run trained to the end of its schedule (its metrics.json says so)."""
    try:
        return run_folder.read_metrics(run_dir).get("status") == "finished"
    except (FileNotFoundError, run_folder.CheckpointError):
        return False


class PlanEstimator:
    """A sweep's duration estimates, learning from the runs already done: their seconds per epoch against the
    plan's (a common factor), and the compile time their first epoch showed."""

    def __init__(self, plan: Plan, compiles: bool) -> None:
        self.plan, self.compiles = plan, compiles
        self.compile_s, self.ratios, self.compiled = plan.compile_s, [], set()

    def key(self, cfg: Config) -> str:
        """What torch.compile compiles anew: the network and the batch size."""
        return json.dumps([cfg.model.__dict__, cfg.train.batch_size], sort_keys=True, default=str)

    def fixed(self, cfg: Config) -> float:
        new_graph = self.compiles and cfg.train.compile and self.key(cfg) not in self.compiled
        return self.plan.overhead_s + (self.compile_s if new_graph else 0.0)

    def per_epoch(self, run: PlannedRun) -> float:
        return run.seconds_per_epoch * (statistics.mean(self.ratios) if self.ratios else 1.0)

    def estimate(self, run: PlannedRun, cfg: Config) -> float:
        return cfg.train.epochs * self.per_epoch(run) + self.fixed(cfg)

    def learn(self, run: PlannedRun, cfg: Config, seconds: float, epoch_seconds: list[float]) -> None:
        """`seconds`: the run's wall time; `epoch_seconds`: its epochs' training times (history.csv)."""
        first_epoch_extra = 0.0
        if len(epoch_seconds) > 1:
            first_epoch_extra = max(0.0, epoch_seconds[0] - statistics.median(epoch_seconds[1:]))
        if self.compiles and cfg.train.compile and self.key(cfg) not in self.compiled:
            self.compile_s = first_epoch_extra
        self.compiled.add(self.key(cfg))
        if epoch_seconds:
            per_epoch = (seconds - first_epoch_extra - self.plan.overhead_s) / len(epoch_seconds)
            self.ratios.append(max(per_epoch, 1e-6) / max(run.seconds_per_epoch, 1e-6))
