"""The study storage's cost per trial: milliseconds of database time per search trial, SQLite against PostgreSQL.

Runs trials that do no training but make the storage calls one search trial makes (its slot check over the
study's trials, the sample's parameters, the user attributes the search records, one report and pruning
check per epoch, the heartbeat, the final state) through the same storage the search opens, and prints the
mean milliseconds per trial. PostgreSQL is a throwaway server started in a temporary folder
(`cifar_resnet.studies.temporary_postgres`, needs the distribution's `postgresql` package), or `--postgres URL` for your own.

    python benchmarks/storage.py [--trials 200] [--epochs 18] [--postgres URL]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cifar_resnet.studies.search_space import load_space, make_pruner  # noqa: E402
from cifar_resnet.studies.search_storage import make_storage  # noqa: E402
from cifar_resnet.studies.temporary_postgres import TemporaryPostgres, find_bindir  # noqa: E402

SPACE = Path(__file__).resolve().parents[1] / "configs" / "search_space.yaml"


def storage_only_trial(trial: optuna.Trial, epochs: int) -> float:
    """The storage calls of one trained search trial, without the training."""
    trial.study.get_trials(deepcopy=False)  # the slot check
    for name in ("stages", "base_width", "blocks_1", "blocks_2", "kernel_1", "kernel_2"):
        trial.suggest_int(name, 1, 8)
    trial.suggest_float("lr", 0.05, 0.4, log=True)
    trial.suggest_float("weight_decay", 1e-4, 1e-3, log=True)
    for key in ("run", "worker", "config", "params"):
        trial.set_user_attr(key, key)
    for epoch in range(1, epochs + 1):
        trial.report(epoch / epochs, epoch)
        trial.should_prune()
    for key in ("state", "epochs", "seconds"):
        trial.set_user_attr(key, key)
    return 1.0


def ms_per_trial(url: str, trials: int, epochs: int) -> float:
    space = load_space(SPACE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(storage=make_storage(url, heartbeat=space.heartbeat), direction="maximize",
                                    sampler=optuna.samplers.RandomSampler(seed=0), pruner=make_pruner(space))
        start = time.perf_counter()
        study.optimize(lambda trial: storage_only_trial(trial, epochs), n_trials=trials)
    return (time.perf_counter() - start) / trials * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=18, help="reports per trial (default: the search space's 18)")
    parser.add_argument("--postgres", help="a PostgreSQL URL to measure instead of a throwaway local server")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = ms_per_trial(f"sqlite:///{tmp}/bench.db", args.trials, args.epochs)
    print(f"SQLite (file): {sqlite:.1f} ms of storage time per trial "
          f"({args.trials} trials, {args.epochs} epochs each)")
    if args.postgres is None and find_bindir() is None:
        print("PostgreSQL: no server installed (Debian: apt-get install postgresql), or give --postgres URL")
        return
    with contextlib.nullcontext(args.postgres) if args.postgres else TemporaryPostgres(fsync=True) as server:
        url = server if isinstance(server, str) else server.url
        postgres = ms_per_trial(url, args.trials, args.epochs)
    where = "given server" if args.postgres else "local server, Unix socket, fsync on"
    print(f"PostgreSQL ({where}): {postgres:.1f} ms of storage time per trial")


if __name__ == "__main__":
    main()
