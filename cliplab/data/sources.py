"""Image sources: indexable images with a stable cache key per item (files, in-memory sets, subsets, crops)."""
from __future__ import annotations

import operator
import os
from typing import Callable, Sequence

import numpy as np

from PIL import Image

from cliplab.data.filehash import hash_files
from cliplab.data.imageio import open_rgb, to_rgb


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

    def files(self) -> list[str]:
        """The local files this source reads (for the output guard: no run may write over one of its inputs)."""
        base = getattr(self, "base", None)
        return base.files() if isinstance(base, ImageSource) else []

    key_errors: dict[int, str]


class PathList(Sequence[str]):
    """Path strings held as one string and the offsets where each ends, after their common prefix: ~70 bytes a
    path less than a list of ``str`` (a million paths: ~35 MB instead of ~120 MB). Indexing gives ``str``; a slice
    gives a list. Equal to a list (or PathList) of the same paths."""

    def __init__(self, paths: Sequence[str]):
        n = len(paths)
        self.prefix = os.path.commonprefix([min(paths), max(paths)]) if n else ""
        cut = len(self.prefix)
        self.text = "".join([p[cut:] for p in paths])
        self.ends = np.cumsum(np.fromiter(map(len, paths), dtype=np.int64, count=n)) - cut * np.arange(1, n + 1)

    def __len__(self) -> int:
        return len(self.ends)

    def _at(self, i: int) -> str:
        start = int(self.ends[i - 1]) if i else 0
        return self.prefix + self.text[start:int(self.ends[i])]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._at(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        i = operator.index(i)
        if not -n <= i < n:
            raise IndexError("path index out of range")
        return self._at(i % n)

    def __iter__(self):
        start, prefix, text = 0, self.prefix, self.text
        for end in self.ends.tolist():
            yield prefix + text[start:end]
            start = end

    def __eq__(self, other) -> bool:
        if isinstance(other, (PathList, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(p) for p in self[:3])
        return f"PathList([{head}{', ...' if len(self) > 3 else ''}], {len(self)} paths)"


class FileSource(ImageSource):
    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = PathList(list(map(os.fspath, paths)))
        self.key_errors: dict[int, str] = {}
        self._keys: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def id(self, i: int) -> str:
        return self.paths[i]

    def keys(self) -> list[str | None]:
        if self._keys is None:
            keys, errors = hash_files(self.paths)
            for i, h in enumerate(keys):  # in place: a million digests are not held twice
                if h is not None:
                    keys[i] = "f:" + h
            self._keys = keys
            self.key_errors.update(errors)
        return self._keys

    def load(self, i: int) -> Image.Image:
        return open_rgb(self.paths[i])

    def files(self) -> list[str]:
        return self.paths


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


class CroppedSource(ImageSource):
    """Query images cropped to their ground-truth boxes (Oxford protocol)."""

    def __init__(self, base: ImageSource, items: list[tuple[int, tuple[float, float, float, float] | None]]):
        self.base, self.items = base, items
        self.key_errors: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.items)

    def id(self, i: int) -> str:
        j, box = self.items[i]
        return self.base.id(j) + (f" crop {box}" if box else "")

    def keys(self):
        base = self.base.keys()
        return [None if base[j] is None else (base[j] if box is None else f"crop:{base[j]}:{box}")
                for j, box in self.items]

    def load(self, i: int) -> Image.Image:
        j, box = self.items[i]
        img = self.base.load(j)
        return img if box is None else img.crop(tuple(int(round(v)) for v in box))
