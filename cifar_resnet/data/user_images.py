"""Images to predict, read from the files users have: nothing here trusts a file or runs code from one.

`read_images(path)` accepts
  * a CIFAR-style pickle: a dict with `data` (N x 3072 rows in CIFAR's channel-major order, or N x 32 x 32 x 3)
    and optional `ids` and `labels`, bytes or str keys; read with `cifar10`'s restricted unpickler (arrays,
    lists and dicts only), so a tampered pickle is refused, never run;
  * a `.npy` of uint8 images (CIFAR-10.1's `*_data.npy`; its `*_labels.npy` beside it is read as labels) or a
    `.npz` whose `data` (or `images`, or only) array holds them, with optional `labels` and `ids`; never
    unpickled (`allow_pickle=False`);
  * one PNG or JPEG file, or a folder of them (read in natural order: 2.png before 10.png). Each is
    converted to RGB; one that is not 32 x 32 is cropped to a centred square and scaled to 32 x 32 with
    Lanczos filtering (`PIL.ImageOps.fit`), the rule `RESIZE_RULE` states.

Images come back as uint8 (N, 32, 32, 3) with one id each: the input's `ids`, else the image's index, or
for image files the file name without its extension.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cifar10 import CLASSES, DataError, _ArraysOnly

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SIZE = 32
MAX_INPUT_BYTES = 2**31  # a file of images read whole: 700,000 CIFAR images; a larger one is split first
MAX_PIXELS = 4096 * 4096  # an image file larger than this is refused before it is decoded (Pillow's bombs start at 89M)
RESIZE_RULE = "cropped to a centred square, then scaled to 32 x 32 with Lanczos filtering"
_FORMATS = ("give a CIFAR-style pickle (a dict with 'data'), a .npy/.npz of uint8 images, "
            "a PNG/JPEG file or a folder of them")


class InputError(DataError):
    """Images given for prediction that cannot be read; the message names the file and what to do."""


@dataclass
class Images:
    """Images to predict: uint8 (N, 32, 32, 3), one id each, labels (N,) where the input has them, and how
    many image files were resized to 32 x 32."""

    images: torch.Tensor
    ids: list[str]
    labels: torch.Tensor | None = None
    resized: int = 0

    def __len__(self) -> int:
        return len(self.images)

    def resize_note(self) -> str | None:
        """One line saying how many images were resized and how, or None when none was."""
        if not self.resized:
            return None
        return f"resized {self.resized} of {len(self)} images to 32 x 32 ({RESIZE_RULE})"


def read_images(path: str | Path) -> Images:
    """The images at `path`: a CIFAR-style pickle, a .npy/.npz, an image file or a folder of image files."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        what = "is not a regular file (a pipe or a device: it may never end)" if path.exists() else "not found"
        raise InputError(f"{path} {what}: {_FORMATS}")
    _check_size(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _read_image_files([path])
    if suffix == ".npy":
        return _read_npy(path)
    if suffix == ".npz":
        return _read_npz(path)
    return _read_pickle(path)  # CIFAR's own batches have no suffix; Kaggle's end in .pkl


def _check_size(path: Path) -> None:
    """`InputError` for a file over `MAX_INPUT_BYTES`, or an .npz whose arrays would unpack to more (a zip
    bomb): checked from the sizes recorded on disk, before anything is read whole."""
    sizes = [path.stat().st_size]
    if path.suffix.lower() == ".npz":
        try:
            with zipfile.ZipFile(path) as archive:
                sizes.append(sum(member.file_size for member in archive.infolist()))
        except (zipfile.BadZipFile, OSError):
            pass  # np.load says what is wrong with it
    if max(sizes) > MAX_INPUT_BYTES:
        raise InputError(f"{path} holds {max(sizes):,} bytes (unpacked), over the {MAX_INPUT_BYTES:,} that predict reads "
                         "at once: split the images into several files")


def as_images(array, what: str) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) from N x 3072 CIFAR rows (channel-major), N x 32 x 32 x 3 or N x 3 x 32 x 32."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise InputError(f"{what} has dtype {a.dtype}, but images must be uint8 pixels 0-255: convert them with "
                         ".astype(np.uint8) (after multiplying by 255 if they are floats in 0-1)")
    if a.ndim == 2 and a.shape[1] == 3 * SIZE * SIZE:
        a = a.reshape(-1, 3, SIZE, SIZE).transpose(0, 2, 3, 1)
    elif a.ndim == 4 and a.shape[1:] == (3, SIZE, SIZE):
        a = a.transpose(0, 2, 3, 1)
    elif not (a.ndim == 4 and a.shape[1:] == (SIZE, SIZE, 3)):
        raise InputError(f"{what} has shape {a.shape}, but images must be N x 3072 (CIFAR rows, channel-major), "
                         "N x 32 x 32 x 3 or N x 3 x 32 x 32")
    if len(a) == 0:
        raise InputError(f"{what} holds no images")
    return torch.from_numpy(np.ascontiguousarray(a))


