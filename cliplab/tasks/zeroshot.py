"""Zero-shot classification from cached embeddings.

The classifier follows CLIP / open_clip: per class, the mean of the L2-normalised embeddings of its prompts
(templates or descriptions), renormalised. Scores are cosine similarities (no temperature: argmax and ranks
do not change with it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cliplab.tasks.metrics import classification_metrics, l2_normalize, topk_indices


def build_classifier(text_emb: np.ndarray) -> np.ndarray:
    """``text_emb``: (C, T, d) raw prompt embeddings -> (C, d) unit-norm class weights."""
    if text_emb.ndim != 3:
        raise ValueError("text_emb must have shape (classes, prompts, dim)")
    return l2_normalize(l2_normalize(text_emb).mean(axis=1))


def build_classifier_ragged(text_emb: np.ndarray, owner: np.ndarray, num_classes: int,
                            aggregate: str = "mean") -> np.ndarray:
    """Classes with different numbers of prompts (e.g. descriptions): ``owner[i]`` is the class of row i."""
    unit = l2_normalize(text_emb)
    out = np.zeros((num_classes, unit.shape[1]), np.float32)
    for c in range(num_classes):
        rows = unit[owner == c]
        if len(rows) == 0:
            raise ValueError(f"class {c} has no prompts")
        out[c] = rows.mean(axis=0)
    return l2_normalize(out)


def scores(image_emb: np.ndarray, classifier: np.ndarray) -> np.ndarray:
    """Cosine similarity of each image with each class: (N, C)."""
    return l2_normalize(image_emb) @ classifier.T


HEADS = ("softmax", "sigmoid")


def head_probabilities(cosines: np.ndarray, logit_scale: float, logit_bias: float | None = None) -> np.ndarray:
    """What a model's own head makes of (images x candidates) cosines: CLIP's softmax over the candidates of
    ``logit_scale * cos`` (rows sum to 1), or, for a model with a ``logit_bias`` (SigLIP), the sigmoid of
    ``logit_scale * cos + logit_bias`` for each candidate on its own."""
    logits = logit_scale * np.asarray(cosines, dtype=np.float64)
    if logit_bias is not None:
        return 0.5 * (1.0 + np.tanh(0.5 * (logits + logit_bias)))  # the sigmoid, without overflow
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@dataclass
class ClassScores:
    """Scores of every image for every class, and the classification metrics they give."""
    metrics: dict
    scores: np.ndarray  # (N, C) cosine similarities

    def top_predictions(self, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        idx = topk_indices(self.scores, k)
        return idx, np.take_along_axis(self.scores, idx, axis=1)


def evaluate(image_emb: np.ndarray, labels: np.ndarray, classifier: np.ndarray,
             ks: tuple[int, ...] = (1, 5)) -> ClassScores:
    return evaluate_scores(scores(image_emb, classifier), labels, ks)


def scores_max(image_emb: np.ndarray, text_emb: np.ndarray, owner: np.ndarray, num_classes: int) -> np.ndarray:
    """Class score = the best cosine over that class's prompts (the ``max`` aggregation for descriptions)."""
    sims = l2_normalize(image_emb) @ l2_normalize(text_emb).T  # (N, P)
    out = np.full((sims.shape[0], num_classes), -np.inf, np.float32)
    for c in range(num_classes):
        cols = owner == c
        if not cols.any():
            raise ValueError(f"class {c} has no prompts")
        out[:, c] = sims[:, cols].max(axis=1)
    return out


def evaluate_scores(s: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> ClassScores:
    metrics = classification_metrics(s, labels, ks)
    metrics["mean_correct_similarity"] = float(np.mean(s[np.arange(len(labels)), labels])) if len(labels) else float("nan")
    return ClassScores(metrics=metrics, scores=s)
