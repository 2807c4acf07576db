"""Caption retrieval over embeddings in bounded memory: text->image and image->text ranks, recall@k.

No function here materialises more than ``row_chunk x col_chunk`` scores at a time, so 100k queries against
500k items run in a few hundred MB (on the GPU when ``device`` is cuda).

Rank conventions (1 = best): the rank of the true item is 1 + the number of items scoring strictly higher, so
ties count in the model's favour (top-k implementations break ties arbitrarily). Exact ties are common in real data:
captions with the same text (``a large shape.``, ``A man riding a wave on top of a surfboard.``) and duplicate images
have bit-identical embeddings (the caches key them by content), so an item identical to the query's own item scores
exactly as much. Such items never count as better: they are excluded by identity, not by comparing two roundings of
the same number (a row-wise dot product and a matrix product differ in the last bits, and by CPU and BLAS, which
decided these ties one way or the other). The query's own item(s) are excluded by index. Text->image: each caption's
own image. Image->text: the best-ranked of the image's captions.

Metrics (``metric``): cosine (the default; what CLIP is trained for), dot product of the raw embeddings, or Euclidean
distance of the raw embeddings (nearer = better), each scored as an inner product
(:func:`cliplab.tasks.ranking.inner_product_space`), so the rank rule, ties included, is the same for all three.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cliplab.progress import bar_total, progress_bar
from cliplab.tasks.metrics import l2_normalize
# chunked_topk lives in tasks.ranking with the other ranking code; it stays importable from here
from cliplab.tasks.ranking import (COL_CHUNK, ROW_CHUNK, chunked_topk, inner_product_space,  # noqa: F401
                                   on_cpu, task_device)


def _tensor(x, dev) -> torch.Tensor:
    import torch

    return torch.as_tensor(l2_normalize(x) if isinstance(x, np.ndarray) else x, device=dev, dtype=torch.float32)


def _pair(queries, items, metric: str, dev):
    """Query and item tensors whose inner product ranks as ``metric`` does."""
    import torch

    if metric == "cosine":  # as before metrics were offered (bit for bit)
        return _tensor(queries, dev), _tensor(items, dev)
    q, k = inner_product_space(np.asarray(queries), np.asarray(items), metric)
    return (torch.as_tensor(q, device=dev, dtype=torch.float32), torch.as_tensor(k, device=dev, dtype=torch.float32))


def _pair_numpy(queries, items, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_pair` on the CPU: float32 arrays."""
    if metric == "cosine":
        return l2_normalize(queries), l2_normalize(items)
    q, k = inner_product_space(np.asarray(queries), np.asarray(items), metric)
    return np.asarray(q, np.float32), np.asarray(k, np.float32)


def _row_ids(x) -> np.ndarray:
    """One id per row; bit-identical rows (duplicate captions, duplicate images) share it."""
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    a = np.ascontiguousarray(a.reshape(len(a), -1))
    rows = a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()
    return np.unique(rows, return_inverse=True)[1].ravel()


def _tied_pairs(own_q: np.ndarray, own_k: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query, item) pairs to leave out: item j is bit-identical to an item the query owns (so it scores exactly as
    much) and is not one of the query's own. Query ``own_q[i]`` owns item ``own_k[i]``; ``ids``: :func:`_row_ids`."""
    own_q, own_k = np.asarray(own_q, np.int64), np.asarray(own_k, np.int64)
    dup = np.bincount(ids, minlength=1)[ids[own_k]] > 1 if len(own_k) else np.zeros(0, bool)
    if not dup.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    owned = set(zip(own_q[dup].tolist(), own_k[dup].tolist()))
    members: dict[int, np.ndarray] = {}
    qs, js = [], []
    for q, g in sorted({(q, int(ids[k])) for q, k in zip(own_q[dup].tolist(), own_k[dup].tolist())}):
        if g not in members:
            members[g] = np.flatnonzero(ids == g)
        m = [j for j in members[g].tolist() if (q, j) not in owned]
        qs += [q] * len(m)
        js += m
    return np.asarray(qs, np.int64), np.asarray(js, np.int64)


def _leave_out(scores, pairs, r: int, c: int) -> None:
    """Set the scores of the tied pairs that fall in the block at (row r, column c) to -inf."""
    qs, js = pairs
    if len(qs) == 0:
        return
    inside = (qs >= r) & (qs < r + scores.shape[0]) & (js >= c) & (js < c + scores.shape[1])
    if not inside.any():
        return
    if isinstance(scores, np.ndarray):
        scores[qs[inside] - r, js[inside] - c] = -np.inf
        return
    import torch

    dev = scores.device
    scores[torch.as_tensor(qs[inside] - r, device=dev), torch.as_tensor(js[inside] - c, device=dev)] = -torch.inf


