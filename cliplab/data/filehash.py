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
from typing import Callable, Iterator

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
    con.execute("CREATE TABLE IF NOT EXISTS derived (kind TEXT, path TEXT, size INTEGER, mtime_ns INTEGER, "
                "ino INTEGER, value TEXT, PRIMARY KEY (kind, path))")
    return con


def _key(path: str) -> str | bytes:
    """A path as the memo stores it: its text, or for a file name that is not UTF-8 (surrogate escapes, which
    SQLite cannot store as text) its bytes, a BLOB that no text path equals."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def _path(key: str | bytes) -> str:
    return os.fsdecode(key) if isinstance(key, bytes) else key


def _known(con: sqlite3.Connection, paths: list[str]) -> dict[str, tuple[tuple[int, int, int], str]]:
    con.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (path TEXT PRIMARY KEY)")
    con.execute("DELETE FROM wanted")
    con.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", ((_key(p),) for p in paths))
    rows = con.execute("SELECT f.path, f.size, f.mtime_ns, f.ino, f.hash FROM files f JOIN wanted w ON f.path = w.path")
    return {_path(p): ((size, mtime, ino), h) for p, size, mtime, ino, h in rows}


def _open_memo(path: Path, absolute: list[str]):
    """(connection, known rows), or (None, {}) when the memo cannot be used. A corrupt memo is only a cache: it is
    deleted and started afresh; a locked or unwritable one is left alone for this run."""
    for attempt in (1, 2):
        con = None
        try:
            con = _connect(path)
            return con, _known(con, absolute)
        except sqlite3.Error as exc:
            if con is not None:
                con.close()
            corrupt = isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)
            if corrupt and attempt == 1:
                log.warning("file-hash memo %s is corrupt (%s); starting a new one", path, exc)
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            log.warning("file-hash memo %s unusable (%s); hashing every file", path, exc)
    return None, {}


def _signature(path: str) -> tuple[int, int, int] | OSError:
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc
    return st.st_size, st.st_mtime_ns, st.st_ino


def _read(path: str) -> str | OSError:
    try:
        return hash_file(path)
    except OSError as exc:
        return exc


def hash_files(paths: list[str], workers: int = 8) -> tuple[list[str | None], dict[int, str]]:
    """(blake2b hex digest of each file or None, {index: reason} for the unreadable ones).

    Files are stat-ed and read in ``workers`` threads (stat calls in chunks: cheap locally, slow on network file
    systems); with a memo active only the files whose stat differs from the stored one are read.
    """
    memo_path = _ACTIVE.get()
    absolute = [os.path.abspath(p) for p in paths]
    hashes: list[str | None] = [None] * len(paths)
    errors: dict[int, str] = {}
    con, known = None, {}
    if memo_path is not None and absolute:
        con, known = _open_memo(memo_path, absolute)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        def chunked(fn, items: list, step: int) -> list:  # one thread task per chunk: per-file tasks cost ~50 us
            done = pool.map(lambda lo: [fn(x) for x in items[lo:lo + step]], range(0, len(items), step))
            return [r for chunk in done for r in chunk]

        todo = list(range(len(paths)))
        sigs: list = [None] * len(paths)
        if con is not None:  # stat first; read only what changed since the stored stat
            sigs = chunked(_signature, absolute, 1024)
            todo = []
            for i, sig in enumerate(sigs):
                row = known.get(absolute[i])
                if isinstance(sig, OSError):
                    errors[i] = f"unreadable file: {sig.strerror or sig}"
                elif row is not None and row[0] == sig:
                    hashes[i] = row[1]
                else:
                    todo.append(i)
        fresh = []  # stored with the stat taken before reading: a file changed meanwhile is re-hashed next time
        for i, h in zip(todo, chunked(_read, [absolute[i] for i in todo], 16)):
            if isinstance(h, OSError):
                errors[i] = f"unreadable file: {h.strerror or h}"
            else:
                hashes[i] = h
                if sigs[i] is not None:
                    fresh.append((_key(absolute[i]), *sigs[i], h))
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


def memoized(kind: str, path: str, compute: Callable[[], str]) -> str:
    """``compute()``: a text derived from the whole file at ``path`` (the hashes of a tar shard's members), kept in
    the active memo under ``kind`` and reused while the file's size, mtime and inode match (the rule of
    :func:`hash_files`). Without a memo, or one that cannot be used, it is computed every time."""
    memo_path = _ACTIVE.get()
    absolute = os.path.abspath(path)
    sig = _signature(absolute)
    if memo_path is None or isinstance(sig, OSError):
        return compute()
    try:
        con = _connect(memo_path)
    except sqlite3.Error as exc:
        log.warning("file-hash memo %s unusable (%s); reading %s again", memo_path, exc, path)
        return compute()
    try:
        row = con.execute("SELECT size, mtime_ns, ino, value FROM derived WHERE kind = ? AND path = ?",
                          (kind, _key(absolute))).fetchone()
    except sqlite3.Error as exc:
        con.close()
        log.warning("file-hash memo %s not used for %s (%s)", memo_path, path, exc)
        return compute()
    if row is not None and tuple(row[:3]) == sig:
        con.close()
        return row[3]
    try:
        value = compute()
        with con:
            con.execute("INSERT OR REPLACE INTO derived VALUES (?, ?, ?, ?, ?, ?)", (kind, _key(absolute), *sig,
                                                                                   value))
    except sqlite3.Error as exc:
        log.warning("file-hash memo %s not updated for %s (%s)", memo_path, path, exc)
    finally:
        con.close()
    return value