def as_labels(values, n: int, what: str) -> torch.Tensor | None:
    """int64 labels (n,) in 0..9, or None where `values` is None."""
    if values is None:
        return None
    a = np.asarray(values)
    if not (a.ndim == 1 and len(a) == n and np.issubdtype(a.dtype, np.integer)
            and a.min() >= 0 and a.max() < len(CLASSES)):
        raise InputError(f"{what} must be {n} integer class indices 0-{len(CLASSES) - 1}, one per image "
                         f"(got shape {a.shape}, dtype {a.dtype}); fix or remove them")
    return torch.from_numpy(a.astype(np.int64))


def as_ids(values, n: int, what: str) -> list[str]:
    """One distinct text id per image: `values` (numbers, str or bytes), else 0..n-1."""
    if values is None:
        return [str(i) for i in range(n)]
    ids = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)]
    if len(ids) != n or len(set(ids)) != n:
        raise InputError(f"{what} must give {n} distinct ids, one per image (got {len(ids)}, "
                         f"{len(set(ids))} distinct); fix or remove them")
    return ids


def _read_pickle(path: Path) -> Images:
    try:
        obj = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as err:  # refused globals, truncation, not a pickle at all
        raise InputError(f"{path} cannot be read as a CIFAR-style pickle ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'no detail'}); {_FORMATS}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path} holds a {type(obj).__name__}, not a dict with 'data'; {_FORMATS}")
    entries = {k.decode(errors="replace") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}
    if "data" not in entries:
        raise InputError(f"{path} has no 'data' entry (it has {', '.join(map(repr, sorted(entries))) or 'none'}): "
                         "a CIFAR-style pickle is a dict with 'data' (uint8 images) and optional 'ids' and 'labels'")
    images = as_images(entries["data"], f"{path}'s 'data'")
    return Images(images, as_ids(entries.get("ids"), len(images), f"{path}'s 'ids'"),
                  as_labels(entries.get("labels"), len(images), f"{path}'s 'labels'"))


def _load_array(path: Path, **kwargs):
    try:
        return np.load(path, allow_pickle=False, **kwargs)
    except Exception as err:  # pickled objects (refused), damaged or not numpy at all
        raise InputError(f"{path} cannot be read as a numpy file of images ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'no detail'}); {_FORMATS}") from None


def _read_npy(path: Path) -> Images:
    images = as_images(_load_array(path), str(path))
    labels = None
    if path.name.endswith("_data.npy"):  # CIFAR-10.1: cifar10.1_v6_data.npy beside cifar10.1_v6_labels.npy
        beside = path.with_name(path.name[:-len("_data.npy")] + "_labels.npy")
        if beside.is_file():
            labels = as_labels(_load_array(beside), len(images), str(beside))
    return Images(images, as_ids(None, len(images), ""), labels)


