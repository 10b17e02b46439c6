"""The launch policy: estimated before a Trainer is built, from timed steps; the Trainer itself only trains."""

import pytest
import torch
import yaml

from cifar_resnet.config import load_config, override
from cifar_resnet.data.cifar10 import load_splits
from cifar_resnet.formats import duration
from cifar_resnet.studies.search import run_search
from cifar_resnet.studies.sweep import sweep
from cifar_resnet.training import launch_policy
from cifar_resnet.training.engine import Trainer, train
from cifar_resnet.training.session import train_in_sessions

from conftest import CONFIGS

CPU = torch.device("cpu")


def smoke(synthetic_root, **changes):
    base = {"data.root": str(synthetic_root), "data.download": False, "data.train_subset": 0, "data.test_subset": 0,
            "train.batch_size": 64}
    return override(load_config(CONFIGS / "smoke.yaml"), **{**base, **changes})


def test_one_duration_formatter_with_rough_estimates():
    assert [duration(s) for s in (40, 720, 162000)] == ["40.0 s", "12.0 min", "45.00 h"]
    assert [duration(s, rough=True) for s in (40, 720, 162000)] == ["40 s", "12 min", "45 h"]


def test_the_trainer_holds_no_launch_policy(synthetic_root, tmp_path):
    cfg = smoke(synthetic_root, **{"train.epochs": 100_000_000})
    trainer = Trainer(cfg, tmp_path / "run", log=None)  # hours on a CPU: built all the same, nothing timed
    trainer.close()
    with pytest.raises(launch_policy.SlowRunError, match=r"smoke would train for about \d+ h on this CPU"):
        launch_policy.train(cfg, tmp_path / "refused", log=None, device="cpu")
    assert not (tmp_path / "refused").exists()


def test_the_estimate_counts_the_epochs_a_resumed_run_has_left(synthetic_root, tmp_path):
    cfg = smoke(synthetic_root, **{"train.epochs": 2})
    train(cfg, tmp_path / "run", log=None, device="cpu")
    splits = load_splits(cfg)
    longer = override(cfg, **{"train.epochs": 5})
    resumed = launch_policy.estimate_training(longer, splits, CPU, out_dir=tmp_path / "run", resume=True)
    fresh = launch_policy.estimate_training(longer, splits, CPU, out_dir=tmp_path / "run")
    steps_per_epoch = len(splits[0]) // 64
    assert (resumed.epochs, resumed.steps) == (3, 3 * steps_per_epoch)
    assert (fresh.epochs, fresh.steps) == (5, 5 * steps_per_epoch) and fresh.step_seconds > 0


def test_a_long_cpu_run_is_announced_and_a_bounded_one_allowed(synthetic_root, monkeypatch):
    cfg = smoke(synthetic_root)
    hours = launch_policy.Estimate(epochs=10, steps=1000, step_seconds=10.0)
    said = []
    monkeypatch.setattr(launch_policy.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    launch_policy.refuse_slow_run(cfg, launch_policy.Estimate(10, 100, 10.0), CPU, log=said.append)  # 1,000 s: announced
    assert said == ["smoke: 100 steps to go on the CPU, about 17 min of training (estimated from 3 timed steps)"]
    monkeypatch.setattr(launch_policy.os, "getloadavg", lambda: (999.0, 999.0, 999.0))  # a busy machine: said so
    assert launch_policy.estimate_note() == "estimated from 3 timed steps; rough: this machine is busy"
    launch_policy.refuse_slow_run(cfg, hours, CPU, time_limit=launch_policy.SLOW_RUN_SECONDS, log=None)
    launch_policy.refuse_slow_run(cfg, hours, CPU, allow_slow=True, log=None)
    launch_policy.refuse_slow_run(cfg, hours, torch.device("meta"), log=None)  # the policy is the CPU's
    with pytest.raises(launch_policy.SlowRunError, match="about 3 h on this CPU"):
        launch_policy.refuse_slow_run(cfg, hours, CPU, time_limit=launch_policy.SLOW_RUN_SECONDS + 1, log=None)


def test_notebook_03s_path_refuses_a_run_of_hours_before_building_a_trainer(synthetic_root, tmp_path):
    cfg = smoke(synthetic_root, **{"train.epochs": 100_000_000})
    with pytest.raises(launch_policy.SlowRunError, match=r"allow_slow=True to start it anyway"):  # a notebook reads the Python call
        train_in_sessions(cfg, tmp_path / "run", log=None, device="cpu")
    assert not (tmp_path / "run").exists()


def test_a_sweep_asks_the_policy_before_each_run(synthetic_root, tmp_path):
    plan = {"base": str(CONFIGS / "smoke.yaml"), "runs": [{"name": "long"}],
            "overrides": {"data.holdout": 40, "data.root": str(synthetic_root), "data.download": False,
                          "data.train_subset": 0, "data.test_subset": 0, "train.epochs": 100_000_000}}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(launch_policy.SlowRunError, match="long-s0 would train for about"):
        sweep(path, tmp_path / "out", device="cpu", log=lambda line: None)
    assert not (tmp_path / "out" / "long-s0").exists()


def test_a_search_asks_the_policy_before_each_trial(synthetic_root, tmp_path):
    space = yaml.safe_load((CONFIGS / "search_space_smoke.yaml").read_text())
    space.update(base=str(CONFIGS / "smoke.yaml"), budget=5_000_000, fidelity={"min_epochs": 1,
                                                                                "max_epochs": 100_000_000})
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    with pytest.raises(launch_policy.SlowRunError, match="would train for about"):
        run_search(path, "slow", 1, data_root=str(synthetic_root), device="cpu", work_dir=tmp_path, log=lambda s: None)
    assert not (tmp_path / "slow" / "trial_0").exists()


def test_a_time_limit_shorter_than_one_epoch_is_refused_before_training(synthetic_root, tmp_path, capsys, monkeypatch):
    """Issue 37, item 15: `--time-limit 8` with 15-second epochs ran 30 s, the first epoch being never cut short."""
    from faults import refused, train_argv

    monkeypatch.setattr(launch_policy, "step_seconds", lambda cfg, device: 5.0)  # 3 steps of 5 s an epoch
    line = refused(capsys, train_argv(synthetic_root, tmp_path / "run", "--time-limit", "8"), tmp_path)
    assert "--time-limit 8 s is shorter than one epoch of smoke here (about 15 s: 3 steps of ~5.00 s" in line
    assert "give at least 22 s" in line
    cfg = smoke(synthetic_root)
    launch_policy.refuse_epoch_over_limit(cfg, launch_policy.Estimate(2, 12, 5.0), 30.0)  # one epoch fits: trained
    launch_policy.refuse_epoch_over_limit(cfg, launch_policy.Estimate(2, 12, 5.0), None)


def test_a_sweep_skips_a_run_whose_epoch_does_not_fit_the_time_left(tmp_path):
    from cifar_resnet.studies.sweep import load_plan, run_plan
    from test_sweep import write_plan

    def train_fn(cfg, run_dir, time_limit):
        raise launch_policy.EpochOverTimeLimit("--time-limit 3 s is shorter than one epoch of a-s0 here")

    said = []
    rows = run_plan(load_plan(write_plan(tmp_path, [{"name": "a"}])), tmp_path / "out", train_fn=train_fn,
                    log=said.append)
    assert [r["status"] for r in rows] == ["skipped"] and any(m.startswith("skipping a-s0: --time-limit") for m in said)
