"""The training engine: a `Config` in, a run folder out (see `run_folder` for what the folder holds).

`train(cfg, out_dir)` trains a run; the command line (train, search, sweep) and notebook 03 first ask
`launch_policy` whether a run is worth starting here (a CPU estimate from timed steps). `Trainer.epochs()`
yields after every epoch, for callers that watch a run as it goes (the search prunes trials with it). The
step that does the work is `Trainer.train_step`; the epoch loop is `Trainer.epochs`. Evaluation and
reloading a finished run live in `evaluation.evaluate`; history.csv's rows, `history`.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from .. import run_folder
from ..audience import resume_advice, shown_path, shows_progress
from ..config import Config, config_to_dict, save_config
from ..data.cifar10 import CIFAR10Split, load_splits, resolve_root
from ..data.gpu_loader import GpuLoader
from ..data.mixing import make_batch_mix
from ..runtime import (ONEDNN_NARROW_INPUT, autocast, channels_last_trains_safely, divergence_advice, resolve_device,
                       resolve_precision)
from ..evaluation.evaluate import evaluate, half_rounded, model_from_weights, record_predictions
from ..models import WHITEN_IMAGES, count_parameters, create_model
from .ema import make_ema
from .history import EpochStats, column
from .live_view import hyperparameters, open_event_log
from .optimizer import Lookahead, make_optimizer, make_scheduler, schedule
from .time_budget import StepTimer, check_time_limit
from .sam import frozen_norm_stats, make_sam
from .resume import (RunFinished, interrupted_after_training, refuse_checkpoint_of_another_run,
                     refuse_resume_without_checkpoint)

ACCURACY_MARKS = (0.93, 0.94, 0.95, 0.96)  # metrics.json records the training time to reach each
TIME_LIMIT_REACHED = "time limit of"  # how the stop line before an epoch that would overrun begins


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C during training; the message says which checkpoint was kept and how to resume."""


