"""The run folder: what a training run writes and what evaluation and resume read back.

    config.yaml        the resolved configuration
    history.csv        one row per epoch
    metrics.json       final (or partial) results and the environment they came from
    model.safetensors  final weights in half precision (SHA-256 of the file in metrics.json and of its tensors
                       in its own metadata, both checked on load)
    predictions.safetensors  the final weights' test-set probabilities (half precision), for the figures
    checkpoint.pt      everything needed to resume; rewritten atomically every epoch

Every file is written whole or not at all (`files.atomic_write_bytes`: an interruption never leaves a
half-written file, nor a temporary one), and read back only as a regular file of the run's own, never through
a link (`files.read_run_file`); metrics.json's values are checked for their types (`metrics_problem`). The
checkpoint carries a SHA-256 of its payload: a damaged one, or one of another shape, is refused, never
half-loaded. A process that trains into a folder holds its lock (`RunLock`: `.lock`, the holder named in
`.lock.owner`); the operating system releases it when the process ends, however it ends.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from . import fingerprint
from .audience import RUNS_ENV, advise, option  # noqa: F401 (RUNS_ENV: the run folder's variable)
from .files import (FolderError, atomic_write_bytes, atomic_write_text, check_own_files, copy_run_folder,  # noqa: F401
                    folder_error, folder_name, make_folder, present, read_run_file, writable_folder)
from .formats import excerpt
from .machine import cpu_model

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
HISTORY, METRICS = "history.csv", "metrics.json"
CONFIG = "config.yaml"
PREDICTIONS = "predictions.safetensors"
LOCK, _MAGIC = ".lock", b"cifar_resnet-checkpoint-v1\n"


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be trusted; the message says which and what to do."""


RECORD = (CHECKPOINT, WEIGHTS, HISTORY, METRICS, CONFIG, PREDICTIONS)  # the files a run writes
_STARTED = time.time()  # when this process began (near enough: at import), to tell an old train.log from ours


def user_runs_dir() -> Path:
    """The folder your own runs go to by default: $CIFAR_RESNET_RUNS, else ./runs (ignored by git); a
    one-line `FolderError` naming the variable where it names a file or a folder that cannot be written."""
    path = Path(os.environ.get(RUNS_ENV) or "runs")
    try:
        return writable_folder(path)
    except FolderError as err:
        source = f"${RUNS_ENV}" if os.environ.get(RUNS_ENV) else "the default runs folder"
        raise FolderError(f"{err} ({source}, where runs go without --out; point {RUNS_ENV} at a folder you can "
                          "write, or give --out)") from None


