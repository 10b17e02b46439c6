"""history.csv named once: EpochStats fields -> columns -> what the readers get back."""

import dataclasses

import pytest

from cifar_resnet import run_folder
from cifar_resnet.reporting.records import load_history
from cifar_resnet.training.history import EVAL_SPLITS, EpochStats, column, field_name

FIELDS = [f.name for f in dataclasses.fields(EpochStats)]


def stats(**changes) -> EpochStats:
    values = dict(epoch=1, lr=0.1, train_loss=2.0, train_acc=0.2, eval_loss=1.9, eval_acc=0.3, eval_loss_raw=1.8,
                  eval_acc_raw=0.35, seconds=1.5)
    return EpochStats(**{**values, **changes})


@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_every_field_has_one_column_and_back(split):
    assert [field_name(column(name, split)) for name in FIELDS] == FIELDS
    assert list(stats().row(split, raw=True)) == [
        "epoch", "lr", "train_loss", "train_acc", f"{split}_loss", f"{split}_acc", f"{split}_loss_raw",
        f"{split}_acc_raw", "seconds"]
    assert list(stats().row(split, raw=False)) == [
        "epoch", "lr", "train_loss", "train_acc", f"{split}_loss", f"{split}_acc", "seconds"]


def test_epoch_stats_are_built_with_keywords():
    with pytest.raises(TypeError):
        EpochStats(1, 0.1, 2.0, 0.2, 1.9, 0.3, seconds=1.5)


def test_the_records_read_the_fields_the_engine_wrote(tmp_path):
    rows = [stats(epoch=1).row("val", raw=True), stats(epoch=2, eval_acc=None, eval_loss=None).row("val", raw=True)]
    run_folder.write_history(rows, tmp_path / run_folder.HISTORY)
    history = load_history(tmp_path)
    assert list(history.columns) == FIELDS
    assert history["eval_acc"].iloc[0] == 0.3 and history["eval_acc_raw"].iloc[1] == 0.35
