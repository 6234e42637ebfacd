"""Contracts for cnnlab.evaluation: hand-computed metrics, sklearn's classification report, the written report."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import classification_report as sklearn_report

from cnnlab.errors import CnnlabError
from cnnlab.evaluation import (
    classification_report,
    confusion_matrix,
    evaluate_predictions,
    most_confused,
    top_k_accuracy,
    top_losses,
    write_report,
)
from cnnlab.evaluation import report as report_module
from cnnlab.viz import plot_confusion_matrix

NAMES = ["a", "b", "c", "d"]
LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
PREDICTIONS = torch.tensor([0, 1, 1, 1, 0, 2, 0, 2, 3, 3])


def test_confusion_matrix_matches_hand_count() -> None:
    expected = torch.tensor([[1, 2, 0, 0],
                             [1, 1, 0, 0],
                             [1, 0, 2, 1],
                             [0, 0, 0, 1]])
    got = confusion_matrix(LABELS, PREDICTIONS, 4)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)


def test_confusion_matrix_rejects_out_of_range() -> None:
    with pytest.raises(CnnlabError, match="0..2"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)


def test_most_confused_orders_by_count_then_cell() -> None:
    confusion = confusion_matrix(LABELS, PREDICTIONS, 4)
    assert most_confused(confusion, NAMES, n=None) == [("a", "b", 2), ("b", "a", 1), ("c", "a", 1), ("c", "d", 1)]
    assert most_confused(confusion, NAMES, n=2) == [("a", "b", 2), ("b", "a", 1)]
    assert most_confused(confusion, NAMES, n=5, min_count=2) == [("a", "b", 2)]


def test_top_losses_hand_example() -> None:
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25], [0.0, 1.0, 0.0]])
    indices, losses = top_losses(p, torch.tensor([0, 0, 1, 0]), 3)
    assert indices.tolist() == [3, 1, 2]
    # p_true = 0 is clipped to 1e-7; float32 inputs, so compare at float32 precision
    assert losses.tolist() == pytest.approx([-math.log(1e-7), -math.log(0.1), -math.log(0.5)], rel=1e-6)


def test_top_k_accuracy_hand_example() -> None:
    p = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    labels = torch.tensor([2, 2, 2, 2])
    assert [top_k_accuracy(p, labels, k) for k in (1, 2, 3)] == [0.25, 0.75, 1.0]
    with pytest.raises(CnnlabError, match="1..3"):
        top_k_accuracy(p, labels, 4)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_classification_report_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 60))
    labels = rng.choice([0, 1, 2, 4], size=n)  # class 3 never occurs
    predictions = rng.choice([0, 1, 2, 3], size=n)  # class 4 is never predicted
    names = ["cat", "dog", "fox", "owl", "yak"]
    ours = classification_report(torch.from_numpy(labels), torch.from_numpy(predictions), names)
    theirs = sklearn_report(labels, predictions, labels=list(range(5)), target_names=names,
                            output_dict=True, zero_division=0)
    got = ours.to_dict()
    assert got.keys() == theirs.keys()
    for key, expected in theirs.items():
        if isinstance(expected, dict):
            assert got[key].keys() == expected.keys()
            for field, value in expected.items():
                assert got[key][field] == pytest.approx(value, abs=1e-12), (key, field)
        else:
            assert got[key] == pytest.approx(expected, abs=1e-12)
    for digits in (2, 4):
        assert ours.to_text(digits) == sklearn_report(labels, predictions, labels=list(range(5)), target_names=names,
                                                      zero_division=0, digits=digits)


def _synthetic(n: int = 40, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random 28x28 grey images, labels, and probabilities that favour the true class about half the time."""
    generator = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.arange(n) % classes
    logits = torch.randn(n, classes, generator=generator) + 1.5 * torch.nn.functional.one_hot(labels, classes)
    return images, labels, torch.softmax(logits, dim=1)


