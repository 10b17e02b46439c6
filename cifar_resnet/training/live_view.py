"""TensorBoard event files in the run folder, for watching a run as it trains and comparing runs side by side.

Optional: where `tensorboard` is installed (`pip install "cifar_resnet[tensorboard]"`; Colab ships it) every run
writes them, unless `Trainer(..., tensorboard=False)`. history.csv stays the record that everything else reads;
these are the same numbers, step = epoch:

    train/loss, train/acc              every epoch
    test/loss, test/acc                evaluated epochs (val/... where the run validates on held-out images);
    test/loss_raw, test/acc_raw        the trained weights where test/... measures their average
    lr, images_per_second              every epoch
    final/test_acc, final/test_acc_tta at the end, with the configuration's main values as hyperparameters

A resumed run purges what a killed session wrote after its checkpoint (`purge_step`), so its curves continue
without a duplicate point. `tensorboard --logdir runs/` shows every run below (the search's trials and a
sweep's runs included, one folder each); in a notebook, `%load_ext tensorboard` then `%tensorboard --logdir runs`.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from .history import column

EVENTS_PREFIX = "events.out.tfevents."  # how TensorBoard's event files are named


def installed() -> bool:
    """Whether `torch.utils.tensorboard` can write (the `tensorboard` package is installed)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def tag(name: str) -> str:
    """The tag of history.csv's column `name`: `test_acc` -> `test/acc`, `lr` -> `lr`."""
    split, _, rest = name.partition("_")
    return f"{split}/{rest}" if split in ("train", "test", "val") and rest else name


def hyperparameters(cfg: Config, params: int) -> dict:
    """The configuration's main values, as TensorBoard's hyperparameter table shows them (numbers, strings)."""
    m, t, d = cfg.model, cfg.train, cfg.data
    values = {"name": cfg.name, "params": params, "block": m.block, "channels": m.channels, "blocks": m.blocks,
              "kernels": m.kernels, "epochs": t.epochs, "batch_size": t.batch_size, "optimizer": t.optimizer,
              "lr": t.lr, "schedule": t.schedule, "weight_decay": t.weight_decay,
              "label_smoothing": t.label_smoothing, "mixup_alpha": t.mixup_alpha, "cutmix_alpha": t.cutmix_alpha,
              "ricap_beta": t.ricap_beta, "sam_rho": t.sam_rho, "ema_decay": t.ema_decay, "tta": t.tta,
              "policy": d.policy, "cutout": d.cutout, "seed": t.seed}
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


class EventLog:
    """The run's event files: `epoch(row)` after each epoch, `final(...)` at the end, `close()`."""

    def __init__(self, out_dir: Path, *, resumed_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        out_dir = Path(out_dir)
        if not resumed_epoch:  # a fresh start: the curves of an earlier run in this folder go with its record
            for old in out_dir.glob(f"{EVENTS_PREFIX}*"):
                old.unlink()
        self.writer = SummaryWriter(str(out_dir), purge_step=resumed_epoch + 1 if resumed_epoch else None)

    def epoch(self, row: dict, images_per_second: float) -> None:
        """history.csv's row of an epoch (its `epoch`, the columns filled), and the training throughput."""
        step = row["epoch"]
        for name, value in row.items():
            if name not in ("epoch", "seconds") and value is not None:
                self.writer.add_scalar(tag(name), value, step)
        self.writer.add_scalar("images_per_second", images_per_second, step)
        self.writer.flush()  # live: TensorBoard reads what is on disk

    def final(self, hparams: dict, metrics: dict, split: str, step: int) -> None:
        """The hyperparameters and the final accuracies (`<split>_acc`, with TTA where there is one)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        finals = {f"final/{key}": metrics[key] for key in (column("eval_acc", split), f"{split}_acc_tta")
                  if isinstance(metrics.get(key), (int, float))}
        for summary in hparams_summary(hparams, finals):
            self.writer.file_writer.add_summary(summary)
        for name, value in finals.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_event_log(out_dir: Path, *, resumed_epoch: int, enabled: bool | None) -> EventLog | None:
    """The run's `EventLog`, or None where it is off (`enabled=False`) or TensorBoard is not installed
    (`enabled=None`: on where installed; `True` where it is not: `ImportError` naming the extra)."""
    if enabled is False or (enabled is None and not installed()):
        return None
    if not installed():
        raise ImportError('TensorBoard is not installed: pip install "cifar_resnet[tensorboard]" (or tensorboard)')
    return EventLog(out_dir, resumed_epoch=resumed_epoch)
