"""Several search workers from one command: `cifar-resnet search ... --devices 0,1,2,3`.

One `cifar-resnet search` process per listed GPU, each pinned to its device with `CUDA_VISIBLE_DEVICES`,
all on the same study and storage. Their output is streamed line by line, each line prefixed with the
worker's name (`[gpu2] trial 7 complete ...`); Ctrl-C (or SIGTERM) is forwarded to every worker, each puts
its running trial back in the queue as a single worker does; the launcher waits for them and ends with one
summary of the study. On several machines, run the same command on each with the same `--storage` URL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Callable

import optuna

from ..config import ConfigError
from .search_storage import default_url, describe_url, make_storage

NOT_PASSED = ("func", "command", "devices")  # the launcher's own options, not the workers'


def parse_devices(text: str) -> list[str]:
    """`0,1,2,3` -> ["0", "1", "2", "3"]: GPU indices as `nvidia-smi` lists them (one may repeat: two workers)."""
    devices = [d.strip() for d in text.split(",")]
    if not devices or not all(d.isdigit() for d in devices):
        raise ConfigError(f"--devices: give GPU indices separated by commas, e.g. --devices 0,1,2,3; got {text!r}")
    return devices


def worker_names(devices: list[str]) -> list[str]:
    """`gpu<i>`, with `-<k>` added where a device is listed more than once."""
    counts, seen = Counter(devices), Counter()
    names = []
    for d in devices:
        seen[d] += 1
        names.append(f"gpu{d}" if counts[d] == 1 else f"gpu{d}-{seen[d]}")
    return names


def worker_argv(options: dict) -> list[str]:
    """The `search` command line a worker runs: every option the launcher was given but its own."""
    argv = ["search"]
    for key, value in options.items():
        if key in NOT_PASSED or value is None or value is False:
            continue
        argv.append(f"--{key.replace('_', '-')}")
        if value is not True:
            argv.append(str(value))
    return argv


def _stream(name: str, process: subprocess.Popen, log: Callable[[str], None], lock: threading.Lock) -> None:
    for line in process.stdout:
        with lock:
            log(f"[{name}] {line.rstrip()}")


def launch_workers(devices: str, options: dict, log: Callable[[str], None] = print) -> int:
    """Run one search worker per device in `devices` ("0,1,2") with the search `options` (the CLI's, by
    name); returns the exit status: 0 when every worker ended cleanly, 130 after Ctrl-C, else the first
    failure's."""
    listed = parse_devices(devices)
    if options.get("device") not in (None, "cpu", "cuda"):
        raise ConfigError(f"--device {options['device']} with --devices: each worker is pinned to its GPU of "
                          "--devices already; leave --device out")
    argv, lock, workers = worker_argv(options), threading.Lock(), []
    for name, device in zip(worker_names(listed), listed):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": device, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen([sys.executable, "-m", "cifar_resnet", *argv], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        log(f"[{name}] worker started: pid {process.pid}, CUDA_VISIBLE_DEVICES={device}")
        thread = threading.Thread(target=_stream, args=(name, process, log, lock), daemon=True)
        thread.start()
        workers.append((name, process, thread))
    interrupted = False
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: stop the workers the same way
    try:
        while True:
            try:
                for _, process, thread in workers:
                    process.wait()
                    thread.join()
                break
            except KeyboardInterrupt:  # forwarded; the workers put their trials back and end
                interrupted = True
                log("interrupted: stopping every worker (each puts its running trial back in the queue)")
                for _, process, _ in workers:
                    if process.poll() is None:
                        process.send_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    codes = {name: process.returncode for name, process, _ in workers}
    log(summary(options, codes))
    if interrupted:
        return 130
    return next((code if code > 0 else 1 for code in codes.values() if code != 0), 0)


def summary(options: dict, codes: dict[str, int]) -> str:
    """One line: the study's trained trials against its total, the best one, and how each worker ended."""
    from .search import trained_trials

    ended = ", ".join(f"{name} {_ending(code)}" for name, code in codes.items())
    url = options.get("storage") or default_url(Path(options["work_dir"]), options["study"])
    try:
        study = optuna.load_study(study_name=options["study"], storage=make_storage(url, heartbeat=60))
    except (ConfigError, KeyError) as err:  # never created (every worker failed first), or the server is gone
        return f"study {options['study']!r} in {describe_url(url)}: not readable ({err}); workers: {ended}"
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.user_attrs.get("state", t.state.name.lower()) for t in trials)
    states.pop("surplus", None)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value, default=None)
    return (f"study {options['study']!r}: {trained_trials(study)} of {options['trials']} trials trained "
            f"({', '.join(f'{n} {s}' for s, n in sorted(states.items()))})"
            + (f"; best validation accuracy {best.value:.4f} (trial {best.number})" if best else "")
            + f"; workers: {ended}")


def _ending(code: int) -> str:
    if code == 0:
        return "done"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return {130: "interrupted", 2: "stopped on an error (above)"}.get(code, f"exit status {code}")
