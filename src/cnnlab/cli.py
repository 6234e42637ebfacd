"""The `cnnlab` command: models, datasets, summary, train, evaluate, predict.

Library code returns data; this module prints it. A user error prints one line,
`error: ...`, and exits with status 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

# Only standard-library modules here: torch is imported by main after the arguments are checked (cli_checks),
# for the commands that need it, so a Ctrl-C during its 3 s import is a quiet exit, not a traceback
# (tests/test_trust_models.py), and a user error is reported in 0.2 s, not 3 (tests/test_startup.py).
from cnnlab.catalog import DATASET_NAMES
from cnnlab.cli_checks import (
    TORCH_FREE, TORCH_WHEN_NEEDED, check_arguments, resume_settings, scratch_rate, train_config,
)
from cnnlab.cli_model import COMMANDS as MODEL_COMMANDS
from cnnlab.config import SEED_LIMIT, TrainConfig, check_seed
from cnnlab.errors import CnnlabError
from cnnlab.inference import RUNTIMES, InferenceSettings
from cnnlab.startup import process_started
from cnnlab.versions import __version__

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as `yes | head -1` reports `yes`


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own errors: one line too
        raise CnnlabError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _threads(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive number of threads or auto, got {text!r}") from None


def _seed(text: str) -> int:
    """A --seed: a whole number that NumPy and torch both take (config.SEED_LIMIT says why)."""
    try:
        return check_seed(int(text), "--seed")
    except (ValueError, CnnlabError):
        raise argparse.ArgumentTypeError(f"expected a whole number in 0..{SEED_LIMIT - 1} (NumPy's seed "
                                         f"range), got {text!r}") from None


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=RUNTIMES, default=InferenceSettings().runtime,
                   help="what runs the model: auto (onnxruntime through the model's cached ONNX twin when "
                        "onnxruntime is installed and the model exports, else torch), torch or onnxruntime")


def _image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-image-pixels", type=_positive_int, metavar="PIXELS",
                   help="decode budget: refuse images over this many pixels, from their header (40000000)")


@contextlib.contextmanager
def _decode_budget(args: argparse.Namespace) -> Iterator[None]:
    """--max-image-pixels for this command only: main may run again in the same process without it."""
    if not hasattr(args, "max_image_pixels"):  # a command that reads no images: nothing (no torch) to import
        yield
        return
    from cnnlab.data.images import set_max_image_pixels

    previous = set_max_image_pixels(args.max_image_pixels, "--max-image-pixels")  # None: the default
    try:
        yield
    finally:
        set_max_image_pixels(previous)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help="dataset name or image folder (same as --dataset)")
    p.add_argument("--dataset", help="digits (built in, offline), mnist, fashion-mnist, cifar10, or a folder")
    p.add_argument("--model", help="registry name, see `cnnlab models` (default seed-mnist), or a model file "
                                   "saved from Python: its architecture, trained from fresh weights")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float)
    p.add_argument("--validation-split", type=float, help="fraction from the end of the training data (0.1)")
    p.add_argument("--early-stopping", dest="early_stopping_patience", type=int, metavar="PATIENCE")
    p.add_argument("--no-restore-best", dest="restore_best_weights", action="store_false", default=None,
                   help="with --early-stopping, keep the last epoch's weights instead of the best")
    p.add_argument("--reduce-lr", dest="reduce_lr_patience", type=int, metavar="PATIENCE")
    p.add_argument("--reduce-lr-factor", type=float)
    p.add_argument("--min-lr", type=float)
    p.add_argument("--monitor", help="metric for early stopping / LR / checkpoints (val_loss)")
    p.add_argument("--seed", type=_seed)
    p.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("H", "W"))
    p.add_argument("--augment", help='training data only: "rotate=20,shift=0.2,flip=h,zoom=0.2" or light/standard')
    p.add_argument("--class-weights", choices=["auto"], help="weight the loss by inverse class frequency")
    p.add_argument("--pretrained", action="store_true", default=None,
                   help="start from ImageNet weights (--model vgg16/resnet50/mobilenet_v2/resnet18/efficientnet_b0)")
    p.add_argument("--weights", help="local weights: a torchvision .pth/.safetensors state_dict, or a cnnlab model "
                                     "file or run to reuse as the backbone")
    p.add_argument("--freeze", action="store_true", default=None, help="train only the new head (frozen backbone)")
    p.add_argument("--head-init", choices=["auto", "random"],
                   help="the new head's class Dense: auto starts it from the pretrained ImageNet classifier when "
                        "every class folder names an ImageNet class (e.g. tench, golf_ball); random always")
    p.add_argument("--head", help='transfer head before the class Dense, in order: gap or flatten, dense=UNITS, '
                   'dropout=RATE (default "gap,dropout=0.2"; seed 003: "flatten,dense=256,dropout=0.5")')
    p.add_argument("--unfreeze-top", type=int, metavar="N",
                   help="then fine-tune the top N backbone blocks: vgg16 a block per convolution (seed 003's "
                        "layers[:-4] frozen is N=3), resnets a residual block, mobilenet_v2/efficientnet a stage")
    p.add_argument("--fine-tune-epochs", type=_positive_int)
    p.add_argument("--fine-tune-lr", type=float, help="learning rate of the fine-tuning phase (1e-5)")
    p.add_argument("--init-from", help="start from the weights of this run or model file")
    p.add_argument("--test-fraction", type=float, help="test share carved from an unsplit image folder (0.1)")
    p.add_argument("--workers", type=int, help="DataLoader processes for large image folders (2)")
    p.add_argument("--recipe", help="settings bundle: seed (the tutorials'), fast (CPU), speedrun (GPU), transfer "
                   "(your photos on a frozen pretrained EfficientNet-Lite0, offline), transfer-finetune (the same, "
                   "then its top 3 blocks fine-tuned on augmented photos); flags you give win")
    p.add_argument("--schedule", help="learning rate per step: constant (Keras) or onecycle")
    p.add_argument("--label-smoothing", type=float, help="share of each target spread over all classes (0)")
    p.add_argument("--widths", type=_positive_int, nargs=3, metavar=("W1", "W2", "W3"),
                   help="speedrun model: channels of its 3 blocks (64 256 256)")
    p.add_argument("--device", help="auto (first GPU, else CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", help="auto (bf16 where the hardware computes it natively), fp32, bf16, fp16")
    p.add_argument("--compile", help="torch.compile: auto (long GPU runs), on, off")
    p.add_argument("--threads", type=_threads, metavar="N|auto",
                   help="CPU threads: auto (time each count in the first steps, keep the fastest; again when "
                        "steps slow down) or a fixed N")
    p.add_argument("--feature-cache", choices=["auto", "off"],
                   help="frozen backbone: auto computes its features once per image and trains the head on them "
                        "(kept in the data folder for the next run); off runs the backbone at every step")
    p.add_argument("--feature-views", type=_positive_int, metavar="K",
                   help="with --augment while the backbone is frozen: K augmented views per image computed once "
                        "(default 1: the plain images; augmentation then applies while fine-tuning)")
    p.add_argument("--run-dir", help="directory for this run (must not exist)")
    p.add_argument("--runs-root", help="parent for automatically named runs (runs)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its checkpoint "
                                                        "(its own settings; only --epochs may grow)")
    p.add_argument("--checkpoint-every", type=_positive_int, metavar="STEPS",
                   help="also checkpoint every STEPS optimizer steps (default: at epoch ends only)")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic kernels: one --seed gives bit-identical weights")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="TensorBoard event files in the run directory (default: when tensorboard is installed)")
    p.add_argument("--nproc", type=_positive_int, metavar="N",
                   help="train on N processes (one per GPU, or CPU processes) through torchrun; "
                        "--batch-size stays the global batch")
    p.add_argument("--sync-bn", action="store_true", default=None,
                   help="with --nproc/torchrun on GPUs: BatchNorm statistics over all processes")
    p.add_argument("--no-test", dest="evaluate_test", action="store_false", default=None,
                   help="do not score the test split at the end (while tuning on --validation-split); "
                        "`cnnlab evaluate RUN` reads it once, later")
    p.add_argument("--config", help="a .toml or .json file of settings; flags override it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder with dataset files (default $CNNLAB_DATA or the user cache)")
    p.add_argument("--no-download", dest="download", action="store_false", default=None,
                   help="never download missing dataset files")
    _image_args(p)


def _server_args(p: argparse.ArgumentParser, port: int, key_use: str = "") -> None:
    """--host, --port and --api-key of the web apps (serve, explore, studio): one server stack, one set of flags."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=_positive_int, default=port)
    p.add_argument("--api-key", help=f"{key_use}needed to bind beyond loopback (prefer $CNNLAB_API_KEY: a flag "
                                     f"shows in ps)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnlab", description="Build, train, evaluate and use CNN image classifiers.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("models", help="list registered models")
    p.add_argument("--json", action="store_true")
    sub.add_parser("datasets", help="list built-in datasets")

    p = sub.add_parser("summary", help="layers, output shapes and parameter counts")
    p.add_argument("model", help="registry name, run directory or model file")
    p.add_argument("--input-shape", type=_positive_int, nargs=3, metavar=("H", "W", "C"))
    p.add_argument("--num-classes", type=_positive_int, default=10)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train a model; writes a run directory")
    _train_args(p)
    _data_args(p)

    p = sub.add_parser("fine-tune", help="continue a transfer-learning run: unfreeze top blocks, low LR")
    p.add_argument("run", help="the run directory to start from")
    p.add_argument("--unfreeze-top", type=int, required=True, metavar="N")
    p.add_argument("--epochs", type=_positive_int, default=5)
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, default=1e-5)
    p.add_argument("--run-dir", help="directory for the new run (must not exist)")
    p.add_argument("--runs-root", help="parent for the new run's automatic name (default: RUN's own parent)")
    p.add_argument("--seed", type=_seed)
    p.add_argument("--quiet", action="store_true")
    _image_args(p)

    p = sub.add_parser("check-data", help="report problems in an image folder (exit 1 if training would fail)")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    _image_args(p)

    p = sub.add_parser("augment-preview", help="an image and N augmented versions of it, as one PNG")
    p.add_argument("image")
    p.add_argument("--augment", default="standard")
    p.add_argument("-n", type=_positive_int, default=9, help="augmented versions, at most 50 (9)")
    p.add_argument("-o", "--output", default="augment_preview.png")
    p.add_argument("--seed", type=_seed, default=0)
    _image_args(p)

    p = sub.add_parser("feature-maps", help="activations of chosen layers for one image, a PNG per layer")
    p.add_argument("model", help="run directory or model file")
    p.add_argument("image")
    p.add_argument("--layers", help="comma-separated layer names as `cnnlab summary` prints them (default: all)")
    p.add_argument("-o", "--output", default="feature_maps", help="output folder (must not exist or be empty)")
    _image_args(p)

    p = sub.add_parser("filters", help="first-layer convolution kernels as an image grid")
    p.add_argument("model", help="run directory or model file")
    p.add_argument("-o", "--output", default="filters.png")

    p = sub.add_parser("gradcam", help="Grad-CAM heatmap overlay for the predicted or a chosen class")
    p.add_argument("model", help="run directory or model file")
    p.add_argument("image")
    p.add_argument("--class", dest="class_name", help="class name to explain (default: the predicted one)")
    p.add_argument("--layer", help="convolution layer to use (default: the last one)")
    p.add_argument("-o", "--output", default="gradcam.png")
    _image_args(p)

    p = sub.add_parser("conv-arithmetic", help="seed 003's manual convolution and output-size formulas, checked; "
                                               "--size N --kernel K for your own layer")
    p.add_argument("--size", type=_positive_int, metavar="N", help="your input's height (= width), e.g. 10")
    p.add_argument("--kernel", type=_positive_int, metavar="K", help="your window (kernel or pool size), e.g. 3")
    p.add_argument("--stride", type=_positive_int, default=1, help="with --size: the layer's stride (1)")
    p.add_argument("--padding", choices=["valid", "same"], default="valid", help="with --size: padding (valid)")
    p.add_argument("--layer", choices=["conv", "pool"], default="conv", help="with --size: Conv2D or MaxPooling2D")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("curves", help="training curves of one run, or several runs compared on one plot")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("-o", "--output", default="curves.png")

    p = sub.add_parser("evaluate", help="test loss and accuracy of a run or model file")
    p.add_argument("model", help="run directory or model file")
    p.add_argument("--dataset", help="dataset name or folder (default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--report", metavar="DIR", help="write the full report (HTML, confusion matrix, top losses) here")
    p.add_argument("--tta", type=int, choices=[0, 1, 2],
                   help="test-time augmentation: 0 none, 1 + mirror, 2 + mirror and shifts (default: what the model "
                        "file records, i.e. a speed-run's own level, else 0)")
    _runtime_args(p)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: as the run scored its own test split (bf16 on CPUs that compute it natively), so "
                        "the numbers match the run's; fp32 for exact comparisons")
    p.add_argument("--json", action="store_true")
    _data_args(p)

    p = sub.add_parser("predict", help="class names and probabilities for images")
    p.add_argument("model", help="run directory, model file or .onnx file")
    p.add_argument("inputs", nargs="+", help="image files or folders (a file given twice is predicted once)")
    p.add_argument("--top-k", type=_positive_int, default=3)
    _runtime_args(p)
    _image_args(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", metavar="PATH", help="also write a CSV file: path, then class_1, probability_1, ... "
                                                 "up to --top-k (- writes it to stdout instead of the listing)")

    p = sub.add_parser("export", help="ONNX file (fp32 or int8), checked against torch with onnxruntime")
    p.add_argument("model", help="run directory or model file")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--quantize", choices=["int8"], help="static int8, calibrated on the run's training images")
    p.add_argument("-o", "--output", help="the .onnx file (default RUN/model.onnx, RUN/model-int8.onnx)")
    p.add_argument("--calibration", type=_positive_int, metavar="N", help="int8: training images to calibrate on (512)")
    p.add_argument("--parity-images", type=_positive_int, metavar="N", help="test images for the parity check (256)")
    p.add_argument("--exporter", default="auto", choices=["auto", "torchscript", "dynamo"])
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--json", action="store_true")
    _data_args(p)

    p = sub.add_parser("serve", help="web page and JSON API for a model (FastAPI + uvicorn)")
    p.add_argument("model", help="run directory, model file (.safetensors/.json) or .onnx file")
    _server_args(p, 8000, "required from clients on everything but /health and the page; ")
    p.add_argument("--top-k", type=_positive_int, default=5, help="classes per image unless a request asks (5)")
    p.add_argument("--max-files", type=_positive_int, default=16, help="images per request (16)")
    _runtime_args(p)

    p = sub.add_parser("explore", help="see inside a model in the browser: layers, feature maps, convolution "
                                       "step by step, Grad-CAM")
    p.add_argument("model", help="run directory or model file (.safetensors/.json)")
    _server_args(p, 8010)

    p = sub.add_parser("studio", help="train your own image classifier in the browser: projects, classes, photos, "
                                      "training, evaluation, test, export")
    p.add_argument("--dir", default="studio-projects", help="folder of the projects (made when missing; "
                                                            "default ./studio-projects)")
    _server_args(p, 8020)
    return parser


