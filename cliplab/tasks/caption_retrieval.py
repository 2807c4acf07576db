"""Caption retrieval over embeddings in bounded memory: text->image and image->text ranks, recall@k.

No function here materialises more than ``row_chunk x col_chunk`` scores at a time, so 100k queries against
500k items run in a few hundred MB (on the GPU when ``device`` is cuda).

Rank conventions (1 = best): the rank of the true item is 1 + the number of items scoring strictly higher, so
ties count in the model's favour (top-k implementations break ties arbitrarily; on real-valued embeddings ties
do not occur). The query's own item(s) are excluded by index. Text->image: each caption's own image. Image->text: the best-ranked of the image's captions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cliplab.progress import bar_total, progress_bar
from cliplab.tasks.metrics import l2_normalize
# chunked_topk lives in tasks.ranking with the other ranking code; it stays importable from here
from cliplab.tasks.ranking import COL_CHUNK, ROW_CHUNK, chunked_topk, task_device  # noqa: F401


def _tensor(x, dev) -> torch.Tensor:
    import torch

    return torch.as_tensor(l2_normalize(x) if isinstance(x, np.ndarray) else x, device=dev, dtype=torch.float32)


def text_to_image_ranks(text_emb: np.ndarray, image_emb: np.ndarray, caption_image: np.ndarray, *, device=None,
                        row_chunk: int = ROW_CHUNK, col_chunk: int = COL_CHUNK) -> np.ndarray:
    """Rank (1 = best) of each caption's own image among all images."""
    import torch

    dev = task_device(device)
    T, I = _tensor(text_emb, dev), _tensor(image_emb, dev)
    own = torch.as_tensor(np.asarray(caption_image), device=dev, dtype=torch.long)
    ranks = np.empty(len(T), np.int64)
    with progress_bar(bar_total(len(T), len(T) * len(I)), "ranking images for captions", unit="captions") as bar:
        for r in range(0, len(T), row_chunk):
            q = T[r:r + row_chunk]
            target = (q * I[own[r:r + row_chunk]]).sum(1, keepdim=True)
            own_q = own[r:r + row_chunk, None]
            better = torch.zeros(len(q), dtype=torch.long, device=dev)
            for c in range(0, len(I), col_chunk):
                cols = torch.arange(c, min(c + col_chunk, len(I)), device=dev)
                # the own image is excluded by index, not by comparing its score with itself (rounding differs
                # between a row-wise dot product and a matrix product)
                better += (((q @ I[c:c + col_chunk].T) > target) & (cols[None, :] != own_q)).sum(1)
            ranks[r:r + len(q)] = (better + 1).cpu().numpy()
            bar.advance(len(q))
    return ranks


def image_to_text_ranks(image_emb: np.ndarray, text_emb: np.ndarray, caption_image: np.ndarray, *, device=None,
                        row_chunk: int = ROW_CHUNK, col_chunk: int = COL_CHUNK) -> np.ndarray:
    """Rank (1 = best) of the best of each image's captions among all captions; 0 for images without captions."""
    import torch

    dev = task_device(device)
    I, T = _tensor(image_emb, dev), _tensor(text_emb, dev)
    owner = np.asarray(caption_image)
    # best score of each image's own captions, one chunk of captions at a time
    best_own = torch.full((len(I),), -torch.inf, device=dev)
    own_t = torch.as_tensor(owner, device=dev, dtype=torch.long)
    for c in range(0, len(T), col_chunk):
        s = (T[c:c + col_chunk] * I[own_t[c:c + col_chunk]]).sum(1)
        best_own.scatter_reduce_(0, own_t[c:c + col_chunk], s, reduce="amax")
    ranks = np.zeros(len(I), np.int64)
    with progress_bar(bar_total(len(I), len(T) * len(I)), "ranking captions for images", unit="img") as bar:
        for r in range(0, len(I), row_chunk):
            q = I[r:r + row_chunk]
            target = best_own[r:r + row_chunk, None]
            rows = torch.arange(r, r + len(q), device=dev)[:, None]
            better = torch.zeros(len(q), dtype=torch.long, device=dev)
            for c in range(0, len(T), col_chunk):
                mine = own_t[None, c:c + col_chunk] == rows  # an image's own captions never count against it
                better += (((q @ T[c:c + col_chunk].T) > target) & ~mine).sum(1)
            has = torch.isfinite(target[:, 0])
            ranks[r:r + len(q)] = torch.where(has, better + 1, torch.zeros_like(better)).cpu().numpy()
            bar.advance(len(q))
    return ranks


def rank_metrics(ranks: np.ndarray, ks=(1, 5, 10), prefix: str = "") -> dict:
    """recall@k (fraction of queries whose rank <= k), median and mean rank; rank 0 = no ground truth, ignored."""
    r = np.asarray(ranks)
    r = r[r > 0]
    out = {f"{prefix}recall@{k}": float(np.mean(r <= k)) if len(r) else float("nan") for k in ks}
    out[f"{prefix}median_rank"] = float(np.median(r)) if len(r) else float("nan")
    out[f"{prefix}mean_rank"] = float(np.mean(r)) if len(r) else float("nan")
    return out


@dataclass
class RetrievalRanks:
    metrics: dict
    t2i_ranks: np.ndarray  # per caption
    i2t_ranks: np.ndarray  # per image


def caption_retrieval(image_emb: np.ndarray, text_emb: np.ndarray, caption_image: np.ndarray, ks=(1, 5, 10), *,
                      device=None, row_chunk: int = ROW_CHUNK, col_chunk: int = COL_CHUNK) -> RetrievalRanks:
    t2i = text_to_image_ranks(text_emb, image_emb, caption_image, device=device, row_chunk=row_chunk,
                              col_chunk=col_chunk)
    i2t = image_to_text_ranks(image_emb, text_emb, caption_image, device=device, row_chunk=row_chunk,
                              col_chunk=col_chunk)
    metrics = {**rank_metrics(t2i, ks, "text_to_image_"), **rank_metrics(i2t, ks, "image_to_text_")}
    metrics["num_images"] = int(len(image_emb))
    metrics["num_captions"] = int(len(text_emb))
    return RetrievalRanks(metrics, t2i, i2t)
