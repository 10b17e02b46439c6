"""Architecture search under the parameter budget: an Optuna study over the design space of a YAML file.

Each trial samples a whole `Config` first (`sample_config`), counts its parameters on the meta device and
rejects over-budget (and invalid) candidates without training them: they are recorded, but only trained
trials count toward `--trials`, and a sample that repeats a rejected configuration is recognised from the
record without being counted again. The rest train with the engine's `Trainer`, reporting validation
accuracy (the last `holdout` training images, never the test set) after every epoch so the pruner can stop
them early: epochs are the fidelity. The study lives in SQLite (default `runs/search/<study>.db`, beside the
trial run folders; or any database URL), so a search resumes where it stopped and several workers, on one
machine or many, can share it. A heartbeat marks a killed worker's trial failed and queues it again; the
retry continues from the dead trial's checkpoint. The results (`<study>.csv`, `<study>_best.yaml`,
`<study>_importance.csv`) are exported to `results/search/`, where the notebooks and figures read them.
The design space, a trial's candidate, and the sampler and pruner a space names are `search_space`'s.

    cifar-resnet search --space configs/search_space.yaml --study s1 --trials 200
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Callable

import optuna
import sqlalchemy
from optuna.trial import TrialState

from .. import run_folder
from ..audience import progress_bar
from ..config import ConfigError, config_from_dict, override, save_config
from ..data.cifar10 import CIFAR10Split, load_splits
from ..runtime import resolve_device
from ..models import parameter_count
from ..training.engine import Trainer, TrainingDiverged
from ..training.history import column
from ..training.launch_policy import check_duration
from .search_space import SearchSpace, dashed, describe, load_space, make_pruner, make_sampler, sample_config
from .search_storage import StorageError, default_url, describe_url, make_storage, worker_name

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # trials that ended (trained, or rejected before training)
TRAINED = ("complete", "pruned", "diverged")  # their "state" attribute: the trials `--trials N` counts
REJECTED = ("over_budget", "invalid")  # recorded, never trained, never counted
MAX_REJECTIONS = 200  # a session that rejects this many samples in a row stops: the space is mostly out of budget


# ---- the study -------------------------------------------------------------------------------------
def open_study(space: SearchSpace, study_name: str, storage: str) -> optuna.Study:
    """Create the study in `storage` (a database URL), or load it if it exists; refuse another space."""
    rdb = make_storage(storage, space.heartbeat)
    study = optuna.create_study(study_name=study_name, storage=rdb, sampler=make_sampler(space),
                                pruner=make_pruner(space), direction="maximize", load_if_exists=True)
    if earlier := len(study.get_trials(deepcopy=False)):
        study.sampler = make_sampler(space, seed_offset=earlier)
    given = dataclasses.asdict(space)
    if "space" not in study.user_attrs:
        study.set_user_attr("space", given)
    elif study.user_attrs["space"] != given:
        diff = [key for key, value in given.items() if study.user_attrs["space"].get(key) != value]
        raise ConfigError(f"study {study_name!r} was created with another search space (differs in: "
                          f"{', '.join(diff)}); search with its own space file or give a new --study name")
    return study


def _open_or_refuse(space: SearchSpace, study_name: str, storage: str) -> optuna.Study:
    """`open_study`, a database that cannot be written (a read-only file or folder) refused in one line."""
    try:
        return open_study(space, study_name, storage)
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        cause = getattr(err, "orig", None) or err.__cause__ or err
        raise StorageError(f"cannot use the study's database at {describe_url(storage)} "
                           f"({(str(cause).strip().splitlines() or [type(cause).__name__])[0][:120]}): make it and its "
                           "folder writable, or give another --work-dir or --storage") from None


class _StudyFull(Exception):
    """The study reached its number of trials while this one waited to start."""


def trained_trials(study: optuna.Study) -> int:
    """The trials that trained (to the end, or until pruned or diverged): what `--trials N` counts."""
    return sum(t.user_attrs.get("state") in TRAINED for t in study.get_trials(deepcopy=False, states=FINISHED))


def _take_slot(trial: optuna.Trial, n_trials: int, poll: float) -> bool:
    """Whether `trial` may run: the trained trials plus the earlier ones still running stay below n_trials.

    Without this, workers that start trials at the same moment overshoot the total. A trial that finds every
    slot taken waits, because an earlier running trial may yet die (its heartbeat stops) and need replacing.
    """
    while True:
        optuna.storages.fail_stale_trials(trial.study)
        trials = trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        finished = sum(t.state in FINISHED and t.user_attrs.get("state") in TRAINED for t in trials)
        ahead = sum(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)
        if finished >= n_trials or finished + ahead < n_trials:
            return finished < n_trials
        time.sleep(poll)


def _end(trial: optuna.Trial, state: str, trainer: Trainer | None = None) -> None:
    trial.set_user_attr("state", state)
    if trainer is not None:
        trial.set_user_attr("epochs", trainer.epoch)
        trial.set_user_attr("seconds", round(trainer.train_seconds, 2))
        (trainer.out / run_folder.CHECKPOINT).unlink(missing_ok=True)  # ~3x the weights per trial; only a retry needs it
        trainer.close()  # the trial's folder is free again (its lock released)


def _params_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def _rejected_before(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """The earlier trial that rejected the very configuration `trial` sampled, if any."""
    key = _params_key(trial.params)
    return next((t for t in trial.study.get_trials(deepcopy=False, states=FINISHED)
                 if t.user_attrs.get("state") in REJECTED and "repeat_of" not in t.user_attrs
                 and _params_key(t.params) == key), None)


def objective(trial: optuna.Trial, space: SearchSpace, n_trials: int,
              splits: tuple[CIFAR10Split, CIFAR10Split, str], work_dir: Path, device: str | None,
              allow_slow: bool = False) -> float:
    """Sample, count, then train one candidate, reporting validation accuracy after every epoch."""
    if not _take_slot(trial, n_trials, poll=space.heartbeat):
        trial.set_user_attr("state", "surplus")
        trial.study.stop()
        raise _StudyFull(f"the study already has {n_trials} trained trials")
    retry = "run" in trial.user_attrs  # copied, with the params, from the killed trial this one retries
    run = trial.user_attrs.get("run", f"trial_{trial.number}")
    trial.set_user_attr("run", run)
    trial.set_user_attr("worker", worker_name())
    cfg = override(sample_config(trial, space), name=f"{trial.study.study_name}-{run}")
    trial.set_user_attr("config", dataclasses.asdict(cfg))
    if (earlier := _rejected_before(trial)) is not None:  # known from the record: not counted, not trained
        trial.set_user_attr("repeat_of", earlier.number)
        if "params" in earlier.user_attrs:
            trial.set_user_attr("params", earlier.user_attrs["params"])
        _end(trial, earlier.user_attrs["state"])
        raise optuna.TrialPruned(f"repeats trial {earlier.number}, rejected as {earlier.user_attrs['state']}")
    try:
        params = parameter_count(cfg.model)  # on the meta device: nothing is allocated
    except ConfigError as err:
        _end(trial, "invalid")
        raise optuna.TrialPruned(str(err)) from None
    trial.set_user_attr("params", params)
    if params > space.budget:
        _end(trial, "over_budget")
        raise optuna.TrialPruned(f"{params:,} parameters, over the budget of {space.budget:,}")
    check_duration(cfg, splits, resolve_device(device), out_dir=work_dir / run, resume=retry, allow_slow=allow_slow,
                   log=None)
    trainer = Trainer(cfg, work_dir / run, device=device, resume=retry, progress=False, log=None, splits=splits)
    try:
        for stats in trainer.epochs():
            trial.report(stats.eval_acc, stats.epoch)
            if stats.epoch < cfg.train.epochs and trial.should_prune():  # a finished trial is complete
                _end(trial, "pruned", trainer)
                raise optuna.TrialPruned(f"validation accuracy {stats.eval_acc:.4f} after epoch {stats.epoch}")
    except TrainingDiverged as err:
        _end(trial, "diverged", trainer)
        raise optuna.TrialPruned(str(err)) from None
    except KeyboardInterrupt:  # Ctrl-C fails the trial: queue it again, so the next run continues it
        trial.study.enqueue_trial(trial.params, user_attrs={"run": run})
        trainer.close()  # the run folder's lock, now rather than whenever the trainer is collected
        raise
    _end(trial, "complete", trainer)
    return trainer.history[-1][column("eval_acc", trainer.eval_split)]


class _StopWhenTrained:
    """Optuna callback: stop once the study has `n_trials` trained trials; give up (one-line `ConfigError`)
    after `MAX_REJECTIONS` rejected samples in a row in this session."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials, self.rejected_in_a_row = n_trials, 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        state = trial.user_attrs.get("state")
        self.rejected_in_a_row = self.rejected_in_a_row + 1 if state in REJECTED else 0
        if self.rejected_in_a_row >= MAX_REJECTIONS:
            raise ConfigError(f"{MAX_REJECTIONS} samples in a row were over the budget or invalid: narrow the "
                              "search space (fewer or narrower stages) or raise its budget")
        if trained_trials(study) >= self.n_trials:
            study.stop()


