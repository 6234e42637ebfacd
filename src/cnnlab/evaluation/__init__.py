"""Evaluation: metrics on predicted probabilities and the HTML/PNG/JSON report built from them."""

from cnnlab.evaluation.metrics import (
    ClassificationReport,
    ClassScores,
    classification_report,
    confusion_matrix,
    most_confused,
    sample_losses,
    top_k_accuracy,
    top_losses,
)
from cnnlab.evaluation.report import EvaluationResult, evaluate_predictions, write_report

__all__ = [
    "ClassScores",
    "ClassificationReport",
    "confusion_matrix",
    "classification_report",
    "top_k_accuracy",
    "most_confused",
    "sample_losses",
    "top_losses",
    "EvaluationResult",
    "evaluate_predictions",
    "write_report",
]
