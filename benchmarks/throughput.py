"""Training throughput of a configuration on whatever device is here, and where the time goes.

    python benchmarks/throughput.py --config configs/best.yaml [--steps 50] [--data-root DIR]

Prints training images per second (GPU-resident loader plus optimisation step, as in training) and the
share of an epoch's time spent in data (loading and augmenting batches), forward/backward (the step on
ready batches) and evaluation (one pass over the 10,000 test images). Compilation and cuDNN autotuning
are excluded by warm-up steps. Without CIFAR-10 on disk it uses random uint8 images of the same shape:
the timings do not depend on pixel values.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from itertools import islice

import torch

from cifar_resnet.config import load_config
from cifar_resnet.data import CIFAR10Split, DataError
from cifar_resnet.engine import Trainer, evaluate, load_splits
from cifar_resnet.runs import environment


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
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    cfg = load_config(args.config)
    try:
        splits, source = load_splits(cfg, args.data_root), "CIFAR-10"
    except DataError:
        splits, source = random_splits(), "random uint8 images (CIFAR-10 not found)"
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
    result = {"config": args.config, "data_source": source, **environment(device), "batch_size": bs,
              "params": trainer.params, "timed_steps": steps,
              "train_images_per_second": round(steps * bs / pipeline, 1),
              "epoch_seconds_estimate": round(total, 3),
              "share": {k: round(v / total, 3) for k, v in epoch.items()}}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
