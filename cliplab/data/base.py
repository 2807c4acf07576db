"""The dataset model every task sees: image sources + labels/captions + class names + a fingerprint."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image


class ImageSource:
    """Indexable images with a stable cache key per item.

    ``key(i)`` identifies the image *content* (file hash, or dataset fingerprint + index) so the embedding
    cache stays valid when files move and is invalidated when they change.
    """

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def id(self, i: int) -> str:  # human-readable: a path or "name[i]"
        raise NotImplementedError

    def keys(self) -> list[str | None]:
        """Cache keys for all items; ``None`` for an item that cannot be read (reason in ``key_errors``)."""
        raise NotImplementedError

    def load(self, i: int) -> Image.Image:
        raise NotImplementedError

    key_errors: dict[int, str]


class FileSource(ImageSource):
    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [str(p) for p in paths]
        self.key_errors: dict[int, str] = {}
        self._keys: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def id(self, i: int) -> str:
        return self.paths[i]

    def keys(self) -> list[str | None]:
        if self._keys is None:
            from cliplab.data.filehash import hash_files

            hashes, errors = hash_files(self.paths)
            self._keys = [None if h is None else "f:" + h for h in hashes]
            self.key_errors.update(errors)
        return self._keys

    def load(self, i: int) -> Image.Image:
        from cliplab.data.imageio import open_rgb

        return open_rgb(self.paths[i])


class IndexedSource(ImageSource):
    """Images produced by a callable (a torchvision dataset, an in-memory array), keyed by fingerprint + index."""

    def __init__(self, n: int, loader: Callable[[int], Image.Image], fingerprint: str, name: str,
                 tensor_loader: Callable | None = None):
        self.n = n
        self.loader = loader
        self.tensor_loader = tensor_loader  # i -> uint8 (3, H, W) tensor, skipping PIL (pre-decoded data)
        self.fingerprint = fingerprint
        self.name = name
        self.key_errors: dict[int, str] = {}

    def __len__(self) -> int:
        return self.n

    def id(self, i: int) -> str:
        return f"{self.name}[{i}]"

    def keys(self) -> list[str | None]:
        return [f"d:{self.fingerprint}:{i}" for i in range(self.n)]

    def load(self, i: int) -> Image.Image:
        from cliplab.data.imageio import to_rgb

        return to_rgb(self.loader(i))


class SubsetSource(ImageSource):
    def __init__(self, base: ImageSource, indices: Sequence[int]):
        self.base = base
        self.indices = list(indices)
        self.key_errors: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def id(self, i: int) -> str:
        return self.base.id(self.indices[i])

    def keys(self) -> list[str | None]:
        all_keys = self.base.keys()
        out = [all_keys[j] for j in self.indices]
        pos = {j: i for i, j in enumerate(self.indices)}
        self.key_errors = {pos[j]: r for j, r in self.base.key_errors.items() if j in pos}
        return out

    def load(self, i: int) -> Image.Image:
        return self.base.load(self.indices[i])


@dataclass
class ImageDataset:
    """A dataset split as cliplab sees it.

    ``labels[i]`` indexes ``classnames`` (or is -1 / absent for caption-only data); ``captions[i]`` is the list
    of captions of image i (possibly empty). ``attributes`` holds extra per-image label columns (e.g. shapes'
    colour/size) keyed by attribute name, each with its own class names in ``attribute_classnames``.
    """

    name: str
    split: str
    source: ImageSource
    fingerprint: str
    classnames: list[str] | None = None
    labels: np.ndarray | None = None
    captions: list[list[str]] | None = None
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    attribute_classnames: dict[str, list[str]] = field(default_factory=dict)
    templates_hint: str | None = None  # name of the template set that fits this dataset, if any

    def __len__(self) -> int:
        return len(self.source)

    @property
    def paths(self) -> list[str] | None:
        return list(self.source.paths) if isinstance(self.source, FileSource) else None

    def subset(self, indices: Sequence[int], tag: str) -> "ImageDataset":
        idx = np.asarray(indices, dtype=np.int64)
        return ImageDataset(
            name=self.name,
            split=self.split,
            source=SubsetSource(self.source, idx.tolist()),
            fingerprint=f"{self.fingerprint}:{tag}",
            classnames=self.classnames,
            labels=None if self.labels is None else self.labels[idx],
            captions=None if self.captions is None else [self.captions[i] for i in idx],
            attributes={k: v[idx] for k, v in self.attributes.items()},
            attribute_classnames=self.attribute_classnames,
            templates_hint=self.templates_hint,
        )

    def require_classes(self, task: str) -> None:
        """Raise unless this is a labelled set with at least two classes and one image (one class scores 100 %)."""
        from cliplab.errors import DatasetError

        where = f"dataset {self.name!r} (split {self.split})"
        if len(self) == 0:
            raise DatasetError(f"{where} has no images")
        if self.labels is None or not self.classnames:
            raise DatasetError(f"{where} has no class labels; {task} needs labelled images (class subfolders, a "
                               "label column, or a named dataset)")
        if len(self.classnames) < 2:
            raise DatasetError(f"{where} has only one class ({self.classnames[0]!r}); {task} needs at least two "
                               "classes (is the folder one level too deep?)")

    def with_label(self, attribute: str) -> "ImageDataset":
        """Use one of ``attributes`` as the label column."""
        if attribute not in self.attributes:
            from cliplab.errors import DatasetError

            raise DatasetError(
                f"dataset {self.name!r} has no attribute {attribute!r}; choose one of {sorted(self.attributes)}"
            )
        return ImageDataset(
            name=f"{self.name}:{attribute}",
            split=self.split,
            source=self.source,
            fingerprint=self.fingerprint,
            classnames=self.attribute_classnames[attribute],
            labels=self.attributes[attribute],
            captions=self.captions,
            attributes=self.attributes,
            attribute_classnames=self.attribute_classnames,
            templates_hint=self.templates_hint,
        )


def path_str(p: str | os.PathLike) -> str:
    return str(Path(p))


def image_ids(ds: ImageDataset) -> set[str]:
    """Every image's identity: the real path of a file, else the source's ``name[i]`` id."""
    ids = (ds.source.id(i) for i in range(len(ds)))
    return {os.path.realpath(i) if os.path.isabs(i) else i for i in ids}


def check_disjoint(fit: ImageDataset, evaluated: ImageDataset, purpose: str) -> None:
    """Raise unless ``fit`` (what is fitted or selected on) shares no image and the same classes with ``evaluated``."""
    from cliplab.errors import DatasetError

    if fit.classnames is not None and evaluated.classnames is not None \
            and list(fit.classnames) != list(evaluated.classnames):
        missing = [c for c in evaluated.classnames if c not in fit.classnames]
        extra = [c for c in fit.classnames if c not in evaluated.classnames]
        detail = "; ".join(x for x in (f"missing there: {', '.join(missing[:5])}" if missing else "",
                                       f"only there: {', '.join(extra[:5])}" if extra else "") if x) \
            or "same names in another order"
        raise DatasetError(f"the {purpose} split {fit.split!r} has other classes than the evaluated split "
                           f"{evaluated.split!r} ({detail}); labels would not match")
    shared = image_ids(fit) & image_ids(evaluated)
    if shared:
        raise DatasetError(f"the {purpose} split {fit.split!r} shares {len(shared)} image(s) with the evaluated split "
                           f"{evaluated.split!r} (e.g. {sorted(shared)[0]}); {purpose} must never see evaluated "
                           "images: use a separate split")
