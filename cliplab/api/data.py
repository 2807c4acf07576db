"""Models, datasets and embeddings from Python: the inputs every study takes, and the cached embeddings for your
own analysis."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cliplab.api._inputs import as_dataset, as_model, study
from cliplab.data import ImageDataset
from cliplab.embed import embed_images
from cliplab.embed.texts import embed_texts as _embed_texts
from cliplab.models import LoadedModel
from cliplab.results.exports import embedding_frame

Model = LoadedModel | str
Data = ImageDataset | str | Path


@study
def load_model(model: str = "tiny-shapes", pretrained: str | None = None, *, device: str | None = None,
               precision: str | None = None, backend: str = "auto", cache_dir=None, quiet: bool = False,
               **options) -> LoadedModel:
    """Load any supported CLIP model (the CLI's ``--model`` / ``--pretrained`` values).

    Parameters
    ----------
    model : str
        An open_clip architecture (``"ViT-B-32"``), ``hf-hub:org/name``, ``local-dir:FOLDER``, a model-config
        .json, ``hf:org/name`` (transformers), or a model trained by ``cliplab train`` (``"tiny-shapes"`` ships
        with cliplab).
    pretrained : str, optional
        A pretrained tag (``"openai"``, ``"laion2b_s34b_b79k"``) or a checkpoint file (.pt/.bin/.safetensors).
    device, precision
        ``"cpu"``, ``"cuda"``, ...; ``"fp32"``, ``"amp"``, ``"bf16"``, ... (default: amp on GPU, fp32 on CPU).
    backend : {"auto", "torch", "openvino"}
        What runs the towers: ``auto`` is OpenVINO on the CPU when installed (fp32, the same numbers as PyTorch to
        float rounding), PyTorch otherwise.
    options
        ``channels_last``, ``compile``, ``force_quick_gelu`` (see :func:`cliplab.models.load_model`).

    Returns
    -------
    LoadedModel

    Examples
    --------
    >>> m = cliplab.load_model("ViT-B-32", pretrained="openai")
    >>> m = cliplab.load_model("tiny-shapes")
    """
    if not isinstance(model, str):
        raise TypeError(f"model must be a model name (str), not {type(model).__name__}")
    loaded = as_model(model, pretrained, device=device, precision=precision, backend=backend, cache_dir=cache_dir,
                      quiet=quiet)
    if options:  # rarely used loading options: the library's own loader takes them
        from cliplab.models import load_model as _load

        loaded = _load(model, pretrained, device=device, precision=precision, cache_dir=cache_dir, backend=backend,
                       **options)
    return loaded


@study
def load_dataset(dataset: str | Path = "shapes", *, split: str | None = None, root: str | None = None,
                 limit: int | None = None, classnames: str | None = None, cache_dir=None,
                 quiet: bool = False) -> ImageDataset:
    """Load a dataset (the CLI's ``--dataset`` values).

    Parameters
    ----------
    dataset : str or path
        ``shapes[:ATTRIBUTE]``, a torchvision name (``cifar10``, ``eurosat``, ``food101``, ...), a folder of class
        subfolders (or of split folders, then ``split`` is required), a caption file (.csv/.jsonl), or a COCO /
        Karpathy captions .json.
    split : str, optional
        The split (named datasets: default ``test``). A split that does not exist is an error listing those that do.
    root : str, optional
        Where torchvision datasets are (downloaded when online).
    limit : int, optional
        A seeded random subset of ``limit`` images (every class of a class-sorted folder stays covered).
    classnames : str, optional
        A class names file (.txt, one per line, or .json list/map).

    Returns
    -------
    ImageDataset
        ``.classnames``, ``.labels``, ``len(ds)``; accepted by every study function.

    Examples
    --------
    >>> ds = cliplab.load_dataset("eurosat", root="data/", split="test")
    >>> ds = cliplab.load_dataset("shapes:color", limit=200)
    """
    return as_dataset(dataset, split=split, data_root=root, limit=limit, classnames=classnames, cache_dir=cache_dir)


@study
def embed(model: Model, dataset: Data, *, frame: bool = False, normalize: bool = False, split: str | None = None,
          limit: int | None = None, cache_dir=None, batch_size: int = 64, workers: int | None = None,
          pipeline: str = "pil", quiet: bool = False) -> np.ndarray | pd.DataFrame:
    """Image embeddings from the same cache every study uses (computed only for images not cached yet).

    Parameters
    ----------
    model, dataset
        As for :func:`cliplab.zeroshot`.
    frame : bool
        Return a DataFrame (``row``, ``id``, ``label``, ``classname``, ``embedding``) instead of an array.
    normalize : bool
        Unit-length rows (the studies' cosine space); default: the tower's raw output, as ``cliplab embed`` writes.

    Returns
    -------
    numpy.ndarray of shape (n, dim), or pandas.DataFrame
        One row per readable image, in dataset order; unreadable images are left out with a warning.

    Examples
    --------
    >>> X = cliplab.embed("tiny-shapes", "shapes:color", limit=100, quiet=True)
    >>> X.shape
    (100, 64)
    """
    ds = as_dataset(dataset, split=split, limit=limit, cache_dir=cache_dir)
    m = as_model(model, cache_dir=cache_dir, quiet=quiet)
    res = embed_images(m, ds, cache_dir, batch_size=batch_size, num_workers=workers, quiet=quiet, pipeline=pipeline)
    if res.failures:
        from cliplab.progress import warn

        warn(f"{len(res.failures)} image(s) could not be read and are left out (e.g. {res.failures[0][1]}: "
             f"{res.failures[0][2]})")
    X = res.embeddings
    if normalize:
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    if not frame:
        return X
    out = embedding_frame(res, ds)
    out["embedding"] = list(X)
    return out


@study
def embed_texts(model: Model, texts: str | Sequence[str], *, normalize: bool = False, cache_dir=None,
                quiet: bool = False) -> np.ndarray:
    """Text embeddings (cached per text), rows in the order of ``texts``.

    Examples
    --------
    >>> T = cliplab.embed_texts("tiny-shapes", ["a red circle", "a blue square"], normalize=True)
    """
    m = as_model(model, cache_dir=cache_dir, quiet=quiet)
    T = _embed_texts(m, [texts] if isinstance(texts, str) else list(texts), cache_dir, quiet=quiet)
    return T / np.maximum(np.linalg.norm(T, axis=1, keepdims=True), 1e-12) if normalize else T