def text_to_image_ranks(text_emb: np.ndarray, image_emb: np.ndarray, caption_image: np.ndarray, *, device=None,
                        row_chunk: int = ROW_CHUNK, col_chunk: int = COL_CHUNK, metric: str = "cosine") -> np.ndarray:
    """Rank (1 = best) of each caption's own image among all images, by ``metric``."""
    if on_cpu(device):
        return _text_to_image_ranks_numpy(text_emb, image_emb, caption_image, row_chunk, col_chunk, metric)
    import torch

    dev = task_device(device)
    T, I = _pair(text_emb, image_emb, metric, dev)
    own = torch.as_tensor(np.asarray(caption_image), device=dev, dtype=torch.long)
    owner = np.asarray(caption_image)
    # images identical to a caption's own image (duplicates) tie with it: left out like the own image
    tied = _tied_pairs(np.arange(len(owner)), owner, _row_ids(image_emb))
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
                scores = q @ I[c:c + col_chunk].T
                _leave_out(scores, tied, r, c)
                better += ((scores > target) & (cols[None, :] != own_q)).sum(1)
            ranks[r:r + len(q)] = (better + 1).cpu().numpy()
            bar.advance(len(q))
    return ranks


def image_to_text_ranks(image_emb: np.ndarray, text_emb: np.ndarray, caption_image: np.ndarray, *, device=None,
                        row_chunk: int = ROW_CHUNK, col_chunk: int = COL_CHUNK, metric: str = "cosine") -> np.ndarray:
    """Rank (1 = best) of the best of each image's captions among all captions, by ``metric``; 0 for images without
    captions."""
    if on_cpu(device):
        return _image_to_text_ranks_numpy(image_emb, text_emb, caption_image, row_chunk, col_chunk, metric)
    import torch

    dev = task_device(device)
    I, T = _pair(image_emb, text_emb, metric, dev)
    owner = np.asarray(caption_image)
    # best score of each image's own captions, one chunk of captions at a time
    best_own = torch.full((len(I),), -torch.inf, device=dev)
    own_t = torch.as_tensor(owner, device=dev, dtype=torch.long)
    for c in range(0, len(T), col_chunk):
        s = (T[c:c + col_chunk] * I[own_t[c:c + col_chunk]]).sum(1)
        best_own.scatter_reduce_(0, own_t[c:c + col_chunk], s, reduce="amax")
    # captions with the same text as one of an image's own captions tie with it: left out
    tied = _tied_pairs(owner, np.arange(len(owner)), _row_ids(text_emb))
    ranks = np.zeros(len(I), np.int64)
    with progress_bar(bar_total(len(I), len(T) * len(I)), "ranking captions for images", unit="img") as bar:
        for r in range(0, len(I), row_chunk):
            q = I[r:r + row_chunk]
            target = best_own[r:r + row_chunk, None]
            rows = torch.arange(r, r + len(q), device=dev)[:, None]
            better = torch.zeros(len(q), dtype=torch.long, device=dev)
            for c in range(0, len(T), col_chunk):
                mine = own_t[None, c:c + col_chunk] == rows  # an image's own captions never count against it
                scores = q @ T[c:c + col_chunk].T
                _leave_out(scores, tied, r, c)
                better += ((scores > target) & ~mine).sum(1)
            has = torch.isfinite(target[:, 0])
            ranks[r:r + len(q)] = torch.where(has, better + 1, torch.zeros_like(better)).cpu().numpy()
            bar.advance(len(q))
    return ranks


