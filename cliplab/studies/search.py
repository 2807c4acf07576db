"""Text->image (and image->image, image+text) search over a dataset's images, for one or more models."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cliplab.data.base import ImageDataset
from cliplab.embed import EmbeddingResult, embed_images, embed_texts
from cliplab.errors import CliplabError
from cliplab.models.base import LoadedModel
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.caption_retrieval import chunked_topk


@dataclass
class Query:
    text: str | None = None
    image: str | None = None  # path of a query image
    plus: str | None = None  # text added to an image query ("image + text" arithmetic)
    minus: str | None = None  # text subtracted
    family: str = ""

    @property
    def label(self) -> str:
        if self.image is None:
            return self.text or ""
        out = f"[{Path(self.image).name}]"
        if self.plus:
            out += f" + '{self.plus}'"
        if self.minus:
            out += f" - '{self.minus}'"
        return out


def read_queries(path: str | Path) -> list[Query]:
    """A .txt file (one query per line; ``# family`` lines start a family), or JSON ``{family: [queries]}``."""
    path = Path(path)
    if not path.is_file():
        raise CliplabError(f"--queries {path}: file not found")
    text = path.read_text(encoding="utf-8")
    out: list[Query] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliplabError(f"--queries {path}: invalid JSON ({exc.msg})") from None
        if isinstance(data, list):
            data = {"": data}
        if not isinstance(data, dict):
            raise CliplabError(f"--queries {path}: expected {{family: [queries]}} or a list")
        for fam, qs in data.items():
            out += [Query(text=str(q), family=fam) for q in qs]
    else:
        fam = ""
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("#"):
                fam = line.lstrip("#").strip()
            elif line:
                out.append(Query(text=line, family=fam))
    if not out:
        raise CliplabError(f"--queries {path}: no queries")
    return out


@dataclass
class ModelHits:
    model: LoadedModel
    images: EmbeddingResult
    scores: np.ndarray  # (Q, k)
    positions: np.ndarray  # (Q, k) positions into images.indices
    score_stats: list[dict] = field(default_factory=list)  # distribution of all gallery scores per query


@dataclass
class SearchRun:
    dataset: ImageDataset
    queries: list[Query]
    hits: list[ModelHits]
    k: int

    def ids(self, h: ModelHits, q: int) -> list[str]:
        src = self.dataset.source
        return [src.id(int(h.images.indices[p])) for p in h.positions[q]]


def query_vectors(model: LoadedModel, queries: list[Query], cache_dir=None, text_weight: float = 1.0) -> np.ndarray:
    from cliplab.data.sources import FileSource

    out = np.zeros((len(queries), model.embed_dim), np.float32)
    texts = [q.text for q in queries if q.image is None]
    if texts:
        t = l2_normalize(embed_texts(model, texts, cache_dir))
        out[[i for i, q in enumerate(queries) if q.image is None]] = t
    img_q = [i for i, q in enumerate(queries) if q.image is not None]
    if img_q:
        src = FileSource([queries[i].image for i in img_q])
        res = embed_images(model, src, cache_dir, quiet=True, num_workers=0)
        if res.failures:
            _, ident, reason = res.failures[0]
            raise CliplabError(f"--image {ident}: {reason}")
        vecs = l2_normalize(res.embeddings)
        for j, i in enumerate(img_q):
            q = queries[i]
            v = vecs[j].copy()
            if q.plus:
                v = v + text_weight * l2_normalize(embed_texts(model, [q.plus], cache_dir))[0]
            if q.minus:
                v = v - text_weight * l2_normalize(embed_texts(model, [q.minus], cache_dir))[0]
            out[i] = l2_normalize(v)
    return out


def run_search(models: list[LoadedModel], dataset: ImageDataset, queries: list[Query], cache_dir=None, *, k: int = 8,
               text_weight: float = 1.0, index_path: str | Path | None = None, index_type: str | None = None,
               batch_size: int = 64, num_workers: int | None = None, quiet: bool = False) -> SearchRun:
    """Top-k per query and model. Exact chunked search by default; with ``index_type`` a FAISS index is
    built (or, with ``index_path``, reloaded when its fingerprints match, else rebuilt and saved)."""
    hits = []
    for m in models:
        images = embed_images(m, dataset, cache_dir, batch_size=batch_size, num_workers=num_workers, quiet=quiet)
        if not len(images.indices):
            raise CliplabError(f"dataset {dataset.name!r}: no usable images to search")
        qv = query_vectors(m, queries, cache_dir, text_weight)
        if index_type or index_path:
            s, pos = _index_search(m, dataset, images, qv, k, index_type or "flat",
                                   _per_model_path(index_path, m, len(models)))
        else:
            s, pos = chunked_topk(qv, images.embeddings, k)
        all_scores_stats = []
        gal = l2_normalize(images.embeddings)
        for r in range(0, len(qv), 256):
            block = qv[r:r + 256] @ gal.T
            for row in block:
                all_scores_stats.append({"mean": float(row.mean()), "std": float(row.std()),
                                         "p50": float(np.median(row)), "p99": float(np.quantile(row, 0.99)),
                                         "max": float(row.max())})
        hits.append(ModelHits(m, images, s, pos, all_scores_stats))
    return SearchRun(dataset, queries, hits, k)


def _per_model_path(path, model: LoadedModel, n_models: int):
    if path is None:
        return None
    path = Path(path)
    return path if n_models == 1 else path.with_name(f"{path.stem}-{model.fingerprint[:8]}{path.suffix}")


def _index_search(model, dataset, images, qv, k, kind, path):
    from cliplab.index import VectorIndex

    meta = {"model_fingerprint": model.fingerprint, "dataset_fingerprint": dataset.fingerprint,
            "rows": int(len(images.indices))}
    idx = None
    if path is not None and Path(path).is_file():
        idx = VectorIndex.load(path)
        if not idx.matches(meta) or idx.kind != kind:
            idx = None  # stale: other model, data or index type
    if idx is None:
        ids = [str(int(i)) for i in images.indices]
        idx = VectorIndex.build(images.embeddings, ids, kind, meta=meta)
        if path is not None:
            idx.save(path)
    s, i = idx.search(qv, k)
    return s, i


def search_figures(run: SearchRun, folder: str | Path) -> list[Path]:
    """One PNG per query: a row of top-k images (with cosine scores) per model."""
    from cliplab.report.plots import image_grid, save_figure

    folder = Path(folder)
    src = run.dataset.source
    out = []
    for q, query in enumerate(run.queries):
        imgs, caps, rows = [], [], []
        for h in run.hits:
            rows.append(h.model.name if h.model.pretrained is None else f"{h.model.name}\n{h.model.pretrained}")
            for j in range(run.k):
                if j < h.positions.shape[1] and h.positions[q, j] >= 0:
                    p = int(h.positions[q, j])
                    imgs.append(src.load(int(h.images.indices[p])))
                    caps.append(f"#{j + 1}  {h.scores[q, j]:.3f}")
                else:
                    imgs.append(None)
                    caps.append("")
        fig = image_grid(imgs, caps, cols=run.k, row_titles=rows if len(run.hits) > 1 else None,
                         title=f"{query.label}" + (f"  ({query.family})" if query.family else ""))
        slug = "".join(ch if ch.isalnum() else "-" for ch in query.label.lower()).strip("-")[:60] or "query"
        out += save_figure(fig, [folder / f"{q + 1:03d}-{slug}.png"])
    return out
