"""The training engine: a `Config` in, a run folder out (see `runs.py` for what the folder holds).

`train(cfg, out_dir)` is what the command line and the notebooks call. `Trainer.epochs()` yields after
every epoch, for callers that watch a run as it goes (the search prunes trials with it). The step that
does the work is `Trainer.train_step`; the epoch loop is `Trainer.epochs`.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import runs
from .config import Config, ConfigError, TrainConfig, config_to_dict, load_config, save_config
from .data import CIFAR10Split, load_cifar10, split_holdout
from .loader import GpuLoader
from .models import count_parameters, create_model

ACCURACY_MARKS = (0.93, 0.94, 0.95, 0.96)  # metrics.json records the training time to reach each
_TTA_MODES = ("none", "flip", "flip_translate")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


@dataclass
class EpochStats:
    """One row of history.csv. `eval_*` is None on epochs that were not evaluated."""

    epoch: int
    lr: float  # mean learning rate over the epoch's steps
    train_loss: float
    train_acc: float
    eval_loss: float | None
    eval_acc: float | None
    seconds: float  # training time of this epoch, evaluation excluded


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_splits(cfg: Config, data_root: str | None = None) -> tuple[CIFAR10Split, CIFAR10Split, str]:
    """The training split and the evaluation split ("test", or "val" when data.holdout > 0)."""
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


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov), AdamW, or any `torch.optim` class by name; BatchNorm and biases undecayed unless asked."""
    decay = [p for p in model.parameters() if p.requires_grad and (p.ndim > 1 or cfg.decay_norm_and_bias)]
    no_decay = [p for p in model.parameters() if p.requires_grad and not (p.ndim > 1 or cfg.decay_norm_and_bias)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    name = cfg.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    cls = getattr(torch.optim, cfg.optimizer, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"train.optimizer: {cfg.optimizer!r} is neither sgd, adamw nor a torch.optim class")
    return cls(groups, lr=cfg.lr)


def lr_factor(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each step, for `torch.optim.lr_scheduler.LambdaLR`."""
    warmup = cfg.warmup_epochs / max(cfg.epochs, 1) * total_steps
    milestones = [m / max(cfg.epochs, 1) * total_steps for m in cfg.milestones]

    def factor(step: int) -> float:
        t = step / total_steps
        if cfg.schedule == "onecycle":  # triangular: up to the peak, then linearly down to zero
            peak = cfg.pct_start
            return t / peak if t < peak else max(0.0, (1 - t) / (1 - peak))
        if step < warmup:
            return (step + 1) / warmup
        after = (step - warmup) / max(total_steps - warmup, 1)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(after, 1.0)))
        if cfg.schedule == "linear":
            return max(0.0, 1 - after)
        if cfg.schedule == "step":
            return cfg.gamma ** sum(step >= m for m in milestones)
        return 1.0  # constant

    if cfg.schedule not in ("onecycle", "cosine", "linear", "step", "constant"):
        raise ConfigError(f"train.schedule: unknown {cfg.schedule!r}; choose onecycle, cosine, linear, step or constant")
    return factor


def tta_views(x: torch.Tensor, mode: str) -> list[tuple[torch.Tensor, float]]:
    """The test-time views of a normalised batch and their weights: identity, flip, and 1-pixel translates."""
    if mode not in _TTA_MODES:
        raise ConfigError(f"train.tta: unknown {mode!r}; choose one of {', '.join(_TTA_MODES)}")
    if mode == "none":
        return [(x, 1.0)]
    views = [(x, 0.5), (x.flip(-1), 0.5)]
    if mode == "flip_translate":  # as airbench: half the weight on the plain views, a quarter on each shift
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        up_left, down_right = padded[..., :-2, :-2], padded[..., 2:, 2:]
        views = [(v, w * 0.5) for v, w in views] + [(up_left, 0.125), (up_left.flip(-1), 0.125),
                                                    (down_right, 0.125), (down_right.flip(-1), 0.125)]
    return views


@torch.no_grad()
def predict(model: nn.Module, loader: GpuLoader, tta: str = "none", precision: str = "fp32") -> torch.Tensor:
    """Logits (N, classes) of the loader's images in order, averaged over the test-time views."""
    model.eval()
    outputs = []
    for x, _ in loader:
        with autocast(loader.device, precision):
            logits = sum(w * model(v).float() for v, w in tta_views(x, tta))
        outputs.append(logits)
    return torch.cat(outputs)


def evaluate(model: nn.Module, loader: GpuLoader, tta: str = "none", precision: str = "fp32") -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on the loader's split."""
    logits = predict(model, loader, tta, precision)
    loss = F.cross_entropy(logits, loader.labels).item()
    return loss, (logits.argmax(1) == loader.labels).float().mean().item()


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast on CUDA; the CPU computes in fp32 (its autocast is slow and changes results)."""
    if precision not in ("bf16", "fp16", "fp32"):
        raise ConfigError(f"train.precision: unknown {precision!r}; choose bf16, fp16 or fp32")
    enabled = device.type == "cuda" and precision != "fp32"
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16, enabled=enabled)


class Trainer:
    """Trains one configuration into `out_dir`, checkpointing every epoch; `resume=True` continues it."""

    def __init__(self, cfg: Config, out_dir: str | Path, *, data_root: str | None = None,
                 device: str | torch.device | None = None, resume: bool = False, time_limit: float | None = None,
                 progress: bool | None = None, log: Callable[[str], None] | None = print,
                 splits: tuple[CIFAR10Split, CIFAR10Split, str] | None = None) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device) if device else default_device()
        self.time_limit, self.log = time_limit, log or (lambda message: None)
        self.progress = progress if progress is not None else (sys.stderr.isatty() or "ipykernel" in sys.modules)
        checkpoint = self._read_checkpoint(cfg) if resume else None
        self.cfg = cfg
        t = cfg.train
        tta_views(torch.zeros(1, 3, 4, 4), t.tta)  # validate the option before any work
        autocast(self.device, t.precision)
        torch.manual_seed(t.seed)
        torch.backends.cudnn.benchmark = True

        train, evaluation, self.eval_split = splits or load_splits(cfg, data_root)
        channels_last = t.channels_last
        self.train_loader = GpuLoader(train, batch_size=t.batch_size, device=self.device, train=True,
                                      augment=cfg.data, seed=t.seed, channels_last=channels_last)
        self.eval_loader = GpuLoader(evaluation, batch_size=1024, device=self.device, train=False,
                                     channels_last=channels_last)

        self.model = create_model(cfg.model).to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.params = count_parameters(self.model)
        self.forward = torch.compile(self.model) if t.compile and self.device.type == "cuda" else self.model
        self.optimizer = make_optimizer(self.model, t)
        self.steps_per_epoch = len(self.train_loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(t, t.epochs * self.steps_per_epoch))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == "fp16" and self.device.type == "cuda")
        self.ema = None
        if t.ema_decay:
            ema_fn = torch.optim.swa_utils.get_ema_multi_avg_fn(t.ema_decay)
            self.ema = torch.optim.swa_utils.AveragedModel(self.model, multi_avg_fn=ema_fn, use_buffers=True)
        self.mix = self._make_mix(t)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)

        self.epoch, self.history, self.train_seconds = 0, [], 0.0
        self.time_to_acc: dict[str, float | None] = {f"{m:.2f}": None for m in ACCURACY_MARKS}
        if checkpoint:
            self._restore(checkpoint)
        else:
            save_config(cfg, self.out / runs.CONFIG)

    # ---- checkpoints -------------------------------------------------------------------------------
    def _read_checkpoint(self, cfg: Config) -> dict | None:
        path = self.out / runs.CHECKPOINT
        if not path.is_file():
            self.log(f"no checkpoint in {self.out}: starting from scratch")
            return None
        checkpoint = runs.load_checkpoint(path)
        if checkpoint.get("config") != config_to_dict(cfg):
            saved, given = checkpoint.get("config", {}), config_to_dict(cfg)
            diff = sorted(f"{section}.{k}" for section in given if isinstance(given[section], dict)
                          for k in given[section] if saved.get(section, {}).get(k) != given[section][k])
            raise runs.CheckpointError(f"{path} belongs to a run with another configuration (differs in: "
                                       f"{', '.join(diff) or 'name'}); resume with its own config.yaml or use another --out")
        return checkpoint

    def _state(self) -> dict:
        return {
            "config": config_to_dict(self.cfg), "epoch": self.epoch, "history": self.history,
            "train_seconds": self.train_seconds, "time_to_acc": self.time_to_acc,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": {"torch": torch.get_rng_state(), "loader": self.train_loader.state_dict()["generator"],
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
        }

    def _restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema:
                self.ema.load_state_dict(state["ema"])
            torch.set_rng_state(state["rng"]["torch"])
            self.train_loader.load_state_dict({"generator": state["rng"]["loader"]})
            if state["rng"]["cuda"] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
            self.epoch, self.history = state["epoch"], state["history"]
            self.train_seconds, self.time_to_acc = state["train_seconds"], state["time_to_acc"]
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise runs.CheckpointError(f"{self.out / runs.CHECKPOINT} does not fit this run ({type(err).__name__}: "
                                       f"{str(err).splitlines()[0]}); delete it to restart from scratch") from None
        self.log(f"resuming {self.out} after epoch {self.epoch}")

    # ---- training ----------------------------------------------------------------------------------
    @staticmethod
    def _make_mix(t: TrainConfig):
        if not (t.mixup_alpha or t.cutmix_alpha):
            return None
        from torchvision.transforms import v2

        mixes = ([v2.MixUp(alpha=t.mixup_alpha, num_classes=10)] if t.mixup_alpha else []) + \
                ([v2.CutMix(alpha=t.cutmix_alpha, num_classes=10)] if t.cutmix_alpha else [])
        return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)

    def eval_model(self) -> nn.Module:
        """The network that is evaluated and saved: the weight average when EMA is on."""
        return self.ema.module if self.ema else self.model

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step; returns the loss and the number of correct predictions (on the device)."""
        t = self.cfg.train
        target = y
        if self.mix is not None:
            x, target = self.mix(x, y)
        with autocast(self.device, t.precision):
            logits = self.forward(x)
            loss = self.criterion(logits.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if t.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema:
            self.ema.update_parameters(self.model)
        return loss.detach(), (logits.argmax(1) == y).sum()

    def epochs(self) -> Iterator[EpochStats]:
        """Train epoch by epoch from where the run stands, checkpointing after each; yields its stats."""
        t = self.cfg.train
        start = time.perf_counter()
        bar = None
        if self.progress:
            with warnings.catch_warnings():  # without ipywidgets, tqdm.auto warns and falls back to text: fine
                warnings.simplefilter("ignore")
                from tqdm.auto import tqdm

            bar = tqdm(total=t.epochs * self.steps_per_epoch, initial=self.epoch * self.steps_per_epoch,
                       desc=self.cfg.name, unit="step", dynamic_ncols=True)
        while self.epoch < t.epochs:
            last = self.history[-1]["seconds"] if self.history else 0.0
            if self.time_limit and time.perf_counter() - start + last > self.time_limit:
                self.log(f"time limit of {self.time_limit:.0f} s reached after epoch {self.epoch}: "
                         "checkpoint kept, continue with --resume")
                break
            stats = self._train_epoch(bar)
            self.epoch += 1
            self.history.append({"epoch": stats.epoch, "lr": stats.lr, "train_loss": stats.train_loss,
                                 "train_acc": stats.train_acc, f"{self.eval_split}_loss": stats.eval_loss,
                                 f"{self.eval_split}_acc": stats.eval_acc, "seconds": stats.seconds})
            runs.save_checkpoint(self._state(), self.out / runs.CHECKPOINT)
            runs.write_history(self.history, self.out / runs.HISTORY)
            if bar is None:
                self.log(self._describe(stats))
            yield stats
        if bar is not None:
            bar.close()

    def _train_epoch(self, bar) -> EpochStats:
        t = self.cfg.train
        self.model.train()
        lrs = []
        losses = torch.zeros(self.steps_per_epoch, device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        began = time.perf_counter()
        for step, (x, y) in enumerate(self.train_loader):
            lrs.append(self.optimizer.param_groups[0]["lr"])
            losses[step], right = self.train_step(x, y)  # kept on the device: no sync per step
            correct += right
            seen += len(y)
            if bar is not None:
                bar.update()
        losses = losses.cpu()  # the one sync of the epoch
        seconds = time.perf_counter() - began
        self.train_seconds += seconds
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            step = int(bad[0]) + 1
            raise TrainingDiverged(f"loss became {losses[step - 1].item()} at epoch {self.epoch + 1}, step {step}: "
                                   "lower train.lr, set train.grad_clip, or use precision bf16 instead of fp16")
        eval_loss = eval_acc = None
        if (self.epoch + 1) % t.eval_every == 0 or self.epoch + 1 == t.epochs:
            eval_loss, eval_acc = evaluate(self.eval_model(), self.eval_loader, "none", t.precision)
            for mark in ACCURACY_MARKS:
                if self.eval_split == "test" and eval_acc >= mark and self.time_to_acc[f"{mark:.2f}"] is None:
                    self.time_to_acc[f"{mark:.2f}"] = round(self.train_seconds, 2)
        stats = EpochStats(self.epoch + 1, sum(lrs) / len(lrs), losses.mean().item(), correct.item() / seen, eval_loss, eval_acc,
                           round(seconds, 3))
        if bar is not None:
            bar.set_postfix(epoch=stats.epoch, loss=f"{stats.train_loss:.3f}", acc=f"{stats.train_acc:.3f}",
                            **({self.eval_split: f"{eval_acc:.4f}"} if eval_acc is not None else {}))
        return stats

    def _describe(self, s: EpochStats) -> str:
        evaluated = f" {self.eval_split} loss {s.eval_loss:.4f} acc {s.eval_acc:.4f}" if s.eval_acc is not None else ""
        return (f"epoch {s.epoch}/{self.cfg.train.epochs} lr {s.lr:.4f} train loss {s.train_loss:.4f} "
                f"acc {s.train_acc:.4f}{evaluated} {s.seconds:.1f}s")

    # ---- the record --------------------------------------------------------------------------------
    def finish(self, wall_seconds: float) -> dict:
        """Save the final weights in half precision, evaluate those very weights, write metrics.json."""
        t = self.cfg.train
        finished = self.epoch >= t.epochs
        metrics = {"name": self.cfg.name, "status": "finished" if finished else "time_limit",
                   "eval_split": self.eval_split, "params": self.params, "epochs": t.epochs,
                   "epochs_completed": self.epoch, "train_seconds": round(self.train_seconds, 2),
                   "wall_seconds": round(wall_seconds, 2),
                   "images_per_second": round(self.epoch * self.steps_per_epoch * t.batch_size / max(self.train_seconds, 1e-9), 1),
                   "seed": t.seed, "selected_on_test": self.cfg.selected_on_test,
                   **runs.environment(self.device)}
        if finished:
            weights = self.out / runs.WEIGHTS
            runs.save_weights(self.eval_model().state_dict(), weights, metadata={"name": self.cfg.name})
            metrics["weights_sha256"] = runs.file_sha256(weights)
            model = model_from_weights(self.cfg, weights, self.device)
            metrics.update(record_predictions(model, self.eval_loader, self.out, self.eval_split, t.tta, t.precision))
        accs = [(row[f"{self.eval_split}_acc"], row["epoch"]) for row in self.history
                if row[f"{self.eval_split}_acc"] is not None]
        metrics["best_epoch"] = max(accs)[1] if accs else None
        if self.eval_split == "test":
            metrics["time_to_acc"] = self.time_to_acc
        runs.write_metrics(metrics, self.out / runs.METRICS)
        return metrics

    def run(self) -> dict:
        """Train to the end (or the time limit) and write the record; returns metrics.json's content."""
        start = time.perf_counter()
        for _ in self.epochs():
            pass
        return self.finish(time.perf_counter() - start)


def record_predictions(model: nn.Module, loader: GpuLoader, out_dir: Path, split: str, tta: str,
                       precision: str) -> dict:
    """Evaluate `model` on `loader`'s split, save its probabilities (with and without `tta`) in
    predictions.safetensors, and return the metrics they give: loss, accuracy, accuracy with TTA."""
    logits = predict(model, loader, "none", precision)
    logits_tta = predict(model, loader, tta, precision) if tta != "none" else None
    labels = loader.labels
    runs.save_predictions(Path(out_dir) / runs.PREDICTIONS, torch.softmax(logits, 1), labels,
                          probs_tta=torch.softmax(logits_tta, 1) if logits_tta is not None else None,
                          split=split, tta=tta)
    return {f"{split}_loss": F.cross_entropy(logits, labels).item(),
            f"{split}_acc": (logits.argmax(1) == labels).float().mean().item(), "tta": tta,
            f"{split}_acc_tta": (logits_tta.argmax(1) == labels).float().mean().item() if logits_tta is not None else None}


def train(cfg: Config, out_dir: str | Path, **options) -> dict:
    """Train `cfg` into `out_dir` and return its metrics; options as for `Trainer`."""
    return Trainer(cfg, out_dir, **options).run()


def model_from_weights(cfg: Config, weights: Path, device: torch.device | str = "cpu") -> nn.Module:
    """The network of `cfg` with the saved (half-precision) weights, in float32 and eval mode."""
    model = create_model(cfg.model)
    try:
        model.load_state_dict(runs.load_weights(Path(weights)))
    except RuntimeError as err:
        raise runs.CheckpointError(f"{weights} does not fit the configuration ({str(err).splitlines()[0]})") from None
    return model.to(device).eval()


def load_run(run_dir: str | Path, device: str | torch.device | None = None) -> tuple[Config, nn.Module]:
    """The configuration and trained network of a run folder."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / runs.CONFIG)
    runs.verify_weights(run_dir)
    return cfg, model_from_weights(cfg, run_dir / runs.WEIGHTS, device or default_device())


def evaluate_run(run_dir: str | Path, *, tta: bool = False, data_root: str | None = None,
                 device: str | torch.device | None = None) -> dict:
    """Re-evaluate a run's saved weights on the split it was evaluated on; with `tta`, also with its TTA."""
    device = torch.device(device) if device else default_device()
    cfg, model = load_run(run_dir, device)
    _, evaluation, split = load_splits(cfg, data_root)
    loader = GpuLoader(evaluation, batch_size=1024, device=device, train=False, channels_last=cfg.train.channels_last)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss, acc = evaluate(model, loader, "none", cfg.train.precision)
    result = {"run": str(run_dir), "split": split, "images": len(evaluation), f"{split}_loss": loss,
              f"{split}_acc": acc, "device": runs.environment(device)["device"]}
    if tta:
        mode = cfg.train.tta if cfg.train.tta != "none" else "flip"
        result["tta"], result[f"{split}_acc_tta"] = mode, evaluate(model, loader, mode, cfg.train.precision)[1]
    return result
