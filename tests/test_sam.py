import copy

import pytest
import torch
from torch import nn

from cifar_resnet.config import ConfigError, TrainConfig, config_from_dict
from cifar_resnet.training.sam import SAM, frozen_norm_stats, make_sam


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def sam_step(model, rho, adaptive, lr=0.1, momentum=0.9, weight_decay=5e-4):
    """One step the way the engine takes it: base SGD around the SAM perturbation."""
    x, y = batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sam = SAM(model.parameters(), rho, adaptive)
    nn.functional.cross_entropy(model(x), y).backward()
    sam.perturb()
    optimizer.zero_grad()
    with frozen_norm_stats(model):
        nn.functional.cross_entropy(model(x), y).backward()
    sam.restore()
    optimizer.step()


def hand_written_step(model, rho, adaptive, lr=0.1, weight_decay=5e-4):
    """The same step written out: the gradient at w, the radius-rho ascent, the gradient there, SGD's update
    (the first step of momentum SGD is plain SGD with weight decay), BatchNorm statistics of pass one only."""
    x, y = batch()
    weights = [p.detach().clone() for p in model.parameters()]
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    stats_after_one_pass = {k: b.clone() for k, b in model[1].named_buffers()}
    t = [w.abs() if adaptive else torch.ones_like(w) for w in weights]
    norm = torch.sqrt(sum(((ti * g) ** 2).sum() for ti, g in zip(t, grads)))
    with torch.no_grad():
        for p, w, ti, g in zip(model.parameters(), weights, t, grads):
            p.copy_(w + rho * ti * ti * g / norm)
    grads_there = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    with torch.no_grad():
        for p, w, g in zip(model.parameters(), weights, grads_there):
            p.copy_(w - lr * (g + weight_decay * w))
        for k, b in model[1].named_buffers():
            b.copy_(stats_after_one_pass[k])


@pytest.mark.parametrize("adaptive,rho", [(False, 0.05), (True, 1.0)])
def test_sam_step_equals_the_hand_written_two_pass_computation(adaptive, rho):
    a, b = tiny_model(), tiny_model()
    sam_step(a, rho, adaptive)
    hand_written_step(b, rho, adaptive)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), rtol=1e-5, atol=1e-7), name
    plain = tiny_model()  # and the step differs from a plain SGD step: the perturbation matters
    x, y = batch()
    nn.functional.cross_entropy(plain(x), y).backward()
    torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4).step()
    assert not torch.allclose(plain[0].weight, a[0].weight, atol=1e-6)


def test_second_pass_leaves_batchnorm_statistics_as_after_one_pass():
    model = tiny_model()
    x, _ = batch()
    model(x)
    after_one = copy.deepcopy(model[1].state_dict())
    with frozen_norm_stats(model):
        model(x * 2 + 1)
        assert not torch.equal(model[1].running_mean, after_one["running_mean"])
    for key, value in model[1].state_dict().items():
        assert torch.equal(value, after_one[key]), key


def test_restore_gives_back_the_weights_bit_for_bit():
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch()
    nn.functional.cross_entropy(model(x), y).backward()
    sam = SAM(model.parameters(), 0.5)
    sam.perturb()
    assert not torch.equal(model[0].weight, before[0])
    sam.restore()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    with pytest.raises(RuntimeError, match="without a preceding perturb"):
        sam.restore()


def test_options_are_validated():
    assert make_sam(tiny_model(), TrainConfig()) is None
    assert isinstance(make_sam(tiny_model(), TrainConfig(sam_rho=0.05)), SAM)
    with pytest.raises(ConfigError, match="train.sam_rho: must be at least 0"):  # checked on reading
        config_from_dict({"train": {"sam_rho": -0.1}})
    with pytest.raises(ConfigError, match="train.sam_adaptive needs train.sam_rho > 0"):
        make_sam(tiny_model(), TrainConfig(sam_adaptive=True))


def test_sam_changes_what_is_learnt(synthetic_root, tmp_path):
    """The same run with and without SAM ends on other weights. (Exact resume of a SAM + RICAP run is tested
    with the other resume cases in test_engine.py.)"""
    from cifar_resnet.config import load_config, override
    from cifar_resnet.training.engine import train
    from cifar_resnet.evaluation.evaluate import load_run

    from conftest import CONFIGS

    cfg = override(load_config(CONFIGS / "smoke.yaml"), **{
        "data.root": str(synthetic_root), "data.download": False, "data.train_subset": 0, "data.test_subset": 0,
        "train.batch_size": 64, "train.epochs": 1, "train.sam_rho": 0.1})
    weights = {}
    for name, rho in (("sam", 0.1), ("plain", 0.0)):
        train(override(cfg, **{"train.sam_rho": rho}), tmp_path / name, log=None)
        weights[name] = load_run(tmp_path / name, "cpu")[1].state_dict()["fc.weight"]
    assert not torch.equal(weights["sam"], weights["plain"])
