"""Greedy forward selection of a template ensemble on a validation split.

Only validation embeddings and labels enter the selection; the test split is scored once, afterwards, with the
chosen ensemble, so no test label can influence which templates are picked.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cliplab.tasks.metrics import l2_normalize


@dataclass
class Selection:
    chosen: list[int]  # template indices, in the order they were added
    val_accuracy: list[float]  # validation accuracy after each addition


def greedy_template_selection(val_images: np.ndarray, val_labels: np.ndarray, text_emb: np.ndarray,
                              max_templates: int | None = None, min_gain: float = 0.0) -> Selection:
    """``text_emb``: (C, T, d) raw prompt embeddings. Adds, one at a time, the template whose inclusion gives the
    best validation accuracy of the mean-ensemble classifier; stops when no template improves it by more than
    ``min_gain`` (ties go to the lower template index)."""
    img = l2_normalize(val_images)
    unit = l2_normalize(text_emb)  # (C, T, d)
    C, T, _ = unit.shape
    limit = T if max_templates is None else min(max_templates, T)
    chosen: list[int] = []
    accs: list[float] = []
    summed = np.zeros((C, unit.shape[2]), np.float32)
    best_acc = -1.0
    while len(chosen) < limit:
        round_t, round_acc = -1, -1.0
        for t in range(T):
            if t in chosen:
                continue
            clf = l2_normalize(summed + unit[:, t])
            acc = float(np.mean((img @ clf.T).argmax(1) == val_labels))
            if acc > round_acc:  # strict: ties keep the lower template index
                round_t, round_acc = t, acc
        if chosen and round_acc <= best_acc + min_gain:
            break
        chosen.append(round_t)
        accs.append(round_acc)
        summed += unit[:, round_t]
        best_acc = round_acc
    return Selection(chosen=chosen, val_accuracy=accs)
