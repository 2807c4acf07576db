"""Where dataset files live: local paths, or URLs (``s3://``, ``gs://``, ``https://``, ``file://``...) read through
fsspec when the user has the filesystem package for that protocol. One small interface (:class:`Store`) serves the
readers of tar shards and manifests, plus byte ranges read by position and an image source of URLs."""
from __future__ import annotations

import glob as globmod
import os
import posixpath
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from PIL import Image

from cliplab.data.imageio import BadImage, decode_rgb
from cliplab.data.sources import ImageSource
from cliplab.errors import DatasetParameterError
from cliplab.io import hash_bytes

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(spec: str) -> bool:
    """True for ``protocol://...`` (a local path never has ``://``)."""
    return bool(_URL.match(spec))


def url_filesystem(url: str, spec: str):
    """(fsspec filesystem, path inside it) for ``url``; a missing fsspec or filesystem package for the protocol is a
    :class:`DatasetParameterError` on ``dataset`` saying what to install."""
    try:
        import fsspec  # optional: installed with huggingface_hub, or on its own
    except ImportError:
        raise DatasetParameterError("dataset", spec, f"reading {url} needs fsspec: pip install fsspec (plus the "
                                    "package of the protocol, e.g. s3fs, gcsfs)", quote=False) from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # "Install s3fs to access S3", "Protocol not known: xyz"
        raise DatasetParameterError("dataset", spec, f"cannot read {url}: {exc}", quote=False) from None


class Store:
    """Files of one place: the local file system (``fs`` None) or one fsspec file system. Paths are the store's
    own (local paths, or fsspec paths without the protocol); :meth:`location` gives the name shown to the user."""

    def __init__(self, fs=None):
        self.fs = fs

    @classmethod
    def of(cls, spec: str, where: str) -> tuple["Store", str]:
        """The store of ``where`` (a local path or a URL) and the path inside it; ``spec`` names errors."""
        if is_url(where):
            fs, path = url_filesystem(where, spec)
            return cls(fs), path
        return cls(), os.path.abspath(os.path.expanduser(where))

    @property
    def remote(self) -> bool:
        return self.fs is not None

    def location(self, path: str) -> str:
        return path if self.fs is None else self.fs.unstrip_protocol(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path) if self.fs is None else self.fs.isdir(path)

    def isfile(self, path: str) -> bool:
        return os.path.isfile(path) if self.fs is None else self.fs.isfile(path)

    def listdir(self, path: str) -> list[str]:
        """Full paths of the entries of folder ``path``, hidden ones left out, sorted."""
        if self.fs is None:
            names = [os.path.join(path, n) for n in os.listdir(path)]
        else:
            names = [p.rstrip("/") for p in self.fs.ls(path, detail=False)]
        return sorted(p for p in names if not posixpath.basename(p).startswith("."))

    def glob(self, pattern: str) -> list[str]:
        return sorted(globmod.glob(pattern) if self.fs is None else self.fs.glob(pattern))

    def join(self, *parts: str) -> str:
        return os.path.join(*parts) if self.fs is None else posixpath.join(*parts)

    def parent(self, path: str) -> str:
        return os.path.dirname(path.rstrip("/")) if self.fs is None else posixpath.dirname(path.rstrip("/"))

    def name(self, path: str) -> str:
        return os.path.basename(path.rstrip(os.sep)) if self.fs is None else posixpath.basename(path.rstrip("/"))

    def size(self, path: str) -> int:
        return os.path.getsize(path) if self.fs is None else int(self.fs.size(path))

    def open(self, path: str):
        """A seekable binary file object."""
        return open(path, "rb") if self.fs is None else self.fs.open(path, "rb")


class RangeReader:
    """Byte ranges of files read by position, with a few open handles kept (local: ``os.pread``, which shares no
    file position, so threads and forked DataLoader workers cannot disturb each other; remote: a seekable fsspec
    file per process). Picklable: handles are reopened where it is used."""

    KEEP = 32  # open handles at most

    def __init__(self, store: Store):
        self.store = store
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._handles: dict[str, object] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"store": self.store}

    def __setstate__(self, state):
        self.store = state["store"]
        self._reset()

    def read(self, path: str, offset: int, size: int) -> bytes:
        if os.getpid() != self._pid:  # a forked worker: the parent's remote handles are not ours to use
            self._reset()
        with self._lock:
            handle = self._handles.pop(path, None)
            if handle is None:
                if len(self._handles) >= self.KEEP:
                    self._close(self._handles.pop(next(iter(self._handles))))
                handle = os.open(path, os.O_RDONLY) if self.store.fs is None else self.store.open(path)
            self._handles[path] = handle  # most recently used last
            if self.store.fs is None:
                data = os.pread(handle, size, offset)
            else:
                handle.seek(offset)
                data = handle.read(size)
        if len(data) != size:
            raise OSError(f"{self.store.location(path)} ends before byte {offset + size}")
        return data

    def _close(self, handle) -> None:
        if isinstance(handle, int):
            os.close(handle)
        else:
            handle.close()


class UrlSource(ImageSource):
    """Image files named by URL (or local paths mixed with URLs), read through fsspec; keys are the content hash of
    each file's bytes, the same as :class:`~cliplab.data.sources.FileSource` gives the same file on disk."""

    def __init__(self, urls: Sequence[str], spec: str):
        self.urls = [str(u) for u in urls]
        self.spec = spec
        self.key_errors: dict[int, str] = {}
        self._keys: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.urls)

    def id(self, i: int) -> str:
        return self.urls[i]

    def _bytes(self, i: int) -> bytes:
        url = self.urls[i]
        if not is_url(url):
            with open(url, "rb") as fh:
                return fh.read()
        fs, path = url_filesystem(url, self.spec)
        return fs.cat_file(path)

    def _key(self, i: int) -> str | tuple[str]:
        try:
            return "f:" + hash_bytes(self._bytes(i))
        except FileNotFoundError:
            return ("file not found",)
        except OSError as exc:
            return (f"unreadable file: {exc}",)

    def keys(self) -> list[str | None]:
        if self._keys is None:
            with ThreadPoolExecutor(max_workers=8) as pool:
                found = list(pool.map(self._key, range(len(self.urls))))
            self._keys = [k if isinstance(k, str) else None for k in found]
            self.key_errors.update({i: k[0] for i, k in enumerate(found) if not isinstance(k, str)})
        return self._keys

    def load(self, i: int) -> Image.Image:
        try:
            data = self._bytes(i)
        except FileNotFoundError:
            raise BadImage("file not found") from None
        except OSError as exc:
            raise BadImage(f"unreadable file: {exc}") from None
        return decode_rgb(data)
