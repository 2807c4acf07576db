"""Content hashes of image files, remembered by file metadata.

The embedding cache is keyed by file *content*, so a run over a folder must know every file's hash. Reading every
byte again on each run costs as much I/O as the first run (minutes for a large collection on network storage) just
to learn that nothing changed. While a memo is active (``embed_images`` activates ``<cache>/file-hashes.sqlite``),
each file is ``stat``-ed first: one whose absolute path, size, modification time (ns) and inode match a stored row
gets the stored hash; any other file is hashed again and its row replaced. Like git's index, this trusts that
changing a file changes its size or mtime. ``--no-cache`` runs use no memo. A memo that cannot be opened or
written (read-only cache, corrupt file, lock held too long) is skipped with a warning: files are then hashed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from cliplab.io import hash_file

log = logging.getLogger(__name__)

MEMO_NAME = "file-hashes.sqlite"
_ACTIVE: ContextVar[Path | None] = ContextVar("cliplab_file_hash_memo", default=None)


@contextlib.contextmanager
def file_hash_memo(path: str | os.PathLike | None) -> Iterator[None]:
    """Use the memo at ``path`` for the content hashes computed inside the block (``None``: no memo)."""
    token = _ACTIVE.set(Path(path) if path is not None else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=60)
    con.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                "ino INTEGER, hash TEXT)")
    return con


def _known(con: sqlite3.Connection, paths: list[str]) -> dict[str, tuple[tuple[int, int, int], str]]:
    con.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (path TEXT PRIMARY KEY)")
    con.execute("DELETE FROM wanted")
    con.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", ((p,) for p in paths))
    rows = con.execute("SELECT f.path, f.size, f.mtime_ns, f.ino, f.hash FROM files f JOIN wanted w ON f.path = w.path")
    return {p: ((size, mtime, ino), h) for p, size, mtime, ino, h in rows}


def hash_files(paths: list[str], workers: int = 8) -> tuple[list[str | None], dict[int, str]]:
    """(blake2b hex digest of each file or None, {index: reason} for the unreadable ones)."""
    memo_path = _ACTIVE.get()
    absolute = [os.path.abspath(p) for p in paths]
    con, known = None, {}
    if memo_path is not None and absolute:
        try:
            con = _connect(memo_path)
            known = _known(con, absolute)
        except sqlite3.Error as exc:
            log.warning("file-hash memo %s unusable (%s); hashing every file", memo_path, exc)
            con = None

    hashes: list[str | None] = [None] * len(paths)
    errors: dict[int, str] = {}
    todo: list[tuple[int, tuple[int, int, int]]] = []  # files to read: (index, stat signature taken before)
    for i, p in enumerate(absolute):
        try:
            st = os.stat(p)
        except OSError as exc:
            errors[i] = f"unreadable file: {exc.strerror or exc}"
            continue
        sig = (st.st_size, st.st_mtime_ns, st.st_ino)
        row = known.get(p)
        if row is not None and row[0] == sig:
            hashes[i] = row[1]
        else:
            todo.append((i, sig))

    def read(i: int) -> str | OSError:
        try:
            return hash_file(absolute[i])
        except OSError as exc:
            return exc

    fresh = []  # a file changed between stat and read is stored with the old stat, so it is re-hashed next time
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (i, sig), h in zip(todo, pool.map(read, [i for i, _ in todo])):
            if isinstance(h, OSError):
                errors[i] = f"unreadable file: {h.strerror or h}"
            else:
                hashes[i] = h
                fresh.append((absolute[i], *sig, h))
    if con is not None:
        try:
            if fresh:
                with con:
                    con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", fresh)
        except sqlite3.Error as exc:
            log.warning("file-hash memo %s not updated (%s)", memo_path, exc)
        finally:
            con.close()
    return hashes, errors