class RunLock:
    """The lock of a run folder (`.lock`, an flock through filelock: a killed process never leaves it held),
    taken when made, or `CheckpointError` naming the process that holds it; `.lock.owner` names the holder
    until `release()`."""

    def __init__(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise CheckpointError(f"{run_dir} is a file, not a run folder: choose another {option('out_dir', '--out')}")
        run_dir.mkdir(parents=True, exist_ok=True)
        self.lock, self.owner = FileLock(str(run_dir / LOCK)), run_dir / f"{LOCK}.owner"
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            holder = self.owner.read_text().strip() if self.owner.is_file() else "another process"
            raise CheckpointError(f"{run_dir} is in use by {holder}: wait for it to end, or choose another "
                                  f"{option('out_dir', '--out')}") from None
        atomic_write_text(self.owner, f"process {os.getpid()} ({' '.join(sys.argv)[:200]})\n")

    def release(self) -> None:
        if self.lock.is_locked:
            self.owner.unlink(missing_ok=True)
            self.lock.release()


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds (part of) a run's record."""
    return any(present(Path(run_dir) / name) for name in RECORD)


def refuse_held_runs(out_dir: Path, names: list[str]) -> None:
    """`FolderError` where a folder `out_dir/<name>` already holds a run, before any is trained: what `train`
    refuses without --resume or --overwrite, a sweep refuses without --overwrite."""
    held = [name for name in names if holds_run(Path(out_dir) / name)]
    if held:
        more = f" (and {len(held) - 1} more of the plan)" if len(held) > 1 else ""
        raise FolderError(f"{Path(out_dir) / held[0]} already holds a run{more}: nothing changed; add --overwrite to "
                          "train them again (their records are deleted), or choose another --out")


def clear_record(run_dir: Path) -> None:
    """Delete a run's record files from `run_dir` (before starting again there), with what was made from them:
    its robustness.json, and a train.log last written over a minute before this process began (one that `tee`
    opened for this very run is kept); other files stay. A folder under one of those names is refused."""
    log = Path(run_dir) / "train.log"
    stale = [log] if log.is_file() and not log.is_symlink() and log.stat().st_mtime < _STARTED - 60 else []
    paths = [Path(run_dir) / name for name in (*RECORD, "robustness.json")] + stale
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            raise FolderError(f"{path} is a folder, not a run's file: move it away, or choose another --out")
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            raise folder_error(err, path) from None


def save_checkpoint(state: dict, path: Path) -> None:
    """Serialise `state` with torch.save, prefix a SHA-256 of the payload, write atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    atomic_write_bytes(path, _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by `save_checkpoint`; raise `CheckpointError` if it is damaged: not a regular
    file of the run's own, a checksum that does not match, or a payload of another shape than a checkpoint's."""
    fix = f"delete {path} to restart the run from scratch, or restore it from a copy"
    try:
        raw = read_run_file(path)
    except FolderError as err:
        raise CheckpointError(f"{err}; or {fix}") from None
    header_end = len(_MAGIC) + 65
    if not raw.startswith(_MAGIC) or len(raw) < header_end:
        raise CheckpointError(f"{path} is not a cifar_resnet checkpoint or is truncated; {fix}")
    digest, payload = raw[len(_MAGIC):header_end - 1].decode(errors="replace"), raw[header_end:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path} is damaged (its checksum does not match); {fix}")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} cannot be read ({type(err).__name__}); {fix}") from None
    problem = _checkpoint_problem(state)
    if problem:
        raise CheckpointError(f"{path} is damaged ({problem}); {fix}")
    return state


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _checkpoint_problem(state: Any) -> str | None:
    """What makes a loaded payload no checkpoint of `save_checkpoint`'s shape, or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a checkpoint's mapping"
    shapes = {"epoch": (_whole, "a whole number"), "config": (lambda v: isinstance(v, dict), "a mapping"),
              "history": (lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v), "a list of rows"),
              "train_seconds": (_finite, "a number of seconds"), "time_to_acc": (lambda v: isinstance(v, dict), "a mapping"),
              "model": (lambda v: isinstance(v, dict), "a mapping"), "rng": (lambda v: isinstance(v, dict), "a mapping")}
    for key, (test, kind) in shapes.items():
        if key not in state:
            return f"it has no {key!r}"
        if not test(state[key]):
            return f"its {key!r} is {excerpt(state[key], 40)}, not {kind}"
    if "wall_seconds" in state and not _finite(state["wall_seconds"]):
        return f"its 'wall_seconds' is {excerpt(state['wall_seconds'], 40)}, not a number of seconds"
    if len(state["history"]) != state["epoch"]:
        return f"its history has {len(state['history'])} rows for {state['epoch']} epochs"
    return None


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of `tensors` (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _canonical_safetensors(data: bytes) -> bytes:
    """safetensors bytes with the metadata's keys in sorted order. The library writes them in a hash map's
    order, which differs between processes: the same tensors would give files with different SHA-256s."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the library pads it
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def save_weights(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Save a state dict as safetensors, floating-point tensors in half precision (a 5M model is 10 MB),
    with the tensors' SHA-256 in the metadata ("tensors_sha256"), which `load_weights` checks."""
    from safetensors.torch import save as save_safetensors

    tensors = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in state_dict.items()}
    config = fingerprint.config_sha256(Path(path).parent / CONFIG)  # the configuration beside them, if any
    metadata = {**(metadata or {}), **({fingerprint.KEY: config} if config else {}),
                "tensors_sha256": tensors_sha256(tensors)}
    atomic_write_bytes(path, _canonical_safetensors(save_safetensors(tensors, metadata=metadata)))


def _restore_hint(path: Path) -> str:
    """How to get a damaged file back: from git where the repository tracks it, else by retraining."""
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", Path(path).name], cwd=Path(path).parent,
                                 capture_output=True).returncode == 0
    except OSError:
        tracked = False
    if tracked:
        return f"restore it with `git checkout -- {path}` or retrain"
    return "restore it from your own copy, or retrain the run " + advise(
        "(train(cfg, out_dir) starts it again)", "(cifar-resnet train ... --overwrite)")


def _read_or_refuse(path: Path) -> bytes:
    """`read_run_file`, its refusals (a link, not a regular file) as `CheckpointError`."""
    try:
        return read_run_file(path)
    except FolderError as err:
        raise CheckpointError(str(err)) from None


def _safetensors(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of safetensors bytes."""
    from safetensors.torch import load

    tensors = load(data)
    size = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + size]).get("__metadata__") or {}
    return tensors, metadata


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never a pickle, never through a link), refusing it if its tensors no longer match
    the SHA-256 in its metadata (files written without one pass); floating-point tensors come back as float32."""
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}: the run has not finished; train it (or resume it) first")
    fix = _restore_hint(path)
    data = _read_or_refuse(path)
    try:
        tensors, metadata = _safetensors(data)
    except Exception as err:
        raise CheckpointError(f"{path} is damaged ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:100]}); "
                              f"{fix}") from None
    expected = metadata.get("tensors_sha256")
    if expected and tensors_sha256(tensors) != expected:
        raise CheckpointError(f"{path} is damaged (its tensors differ from the SHA-256 in its metadata); {fix}")
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


def file_sha256(path: Path) -> str:
    """SHA-256 of a run file's bytes, as hex (read as `read_run_file` reads it)."""
    return hashlib.sha256(_read_or_refuse(Path(path))).hexdigest()


