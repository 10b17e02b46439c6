import csv
import json

import pytest
import yaml

from cifar_resnet import run_folder
from cifar_resnet.config import ConfigError, load_config
from cifar_resnet.studies.sweep import SUMMARY, describe_plan, load_plan, run_plan, sweep

from conftest import CONFIGS


def write_plan(tmp_path, runs_, **top):
    plan = {"base": str(CONFIGS / "smoke.yaml"), "seconds_per_epoch": 1.0, "overhead_s": 2, "compile_s": 0,
            "overrides": {"data.holdout": 40, "train.epochs": 10}, "runs": runs_, **top}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def fake_training(clock, seconds_per_epoch=1.0, overhead=2.0):
    """Stands in for the engine: writes a history and "takes" epochs x seconds_per_epoch + overhead."""
    calls = []

    def train_fn(cfg, run_dir, time_limit):
        calls.append((cfg.name, time_limit))
        run_dir.mkdir(parents=True)
        rows = [{"epoch": e + 1, "val_acc": 0.5, "seconds": seconds_per_epoch} for e in range(cfg.train.epochs)]
        run_folder.write_history(rows, run_dir / run_folder.HISTORY)
        clock.now += cfg.train.epochs * seconds_per_epoch + overhead
        return {"status": "finished", "val_acc": 0.6, "val_acc_tta": 0.61, "train_seconds": cfg.train.epochs}

    return train_fn, calls


def test_a_limit_that_fits_two_runs_runs_two_and_skips_the_third(tmp_path):
    plan = load_plan(write_plan(tmp_path, [{"name": "a"}, {"name": "b"}, {"name": "c"}], time_limit=25))
    clock, messages = FakeClock(), []
    train_fn, calls = fake_training(clock)
    rows = run_plan(plan, tmp_path / "out", log=messages.append, train_fn=train_fn, clock=clock)
    assert [c[0] for c in calls] == ["a-s0", "b-s0"]
    assert calls[0][1] == 25 - 2 and calls[1][1] == 13 - 2  # each run gets the time left, less the overhead
    assert any(m.startswith("skipping c-s0: it needs about 12 s and 1 s") for m in messages)
    summary = list(csv.DictReader((tmp_path / "out" / SUMMARY).open()))
    assert [(r["run"], r["status"]) for r in summary] == [("a-s0", "finished"), ("b-s0", "finished"),
                                                         ("c-s0", "skipped")]
    assert summary[0]["val_acc"] == "0.6" and summary[0]["epochs_done"] == "10" and summary[2]["seconds"] == ""
    assert rows[1]["estimate_s"] == 12.0 and rows[1]["seconds"] == 12.0