def _read_npz(path: Path) -> Images:
    loaded = _load_array(path)
    if isinstance(loaded, np.ndarray):  # a .npy under another name
        arrays = {"data": loaded}
    else:
        with loaded as archive:
            arrays = {name: _checked(archive, name, path) for name in archive.files}
    key = next((k for k in ("data", "images") if k in arrays), None)
    if key is None and len(arrays) == 1:
        key = next(iter(arrays))
    if key is None:
        raise InputError(f"{path} has no 'data' or 'images' array (it has {', '.join(sorted(arrays)) or 'none'}): "
                         "name the images 'data' (labels 'labels', ids 'ids')")
    images = as_images(arrays[key], f"{path}'s '{key}'")
    return Images(images, as_ids(arrays.get("ids"), len(images), f"{path}'s 'ids'"),
                  as_labels(arrays.get("labels"), len(images), f"{path}'s 'labels'"))


def _checked(archive, name: str, path: Path) -> np.ndarray:
    try:
        return archive[name]
    except Exception as err:
        raise InputError(f"{path}: array {name!r} cannot be read ({type(err).__name__}); {_FORMATS}") from None


def _natural_key(path: Path) -> list:
    """Sort key that orders numbered names as numbers (2.png before 10.png)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _read_folder(folder: Path) -> Images:
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=_natural_key)
    if not entries:
        raise InputError(f"{folder} is empty: put the PNG or JPEG images to predict in it")
    others = [p.name + ("/" if p.is_dir() else "") for p in entries
              if p.is_dir() or p.suffix.lower() not in IMAGE_SUFFIXES]
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise InputError(f"{folder} holds entries that are not PNG or JPEG files ({shown}): "
                         "move them out, so that the folder holds only the images to predict")
    return _read_image_files(entries)


def _read_image_files(paths: list[Path]) -> Images:
    import warnings

    from PIL import Image, ImageOps

    arrays, resized = [], 0
    for path in paths:
        try:
            with warnings.catch_warnings():  # Pillow's decompression-bomb warning: refused below, in one line
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size  # from the header: nothing is decoded yet
                    if width * height > MAX_PIXELS:
                        raise InputError(f"{path} is {width:,} x {height:,} pixels, over the {MAX_PIXELS:,} an image to "
                                         f"predict may have (it becomes {SIZE} x {SIZE}): scale it down first")
                    rgb = image.convert("RGB")
        except InputError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise InputError(f"{path} is too many pixels to decode safely (over Pillow's limit; an image to predict "
                             f"may have {MAX_PIXELS:,}): scale it down first") from None
        except Exception as err:  # not an image, truncated
            raise InputError(f"{path} is not a readable PNG or JPEG image ({type(err).__name__}); "
                             "replace or remove it") from None
        if rgb.size != (SIZE, SIZE):
            rgb = ImageOps.fit(rgb, (SIZE, SIZE), method=Image.Resampling.LANCZOS)
            resized += 1
        arrays.append(np.asarray(rgb, dtype=np.uint8))
    ids = [p.stem for p in paths]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(f"several images are named {twice[0]!r} (with different extensions): their ids would be "
                         "the same; rename one")
    return Images(torch.from_numpy(np.stack(arrays)), ids, None, resized)


def write_png_files(images: torch.Tensor | np.ndarray, folder: str | Path, ids: list[str] | None = None) -> list[Path]:
    """Save uint8 (N, 32, 32, 3) images as `<id>.png` in `folder` (ids default to 0..N-1); the paths written."""
    from PIL import Image

    from ..run_folder import atomic_write_bytes, folder_name, make_folder

    folder = make_folder(folder)
    images = np.asarray(images)
    # each id becomes a file name: one name in `folder`, never a path out of it
    paths = [folder / f"{folder_name(name, 'image id', folder)}.png" for name in (ids or [str(i) for i in range(len(images))])]
    for image, path in zip(images, paths):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="png")
        atomic_write_bytes(path, buffer.getvalue())
    return paths
