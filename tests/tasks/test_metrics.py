"""Metrics on hand-computed cases, and agreement with scikit-learn."""
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, top_k_accuracy_score

from cliplab.tasks.metrics import classification_metrics, per_class_recall, topk_accuracy, topk_indices

# 5 images, 3 classes. Rankings (best first):
# img0 label0: [0,1,2] -> top1 hit
# img1 label1: [2,1,0] -> top1 miss, top2 hit
# img2 label2: [0,1,2] -> miss at 1 and 2, hit at 3
# img3 label0: [1,0,2] -> top1 miss, top2 hit
# img4 label1: [1,2,0] -> top1 hit
SCORES = np.array([
    [0.9, 0.5, 0.1],
    [0.1, 0.5, 0.9],
    [0.8, 0.6, 0.2],
    [0.3, 0.7, 0.1],
    [0.2, 0.9, 0.4],
])
LABELS = np.array([0, 1, 2, 0, 1])


def test_topk_by_hand():
    assert topk_accuracy(SCORES, LABELS, 1) == pytest.approx(2 / 5)
    assert topk_accuracy(SCORES, LABELS, 2) == pytest.approx(4 / 5)
    assert topk_accuracy(SCORES, LABELS, 3) == pytest.approx(1.0)


def test_topk_capped_at_number_of_classes_never_nan():
    # acc5 with 3 classes is acc3, not NaN and not an error
    assert topk_accuracy(SCORES, LABELS, 5) == pytest.approx(1.0)
    m = classification_metrics(SCORES, LABELS, ks=(1, 5))
    assert m["acc5"] == pytest.approx(1.0)


def test_per_class_recall_and_confusion_by_hand():
    m = classification_metrics(SCORES, LABELS)
    # predictions: [0, 2, 0, 1, 1]
    # class0: imgs 0,3 -> pred 0,1 -> recall 1/2; class1: imgs 1,4 -> pred 2,1 -> 1/2; class2: img2 -> pred 0 -> 0
    assert m["per_class_recall"] == pytest.approx([0.5, 0.5, 0.0])
    assert m["mean_per_class_recall"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 1], [1, 0, 0]]


def test_class_without_examples_is_nan_and_excluded_from_mean():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    labels = np.array([0, 0])  # class 1 and 2 absent
    rec = per_class_recall(scores.argmax(1), labels, 3)
    assert rec[0] == pytest.approx(0.5) and np.isnan(rec[1]) and np.isnan(rec[2])
    assert classification_metrics(scores, labels)["mean_per_class_recall"] == pytest.approx(0.5)


def test_ties_go_to_lower_class_index():
    scores = np.array([[0.5, 0.5, 0.1]])
    assert topk_indices(scores, 2).tolist() == [[0, 1]]
    assert topk_accuracy(scores, np.array([1]), 1) == 0.0


def test_agrees_with_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(500, 12))
    labels = rng.integers(0, 12, 500)
    m = classification_metrics(scores, labels)
    assert m["acc1"] == pytest.approx(top_k_accuracy_score(labels, scores, k=1, labels=np.arange(12)))
    assert m["acc5"] == pytest.approx(top_k_accuracy_score(labels, scores, k=5, labels=np.arange(12)))
    assert m["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, scores.argmax(1)))
    assert np.array_equal(m["confusion"], confusion_matrix(labels, scores.argmax(1), labels=np.arange(12)))
