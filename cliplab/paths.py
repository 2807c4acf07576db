"""Where cliplab keeps things: one user cache dir (override with CLIPLAB_CACHE_DIR or --cache-dir)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import platformdirs

from cliplab.errors import ParameterError


def default_cache_dir() -> Path:
    env = os.environ.get("CLIPLAB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("cliplab"))


def cache_dir_path(cache_dir: str | os.PathLike | None) -> Path:
    """The cache folder ``cache_dir`` names (``$CLIPLAB_CACHE_DIR`` or the user cache dir when None)."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """The cache folder, created if it does not exist yet."""
    path = cache_dir_path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def unwritable(folder: str | os.PathLike) -> str | None:
    """Why nothing can be written in ``folder``, or None when a file can be: checked by writing one there (or in its
    nearest existing parent, which is where it would be created; nothing is left behind), so it holds for root,
    read-only mounts and quotas alike, where permission bits say nothing."""
    existing = nearest_existing(Path(folder))
    if not existing.is_dir():
        return f"{existing} is {'a file' if existing.is_file() else 'something else'}, not a folder"
    try:
        _write_probe(existing)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def nearest_existing(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest parent that does."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _write_probe(folder: Path) -> None:
    """Create and remove a file in ``folder`` (raises the OSError that writing there meets)."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".cliplab-write-check-")
    os.close(fd)
    os.unlink(probe)


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes an unprivileged user may still write on the filesystem that holds ``folder`` (or its nearest existing
    parent)."""
    return shutil.disk_usage(nearest_existing(Path(folder))).free


def human_bytes(n: float) -> str:
    """``n`` bytes for people: 512 B, 3.1 MB, 2.0 GB (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# what a person can do about a cache that cannot take what a run writes (parameters spelled by each door)
CACHE_REMEDY = "pass {p:no_cache} to run without the embedding cache, or choose another {p:cache_dir}"


def require_writable(cache_dir: str | os.PathLike, folder: str | os.PathLike | None = None) -> None:
    """Raise a :class:`ParameterError` naming ``cache_dir`` when nothing can be written in it (or in ``folder``,
    a folder inside it): called before any work, so none is thrown away at the first write."""
    for place in dict.fromkeys(Path(p) for p in (cache_dir, folder) if p is not None):
        why = unwritable(place)
        if why is not None:
            where = "" if place == Path(cache_dir) else f" (in {place})"
            raise ParameterError("cache_dir", str(cache_dir), f"cannot write in the cache{where}: {why}; "
                                 + CACHE_REMEDY, quote=False)


def require_space(cache_dir: str | os.PathLike, folder: str | os.PathLike, need: int, what: str) -> None:
    """Raise a :class:`ParameterError` naming ``cache_dir`` when the disk holding ``folder`` has less than
    ``need`` bytes free (``what``: what they are for, e.g. '20,000 image embeddings')."""
    free = free_bytes(folder)
    if free < need:
        raise ParameterError("cache_dir", str(cache_dir), f"the disk holding the cache has {human_bytes(free)} "
                             f"free and this run needs about {human_bytes(need)} for {what}; free some space, or "
                             + CACHE_REMEDY, quote=False)