def _cmd_train(args: argparse.Namespace) -> None:
    from cnnlab.training import distributed

    if args.nproc and "LOCAL_RANK" in os.environ:
        raise CnnlabError(f"--nproc {args.nproc} starts torchrun itself, but this process already runs under "
                          f"torchrun (LOCAL_RANK is set); drop --nproc")
    if args.nproc:  # run this very command again on N processes (without --nproc), through torchrun
        if args.batch_size:
            distributed.check_batch(args.batch_size, args.nproc)  # one line now, not one per process later
        distributed.launch(args.nproc, _without_nproc(args.argv), args.device or "auto")
        return
    from cnnlab.jobs import train_run

    with distributed.session(args.device or "auto"):
        try:
            _train_here(args, train_run, distributed.is_main())
        except KeyboardInterrupt:  # Ctrl-C of `--nproc`'s launcher, passed on by torchrun: the launcher says it
            if os.environ.get(distributed.LAUNCHER_PID_ENV) and distributed.world_size() > 1:
                raise SystemExit(EXIT_INTERRUPTED) from None
            raise


def _without_nproc(argv: list[str]) -> list[str]:
    """`argv` less its --nproc N / --nproc=N."""
    kept, skip = [], False
    for arg in argv:
        if not skip and not arg.startswith("--nproc="):
            skip = arg == "--nproc"
            kept += [] if skip else [arg]
        else:
            skip = False
    return kept


