"""Models, datasets and embeddings from Python: the inputs every study takes, and the cached embeddings for your
own analysis."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cliplab.api._inputs import Data, Model, as_dataset, as_model, study
from cliplab.data import ImageDataset
from cliplab.embed import embed_images
from cliplab.errors import DatasetParameterError, ModelParameterError
from cliplab.embed.texts import embed_texts as _embed_texts
from cliplab.models import LoadedModel
from cliplab.results.exports import embedding_frame



@study
def load_model(model: str = "tiny-shapes", pretrained: str | None = None, *, device: str | None = None,
               precision: str | None = None, backend: str = "auto", channels_last: bool | None = None,
               compile: bool = False, force_quick_gelu: bool | None = None, cache_dir=None,
               quiet: bool = False) -> LoadedModel:
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
    channels_last : bool, optional
        NHWC memory format for the image tower (default: on for convolutional towers).
    compile : bool
        ``torch.compile`` the image encoder (pays off on large collections on GPU; makes ``backend="auto"`` PyTorch).
    force_quick_gelu : bool, optional
        Override the QuickGELU choice of an open_clip model (default: what its pretrained tag needs).

    Returns
    -------
    LoadedModel

    Examples
    --------
    >>> m = cliplab.load_model("ViT-B-32", pretrained="openai")
    >>> m = cliplab.load_model("tiny-shapes")
    """
    if isinstance(model, LoadedModel):
        raise ModelParameterError("model", model.name, "is already loaded; pass it to the study functions as it is",
                                  quote=False)
    return as_model(model, pretrained, device=device, precision=precision, backend=backend, cache_dir=cache_dir,
                    quiet=quiet, channels_last=channels_last, compile=compile, force_quick_gelu=force_quick_gelu)


@study
def load_dataset(dataset: str | Path = "shapes", *, split: str | None = None, data_root: str | None = None,
                 limit: int | None = None, classnames: str | None = None, cache_dir=None,
                 quiet: bool = False) -> ImageDataset:
    """Load a dataset (the CLI's ``--dataset`` values).

    Parameters
    ----------
    dataset : str or path
        ``shapes[:ATTRIBUTE]``, a torchvision name (``cifar10``, ``eurosat``, ``food101``, ...), a folder of class
        subfolders (or of split folders, then ``split`` is required), a manifest or caption file
        (.csv/.tsv/.jsonl/.parquet, columns chosen with ``FILE#image=COL,label=COL,caption=COL``), webdataset tar
        shards (a .tar, a folder or pattern of them, CLIP_benchmark's ``ROOT``; ``wds:PATH``), a Hugging Face
        dataset (a ``save_to_disk`` folder, ``hf-datasets:org/name``), or a COCO / Karpathy captions .json.
        Manifests and shards may be URLs read through fsspec.
    split : str, optional
        The split (named datasets: default ``test``). A split that does not exist is an error listing those that do.
    data_root : str, optional
        Where torchvision datasets are (downloaded when online); for a COCO / Karpathy .json, its image folder.
    limit : int, optional
        A seeded random subset of ``limit`` images (every class of a class-sorted folder stays covered).
    classnames : str, optional
        A class names file (.txt, one per line, or .json list/map); names the class numbers of manifests, tar
        shards and Hugging Face integer label columns.

    Returns
    -------
    ImageDataset
        ``.classnames``, ``.labels``, ``len(ds)``; accepted by every study function.

    Examples
    --------
    >>> ds = cliplab.load_dataset("eurosat", data_root="data/", split="test")
    >>> ds = cliplab.load_dataset("shapes:color", limit=200)
    """
    if isinstance(dataset, ImageDataset):
        raise DatasetParameterError("dataset", dataset.name, "is already loaded; pass it to the study functions as "
                                    "it is", quote=False)
    return as_dataset(dataset, split=split, data_root=data_root, limit=limit, classnames=classnames,
                      cache_dir=cache_dir)


@study
def embed(model: Model = "tiny-shapes", dataset: Data = "shapes", *, frame: bool = False, normalize: bool = False,
          pretrained: str | None = None, split: str | None = None, data_root: str | None = None,
          limit: int | None = None, device: str | None = None, precision: str | None = None, backend: str = "auto",
          compile: bool = False, channels_last: bool | None = None, cache_dir=None, batch_size: int = 64,
          workers: int | None = None, no_cache: bool = False, shard_batches: int = 16, pipeline: str = "pil",
          quiet: bool = False) -> np.ndarray | pd.DataFrame:
    """Image embeddings from the same cache every study uses (computed only for images not cached yet).

    Parameters
    ----------
    model, dataset
        As for :func:`cliplab.zeroshot`.
    frame : bool
        Return a DataFrame (``row``, ``id``, ``label``, ``classname``, ``embedding``) instead of an array.
    normalize : bool
        Unit-length rows (the studies' cosine space); default: the tower's raw output, as ``cliplab embed`` writes.
    compile, channels_last
        How a model given by name is loaded (see :func:`load_model`), with ``pretrained``, ``device``,
        ``precision`` and ``backend``.
    no_cache, shard_batches, pipeline, split, data_root, limit, cache_dir, batch_size, workers, quiet
        As the CLI's flags (``cliplab embed --help``).

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
    options = {"compile": compile, "channels_last": channels_last} if compile or channels_last is not None else {}
    if isinstance(model, LoadedModel) and options:
        raise ModelParameterError("compile", None, "{p:compile} and {p:channels_last} are for loading a model, and "
                                  "{p:model} is already loaded", prefix=False)
    ds = as_dataset(dataset, split=split, data_root=data_root, limit=limit, cache_dir=cache_dir)
    m = as_model(model, pretrained, device=device, precision=precision, backend=backend, cache_dir=cache_dir,
                 quiet=quiet, **options)
    res = embed_images(m, ds, cache_dir, batch_size=batch_size, num_workers=workers, use_cache=not no_cache,
                       shard_batches=shard_batches, quiet=quiet, pipeline=pipeline)
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
def embed_texts(model: Model, texts: str | Sequence[str], *, normalize: bool = False, pretrained: str | None = None,
                device: str | None = None, precision: str | None = None, backend: str = "auto", cache_dir=None,
                quiet: bool = False) -> np.ndarray:
    """Text embeddings (cached per text), rows in the order of ``texts`` (the model's raw output, or unit rows with
    ``normalize``); ``pretrained``, ``device``, ``precision`` and ``backend`` load a model given by name.

    Examples
    --------
    >>> T = cliplab.embed_texts("tiny-shapes", ["a red circle", "a blue square"], normalize=True)
    """
    m = as_model(model, pretrained, device=device, precision=precision, backend=backend, cache_dir=cache_dir,
                 quiet=quiet)
    T = _embed_texts(m, [texts] if isinstance(texts, str) else list(texts), cache_dir, quiet=quiet)
    return T / np.maximum(np.linalg.norm(T, axis=1, keepdims=True), 1e-12) if normalize else T