def verify_weights(run_dir: Path) -> None:
    """Refuse weights whose SHA-256 differs from the one metrics.json recorded (records without one pass)."""
    run_dir = Path(run_dir)
    weights, metrics = run_dir / WEIGHTS, run_dir / METRICS
    if not (os.path.lexists(weights) and os.path.lexists(metrics)):
        return
    expected = read_metrics(run_dir).get("weights_sha256")
    if expected and file_sha256(weights) != expected:
        raise CheckpointError(f"{weights} is damaged (its SHA-256 differs from the one in {metrics}); "
                              f"{_restore_hint(weights)}")


def save_predictions(path: Path, probs: torch.Tensor, labels: torch.Tensor, *, probs_tta: torch.Tensor | None,
                     split: str, tta: str) -> None:
    """Write a split's class probabilities (N, classes) in half precision, with the labels and, where the
    recipe has test-time augmentation, the probabilities with it."""
    from safetensors.torch import save as save_safetensors

    tensors = {"probs": probs.detach().to("cpu", torch.float16).contiguous(),
               "labels": labels.detach().to("cpu", torch.uint8).contiguous()}
    if probs_tta is not None:
        tensors["probs_tta"] = probs_tta.detach().to("cpu", torch.float16).contiguous()
    atomic_write_bytes(path, _canonical_safetensors(save_safetensors(tensors, metadata={"split": split, "tta": tta})))


def load_predictions(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors ("probs", "labels", maybe "probs_tta") and metadata ("split", "tta") of a predictions file."""
    if not os.path.lexists(path):
        raise FileNotFoundError(f"no predictions at {path}: the run has not finished, or predates saved predictions")
    data = _read_or_refuse(Path(path))
    try:
        tensors, metadata = _safetensors(data)
        return tensors, dict(metadata)
    except Exception as err:
        raise CheckpointError(f"{path} is damaged ({type(err).__name__}); {_restore_hint(path)}") from None


def write_history(rows: list[dict], path: Path) -> None:
    """Write the per-epoch rows as CSV (the whole file each time, atomically)."""
    if not rows:
        return
    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for row in rows for key in row))  # rows from older code may lack some
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_metrics(metrics: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")


def read_metrics(run_dir: str | Path) -> dict:
    """The metrics.json of a run folder, its values checked for the types the engine writes (`metrics_problem`):
    `CheckpointError` for one that is not valid JSON, no mapping, or holds a value of another type."""
    path = Path(run_dir) / METRICS
    if not os.path.lexists(path):
        raise FileNotFoundError(f"no {METRICS} in {run_dir}: is it a run folder written by `cifar-resnet train`?")
    try:
        metrics = json.loads(_read_or_refuse(path).decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); {_restore_hint(path)}") from None
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{path} holds no mapping of metrics; {_restore_hint(path)}")
    problem = metrics_problem(metrics)
    if problem:
        raise CheckpointError(f"{path}: {problem}; {_restore_hint(path)}")
    return metrics


def _fraction(value: Any) -> bool:
    return _finite(value) and value <= 1


_HEX64 = re.compile(r"[0-9a-f]{64}")
# metrics.json's keys as the engine writes them: (test of the value, what it should be); null passes for each
METRIC_TYPES: dict[str, tuple[Any, str]] = {
    **{key: (lambda v: isinstance(v, str), "text") for key in
       ("name", "eval_split", "device", "torch_version", "git_commit", "tta", "precision", "eval_weights")},
    "status": (lambda v: v in ("finished", "time_limit"), "'finished' or 'time_limit'"),
    "weights_sha256": (lambda v: isinstance(v, str) and bool(_HEX64.fullmatch(v)), "a SHA-256 in hex"),
    **{key: (_whole, "a whole number") for key in ("params", "epochs", "epochs_completed", "seed", "best_epoch")},
    **{key: (_finite, "a number") for key in ("train_seconds", "wall_seconds", "session_seconds", "images_per_second",
                                               "test_loss", "val_loss")},
    **{key: (_fraction, "an accuracy from 0 to 1") for key in ("test_acc", "test_acc_tta", "val_acc", "val_acc_tta")},
    "selected_on_test": (lambda v: isinstance(v, bool), "true or false"),
    "time_to_acc": (lambda v: isinstance(v, dict) and all(t is None or _finite(t) for t in v.values()),
                    "a mapping of accuracies to seconds"),
    "provenance": (lambda v: isinstance(v, dict), "a mapping"),
}


def metrics_problem(metrics: dict) -> str | None:
    """The first value of `metrics` (metrics.json's mapping) of another type than the engine writes, in words,
    or None; keys it does not know, and nulls, pass."""
    for key, (test, kind) in METRIC_TYPES.items():
        value = metrics.get(key)
        if value is not None and not test(value):
            return f"{key} is {excerpt(value, 40)}, not {kind}"
    return None


def git_commit() -> str:
    """The commit of the code that runs ($GIT_COMMIT if set), with '-dirty' for uncommitted changes."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def environment(device: torch.device) -> dict:
    """Where a result came from: device name (on a CPU its model and threads too), torch version, commit."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    cpu = {} if device.type == "cuda" else {"cpu": cpu_model(), "threads": torch.get_num_threads()}
    return {"device": name, **cpu, "torch_version": torch.__version__, "git_commit": git_commit()}
