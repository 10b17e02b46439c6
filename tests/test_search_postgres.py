"""The multi-worker search against a real PostgreSQL server (started in a temporary folder, stopped at the end).

Skipped where no server is installed, unless REQUIRE_POSTGRES=1 (as in CI, whose .ci/run installs one).
"""

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from cifar_resnet.cli import main
from cifar_resnet.studies import search_storage
from cifar_resnet.studies.search_storage import StorageError, make_storage
from cifar_resnet.studies.temporary_postgres import TemporaryPostgres, find_bindir

from conftest import ROOT
from test_search import space_file, trained

psycopg = pytest.importorskip("psycopg", reason='the PostgreSQL driver: pip install "cifar_resnet[postgres]"')
TRIALS = 3
WORKERS = 3


@pytest.fixture
def postgres():
    if find_bindir() is None:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("REQUIRE_POSTGRES=1 but no PostgreSQL server (initdb) is installed")
        pytest.skip("no PostgreSQL server installed (Debian: apt-get install postgresql)")
    with TemporaryPostgres() as server:
        yield server


def _search(tmp_path, space, url, log, devices=None, trials=TRIALS):
    """`python -m cifar_resnet search` on the study 'pg' in `url`, in the background, output to `log`."""
    command = [sys.executable, "-m", "cifar_resnet", "search", "--space", str(space), "--study", "pg",
               "--trials", str(trials), "--storage", url, "--out", str(tmp_path), "--work-dir",
               str(tmp_path / "runs"), "--device", "cpu"] + (["--devices", devices] if devices else [])
    with open(log, "w") as output:
        return subprocess.Popen(command, cwd=ROOT, env={**os.environ, "CIFAR10_ROOT": os.environ["SYNTHETIC"]},
                                stdout=output, stderr=subprocess.STDOUT)


class Watcher:
    """Polls the server: the study's trials, and the most connections any one worker held."""

    def __init__(self, url):
        self.url, self.study, self.most = url, None, Counter()
        self.activity = psycopg.connect(url, autocommit=True)

    def trials(self, states=None):
        if self.study is None:
            try:
                self.study = optuna.load_study(study_name="pg", storage=make_storage(self.url, heartbeat=60))
            except KeyError:  # not created yet
                return []
        return self.study.get_trials(states=states)

    def count_connections(self):
        mine = f"cifar-resnet %:{os.getpid()}"  # this test's own storage is not a worker
        rows = self.activity.execute("SELECT application_name, count(*) FROM pg_stat_activity WHERE "
                                     "application_name LIKE 'cifar-resnet %%' AND application_name NOT LIKE %s "
                                     "GROUP BY 1", (mine,)).fetchall()
        for name, count in rows:
            self.most[name] = max(self.most[name], count)

    def until(self, condition, processes, logs, seconds=150):
        deadline = time.monotonic() + seconds
        while not (found := condition()):
            self.count_connections()
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes), \
                "\n".join(log.read_text() for log in logs)
            time.sleep(0.02)
        return found


@pytest.fixture
def space(tmp_path, synthetic_root, monkeypatch):
    monkeypatch.setenv("SYNTHETIC", str(synthetic_root))
    # Every sample trains (no pruning, no budget), 3 epochs each; a trial silent for 2 x 2 s is failed.
    return space_file(tmp_path, pruner="none", budget=5_000_000, seed=None, heartbeat=2)


