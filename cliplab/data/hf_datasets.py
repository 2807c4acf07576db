"""Hugging Face ``datasets``: a dataset saved with ``save_to_disk`` (a folder), or one named on the hub
(``hf-datasets:org/name``; offline, only from the local HF cache). ``datasets`` is optional (``cliplab[hf]``).

The image column is a ``datasets.Image`` feature or a ``{"bytes", "path"}`` struct; a ``ClassLabel`` column gives
class indices and names (a plain integer column needs a ``classnames`` file, a string column holds the names); a
caption column holds a string or a list of strings. Columns are found by type and name, or chosen with
``#image=COL,label=COL,caption=COL`` (``#config=NAME`` picks a hub dataset's configuration). An image's cache key
is the content hash of its bytes (of its file when only a path is stored), as for the same file in a folder.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from PIL import Image

from cliplab.data.base import ImageDataset
from cliplab.data.captions import CAPTION_KEYS
from cliplab.data.columns import check_options, choose_column, encode_labels
from cliplab.data.filehash import hash_files
from cliplab.data.imageio import BadImage, decode_rgb, open_rgb
from cliplab.data.sources import ImageSource
from cliplab.data.splits import SplitError
from cliplab.errors import DatasetParameterError
from cliplab.io import hash_bytes, hash_json

PREFIX = "hf-datasets:"
OPTIONS = ("image", "label", "caption", "config")
LABEL_KEYS = ("label",)
INSTALL = "pip install 'cliplab[hf]'"
_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_OFFLINE_VARS = ("CLIPLAB_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def is_saved_dataset(path: Path) -> bool:
    """Whether a local folder is what ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` write."""
    return (path / "dataset_dict.json").is_file() or \
        ((path / "state.json").is_file() and (path / "dataset_info.json").is_file())


def _datasets(spec: str):
    try:
        import datasets  # optional dependency (cliplab[hf])
    except ImportError:
        raise DatasetParameterError("dataset", spec, f"Hugging Face datasets need the datasets package: {INSTALL}",
                                    quote=False) from None
    return datasets


class HFImageSource(ImageSource):
    """The image column of a Hugging Face dataset, read undecoded: keys are content hashes of the stored bytes."""

    def __init__(self, table, column: str, name: str):
        self.table, self.column, self.name = table, column, name  # table: a Dataset of that column, undecoded
        self.key_errors: dict[int, str] = {}
        self._keys: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.table)

    def id(self, i: int) -> str:
        return f"{self.name}[{i}]"

    def keys(self) -> list[str | None]:
        if self._keys is None:
            keys: list[str | None] = []
            by_path: dict[int, str] = {}
            for cell in self.table.iter(batch_size=256):
                for value in cell[self.column]:
                    i = len(keys)
                    if isinstance(value, dict) and value.get("bytes"):
                        keys.append("f:" + hash_bytes(value["bytes"]))
                        continue
                    keys.append(None)
                    if isinstance(value, dict) and value.get("path"):
                        by_path[i] = value["path"]
                    else:
                        self.key_errors[i] = "no image in this row"
            if by_path:  # stored as a path only: the file's hash, as a folder gives it
                rows = list(by_path)
                hashes, errors = hash_files([by_path[i] for i in rows])
                for n, i in enumerate(rows):
                    keys[i] = None if hashes[n] is None else "f:" + hashes[n]
                    if n in errors:
                        self.key_errors[i] = errors[n]
            self._keys = keys
        return self._keys

    def load(self, i: int) -> Image.Image:
        value = self.table[i][self.column]
        if isinstance(value, dict) and value.get("bytes"):
            return decode_rgb(value["bytes"])
        if isinstance(value, dict) and value.get("path"):
            return open_rgb(value["path"])
        raise BadImage("no image in this row")


def _is_image(feature, datasets) -> bool:
    if isinstance(feature, datasets.Image):
        return True
    return isinstance(feature, dict) and set(feature) == {"bytes", "path"}


def _is_text(feature, datasets) -> bool:
    if isinstance(feature, datasets.Value):
        return feature.dtype in ("string", "large_string")
    inner = getattr(feature, "feature", None)  # List / Sequence / LargeList of strings
    return inner is not None and isinstance(inner, datasets.Value) and inner.dtype in ("string", "large_string")


def _columns(features, options: dict[str, list[str]], spec: str, datasets) -> tuple[str, str | None, list[str]]:
    """(image column, label column or None, caption columns) by the user's choice or by type and name."""
    names = list(features)

    def one(kind: str, found: list[str], param: str) -> str | None:
        if len(found) > 1:
            raise DatasetParameterError("dataset", spec, f"several {kind} columns ({', '.join(found)}); choose one: "
                                        f"{spec}#{param}=COLUMN", quote=False)
        return found[0] if found else None

    image = choose_column(names, options.get("image", [None])[0], (), "images", spec) \
        or one("image", [c for c in names if _is_image(features[c], datasets)], "image")
    if image is None:
        raise DatasetParameterError("dataset", spec, f"no image column (an Image feature or a bytes/path struct) "
                                    f"among {', '.join(f'{c} ({type(features[c]).__name__})' for c in names)}",
                                    quote=False)
    if not _is_image(features[image], datasets):
        raise DatasetParameterError("dataset", spec, f"column {image!r} holds {features[image]!r}, not images",
                                    quote=False)
    label = choose_column(names, options.get("label", [None])[0], (), "labels", spec) \
        or one("ClassLabel", [c for c in names if isinstance(features[c], datasets.ClassLabel)], "label") \
        or next((c for c in LABEL_KEYS if c in names), None)
    if "caption" in options:
        captions = [choose_column(names, c, (), "captions", spec) for c in options["caption"]]
    else:
        captions = [c for c in names if (c in CAPTION_KEYS or c.startswith("caption_")) and c != label]
    bad = next((c for c in captions if not _is_text(features[c], datasets)), None)
    if bad is not None:
        raise DatasetParameterError("dataset", spec, f"column {bad!r} holds {features[bad]!r}, not caption text",
                                    quote=False)
    return image, label, captions


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in _OFFLINE_VARS)


@contextlib.contextmanager
def _hub_mode(datasets, offline: bool):
    """The HF hub and ``datasets`` set to use only their local caches while ``offline`` (a missing dataset then
    fails at once instead of after retries)."""
    from cliplab.models.openclip import quiet_hub

    switches = [a for a in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hasattr(datasets.config, a)]  # by version
    old = {a: getattr(datasets.config, a) for a in switches}
    for a in switches:
        setattr(datasets.config, a, old[a] or offline)
    try:
        with quiet_hub(offline):
            yield
    finally:
        for a in switches:
            setattr(datasets.config, a, old[a])


def _from_hub(name: str, split: str | None, config: str | None, spec: str, datasets):
    from cliplab.models.openclip import network_available

    offline = _offline() or not network_available()
    with _hub_mode(datasets, offline):
        try:
            builder = datasets.load_dataset_builder(name, config)
        except Exception as exc:  # noqa: BLE001 - datasets raises many types (ConnectionError, DatasetNotFoundError...)
            why = "offline and not in the local Hugging Face cache" if offline else f"{type(exc).__name__}: {exc}"
            raise DatasetParameterError("dataset", spec, f"cannot get Hugging Face dataset {name!r} ({why}); save "
                                        "it with Dataset.save_to_disk on a machine with internet and pass that "
                                        "folder", quote=False) from None
        splits = list(builder.info.splits or [])
        if split is None:
            raise DatasetParameterError("split", None, f"Hugging Face dataset {name} has splits ("
                                        f"{', '.join(splits) or 'unknown'}): choose one with {{p:split}}",
                                        prefix=False)
        if splits and split not in splits:
            raise SplitError(f"Hugging Face dataset {name}", split, splits)
        try:
            return datasets.load_dataset(name, config, split=split)
        except Exception as exc:  # noqa: BLE001 - as above
            raise DatasetParameterError("dataset", spec, f"cannot load Hugging Face dataset {name!r} split "
                                        f"{split!r} ({type(exc).__name__}: {exc})", quote=False) from None


def _from_disk(folder: Path, split: str | None, spec: str, datasets):
    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:  # noqa: BLE001 - FileNotFoundError, json/arrow errors of a damaged save
        raise DatasetParameterError("dataset", spec, f"cannot read the saved Hugging Face dataset {folder} "
                                    f"({type(exc).__name__}: {exc})", quote=False) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if split is None:
            raise DatasetParameterError("split", None, f"Hugging Face dataset {folder} holds splits "
                                        f"({', '.join(splits)}): choose one with {{p:split}}", prefix=False)
        if split not in loaded:
            raise SplitError(f"Hugging Face dataset {folder}", split, splits)
        return loaded[split], split
    saved = str(loaded.split) if loaded.split is not None else None
    if split not in (None, "all", saved):
        raise SplitError(f"Hugging Face dataset {folder}", split, [saved] if saved else [])
    return loaded, saved or "all"


def load_hf_dataset(spec: str, where: str, options: dict[str, list[str]], split: str | None = None,
                    classnames_file: str | None = None) -> ImageDataset:
    """A saved folder or a hub name (``where``, without the ``hf-datasets:`` prefix) as a dataset."""
    check_options(options, OPTIONS, spec, "a Hugging Face dataset")
    datasets = _datasets(spec)
    config = options.get("config", [None])[0]
    folder = Path(where).expanduser()
    if folder.is_dir():
        if config is not None:
            raise DatasetParameterError("dataset", spec, "#config= is for hub datasets; a saved folder has one "
                                        "configuration", quote=False)
        table, split_name = _from_disk(folder, split, spec, datasets)
        name, origin = folder.resolve().name, str(folder.resolve())
    elif _HUB_NAME.match(where):
        table, split_name = _from_hub(where, split, config, spec, datasets), split
        name, origin = where.rsplit("/", 1)[-1], f"hub:{where}:{config or ''}"
    else:
        raise DatasetParameterError("dataset", spec, f"{where} is neither a folder saved with save_to_disk nor a "
                                    "hub dataset name (org/name)", quote=False)
    if len(table) == 0:
        raise DatasetParameterError("dataset", spec, f"split {split_name!r} has no rows", quote=False)
    image, label, caption_cols = _columns(table.features, options, spec, datasets)
    raw = table.select_columns([image])
    if isinstance(table.features[image], datasets.Image):
        raw = raw.cast_column(image, datasets.Image(decode=False))
    labels = names = None
    if label is not None:
        feature = table.features[label]
        scalar = isinstance(feature, datasets.Value) and (feature.dtype.startswith("int") or
                                                          feature.dtype in ("string", "large_string"))
        if not (isinstance(feature, datasets.ClassLabel) or scalar):
            raise DatasetParameterError("dataset", spec, f"column {label!r} holds {feature!r}, not one class label per "
                                        "row (a ClassLabel, integer or string column)", quote=False)
        values = list(table[label])
        class_names = feature.names if isinstance(feature, datasets.ClassLabel) else None
        labels, names = encode_labels(values, spec, f"labels (column {label!r})", classnames_file, names=class_names)
    captions = None
    if caption_cols:
        columns = [list(table[c]) for c in caption_cols]
        captions = [[t.strip() for cell in row for t in ([cell] if isinstance(cell, str) else cell or [])
                     if isinstance(t, str) and t.strip()] for row in zip(*columns)]
    state = getattr(table, "_fingerprint", None)
    return ImageDataset(
        name=name,
        split=split_name,
        source=HFImageSource(raw, image, f"{name}:{split_name}"),
        fingerprint="hf:" + hash_json({"origin": origin, "split": split_name, "state": state, "image": image,
                                       "label": label})[:24],
        classnames=names,
        labels=labels,
        captions=captions,
    )