def _rowwise_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The dot product of each row of ``a`` with the same row of ``b``, float32."""
    return (a * b).sum(1, dtype=np.float32)


def _text_to_image_ranks_numpy(text_emb, image_emb, caption_image, row_chunk: int, col_chunk: int,
                               metric: str) -> np.ndarray:
    """:func:`text_to_image_ranks` on the CPU, in numpy (the same blocks, the same comparisons)."""
    T, I = _pair_numpy(text_emb, image_emb, metric)
    own = np.asarray(caption_image, np.int64)
    tied = _tied_pairs(np.arange(len(own)), own, _row_ids(image_emb))
    ranks = np.empty(len(T), np.int64)
    with progress_bar(bar_total(len(T), len(T) * len(I)), "ranking images for captions", unit="captions") as bar:
        for r in range(0, len(T), row_chunk):
            q = T[r:r + row_chunk]
            target = _rowwise_dot(q, I[own[r:r + row_chunk]])[:, None]
            own_q = own[r:r + row_chunk, None]
            better = np.zeros(len(q), np.int64)
            for c in range(0, len(I), col_chunk):
                cols = np.arange(c, min(c + col_chunk, len(I)))
                # the own image is excluded by index, not by comparing its score with itself (rounding differs
                # between a row-wise dot product and a matrix product)
                scores = q @ I[c:c + col_chunk].T
                _leave_out(scores, tied, r, c)
                better += ((scores > target) & (cols[None, :] != own_q)).sum(1)
            ranks[r:r + len(q)] = better + 1
            bar.advance(len(q))
    return ranks


def _image_to_text_ranks_numpy(image_emb, text_emb, caption_image, row_chunk: int, col_chunk: int,
                               metric: str) -> np.ndarray:
    """:func:`image_to_text_ranks` on the CPU, in numpy."""
    I, T = _pair_numpy(image_emb, text_emb, metric)
    owner = np.asarray(caption_image, np.int64)
    best_own = np.full(len(I), -np.inf, np.float32)
    for c in range(0, len(T), col_chunk):
        np.maximum.at(best_own, owner[c:c + col_chunk], _rowwise_dot(T[c:c + col_chunk], I[owner[c:c + col_chunk]]))
    tied = _tied_pairs(owner, np.arange(len(owner)), _row_ids(text_emb))
    ranks = np.zeros(len(I), np.int64)
    with progress_bar(bar_total(len(I), len(T) * len(I)), "ranking captions for images", unit="img") as bar:
        for r in range(0, len(I), row_chunk):
            q = I[r:r + row_chunk]
            target = best_own[r:r + row_chunk, None]
            rows = np.arange(r, r + len(q))[:, None]
            better = np.zeros(len(q), np.int64)
            for c in range(0, len(T), col_chunk):
                mine = owner[None, c:c + col_chunk] == rows  # an image's own captions never count against it
                scores = q @ T[c:c + col_chunk].T
                _leave_out(scores, tied, r, c)
                better += ((scores > target) & ~mine).sum(1)
            ranks[r:r + len(q)] = np.where(np.isfinite(target[:, 0]), better + 1, 0)
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
                      device=None, row_chunk: int = ROW_CHUNK, col_chunk: int = COL_CHUNK,
                      metric: str = "cosine") -> RetrievalRanks:
    t2i = text_to_image_ranks(text_emb, image_emb, caption_image, device=device, row_chunk=row_chunk,
                              col_chunk=col_chunk, metric=metric)
    i2t = image_to_text_ranks(image_emb, text_emb, caption_image, device=device, row_chunk=row_chunk,
                              col_chunk=col_chunk, metric=metric)
    metrics = {**rank_metrics(t2i, ks, "text_to_image_"), **rank_metrics(i2t, ks, "image_to_text_")}
    metrics["num_images"] = int(len(image_emb))
    metrics["num_captions"] = int(len(text_emb))
    return RetrievalRanks(metrics, t2i, i2t)


MAX_CHOSEN = 12  # rows of the chosen-captions grid


@dataclass(frozen=True)
class CaptionPicks:
    """Captions a user chose (:func:`pick_captions`): their ids in order, and what each choice matched."""
    ids: tuple[int, ...]
    matched: dict  # choice as given -> number of captions it matched (before the cap)
    total: int  # captions picked before the cap (each once)


def pick_captions(choices, captions: list[str], cap: int = MAX_CHOSEN) -> CaptionPicks:
    """Captions chosen by id or text: a choice of digits is a caption id (its position in ``captions``, from 0); any
    other choice picks every caption containing it, ignoring case and runs of spaces. Ids keep the order of the
    choices (a caption chosen twice is shown once), at most ``cap`` in all. A choice that names no caption is a
    :class:`~cliplab.errors.ParameterError` of ``show_captions``, with the captions closest to it."""
    import difflib

    from cliplab.errors import ParameterError

    folded = [" ".join(c.casefold().split()) for c in captions]
    ids: dict[int, None] = {}  # ordered, each once
    matched: dict = {}
    for choice in choices:
        text = str(choice).strip()
        if text.isdigit() and text.isascii():
            i = int(text)
            if i >= len(captions):
                raise ParameterError("show_captions", choice, f"there is no caption {i}: the captions are numbered "
                                     f"0 to {len(captions) - 1} (the captions table's caption_id)")
            found = [i]
        else:
            want = " ".join(text.casefold().split())
            if not want:
                raise ParameterError("show_captions", choice, "give a caption id or a text to look for")
            found = [i for i, c in enumerate(folded) if want in c]
            if not found:
                close = difflib.get_close_matches(want, folded, n=2, cutoff=0.5)
                hint = ("; closest: " + " | ".join(repr(captions[folded.index(c)]) for c in close)) if close else ""
                raise ParameterError("show_captions", choice, f"none of the {len(captions)} captions contains this text "
                                     f"(any case){hint}")
        matched[choice] = len(found)
        ids.update(dict.fromkeys(found))
    return CaptionPicks(tuple(list(ids)[:cap]), matched, len(ids))
