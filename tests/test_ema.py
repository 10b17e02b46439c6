"""The weight average's warm-up (timm ModelEmaV3's schedule) and the history's columns for both weights."""

import math

import pytest
import torch
from torch import nn

from cifar_resnet.config import load_config, override
from cifar_resnet.training.ema import ema_decay_at, ema_update
from cifar_resnet.training.engine import Trainer, train

from conftest import CONFIGS


def test_warm_up_decay_rises_from_zero_to_the_configured_one():
    decays = [ema_decay_at(n, 0.999, 0.75) for n in range(20000)]
    assert decays[0] == 0.0 and math.isclose(decays[1], 1 - 2 ** -0.75)
    assert all(a <= b for a, b in zip(decays, decays[1:])) and decays[-1] == 0.999
    assert ema_decay_at(0, 0.999, 0.0) == ema_decay_at(5000, 0.999, 0.0) == 0.999  # no warm-up: constant


def _step(model, scale):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.ones_like(p))


@pytest.mark.parametrize("power", [0.75, 0.0])
def test_average_follows_the_weights_within_the_warm_ups_factor(power):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    average = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update(0.999, power), use_buffers=True)
    _step(model, 1.0)  # one training step away from the initialisation
    average.update_parameters(model)
    before = [p.clone() for p in model.parameters()]
    assert all(torch.equal(a, p) for a, p in zip(average.module.parameters(), model.parameters()))
    _step(model, 1.0)
    average.update_parameters(model)
    d = ema_decay_at(1, 0.999, power)  # 0.41 with the warm-up, 0.999 without
    for a, b, p in zip(average.module.parameters(), before, model.parameters()):
        assert torch.allclose(a, d * b + (1 - d) * p, atol=1e-6)
    assert int(average.n_averaged) == 2


def test_history_records_the_average_and_the_trained_weights(synthetic_root, tmp_path):
    base = {"data.root": str(synthetic_root), "data.download": False, "data.train_subset": 0, "data.test_subset": 0,
            "train.batch_size": 64, "train.epochs": 2}
    cfg = override(load_config(CONFIGS / "smoke.yaml"), **base)
    assert cfg.train.ema_decay and cfg.train.ema_warmup_power > 0  # the presets warm their average up
    trainer = Trainer(cfg, tmp_path / "ema", log=None)
    trainer.run()
    rows = trainer.history
    assert all(0 <= r["test_acc_raw"] <= 1 and 0 <= r["test_acc"] <= 1 for r in rows)
    assert int(trainer.ema.n_averaged) == 2 * trainer.steps_per_epoch
    plain = train(override(cfg, **{"train.ema_decay": 0.0}), tmp_path / "plain", log=None)
    header = (tmp_path / "plain" / "history.csv").read_text().splitlines()[0]
    assert header == "epoch,lr,train_loss,train_acc,test_loss,test_acc,seconds" and plain["eval_weights"] == "raw"
