"""The `cnnlab` commands that list, summarize, look at, evaluate and ship models (cli.py parses and dispatches).

Each takes the parsed arguments and prints; the work is done by library functions that return data.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from cnnlab.catalog import MODEL_RECORDS
from cnnlab.errors import CnnlabError
from cnnlab.outputs import output_path, writing_to

__all__ = ["COMMANDS"]


def _cmd_models(args: argparse.Namespace) -> None:
    records = [MODEL_RECORDS.get(n) for n in MODEL_RECORDS]  # the registry's records (cnnlab.catalog): no torch
    if args.json:
        print(json.dumps([{"name": r.name, "input_shape": r.default_input_shape, "params": r.params,
                           "source": r.source, "description": r.description} for r in records], indent=2))
        return
    width = max(len(r.name) for r in records)
    print(f"{'model':<{width}}  {'input':<11}  {'params':>11}  description")
    for r in records:
        print(f"{r.name:<{width}}  {'x'.join(map(str, r.default_input_shape)):<11}  {r.params:>11,}  {r.description}")
    print("(params: at the input shown, for 10 classes; `cnnlab summary NAME --input-shape H W C --num-classes N` "
          "counts others)")


# `cnnlab summary NAME` builds a registry model with real weights at its default shape and 10 classes when
# its record says it is small: built so, the small models take 0.05 s on 2 cores. Others, and any other
# shape or class count, go on the meta device (shapes and counts without memory: seed-mnist at 4000x4000
# has a 16 GB Dense), whose first use imports torch._dynamo (1.0-1.3 s). Not beyond 64x64 inputs: models
# other than Sequential ones run one image through at build time, which took 3-4 s at 224x224 (MobileNetV2,
# EfficientNet-Lite0); measured 2026-12-07 on a shared 2-core machine.
SUMMARY_BUILD_PARAMS = 5_000_000   # 20 MB of float32 weights
SUMMARY_BUILD_PIXELS = 64 * 64     # H x W of the default input


def _cmd_summary(args: argparse.Namespace) -> None:
    import torch

    from cnnlab.models import build_model, load_model, model_summary

    if Path(args.model).exists():  # (--input-shape was bounded by cli_checks)
        model, card = load_model(args.model)
        shape = args.input_shape or card.input_shape
        summary = model_summary(model, shape)
    else:
        record = MODEL_RECORDS.get(args.model)
        h, w, _ = record.default_input_shape
        small = args.input_shape in (None, record.default_input_shape) and args.num_classes == 10 \
            and record.params <= SUMMARY_BUILD_PARAMS and h * w <= SUMMARY_BUILD_PIXELS
        with contextlib.nullcontext() if small else torch.device("meta"):
            model = build_model(args.model, args.input_shape, args.num_classes)
            shape = args.input_shape or getattr(model, "image_shape", None) or (224, 224, 3)
            summary = model_summary(model, shape)
    if args.json:
        print(json.dumps({"rows": [vars(r) for r in summary.rows], "total": summary.total,
                          "trainable": summary.trainable, "non_trainable": summary.non_trainable}, indent=2))
    else:
        print(summary)


def _cmd_augment_preview(args: argparse.Namespace) -> None:
    from cnnlab.data import Augmenter, parse_augment
    from cnnlab.data.images import probe_image, read_image
    from cnnlab.viz.grids import augment_preview, preview_size

    out = output_path(args.output, "-o")
    spec = parse_augment(args.augment)
    _, (height, width) = probe_image(args.image)
    image = read_image(args.image, channels=3, size=preview_size(height, width))  # display size, not full size
    with writing_to(out, "-o"):
        path = augment_preview(image, Augmenter(spec), args.n, out, seed=args.seed)
    print(f"wrote {path}")


def _model_and_image(source: str, image_path: str) -> tuple[Any, Any, Any]:
    from cnnlab.data import float_images, read_image
    from cnnlab.models import load_model

    model, card = load_model(source)
    h, w, c = card.input_shape
    image = read_image(image_path, channels=c, size=(h, w))  # (C, H, W) uint8
    return model, card, float_images(image[None])[0]


def _cmd_feature_maps(args: argparse.Namespace) -> None:
    from cnnlab.interpret import feature_maps
    from cnnlab.viz import plot_feature_maps

    out = output_path(args.output, "-o", folder=True)
    if out.exists() and any(out.iterdir()):
        raise CnnlabError(f"output folder {out} already exists and is not empty; choose another -o")
    model, _, image = _model_and_image(args.model, args.image)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    maps = feature_maps(model, image, layers)
    with writing_to(out, "-o"):
        out.mkdir(exist_ok=True)  # the one folder asked for; output_path saw its parent exist
        for name, activation in maps.items():
            c, h, w = activation.shape
            path = plot_feature_maps(activation, out / f"{name.replace('.', '_')}.png", title=f"{name}: {h}x{w}x{c}")
            print(f"{name}: {h}x{w}x{c} -> {path}")


def _cmd_filters(args: argparse.Namespace) -> None:
    from cnnlab.interpret import first_layer_filters
    from cnnlab.models import load_model
    from cnnlab.viz import plot_filters

    out = output_path(args.output, "-o")
    filters = first_layer_filters(load_model(args.model)[0])
    with writing_to(out, "-o"):
        plot_filters(filters, out)
    print(f"{tuple(filters.shape)} kernels -> {out}")


def _cmd_gradcam(args: argparse.Namespace) -> None:
    from cnnlab.errors import did_you_mean
    from cnnlab.interpret import grad_cam
    from cnnlab.viz import plot_grad_cam

    out = output_path(args.output, "-o")
    model, card, image = _model_and_image(args.model, args.image)
    index = None
    if args.class_name is not None:
        if args.class_name not in card.class_names:
            hint = did_you_mean(args.class_name, card.class_names)
            raise CnnlabError(f"--class {args.class_name!r} is not one of the model's classes.{hint} "
                              f"Classes: {', '.join(card.class_names)}")
        index = card.class_names.index(args.class_name)
    cam = grad_cam(model, image, index, args.layer)
    name = card.class_names[cam.class_index]
    with writing_to(out, "-o"):
        path = plot_grad_cam(image, cam.heatmap, out, title=f"{name} (p={cam.probability:.2f}), layer {cam.layer}")
    print(f"class {name} (p={cam.probability:.3f}), layer {cam.layer} -> {path}")


def _cmd_conv_arithmetic(args: argparse.Namespace) -> None:
    from cnnlab.conv_arithmetic import conv_arithmetic_report, size_case

    if args.size is not None:  # with --kernel: cli_checks refused one without the other
        case = size_case(args.layer, args.size, args.kernel, args.stride, args.padding)
        if args.json:
            print(json.dumps(case, indent=2))
            return
        layer = {"conv": "Conv2D", "pool": "MaxPooling2D"}[args.layer]
        print(f"{layer} on a {args.size}x{args.size} input, {args.kernel}x{args.kernel} window, stride {args.stride}, "
              f"padding '{args.padding}' -> {case['formula']}x{case['formula']} output")
        print(f"  {case['worked']} (measured on cnnlab's {layer}: {case['measured']}"
              f"{'' if case['matches'] else ', MISMATCH'})")
        return
    report = conv_arithmetic_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    rows = lambda m: "\n".join("  " + " ".join(f"{v:>3}" for v in row) for row in m)  # noqa: E731
    print(f"seed 003's 5x5 image:\n{rows(report['image'])}\nvertical-edge filter:\n{rows(report['filter'])}")
    print(f"convolution at (0,0): {report['at_0_0']}\nfull 3x3 map ('valid'):\n{rows(report['feature_map'])}")
    print(f"equals torch.nn.functional.conv2d: {report['matches_torch']}")
    print("output sizes: valid = floor((size - window) / stride) + 1, same = ceil(size / stride)")
    for r in report["sizes"]:
        print(f"  {r['layer']:<5} size {r['size']:>3} window {r['window']} stride {r['stride']} {r['padding']:<5} "
              f"-> {r['formula']:>3} (measured {r['measured']}{'' if r['matches'] else ', MISMATCH'})")


def _cmd_curves(args: argparse.Namespace) -> None:
    from cnnlab.rundir import read_json
    from cnnlab.viz.curves import plot_history, plot_runs

    histories = {}  # (cli_checks saw -o's folder and each run's history.json; -o is checked again before writing)
    for run in args.runs:
        path = Path(run) / "history.json"
        name = Path(run).name
        recorded = read_json(path, fix="restore it, or leave that run out")
        if not isinstance(recorded.get("history"), dict):
            raise CnnlabError(f"{path} holds no \"history\" object; restore it, or leave that run out")
        histories[name if name not in histories else run] = recorded["history"]
    target = output_path(args.output, "-o")
    with writing_to(target, "-o"):
        if len(histories) == 1:
            out = plot_history(next(iter(histories.values())), target, title=Path(args.runs[0]).name)
        else:
            out = plot_runs(histories, target)
    print(f"wrote {out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from cnnlab.evaluate_jobs import evaluate_model, report_model, tta_level
    from cnnlab.models.files import read_card, resolve_model_path

    report = output_path(args.report, "--report", folder=True) if args.report else None
    level = tta_level(read_card(resolve_model_path(args.model)), args.tta)
    views = f", test-time augmentation level {level}" if level else ""
    if report is not None:
        with writing_to(report, "--report"):
            result, files, dataset, ran = report_model(args.model, report, args.dataset, args.split,
                                                       args.data_dir, args.download is not False, args.batch_size,
                                                       level, args.runtime, args.precision)
        _say_notes(ran["notes"])
        if args.json:
            print(json.dumps({"dataset": dataset, "split": args.split, "tta": level, "inference": ran,
                              **result.to_dict(), "files": {k: str(v) for k, v in files.items()}}))
            return
        print(f"{dataset} ({args.split}, {len(result.labels)} images{views}, {ran['runtime']}): "
              f"loss {result.loss:.4f}  accuracy {result.accuracy:.4f}")
        print(result.report.to_text())
        print("most confused (actual -> predicted: count): " + ", ".join(
            f"{a} -> {p}: {n}" for a, p, n in result.most_confused[:3]))
        print(f"report: {files['report']}")
        return

    metrics, _, dataset, n, ran = evaluate_model(args.model, args.dataset, args.split, args.data_dir,
                                                 args.download is not False, args.batch_size, level, args.runtime,
                                                 args.precision)
    _say_notes(ran["notes"])
    if args.json:
        print(json.dumps({"dataset": dataset, "split": args.split, "n": n, "tta": level, **metrics,
                          "inference": ran}))
    else:
        print(f"{dataset} ({args.split}, {n} images{views}, {ran['runtime']}, {ran['precision']}): "
              f"loss {metrics['loss']:.4f}  accuracy {metrics['accuracy']:.4f}")


def _say_notes(notes: list[str]) -> None:
    """Lines about the runtime worth telling (a twin that failed its check just now), on stderr."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def _server_key(args: argparse.Namespace) -> str | None:
    """The API key of serve, explore and studio (--api-key, else $CNNLAB_API_KEY), checked against --host."""
    import os

    from cnnlab.serve import API_KEY_ENV, check_bind, is_loopback

    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    check_bind(args.host, api_key)
    if args.api_key is not None and not is_loopback(args.host):
        print(f"warning: --api-key is visible to every user of this machine (ps, /proc); set ${API_KEY_ENV} "
              f"instead", file=sys.stderr)
    return api_key


