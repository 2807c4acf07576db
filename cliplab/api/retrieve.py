"""Retrieval studies from Python: retrieval (caption retrieval), search, similar (image retrieval), cluster. Each
calls the same ``run_*`` as its CLI command, with the same defaults, so the numbers are the CLI's."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cliplab.api._inputs import as_dataset, as_model, study
from cliplab.data import ImageDataset
from cliplab.embed.descriptors import DescriptorSpec
from cliplab.models import LoadedModel
from cliplab.studies.caption_retrieval import CaptionRetrieval, run_caption_retrieval
from cliplab.studies.cluster import ClusterRun, run_cluster
from cliplab.studies.image_retrieval import SimilarRun, run_similar
from cliplab.studies.search import SearchRun, build_queries, run_search

Model = LoadedModel | str
Data = ImageDataset | str | Path


@study
def retrieval(model: Model, dataset: Data = "shapes", *, ks: Sequence[int] = (1, 5, 10), split: str | None = None,
              image_root: str | None = None, limit: int | None = None, cache_dir=None, batch_size: int = 64,
              workers: int | None = None, quiet: bool = False) -> CaptionRetrieval:
    """Caption retrieval: text→image and image→text recall@k, median and mean rank.

    Parameters
    ----------
    model
        A model from :func:`cliplab.load_model`, or a model name.
    dataset : ImageDataset or str
        Captioned images: a caption file (.csv/.jsonl), a COCO captions .json, a Karpathy split .json, or shapes.
    ks : list of int
        The recall@k cut-offs.
    split, image_root, limit
        Karpathy split; image folder of a COCO/Karpathy JSON; a seeded subset of ``limit`` images.

    Returns
    -------
    CaptionRetrieval
        ``.metrics``; ``.artifacts()["captions"]`` holds each caption's rank and top-5 images.

    Examples
    --------
    >>> cliplab.retrieval("tiny-shapes", "shapes", limit=200, quiet=True)
    """
    ds = as_dataset(dataset, split=split, data_root=image_root, limit=limit, cache_dir=cache_dir)
    m = as_model(model, cache_dir=cache_dir, quiet=quiet)
    return run_caption_retrieval(m, ds, cache_dir, ks=tuple(k for k in ks if k > 0) or (1, 5, 10), device=m.device,
                                 batch_size=batch_size, num_workers=workers, quiet=quiet)


@study
def search(models: Model | Sequence[Model], dataset: Data, queries: str | Sequence[str] = (), *,
           image: str | Path | Sequence[str | Path] = (), plus: str | None = None, minus: str | None = None,
           text_weight: float = 1.0, queries_file: str | Path | None = None, k: int = 8,
           index_type: str | None = None, index: str | Path | None = None, split: str | None = None,
           limit: int | None = None, cache_dir=None, batch_size: int = 64, workers: int | None = None,
           quiet: bool = False) -> SearchRun:
    """Search images by text (or by image, or image ± text): the top-k images per query with cosine scores, for
    one or several models side by side.

    Parameters
    ----------
    models : LoadedModel, str or a list of them
        One model, or several (their results side by side).
    dataset : ImageDataset or str
        The images searched: a folder, a caption file or a dataset name.
    queries : str or list of str
        Text queries.
    image : path or list of paths
        Query images; ``plus`` / ``minus`` add or subtract a text's embedding (weight ``text_weight``).
    queries_file : path, optional
        One query per line (``# name`` starts a family), or JSON ``{family: [queries]}``.
    k : int
        Images per query.
    index_type, index
        Search with a FAISS index (``"flat"``, ``"ivf"``, ``"hnsw"``) instead of exact search; ``index`` is the
        file it is kept in.

    Returns
    -------
    SearchRun
        Inline: the hits table and one grid per query (top-k thumbnails, one row per model).

    Examples
    --------
    >>> cliplab.search("tiny-shapes", "shapes", ["a red circle", "a small blue square"], k=5, quiet=True)
    """
    qs = build_queries([queries] if isinstance(queries, str) else list(queries),
                       queries_file, [image] if isinstance(image, (str, Path)) else list(image), plus, minus)
    ds = as_dataset(dataset, split=split, limit=limit, cache_dir=cache_dir)
    many = [models] if isinstance(models, (str, LoadedModel)) else list(models)
    loaded = [as_model(m, cache_dir=cache_dir, quiet=quiet) for m in many]
    return run_search(loaded, ds, qs, cache_dir, k=k, text_weight=text_weight, index_path=index,
                      index_type=index_type, batch_size=batch_size, num_workers=workers, quiet=quiet)


@study
def similar(model: Model, dataset: Data, *, descriptor: str = "global", layer: str | None = None, levels: int = 3,
            gem_p: float = 3.0, pca_dim: int | None = None, whiten: bool = True, pca_fit: Data | None = None,
            qe: int = 0, gt: str | Path | None = None, crop: bool = True, k: int = 10,
            query: str | Path | Sequence[str | Path] = (), split: str | None = None, limit: int | None = None,
            cache_dir=None, batch_size: int = 64, workers: int | None = None, quiet: bool = False) -> SimilarRun:
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
        Oxford/Paris ground truth (a folder of ``*_query.txt`` lists, or a revisited ``gnd_*.pkl``); ``crop``
        uses the query boxes.
    k : int
        k of mAP@k / P@k, and hits per ``query`` image.

    Returns
    -------
    SimilarRun

    Examples
    --------
    >>> cliplab.similar("tiny-shapes", "shapes:color", descriptor="rmac", limit=300, quiet=True)
    """
    spec = DescriptorSpec(descriptor, layer, levels, 0.4, gem_p)
    spec.validate()
    ds = as_dataset(dataset, split=split, limit=limit, cache_dir=cache_dir)
    fit = as_dataset(pca_fit, cache_dir=cache_dir, param="pca_fit") if pca_fit is not None else None
    m = as_model(model, cache_dir=cache_dir, quiet=quiet)
    queries = [query] if isinstance(query, (str, Path)) else list(query)
    return run_similar(m, ds, spec, cache_dir, pca_fit=fit, pca_dim=pca_dim, whiten=whiten, qe=qe, k=k, gt_dir=gt,
                       crop_queries=crop, query_images=[Path(q) for q in queries], batch_size=batch_size,
                       num_workers=workers, quiet=quiet)


@study
def cluster(model: Model, dataset: Data, *, k: int | Sequence[int] | None = None, pca_dim: int | None = None,
            kmeans: str = "sklearn", seed: int = 0, per_cluster: int = 8, split: str | None = None,
            limit: int | None = None, cache_dir=None, batch_size: int = 64, workers: int | None = None,
            quiet: bool = False) -> ClusterRun:
    """k-means on the image embeddings (optionally after PCA): inertia, silhouette, and NMI, ARI and purity
    against the labels.

    Parameters
    ----------
    model, dataset
        As for :func:`cliplab.zeroshot`.
    k : int or list of int, optional
        Number of clusters, or several to sweep (default: the number of classes, else 10).
    kmeans : {"sklearn", "faiss"}
        The k-means implementation.
    per_cluster : int
        Images per cluster in the sample grid.

    Returns
    -------
    ClusterRun

    Examples
    --------
    >>> cliplab.cluster("tiny-shapes", "shapes:color", k=[6, 12], limit=300, quiet=True)
    """
    ds = as_dataset(dataset, split=split, limit=limit, cache_dir=cache_dir)
    m = as_model(model, cache_dir=cache_dir, quiet=quiet)
    ks = [k] if isinstance(k, int) else (list(k) if k else None)
    return run_cluster(m, ds, cache_dir, ks=ks, pca_dim=pca_dim, implementation=kmeans, seed=seed,
                       per_cluster=per_cluster, batch_size=batch_size, num_workers=workers, quiet=quiet)
