"""Training that survives Colab and Studio Lab sessions: what notebook 03's training cell calls.

`train_in_sessions(cfg, out_dir, session_limit=S)` continues the run that `out_dir` holds (from its last
checkpoint), reports a finished one instead of training it again, says before it starts how long the
training left will take on this device (from timed steps), and stops cleanly, checkpoint kept, before
`session_limit` seconds. Rerunning the same call in a new session continues the run; it ends exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .. import run_folder
from ..audience import shown_path
from ..config import Config, load_config
from ..data.cifar10 import load_splits
from ..runtime import resolve_device
from ..formats import duration
from .engine import TIME_LIMIT_REACHED, Trainer
from .launch_policy import estimate_note, estimate_training, refuse_slow_run

RERUN = "after a disconnect or a stop, run the notebook again (Runtime > Run all): this cell continues the run"


def finished_metrics(cfg: Config, out_dir: str | Path) -> dict | None:
    """metrics.json of the finished run of `cfg` in `out_dir`, or None where it holds no finished run;
    `CheckpointError` where the folder's run is of another configuration."""
    out = Path(out_dir)
    if not (out / run_folder.METRICS).is_file():
        return None
    metrics = json.loads((out / run_folder.METRICS).read_text())
    if metrics.get("status") != "finished":
        return None
    if (out / run_folder.CONFIG).is_file() and load_config(out / run_folder.CONFIG) != cfg:
        raise run_folder.CheckpointError(f"{out} holds a finished run of another configuration: choose another folder")
    return metrics


def train_in_sessions(cfg: Config, out_dir: str | Path, *, session_limit: float | None = None,
                      log: Callable[[str], None] = print, allow_slow: bool = False, **options) -> dict:
    """Train `cfg` into `out_dir`, continuing what it holds, for at most `session_limit` seconds of this
    session; returns metrics.json's content (`status` "finished", or "time_limit" where it stopped early).
    On a CPU a run of hours is refused as `launch_policy.refuse_slow_run` says. Options as for `engine.Trainer`."""
    out = Path(out_dir)
    done = finished_metrics(cfg, out)
    if done is not None:
        accuracy = f"test accuracy {done['test_acc']:.2%}" if done.get("test_acc") is not None else "no test accuracy"
        log(f"{shown_path(out)} holds the finished run of {cfg.name} ({done['epochs_completed']} epochs, "
            f"{accuracy}): not trained again (to train again, choose another folder)")
        return done
    resume = (out / run_folder.CHECKPOINT).is_file()
    options["splits"] = options.get("splits") or load_splits(cfg, options.get("data_root"))
    device = resolve_device(options.get("device"))
    estimate = estimate_training(cfg, options["splits"], device, out_dir=out, resume=resume)
    refuse_slow_run(cfg, estimate, device, time_limit=session_limit, allow_slow=allow_slow, log=log)
    # The engine's own stop line says how to resume in Python; here the one instruction is to rerun the cell.
    quiet_stop = lambda line: None if line.startswith(TIME_LIMIT_REACHED) else log(line)  # noqa: E731
    trainer = Trainer(cfg, out, resume=resume, time_limit=session_limit, log=quiet_stop, **options)
    before = trainer.epoch
    limit = f"; this session stops before {duration(session_limit, rough=True)}" if session_limit else ""
    log(f"{'continuing' if resume else 'starting'} {cfg.name} in {shown_path(out)}: {estimate.epochs} epochs "
        f"to go, about {duration(estimate.seconds, rough=True)} of training on {run_folder.environment(device)['device']} "
        f"({estimate_note()}){limit}")
    log(RERUN)
    metrics = trainer.run()
    if metrics["status"] != "finished" and metrics["epochs_completed"] > before:
        log(f"stopped before the session limit after epoch {metrics['epochs_completed']} of {trainer.planned_epochs}, "
            f"checkpoint kept: {RERUN}")
    elif metrics["status"] != "finished":  # rerunning with the same limit would train nothing again
        log(f"stopped without training: epoch {metrics['epochs_completed'] + 1} does not fit in the session's "
            f"{duration(session_limit, rough=True)}; give the session more time (notebook 03: SESSION_MINUTES)")
    return metrics
