"""Datasets: one ``open_dataset(spec)`` for built-in, torchvision, folder, manifest, tar-shard and Hugging Face
datasets."""
from __future__ import annotations

import posixpath
from pathlib import Path

import numpy as np

from cliplab.data.base import ImageDataset
from cliplab.data.captions import MANIFEST_SUFFIXES, load_caption_file
from cliplab.data.columns import split_options
from cliplab.data.coco import load_caption_json
from cliplab.data.folder import load_folder
from cliplab.data.hf_datasets import PREFIX as HF_PREFIX
from cliplab.data.hf_datasets import is_saved_dataset, load_hf_dataset
from cliplab.data.remote import is_url
from cliplab.data.shapes import load_shapes
from cliplab.data.sources import FileSource, ImageSource, IndexedSource
from cliplab.data.splits import SplitError
from cliplab.data.torchvision_sets import canonical_name, load_torchvision
from cliplab.data.webdataset import PATTERN, is_webdataset_folder, load_webdataset
from cliplab.data.webdataset import PREFIX as WDS_PREFIX
from cliplab.errors import DatasetParameterError
from cliplab.paths import resolve_cache_dir

_DATASET_KINDS = (  # {p:data_root}: a parameter in an error message
    "shapes[:ATTRIBUTE] (built-in synthetic), a torchvision name (cifar10, cifar100, food101, eurosat, stl10, "
    "flowers102, oxford_pets, dtd, mnist), a folder of class subfolders or images, a manifest or caption file "
    "(.csv/.tsv/.jsonl/.parquet), webdataset .tar shards (a shard, folder or pattern; wds:PATH), a Hugging Face "
    "dataset (a save_to_disk folder, hf-datasets:org/name), or a COCO-captions / Karpathy-split .json (images "
    "under {p:data_root})"
)
DATASET_HELP = _DATASET_KINDS.replace("{p:data_root}", "--data-root")  # the same, for the command line's help


def open_dataset(spec: str, *, split: str | None = None, data_root: str | None = None, limit: int | None = None,
                 classnames: str | None = None, cache_dir: str | Path | None = None, download: bool = True,
                 names: dict[str, str] | None = None) -> ImageDataset:
    """A dataset named by a ``--dataset`` value, loaded: an :class:`ImageDataset` (``cliplab.load_dataset`` in
    Python and every command's ``--dataset`` come here).

    ``limit`` keeps a seeded random subset of that many images (in original order), so that a limited run
    still covers every class of a class-sorted folder. ``names``: the parameters that set these values when they
    are not the usual ones (``{"limit": "train_limit"}``), for errors.
    """
    cache = resolve_cache_dir(cache_dir)
    ds = _resolve(spec, split, data_root, classnames, cache, download)
    ds.spec = spec
    return limit_dataset(ds, limit, param=(names or {}).get("limit", "limit"))


def limit_dataset(ds: ImageDataset, limit: int | None, param: str = "limit") -> ImageDataset:
    """A seeded random subset of ``limit`` images of ``ds`` (in original order), or ``ds`` when ``limit`` is None or
    not smaller than it."""
    if limit is not None and limit <= 0:
        raise DatasetParameterError(param, limit, f"{{p:{param}}} must be positive, got {limit}", prefix=False)
    if limit is None or limit >= len(ds):
        return ds
    keep = np.sort(np.random.default_rng(0).permutation(len(ds))[:limit])
    out = ds.subset(keep, tag=f"limit{limit}")
    out.limit = limit
    return out


def _resolve(spec, split, data_root, classnames, cache: Path, download: bool) -> ImageDataset:
    if spec.startswith(WDS_PREFIX):
        return load_webdataset(spec, spec[len(WDS_PREFIX):], split, classnames)
    if spec.startswith(HF_PREFIX):
        where, options = split_options(spec[len(HF_PREFIX):])
        return load_hf_dataset(spec, where, options, split, classnames)
    if spec.startswith(("hf:", "hf-hub:")):
        raise DatasetParameterError("dataset", spec, f"{spec.split(':')[0]}: names a model; a Hugging Face dataset "
                                    f"is {HF_PREFIX}org/name (or a folder saved with save_to_disk)")
    name, _, attribute = spec.partition(":")
    if name == "shapes":
        return load_shapes(cache, split=split or "test", attribute=attribute or "shape")
    if canonical_name(spec) and not Path(spec).exists():
        root = data_root or str(cache / "torchvision")
        return load_torchvision(spec, root, split=split or "test", download=download, classnames_file=classnames)
    where, options = (spec, {}) if Path(spec).expanduser().exists() else split_options(spec)
    path = Path(where).expanduser()
    remote = is_url(where)
    suffix = posixpath.splitext(where)[1].lower() if remote else path.suffix.lower()
    if path.is_dir() and is_saved_dataset(path):
        return load_hf_dataset(spec, where, options, split, classnames)
    if suffix in MANIFEST_SUFFIXES and (remote or path.is_file()):
        if split not in (None, "all"):
            raise SplitError(f"manifest {where}", split, [])
        return load_caption_file(where, split="all", options=options, classnames=classnames, spec=spec)
    if options:
        raise DatasetParameterError("dataset", spec, f"column choices (#{', '.join(options)}=...) are for "
                                    "manifests (.csv/.tsv/.jsonl/.parquet) and Hugging Face datasets")
    if suffix == ".tar" and (remote or path.is_file() or PATTERN.search(where)):
        return load_webdataset(spec, where, split, classnames)
    if remote:
        raise DatasetParameterError("dataset", spec, "a dataset URL must name a .tar shard or a manifest "
                                    f"({', '.join(MANIFEST_SUFFIXES)}); for a folder or pattern of shards write "
                                    f"{WDS_PREFIX}URL")
    if path.is_dir():
        if is_webdataset_folder(path):
            return load_webdataset(spec, where, split, classnames)
        return load_folder(path, split=split, classnames_file=classnames)
    if path.is_file():
        if suffix == ".json":
            return load_caption_json(path, split=split, image_root=data_root, spec=spec)
        raise DatasetParameterError("dataset", spec, f"unsupported file type {suffix!r}; expected {_DATASET_KINDS}",
                                    quote=False)
    raise DatasetParameterError("dataset", spec, f"{{p:dataset}} {spec!r} is not a known dataset or an existing path; "
                                f"expected {_DATASET_KINDS}", prefix=False)


__all__ = ["open_dataset", "limit_dataset", "SplitError", "ImageDataset", "ImageSource", "FileSource", "IndexedSource", "DATASET_HELP"]
