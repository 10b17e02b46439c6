"""TensorBoard's event files: the curves read back with TensorBoard's own loader equal history.csv, also across a
resume after a killed session; and without TensorBoard a run trains the same, writing none."""

import csv
import json
import shutil
import sys

import pytest

from cifar_resnet.training.engine import Trainer, train
from cifar_resnet.training.live_view import EVENTS_PREFIX, installed, tag

from test_engine import smoke

IMAGES = 384  # an epoch of the synthetic set's 400 training images in full batches of 64
needs_tensorboard = pytest.mark.skipif(not installed(), reason='TensorBoard not installed: pip install "cifar_resnet[tensorboard]"')


def curves(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag's (step, value) points, as TensorBoard shows them (purged points left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {name: [(e.step, e.value) for e in events.Scalars(name)] for name in events.Tags()["scalars"]}


def history_curves(run_dir) -> dict[str, list[tuple[int, float]]]:
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    found = {}
    for name in rows[0]:
        if name not in ("epoch", "seconds"):
            found[tag(name)] = [(int(r["epoch"]), float(r[name])) for r in rows if r[name]]
    return found


def assert_same(run_dir, epochs, batches):
    got, expected = curves(run_dir), history_curves(run_dir)
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert len(rows) == epochs
    for name, points in expected.items():
        assert [s for s, _ in got[name]] == [s for s, _ in points], name  # each epoch once, in order
        assert [v for _, v in got[name]] == pytest.approx([v for _, v in points], rel=1e-6), name
    speed = [(int(r["epoch"]), batches / float(r["seconds"])) for r in rows]
    assert [s for s, _ in got["images_per_second"]] == [s for s, _ in speed]
    assert [v for _, v in got["images_per_second"]] == pytest.approx([v for _, v in speed], rel=1e-2)


@needs_tensorboard
def test_event_files_hold_history_csv_across_a_resume(synthetic_root, tmp_path):
    cfg = smoke(synthetic_root, **{"train.epochs": 4})
    run = tmp_path / "run"
    trainer = Trainer(cfg, run, log=None, progress=False)
    epochs = trainer.epochs()
    next(epochs), next(epochs)  # two epochs, checkpointed
    kept = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "history.csv")}
    next(epochs)  # a third, whose points reach the event file ...
    epochs.close()
    trainer.close()
    for name, data in kept.items():  # ... and then the session dies before its checkpoint: back to epoch 2
        (run / name).write_bytes(data)
    assert [s for s, _ in curves(run)["train/loss"]] == [1, 2, 3]

    metrics = train(cfg, run, resume=True, log=None, progress=False)
    assert len(list(run.glob(f"{EVENTS_PREFIX}*"))) == 2  # one file per session
    assert_same(run, 4, IMAGES)
    final = curves(run)
    assert final["final/test_acc"] == [(4, pytest.approx(metrics["test_acc"]))]
    assert final["final/test_acc_tta"] == [(4, pytest.approx(metrics["test_acc_tta"]))]
    assert "test/acc_raw" in final and "lr" in final  # the trained weights beside their average

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run))
    events.Reload()
    assert events.PluginTagToContent("hparams")  # the configuration's values beside the final accuracies


@needs_tensorboard
def test_a_fresh_start_replaces_the_curves_of_the_run_before(synthetic_root, tmp_path):
    cfg = smoke(synthetic_root, **{"train.epochs": 2})
    train(cfg, tmp_path / "run", log=None, progress=False)
    train(cfg, tmp_path / "run", log=None, progress=False)  # not resumed: starts again
    assert len(list((tmp_path / "run").glob(f"{EVENTS_PREFIX}*"))) == 1
    assert_same(tmp_path / "run", 2, IMAGES)


def test_without_tensorboard_a_run_trains_and_writes_no_event_file(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed: its import fails
    assert not installed()
    metrics = train(smoke(synthetic_root, **{"train.epochs": 1}), tmp_path / "run", log=None, progress=False)
    assert metrics["status"] == "finished" and not list((tmp_path / "run").glob(f"{EVENTS_PREFIX}*"))
    with pytest.raises(ImportError, match=r"cifar_resnet\[tensorboard\]"):
        Trainer(smoke(synthetic_root), tmp_path / "other", log=None, tensorboard=True)


def test_tensorboard_false_writes_no_event_file(synthetic_root, tmp_path):
    train(smoke(synthetic_root, **{"train.epochs": 1}), tmp_path / "run", log=None, progress=False, tensorboard=False)
    assert not list((tmp_path / "run").glob(f"{EVENTS_PREFIX}*"))
