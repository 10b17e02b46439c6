"""The `cifar-resnet` command: thin subcommands over the functions the notebooks call.

Errors the user can fix (a bad configuration, a model over the budget, missing or damaged data or
checkpoints, a run folder that is taken, a folder that is missing, a file, read-only or full) end with one
line on stderr and exit status 2; Ctrl-C, SIGTERM and SIGHUP end with one line and exit status 130 (a
training run keeps its checkpoint and says how to continue it), also while the command starts.
"""

from __future__ import annotations

import signal


def _stopped_while_loading(signum, frame) -> None:  # nothing is written yet: end at once, in one line
    print("cifar-resnet: interrupted", file=__import__("sys").stderr)
    __import__("os")._exit(130)


_STOPS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
try:  # the imports below take seconds (torch): a Ctrl-C meanwhile gives one line, not a traceback
    _BEFORE_LOADING = {s: signal.signal(s, _stopped_while_loading) for s in _STOPS
                       if signal.getsignal(s) is not signal.SIG_IGN}  # what nohup or a shell ignored stays ignored
except ValueError:  # imported from a thread other than the main one: no handlers to set
    _BEFORE_LOADING = {}

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .audience import use_command_line, use_python
from .config import ConfigError, ConfigNotice, load_config, override
from .data.cifar10 import DataError
from .models import OverBudgetError, PARAMETER_BUDGET
from .run_folder import CheckpointError, FolderError, folder_error, holds_run, user_runs_dir, writable_folder
from .training.engine import TrainingDiverged, TrainingInterrupted

for _signal, _handler in _BEFORE_LOADING.items():
    signal.signal(_signal, _handler)

USER_ERRORS = (ConfigError, OverBudgetError, DataError, CheckpointError, FolderError, FileNotFoundError,
               FileExistsError)


class _one_line_notices:
    """While a command runs, a `ConfigNotice` (a configuration that is valid but may not mean what its author
    thinks) is one line on stderr; other warnings show as Python shows them."""

    def __enter__(self) -> None:
        self.before = show = warnings.showwarning

        def one_line(message, category, *args, **kwargs) -> None:
            if issubclass(category, ConfigNotice):
                print(f"cifar-resnet: note: {message}", file=sys.stderr)
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = one_line

    def __exit__(self, *exc) -> None:
        warnings.showwarning = self.before


