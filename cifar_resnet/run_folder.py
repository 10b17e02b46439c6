"""The run folder: what a training run writes and what evaluation and resume read back.

    config.yaml        the resolved configuration
    history.csv        one row per epoch
    metrics.json       final (or partial) results and the environment they came from
    model.safetensors  final weights in half precision (SHA-256 of the file in metrics.json and of its tensors
                       in its own metadata, both checked on load)
    predictions.safetensors  the final weights' test-set probabilities (half precision), for the figures
    checkpoint.pt      everything needed to resume; rewritten atomically every epoch

Every file is written to a temporary name and renamed, so an interruption never leaves a half-written
file. The checkpoint carries a SHA-256 of its payload: a damaged one is refused, never half-loaded. A
process that trains into a folder holds its lock (`RunLock`: `.lock`, the holder named in `.lock.owner`);
the operating system releases it when the process ends, however it ends.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from .audience import advise, option

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
HISTORY = "history.csv"
METRICS = "metrics.json"
CONFIG = "config.yaml"
PREDICTIONS = "predictions.safetensors"
LOCK = ".lock"
RUNS_ENV = "CIFAR_RESNET_RUNS"  # where your own runs go instead of ./runs (the tests point it at a temporary folder)
_MAGIC = b"cifar_resnet-checkpoint-v1\n"


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be trusted; the message says which and what to do."""


RECORD = (CHECKPOINT, WEIGHTS, HISTORY, METRICS, CONFIG, PREDICTIONS)  # the files a run writes


def user_runs_dir() -> Path:
    """The folder your own runs go to by default: $CIFAR_RESNET_RUNS, else ./runs (ignored by git)."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def shown_path(path: str | Path) -> str:
    """`path` as messages write it: relative to the working directory (a clone's root) where it lies there, else
    as `$CIFAR_RESNET_RUNS/...` where it lies in that folder, else as given; so a notebook's saved output names
    no folder of the machine that ran it."""
    path = Path(path)
    runs = os.environ.get(RUNS_ENV)
    for base, name in ((Path.cwd(), None), (Path(runs) if runs else None, f"${RUNS_ENV}")):
        if base is not None and path.resolve().is_relative_to(base.resolve()):
            inside = path.resolve().relative_to(base.resolve())
            return str(Path(name, inside) if name else inside)
    return str(path)


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
    return any((Path(run_dir) / name).exists() for name in RECORD)


def clear_record(run_dir: Path) -> None:
    """Delete a run's record files from `run_dir` (before starting again there); other files stay."""
    for name in RECORD:
        (Path(run_dir) / name).unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename (all or nothing)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: concurrent writers never collide
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_checkpoint(state: dict, path: Path) -> None:
    """Serialise `state` with torch.save, prefix a SHA-256 of the payload, write atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    atomic_write_bytes(path, _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by `save_checkpoint`; raise `CheckpointError` if it is damaged."""
    fix = f"delete {path} to restart the run from scratch, or restore it from a copy"
    raw = path.read_bytes()
    header_end = len(_MAGIC) + 65
    if not raw.startswith(_MAGIC) or len(raw) < header_end:
        raise CheckpointError(f"{path} is not a cifar_resnet checkpoint or is truncated; {fix}")
    digest, payload = raw[len(_MAGIC):header_end - 1].decode(errors="replace"), raw[header_end:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path} is damaged (its checksum does not match); {fix}")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} cannot be read ({type(err).__name__}); {fix}") from None


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
    metadata = {**(metadata or {}), "tensors_sha256": tensors_sha256(tensors)}
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


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never a pickle), refusing it if its tensors no longer match the SHA-256 in its
    metadata (files written without one pass); floating-point tensors come back as float32."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"no weights at {path}: the run has not finished; train it (or resume it) first")
    fix = _restore_hint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception as err:
        raise CheckpointError(f"{path} is damaged ({type(err).__name__}: {str(err).splitlines()[0]}); {fix}") from None
    expected = metadata.get("tensors_sha256")
    if expected and tensors_sha256(tensors) != expected:
        raise CheckpointError(f"{path} is damaged (its tensors differ from the SHA-256 in its metadata); {fix}")
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify_weights(run_dir: Path) -> None:
    """Refuse weights whose SHA-256 differs from the one metrics.json recorded (records without one pass)."""
    run_dir = Path(run_dir)
    weights, metrics = run_dir / WEIGHTS, run_dir / METRICS
    if not (weights.is_file() and metrics.is_file()):
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
    from safetensors import safe_open

    if not Path(path).is_file():
        raise FileNotFoundError(f"no predictions at {path}: the run has not finished, or predates saved predictions")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
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
    """The metrics.json of a run folder."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS} in {run_dir}: is it a run folder written by `cifar-resnet train`?")
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); {_restore_hint(path)}") from None
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{path} holds no mapping of metrics; {_restore_hint(path)}")
    return metrics


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
    """Where a result came from: device name, torch version, commit."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"device": name, "torch_version": torch.__version__, "git_commit": git_commit()}
