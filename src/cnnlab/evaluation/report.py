"""The evaluation report: metrics from predicted probabilities, written as JSON, text, PNGs and one HTML page.

`evaluate_predictions` is pure computation on tensors. `write_report` turns its result into files;
report.html is self-contained (every picture is a base64 data URI) so it can be mailed or archived
alone, and each off-diagonal cell of its confusion table links to the images misclassified there.
A cell with more images than the page shows gets its own page, cells/cell-I-J.html, with all of
them (up to CELL_PAGE_IMAGES), and misclassified.csv lists every misclassified sample.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.evaluation.metrics import (
    ClassificationReport,
    classification_report,
    confusion_matrix,
    most_confused,
    sample_losses,
    top_k_accuracy,
    top_losses,
)

__all__ = ["EvaluationResult", "evaluate_predictions", "write_report", "TOP_K", "THUMBNAILS_PER_CELL",
           "CELL_PAGE_IMAGES"]

TOP_K = (1, 3, 5)  # the usual top-k columns; a k is reported only when k < number of classes (else it is 1.0)
MOST_CONFUSED = 10  # pairs kept in the result: enough to read, small enough for metrics.json with many classes
THUMBNAILS_PER_CELL = 24  # misclassified images shown per confusion cell on report.html; "+N more" links the rest
CELL_PAGE_IMAGES = 1000  # images on one cell's own page: ~30 MB of 128-pixel thumbnails at most; the CSV lists all
THUMBNAIL_PIXELS = 64  # displayed width of a thumbnail; a 28x28 digit scaled up with visible pixels
THUMBNAIL_STORED = 128  # longest side an embedded thumbnail keeps: sharp at 2x zoom, and 224-px photos stay small
LABEL_CHARACTERS = 13  # of a class name in a top-loss title: two 10-point lines fit a 2-inch cell


@dataclass(frozen=True)
class EvaluationResult:
    """Everything an evaluation found: per-sample arrays (N,) or (N, K) and the metrics derived from them."""

    class_names: list[str]
    labels: torch.Tensor  # (N,) int64 true classes
    predictions: torch.Tensor  # (N,) int64 argmax of probabilities
    probabilities: torch.Tensor  # (N, K) float64
    losses: torch.Tensor  # (N,) float64 cross-entropy per sample
    loss: float
    accuracy: float
    top_k: dict[int, float]
    confusion: torch.Tensor  # (K, K) int64, rows actual, columns predicted
    report: ClassificationReport
    most_confused: list[tuple[str, str, int]]

    def to_dict(self) -> dict[str, object]:
        """A JSON-able summary (no per-sample arrays); json.loads(json.dumps(d)) == d.

        >>> r = evaluate_predictions(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 0]), ["a", "b"])
        >>> d = r.to_dict(); d["accuracy"], d["confusion"]
        (0.5, [[1, 1], [0, 0]])
        """
        return {
            "num_samples": len(self.labels),
            "class_names": list(self.class_names),
            "loss": self.loss,
            "accuracy": self.accuracy,
            "top_k_accuracy": {str(k): v for k, v in self.top_k.items()},
            "confusion": self.confusion.tolist(),
            "classification_report": self.report.to_dict(),
            "most_confused": [[actual, predicted, count] for actual, predicted, count in self.most_confused],
        }


def evaluate_predictions(probabilities: torch.Tensor, labels: torch.Tensor,
                         class_names: Sequence[str]) -> EvaluationResult:
    """Compute loss, accuracy, top-k, confusion, per-class report and most-confused pairs.

    >>> p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1]])
    >>> r = evaluate_predictions(p, torch.tensor([0, 1, 1]), ["cat", "dog", "fox"])
    >>> round(r.accuracy, 4), r.top_k, r.most_confused
    (0.6667, {1: 0.6666666666666666}, [('dog', 'cat', 1)])
    """
    names = [str(name) for name in class_names]
    if isinstance(probabilities, torch.Tensor) and probabilities.ndim == 2 and probabilities.shape[1] != len(names):
        raise CnnlabError(f"evaluate_predictions: probabilities have {probabilities.shape[1]} columns but "
                          f"{len(names)} class names were given; pass one name per class")
    losses = sample_losses(probabilities, labels)  # validates shapes and label range
    if len(losses) == 0:
        raise CnnlabError("evaluate_predictions: no samples; pass at least one labelled prediction")
    labels = torch.as_tensor(labels).to(torch.int64).cpu()
    probabilities = probabilities.detach().cpu().double()
    predictions = probabilities.argmax(dim=1)
    report = classification_report(labels, predictions, names)
    confusion = confusion_matrix(labels, predictions, len(names))
    return EvaluationResult(
        class_names=names, labels=labels, predictions=predictions, probabilities=probabilities,
        losses=losses, loss=float(losses.mean()), accuracy=report.accuracy,
        top_k={k: top_k_accuracy(probabilities, labels, k) for k in TOP_K if k < len(names)},
        confusion=confusion, report=report,
        most_confused=most_confused(confusion, names, n=MOST_CONFUSED),
    )


def write_report(result: EvaluationResult, images: torch.Tensor, directory: str | Path, top_n: int = 16,
                 title: str = "") -> dict[str, Path]:
    """Write metrics.json, classification_report.txt, confusion PNGs, top_losses.png and report.html.

    `images` are the uint8 (N, C, H, W) images the result was computed on, in the same order.
    `directory` is created; an existing non-empty directory is refused, never overwritten.
    Returns {file stem: path} (cell pages, when any cell has more than THUMBNAILS_PER_CELL images,
    are in the folder "cells").

    >>> import tempfile
    >>> p = torch.softmax(torch.randn(12, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    >>> r = evaluate_predictions(p, torch.arange(12) % 3, ["a", "b", "c"])
    >>> images = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8)
    >>> sorted(write_report(r, images, Path(tempfile.mkdtemp()) / "eval"))  # doctest: +NORMALIZE_WHITESPACE
    ['classification_report', 'confusion_matrix', 'confusion_matrix_normalized', 'metrics', 'misclassified',
     'report', 'top_losses']
    """
    # viz imports matplotlib; importing it here keeps `import cnnlab.evaluation` light for metrics-only callers
    from cnnlab.viz import image_to_data_uri, plot_confusion_matrix, plot_image_grid, png_to_data_uri

    _check_images(images, len(result.labels))
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise CnnlabError(f"write_report: top_n must be a positive integer, got {top_n!r}; e.g. top_n=16")
    directory = _fresh_directory(directory)
    paths = {name: directory / f"{name}{suffix}" for name, suffix in (
        ("metrics", ".json"), ("classification_report", ".txt"), ("confusion_matrix", ".png"),
        ("confusion_matrix_normalized", ".png"), ("top_losses", ".png"), ("misclassified", ".csv"),
        ("report", ".html"))}
    paths["metrics"].write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    paths["classification_report"].write_text(result.report.to_text(digits=4))
    plot_confusion_matrix(result.confusion, result.class_names, paths["confusion_matrix"], title=title)
    plot_confusion_matrix(result.confusion, result.class_names, paths["confusion_matrix_normalized"],
                          normalize=True, title=title)
    indices, _ = top_losses(result.probabilities, result.labels, top_n)
    plot_image_grid(images[indices], [_loss_title(result, int(i)) for i in indices], paths["top_losses"], columns=4)
    pictures = {name: png_to_data_uri(paths[name]) for name in ("confusion_matrix", "top_losses")}
    _write_misclassified(result, paths["misclassified"])

    def to_uri(image: torch.Tensor) -> str:
        return image_to_data_uri(_thumbnail(image))
    pages = _write_cell_pages(result, images, directory, title, to_uri)
    paths["report"].write_text(_render_html(result, images, pictures, title, to_uri, pages), encoding="utf-8")
    return paths


def _check_images(images: torch.Tensor, count: int) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.dtype != torch.uint8 \
            or len(images) != count or images.shape[1] not in (1, 3, 4):
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise CnnlabError(f"write_report: images must be the {count} evaluated images as uint8 (N, C, H, W) with "
                          f"C = 1, 3 or 4, got {got}; pass the dataset's images in the order of the labels")


def _fresh_directory(directory: str | Path) -> Path:
    """Create `directory`, or accept it if it is empty; refuse anything that would overwrite files."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CnnlabError(f"write_report: {directory} is a file, expected a directory; choose a new directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise CnnlabError(f"write_report: {directory} already exists and is not empty; "
                          f"choose a new directory (reports are never overwritten)")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _loss_title(result: EvaluationResult, index: int) -> str:
    """'predicted NAME p' over 'actual NAME p' for the top-losses grid: how sure the model was, and of what.

    (p(actual) alone reads 0.00 on every top loss: the confidence in the wrong answer says more.)
    Names are cut to LABEL_CHARACTERS so neighbouring titles never overlap.
    """
    names = result.class_names
    actual, predicted = int(result.labels[index]), int(result.predictions[index])
    p_pred, p_actual = float(result.probabilities[index, predicted]), float(result.probabilities[index, actual])
    return f"predicted {_short(names[predicted])} {p_pred:.2f}\nactual {_short(names[actual])} {p_actual:.2f}"


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARACTERS else name[:LABEL_CHARACTERS - 1] + "…"


def _thumbnail(image: torch.Tensor) -> torch.Tensor:
    """A uint8 (C, H, W) image with its longest side at most THUMBNAIL_STORED (area-averaged)."""
    height, width = image.shape[1:]
    scale = THUMBNAIL_STORED / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = F.interpolate(image[None].float(), size=size, mode="area")[0]
    return small.round().clamp(0, 255).to(torch.uint8)


def _write_misclassified(result: EvaluationResult, path: Path) -> None:
    """Every misclassified sample, highest loss first: index (in the evaluated order), classes, p, loss."""
    wrong = torch.nonzero(result.labels != result.predictions)[:, 0]
    wrong = wrong[torch.sort(result.losses[wrong], descending=True, stable=True).indices]
    names = result.class_names
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "actual", "predicted", "p_predicted", "p_actual", "loss"])
        for k in wrong.tolist():
            actual, predicted = int(result.labels[k]), int(result.predictions[k])
            writer.writerow([k, names[actual], names[predicted], f"{float(result.probabilities[k, predicted]):.4f}",
                             f"{float(result.probabilities[k, actual]):.4f}", f"{float(result.losses[k]):.4f}"])


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f4f4f4; }
td.diag { font-weight: bold; }
figure { display: inline-block; margin: 4px; text-align: center; font-size: 11px; }
img.thumb { width: THUMBpx; image-rendering: pixelated; }
section.cell { border-top: 1px solid #ddd; margin-top: 1em; }
""".replace("THUMB", str(THUMBNAIL_PIXELS))


def _render_html(result: EvaluationResult, images: torch.Tensor, pictures: dict[str, str], title: str,
                 to_uri: Callable[[torch.Tensor], str], pages: dict[str, str]) -> str:
    """The whole report page: summary, per-class table, confusion table, pairs, top losses, cell sections."""
    heading = html.escape(title or "Evaluation report")
    top_k = "".join(f"<tr><th>top-{k} accuracy</th><td>{v:.4f}</td></tr>" for k, v in result.top_k.items())
    parts = [
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{heading}</title>",
        f"<style>{STYLE}</style></head><body>\n<h1>{heading}</h1>",
        f"<table><tr><th>samples</th><td>{len(result.labels)}</td></tr>"
        f"<tr><th>accuracy</th><td>{result.accuracy:.4f}</td></tr>"
        f"<tr><th>loss</th><td>{result.loss:.4f}</td></tr>{top_k}</table>",
        "<h2>Per class</h2>", _class_table(result.report),
        "<h2>Confusion matrix</h2><p>Rows: actual class; columns: predicted class. "
        "Click an off-diagonal count to see those images.</p>", _confusion_table(result),
        f"<p><img src='{pictures['confusion_matrix']}' alt='confusion matrix'></p>",
        "<h2>Most confused</h2>", _most_confused_list(result),
        "<h2>Top losses</h2><p>Above each image: the predicted class and its probability, then the actual "
        "class and its probability. Every misclassified sample is listed in misclassified.csv.</p>",
        f"<p><img src='{pictures['top_losses']}' alt='top losses'></p>",
        "<h2>Misclassified images by cell</h2>", _cell_sections(result, images, to_uri, pages),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _class_table(report: ClassificationReport) -> str:
    rows = ["<table><tr><th></th><th>precision</th><th>recall</th><th>f1-score</th><th>support</th></tr>"]
    entries = list(report.per_class.items()) + [("macro avg", report.macro_avg), ("weighted avg", report.weighted_avg)]
    for name, s in entries:
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{s.precision:.4f}</td><td>{s.recall:.4f}</td>"
                    f"<td>{s.f1:.4f}</td><td>{s.support}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _cell_id(actual: int, predicted: int) -> str:
    return f"cell-{actual}-{predicted}"


def _confusion_table(result: EvaluationResult) -> str:
    names = [html.escape(name) for name in result.class_names]
    counts = result.confusion.tolist()
    rows = ["<table><tr><th>actual \\ predicted</th>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"]
    for i, row in enumerate(counts):
        total = sum(row) or 1
        cells = []
        for j, count in enumerate(row):
            shade = f"background: rgba(31, 119, 180, {0.8 * count / total:.2f})"  # row share, as the normalized PNG
            if i == j:
                cells.append(f"<td class='diag' style='{shade}'>{count}</td>")
            elif count:
                cells.append(f"<td style='{shade}'><a href='#{_cell_id(i, j)}'>{count}</a></td>")
            else:
                cells.append("<td>0</td>")
        rows.append(f"<tr><th>{names[i]}</th>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _most_confused_list(result: EvaluationResult) -> str:
    if not result.most_confused:
        return "<p>No misclassified samples.</p>"
    index = {name: i for i, name in enumerate(result.class_names)}
    items = [f"<li><a href='#{_cell_id(index[a], index[p])}'>{html.escape(a)} predicted as {html.escape(p)}</a>: "
             f"{count}</li>" for a, p, count in result.most_confused]
    return "<ol>" + "\n".join(items) + "</ol>"


def _cell_members(result: EvaluationResult) -> dict[tuple[int, int], torch.Tensor]:
    """Sample indices of each non-empty off-diagonal cell (actual, predicted), highest loss first."""
    cells = {}
    for i in range(len(result.class_names)):
        for j in range(len(result.class_names)):
            members = torch.nonzero((result.labels == i) & (result.predictions == j))[:, 0]
            if i != j and len(members):
                cells[i, j] = members[torch.sort(result.losses[members], descending=True, stable=True).indices]
    return cells


def _figures(result: EvaluationResult, images: torch.Tensor, members: torch.Tensor, predicted: int,
             to_uri: Callable[[torch.Tensor], str]) -> str:
    return "\n".join(f"<figure><img class='thumb' src='{to_uri(images[int(k)])}' alt='sample {int(k)}'>"
                     f"<figcaption>#{int(k)} p={float(result.probabilities[k, predicted]):.2f}</figcaption></figure>"
                     for k in members)


def _write_cell_pages(result: EvaluationResult, images: torch.Tensor, directory: Path, title: str,
                      to_uri: Callable[[torch.Tensor], str]) -> dict[str, str]:
    """cells/cell-I-J.html for each cell over THUMBNAILS_PER_CELL images; {cell id: relative link}."""
    pages, names = {}, result.class_names
    for (i, j), members in _cell_members(result).items():
        if len(members) <= THUMBNAILS_PER_CELL:
            continue
        shown = members[:CELL_PAGE_IMAGES]
        cut = (f"<p>The {len(shown)} highest-loss of {len(members)}; misclassified.csv lists all.</p>"
               if len(members) > len(shown) else "")
        heading = f"actual {html.escape(names[i])}, predicted {html.escape(names[j])}: {len(members)}"
        page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{heading}</title><style>{STYLE}</style>"
                f"</head><body>\n<p><a href='../report.html#{_cell_id(i, j)}'>back to the report</a> "
                f"{html.escape(title)}</p><h1>{heading}</h1>{cut}\n{_figures(result, images, shown, j, to_uri)}"
                f"\n</body></html>\n")
        path = directory / "cells" / f"{_cell_id(i, j)}.html"
        path.parent.mkdir(exist_ok=True)
        path.write_text(page, encoding="utf-8")
        pages[_cell_id(i, j)] = f"cells/{path.name}"
    return pages


def _cell_sections(result: EvaluationResult, images: torch.Tensor, to_uri: Callable[[torch.Tensor], str],
                   pages: dict[str, str]) -> str:
    """One section per non-zero off-diagonal cell: its images, highest loss first, capped at THUMBNAILS_PER_CELL."""
    sections, names = [], result.class_names
    for (i, j), members in _cell_members(result).items():
        more = len(members) - THUMBNAILS_PER_CELL
        note = (f"<p><a href='{pages[_cell_id(i, j)]}'>+{more} more: all {len(members)} images of this cell</a></p>"
                if more > 0 else "")
        sections.append(f"<section class='cell' id='{_cell_id(i, j)}'><h3>actual {html.escape(names[i])}, "
                        f"predicted {html.escape(names[j])}: {len(members)}</h3>\n"
                        + _figures(result, images, members[:THUMBNAILS_PER_CELL], j, to_uri) + f"{note}</section>")
    return "\n".join(sections) if sections else "<p>No misclassified samples.</p>"