def _progress(log: Callable[[str], None], study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    a = trial.user_attrs
    state = a.get("state", trial.state.name.lower())
    if state == "surplus":
        log(f"trial {trial.number}: the study has all its trials; this worker stops")
        return
    if "config" not in a:  # failed before sampling (e.g. a refused slow run): the error says why
        return
    if "repeat_of" in a:
        state = "repeat"
    line = f"trial {trial.number:>4} {state:<11} {describe(config_from_dict(a['config']))}"
    line += f" | {a['params']:,} params" if "params" in a else ""
    if a.get("epochs"):
        values = trial.intermediate_values
        line += f" | {a['epochs']} epochs val {values[max(values)]:.4f} {a['seconds']:.0f}s"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max(complete, key=lambda t: t.value, default=None)
    log(line + (f" | best {best.value:.4f} (trial {best.number})" if best else " | best -"))


def run_search(space_path: str | Path, study_name: str, n_trials: int, storage: str | None = None,
               timeout: float | None = None, data_root: str | None = None, device: str | None = None,
               work_dir: Path = Path("runs/search"), log: Callable[[str], None] = print,
               allow_slow: bool = False) -> optuna.Study:
    """Run trials until the study has `n_trials` trained ones (or `timeout` seconds pass); returns the study.

    Resumable and shareable: finished trials are never repeated, and any number of workers may call this
    on the same study and storage (default `sqlite:///<work_dir>/<study>.db`) at once. Trial run folders go
    to `work_dir/<study>/trial_<n>`. Over-budget samples are recorded but do not count toward `n_trials`.
    """
    if n_trials < 1:
        raise ConfigError(f"--trials {n_trials}: a search needs at least 1 trained trial")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout must be above 0 seconds, got {timeout:g}")
    run_folder.folder_name(study_name, "--study", work_dir)  # its database, trial folders and exports are named so
    space = load_space(space_path)
    run_folder.writable_folder(work_dir)  # the trial folders (and the default database) go there
    if storage is None:
        run_folder.make_folder(work_dir)
        storage = default_url(Path(work_dir), study_name)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial comes from _progress instead
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = _open_or_refuse(space, study_name, storage)
            done = trained_trials(study)
            rejected = sum(t.user_attrs.get("state") in REJECTED for t in study.get_trials(deepcopy=False))
            log(f"study {study_name!r} in {describe_url(storage)}: "
                f"{done} of {n_trials} trials trained ({rejected} samples rejected, not counted); budget "
                f"{space.budget:,} parameters, validation on the last {space.holdout:,} training images")
            if done >= n_trials:
                return study
            splits = load_splits(override(space.base, **{"data.holdout": space.holdout}), data_root)
            with progress_bar(total=n_trials, initial=done, desc=f"search {study_name}", unit="trial") as bar:
                trials_done = lambda study, _: bar.update(min(trained_trials(study), n_trials) - bar.n)  # noqa: E731
                study.optimize(partial(objective, space=space, n_trials=n_trials, splits=splits,
                                       work_dir=Path(work_dir) / study_name, device=device, allow_slow=allow_slow),
                               timeout=timeout, catch=(_StudyFull,),
                               callbacks=[partial(_progress, log), _StopWhenTrained(n_trials), trials_done])
    finally:
        optuna.logging.set_verbosity(verbosity)
    return study


# ---- results ---------------------------------------------------------------------------------------
def trial_rows(study: optuna.Study) -> list[dict]:
    """One row per candidate: state, architecture, parameters, fidelity reached, validation accuracy, time."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if a.get("state") == "surplus" or "config" not in a:
            continue
        model, values = a["config"]["model"], t.intermediate_values
        rows.append({
            "number": t.number, "state": a.get("state", t.state.name.lower()), "repeat_of": a.get("repeat_of"),
            "val_acc": values[max(values)] if values else None, "epochs": a.get("epochs", 0),
            "trainable_params": a.get("params"), "seconds": a.get("seconds", 0.0),
            **{k: dashed(model[k]) for k in ("channels", "blocks", "kernels", "skip_kernels")},
            "retry_of": t.system_attrs.get("failed_trial"),
            **{f"params_{name}": value for name, value in t.params.items()},
        })
    return rows


def _publish(path: Path, write: Callable[[io.StringIO], None]) -> Path:
    """`write` the text into memory, then to `path` atomically (`run_folder.atomic_write_text`): workers may
    export at once."""
    buffer = io.StringIO()
    write(buffer)
    run_folder.atomic_write_text(path, buffer.getvalue())
    return path


def export_results(study: optuna.Study, out_dir: str | Path) -> dict[str, Path]:
    """Write `<study>.csv`, `<study>_best.yaml` and `<study>_importance.csv` (what exists) to `out_dir`."""
    import pandas as pd

    out_dir, name = Path(out_dir), study.study_name
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    trials = pd.DataFrame(rows, columns=None if rows else ["number", "state"])
    written = {"csv": _publish(out_dir / f"{name}.csv", partial(trials.to_csv, index=False))}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = max(complete, key=lambda t: t.value)
        # Ready to train: the whole training set (no holdout), for the full fidelity the trials aimed at.
        cfg = override(config_from_dict(best.user_attrs["config"]), name=f"{name}_best", **{"data.holdout": 0})
        written["best"] = out_dir / f"{name}_best.yaml"
        save_config(cfg, written["best"])  # atomically
    if len(complete) >= 2:  # importances of fewer trials are meaningless (optuna returns them all equal)
        with warnings.catch_warnings():  # per-stage parameters of rare stage counts: noted, not news
            warnings.simplefilter("ignore", UserWarning)
            importances = optuna.importance.get_param_importances(study)
        table = pd.DataFrame({"param": list(importances), "importance": list(importances.values())})
        written["importance"] = _publish(out_dir / f"{name}_importance.csv", partial(table.to_csv, index=False))
    return written