def _train_here(args: argparse.Namespace, train_run: Any, main: bool) -> None:
    """Train in this process (one rank of a distributed run, or the whole run); rank 0 prints."""
    show = _print_result if main else (lambda result: None)
    say = print if main else None  # the runtime chosen, as training starts
    if args.resume:
        config = resume_settings(args)
        show(train_run(config, verbose=0 if args.quiet else 1, resume=True, print_fn=say, started=args.started))
        return
    config = train_config(args)
    if main and config.learning_rate == scratch_rate(config) and args.learning_rate is None:
        print(f"learning rate {config.learning_rate:g}: {config.model}'s rate from scratch (Keras's 1e-3 barely "
              f"trains it); --lr sets another")
    show(train_run(config, verbose=0 if args.quiet else 1, print_fn=say, started=args.started))


def _print_result(result: Any) -> None:
    shown = -1 if result.restored_epoch is None else result.restored_epoch
    last = {k: v[shown] for k, v in result.history.items()}
    from cnnlab.rundir import read_json

    config = read_json(result.run_dir / "config.json")
    print(f"run directory: {result.run_dir}")
    for phase in config["phases"]:
        rate = (f"{phase['learning_rate']:g}x the speedrun rates" if config.get("recipe") == "speedrun"
                else f"lr {phase['learning_rate']:g}")
        print(f"phase {phase['name']}: {phase['epochs']} epochs at {rate}, "
              f"trainable params {phase['trainable']:,}, non-trainable {phase['non_trainable']:,}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} undecodable image(s); listed in {result.run_dir / 'skipped_files.txt'}")
    if result.restored_epoch is not None:
        print(f"stopped at epoch {len(result.history['loss'])}, restored epoch {result.restored_epoch + 1} "
              f"(EarlyStopping's best): the numbers below and the saved model are that epoch's")
    print(f"epochs: {len(result.history['loss'])}  train time: {result.seconds:.1f} s  "
          f"loss: {last['loss']:.4f}  accuracy: {last['accuracy']:.4f}"
          + (f"  val_accuracy: {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""))
    if result.test is not None:
        print(f"test loss: {result.test['loss']:.4f}  test accuracy: {result.test['accuracy']:.4f}")


def _cmd_fine_tune(args: argparse.Namespace) -> None:
    from cnnlab.jobs import train_run

    config_path = Path(args.run) / "config.json"  # there: cli_checks saw it
    from cnnlab.rundir import read_json

    previous = read_json(config_path, fix=f"give a run directory that `cnnlab train` wrote, or restore {config_path}")
    keep = {f.name: previous[f.name] for f in fields(TrainConfig) if f.name in previous}
    # the new run sits beside the one it continues (not under ./runs of wherever the command runs)
    root = args.runs_root or str(Path(args.run).resolve().parent)
    config = TrainConfig(**{**keep, "init_from": args.run, "unfreeze_top": args.unfreeze_top, "epochs": args.epochs,
                            "learning_rate": args.learning_rate, "run_dir": args.run_dir, "seed": args.seed,
                            "runs_root": root, "pretrained": False, "weights": None, "freeze": False})
    _print_result(train_run(config, verbose=0 if args.quiet else 1, print_fn=print, started=args.started))


def _cmd_check_data(args: argparse.Namespace) -> int:
    from cnnlab.data import check_dataset

    report = check_dataset(args.path)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1


def _cmd_datasets(args: argparse.Namespace) -> None:
    print("\n".join(DATASET_NAMES))


COMMANDS = {"train": _cmd_train, "fine-tune": _cmd_fine_tune, "check-data": _cmd_check_data,
            "datasets": _cmd_datasets, **MODEL_COMMANDS}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process; return the exit status.

    >>> main(["summary", "seed-mnist"])  # doctest: +ELLIPSIS
    Layer (type)...
    0
    """
    started = process_started() if argv is None else time.perf_counter()  # the command's, or this call's start
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as "\udcff", never crash
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # `train --nproc N` runs the same command again through torchrun
        args.started = started  # a run's metrics.json counts its seconds_to_first_step from here
        check_arguments(args)  # user errors first, without torch (cli_checks)
        if args.command not in TORCH_FREE | TORCH_WHEN_NEEDED:
            with _interrupts_held():
                importlib.import_module("torch")  # most of the start-up (2-3 s); see _interrupts_held
        with _decode_budget(args):
            status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader that left (`cnnlab models | head -1`) shows here, not at exit
    except CnnlabError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        if getattr(exc, "resume_command", None):  # training saved a checkpoint first
            print(f"resume with: {exc.resume_command}", file=sys.stderr)  # type: ignore[attr-defined]
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # quiet, as Unix tools are when the reader of their output has had enough
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    return int(status or 0)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C until the block ends, then raise it. Interrupted half-way through its import, torch
    sometimes swallowed the signal (the command ran on) or exited 1 with a stray "Error: maximum recursion
    depth exceeded" (2 of 30 tries); held, a Ctrl-C is always the quiet exit 130, at most 3 s later."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit does not hit the closed pipe again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # not a file (an in-process caller captures it)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
