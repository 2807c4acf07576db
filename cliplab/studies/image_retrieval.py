"""Image->image retrieval study: descriptors (global / MAC / R-MAC / GeM), PCA-whitening, query expansion,
evaluation with Oxford/Paris ground truth or class labels."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cliplab.data.base import ImageDataset
from cliplab.data.sources import CroppedSource
from cliplab.embed import embed_images
from cliplab.embed.descriptors import DescriptorSpec, region_count
from cliplab.errors import CliplabError
from cliplab.models.base import LoadedModel
from cliplab.tasks.image_retrieval import (PROTOCOLS, Whitening, average_query_expansion, gt_map,
                                           labelled_retrieval_metrics, revisited_ground_truth, rmac_aggregate)
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.caption_retrieval import chunked_topk


@dataclass
class SimilarRun:
    model: LoadedModel
    gallery: ImageDataset
    spec: DescriptorSpec
    descriptors: np.ndarray  # (N, k) final, unit rows, aligned with ``indices``
    indices: np.ndarray
    metrics: dict = field(default_factory=dict)
    whitening: Whitening | None = None
    notes: list[str] = field(default_factory=list)


def _finish(raw: np.ndarray, spec: DescriptorSpec, n_regions: int, whitening: Whitening | None) -> np.ndarray:
    if spec.pooling == "rmac":
        return rmac_aggregate(raw.reshape(len(raw), n_regions, -1), whitening)
    x = l2_normalize(raw)
    return whitening.transform(x) if whitening is not None else x


def _fit_whitening(raw: np.ndarray, spec, n_regions, dim, whiten) -> Whitening:
    if spec.pooling == "rmac":
        regions = l2_normalize(raw.reshape(len(raw) * n_regions, -1))
        return Whitening.fit(regions, dim, whiten)
    return Whitening.fit(l2_normalize(raw), dim, whiten)


def run_similar(model: LoadedModel, gallery: ImageDataset, spec: DescriptorSpec, cache_dir=None, *,
                pca_fit: ImageDataset | None = None, pca_dim: int | None = None, whiten: bool = True,
                qe: int = 0, k: int = 10, gt_dir: str | Path | None = None, crop_queries: bool = True,
                batch_size: int = 64, num_workers: int | None = None, quiet: bool = False) -> SimilarRun:
    spec.validate()
    kw = dict(batch_size=batch_size, num_workers=num_workers, quiet=quiet)
    n_regions = region_count(model, spec)
    g = embed_images(model, gallery, cache_dir, descriptor=spec, description="gallery descriptors", **kw)
    if not len(g.indices):
        raise CliplabError(f"{gallery.name}: no usable gallery images")
    run = SimilarRun(model, gallery, spec, np.zeros((0, 0)), g.indices)
    if pca_dim is not None or pca_fit is not None:
        if pca_fit is not None:
            fit_raw = embed_images(model, pca_fit, cache_dir, descriptor=spec, description="PCA-fit descriptors",
                                   **kw).embeddings
        else:
            fit_raw = g.embeddings
            run.notes.append("PCA-whitening learned on the gallery itself (pass --pca-fit DIR to learn it on a "
                             "separate set, as the R-MAC protocol does)")
        run.whitening = _fit_whitening(fit_raw, spec, n_regions, pca_dim, whiten)
    run.descriptors = _finish(g.embeddings, spec, n_regions, run.whitening)
    db = run.descriptors

    if gt_dir is not None:
        from cliplab.data.oxford import read_oxford_gt

        ids = [gallery.source.id(int(i)) for i in g.indices]
        stems = {Path(x).stem: pos for pos, x in enumerate(ids)}
        queries = read_oxford_gt(gt_dir, set(stems))
        pos_of = [stems[q.image] for q in queries]
        src = CroppedSource(gallery.source, [(int(g.indices[p]), q.box if crop_queries else None)
                                             for p, q in zip(pos_of, queries)])
        qr = embed_images(model, src, cache_dir, descriptor=spec, description="query descriptors",
                          **{**kw, "num_workers": 0})
        if len(qr.indices) != len(queries):
            raise CliplabError(f"{len(queries) - len(qr.indices)} query images could not be read")
        qd = _finish(qr.embeddings, spec, n_regions, run.whitening)
        if qe:
            qd = average_query_expansion(qd, db, qe)
        _, rank = chunked_topk(qd, db, len(db))
        run.metrics, notes = gt_metrics(queries, rank, stems)
        run.notes.extend(notes)
    elif gallery.labels is not None:
        labels = gallery.labels[g.indices]
        qd = average_query_expansion(db, db, qe) if qe else None
        run.metrics = labelled_retrieval_metrics(db, labels, k, query_desc=qd)
    return run


def gt_metrics(queries, rankings, position_of: dict[str, int]) -> tuple[dict, list[str]]:
    """mAP / mP@1,5,10 of ranked gallery positions against Oxford-style ground truth (image names).

    Classic ground truth: positives = good + ok, junk ignored. Revisited ground truth (easy/hard lists): the Easy,
    Medium and Hard protocols, metrics suffixed ``_easy``/``_medium``/``_hard``. Ground-truth images that are not
    in the gallery stay in the positives (they count as misses, as in revisitop); the notes say how many.
    """
    missing: dict[str, int] = {}

    def ids(names_):  # a name missing from the gallery gets its own negative id: never ranked, so a miss
        return [position_of[n] if n in position_of else missing.setdefault(n, -1 - len(missing)) for n in names_]

    names = [q.name for q in queries]
    metrics: dict = {"queries": len(queries)}
    if queries and all(q.revisited for q in queries):
        for protocol in PROTOCOLS:
            gts = [tuple(ids(x) for x in revisited_ground_truth(q.easy, q.hard, q.junk, protocol)) for q in queries]
            m = gt_map(rankings, gts)
            for key in ("mAP", "mP@1", "mP@5", "mP@10", "queries_without_positives"):
                metrics[f"{key}_{protocol}"] = m[key]
            metrics[f"per_query_ap_{protocol}"] = dict(zip(names, m["per_query_ap"]))
    else:
        m = gt_map(rankings, [(ids(q.good + q.ok), ids(q.junk)) for q in queries])
        metrics.update({k: m[k] for k in ("mAP", "mP@1", "mP@5", "mP@10", "queries_without_positives")})
        metrics["per_query_ap"] = dict(zip(names, m["per_query_ap"]))
    notes = []
    if missing:
        pos_names = {n for q in queries for n in q.good + q.ok}
        n_pos = len(pos_names & set(missing))
        notes.append(f"{len(missing)} ground-truth image(s) are not in the gallery ({n_pos} of them positives, "
                     f"e.g. {next(iter(missing))!r}); positives missing from the gallery count as misses, as in the "
                     "revisited Oxford/Paris protocol: check that --dataset is the whole gallery (no --limit)")
    for k, v in metrics.items():
        if k.startswith("queries_without_positives") and v:
            where = f" under the {k.rsplit('_', 1)[1]} protocol" if k != "queries_without_positives" else ""
            notes.append(f"{v} query(s) have no positives{where} and are left out of its means (as revisitop does)")
    return metrics, notes


def query_hits(run: SimilarRun, model, paths: list[str], cache_dir, k: int, qe: int = 0):
    """Top-k gallery positions and scores for ad-hoc query images."""
    from cliplab.data.sources import FileSource

    n_regions = region_count(model, run.spec)
    res = embed_images(model, FileSource(paths), cache_dir, descriptor=run.spec, quiet=True, num_workers=0)
    if res.failures:
        _, ident, reason = res.failures[0]
        raise CliplabError(f"--query {ident}: {reason}")
    q = _finish(res.embeddings, run.spec, n_regions, run.whitening)
    if qe:
        q = average_query_expansion(q, run.descriptors, qe)
    return chunked_topk(q, run.descriptors, k)


def similar_figure(run: SimilarRun, query_paths: list[str], scores, positions, path) -> Path:
    from cliplab.data.imageio import open_rgb
    from cliplab.report.plots import image_grid, save_figure

    src = run.gallery.source
    imgs, caps, rows = [], [], []
    for qi, qp in enumerate(query_paths):
        imgs.append(open_rgb(qp))
        caps.append("query")
        for j in range(positions.shape[1]):
            imgs.append(src.load(int(run.indices[positions[qi, j]])))
            caps.append(f"#{j + 1}  {scores[qi, j]:.3f}")
        rows.append(Path(qp).name)
    fig = image_grid(imgs, caps, cols=positions.shape[1] + 1, row_titles=rows,
                     title=f"similar images · {run.model.name} · {run.spec.pooling}")
    return save_figure(fig, [path])[0]
