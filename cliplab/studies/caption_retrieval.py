"""Caption retrieval study: text->image and image->text recall@k and ranks over a captioned dataset."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cliplab.data.base import ImageDataset
from cliplab.embed import EmbeddingResult, embed_images, embed_texts
from cliplab.errors import CliplabError
from cliplab.models.base import LoadedModel
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.caption_retrieval import RetrievalResult, caption_retrieval, chunked_topk


@dataclass
class CaptionRetrieval:
    model: LoadedModel
    dataset: ImageDataset
    images: EmbeddingResult
    captions: list[str]
    caption_image: np.ndarray  # position (into images.embeddings) of each caption's image
    text_emb: np.ndarray
    result: RetrievalResult
    seconds: float = 0.0

    def caption_frame(self, k: int = 5) -> pd.DataFrame:
        """One row per caption: its image, rank of that image, and the top-k retrieved images with scores."""
        s, idx = chunked_topk(self.text_emb, self.images.embeddings, k)
        src = self.dataset.source
        ids = [src.id(int(i)) for i in self.images.indices]
        df = pd.DataFrame({"caption": self.captions, "image": [ids[j] for j in self.caption_image],
                           "rank": self.result.t2i_ranks})
        for j in range(idx.shape[1]):
            df[f"top{j + 1}_image"] = [ids[i] for i in idx[:, j]]
            df[f"top{j + 1}_score"] = s[:, j]
        return df


def run_caption_retrieval(model: LoadedModel, dataset: ImageDataset, cache_dir=None, *, ks=(1, 5, 10), device=None,
                          batch_size: int = 64, num_workers: int | None = None, quiet: bool = False) -> CaptionRetrieval:
    if not dataset.captions or not any(dataset.captions):
        raise CliplabError(f"dataset {dataset.name!r} has no captions; caption retrieval needs a caption file "
                           "(.csv/.jsonl), a COCO captions .json or a Karpathy split .json")
    t0 = time.perf_counter()
    images = embed_images(model, dataset, cache_dir, batch_size=batch_size, num_workers=num_workers, quiet=quiet)
    captions, owner = [], []
    for pos, i in enumerate(images.indices):
        for c in dataset.captions[int(i)]:
            captions.append(c)
            owner.append(pos)
    if not captions:
        raise CliplabError(f"dataset {dataset.name!r}: none of the embedded images has a caption")
    text_emb = embed_texts(model, captions, cache_dir)
    owner_arr = np.asarray(owner, dtype=np.int64)
    res = caption_retrieval(images.embeddings, text_emb, owner_arr, ks, device=device)
    return CaptionRetrieval(model, dataset, images, captions, owner_arr, text_emb, res, time.perf_counter() - t0)


def failures_figure(run: CaptionRetrieval, path: str | Path, n: int = 6, k: int = 3) -> Path:
    """Worst-ranked captions: each row shows the true image, then the top-k images retrieved instead."""
    from cliplab.report.plots import image_grid, save_figure

    worst = np.argsort(-run.result.t2i_ranks, kind="stable")[:n]
    s, idx = chunked_topk(run.text_emb[worst], run.images.embeddings, k)
    src = run.dataset.source
    own = run.caption_image[worst]
    true_scores = (l2_normalize(run.text_emb[worst]) * l2_normalize(run.images.embeddings[own])).sum(1)
    imgs, caps, ok, titles = [], [], [], []
    for row, c in enumerate(worst):
        true_pos = int(run.caption_image[c])
        imgs.append(src.load(int(run.images.indices[true_pos])))
        caps.append(f"true image · rank {run.result.t2i_ranks[c]}\nscore {true_scores[row]:.3f}")
        ok.append(True)
        for j in range(idx.shape[1]):
            imgs.append(src.load(int(run.images.indices[idx[row, j]])))
            caps.append(f"retrieved #{j + 1}\nscore {s[row, j]:.3f}")
            ok.append(int(idx[row, j]) == true_pos)
        titles.append(run.captions[c])
    fig = image_grid(imgs, caps, cols=k + 1, row_titles=titles, highlight=ok,
                     title=f"caption -> image failures · {run.model.name} · {run.dataset.name}")
    return save_figure(fig, [path])[0]
