"""Training throughput of a configuration on whatever device is here, and where the time goes.

    python benchmarks/throughput.py --config configs/best.yaml [--steps 50] [--data-root DIR]
    python benchmarks/throughput.py --config configs/best.yaml --loader-only [--device cpu] [--threads 1]

Prints training images per second (GPU-resident loader plus optimisation step, as in training), the
loader's own images per second, and the share of an epoch's time spent in data (loading and augmenting
batches), forward/backward (the step on ready batches) and evaluation (one pass over the 10,000 test
images). Compilation and cuDNN autotuning are excluded by warm-up steps. `--loader-only` times the
training loader alone (no model: what a CPU can measure). Without CIFAR-10 on disk it uses random uint8
images of the same shape; the timings barely depend on pixel values.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from itertools import islice

import torch

from cifar_resnet.config import load_config
from cifar_resnet.data.cifar10 import CIFAR10Split, DataError
from cifar_resnet.data.gpu_loader import GpuLoader
from cifar_resnet.run_folder import environment
from cifar_resnet.training.engine import Trainer, evaluate, load_splits


def timed(device: torch.device, fn) -> float:
    """Seconds `fn` takes, with the device synchronised before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def random_splits(n_train: int = 50_000, n_test: int = 10_000) -> tuple[CIFAR10Split, CIFAR10Split, str]:
    g = torch.Generator().manual_seed(0)
    make = lambda n: CIFAR10Split(torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g),
                                  torch.randint(0, 10, (n,), generator=g))
    return make(n_train), make(n_test), "test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=50, help="timed training steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation, autotuning)")
    parser.add_argument("--data-root", help="folder holding cifar-10-batches-py (random images if absent)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--loader-only", action="store_true", help="time the training loader alone, no model")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    try:
        splits, source = load_splits(cfg, args.data_root), "CIFAR-10"
    except DataError:
        splits, source = random_splits(), "random uint8 images (CIFAR-10 not found)"
    if args.loader_only:
        report(args, time_loader(cfg, splits[0], args), source)
        return
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, device=args.device, splits=splits, log=None, progress=False)
        device, loader, bs = trainer.device, trainer.train_loader, cfg.train.batch_size
        trainer.model.train()
        for x, y in islice(loader, args.warmup):
            trainer.train_step(x, y)
        steps = min(args.steps, len(loader))
        pipeline = timed(device, lambda: [trainer.train_step(x, y) for x, y in islice(loader, steps)])
        data = timed(device, lambda: [None for _ in islice(loader, steps)])
        x, y = next(iter(loader))
        compute = timed(device, lambda: [trainer.train_step(x, y) for _ in range(steps)])
        evaluate(trainer.eval_model(), trainer.eval_loader, "none", cfg.train.precision)  # warm-up
        evaluation = timed(device, lambda: evaluate(trainer.eval_model(), trainer.eval_loader, "none",
                                                    cfg.train.precision))
    per_step_data, per_step_compute = data / steps, compute / steps
    epoch = {"data": per_step_data * len(loader), "forward_backward": per_step_compute * len(loader),
             "evaluation": evaluation}
    total = sum(epoch.values())
    report(args, {**environment(device), "batch_size": bs, "params": trainer.params, "timed_steps": steps,
                  "train_images_per_second": round(steps * bs / pipeline, 1),
                  "loader_images_per_second": round(steps * bs / data, 1),
                  "epoch_seconds_estimate": round(total, 3),
                  "share": {k: round(v / total, 3) for k, v in epoch.items()}}, source)


def time_loader(cfg, train: CIFAR10Split, args) -> dict:
    """Images per second of the training loader alone (augmentation as configured), after warm-up batches."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bs = cfg.train.batch_size
    loader = GpuLoader(train, batch_size=bs, device=device, train=True, augment=cfg.data, seed=cfg.train.seed,
                       channels_last=cfg.train.channels_last)
    batches = iter(loader)
    for _ in islice(batches, args.warmup):
        pass
    steps = min(args.steps, len(loader) - args.warmup)
    seconds = timed(device, lambda: [None for _ in islice(batches, steps)])
    return {**environment(device), "threads": torch.get_num_threads(), "batch_size": bs, "timed_steps": steps,
            "loader_images_per_second": round(steps * bs / seconds, 1),
            "loader_seconds_per_epoch": round(seconds / steps * len(loader), 3)}


def report(args, figures: dict, source: str) -> None:
    result = {"config": args.config, "data_source": source, **figures}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
