"""torchvision datasets by name. They download when online; offline, a one-line error says what to do."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cliplab.data.base import ImageDataset
from cliplab.data.sources import IndexedSource
from cliplab.data.classnames import clean_classnames, read_classnames
from cliplab.data.splits import SplitError
from cliplab.errors import DatasetError, DatasetParameterError


# name -> (torchvision class name, how to pass the split, template set that fits, the splits it has)
_SPECS = {
    "cifar10": ("CIFAR10", lambda s: {"train": s == "train"}, "openai-cifar", ("train", "test")),
    "cifar100": ("CIFAR100", lambda s: {"train": s == "train"}, "openai-cifar", ("train", "test")),
    "food101": ("Food101", lambda s: {"split": s}, "openai-food101", ("train", "test")),
    "eurosat": ("EuroSAT", lambda s: {}, "openai-eurosat", ("train", "test")),
    "stl10": ("STL10", lambda s: {"split": s}, "openai-imagenet-80", ("train", "test")),
    "flowers102": ("Flowers102", lambda s: {"split": s}, "openai-imagenet-80", ("train", "val", "test")),
    "oxford_pets": ("OxfordIIITPet", lambda s: {"split": "trainval" if s == "train" else s}, "openai-imagenet-80",
                    ("train", "trainval", "test")),
    "dtd": ("DTD", lambda s: {"split": s}, "openai-imagenet-80", ("train", "val", "test")),
    "mnist": ("MNIST", lambda s: {"train": s == "train"}, "simple", ("train", "test")),
}
ALIASES = {"pets": "oxford_pets", "oxford-pets": "oxford_pets", "oxfordpets": "oxford_pets", "cifar-10": "cifar10",
           "cifar-100": "cifar100", "food-101": "food101", "stl-10": "stl10", "flowers": "flowers102"}
TORCHVISION_DATASETS = sorted(_SPECS)


def canonical_name(name: str) -> str | None:
    key = name.lower()
    key = ALIASES.get(key, key)
    return key if key in _SPECS else None


def _classes(ds) -> list[str]:
    classes = getattr(ds, "classes", None)
    if classes:
        return clean_classnames([str(c) for c in classes])
    targets = getattr(ds, "_labels", None) or getattr(ds, "targets", None) or []
    return [str(i) for i in range(int(max(targets)) + 1)] if len(targets) else []


def _targets(ds) -> np.ndarray:
    for attr in ("targets", "_labels", "labels", "_samples"):
        t = getattr(ds, attr, None)
        if t is not None and attr != "_samples":
            return np.asarray(t, dtype=np.int64)
        if attr == "_samples" and t is not None:
            return np.asarray([y for _, y in t], dtype=np.int64)
    return np.asarray([ds[i][1] for i in range(len(ds))], dtype=np.int64)


def load_torchvision(name: str, root: str | Path, split: str = "test", download: bool = True,
                     classnames_file: str | None = None) -> ImageDataset:
    import torchvision.datasets as tvd

    key = canonical_name(name)
    if key is None:
        raise DatasetError(f"unknown torchvision dataset {name!r}; known: {', '.join(TORCHVISION_DATASETS)}")
    cls_name, split_kw, templates, splits = _SPECS[key]
    if split not in splits:  # never let a typo fall through to another split (cifar10: train=False is test)
        raise SplitError(key, split, splits)
    root = Path(root).expanduser()
    cls = getattr(tvd, cls_name)
    try:
        try:
            ds = cls(root=str(root), download=False, **split_kw(split))
        except (RuntimeError, FileNotFoundError):
            if not download:
                raise
            ds = cls(root=str(root), download=True, **split_kw(split))
    except (ValueError, TypeError) as exc:
        raise DatasetParameterError("split", split, f"{key}: invalid {{p:split}} {split!r} ({exc})",
                                    prefix=False) from None
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, socket errors, ...)
        raise DatasetParameterError(
            "data_root", root, f"{key} is not in {{p:data_root}} {root} and could not be downloaded "
            f"({type(exc).__name__}: {str(exc)[:120]}). Download it on a machine with internet into {root}, or pass "
            "an image folder as {p:dataset} PATH.", prefix=False
        ) from None

    targets = _targets(ds)
    if key == "eurosat":
        # EuroSAT ships without splits: a fixed, seeded 80/20 train/test partition.
        perm = np.random.default_rng(0).permutation(len(ds))
        cut = int(0.8 * len(ds))
        keep = np.sort(perm[:cut] if split == "train" else perm[cut:])
    else:
        keep = np.arange(len(ds))
    classnames = _classes(ds)
    if classnames_file:
        classnames = read_classnames(classnames_file, expected=len(classnames) or None)
    fingerprint = f"tv:{key}:{split}:{len(ds)}"
    src = IndexedSource(len(keep), _ItemImage(ds, keep), fingerprint, f"{key}-{split}",
                        tensor_loader=_uint8_loader(ds, keep))
    return ImageDataset(name=key, split=split, source=src, fingerprint=fingerprint, classnames=classnames,
                        labels=targets[keep], templates_hint=templates)


def _uint8_loader(ds, keep):
    """CIFAR/MNIST-style sets hold all pixels in one uint8 array: hand them to the tensor pipeline directly."""
    import torch

    data = getattr(ds, "data", None)
    if data is None:
        return None
    arr = np.asarray(data) if not hasattr(data, "numpy") else data.numpy()
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4):
        return None

    def load(i: int):
        x = torch.from_numpy(np.ascontiguousarray(arr[keep[i]]))
        return x.unsqueeze(0).expand(3, -1, -1) if x.ndim == 2 else x.permute(2, 0, 1)

    return load


class _ItemImage:
    """Picklable ``i -> PIL image`` over a torchvision dataset (DataLoader workers may pickle it)."""

    def __init__(self, ds, keep: np.ndarray):
        self.ds, self.keep = ds, keep

    def __call__(self, i: int):
        return self.ds[int(self.keep[i])][0]