def _cmd_serve(args: argparse.Namespace) -> None:
    from cnnlab.serve import run_server

    api_key = _server_key(args)
    run_server(args.model, args.host, args.port, api_key, top_k=args.top_k, max_files=args.max_files,
               runtime=args.runtime,
               ready=lambda url: print(f"serving {args.model} on {url} (Ctrl+C stops)", flush=True))


def _cmd_explore(args: argparse.Namespace) -> None:
    from cnnlab.explore.app import run_explorer

    api_key = _server_key(args)
    run_explorer(args.model, args.host, args.port, api_key,
                 ready=lambda url: print(f"exploring {args.model} on {url} (Ctrl+C stops)", flush=True))


def _cmd_studio(args: argparse.Namespace) -> None:
    from cnnlab.studio.app import run_studio

    api_key = _server_key(args)
    run_studio(args.dir, args.host, args.port, api_key,
               ready=lambda url: print(f"cnnlab studio: projects in {args.dir}, open {url} (Ctrl+C stops)",
                                       flush=True))


def _cmd_predict(args: argparse.Namespace) -> None:
    from cnnlab.inference import fast_inference, load_inference
    from cnnlab.predict import predict_images, predictions_csv

    if args.csv == "-" and args.json:
        raise CnnlabError("--csv - and --json both write to stdout; give --csv a file path, or drop one of them")
    table = output_path(args.csv, "--csv") if args.csv not in (None, "-") else None
    inference = fast_inference(args.model, args.runtime)  # a cached ONNX twin or a .onnx file: no torch at all
    if inference is None:
        _import_torch()
        inference = load_inference(args.model, args.runtime)
    found = predict_images(inference, args.inputs, args.top_k)
    _say_notes(found.notes)
    predictions = found.predictions
    if args.csv == "-":
        sys.stdout.write(predictions_csv(predictions))
        return
    if table is not None:
        with writing_to(table, "--csv"):  # file names byte for byte, as the file system spells them
            table.write_text(predictions_csv(predictions), encoding="utf-8", errors="surrogateescape")
    if args.json:
        print(json.dumps([{"path": p.path, "top": [{"class": c, "probability": v} for c, v in p.top],
                           "runtime": found.runtime} for p in predictions], indent=2))
        return
    for p in predictions:
        print(f"{p.path}: " + ", ".join(f"{c} {v:.3f}" for c, v in p.top))


