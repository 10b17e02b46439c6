"""Corruption robustness: a run's saved weights on test images corrupted on the fly, as in CIFAR-10-C.

The corruption types and their five severities are those Hendrycks and Dietterich published for 32x32
images (ICLR 2019, `make_cifar_c.py`): noise (gaussian, shot, impulse), blur (defocus, gaussian) and the
weather-free photometric and digital ones (brightness, which CIFAR-10-C files under "weather", contrast,
JPEG, pixelate). Each is computed here, batched on uint8 tensors (B, 3, H, W) with a seeded generator
(JPEG and pixelate through PIL, image by image, as CIFAR-10-C made them), so the images are *generated*
corruptions of the same kind, never the released CIFAR-10-C files (whose random draws differ). Float
results are rounded to uint8 (CIFAR-10-C's files truncated them).

`evaluate_robustness(run_dir)` evaluates the run's weights (through `evaluate.predict`) on the first
`images` test images, clean and under every corruption and severity, and writes `robustness.json` into
the run folder; `cifar-resnet robustness RUN_DIR` calls it.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import run_folder
from ..audience import option, progress_bar
from ..config import ConfigError
from ..data.cifar10 import CIFAR10Split, load_cifar10
from ..data.gpu_loader import GpuLoader
from ..runtime import default_device
from .evaluate import load_run, predict, run_data_root
from .robustness_record import ROBUSTNESS

RESULT = ROBUSTNESS  # robustness_record reads it for the figures, notebook 04 and the report
NOTE = ("corruptions generated on the fly with the CIFAR-10-C types and severities; "
        "not the released CIFAR-10-C files")


@dataclass(frozen=True)
class Corruption:
    """One corruption type: its CIFAR-10-C family, its five severity parameters, and the function that
    applies one of them to a uint8 batch (B, 3, H, W) with a generator."""

    name: str
    family: str
    severities: tuple
    apply: Callable[[torch.Tensor, object, torch.Generator], torch.Tensor]


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255


def _uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _filter(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Each channel of float (B, C, H, W) correlated with a square 2-D kernel, borders padded by `mode`."""
    pad = kernel.shape[-1] // 2
    channels = x.shape[1]
    weight = kernel.to(x).expand(channels, 1, *kernel.shape)
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), weight, groups=channels)


def _gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def gaussian_noise(images, c, generator):
    x = _unit(images)
    return _uint8(x + c * torch.randn(x.shape, generator=generator))


def shot_noise(images, c, generator):
    """Poisson noise: photon counts of rate `c` times the intensity."""
    return _uint8(torch.poisson(_unit(images) * c, generator=generator) / c)


def impulse_noise(images, c, generator):
    """Salt and pepper: a fraction `c` of the values (per channel) set to 0 or 1, half each."""
    x = _unit(images)
    hit = torch.rand(x.shape, generator=generator) < c
    salt = torch.rand(x.shape, generator=generator) < 0.5
    return _uint8(torch.where(hit, salt.float(), x))


def defocus_blur(images, c, generator):
    """A disk of radius c[0], anti-aliased by a 3x3 Gaussian of sigma c[1]; borders reflected."""
    radius, alias_sigma = c
    grid = torch.arange(-8, 9, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius ** 2).double()
    g = _gaussian_kernel(alias_sigma, 1)
    kernel = F.conv2d(F.pad((disk / disk.sum())[None, None], (1, 1, 1, 1)), torch.outer(g, g)[None, None])[0, 0]
    keep = kernel.abs().sum(1) > 0  # the disk's support after anti-aliasing: the rest of the grid is zero
    kernel = kernel[keep][:, keep]
    return _uint8(_filter(_unit(images), kernel.float(), "reflect"))


def gaussian_blur(images, c, generator):
    """Gaussian of sigma `c`, truncated at 4 sigma; borders padded with the edge value."""
    g = _gaussian_kernel(c, int(4 * c + 0.5))
    return _uint8(_filter(_unit(images), torch.outer(g, g).float(), "replicate"))


def contrast(images, c, generator):
    """Each channel's deviations from its image mean scaled by `c`."""
    x = _unit(images)
    means = x.mean(dim=(2, 3), keepdim=True)
    return _uint8((x - means) * c + means)


def brightness(images, c, generator):
    """HSV value raised by `c` (clipped at 1), hue and saturation kept: each pixel's RGB scaled by the
    ratio of its new value to its old one (a black pixel, of no hue, becomes grey)."""
    x = _unit(images)
    value = x.amax(dim=1, keepdim=True)
    raised = (value + c).clamp(max=1)
    return _uint8(torch.where(value > 0, x * raised / value.clamp(min=1e-12), raised))


def _through_pil(images: torch.Tensor, change: Callable) -> torch.Tensor:
    """uint8 (B, 3, H, W) images, each passed through `change` as a PIL image (what CIFAR-10-C did for these)."""
    from PIL import Image

    out = [np.asarray(change(Image.fromarray(im.permute(1, 2, 0).numpy()))) for im in images]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def jpeg_compression(images, c, generator):
    """Encoded and decoded as JPEG at quality `c` (PIL)."""
    from PIL import Image

    def roundtrip(im):
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=c)
        return Image.open(buffer).convert("RGB")

    return _through_pil(images, roundtrip)