class _ReportParser(HTMLParser):
    """Collects links, section ids and the number of <img> inside each section."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.sources: list[str] = []
        self.section_images: dict[str, int] = {}
        self.section_text: dict[str, str] = {}
        self._section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a" and attributes.get("href"):
            self.links.append(str(attributes["href"]))
        if tag == "section" and attributes.get("id"):
            self._section = str(attributes["id"])
            self.section_images[self._section] = 0
            self.section_text[self._section] = ""
        if tag == "img":
            self.sources.append(str(attributes.get("src")))
            if self._section is not None:
                self.section_images[self._section] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.section_text[self._section] += data


def test_write_report_files_and_html(tmp_path: Path) -> None:
    images, labels, probabilities = _synthetic()
    names = ["<b>cat</b>", "dog", "fox", "owl"]
    result = evaluate_predictions(probabilities, labels, names)
    assert 0.3 < result.accuracy < 0.95  # the synthetic case must have both hits and misses
    paths = write_report(result, images, tmp_path / "eval", top_n=8, title="synthetic")
    assert {p.name for p in (tmp_path / "eval").iterdir()} == {
        "metrics.json", "classification_report.txt", "confusion_matrix.png", "confusion_matrix_normalized.png",
        "top_losses.png", "misclassified.csv", "report.html"}  # no cell has over 24 images: no cells/ folder
    for key in ("confusion_matrix", "confusion_matrix_normalized", "top_losses"):
        with Image.open(paths[key]) as picture:
            assert picture.width >= 400 and picture.height >= 400, key
            assert len(np.unique(np.asarray(picture.convert("L")))) > 10, f"{key} looks blank"
    assert json.loads(paths["metrics"].read_text()) == result.to_dict()
    assert "accuracy" in paths["classification_report"].read_text()

    text = paths["report"].read_text(encoding="utf-8")
    parser = _ReportParser()
    parser.feed(text)
    parser.close()
    assert f"{result.accuracy:.4f}" in text
    assert "http://" not in text and "https://" not in text
    assert all(src.startswith("data:image/png;base64,") for src in parser.sources)
    assert "&lt;b&gt;cat&lt;/b&gt;" in text and "<b>cat</b>" not in text
    expected = {f"cell-{i}-{j}": int(result.confusion[i, j]) for i in range(4) for j in range(4)
                if i != j and result.confusion[i, j] > 0}
    assert len(expected) >= 3
    assert parser.section_images == expected  # every image of every off-diagonal cell, under the cap of 24
    assert {link[1:] for link in parser.links if link.startswith("#cell-")} == set(expected)


def test_write_report_caps_thumbnails_and_every_image_stays_reachable(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels, probabilities = _synthetic()
    result = evaluate_predictions(probabilities, labels, NAMES)
    monkeypatch.setattr(report_module, "THUMBNAILS_PER_CELL", 1)
    monkeypatch.setattr(report_module, "CELL_PAGE_IMAGES", 2)
    paths = write_report(result, images, tmp_path / "eval", top_n=4)
    parser = _ReportParser()
    parser.feed(paths["report"].read_text(encoding="utf-8"))
    cells = {(i, j): int(result.confusion[i, j]) for i in range(4) for j in range(4)
             if i != j and result.confusion[i, j] > 0}
    assert any(count > 2 for count in cells.values())
    for (i, j), count in cells.items():
        cell = f"cell-{i}-{j}"
        assert parser.section_images[cell] == 1
        assert (f"+{count - 1} more" in parser.section_text[cell]) == (count > 1)
        page = tmp_path / "eval" / "cells" / f"{cell}.html"
        assert (f"cells/{cell}.html" in parser.links) == (count > 1) == page.is_file()
        if count > 1:  # the cell's own page shows its images up to CELL_PAGE_IMAGES, highest loss first
            cell_page = _ReportParser()
            cell_page.feed(page.read_text(encoding="utf-8"))
            assert len(cell_page.sources) == min(count, 2)
            assert f"../report.html#{cell}" in cell_page.links
            assert ("misclassified.csv lists all" in page.read_text()) == (count > 2)
    # misclassified.csv: every wrong sample once, with the classes and probabilities of the result
    rows = paths["misclassified"].read_text(encoding="utf-8").splitlines()
    assert rows[0] == "index,actual,predicted,p_predicted,p_actual,loss"
    wrong = {int(k) for k in torch.nonzero(result.labels != result.predictions)[:, 0]}
    listed = [row.split(",") for row in rows[1:]]
    assert sorted(int(row[0]) for row in listed) == sorted(wrong)
    for index, actual, predicted, p_predicted, _, loss in listed:
        k = int(index)
        assert (actual, predicted) == (NAMES[int(labels[k])], NAMES[int(result.predictions[k])])
        assert float(p_predicted) == pytest.approx(float(result.probabilities[k].max()), abs=1e-4)
        assert float(loss) == pytest.approx(float(result.losses[k]), abs=1e-4)
    assert [float(row[5]) for row in listed] == sorted((float(row[5]) for row in listed), reverse=True)


def test_top_loss_titles_say_which_class_is_which_and_stay_short() -> None:
    probabilities = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    result = evaluate_predictions(probabilities, torch.tensor([0, 1]), ["a" * 40, "dog"])
    assert report_module._loss_title(result, 0) == "predicted dog 0.90\nactual aaaaaaaaaaaa… 0.10"
    assert report_module._loss_title(result, 1) == "predicted aaaaaaaaaaaa… 0.80\nactual dog 0.20"


def test_thumbnails_shrink_large_images_only() -> None:
    big = torch.full((3, 224, 448), 200, dtype=torch.uint8)
    assert report_module._thumbnail(big).shape == (3, 64, 128)
    assert torch.equal(report_module._thumbnail(big), torch.full((3, 64, 128), 200, dtype=torch.uint8))
    small = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    assert report_module._thumbnail(small) is small


def test_write_report_never_overwrites(tmp_path: Path) -> None:
    images, labels, probabilities = _synthetic()
    result = evaluate_predictions(probabilities, labels, NAMES)
    target = tmp_path / "eval"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(CnnlabError, match="not empty"):
        write_report(result, images, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "precious"


def test_mismatches_are_cnnlab_errors(tmp_path: Path) -> None:
    images, labels, probabilities = _synthetic()
    with pytest.raises(CnnlabError, match="4 columns but 3 class names"):
        evaluate_predictions(probabilities, labels, ["a", "b", "c"])
    result = evaluate_predictions(probabilities, labels, NAMES)
    with pytest.raises(CnnlabError, match="40 evaluated images"):
        write_report(result, images[:5], tmp_path / "eval")
    assert not (tmp_path / "eval").exists()
    with pytest.raises(CnnlabError, match=r"\(4, 4\) tensor"):
        plot_confusion_matrix(torch.zeros(3, 3), NAMES, tmp_path / "cm.png")