def _import_torch() -> None:
    """Import torch as cli.main does for other commands: a Ctrl-C during its 3 s import is the quiet exit 130."""
    import importlib

    from cnnlab.cli import _interrupts_held  # cli imports this module, so only here, when it runs

    with _interrupts_held():
        importlib.import_module("torch")


def _cmd_export(args: argparse.Namespace) -> None:
    from cnnlab.export import default_output, export_onnx

    target = output_path(args.output or default_output(args.model, args.quantize), "-o")
    with writing_to(target, "-o"):
        r = export_onnx(args.model, target, quantize=args.quantize, calibration=args.calibration,
                        parity_images=args.parity_images, exporter=args.exporter, data_dir=args.data_dir,
                        force=args.force)
    if args.json:
        print(json.dumps({**vars(r), "path": str(r.path)}, indent=2))
        return
    print(f"wrote {r.path} ({r.size_bytes / 1e6:.2f} MB, {r.quantization or 'fp32'}, exporter {r.exporter})")
    print(f"parity on {r.n_parity_images} {r.parity_source}: max |torch - onnxruntime| {r.max_abs_diff:.2e}"
          + (f" (fp32 graph {r.fp32_max_abs_diff:.2e})" if r.fp32_max_abs_diff is not None else "")
          + (f", top-1 agreement {r.top1_agreement:.2%}" if r.quantization is None else ""))
    if r.quantization == "int8":
        print(f"int8: calibrated on {r.n_calibration_images} training images; top-1 agreement with fp32 "
              f"{r.top1_agreement:.2%} of {r.n_test_images} images; size {(r.fp32_size_bytes or 0) / 1e6:.2f} -> "
              f"{r.size_bytes / 1e6:.2f} MB")
        if r.accuracy:
            print(f"test accuracy: fp32 {r.accuracy['fp32']:.4f}  int8 {r.accuracy['int8']:.4f}  "
                  f"change {100 * (r.accuracy['int8'] - r.accuracy['fp32']):+.2f} points")
        print("CPU latency (onnxruntime, 1 thread, batch 1): " + ", ".join(
            f"{k.split('_')[0]} {v:.3f} ms" for k, v in r.latency_ms.items()))
    for note in r.notes:
        print(f"note: {note}")


COMMANDS = {"models": _cmd_models, "summary": _cmd_summary,
            "augment-preview": _cmd_augment_preview, "curves": _cmd_curves, "feature-maps": _cmd_feature_maps,
            "filters": _cmd_filters, "gradcam": _cmd_gradcam, "conv-arithmetic": _cmd_conv_arithmetic,
            "evaluate": _cmd_evaluate, "predict": _cmd_predict, "serve": _cmd_serve, "export": _cmd_export,
            "explore": _cmd_explore, "studio": _cmd_studio}
