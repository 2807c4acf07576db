"""Retrieval studies from Python: retrieval (caption retrieval), search, similar (image retrieval), cluster. Each
calls the same ``run_*`` as its CLI command, with the same defaults, so the numbers are the CLI's.

Keywords are the CLI's flags with underscores; flags that name output files (``--output``, ``--captions``,
``--failures``, ``--grids``, ``--grid``, ``--results``) are the result's methods and inline figures instead."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cliplab.api._inputs import (Data, Model, model_for as _model, as_dataset, as_ints, as_list, as_model, as_specs, study)
from cliplab.data import ImageDataset
from cliplab.embed.descriptors import DescriptorSpec
from cliplab.errors import ParameterError
from cliplab.models import LoadedModel
from cliplab.models.specs import ModelSpec
from cliplab.progress import warn
from cliplab.studies.caption_retrieval import CaptionRetrieval, run_caption_retrieval
from cliplab.studies.cluster import ClusterRun, run_cluster
from cliplab.studies.image_retrieval import SimilarRun, run_similar
from cliplab.studies.search import SearchRun, build_queries, run_search
from cliplab.tasks.clustering import check_implementation


@study
def retrieval(model: Model = "tiny-shapes", dataset: Data = "shapes", *, ks: str | Sequence[int] = (1, 5, 10),
              pretrained: str | None = None, split: str | None = None, image_root: str | None = None,
              limit: int | None = None, device: str | None = None, precision: str | None = None,
              backend: str = "auto", cache_dir=None, batch_size: int = 64, workers: int | None = None,
              quiet: bool = False) -> CaptionRetrieval:
    """Caption retrieval: text→image and image→text recall@k, median and mean rank.

    Parameters
    ----------
    model
        A model from :func:`cliplab.load_model`, or a model name.
    dataset : ImageDataset or str
        Captioned images: a caption file (.csv/.jsonl), a COCO captions .json, a Karpathy split .json, or shapes.
    ks : list of int (or "1,5,10")
        The recall@k cut-offs.
    split, image_root, limit
        Karpathy split; image folder of a COCO/Karpathy JSON; a seeded subset of ``limit`` images.
    pretrained, device, precision, backend, cache_dir, batch_size, workers, quiet
        As for :func:`cliplab.zeroshot`.

    Returns
    -------
    CaptionRetrieval
        ``.metrics``; ``.artifacts()["captions"]`` holds each caption's rank and top-5 images.

    Examples
    --------
    >>> cliplab.retrieval("tiny-shapes", "shapes", limit=200, quiet=True)
    """
    cut = tuple(k for k in as_ints(ks, "ks") if k > 0) or (1, 5, 10)
    ds = as_dataset(dataset, split=split, data_root=image_root, limit=limit, cache_dir=cache_dir,
                    names={"data_root": "image_root"})
    if getattr(ds, "missing", 0):
        warn(f"{ds.missing} images listed in {ds.name} are not on disk and were left out")
    m = _model(model, pretrained, device, precision, backend, cache_dir, quiet)
    return run_caption_retrieval(m, ds, cache_dir, ks=cut, device=m.device, batch_size=batch_size,
                                 num_workers=workers, quiet=quiet)


@study
def search(model: Model | Sequence[Model] = "tiny-shapes", dataset: Data = "shapes",
           query: str | Sequence[str] = (), *, queries: str | Path | None = None,
           image: str | Path | Sequence[str | Path] = (), plus: str | None = None, minus: str | None = None,
           text_weight: float = 1.0, k: int = 8, index_type: str | None = None, index: str | Path | None = None,
           pretrained: str | Sequence[str | None] | None = None, split: str | None = None,
           data_root: str | None = None, limit: int | None = None, device: str | None = None,
           precision: str | None = None, backend: str = "auto", cache_dir=None, batch_size: int = 64,
           workers: int | None = None, quiet: bool = False) -> SearchRun:
    """Search images by text (or by image, or image ± text): the top-k images per query with cosine scores, for
    one or several models side by side.

    Parameters
    ----------
    model : LoadedModel, str or a list of them
        One model, or several (their results side by side); ``pretrained`` pairs with the names by position.
    dataset : ImageDataset or str
        The images searched: a folder, a caption file or a dataset name.
    query : str or list of str
        Text queries.
    queries : path, optional
        A file of queries: one per line (``# name`` starts a family), or JSON ``{family: [queries]}``.
    image : path or list of paths
        Query images; ``plus`` / ``minus`` add or subtract a text's embedding (weight ``text_weight``).
    k : int
        Images per query (the CLI's ``--topk`` / ``-k``).
    index_type, index
        Search with a FAISS index (``"flat"``, ``"ivf"``, ``"hnsw"``) instead of exact search; ``index`` is the
        file it is kept in (reused when it matches the model and images).
    pretrained, device, precision, backend, split, data_root, limit, cache_dir, batch_size, workers, quiet
        As for :func:`cliplab.zeroshot`.

    Returns
    -------
    SearchRun
        Inline: the hits table and one grid per query (top-k thumbnails, one row per model).

    Examples
    --------
    >>> cliplab.search("tiny-shapes", "shapes", ["a red circle", "a small blue square"], k=5, quiet=True)
    """
    if queries is not None and not isinstance(queries, (str, Path)):
        raise ParameterError("queries", type(queries).__name__, "{p:queries} is a file of queries; give the "
                             "queries themselves as {p:query}=[...]", prefix=False)
    qs = build_queries(as_list(query, (str,)), queries, as_list(image, (str, Path)), plus, minus)
    specs = as_specs(as_list(model, (str, Path, LoadedModel, ModelSpec)) or ["tiny-shapes"], pretrained, None)
    ds = as_dataset(dataset, split=split, data_root=data_root, limit=limit, cache_dir=cache_dir)
    loaded = [as_model(s, device=device, precision=precision, backend=backend) if isinstance(s, LoadedModel) else
              as_model(s.model, s.pretrained, device=device, precision=precision, backend=backend,
                       cache_dir=cache_dir, quiet=quiet) for s in specs]
    return run_search(loaded, ds, qs, cache_dir, k=k, text_weight=text_weight, index_path=index,
                      index_type=index_type, batch_size=batch_size, num_workers=workers, quiet=quiet)


@study
def similar(model: Model = "tiny-shapes", dataset: Data = "shapes", *, descriptor: str = "global",
            layer: str | None = None, levels: int = 3, gem_p: float = 3.0, pca_dim: int | None = None,
            whiten: bool = True, pca_fit: Data | None = None, qe: int = 0, gt: str | Path | None = None,
            no_crop: bool = False, k: int = 10, query: str | Path | Sequence[str | Path] = (),
            pretrained: str | None = None, split: str | None = None, data_root: str | None = None,
            limit: int | None = None, device: str | None = None, precision: str | None = None,
            backend: str = "auto", cache_dir=None, batch_size: int = 64, workers: int | None = None,
            quiet: bool = False) -> SimilarRun:
    """Image→image retrieval: global / MAC / R-MAC / GeM descriptors, PCA-whitening, query expansion, and mAP
    (the revisited Oxford/Paris protocol with ``gt``, else class labels).

    Parameters
    ----------
    model, dataset
        The model, and the gallery (class subfolders = labels).
    descriptor : {"global", "mac", "rmac", "gem"}
        The CLIP embedding, or a pooled feature map from ``layer`` (``levels`` R-MAC scales, GeM ``gem_p``).
    pca_dim, whiten, pca_fit
        PCA(-whitening) to ``pca_dim`` dimensions, learned on ``pca_fit`` (never the gallery, when given).
    qe : int
        Average query expansion with the top ``qe`` neighbours.
    gt : path, optional
        Oxford/Paris ground truth (a folder of ``*_query.txt`` lists, or a revisited ``gnd_*.pkl``); ``no_crop``
        uses whole query images instead of their boxes.
    k : int
        k of mAP@k / P@k, and hits per ``query`` image (the CLI's ``--topk`` / ``-k``).
    query : path or list of paths
        Query images whose top-k are shown.
    pretrained, device, precision, backend, split, data_root, limit, cache_dir, batch_size, workers, quiet
        As for :func:`cliplab.zeroshot`.

    Returns
    -------
    SimilarRun

    Examples
    --------
    >>> cliplab.similar("tiny-shapes", "shapes:color", descriptor="rmac", limit=300, quiet=True)
    """
    spec = DescriptorSpec(descriptor, layer, levels, 0.4, gem_p)
    spec.validate()
    queries = [Path(q) for q in as_list(query, (str, Path))]
    for q in queries:
        if not q.is_file():
            raise ParameterError("query", str(q), "file not found", quote=False)
    ds = as_dataset(dataset, split=split, data_root=data_root, limit=limit, cache_dir=cache_dir)
    fit = as_dataset(pca_fit, data_root=None if isinstance(pca_fit, ImageDataset) else data_root,
                     cache_dir=cache_dir, names={"dataset": "pca_fit"}) if pca_fit is not None else None
    m = _model(model, pretrained, device, precision, backend, cache_dir, quiet)
    return run_similar(m, ds, spec, cache_dir, pca_fit=fit, pca_dim=pca_dim, whiten=whiten, qe=qe, k=k, gt_dir=gt,
                       crop_queries=not no_crop, query_images=queries, batch_size=batch_size, num_workers=workers,
                       quiet=quiet)


@study
def cluster(model: Model = "tiny-shapes", dataset: Data = "shapes", *, k: str | int | Sequence[int] | None = None,
            pca_dim: int | None = None, kmeans: str = "sklearn", seed: int = 0, per_cluster: int = 8,
            pretrained: str | None = None, split: str | None = None, data_root: str | None = None,
            limit: int | None = None, device: str | None = None, precision: str | None = None,
            backend: str = "auto", cache_dir=None, batch_size: int = 64, workers: int | None = None,
            quiet: bool = False) -> ClusterRun:
    """k-means on the image embeddings (optionally after PCA): inertia, silhouette, and NMI, ARI and purity
    against the labels.

    Parameters
    ----------
    model, dataset
        As for :func:`cliplab.zeroshot`.
    k : int or list of int (or "6,12"), optional
        Number of clusters, or several to sweep (default: the number of classes, else 10).
    kmeans : {"sklearn", "faiss"}
        The k-means implementation.
    per_cluster : int
        Images per cluster in the sample grid.
    pretrained, device, precision, backend, split, data_root, limit, cache_dir, batch_size, workers, quiet
        As for :func:`cliplab.zeroshot`.

    Returns
    -------
    ClusterRun

    Examples
    --------
    >>> cliplab.cluster("tiny-shapes", "shapes:color", k=[6, 12], limit=300, quiet=True)
    """
    check_implementation(kmeans)
    ks = as_ints(k, "k") if k else None
    ds = as_dataset(dataset, split=split, data_root=data_root, limit=limit, cache_dir=cache_dir)
    m = _model(model, pretrained, device, precision, backend, cache_dir, quiet)
    return run_cluster(m, ds, cache_dir, ks=ks, pca_dim=pca_dim, implementation=kmeans, seed=seed,
                       per_cluster=per_cluster, batch_size=batch_size, num_workers=workers, quiet=quiet)
