"""What `resume` may do with a run folder that holds no checkpoint, and what an interruption after the last
epoch says: a run folder is changed only by a command that says it will."""

from __future__ import annotations

from pathlib import Path

from .. import run_folder
from ..audience import advise, option
from ..config import Config, ConfigError, config_to_dict, load_config


class RunFinished(ConfigError):
    """`resume` on a run that has finished: there is nothing to continue, and nothing is changed."""


def refuse_resume_without_checkpoint(out: Path, cfg: Config) -> None:
    """`resume` into `out`, which holds no checkpoint: a finished run is left as it is (`RunFinished`; every
    search trial's folder is one: the search deletes the checkpoints), a record that only a checkpoint could
    continue is refused (`ConfigError`), not replaced. A folder that holds nothing trained (the configuration of
    the same run, stopped before its first epoch ended) may start from scratch: this returns."""
    kept = [name for name in (run_folder.HISTORY, run_folder.METRICS, run_folder.WEIGHTS, run_folder.PREDICTIONS)
            if run_folder.present(out / name)]
    metrics = {}
    if run_folder.METRICS in kept:
        try:
            metrics = run_folder.read_metrics(out)
        except run_folder.CheckpointError:
            pass
    if kept == [run_folder.METRICS] and metrics.get("epochs_completed") == 0:  # a time limit before epoch 1 ended
        kept = []
    if not kept:
        config = out / run_folder.CONFIG
        if run_folder.present(config) and load_config(config) != cfg:
            raise run_folder.CheckpointError(f"{config} belongs to a run with another configuration: resume with its "
                                             "own config.yaml, or use another --out")
        return
    if metrics.get("status") == "finished":
        raise RunFinished(f"{out} has finished ({metrics.get('epochs_completed')} of {metrics.get('epochs')} epochs; "
                          f"its {run_folder.CHECKPOINT} was removed): nothing to resume, nothing changed; "
                          f"`cifar-resnet evaluate {out}` re-evaluates it, --overwrite trains it again")
    raise ConfigError(f"{out} holds a run ({', '.join(kept)}) but no {run_folder.CHECKPOINT} to continue it from: "
                      "nothing changed; --overwrite (instead of --resume) trains it again from scratch, its record "
                      "deleted, or choose another --out")


def refuse_checkpoint_of_another_run(out: Path, cfg: Config, checkpoint: dict) -> None:
    """`resume` from `checkpoint` in `out`: `CheckpointError` where it belongs to another configuration,
    `RunFinished` where its run has finished (a record killed while being written is finished by resuming)."""
    path = out / run_folder.CHECKPOINT
    if checkpoint.get("config") != config_to_dict(cfg):
        saved, given = checkpoint.get("config", {}), config_to_dict(cfg)
        diff = sorted(f"{section}.{k}" for section in given if isinstance(given[section], dict)
                      for k in given[section] if saved.get(section, {}).get(k) != given[section][k])
        raise run_folder.CheckpointError(f"{path} belongs to a run with another configuration (differs in: "
                                         f"{', '.join(diff) or 'name'}); resume with its own config.yaml or use another "
                                         f"{option('out_dir', '--out')}")
    planned = checkpoint.get("planned_epochs", cfg.train.epochs)  # a time budget fits fewer than train.epochs
    if checkpoint.get("epoch", 0) >= planned and (out / run_folder.WEIGHTS).is_file():
        try:
            finished = run_folder.read_metrics(out).get("status") == "finished"
        except (FileNotFoundError, run_folder.CheckpointError):
            finished = False  # killed while writing its record: resuming finishes it
        if finished:
            raise RunFinished(f"{out} has finished ({planned} of {planned} epochs): "
                              "nothing to resume, nothing changed; " + advise(
                                  f'evaluate_run("{out}") re-evaluates it, resume=False trains it again',
                                  f"`cifar-resnet evaluate {out}` re-evaluates it, --overwrite trains it again"))


def interrupted_after_training(out: Path, epochs: int) -> str:
    """The Ctrl-C message once every epoch has trained (not "epoch 2 of 1"): the record was being written."""
    return (f"interrupted while writing the record after the last epoch ({epochs} of {epochs}): the checkpoint is "
            f"kept; finish the record with: cifar-resnet train --out {out} --resume")