class _signals_as_interrupts:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, while a command runs: a training run keeps
    its checkpoint and says how to continue, a record or a write leaves no temporary file. The handlers
    before are put back after (main() may be called from Python)."""

    def __enter__(self) -> None:
        try:
            self.before = {s: signal.signal(s, signal.default_int_handler) for s in _STOPS
                           if s != signal.SIGINT and signal.getsignal(s) is not signal.SIG_IGN}  # nohup: still ignored
        except ValueError:  # not the main thread
            self.before = {}

    def __exit__(self, *exc) -> None:
        for number, handler in self.before.items():
            signal.signal(number, handler)


def cmd_summary(args: argparse.Namespace) -> int:
    from .models import check_budget, heaviest_stage, layer_table

    cfg = load_config(args.config)
    print(layer_table(cfg.model), end="")  # over the budget too: the table shows where to cut
    print(heaviest_stage(cfg.model))
    n = check_budget(cfg.model)  # over the budget: one line on stderr and exit status 2, after the table
    print(f"{cfg.name}: {n:,} trainable parameters (budget {PARAMETER_BUDGET:,})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .runtime import resolve_device
    from .training.launch_policy import default_preset, train

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"train runs on one device; under torchrun (WORLD_SIZE={os.environ['WORLD_SIZE']}) every "
                          "process would train the whole run into the same folder. Run it without torchrun, or use "
                          "several GPUs through the search's workers: cifar-resnet search ... --devices 0,1,2,3")
    config, announce = args.config, None
    if not config and not args.resume:  # the main command: best on a GPU, a CPU preset elsewhere
        config, announce = default_preset(resolve_device(args.device))
    out = Path(args.out or user_runs_dir() / (Path(config).stem if config else "run"))
    writable_folder(out, what="run folder", other="--out")  # one that cannot take the run: refused before an epoch
    if args.resume and args.overwrite:
        raise ConfigError("give either --resume (continue the run) or --overwrite (start again), not both")
    if holds_run(out) and not (args.resume or args.overwrite):
        raise ConfigError(f"{out} already holds a run: add --resume to continue it, --overwrite to start again "
                          "(its record is deleted), or choose another --out")
    if config:
        cfg = load_config(config)
    elif args.resume and (out / "config.yaml").is_file():
        cfg = load_config(out / "config.yaml")
    else:
        raise ConfigError(f"{out} holds no config.yaml to resume: give --config FILE, or the --out folder of the run")
    changes = {k: v for k, v in {"train.epochs": args.epochs, "train.seed": args.seed}.items() if v is not None}
    cfg = override(cfg, **changes) if changes else cfg
    metrics = train(cfg, out, data_root=args.data_root, resume=args.resume, time_limit=args.time_limit,
                    device=args.device, allow_slow=args.allow_slow, announce=announce)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import evaluate_run

    print(json.dumps(evaluate_run(args.run_dir, tta=args.tta, data_root=args.data_root, device=args.device), indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .evaluation.predict_images import predict_file

    predict_file(args.run_dir, args.input, args.out, tta=args.tta, device=args.device,
                 probabilities=args.probabilities, class_names=args.class_names)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .studies.search import export_results, run_search

    args.work_dir = args.work_dir or str(user_runs_dir() / "search")
    from .run_folder import folder_name

    folder_name(args.study, "--study", args.work_dir)
    writable_folder(Path(args.out))  # the exports come at the end: a folder that cannot take them is refused first
    if args.devices:
        from .studies.search_workers import launch_workers

        return launch_workers(args.devices, vars(args))
    study = run_search(args.space, args.study, args.trials, storage=args.storage, timeout=args.timeout,
                       data_root=args.data_root, device=args.device, work_dir=Path(args.work_dir),
                       allow_slow=args.allow_slow)
    for path in export_results(study, args.out).values():
        print(f"wrote {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .studies.sweep import sweep

    out = Path(args.out or user_runs_dir() / "sweeps" / Path(args.plan).stem)
    sweep(args.plan, out, time_limit=args.time_limit, smoke=args.smoke, calibration=args.calibration,
          dry_run=args.dry_run, write_configs=args.write_configs, overwrite=args.overwrite, resume=args.resume,
          seeds=args.seeds,
          data_root=args.data_root, device=args.device)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from .reporting.records import record_run

    print(record_run(args.run_dir, args.results, name=args.name, weights=args.weights))
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from .evaluation.corruptions import RESULT, evaluate_robustness

    result = evaluate_robustness(args.run_dir, images=args.images, seed=args.seed, device=args.device,
                                 data_root=args.data_root, overwrite=args.overwrite)
    print(f"wrote {Path(args.run_dir) / RESULT}: clean {result['clean_acc']:.4f}, mean under corruption "
          f"{result['mean_corruption_acc']:.4f} on {result['images']} images in {result['seconds']:.0f} s")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from .reporting.rebuild import rebuild_all
    from .reporting.records import require_clone

    require_clone(args.root, "cifar-resnet figures")
    _check_figures_inputs(Path(args.root), args.study)
    for path in rebuild_all(args.root, data_root=args.data_root, study=args.study):
        print(path)
    return 0


def _check_figures_inputs(root: Path, study: str) -> None:
    """Before anything is drawn: every recorded run's metrics.json holds values of the types the engine
    writes, the search's CSVs are the search's, and the folders written to can be written."""
    from .reporting.analysis import load_importance, load_search
    from .reporting.records import RESULTS_RUNS, recorded_metrics
    from .run_folder import read_metrics

    for path in recorded_metrics(root / RESULTS_RUNS):
        read_metrics(path.parent)
    load_search(root / "results", study)
    load_importance(root / "results", study)
    for folder in ("figures", "results"):
        writable_folder(root / folder)


def cmd_report(args: argparse.Namespace) -> int:
    from .reporting.address import report_placeholders
    from .reporting.records import require_clone
    from .reporting.paper import build_report

    require_clone(args.root, "cifar-resnet report")
    try:
        print(build_report(Path(args.root)))
    except RuntimeError as err:  # latexmk missing or the LaTeX build failed: say which, in one line
        print(f"cifar-resnet: error: {err}", file=sys.stderr)
        return 2
    placeholders = report_placeholders(args.root)  # at every build, until the team has set them
    if placeholders:
        print(f"cifar-resnet: warning: {placeholders}", file=sys.stderr)
    return 0


def cmd_set_address(args: argparse.Namespace) -> int:
    from .reporting.address import set_address

    for path in set_address(args.root, args.url):
        print(f"wrote {path}")
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line (what is wrong, and where the options are
    listed), not the usage block and the error after it."""

    def error(self, message: str) -> None:
        self.exit(2, f"cifar-resnet: error: {_one_line(message)} (see `{self.prog} --help`)\n")


