"""Figures for clustering: sample images per cluster (closest to the centre first)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def cluster_grid(dataset, indices: np.ndarray, clustering, X: np.ndarray, path: str | Path, per_cluster: int = 8) -> Path:
    from cliplab.report.plots import image_grid, save_figure

    names = dataset.classnames
    labels = dataset.labels[indices] if dataset.labels is not None else None
    imgs, caps, rows = [], [], []
    for c in range(clustering.k):
        members = np.flatnonzero(clustering.assignments == c)
        d = np.linalg.norm(X[members] - clustering.centers[c], axis=1)
        pick = members[np.argsort(d, kind="stable")[:per_cluster]]
        for j in range(per_cluster):
            if j < len(pick):
                imgs.append(dataset.source.load(int(indices[pick[j]])))
                caps.append(names[labels[pick[j]]] if labels is not None and names else "")
            else:
                imgs.append(None)
                caps.append("")
        major = ""
        if labels is not None and len(members) and names:
            vals, counts = np.unique(labels[members], return_counts=True)
            major = f" · {names[vals[counts.argmax()]]} {100 * counts.max() / len(members):.0f} %"
        rows.append(f"cluster {c} ({len(members)}){major}")
    fig = image_grid(imgs, caps, cols=per_cluster, row_titles=rows, title=f"k-means clusters (k = {clustering.k})")
    return save_figure(fig, [path])[0]
