"""Manifests: CSV/TSV, JSONL or parquet files listing image paths, with captions and/or labels.

One row per image (CSV rows repeating an image add captions to it). The image column is the first of ``image``,
``filepath``, ``path``, ``file``, ``image_path``, ``img``, ``filename``, ``file_name``; captions are in ``captions``
(a list in JSONL/parquet), ``caption``, ``title``, ``text``, ``sentences`` and ``caption_*`` columns; a ``label``
column makes it a classification set (class names as strings, or class numbers named by a ``classnames`` file).
``FILE#image=COL,label=COL,caption=COL`` names the columns instead (``caption`` may be repeated). Other string
columns become attributes. Relative paths are resolved against the manifest's folder, which may be a URL read
through fsspec (``s3://bucket/set/manifest.parquet``). A manifest needs a caption or a label column unless the
image path is its only column (then it is a plain list of images).
"""
from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Union

import numpy as np
from pydantic import ConfigDict, Field, StrictInt, create_model

from cliplab.data.base import ImageDataset
from cliplab.data.columns import check_options, choose_column, encode_labels
from cliplab.data.remote import Store, UrlSource, is_url
from cliplab.data.sources import FileSource
from cliplab.errors import DatasetParameterError
from cliplab.files import FileName, Name, Shape, Str, UserFile, one_of, printable
from cliplab.io import hash_json

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")
IMAGE_KEYS = ("image", "filepath", "path", "file", "image_path", "img", "filename", "file_name")
CAPTION_KEYS = ("captions", "caption", "title", "text", "sentences")
LABEL_KEYS = ("label",)
OPTIONS = ("image", "label", "caption")


def _suffix(location: str) -> str:
    return posixpath.splitext(location)[1].lower()


def _manifest(store: Store, path: str, spec: str) -> UserFile:
    location = store.location(path)
    return UserFile(path, "dataset", value=None if spec == location else spec, error=DatasetParameterError,
                    location=location, opener=store.open if store.remote else None)


CAPTIONS = one_of("a caption or a list of captions", text=Str, list=list[Union[Str, None]], null=None)
LABEL = one_of("a class name or a class number", text=Name, number=StrictInt)


def row_shape(image: str, label: str | None, captions: list[str]) -> Shape:
    """The shape of a manifest row with these columns: the image path text, the label a class name or number,
    each caption column a caption, a list of them or null; other columns anything."""
    fields = {"image_": (FileName, Field(alias=image))}
    if label is not None:
        fields["label_"] = (LABEL, Field(alias=label))
    for i, c in enumerate(captions):
        fields[f"caption_{i}"] = (CAPTIONS, Field(None, alias=c))
    model = create_model("ManifestRow", __config__=ConfigDict(extra="ignore", populate_by_name=False), **fields)
    return Shape(model, "a manifest row")


def _captions(value: str | list[str | None] | None) -> list[str]:
    if isinstance(value, list):
        return [x.strip() for x in value if x is not None and x.strip()]
    return [value.strip()] if isinstance(value, str) and value.strip() else []


