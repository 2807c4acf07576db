"""Where cliplab keeps things: one user cache dir (override with CLIPLAB_CACHE_DIR or --cache-dir)."""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs


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