def pixelate(images, c, generator):
    """Box-filtered down to int(32 c) pixels a side and back up (PIL's BOX resampling)."""
    from PIL import Image

    h, w = images.shape[-2:]
    small = (int(w * c), int(h * c))
    return _through_pil(images, lambda im: im.resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.BOX))


CORRUPTIONS = {c.name: c for c in (
    Corruption("gaussian_noise", "noise", (0.04, 0.06, 0.08, 0.09, 0.10), gaussian_noise),
    Corruption("shot_noise", "noise", (500, 250, 100, 75, 50), shot_noise),
    Corruption("impulse_noise", "noise", (0.01, 0.02, 0.03, 0.05, 0.07), impulse_noise),
    Corruption("defocus_blur", "blur", ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)), defocus_blur),
    Corruption("gaussian_blur", "blur", (0.4, 0.6, 0.7, 0.8, 1.0), gaussian_blur),
    Corruption("brightness", "weather", (0.05, 0.1, 0.15, 0.2, 0.3), brightness),  # CIFAR-10-C's family for it
    Corruption("contrast", "digital", (0.75, 0.5, 0.4, 0.3, 0.15), contrast),
    Corruption("jpeg_compression", "digital", (80, 65, 58, 50, 40), jpeg_compression),
    Corruption("pixelate", "digital", (0.95, 0.9, 0.85, 0.75, 0.65), pixelate),
)}


def corruption_seed(seed: int, name: str, severity: int) -> int:
    """The generator seed of one corruption and severity: the same whichever others are computed."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}/{severity}".encode()).digest()[:8], "little") >> 1


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """uint8 images (B, 3, H, W) under corruption `name` at `severity` (1-5), drawn with `seed` (on the CPU)."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise ConfigError(f"severity must be 1-5, got {severity}")
    corruption = CORRUPTIONS[name]
    generator = torch.Generator().manual_seed(corruption_seed(seed, name, severity))
    return corruption.apply(images.cpu(), corruption.severities[severity - 1], generator)


def evaluate_robustness(run_dir: str | Path, *, images: int | None = None, seed: int = 0,
                        device: str | torch.device | None = None, data_root: str | None = None,
                        log: Callable[[str], None] | None = print, overwrite: bool = False) -> dict:
    """Accuracy of a run's saved weights on its first `images` test images (all when None), clean and under
    every corruption and severity; writes the result to `run_dir/robustness.json` (atomically; one that exists
    is replaced only with `overwrite`) and returns it."""
    began = time.perf_counter()
    log = log or (lambda message: None)
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        run_folder.writable_folder(run_dir)  # robustness.json goes there: checked before minutes of evaluation
    if run_folder.present(run_dir / RESULT) and not overwrite:
        raise FileExistsError(f"{run_dir / RESULT} exists: nothing computed; add {option('overwrite=True', '--overwrite')} "
                              "to replace it, or keep it")
    device = torch.device(device) if device else default_device()
    environment = run_folder.environment(device)  # the commit as the evaluation starts
    cfg, model = load_run(run_dir, device)
    test = load_cifar10(run_data_root(run_dir, data_root) or cfg.data.root or None, "test", download=cfg.data.download, channels_first=True)
    n = len(test) if images is None else images
    if not 1 <= n <= len(test):
        raise ConfigError(f"--images must be between 1 and {len(test)} (the test set), got {n}")
    test = test.subset(slice(0, n))
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)

    bar = progress_bar(total=n * (1 + 5 * len(CORRUPTIONS)), desc="robustness", unit="img")  # every image, every view

    def accuracy(batch: torch.Tensor) -> float:
        loader = GpuLoader(CIFAR10Split(batch, test.labels), batch_size=500, device=device, train=False,
                           channels_last=cfg.train.channels_last)
        logits = predict(model, loader, "none", cfg.train.precision)
        bar.update(n)
        return int((logits.argmax(1) == loader.labels).sum()) / n

    with bar:
        clean = accuracy(test.images)
        log(f"clean: {clean:.4f} on {n} test images")
        results = []
        for c in CORRUPTIONS.values():
            bar.set_postfix_str(c.name)
            accs = [accuracy(corrupt(test.images, c.name, s, seed)) for s in range(1, 6)]
            results.append({"name": c.name, "family": c.family, "severities": list(c.severities), "accuracy": accs})
            log(f"{c.name}: " + " ".join(f"{a:.4f}" for a in accs))
    result = {"run": run_dir.name, "images": n, "split": "test", "tta": "none", "seed": seed,
              **environment, "seconds": round(time.perf_counter() - began, 1), "generated": True,
              "note": NOTE, "clean_acc": clean, "corruptions": results,
              "mean_corruption_acc": float(np.mean([a for r in results for a in r["accuracy"]]))}
    run_folder.atomic_write_text(run_dir / RESULT, json.dumps(result, indent=2) + "\n", new=not overwrite)
    return result