def load_caption_file(path: str | Path, name: str | None = None, split: str = "all", *,
                      options: dict[str, list[str]] | None = None, classnames: str | None = None,
                      spec: str | None = None) -> ImageDataset:
    """A manifest (or caption file) as a dataset; ``options`` names its columns, ``spec`` is the user's value."""
    where = str(path)
    spec = spec or where
    options = options or {}
    check_options(options, OPTIONS, spec, "a manifest")
    store, fpath = Store.of(spec, where)
    location = store.location(fpath)
    if not store.isfile(fpath):
        raise DatasetParameterError("dataset", spec, f"manifest not found: {location}", quote=False)
    if _suffix(fpath) not in MANIFEST_SUFFIXES:
        raise DatasetParameterError("dataset", spec, f"manifests are {', '.join(MANIFEST_SUFFIXES)} files",
                                    quote=False)
    file = _manifest(store, fpath, spec)
    records = file.table()
    rows = records.rows
    if not rows:
        raise file.fail("has no rows")
    keys = records.columns  # JSONL rows may differ in their fields
    img_key = choose_column(keys, options.get("image", [None])[0], IMAGE_KEYS, "image paths", spec)
    if img_key is None:
        raise DatasetParameterError("dataset", spec, f"manifest {location} has no image path column; expected one "
                                    f"of {', '.join(IMAGE_KEYS)} (found {', '.join(keys)}), or name it: "
                                    f"{where}#image=COLUMN", quote=False)
    label_key = choose_column(keys, options.get("label", [None])[0], LABEL_KEYS, "labels", spec)
    if "caption" in options:
        cap_keys = [choose_column(keys, c, (), "captions", spec) for c in options["caption"]]
    else:
        cap_keys = [k for k in keys if k in CAPTION_KEYS or k.startswith("caption_")]
    if not cap_keys and label_key is None and len(keys) > 1:
        raise DatasetParameterError("dataset", spec, f"manifest {location} has no caption column and no label "
                                    f"column; expected captions in one of {', '.join(CAPTION_KEYS)} or caption_*, "
                                    f"labels in {', '.join(LABEL_KEYS)} (found {', '.join(keys)}), or name them: "
                                    f"{where}#caption=COLUMN,label=COLUMN", quote=False)
    attr_keys = [k for k in keys if k != img_key and k != label_key and k not in cap_keys]

    base = store.parent(fpath)
    order: list[str] = []
    caps: dict[str, list[str]] = {}
    first_row: dict[str, dict] = {}
    checked = records.validate(row_shape(img_key, label_key, cap_keys))
    label_of: dict[str, str | int] = {}
    for place, row, ok in zip(records.places, rows, checked):
        img = ok.image_
        full = _resolve_image(store, base, img)
        if full not in caps:
            order.append(full)
            caps[full] = []
            first_row[full] = row
            if label_key is not None:
                label_of[full] = ok.label_
        elif label_key is not None and str(ok.label_) != str(label_of[full]):
            raise file.fail(f"gives {printable(img)} the label {ok.label_!r}, an earlier row {label_of[full]!r}",
                            place)
        for i in range(len(cap_keys)):
            caps[full].extend(_captions(getattr(ok, f"caption_{i}")))

    attributes, attribute_classnames = {}, {}
    for k in attr_keys:
        vals = [first_row[p].get(k) for p in order]
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) != "" for v in vals):
            continue
        names = sorted({str(v) for v in vals})
        lookup = {v: i for i, v in enumerate(names)}
        attributes[k] = np.array([lookup[str(v)] for v in vals], dtype=np.int64)
        attribute_classnames[k] = names
    labels = classnames_list = None
    if label_key is not None:
        labels, classnames_list = encode_labels([label_of[p] for p in order], spec,
                                                f"labels (column {label_key!r})", classnames)
        attributes[label_key], attribute_classnames[label_key] = labels, classnames_list

    local = all(not is_url(p) for p in order)
    fingerprint_file = str(Path(fpath).resolve()) if not store.remote else location
    return ImageDataset(
        name=name or posixpath.splitext(store.name(fpath))[0],
        split=split,
        source=FileSource(order) if local else UrlSource(order, spec),
        fingerprint="captions:" + hash_json({"file": fingerprint_file, "rows": len(rows), "images": order})[:24],
        classnames=classnames_list,
        labels=labels,
        captions=[caps[p] for p in order] if cap_keys else None,
        attributes=attributes,
        attribute_classnames=attribute_classnames,
    )


def _resolve_image(store: Store, base: str, img: str) -> str:
    """An image path of a manifest row: URLs and absolute local paths as they are, others under the manifest's
    folder (a URL when the manifest is remote)."""
    if is_url(img):
        return img
    if store.remote:
        return store.location(posixpath.normpath(posixpath.join(base, img)))
    return img if os.path.isabs(img) else str((Path(base) / img).resolve())