def test_a_stopped_sweep_continues_with_resume_and_a_later_seed_keeps_the_earlier_rows(tmp_path):
    """Issue 37, item 2: the finished run is kept, the stopped one continues from its checkpoint, the rest
    train; then `--seeds 1` with --overwrite adds its rows after the seed-0 ones instead of dropping them."""
    from cifar_resnet.training.engine import TrainingInterrupted

    path = write_plan(tmp_path, [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    calls = []

    def train_fn(cfg, run_dir, time_limit, resume=False):
        calls.append((run_dir.name, resume))
        run_dir.mkdir(exist_ok=True)
        run_folder.write_history([{"epoch": 1, "val_acc": 0.5, "seconds": 1.0}], run_dir / run_folder.HISTORY)
        if run_dir.name == "b-s0" and not resume:
            (run_dir / run_folder.CONFIG).write_text(run_folder.__name__)  # a run stopped meanwhile: not finished
            raise TrainingInterrupted("interrupted during epoch 1 of 10: checkpoint kept")
        run_folder.write_metrics({"status": "finished", "val_acc": 0.6}, run_dir / run_folder.METRICS)
        return {"status": "finished", "val_acc": 0.6}

    out = tmp_path / "out"
    with pytest.raises(TrainingInterrupted, match=f"continue the whole sweep .*sweep\\(..., resume=True\\)"):
        run_plan(load_plan(path), out, train_fn=train_fn, log=lambda m: None)
    with pytest.raises(ConfigError, match="add resume=True to continue"):
        sweep(path, out, device="cpu", log=lambda m: None)
    (out / "b-s0" / run_folder.CONFIG).unlink()
    from cifar_resnet.config import save_config
    save_config(load_plan(path).runs[1].cfg, out / "b-s0" / run_folder.CONFIG)
    calls.clear()
    rows = run_plan(load_plan(path), out, train_fn=train_fn, log=lambda m: None, resume=True)
    assert calls == [("b-s0", True), ("c-s0", False)] and [r["run"] for r in rows] == ["a-s0", "b-s0", "c-s0"]
    run_plan(load_plan(path, seeds=[1]), out, train_fn=train_fn, log=lambda m: None)
    summary = list(csv.DictReader((out / SUMMARY).open()))
    assert [r["run"] for r in summary] == ["a-s0", "b-s0", "c-s0", "a-s1", "b-s1", "c-s1"]


def test_estimates_learn_from_the_runs_done(tmp_path):
    """The plan says 1 s per epoch, the runs take 2: after the first run the estimates double, so the
    second (which the plan alone would let start) is skipped."""
    plan = load_plan(write_plan(tmp_path, [{"name": "a"}, {"name": "b"}], time_limit=36))
    clock, messages = FakeClock(), []
    train_fn, calls = fake_training(clock, seconds_per_epoch=2.0)
    rows = run_plan(plan, tmp_path / "out", log=messages.append, train_fn=train_fn, clock=clock)
    assert [r["status"] for r in rows] == ["finished", "skipped"] and rows[1]["estimate_s"] == 22.0


def test_fill_lowers_the_epochs_to_what_fits(tmp_path):
    plan = load_plan(write_plan(tmp_path, [{"name": "record", "fill": True, "overrides": {"train.epochs": 100}}],
                                time_limit=32))
    clock = FakeClock()
    train_fn, calls = fake_training(clock)
    rows = run_plan(plan, tmp_path / "out", log=lambda m: None, train_fn=train_fn, clock=clock)
    assert rows[0]["epochs"] == 28 and rows[0]["status"] == "finished"  # 30 fit, less the 5% margin
    text, total = describe_plan(plan, compiles=False)
    assert total == 30 and "28 epochs" in text


def test_seeds_holdout_default_and_expected_duration(tmp_path):
    path = write_plan(tmp_path, [{"name": "a", "seeds": [0, 1]}, {"name": "b", "seconds_per_epoch": 2.0,
                                                                  "overrides": {"train.lr": 0.1}}],
                      compile_s=30, overrides={"train.epochs": 10, "train.compile": True})
    plan = load_plan(path)
    assert [r.name for r in plan.runs] == ["a-s0", "a-s1", "b-s0"] and [r.seed for r in plan.runs] == [0, 1, 0]
    assert all(r.cfg.data.holdout == 5000 for r in plan.runs)  # sweeps tune on held-out images by default
    assert plan.runs[2].cfg.train.lr == 0.1 and plan.runs[0].params == 5266
    text, total = describe_plan(plan, compiles=False)
    assert total == 3 * 2 + 10 + 10 + 20 and text.startswith(f"plan {path}: 3 runs, expected ~46 s")
    # compiled (on a GPU), the one network and batch size of these runs costs compile_s once, not per run
    assert describe_plan(plan, compiles=True)[1] == 46 + 30
    # --seeds replaces every run's seeds: a record's second seed in a later GPU call
    assert [(r.name, r.cfg.train.seed) for r in load_plan(path, seeds=[1]).runs] == [("a-s1", 1), ("b-s1", 1)]


@pytest.mark.parametrize("runs_,message", [
    ([], "needs 'base' .* and a non-empty list 'runs'"),
    ([{"overrides": {}}], r"runs\[0\]: each run needs a 'name'"),
    ([{"name": "a", "epochs": 3}], r"runs\[0\]: unknown key 'epochs'"),
    ([{"name": "a", "overrides": {"train.lrr": 1}}], r"runs\[0\]: unknown key 'train.lrr'"),
    ([{"name": "a", "overrides": {"model.channels": [4096, 4096]}}], r"runs\[0\]: .*over the budget"),
    ([{"name": "a"}, {"name": "a"}], "run 'a-s0' appears twice"),
    ([{"name": "a", "seeds": 3}], "seeds must be a non-empty list of integers"),
])
def test_bad_plans_are_refused_before_any_training(tmp_path, runs_, message):
    with pytest.raises(ConfigError, match=message):
        load_plan(write_plan(tmp_path, runs_))


def test_calibration_files_replace_the_estimates_and_configs_are_written(tmp_path):
    messages = []
    sweep(write_plan(tmp_path, [{"name": "a"}, {"name": "b"}], overrides={"data.holdout": 0, "data.train_subset": 0}),
          tmp_path / "unused", write_configs=tmp_path / "calib", device="cpu", log=messages.append)
    paths = sorted((tmp_path / "calib").glob("*.yaml"))
    assert messages[-1] == f"wrote {tmp_path / 'calib' / 'b.yaml'}" and not (tmp_path / "unused").exists()
    assert sorted(p.name for p in paths) == ["a.yaml", "b.yaml"]
    assert load_config(paths[0]).data.download is False
    (tmp_path / "calib" / "a.json").write_text(json.dumps(
        {"train_images_per_second": 10_000.0, "epoch_seconds_estimate": 2.0, "share": {"evaluation": 0.25}}))
    calibrated = load_plan(write_plan(tmp_path, [{"name": "a"}, {"name": "b"}], overrides={"data.holdout": 0, "data.train_subset": 0}),
                           calibration=tmp_path / "calib")
    batch = calibrated.runs[0].cfg.train.batch_size
    assert calibrated.runs[0].seconds_per_epoch == pytest.approx(50_000 // batch * batch / 10_000 + 0.5)
    assert calibrated.runs[1].seconds_per_epoch == 1.0


def test_tiny_sweep_trains_each_run_into_its_folder(synthetic_root, tmp_path):
    path = write_plan(tmp_path, [{"name": "plain"}, {"name": "narrow", "overrides": {"model.channels": [4, 8]}}],
                      overrides={"data.holdout": 40, "data.root": str(synthetic_root), "data.download": False,
                                 "data.train_subset": 0, "data.test_subset": 0, "train.epochs": 2,
                                 "train.batch_size": 64})
    messages = []
    rows = sweep(path, tmp_path / "out", device="cpu", log=messages.append)
    assert messages[0].startswith(f"plan {path}: 2 runs")
    assert [r["status"] for r in rows] == ["finished", "finished"]
    for row in rows:
        metrics = run_folder.read_metrics(tmp_path / "out" / row["run"])
        assert metrics["eval_split"] == "val" and row["val_acc"] == metrics["val_acc"] and row["test_acc"] is None
    assert rows[1]["params"] < rows[0]["params"]
    assert (tmp_path / "out" / SUMMARY).read_text().startswith("run,seed,status,params,epochs")
    with pytest.raises(ConfigError, match="already holds a sweep .*add resume=True .*overwrite=True"):
        sweep(path, tmp_path / "out", device="cpu", log=messages.append)


@pytest.mark.parametrize("plan", ["ablation", "record"])
def test_the_plans_load_and_print_their_expected_duration(plan, capsys):
    from cifar_resnet.cli import main

    assert main(["sweep", str(CONFIGS / "plans" / f"{plan}.yaml"), "--dry-run", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"plan {CONFIGS / 'plans' / plan}.yaml: ") and "expected ~" in out


def test_command_line_refuses_a_bad_plan_in_one_line(tmp_path, capsys):
    from cifar_resnet.cli import main

    assert main(["sweep", str(write_plan(tmp_path, [{"name": "a", "seeds": []}])), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_gpu_script_packs_a_plan_into_at_most_8_files(synthetic_root, tmp_path):
    """scripts/gpu_plan.sh as a GPU session runs it, here on the CPU: 7 runs come back as 5 tars of one run
    and one of the other two, with the summary and the log; no checkpoint travels."""
    import os
    import subprocess
    import sys
    import tarfile
    from pathlib import Path

    path = write_plan(tmp_path, [{"name": "a", "seeds": [0, 1, 2, 3]}, {"name": "b", "seeds": [0, 1, 2]}],
                      overrides={"data.holdout": 40, "data.root": str(synthetic_root), "data.download": False,
                                 "data.train_subset": 0, "data.test_subset": 0, "train.epochs": 1,
                                 "train.batch_size": 64})
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "GIT_COMMIT": "test",
           "CIFAR10_ROOT": str(synthetic_root), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "scripts/gpu_plan.sh", str(path), "600", "--device", "cpu"], cwd=CONFIGS.parent,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["a-s0.tar.gz", "a-s1.tar.gz", "a-s2.tar.gz", "a-s3.tar.gz", "b-s0.tar.gz", "more_runs.tar.gz",
                     "summary.csv", "sweep.log"]
    with tarfile.open(tmp_path / "out" / "more_runs.tar.gz") as tar:
        names = tar.getnames()
    assert {"b-s1/metrics.json", "b-s2/metrics.json"} <= set(names)
    assert not any(n.endswith(("checkpoint.pt", "model.safetensors")) for n in names)
    assert (tmp_path / "work" / "b-s2" / "checkpoint.pt").is_file()  # it stays behind
