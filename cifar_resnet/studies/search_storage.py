"""Where a search's study lives: the database URL turned into an Optuna storage that several workers share.

SQLite (the default, one machine) or a server that workers on several machines reach: PostgreSQL
(`postgresql://user:password@host/db`, driver from `pip install "cifar_resnet[postgres]"`) or MySQL
(`mysql://...`, the `mysql` extra). Against a server each worker holds at most `CONNECTIONS_PER_WORKER`
connections (its trial's calls and the heartbeat thread), checked before use so that a restarted server
costs a reconnection, not the worker; a call that finds the server down is retried for `RECONNECT_SECONDS`,
then the worker stops with one line (`StorageError`), its finished trials kept in the database. Optuna's
gRPC storage proxy is refused: it has no heartbeat, so a dead worker's trial would never be retried.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.exceptions import StorageInternalError

from ..config import ConfigError

CONNECTIONS_PER_WORKER = 2  # one for the trial's own calls, one for the heartbeat thread
RECONNECT_SECONDS = 60.0  # how long a worker waits for a server that went away before it stops
# scheme: (the SQLAlchemy driver name, the extra that installs it)
DRIVERS = {"postgresql": ("psycopg", "postgres"), "mysql": ("pymysql", "mysql")}


class StorageError(ConfigError):
    """The study's database cannot be used: no driver, unreachable, or a storage the search refuses."""


def describe_url(url: str) -> str:
    """The URL as it may be printed: the password hidden."""
    try:
        return sqlalchemy.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def default_url(work_dir: Path, study_name: str) -> str:
    """The study's SQLite file when no --storage is given: `<work_dir>/<study>.db`."""
    return f"sqlite:///{Path(work_dir) / f'{study_name}.db'}"


def resolve_url(url: str) -> str:
    """`url` with the driver this project installs for a plain `postgresql://` or `mysql://` URL."""
    for scheme, (driver, _) in DRIVERS.items():
        if url.startswith(f"{scheme}://"):
            return f"{scheme}+{driver}://{url.removeprefix(f'{scheme}://')}"
    return url


def _connection_lost(err: BaseException) -> bool:
    cause = err.__cause__ if isinstance(err, StorageInternalError) else err
    lost = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.PendingRollbackError)
    return isinstance(cause, lost) or (
        isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated)


def _reconnecting(method, name: str):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        deadline = time.monotonic() + (0 if name == "record_heartbeat" else RECONNECT_SECONDS)
        while True:
            try:
                return method(self, *args, **kwargs)
            except (StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as err:
                if not _connection_lost(err):
                    raise
                self.remove_session()  # the thread's session holds the dead connection's transaction: start anew
                if name == "record_heartbeat":  # a missed beat; the heartbeat thread beats again next interval
                    return None
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"the study's database at {describe_url(str(self.engine.url))} stopped answering for "
                        f"{RECONNECT_SECONDS:.0f} s ({_first_line(err.__cause__ or err)}); finished trials are kept "
                        "in it: once the server is back, run the same command to continue") from None
                time.sleep(1.0)

    return call


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class ReconnectingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's relational storage whose calls wait out a database restart instead of failing the worker."""


# Every call that opens its own session: the public ones and the private ones optuna's cache calls.
for _name in [n for n in vars(optuna.storages.RDBStorage) if not n.startswith("_") and n != "remove_session"] + [
        "_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials", "_set_trial_param"]:
    if callable(getattr(optuna.storages.RDBStorage, _name)) and not isinstance(
            vars(optuna.storages.RDBStorage)[_name], staticmethod):
        setattr(ReconnectingRDBStorage, _name, _reconnecting(getattr(optuna.storages.RDBStorage, _name), _name))


def engine_kwargs(url: str) -> dict:
    """SQLAlchemy engine options: SQLite waits out locks; a server gets a pool of `CONNECTIONS_PER_WORKER`,
    pre-pinged, and sees the worker's host and process id as its application name (in pg_stat_activity)."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    kwargs = {"pool_size": 1, "max_overflow": CONNECTIONS_PER_WORKER - 1, "pool_pre_ping": True,
              "pool_recycle": 3600}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"application_name": worker_name(), "connect_timeout": 10}
    return kwargs


def worker_name() -> str:
    """This worker as the database and the trial records name it: host and process id."""
    return f"cifar-resnet {socket.gethostname()}:{os.getpid()}"


def make_storage(url: str, heartbeat: int) -> optuna.storages.RDBStorage:
    """The study's storage at `url`, with a heartbeat every `heartbeat` seconds: a trial silent for twice
    that is failed and queued again (`max_retry` 2), keeping the epochs it reported."""
    if url.startswith(("grpc:", "grpc+")):
        raise StorageError("Optuna's gRPC storage proxy has no heartbeat: a dead worker's trial would stay RUNNING "
                           "forever and never be retried. Give every worker the database URL itself "
                           "(--storage postgresql://user:password@host/db)")
    resolved = resolve_url(url)
    cls = optuna.storages.RDBStorage if resolved.startswith("sqlite") else ReconnectingRDBStorage
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # the heartbeat and its retry callback are "experimental": no news here
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return cls(resolved, engine_kwargs=engine_kwargs(resolved), heartbeat_interval=heartbeat,
                           heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                               max_retry=2, inherit_intermediate_values=True))
        except ImportError:  # optuna's wrapping of the driver's ModuleNotFoundError
            raise StorageError(_missing_driver(url)) from None
        except sqlalchemy.exc.NoSuchModuleError:
            raise StorageError(f"--storage {describe_url(url)}: unknown database; give sqlite:///FILE, "
                               "postgresql://user:password@host/db or mysql://user:password@host/db") from None
        except sqlalchemy.exc.ArgumentError as err:
            raise StorageError(f"--storage {url!r} is not a database URL ({err})") from None
        except (sqlalchemy.exc.DBAPIError, StorageInternalError) as err:
            if attempt < 2:  # workers starting at once race to create the same tables: a second try finds them
                time.sleep(1)
                continue
            raise StorageError(f"cannot open the study's database at {describe_url(url)}: "
                               f"{_first_line(getattr(err, 'orig', None) or err)}; check that the server runs and "
                               "accepts this user from this machine") from None
    raise AssertionError("unreachable")


def _missing_driver(url: str) -> str:
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme in DRIVERS:
        driver, extra = DRIVERS[scheme]
        return f'--storage {scheme}://... needs the {driver} driver, not installed: pip install "cifar_resnet[{extra}]"'
    return f"--storage {describe_url(url)} needs a database driver that is not installed: install SQLAlchemy's driver for it"
