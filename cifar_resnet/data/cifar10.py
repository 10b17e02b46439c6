"""Exact CIFAR-10 from the official `cifar-10-batches-py` files, read without unpickling arbitrary objects.

The root holding `cifar-10-batches-py` is, in order: the `root` argument, `$CIFAR10_ROOT`, `./data`.
Where the files are absent the official archive is downloaded (torchvision's utilities check its MD5);
offline, loading stops with a message that says where the files were expected and how to get them.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..audience import option
from ..files import atomic_write_bytes

if TYPE_CHECKING:
    from ..config import Config

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCH_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
# Per-channel mean and std of the 50,000 training images on the 0..255 scale; notebook 01 recomputes them.
MEAN = (125.307, 122.950, 113.865)
STD = (62.993, 62.089, 66.705)


class DataError(RuntimeError):
    """CIFAR-10 files that are missing or damaged; the message says where and what to do."""


@dataclass
class CIFAR10Split:
    """One split: uint8 images (N, 32, 32, 3) or (N, 3, 32, 32), int64 labels (N,), class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: slice | torch.Tensor) -> "CIFAR10Split":
        """The images and labels at `index` (a slice or an index tensor)."""
        return CIFAR10Split(self.images[index], self.labels[index], self.classes)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles the numpy arrays, lists and dicts of a CIFAR batch and refuses every other global."""

    _allowed = {("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                # pickle protocol 5 (pickle.HIGHEST_PROTOCOL) stores arrays as raw buffers
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays")
        if name == "_reconstruct":
            return np.ndarray(0).__reduce__()[0]  # numpy's own reconstructor, without importing numpy.core
        if name == "_frombuffer":
            return np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # numpy's array-from-bytes, likewise
        return getattr(np, name)


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) `cifar-10-batches-py`, as an absolute path (messages name it)."""
    return Path(root or os.environ.get("CIFAR10_ROOT") or "data").expanduser().absolute()


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    fix = f"delete {path.parent} and download CIFAR-10 again"
    try:
        batch = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data, labels = batch[b"data"], np.asarray(batch[b"labels"], dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"{path} is missing: the folder is incomplete; {fix}") from None
    except Exception as err:  # any unpickling or key error means the file is not a CIFAR batch
        raise DataError(f"{path} is damaged or not a CIFAR-10 batch ({type(err).__name__}: {err}); {fix}") from None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
            and len(data) > 0 and labels.ndim == 1 and len(labels) == len(data) and labels.min() >= 0
            and labels.max() < len(CLASSES)):
        raise DataError(f"{path} is damaged: unexpected array shapes or labels; {fix}")
    return data, labels


DOWNLOAD_TIMEOUT = 30  # seconds without an answer before an (offline) download gives up


def _download(root: Path) -> None:
    """Fetch and extract the official archive into `root`; on failure, leave no folder it made behind (`root`
    and the parents that did not exist before, where they are still empty)."""
    import socket

    from torchvision.datasets.utils import download_and_extract_archive

    created = [p for p in (root, *root.parents) if not p.exists()]  # innermost first: removed in that order
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # torchvision's urlopen has no timeout of its own
    try:
        download_and_extract_archive(ARCHIVE_URL, download_root=str(root), md5=ARCHIVE_MD5)
    except Exception as err:
        for folder in created:
            if not (folder.is_dir() and not any(folder.iterdir())):
                break
            folder.rmdir()
        reason = str(getattr(err, "reason", "") or err).splitlines()[0][:120] if str(err) else ""
        raise DataError(
            f"CIFAR-10 not found in {root / BATCH_DIR} and the download failed ({type(err).__name__}"
            f"{': ' + reason if reason else ''}): download {ARCHIVE_URL} yourself and extract it into {root}, "
            f"or point {option('data_root=', '--data-root')} / $CIFAR10_ROOT at a folder that holds {BATCH_DIR}") from None
    finally:
        socket.setdefaulttimeout(previous)