def test_worker_killed_mid_trial_is_retried_from_its_checkpoint(postgres, tmp_path, synthetic_root, monkeypatch):
    # A dead worker's trial is failed, and its retry queued, by the first worker to ask for a trial once the
    # trial's heartbeat (1 s, grace 2 s) is stale; each trial trains 12 epochs, so the live workers are still in
    # their first trials then, and the killed worker comes back after the grace: the retry runs before the
    # study has its trained trials, on a fast machine as on a slow one.
    monkeypatch.setenv("SYNTHETIC", str(synthetic_root))
    space = space_file(tmp_path, pruner="none", budget=5_000_000, seed=None, heartbeat=1,
                       **{"fidelity.max_epochs": 12})
    watcher = Watcher(postgres.url)
    logs = [tmp_path / "launcher.log", tmp_path / "restarted.log"]
    launcher = _search(tmp_path, space, postgres.url, logs[0], devices=",".join(map(str, range(WORKERS))))
    restarted = None
    try:
        def one_epoch_in():  # a running trial whose first epoch is checkpointed and reported
            for t in watcher.trials(states=(TrialState.RUNNING,)):
                history = tmp_path / "runs" / "pg" / t.user_attrs.get("run", "-") / "history.csv"
                if list(t.intermediate_values) == [1] and len(history.read_text().splitlines()) == 2:
                    return t, history
            return None

        victim, history = watcher.until(one_epoch_in, [launcher], logs[:1])
        os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        first_epoch = history.read_text().splitlines()
        time.sleep(3)  # past the heartbeat's grace period: the killed trial is stale
        restarted = _search(tmp_path, space, postgres.url, logs[1])  # the killed worker comes back
        watcher.until(lambda: launcher.poll() is not None and restarted.poll() is not None, [], logs)
        output = logs[0].read_text()
        assert launcher.returncode == 1 and "killed by SIGKILL" in output.splitlines()[-1], output
        assert restarted.returncode == 0, logs[1].read_text()
    finally:
        for process in (launcher, restarted):
            if process is not None and process.poll() is None:
                process.kill()

    study = watcher.study
    assert len(trained(study)) == TRIALS and not study.get_trials(states=(TrialState.RUNNING,))
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL and list(killed.intermediate_values) == [1]
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["run"] == killed.user_attrs["run"]
    assert retry.intermediate_values[1] == killed.intermediate_values[1]  # the killed worker's epoch, kept
    assert history.read_text().splitlines()[:2] == first_epoch  # continued from the checkpoint, not restarted
    assert len(watcher.most) >= WORKERS and max(watcher.most.values()) <= 2, watcher.most
    watcher.activity.close()


def test_server_restarted_mid_trial_loses_no_finished_trial(postgres, space, tmp_path):
    watcher = Watcher(postgres.url)
    log = tmp_path / "launcher.log"
    launcher = _search(tmp_path, space, postgres.url, log, devices="0,1", trials=3)
    try:
        def finished_and_running():
            finished = watcher.trials(states=(TrialState.COMPLETE,))
            return finished if finished and watcher.study.get_trials(states=(TrialState.RUNNING,)) else None

        before = watcher.until(finished_and_running, [launcher], [log])
        watcher.activity.close()
        postgres.restart()  # every connection cut, as in a crash or an upgrade
        watcher.activity = psycopg.connect(postgres.url, autocommit=True)
        watcher.until(lambda: launcher.poll() is not None, [], [log])
        assert launcher.returncode == 0, log.read_text()  # the workers reconnected
    finally:
        if launcher.poll() is None:
            launcher.kill()
    study = optuna.load_study(study_name="pg", storage=make_storage(postgres.url, heartbeat=60))
    assert len(trained(study)) == 3 and not study.get_trials(states=(TrialState.RUNNING,))
    for t in before:
        assert (study.trials[t.number].state, study.trials[t.number].value) == (t.state, t.value)
    assert "Traceback" not in log.read_text()
    watcher.activity.close()


def test_call_that_meets_a_connection_the_server_cut_is_retried(postgres):
    rdb = make_storage(postgres.url, heartbeat=60)
    rdb.engine.pool._pre_ping = False  # the pool hands out the dead connection: the call itself meets the cut
    study = optuna.create_study(study_name="cut", storage=rdb)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    postgres.restart()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2


def test_worker_stops_in_one_line_when_the_server_stays_down(postgres, monkeypatch):
    monkeypatch.setattr(search_storage, "RECONNECT_SECONDS", 1.0)
    study = optuna.create_study(study_name="down", storage=make_storage(postgres.url, heartbeat=60))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    postgres.stop()
    with pytest.raises(StorageError, match=r"stopped answering for 1 s .*finished trials are kept") as err:
        study.get_trials()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("url, message", [
    ("postgresql://nobody@/db?host=/nonexistent", r"cannot open the study's database at postgresql://nobody@/db"),
    ("mysql://nobody@localhost/db", r'needs the pymysql driver, not installed: pip install "cifar_resnet\[mysql\]"'),
    ("grpc://localhost:13000", r"gRPC storage proxy has no heartbeat"),
    ("oracle+nosuch://x", r"unknown database"),
])
def test_unusable_storage_is_one_line(tmp_path, capsys, monkeypatch, url, message):
    monkeypatch.setitem(sys.modules, "pymysql", None)  # as where the mysql extra is not installed
    argv = ["search", "--space", str(space_file(tmp_path)), "--study", "x", "--trials", "1", "--storage", url,
            "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cifar-resnet: error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_missing_postgres_driver_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as where it is not installed
    with pytest.raises(StorageError, match=r'needs the psycopg driver, not installed: pip install "cifar_resnet\[postgres\]"'):
        make_storage("postgresql://nobody@/db?host=/nonexistent", heartbeat=60)
