"""Caption files: CSV or JSONL listing image paths with one or more captions (and optional label columns).

JSONL: one object per line, ``{"image": "a.jpg", "captions": ["...", "..."]}`` (or ``"caption": "..."``);
any other string field (e.g. ``"label"``) becomes an attribute. CSV: an image column (``image``, ``filepath``,
``path`` or ``file``) and caption column(s) (``caption``, ``captions``, ``title``, ``text``, ``caption_*``);
rows repeating the same image add captions to it. Relative paths are resolved against the file's folder.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from cliplab.data.base import ImageDataset
from cliplab.data.sources import FileSource
from cliplab.errors import DatasetError
from cliplab.io import hash_json

IMAGE_KEYS = ("image", "filepath", "path", "file", "image_path", "img")
CAPTION_KEYS = ("captions", "caption", "title", "text", "sentences")


def _pick(keys, candidates, path: Path, what: str) -> str:
    for c in candidates:
        if c in keys:
            return c
    raise DatasetError(f"{path}: no {what} column; expected one of {', '.join(candidates)} (found {', '.join(keys)})")


def _read_rows(path: Path) -> list[dict]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
        return rows
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    raise DatasetError(f"{path}: caption files must be .csv, .tsv or .jsonl")


def load_caption_file(path: str | Path, name: str | None = None, split: str = "all") -> ImageDataset:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"caption file not found: {path}")
    rows = _read_rows(path)
    if not rows:
        raise DatasetError(f"{path}: no rows")
    keys = list(dict.fromkeys(k for row in rows for k in row))  # JSONL rows may differ in their fields
    img_key = _pick(keys, IMAGE_KEYS, path, "image path")
    cap_keys = [k for k in keys if k in CAPTION_KEYS or k.startswith("caption_")]
    if not cap_keys:
        _pick(keys, CAPTION_KEYS, path, "caption")
    attr_keys = [k for k in keys if k != img_key and k not in cap_keys]

    order: list[str] = []
    caps: dict[str, list[str]] = {}
    attrs: dict[str, dict[str, str]] = {}
    for n, row in enumerate(rows, 1):
        img = row.get(img_key)
        if not img:
            raise DatasetError(f"{path}: row {n} has no {img_key!r}")
        full = str((path.parent / img).resolve()) if not Path(img).is_absolute() else img
        if full not in caps:
            order.append(full)
            caps[full] = []
            attrs[full] = {}
        for k in cap_keys:
            v = row.get(k)
            if isinstance(v, list):
                caps[full].extend(str(x) for x in v if str(x).strip())
            elif isinstance(v, str) and v.strip():
                caps[full].append(v.strip())
        for k in attr_keys:
            v = row.get(k)
            if isinstance(v, (str, int)) and str(v) != "":
                attrs[full][k] = str(v)

    attributes, attribute_classnames = {}, {}
    for k in attr_keys:
        vals = [attrs[p].get(k) for p in order]
        if any(v is None for v in vals):
            continue
        names = sorted(set(vals))
        lookup = {v: i for i, v in enumerate(names)}
        attributes[k] = np.array([lookup[v] for v in vals], dtype=np.int64)
        attribute_classnames[k] = names

    ds = ImageDataset(
        name=name or path.stem,
        split=split,
        source=FileSource(order),
        fingerprint="captions:" + hash_json({"file": str(path.resolve()), "rows": len(rows), "images": order})[:24],
        captions=[caps[p] for p in order],
        attributes=attributes,
        attribute_classnames=attribute_classnames,
    )
    if "label" in attributes:
        ds = ds.with_label("label")
        ds.name = name or path.stem
    return ds
