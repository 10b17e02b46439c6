import csv
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from cifar_resnet.cli import main
from cifar_resnet.config import ConfigError, load_config
from cifar_resnet.models import validate_model_config
from cifar_resnet.studies.search import TRAINED, export_results, run_search
from cifar_resnet.studies.search_space import load_space, make_pruner, make_sampler, sample_config
from cifar_resnet.training.engine import Trainer

from conftest import CONFIGS, ROOT

SMOKE_SPACE = CONFIGS / "search_space_smoke.yaml"


def space_file(tmp_path, **changes):
    """The smoke space with dotted-key changes, written to tmp_path (its base made absolute)."""
    data = yaml.safe_load(SMOKE_SPACE.read_text())
    data["base"] = str(CONFIGS / "smoke.yaml")
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load_study(work_dir, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{work_dir / f'{name}.db'}")


def trained(study):
    return [t for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
            if t.user_attrs["state"] in TRAINED]


@pytest.mark.parametrize("name", ["search_space.yaml", "search_space_smoke.yaml"])
def test_shipped_spaces_sample_valid_configs_that_params_rebuild(name):
    space = load_space(CONFIGS / name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        cfg = sample_config(trial, space)
        validate_model_config(cfg.model)
        assert cfg.data.holdout == space.holdout and cfg.train.epochs == space.fidelity.max_epochs
        assert len(cfg.model.channels) == trial.params["stages"] and all(c % 8 == 0 for c in cfg.model.channels)
        assert sample_config(optuna.trial.FixedTrial(trial.params), space) == cfg
        study.tell(trial, 0.0)


def test_options_are_drawn_only_where_the_block_uses_them_and_there_is_a_choice(tmp_path):
    space = load_space(space_file(tmp_path, **{"model.block": ["basic", "bottleneck", "pool"],
                                               "model.shortcut": ["projection", "zero_pad"], "model.expansion": [2, 4],
                                               "model.se_reduction": [4], "model.stem_channels": [8]}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    blocks = set()
    for _ in range(30):
        trial = study.ask()
        cfg = sample_config(trial, space)
        validate_model_config(cfg.model)
        m, drawn = cfg.model, set(trial.params)
        blocks.add(m.block)
        assert ("shortcut" in drawn) == (m.block != "pool") and ("expansion" in drawn) == (m.block == "bottleneck")
        assert "se_reduction" not in drawn and m.se_reduction == 4  # one choice: the value, no search variable
        assert m.block != "pool" or (m.shortcut, m.expansion) == ("projection", 4)
        assert sample_config(optuna.trial.FixedTrial(trial.params), space) == cfg
        study.tell(trial, 0.0)
    assert blocks == {"basic", "bottleneck", "pool"}


@pytest.mark.parametrize("changes, message", [
    ({"model.blokcs": [1]}, r"unknown key 'model\.blokcs'"),
    ({"model.stages": {"low": 1, "hihg": 2}}, r"unknown key 'model\.stages\.hihg'"),
    ({"fidelity.max_epochs": "3"}, r"fidelity\.max_epochs: expected int"),
    ({"model.stages": {"low": 3, "high": 2}}, r"model\.stages: a range needs low <= high"),
    ({"model.stages": {"low": 1, "high": 7}}, r"model\.stages: must lie in 1\.\.6"),
    ({"model.kernels": []}, r"model\.kernels: give at least one choice"),
    ({"model.kernels": [3, 4]}, r"model\.kernels: kernel sizes must be odd"),
    ({"model.shortcut": ["zero"]}, r"model\.shortcut: unknown shortcut 'zero'"),
    ({"model.expansion": [0]}, r"model\.expansion: must be at least 1"),
    ({"model.block": ["basic", "resnext"]}, r"model\.block: unknown block type 'resnext'"),
    ({"train.lr": {"low": 0.0, "high": 1.0, "log": True}}, r"train\.lr: a log range needs low > 0"),
    ({"holdout": 0}, r"holdout: must be at least 1"),
    ({"heartbeat": 0}, r"heartbeat: must be at least 1 second"),
    ({"budget": 6_000_000}, r"budget: must lie in 1\.\.5,000,000"),
    ({"fidelity.min_epochs": 5}, r"fidelity: need 1 <= min_epochs <= max_epochs"),
    ({"sampler": "annealing"}, r"sampler: unknown 'annealing'"),
    ({"pruner": "asha"}, r"pruner: unknown 'asha'"),
    ({"base": "missing.yaml"}, r"configuration file not found: .*missing\.yaml"),
])
def test_space_file_is_parsed_strictly(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_space(space_file(tmp_path, **changes))


@pytest.mark.parametrize("pruner, cls", [("successive_halving", "SuccessiveHalvingPruner"),
                                         ("hyperband", "HyperbandPruner"), ("median", "MedianPruner"),
                                         ("threshold", "ThresholdPruner"), ("none", "NopPruner")])
def test_pruners_and_samplers_by_name(tmp_path, pruner, cls):
    assert type(make_pruner(load_space(space_file(tmp_path, pruner=pruner)))).__name__ == cls
    for name, sampler in (("tpe", "TPESampler"), ("RandomSampler", "RandomSampler"), ("qmc", "QMCSampler")):
        assert type(make_sampler(load_space(space_file(tmp_path, sampler=name)))).__name__ == sampler


def test_smoke_search_records_trials_and_exports_a_trainable_best(synthetic_root, tmp_path):
    results, lines = tmp_path / "results", []
    options = dict(data_root=str(synthetic_root), device="cpu", work_dir=tmp_path / "runs", log=lines.append)
    study = run_search(SMOKE_SPACE, "smoke", 6, **options)
    assert (tmp_path / "runs" / "smoke.db").is_file() and not results.exists()  # exports come separately
    space = load_space(SMOKE_SPACE)
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trained(study)) == 6 and len(trials) == len(study.trials) and len(lines) == len(trials) + 1
    assert all(line.startswith(f"trial {t.number:>4}") and "best" in line for line, t in zip(lines[1:], trials))
    for t in trials:
        run = tmp_path / "runs" / "smoke" / f"trial_{t.number}"
        if t.user_attrs["state"] == "over_budget":  # recorded, never trained
            assert t.user_attrs["params"] > space.budget and not t.intermediate_values and not run.exists()
        else:
            assert t.user_attrs["params"] <= space.budget and (run / "history.csv").is_file()
            assert not (run / "checkpoint.pt").exists()  # deleted once the trial ends
            assert len(t.intermediate_values) == t.user_attrs["epochs"]

    written = export_results(study, results)
    rows = list(csv.DictReader(written["csv"].open()))
    assert [int(r["number"]) for r in rows] == list(range(len(trials)))
    for key in ("state", "val_acc", "epochs", "trainable_params", "seconds", "channels", "params_lr", "params_stages"):
        assert key in rows[0], key
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete, "the smoke space trains some trials to the end"
    best = max(complete, key=lambda t: t.value)
    cfg = load_config(written["best"])
    assert cfg.data.holdout == 0 and cfg.train.epochs == space.fidelity.max_epochs
    assert cfg.model == sample_config(optuna.trial.FixedTrial(best.params), space).model
    assert ("importance" in written) == (len(complete) >= 2)

    assert len(run_search(SMOKE_SPACE, "smoke", 6, **options).trials) == len(trials)  # nothing left: nothing repeated
    assert lines[-1].startswith("study 'smoke'") and "6 of 6 trials trained" in lines[-1]
    with pytest.raises(ConfigError, match=r"another search space \(differs in: budget\)"):
        run_search(space_file(tmp_path, budget=30_000), "smoke", 7, **options)


def test_over_budget_candidates_are_not_trained_and_poor_ones_are_pruned(synthetic_root, tmp_path):
    space = space_file(tmp_path, budget=10_000, sampler="random", pruner="threshold", prune_below=1.01)
    study = run_search(space, "strict", 6, data_root=str(synthetic_root), device="cpu",
                       work_dir=tmp_path / "runs", log=lambda line: None)
    states = [t.user_attrs["state"] for t in study.trials]
    assert set(states) == {"over_budget", "pruned"} and states.count("pruned") == 6, states  # only trained ones count
    for t in study.trials:
        assert t.state == TrialState.PRUNED
        if t.user_attrs["state"] == "pruned":  # accuracy can't reach 1.01: stopped at the first rung
            assert t.user_attrs["params"] <= 10_000 and t.user_attrs["epochs"] == 1
            assert list(t.intermediate_values) == [1]
        else:
            assert t.user_attrs["params"] > 10_000 and "epochs" not in t.user_attrs


def test_interrupted_trial_is_queued_again_and_continued(synthetic_root, tmp_path, monkeypatch):
    space = space_file(tmp_path, pruner="none", budget=5_000_000)
    options = dict(data_root=str(synthetic_root), device="cpu", work_dir=tmp_path / "runs", log=lambda line: None)
    epochs = Trainer.epochs

    def interrupted_after_one_epoch(trainer):
        yield next(epochs(trainer))
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "epochs", interrupted_after_one_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_search(space, "ctrl_c", 2, **options)
    monkeypatch.undo()
    history = tmp_path / "runs" / "ctrl_c" / "trial_0" / "history.csv"
    first_epoch = history.read_text().splitlines()
    study = run_search(space, "ctrl_c", 2, **options)
    interrupted, retry = study.trials[:2]
    assert interrupted.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.params == interrupted.params and retry.user_attrs["run"] == "trial_0"
    assert len(first_epoch) == 2 and history.read_text().splitlines()[:2] == first_epoch  # continued, not restarted


def _search(space, study, trials, out, root, log):
    """`python -m cifar_resnet search` in the background, its output going to the file `log`."""
    with open(log, "w") as output:
        return subprocess.Popen([sys.executable, "-m", "cifar_resnet", "search", "--space", str(space),
                                 "--study", study, "--trials", str(trials), "--out", str(out),
                                 "--work-dir", str(out / "runs"), "--device", "cpu"],
                                cwd=ROOT, env={**os.environ, "CIFAR10_ROOT": str(root)},
                                stdout=output, stderr=subprocess.STDOUT)


def test_killed_search_resumes_keeps_finished_trials_and_retries_the_killed_one(synthetic_root, tmp_path):
    space = space_file(tmp_path, pruner="none", budget=5_000_000, heartbeat=1)
    history = tmp_path / "runs" / "resume" / "trial_1" / "history.csv"
    log = tmp_path / "first.log"
    worker = _search(space, "resume", 3, tmp_path, synthetic_root, log)
    deadline = time.monotonic() + 90
    while not history.exists():  # trial 0 finished, trial 1 has checkpointed its first epoch
        assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.01)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    time.sleep(3.5)  # let trial 1's heartbeat go stale (grace 2 x 1 s, SQLite clock in whole seconds)
    first_epoch = history.read_text().splitlines()[:2]
    before = load_study(tmp_path / "runs", "resume")
    assert [t.state for t in before.trials[:2]] == [TrialState.COMPLETE, TrialState.RUNNING]

    log = tmp_path / "again.log"
    assert _search(space, "resume", 3, tmp_path, synthetic_root, log).wait(timeout=120) == 0, log.read_text()
    after = load_study(tmp_path / "runs", "resume")
    finished = after.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 3 and after.trials[1].state == TrialState.FAIL
    assert (after.trials[0].params, after.trials[0].value) == (before.trials[0].params, before.trials[0].value)
    (retry,) = [t for t in finished if t.system_attrs.get("failed_trial") == 1]
    assert retry.params == after.trials[1].params and retry.user_attrs["run"] == "trial_1"
    assert history.read_text().splitlines()[:2] == first_epoch  # continued from the checkpoint, not restarted
    assert "retry_of" in next(csv.DictReader((tmp_path / "resume.csv").open()))


def test_two_workers_share_a_study_without_duplicated_or_lost_trials(synthetic_root, tmp_path):
    space = space_file(tmp_path, seed=None)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [_search(space, "shared", 6, tmp_path, synthetic_root, log) for log in logs]
    assert [w.wait(timeout=150) for w in workers] == [0, 0], [log.read_text() for log in logs]
    study = load_study(tmp_path / "runs", "shared")
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    ran = [[int(line.split()[1]) for line in log.read_text().splitlines()
            if line.startswith("trial") and "worker stops" not in line] for log in logs]
    assert all(ran), f"each worker runs trials: {ran}"
    assert len(trained(study)) == 6 and sorted(ran[0] + ran[1]) == [t.number for t in finished]  # each ran once
    runs = [t.user_attrs["run"] for t in finished]
    assert len(set(runs)) == len(runs)


def test_only_trained_trials_count_and_a_resume_never_recounts_a_rejected_configuration(synthetic_root, tmp_path):
    space = space_file(tmp_path, budget=6_000, sampler="random", pruner="threshold", prune_below=1.01)
    options = dict(data_root=str(synthetic_root), device="cpu", work_dir=tmp_path / "runs", log=lambda line: None)
    first = run_search(space, "count", 2, **options)
    assert len(trained(first)) == 2
    first_params = [t.params for t in first.trials]
    study = run_search(space, "count", 4, **options)  # resumed: the seeded sampler must not replay its samples
    assert len(trained(study)) == 4
    later = [t.params for t in study.trials[len(first_params):]]
    assert later[:len(first_params)] != first_params[:len(later)]
    rejected = [t for t in study.trials if t.user_attrs["state"] == "over_budget"]
    assert rejected, "the small budget rejects some samples"
    originals = {}
    for t in rejected:  # a configuration is rejected once; a sample repeating it points at that trial
        key = str(sorted(t.params.items()))
        if key in originals:
            assert t.user_attrs["repeat_of"] == originals[key]
        else:
            assert "repeat_of" not in t.user_attrs
            originals[key] = t.number


def test_importing_the_package_does_not_import_optuna():
    check = "import sys, cifar_resnet; assert 'optuna' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", check], cwd=ROOT).returncode == 0


def test_command_line_user_error_is_one_line(tmp_path, capsys):
    assert main(["search", "--space", str(tmp_path / "none.yaml"), "--study", "x", "--trials", "1", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("cifar-resnet: error: search space file not found")
