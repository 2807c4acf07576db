"""Image folders: ImageNet-style ``root/<class>/*.jpg`` (optionally ``root/<split>/<class>/``) or a flat folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cliplab.data.base import FileSource, ImageDataset
from cliplab.data.classnames import clean_classnames, map_classnames
from cliplab.errors import DatasetError
from cliplab.io import hash_json

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def load_folder(root: str | Path, split: str | None = None, classnames_file: str | None = None) -> ImageDataset:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root}")
    base = root
    if split and (root / split).is_dir():
        base = root / split
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    class_dirs = [d for d in class_dirs if list_images(d)]
    if class_dirs:
        paths, labels = [], []
        for label, d in enumerate(class_dirs):
            files = list_images(d)
            paths.extend(str(p) for p in files)
            labels.extend([label] * len(files))
        folder_names = [d.name for d in class_dirs]
        classnames = map_classnames(classnames_file, folder_names) if classnames_file else clean_classnames(folder_names)
        labels_arr = np.asarray(labels, dtype=np.int64)
    else:
        files = list_images(base)
        if not files:
            raise DatasetError(f"no images found in {base} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        paths, classnames, labels_arr = [str(p) for p in files], None, None
    rel = [str(Path(p).relative_to(base)) for p in paths]
    return ImageDataset(
        name=root.name,
        split=split or "all",
        source=FileSource(paths),
        fingerprint="folder:" + hash_json({"root": str(base.resolve()), "files": rel})[:24],
        classnames=classnames,
        labels=labels_arr,
    )
