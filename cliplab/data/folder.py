"""Image folders: ImageNet-style ``root/<class>/*.jpg`` (optionally ``root/<split>/<class>/``) or a flat folder."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from cliplab.data.base import ImageDataset
from cliplab.data.sources import FileSource
from cliplab.data.classnames import clean_classnames, map_classnames, wordnet_classnames
from cliplab.data.splits import SplitError, is_split_name
from cliplab.errors import DatasetError, DatasetParameterError
from cliplab.files import printable
from cliplab.progress import warn

CHUNK = 65536  # relative paths turned into JSON at a time for the fingerprint
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}


def image_files(folder: str, recursive: bool = True, follow_top: bool = True) -> list[str]:
    """The image files under ``folder`` (by extension; hidden files and folders skipped) as path strings joined onto
    ``folder``, sorted. One ``os.scandir`` pass per folder, no ``Path`` objects, no ``stat`` per file: a regular file
    is known by the directory entry's type (a symbolic link is followed, and kept when it leads to a file). Like
    ``os.walk`` it does not descend into symlinked sub-folders (``folder`` itself may be one)."""
    found: list[str] = []
    pending = [(folder, "" if folder == os.curdir else os.path.join(folder, ""))]  # ./a.jpg is named a.jpg (as Path)
    while pending:
        top, prefix = pending.pop()
        try:
            entries = os.scandir(top)
        except OSError:  # unreadable or vanished: os.walk's default (onerror=None) skips it as well
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        if recursive and not entry.is_symlink():
                            pending.append((prefix + name, prefix + name + os.sep))
                        continue
                    dot = name.rfind(".")  # os.path.splitext's extension for a name not starting with a dot
                    if dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS and entry.is_file():
                        found.append(prefix + name)
                except OSError:
                    continue
    found.sort()
    return found


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by extension, hidden ones skipped), sorted (:func:`image_files`, as paths)."""
    return [Path(p) for p in image_files(str(folder), recursive)]


def _class_folder(folder: Path) -> bool:
    """Whether ``folder`` holds images itself and no sub-folders of images (a class, not a split of classes)."""
    subdirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return bool(image_files(str(folder), recursive=False)) and not any(image_files(str(d)) for d in subdirs)


def folder_fingerprint(root: str, rel_chunks) -> str:
    """``hash_json({"root": root, "files": rel})`` of the relative paths ``rel`` given in chunks (lists), without
    holding them all or their JSON at once: the same digest, byte for byte (tested against hash_json)."""
    h = hashlib.sha256(b'{"files": [')
    first = True
    for chunk in rel_chunks:
        if not chunk:
            continue
        h.update(((", " if not first else "") + json.dumps(chunk)[1:-1]).encode())
        first = False
    h.update(("], " + json.dumps("root") + ": " + json.dumps(root) + "}").encode())
    return h.hexdigest()


def _class_name(folder: str, base: Path) -> str:
    """A class folder's name as prompts spell it: a name that is not UTF-8 (its bytes kept by surrogateescape)
    cannot be tokenized, so its bytes are spelled ``\\xNN``, with a warning saying how to name the class."""
    shown = printable(folder)
    if shown != folder:
        warn(f"class folder {shown} in {printable(str(base))} has a name that is not UTF-8: its class is named "
             f"{shown!r} in prompts; rename the folder, or name the classes with --classnames FILE (one per line, "
             "in folder order)")
    return shown


def load_folder(root: str | Path, split: str | None = None, classnames_file: str | None = None) -> ImageDataset:
    """An image folder as a dataset. ``root/<split>/<class>/`` needs ``split``; split folders are never classes.

    A folder that is itself a split folder (``eurosat/test``) is named after its collection (``eurosat``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root}")
    subdirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    split_dirs = [d for d in subdirs if is_split_name(d)]
    name = root.resolve().name
    if split:
        if (root / split).is_dir():
            if not is_split_name(split) and _class_folder(root / split):
                where = (f"its splits: {', '.join(split_dirs)}" if split_dirs else
                         "it has no splits (it is used whole): leave {p:split} out")
                raise DatasetParameterError("split", split, f"{split!r} is a class folder of {root} (it holds images, "
                                            f"not class folders), not a split; {where}")
            base = root / split
        elif is_split_name(root.name) and root.name == split:  # --dataset eurosat/test --split test
            base, name = root, root.resolve().parent.name
        else:
            raise SplitError(f"folder {root}", split, split_dirs)
    else:
        if split_dirs:
            raise DatasetParameterError(
                "split", split, f"folder {root} holds split folders ({', '.join(split_dirs)}), not classes: choose one "
                f"with {{p:split}} (e.g. {{p:split}} {'test' if 'test' in split_dirs else split_dirs[0]})",
                prefix=False)
        base = root
        if is_split_name(root.name):  # the user pointed at a split folder itself
            split, name = root.name, root.resolve().parent.name
    base_str = str(base)
    all_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_dir = [image_files(str(d)) for d in all_dirs]  # one pass over each class folder
    class_dirs = [d for d, files in zip(all_dirs, per_dir) if files]
    if class_dirs:
        empty = [d.name for d, files in zip(all_dirs, per_dir) if not files]
        loose = image_files(base_str, recursive=False)
        if empty:
            warn(f"{base}: {len(empty)} class folder(s) without images left out ({', '.join(empty[:5])}"
                 f"{', ...' if len(empty) > 5 else ''}); they are not classes of this dataset")
        if loose:
            warn(f"{base}: {len(loose)} image(s) beside the class folders left out (e.g. {os.path.basename(loose[0])}"
                 "): they belong to no class; move them into a class folder")
        per_class = [files for files in per_dir if files]
        paths = [p for files in per_class for p in files]
        labels_arr = np.repeat(np.arange(len(per_class), dtype=np.int64), [len(f) for f in per_class])
        folder_names = [d.name for d in class_dirs]
        if classnames_file:
            classnames = map_classnames(classnames_file, folder_names)
        else:
            classnames = wordnet_classnames(folder_names, f"{base}: ") or clean_classnames(
                [_class_name(n, base) for n in folder_names])
    else:
        paths = image_files(base_str)
        if not paths:
            raise DatasetError(f"no images found in {base} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        per_class, classnames, labels_arr = [paths], None, None
    del per_dir
    # each path relative to base, as the fingerprint names it: <class>/<name> (or <name> in a flat folder)
    tops = [(d.name + os.sep, len(os.path.join(str(d), ""))) for d in class_dirs] if class_dirs else \
        [("", 0 if base_str == os.curdir else len(os.path.join(base_str, "")))]
    fingerprint = folder_fingerprint(str(base.resolve()), ([top + p[cut:] for p in files[lo:lo + CHUNK]]
                                                            for files, (top, cut) in zip(per_class, tops)
                                                            for lo in range(0, len(files), CHUNK)))
    del per_class
    return ImageDataset(
        name=name,
        split=split or "all",
        source=FileSource(paths),
        fingerprint="folder:" + fingerprint[:24],
        classnames=classnames,
        labels=labels_arr,
    )
