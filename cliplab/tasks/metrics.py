"""Classification metrics over score matrices (rows = images, columns = classes)."""
from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best columns per row, best first; ties go to the lower class index (stable)."""
    k = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the top-k scores; k is capped at the number of classes."""
    if len(labels) == 0:
        return float("nan")
    top = topk_indices(scores, k)
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class (scikit-learn's ``confusion_matrix`` with
    ``labels=range(C)``; a test checks they agree)."""
    pred, labels = np.asarray(pred, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    return np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def mean_per_class_recall(pred: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in ``labels`` of their recall (= sklearn's balanced accuracy; a test checks)."""
    if len(labels) == 0:
        return float("nan")
    num_classes = int(max(np.max(labels), np.max(pred))) + 1
    recall = per_class_recall(pred, labels, num_classes)
    return float(np.nanmean(recall))


def per_class_recall(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Recall per class; NaN for classes with no examples."""
    cm = confusion(pred, labels, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def classification_metrics(scores: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict:
    num_classes = scores.shape[1]
    pred = scores.argmax(axis=1)
    out = {f"acc{k}": topk_accuracy(scores, labels, k) for k in ks}
    out["mean_per_class_recall"] = mean_per_class_recall(pred, labels)
    out["per_class_recall"] = per_class_recall(pred, labels, num_classes).tolist()
    out["confusion"] = confusion(pred, labels, num_classes).tolist()
    return out