def _one_line(message: object) -> str:
    """`message` on one line: a newline in a path the user gave is shown as \\n, never as a line break."""
    return str(message).replace("\r", "\\r").replace("\n", "\\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="cifar-resnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="layer table, the stage holding the most parameters and the exact "
                       "trainable-parameter count of a configuration (over the budget: all three, then exit 2)")
    p.add_argument("--config", required=True, help="preset name (colab, best, ...) or YAML file, e.g. configs/wide_resnet.yaml")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train a configuration into a run folder (checkpointed every epoch)")
    p.add_argument("--config", help="preset name (colab, best, ...) or YAML file; default best with a GPU, cpu without "
                   "(with --resume: the run's own)")
    p.add_argument("--out", help="run folder (default runs/<config name>, or $CIFAR_RESNET_RUNS/<config name>)")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py (default $CIFAR10_ROOT, else ./data)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--time-limit", type=float, help="stop cleanly (checkpoint kept) before exceeding S seconds")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again in an --out that already holds a run")
    p.add_argument("--allow-slow", action="store_true",
                   help="train even where the CPU estimate is over an hour (refused by default)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="re-evaluate a run's saved weights on the test set; prints JSON")
    p.add_argument("run_dir", help="a run folder written by `cifar-resnet train`")
    p.add_argument("--tta", action="store_true", help="also evaluate with the run's test-time augmentation")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py")
    p.add_argument("--device", help="cuda, cpu (default: cuda if available)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict new images (pickle, .npy/.npz, PNG/JPEG files) into a CSV; "
                                       "accuracy JSON beside it where they are labelled")
    p.add_argument("run_dir", help="a run folder with weights, e.g. results/runs/best")
    p.add_argument("input", help="a CIFAR-style pickle (dict with 'data', optional 'ids'/'labels'), a .npy/.npz of "
                                 "uint8 images (CIFAR-10.1's *_data.npy), a PNG/JPEG file or a folder of them")
    p.add_argument("--out", required=True, help="CSV to write (ID,Labels); refused if it exists")
    p.add_argument("--tta", action="store_true", help="predict with the run's test-time augmentation")
    p.add_argument("--probabilities", action="store_true", help="add the ten class probabilities to each row")
    p.add_argument("--class-names", action="store_true", help="write class names, not indices, under Labels")
    p.add_argument("--device", help="cuda, cpu (default: cuda if available)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("search", help="architecture search under the budget (Optuna: resumable, multi-worker)")
    p.add_argument("--space", required=True, help="search space YAML, e.g. configs/search_space.yaml")
    p.add_argument("--study", required=True, help="study name; the same name resumes or joins it")
    p.add_argument("--trials", type=int, required=True,
                   help="trained trials the study should reach in total (over-budget samples are recorded, not counted)")
    p.add_argument("--storage", help="database URL (default sqlite:///<work-dir>/<study>.db); "
                                     "postgresql://... for workers on several machines")
    p.add_argument("--timeout", type=float, help="start no new trial after S seconds")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py (default $CIFAR10_ROOT, else ./data)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--out", default="results/search",
                   help="where <study>.csv, _best.yaml and _importance.csv are exported (default results/search)")
    p.add_argument("--work-dir", help="the study database and trial run folders (default runs/search, ignored by "
                                      "git; $CIFAR_RESNET_RUNS/search where that is set)")
    p.add_argument("--allow-slow", action="store_true", help="train trials even where the CPU estimate is over an hour")
    p.add_argument("--devices", help="GPU indices, e.g. 0,1,2,3: one worker per GPU on the same study, each pinned "
                                     "to its device; run the same command on every machine with one --storage")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("sweep", help="train a plan's runs back to back under a time limit; summary.csv of them")
    p.add_argument("plan", help="plan YAML, e.g. configs/plans/ablation.yaml")
    p.add_argument("--out", help="folder for the run folders and summary.csv (default runs/sweeps/<plan name>)")
    p.add_argument("--time-limit", type=float, help="seconds for the whole plan (default: the plan's time_limit)")
    p.add_argument("--smoke", action="store_true", help="tiny networks and schedules: a CPU check of the pipeline")
    p.add_argument("--calibration", help="folder of throughput JSON files (scripts/gpu_calibrate.sh) for the estimates")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their expected durations only")
    p.add_argument("--write-configs", metavar="DIR", help="write each run's configuration to DIR and stop (files "
                   "there are replaced only with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the runs of an --out that holds a sweep")
    p.add_argument("--resume", action="store_true", help="continue the sweep stopped in --out: its finished runs "
                   "kept, a stopped one continued from its checkpoint, the rest trained")
    p.add_argument("--seeds", type=int, nargs="+", help="run every run of the plan with these seeds instead "
                   "(e.g. a record's second seed: --seeds 1)")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py (default $CIFAR10_ROOT, else ./data)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("record", help="copy a finished run (e.g. runs/best) into results/runs/, where the figures, "
                                      "tables and report read it")
    p.add_argument("run_dir", help="a finished run folder, e.g. runs/best")
    p.add_argument("--name", help="folder name under results/runs (default: the run folder's name)")
    p.add_argument("--weights", action="store_true", help="also copy model.safetensors (8.6 MB for best.yaml)")
    p.add_argument("--results", help="results folder (default: the results/ of the clone you are in)")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("robustness", help="accuracy of a run's saved weights under generated CIFAR-10-C-style "
                                          "corruptions (5 severities each); writes RUN_DIR/robustness.json")
    p.add_argument("run_dir", help="a finished run folder holding model.safetensors, e.g. results/runs/best")
    p.add_argument("--images", type=int, help="evaluate on the first N test images only (default: all 10,000; "
                                              "a CPU takes minutes per 1,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruptions' random draws (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace the run's robustness.json (kept otherwise)")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py (default $CIFAR10_ROOT, else ./data)")
    p.add_argument("--device", help="cuda, cpu (default: cuda if available)")
    p.set_defaults(func=cmd_robustness)

    p = sub.add_parser("figures", help="redraw figures/ and the tables in results/ from the recorded results (no training)")
    p.add_argument("--root", default=".", help="repository root holding configs/ and results/ (default: .)")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py (default $CIFAR10_ROOT, else ./data); "
                   "without it the data-set and prediction figures are skipped")
    p.add_argument("--study", default="main", help="search study to draw from results/search/<study>.csv")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("report", help="regenerate the report's numbers from results/ and build report/report.pdf")
    p.add_argument("--root", default=".", help="repository root holding report/ and results/ (default: .)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("set-address", help="write the repository's address (and report/authors.yaml) into pyproject.toml, "
                                           "the README, every notebook and report/authors.tex")
    p.add_argument("url", nargs="?", help="https://github.com/OWNER/NAME (default: the one in pyproject.toml)")
    p.add_argument("--root", default=".", help="the clone's root (default: .)")
    p.set_defaults(func=cmd_set_address)
    for p in sub.choices.values():
        p.add_argument("--quiet", action="store_true", help="no progress bars (they are left out anyway where "
                                                            "the output is not a terminal)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_command_line(quiet=args.quiet)  # the messages from here on name flags, not Python calls
    try:
        with _signals_as_interrupts(), _one_line_notices():
            return args.func(args)
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, FileNotFoundError) and err.args and err.errno is None else err
        if isinstance(err, OSError) and err.errno is not None:  # the operating system's own: what to do about it
            message = folder_error(err)
        print(f"cifar-resnet: error: {_one_line(message)}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder or file the user named: missing, a file, read-only, full
        print(f"cifar-resnet: error: {_one_line(folder_error(err))}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"cifar-resnet: stopped: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(f"cifar-resnet: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("cifar-resnet: interrupted", file=sys.stderr)
        return 130
    finally:
        use_python()  # main() called from Python (a test, a notebook) leaves the library's default behind
