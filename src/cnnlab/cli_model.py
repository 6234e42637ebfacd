"""The `cnnlab` commands that look at, evaluate and ship a trained model (cli.py parses and dispatches).

Each takes the parsed arguments and prints; the work is done by library functions that return data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError

__all__ = ["COMMANDS"]


def _cmd_augment_preview(args: argparse.Namespace) -> None:
    from cnnlab.data import Augmenter, parse_augment, read_image
    from cnnlab.viz import augment_preview

    spec = parse_augment(args.augment)
    image = read_image(args.image, channels=3)
    path = augment_preview(image, Augmenter(spec), args.n, args.output, seed=args.seed)
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

    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CnnlabError(f"output folder {out} already exists and is not empty; choose another -o")
    model, _, image = _model_and_image(args.model, args.image)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    maps = feature_maps(model, image, layers)
    out.mkdir(parents=True, exist_ok=True)
    for name, activation in maps.items():
        c, h, w = activation.shape
        path = plot_feature_maps(activation, out / f"{name.replace('.', '_')}.png", title=f"{name}: {h}x{w}x{c}")
        print(f"{name}: {h}x{w}x{c} -> {path}")


def _cmd_filters(args: argparse.Namespace) -> None:
    from cnnlab.interpret import first_layer_filters
    from cnnlab.models import load_model
    from cnnlab.viz import plot_filters

    filters = first_layer_filters(load_model(args.model)[0])
    print(f"{tuple(filters.shape)} kernels -> {plot_filters(filters, args.output)}")


def _cmd_gradcam(args: argparse.Namespace) -> None:
    from cnnlab.errors import did_you_mean
    from cnnlab.interpret import grad_cam
    from cnnlab.viz import plot_grad_cam

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
    path = plot_grad_cam(image, cam.heatmap, args.output, title=f"{name} (p={cam.probability:.2f}), layer {cam.layer}")
    print(f"class {name} (p={cam.probability:.3f}), layer {cam.layer} -> {path}")


def _cmd_conv_arithmetic(args: argparse.Namespace) -> None:
    from cnnlab.conv_arithmetic import conv_arithmetic_report

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
    from cnnlab.viz.curves import plot_history, plot_runs

    histories = {}
    for run in args.runs:
        path = Path(run) / "history.json"
        if not path.is_file():
            raise CnnlabError(f"{run} is not a run directory with a history.json (runs write one when they finish)")
        name = Path(run).name
        histories[name if name not in histories else run] = json.loads(path.read_text())["history"]
    if len(histories) == 1:
        out = plot_history(next(iter(histories.values())), args.output, title=Path(args.runs[0]).name)
    else:
        out = plot_runs(histories, args.output)
    print(f"wrote {out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from cnnlab.jobs import evaluate_model, report_model, tta_level
    from cnnlab.models.files import read_card, resolve_model_path

    level = tta_level(read_card(resolve_model_path(args.model)), args.tta)
    views = f", test-time augmentation level {level}" if level else ""
    if args.report:
        result, files, dataset = report_model(args.model, args.report, args.dataset, args.split, args.data_dir,
                                              args.download is not False, args.batch_size, level)
        if args.json:
            print(json.dumps({"dataset": dataset, "split": args.split, "tta": level, **result.to_dict(),
                              "files": {k: str(v) for k, v in files.items()}}))
            return
        print(f"{dataset} ({args.split}, {len(result.labels)} images{views}): loss {result.loss:.4f}  "
              f"accuracy {result.accuracy:.4f}")
        print(result.report.to_text())
        print("most confused (actual -> predicted: count): " + ", ".join(
            f"{a} -> {p}: {n}" for a, p, n in result.most_confused[:3]))
        print(f"report: {files['report']}")
        return

    metrics, _, dataset, n = evaluate_model(args.model, args.dataset, args.split, args.data_dir,
                                            args.download is not False, args.batch_size, level)
    if args.json:
        print(json.dumps({"dataset": dataset, "split": args.split, "n": n, "tta": level, **metrics}))
    else:
        print(f"{dataset} ({args.split}, {n} images{views}): loss {metrics['loss']:.4f}  "
              f"accuracy {metrics['accuracy']:.4f}")


def _cmd_serve(args: argparse.Namespace) -> None:
    import os

    from cnnlab.serve import API_KEY_ENV, check_bind, run_server

    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    check_bind(args.host, api_key)
    print(f"serving {args.model} on http://{args.host}:{args.port}/ (Ctrl+C stops)", flush=True)
    run_server(args.model, args.host, args.port, api_key, top_k=args.top_k, max_files=args.max_files)


def _cmd_predict(args: argparse.Namespace) -> None:
    from cnnlab.predict import predict_files

    predictions = predict_files(args.model, args.inputs, args.top_k)
    if args.json:
        print(json.dumps([{"path": p.path, "top": [{"class": c, "probability": v} for c, v in p.top]}
                          for p in predictions], indent=2))
        return
    for p in predictions:
        print(f"{p.path}: " + ", ".join(f"{c} {v:.3f}" for c, v in p.top))


def _cmd_export(args: argparse.Namespace) -> None:
    from cnnlab.export import export_onnx

    r = export_onnx(args.model, args.output, quantize=args.quantize, calibration=args.calibration,
                    parity_images=args.parity_images, exporter=args.exporter, data_dir=args.data_dir, force=args.force)
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


COMMANDS = {"augment-preview": _cmd_augment_preview, "curves": _cmd_curves, "feature-maps": _cmd_feature_maps,
            "filters": _cmd_filters, "gradcam": _cmd_gradcam, "conv-arithmetic": _cmd_conv_arithmetic,
            "evaluate": _cmd_evaluate, "predict": _cmd_predict, "serve": _cmd_serve, "export": _cmd_export}
