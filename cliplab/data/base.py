"""The dataset model every task sees: image sources + labels/captions + class names + a fingerprint."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from cliplab.data.sources import FileSource, ImageSource, SubsetSource
from cliplab.errors import DatasetError



@dataclass(repr=False)
class ImageDataset:
    """A dataset split as cliplab sees it.

    ``labels[i]`` indexes ``classnames`` (or is -1 / absent for caption-only data); ``captions[i]`` is the list
    of captions of image i (possibly empty). ``attributes`` holds extra per-image label columns (e.g. shapes'
    colour/size) keyed by attribute name, each with its own class names in ``attribute_classnames``.
    ``templates``: the zero-shot templates the dataset itself provides (``{c}`` or ``{}`` marks the class name),
    or None.
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
    attribute_values: dict[str, list[str]] = field(default_factory=dict)  # each attribute's values as plain words
    templates_hint: str | None = None  # name of the template set that fits this dataset, if any
    spec: str | None = None  # the --dataset value it was loaded from (a run's config names it)
    limit: int | None = None  # the seeded subset size it was limited to, if any
    templates: tuple[str, ...] | None = None  # prompt templates that come with the dataset (CLIP_benchmark's files)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def paths(self) -> list[str] | None:
        return list(self.source.paths) if isinstance(self.source, FileSource) else None

    def __repr__(self) -> str:
        classes = f", {len(self.classnames)} classes" if self.classnames else ""
        captions = ", captioned" if getattr(self, "captions", None) else ""
        return f"ImageDataset({self.name!r}, split={self.split!r}, {len(self)} images{classes}{captions})"

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
            attribute_values=self.attribute_values,
            templates_hint=self.templates_hint,
            spec=self.spec,
            limit=self.limit,
            templates=self.templates,
        )

    def require_classes(self, task: str) -> None:
        """Raise unless this is a labelled set with at least two classes and one image (one class scores 100 %)."""
        where = f"dataset {self.name!r} (split {self.split})"
        if len(self) == 0:
            raise DatasetError(f"{where} has no images")
        if self.labels is None or not self.classnames:
            raise DatasetError(f"{where} has no class labels; {task} needs labelled images (class subfolders, a "
                               "label column, or a named dataset)")
        if len(self.classnames) < 2:
            raise DatasetError(f"{where} has only one class ({self.classnames[0]!r}); {task} needs at least two "
                               "classes (is the folder one level too deep?)")
        dupes = sorted(c for c, n in Counter(self.classnames).items() if n > 1)
        if dupes:
            raise DatasetError(f"{where} has duplicate class names ({', '.join(map(repr, dupes[:5]))}): a prompt "
                               "cannot tell those classes apart, so one of them could never be predicted; give "
                               "distinct names (class folders, the label column, or the class names file)")

    def with_label(self, attribute: str) -> "ImageDataset":
        """Use one of ``attributes`` as the label column."""
        if attribute not in self.attributes:
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
            attribute_values=self.attribute_values,
            templates_hint=self.templates_hint,
            templates=self.templates,
        )


def path_str(p: str | os.PathLike) -> str:
    return str(Path(p))


def image_ids(ds: ImageDataset) -> set[str]:
    """Every image's identity: the real path of a file, else the source's ``name[i]`` id."""
    ids = (ds.source.id(i) for i in range(len(ds)))
    return {os.path.realpath(i) if os.path.isabs(i) else i for i in ids}


def check_disjoint(fit: ImageDataset, evaluated: ImageDataset, purpose: str, cache_dir=None) -> None:
    """Raise unless ``fit`` (what is fitted or selected on) shares no image -- by path or by content -- and has the
    same classes as ``evaluated``. ``cache_dir``: where the file-hash memo is (files hashed before are not read)."""
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
    from cliplab.data.filehash import MEMO_NAME, file_hash_memo

    with file_hash_memo(Path(cache_dir) / MEMO_NAME if cache_dir is not None else None):
        same = shared_content(fit, evaluated)
    if same:
        a, b = same[0]
        raise DatasetError(f"the {purpose} split {fit.split!r} holds {len(same)} image(s) with the same content as "
                           f"images of the evaluated split {evaluated.split!r} (e.g. {a} and {b}: byte-identical "
                           f"files under other names); {purpose} must never see evaluated images: remove the copies")


def shared_content(a: ImageDataset, b: ImageDataset) -> list[tuple[str, str]]:
    """Pairs of ids (one of ``a``, one of ``b``) of images with the same content: the sources' content keys (file
    hashes, remembered in the file-hash memo the embedding also reads)."""
    ka, kb = a.source.keys(), b.source.keys()
    where = {k: i for i, k in enumerate(kb) if k is not None}
    return [(a.source.id(i), b.source.id(where[k])) for i, k in enumerate(ka) if k is not None and k in where]