class Trainer:
    """Trains one configuration into `out_dir`, checkpointing every epoch; `resume=True` continues it, and
    without it any earlier record in `out_dir` is replaced (the command line asks for --overwrite first).

    The trainer holds `out_dir`'s lock (`run_folder.RunLock`) until `run()` ends or `close()` is called: a second
    trainer there is refused. Whether a run is worth starting on this device is `launch_policy`'s question.
    `network`, a (model, forward) pair built from `cfg.model`, is trained again instead of a new one (the speed
    benchmark compiles one network once for many timed runs).
    """

    def __init__(self, cfg: Config, out_dir: str | Path, *, data_root: str | None = None,
                 device: str | torch.device | None = None, resume: bool = False, time_limit: float | None = None,
                 progress: bool | None = None, log: Callable[[str], None] | None = print,
                 splits: tuple[CIFAR10Split, CIFAR10Split, str] | None = None, tensorboard: bool | None = None,
                 network: tuple[nn.Module, Callable] | None = None) -> None:
        self.started = time.perf_counter()
        self.out = Path(out_dir)
        self.device = resolve_device(device)
        check_time_limit(time_limit)
        self.time_limit, self.log = time_limit, log or (lambda message: None)
        self.progress = progress if progress is not None else shows_progress()
        created = not self.out.exists()
        self._lock, self.events = run_folder.RunLock(self.out), None
        try:
            self._setup(cfg, data_root, resume, splits, network)
            self.events = open_event_log(self.out, resumed_epoch=self.epoch, enabled=tensorboard)
        except BaseException:
            self.close()
            if created:  # a refused run leaves no folder behind
                for name in (run_folder.LOCK, f"{run_folder.LOCK}.owner"):
                    (self.out / name).unlink(missing_ok=True)
                if not any(self.out.iterdir()):
                    self.out.rmdir()
            raise

    def _setup(self, cfg: Config, data_root: str | None, resume: bool,
               splits: tuple[CIFAR10Split, CIFAR10Split, str] | None, network: tuple[nn.Module, Callable] | None) -> None:
        checkpoint = self._read_checkpoint(cfg) if resume else None
        self.cfg = cfg
        t = cfg.train
        self.precision = resolve_precision(t.precision, self.device, warn=self.log)  # what runs: never auto
        torch.manual_seed(t.seed)
        torch.backends.cudnn.benchmark = True

        if network is None:
            self.model = create_model(cfg.model).to(self.device)
        else:  # built from cfg.model and trained before (compiled once): drawn afresh, in place
            self.model = network[0]
            self.model.reset_parameters()
        channels_last = t.channels_last and channels_last_trains_safely(self.model, self.device)
        if t.channels_last and not channels_last:
            self.log("train.channels_last ignored on this CPU: a 1x1 convolution that strides over fewer than "
                     f"{ONEDNN_NARROW_INPUT} channels corrupts oneDNN's memory in channels-last; training in NCHW")

        train, evaluation, self.eval_split = splits or load_splits(cfg, data_root)
        self.data_root = str(resolve_root(data_root or cfg.data.root or None))  # metrics.json remembers it
        self.train_loader = GpuLoader(train, batch_size=t.batch_size, device=self.device, train=True,
                                      augment=cfg.data, seed=t.seed, channels_last=channels_last)
        self.eval_loader = GpuLoader(evaluation, batch_size=1024, device=self.device, train=False,
                                     channels_last=channels_last)
        self.model.init_from_images(self.train_loader.normalize(self.train_loader.images[:WHITEN_IMAGES]))
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.params = count_parameters(self.model)
        if network is not None:
            self.forward = network[1]
        else:
            self.forward = torch.compile(self.model) if t.compile else self.model
        self.optimizer = make_optimizer(self.model, t, self.device)
        self.steps_per_epoch = len(self.train_loader)
        self.planned_epochs = t.epochs  # what the schedule spans: train.epochs, or what fits train.time_budget
        self.scheduler = make_scheduler(self.optimizer, t, steps_per_epoch=self.steps_per_epoch, epochs=t.epochs)
        self.lookahead = Lookahead(self.model, every=t.lookahead_every, decay=t.lookahead_decay,
                                   total_steps=t.epochs * self.steps_per_epoch) if t.lookahead_every else None
        self.step_timer = None  # times the first epoch's early steps where a time budget is to be fitted
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.ema = make_ema(self.model, t)  # the weight average (evaluated and saved), or None
        self.mix = make_batch_mix(t, self.device)  # MixUp / CutMix / RICAP, or None
        self.sam = make_sam(self.model, t)  # SAM / ASAM around the optimizer, or None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)

        self.epoch, self.history, self.train_seconds, self.earlier_wall_seconds = 0, [], 0.0, 0.0
        self.time_to_acc: dict[str, float | None] = {f"{m:.2f}": None for m in ACCURACY_MARKS}
        if checkpoint:
            self._restore(checkpoint)
        elif t.time_budget:
            self.step_timer = StepTimer(self.steps_per_epoch, self.device)
        if not checkpoint:
            run_folder.clear_record(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / run_folder.CONFIG)

    # ---- checkpoints -------------------------------------------------------------------------------
    def _read_checkpoint(self, cfg: Config) -> dict | None:
        path = self.out / run_folder.CHECKPOINT
        if not run_folder.present(path):
            refuse_resume_without_checkpoint(self.out, cfg)
            self.log(f"no checkpoint in {self.out}: starting from scratch")
            return None
        checkpoint = run_folder.load_checkpoint(path)
        refuse_checkpoint_of_another_run(self.out, cfg, checkpoint)
        return checkpoint

    def close(self) -> None:
        """Close the event files and release the run folder's lock (`run()` does so when it ends)."""
        if self.events is not None:
            self.events.close()
        self._lock.release()

    def wall_seconds(self) -> float:
        """Wall time of the whole run so far: earlier (resumed) sessions plus this one since it started."""
        return self.earlier_wall_seconds + time.perf_counter() - self.started

    def _state(self) -> dict:
        return {
            "config": config_to_dict(self.cfg), "epoch": self.epoch, "planned_epochs": self.planned_epochs,
            "history": self.history,
            "train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds(), "time_to_acc": self.time_to_acc,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "lookahead": self.lookahead.state_dict() if self.lookahead else None,
            "rng": {"torch": torch.get_rng_state(), "loader": self.train_loader.state_dict(),
                    "mix": self.mix.state_dict() if self.mix is not None else None,
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
            if self.lookahead:
                self.lookahead.load_state_dict(state["lookahead"])
            torch.set_rng_state(state["rng"]["torch"])
            self.train_loader.load_state_dict(state["rng"]["loader"])
            if self.mix is not None and state["rng"].get("mix"):  # RICAP's generator (torchvision's mixes: none)
                self.mix.load_state_dict(state["rng"]["mix"])
            if state["rng"]["cuda"] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
            self.epoch, self.history = state["epoch"], state["history"]
            self._plan(state.get("planned_epochs", self.cfg.train.epochs))
            self.train_seconds, self.time_to_acc = state["train_seconds"], state["time_to_acc"]
            self.earlier_wall_seconds = state.get("wall_seconds", self.train_seconds)  # older checkpoints lack it
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise run_folder.CheckpointError(f"{self.out / run_folder.CHECKPOINT} does not fit this run ({type(err).__name__}: "
                                             f"{(str(err).splitlines() or [''])[0]}); delete it to restart from scratch") from None
        self.log(f"resuming {shown_path(self.out)} after epoch {self.epoch}")

    def _plan(self, epochs: int, fitted_from: str = "", bar=None) -> None:
        """Span the schedule (and lookahead) over `epochs`; `fitted_from` says what a time budget fit it from."""
        if fitted_from and epochs != self.planned_epochs:
            paid = self.step_timer.overhead if self.step_timer is not None else 0.0
            once = f"; {paid:.0f} s of compilation paid once" if paid >= 1 else ""
            self.log(f"{self.cfg.name}: {epochs} epochs fit train.time_budget {self.cfg.train.time_budget:g} s here "
                     f"(timed over {fitted_from}{once})")
        self.planned_epochs = epochs
        self.scheduler.lr_lambdas = schedule(self.optimizer, self.cfg.train, steps_per_epoch=self.steps_per_epoch,
                                             epochs=epochs)
        if self.lookahead is not None:
            self.lookahead.total = epochs * self.steps_per_epoch
        if bar is not None:
            bar.total = epochs * self.steps_per_epoch

    # ---- training ----------------------------------------------------------------------------------
    def eval_model(self) -> nn.Module:
        """The network that is evaluated and saved: the weight average when EMA is on."""
        return self.ema.module if self.ema else self.model

    def _forward_backward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and loss of a batch; the loss's (scaled) gradients are left in `.grad`."""
        with autocast(self.device, self.precision):
            logits = self.forward(x)
            loss = self.criterion(logits.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        return logits, loss

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step; returns the loss and the number of correct predictions (on the device).
        With SAM the optimizer steps with the gradient of a second pass at the perturbed weights."""
        t = self.cfg.train
        target = y
        if self.mix is not None:
            x, target = self.mix(x, y)
        logits, loss = self._forward_backward(x, target)
        if self.sam is not None:
            self.sam.perturb()
            with frozen_norm_stats(self.model):  # the batch's statistics were counted in the first pass
                self._forward_backward(x, target)
            self.sam.restore()
        if t.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.lookahead is not None:
            self.lookahead.step(self.scheduler.last_epoch)
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

            bar = tqdm(total=self.planned_epochs * self.steps_per_epoch, initial=self.epoch * self.steps_per_epoch,
                       desc=self.cfg.name, unit="step", dynamic_ncols=True)
        try:
            while self.epoch < self.planned_epochs:
                last = self.history[-1]["seconds"] if self.history else 0.0
                if self.time_limit and time.perf_counter() - start + last > self.time_limit:
                    self.log(f"{TIME_LIMIT_REACHED} {self.time_limit:.3g} s reached after epoch {self.epoch}: "
                             f"checkpoint kept, continue with {resume_advice(shown_path(self.out))}")
                    break
                stats = self._train_epoch(bar)
                self.epoch += 1
                if self.step_timer is not None:  # the first epoch's real time: fit the budget again
                    steady = stats.seconds - self.step_timer.overhead
                    self._plan(self.step_timer.epochs(t.time_budget, steady, t.epochs), "the first epoch", bar)
                    self.step_timer = None
                # with a weight average, <split>_acc measures it and <split>_acc_raw the trained weights
                self.history.append(stats.row(self.eval_split, raw=self.ema is not None))
                if self.events is not None:  # before the checkpoint: a resume purges what came after it
                    self.events.epoch(self.history[-1], self.steps_per_epoch * t.batch_size / max(stats.seconds, 1e-9))
                run_folder.save_checkpoint(self._state(), self.out / run_folder.CHECKPOINT)
                run_folder.write_history(self.history, self.out / run_folder.HISTORY)
                if bar is None:
                    self.log(self._describe(stats))
                yield stats
        finally:
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
        if self.step_timer is not None:
            self.step_timer.start()
        for step, (x, y) in enumerate(self.train_loader):
            lrs.append(self.optimizer.param_groups[0]["lr"])
            losses[step], right = self.train_step(x, y)  # kept on the device: no sync per step
            if self.step_timer is not None and (epoch_seconds := self.step_timer.after_step(step)):
                self._plan(self.step_timer.epochs(t.time_budget, epoch_seconds, t.epochs), f"{self.step_timer.timed} steps", bar)
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
                                   + divergence_advice(self.precision, self.device))
        eval_loss = eval_acc = eval_loss_raw = eval_acc_raw = None
        if (self.epoch + 1) % t.eval_every == 0 or self.epoch + 1 == self.planned_epochs:
            model = self.eval_model()
            if self.epoch + 1 == self.planned_epochs:  # the weights as finish() saves them (half precision), so that the
                model = half_rounded(model)  # last epoch's accuracy is the one metrics.json records
            eval_loss, eval_acc = evaluate(model, self.eval_loader, "none", self.precision)
            if self.ema:
                eval_loss_raw, eval_acc_raw = evaluate(self.model, self.eval_loader, "none", self.precision)
            for mark in ACCURACY_MARKS:
                if self.eval_split == "test" and eval_acc >= mark and self.time_to_acc[f"{mark:.2f}"] is None:
                    self.time_to_acc[f"{mark:.2f}"] = round(self.train_seconds, 2)
        stats = EpochStats(epoch=self.epoch + 1, lr=sum(lrs) / len(lrs), train_loss=losses.mean().item(),
                           train_acc=correct.item() / seen, eval_loss=eval_loss, eval_acc=eval_acc,
                           eval_loss_raw=eval_loss_raw, eval_acc_raw=eval_acc_raw, seconds=round(seconds, 3))
        if bar is not None:
            bar.set_postfix(epoch=stats.epoch, loss=f"{stats.train_loss:.3f}", acc=f"{stats.train_acc:.1%}",
                            **({self.eval_split: f"{eval_acc:.2%}"} if eval_acc is not None else {}))
        return stats

    def _describe(self, s: EpochStats) -> str:
        evaluated = f" {self.eval_split} loss {s.eval_loss:.4f} acc {s.eval_acc:.2%}" if s.eval_acc is not None else ""
        if s.eval_acc_raw is not None:
            evaluated += f" (average; trained weights {s.eval_acc_raw:.2%})"
        return (f"epoch {s.epoch}/{self.planned_epochs} lr {s.lr:.4f} train loss {s.train_loss:.4f} "
                f"acc {s.train_acc:.2%}{evaluated} {s.seconds:.1f}s")

    # ---- the record --------------------------------------------------------------------------------
    def finish(self) -> dict:
        """Save the final weights in half precision, evaluate those very weights, write metrics.json."""
        t = self.cfg.train
        finished = self.epoch >= self.planned_epochs
        metrics = {"name": self.cfg.name, "status": "finished" if finished else "time_limit",
                   "eval_split": self.eval_split, "params": self.params, "epochs": self.planned_epochs,
                   "epochs_completed": self.epoch, "train_seconds": round(self.train_seconds, 2),
                   "wall_seconds": round(self.wall_seconds(), 2),
                   "session_seconds": round(time.perf_counter() - self.started, 2),
                   "images_per_second": round(self.epoch * self.steps_per_epoch * t.batch_size / max(self.train_seconds, 1e-9), 1),
                   "seed": t.seed, "precision": self.precision, "selected_on_test": self.cfg.selected_on_test,
                   "eval_weights": "ema" if self.ema else "raw",  # what the accuracies and time_to_acc measure
                   "data_root": self.data_root,  # where evaluate, robustness and the figures look first
                   **run_folder.environment(self.device)}
        if finished:
            weights = self.out / run_folder.WEIGHTS
            run_folder.save_weights(self.eval_model().state_dict(), weights, metadata={"name": self.cfg.name})
            metrics["weights_sha256"] = run_folder.file_sha256(weights)
            model = model_from_weights(self.cfg, weights, self.device)
            metrics.update(record_predictions(model, self.eval_loader, self.out, self.eval_split, t.tta, self.precision))
        acc = column("eval_acc", self.eval_split)
        accs = [(row[acc], row["epoch"]) for row in self.history if row[acc] is not None]
        metrics["best_epoch"] = max(accs)[1] if accs else None
        if self.eval_split == "test":
            metrics["time_to_acc"] = self.time_to_acc
        run_folder.write_metrics(metrics, self.out / run_folder.METRICS)
        if self.events is not None and finished:
            self.events.final(hyperparameters(self.cfg, self.params), metrics, self.eval_split, self.epoch)
        return metrics

    def run(self) -> dict:
        """Train to the end (or the time limit) and write the record; returns metrics.json's content.
        Ctrl-C raises `TrainingInterrupted`, the last completed epoch's checkpoint kept."""
        try:
            for _ in self.epochs():
                pass
            return self.finish()
        except KeyboardInterrupt:
            if self.epoch >= self.planned_epochs:  # every epoch trained: it stopped while writing the record
                raise TrainingInterrupted(interrupted_after_training(self.out, self.epoch)) from None
            kept = f"the checkpoint after epoch {self.epoch} is kept" if self.epoch else "no epoch was completed"
            raise TrainingInterrupted(f"interrupted during epoch {self.epoch + 1} of {self.planned_epochs}: {kept}; "
                                      f"continue with: {resume_advice(shown_path(self.out))}") from None
        finally:
            self.close()


def train(cfg: Config, out_dir: str | Path, **options) -> dict:
    """Train `cfg` into `out_dir` and return its metrics; options as for `Trainer`."""
    return Trainer(cfg, out_dir, **options).run()