def load_cifar10(root: str | os.PathLike | None = None, split: str = "train", *, download: bool = True,
                 channels_first: bool = False) -> CIFAR10Split:
    """Load the official training (50,000) or test (10,000) split as uint8 tensors, in the original order."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = resolve_root(root)
    folder = root / BATCH_DIR
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file, not a folder: give --data-root (or $CIFAR10_ROOT) the folder that holds "
                        f"{BATCH_DIR}")
    if not folder.is_dir():
        if not download:
            raise DataError(f"CIFAR-10 not found: expected {folder}; download {ARCHIVE_URL} and extract it into "
                            f"{root}, or set {option('data_root=', '--data-root')} / $CIFAR10_ROOT to the folder that holds {BATCH_DIR}")
        _download(root)
    parts = [_read_batch(folder / name) for name in (TRAIN_FILES if split == "train" else (TEST_FILE,))]
    data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([p[1] for p in parts])
    images = torch.from_numpy(data if channels_first else data.transpose(0, 2, 3, 1).copy())
    return CIFAR10Split(images.contiguous(), torch.from_numpy(labels))


def split_holdout(train: CIFAR10Split, holdout: int) -> tuple[CIFAR10Split, CIFAR10Split]:
    """Split off the last `holdout` training images (from data_batch_5) as a validation set."""
    if not 0 < holdout < len(train):
        raise DataError(f"data.holdout must be between 1 and {len(train) - 1} (the training images there are), got "
                        f"{holdout}: hold out fewer")
    cut = len(train) - holdout
    return train.subset(slice(0, cut)), train.subset(slice(cut, None))


def load_splits(cfg: "Config", data_root: str | None = None) -> tuple[CIFAR10Split, CIFAR10Split, str]:
    """A configuration's training split and evaluation split ("test", or "val" when data.holdout > 0)."""
    d = cfg.data
    root = data_root or d.root or None
    train = load_cifar10(root, "train", download=d.download)
    if d.holdout:
        train, held = split_holdout(train, d.holdout)
        evaluation, name = held, "val"
    else:
        evaluation, name = load_cifar10(root, "test", download=d.download), "test"
    if d.train_subset:
        train = train.subset(slice(0, d.train_subset))
    if d.test_subset:
        evaluation = evaluation.subset(slice(0, d.test_subset))
    return train, evaluation, name


def write_synthetic_cifar10(root: str | os.PathLike, *, train_per_class: int = 20, test_per_class: int = 5,
                            seed: int = 0) -> Path:
    """Write a tiny, learnable dataset in the official layout under `root` (for tests); returns `root`.

    Each class is a colour and a stripe orientation plus noise, so a small network learns it in a few steps.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / BATCH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    palette = rng.integers(40, 216, size=(len(CLASSES), 3))
    yy, xx = np.mgrid[0:32, 0:32]

    def images_for(per_class: int) -> tuple[np.ndarray, list[int]]:
        labels = np.repeat(np.arange(len(CLASSES)), per_class)
        rng.shuffle(labels)
        stripes = np.stack([np.sin((yy * np.cos(c) + xx * np.sin(c)) * 0.8) for c in np.arange(len(CLASSES)) * 0.3])
        pixels = palette[labels][:, :, None, None] + 30 * stripes[labels][:, None] + rng.normal(0, 12, (len(labels), 3, 32, 32))
        return np.clip(pixels, 0, 255).astype(np.uint8).reshape(len(labels), -1), labels.tolist()

    def dump(obj: dict, name: str) -> None:
        atomic_write_bytes(folder / name, pickle.dumps(obj, protocol=4))

    for name in TRAIN_FILES:
        data, labels = images_for(max(1, train_per_class // len(TRAIN_FILES)))
        dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, name)
    data, labels = images_for(test_per_class)
    dump({b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data}, TEST_FILE)
    dump({b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": len(labels), b"num_vis": 3072},
         "batches.meta")
    return Path(root)
