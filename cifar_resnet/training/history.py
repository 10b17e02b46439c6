"""history.csv's rows, named once: an `EpochStats` field and its column are the same name but for the
evaluation split, `eval_acc` <-> `test_acc` (or `val_acc` where the run validates on held-out training
images). The engine writes rows with `EpochStats.row`; the readers (the search, the sweep, the records and
figures) find a field's column with `column`, or name a column's field with `field_name`. No torch here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

EVAL_SPLITS = ("test", "val")  # what a run evaluates on: the test set, or its held-out training images


@dataclass(kw_only=True)
class EpochStats:
    """One row of history.csv, built with keywords. `eval_*` is None on epochs that were not evaluated;
    `eval_*_raw` (the trained weights, where `eval_*` measures their average) is None too without a weight
    average."""

    epoch: int
    lr: float  # mean learning rate over the epoch's steps
    train_loss: float
    train_acc: float
    eval_loss: float | None
    eval_acc: float | None
    eval_loss_raw: float | None = None
    eval_acc_raw: float | None = None
    seconds: float  # training time of this epoch, evaluation excluded

    def row(self, split: str, raw: bool) -> dict:
        """The row history.csv holds, columns in this order; `raw`: with the trained weights' columns."""
        return {column(f.name, split): getattr(self, f.name) for f in dataclasses.fields(self)
                if raw or not f.name.endswith("_raw")}


def column(name: str, split: str) -> str:
    """history.csv's column for the `EpochStats` field `name` in a run evaluated on `split`."""
    return split + name.removeprefix("eval") if name.startswith("eval_") else name


def field_name(name: str) -> str:
    """The `EpochStats` field of history.csv's column `name` (the inverse of `column`)."""
    split = name.split("_", 1)[0]
    return "eval" + name.removeprefix(split) if split in EVAL_SPLITS and "_" in name else name
