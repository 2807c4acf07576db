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
import time
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterator, Sequence

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
    if path.isascii():
        return path
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def _absolute(path: str) -> str:
    """``os.path.abspath(path)``, without its cost for a path that is already absolute and normal (a folder's
    listing): on POSIX normpath changes only paths with ``//``, a ``.`` or ``..`` part, or a trailing slash."""
    if os.sep == "/" and path.startswith("/") and "//" not in path and "/." not in path and not path.endswith("/"):
        return path
    return os.path.abspath(path)


def _path(key: str | bytes) -> str:
    return os.fsdecode(key) if isinstance(key, bytes) else key


def _known(con: sqlite3.Connection, paths: list[str]) -> list[tuple[int, tuple[int, int, int], str]]:
    """The stored rows of ``paths``: (position in ``paths``, (size, mtime_ns, inode), hash) for each one known.

    The rows are read by one range scan of the memo's path index between the smallest and the largest path
    (a folder's paths come sorted, so the range holds about these rows: 3x faster than joining a table of them
    at a million rows); when the range holds many more rows than ``paths`` (paths spread over a larger memo), or
    for paths stored as bytes, the rows are looked up one by one through a temporary table instead."""
    want: dict[str, int] = {}  # path -> its first position
    repeats: list[tuple[int, str]] = []  # a path listed again: (position, path)
    blobs = []
    for i, p in enumerate(paths):
        key = p if p.isascii() else _key(p)
        if isinstance(key, bytes):
            blobs.append(i)
        elif want.setdefault(key, i) != i:
            repeats.append((i, key))
    out: list[tuple[int, tuple[int, int, int], str]] = []
    if want:
        limit = 2 * len(want) + SCAN_SLACK
        rows = con.execute("SELECT path, size, mtime_ns, ino, hash FROM files WHERE path >= ? AND path <= ? "
                           "LIMIT ?", (min(want), max(want), limit + 1)).fetchall()
        if len(rows) > limit:
            return _joined(con, paths, range(len(paths)))  # the whole chunk, one by one
        out = [(want[p], (size, mtime, ino), h) for p, size, mtime, ino, h in rows if p in want]
        if repeats:
            first = {i: (sig, h) for i, sig, h in out}
            out.extend((i, *first[want[p]]) for i, p in repeats if want[p] in first)
    if blobs:
        out.extend(_joined(con, paths, blobs))
    return out


def _joined(con: sqlite3.Connection, paths: list[str], which) -> list[tuple[int, tuple[int, int, int], str]]:
    """:func:`_known` for ``paths[i]``, i in ``which``, through a temporary table joined on the memo's index."""
    con.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (i INTEGER PRIMARY KEY, path TEXT)")
    con.execute("DELETE FROM wanted")
    con.executemany("INSERT INTO wanted VALUES (?, ?)", ((i, _key(paths[i])) for i in which))
    rows = con.execute("SELECT w.i, f.size, f.mtime_ns, f.ino, f.hash FROM wanted w JOIN files f ON f.path = w.path")
    return [(i, (size, mtime, ino), h) for i, size, mtime, ino, h in rows]


def _open_memo(path: Path, absolute: list[str]):
    """(connection, known rows of ``absolute``: :func:`_known`), or (None, []) when the memo cannot be used. A
    corrupt memo is only a cache: it is deleted and started afresh; a locked or unwritable one is left alone for
    this run."""
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
    return None, []


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


SCAN_SLACK = 1024  # memo rows a chunk's range scan may meet beyond twice the chunk's paths before the join is used
CHUNK = 65536  # files stat-ed, looked up in the memo and hashed at a time: memory stays bounded for any count


def hash_files(paths: Sequence[str], workers: int = 8) -> tuple[list[str | None], dict[int, str]]:
    """(blake2b hex digest of each file or None, {index: reason} for the unreadable ones).

    Files are read in ``workers`` threads and stat-ed in them too where a stat is slow (network file systems;
    :func:`_stats`); with a memo active only the files whose stat differs from the stored one are read. The files are
    taken :data:`CHUNK` at a time (their absolute paths, stats and memo rows held for one chunk only), so a folder
    of millions of files needs memory for the digests alone.
    """
    memo_path = _ACTIVE.get()
    hashes: list[str | None] = [None] * len(paths)
    errors: dict[int, str] = {}
    con, opened = None, memo_path is None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for lo in range(0, len(paths), CHUNK):
            absolute = [_absolute(p) for p in paths[lo:lo + CHUNK]]
            known: list = []
            if not opened:
                con, known = _open_memo(memo_path, absolute)
                opened = True
            elif con is not None:
                try:
                    known = _known(con, absolute)
                except sqlite3.Error as exc:
                    log.warning("file-hash memo %s unusable (%s); hashing the remaining files", memo_path, exc)
                    con.close()
                    con = None
            fresh = _hash_chunk(pool, absolute, known, con is not None, lo, hashes, errors)
            if con is not None and fresh:
                try:
                    with con:
                        con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", fresh)
                except sqlite3.Error as exc:
                    log.warning("file-hash memo %s not updated (%s)", memo_path, exc)
    if con is not None:
        con.close()
    return hashes, errors


SLOW_STAT = 20e-6  # seconds a stat takes on network storage or worse: there the stats run in threads


def _stats(absolute: list[str], chunked) -> list:
    """The stat signature of each file: serially where a stat is fast (local disks: threads only add their own
    cost, ~1.5 us a file on 2 cores), in threads where the first 256 took over :data:`SLOW_STAT` each (network
    file systems, where the threads overlap the round trips)."""
    t0 = time.perf_counter()
    head = [_signature(p) for p in absolute[:256]]
    if not head or (time.perf_counter() - t0) / len(head) <= SLOW_STAT:
        return head + [_signature(p) for p in absolute[256:]]
    return head + chunked(_signature, absolute[256:], 1024)


def _hash_chunk(pool: ThreadPoolExecutor, absolute: list[str], known: list, memo: bool, lo: int,
                hashes: list, errors: dict) -> list[tuple]:
    """Fill ``hashes[lo + i]`` (or ``errors``) for the files ``absolute``: with a ``memo``, stat first and read only
    the files whose stat differs from their ``known`` row. The memo rows to store: (path, size, mtime, inode, hash)."""
    def chunked(fn, items: list, step: int) -> list:  # one thread task per chunk: per-file tasks cost ~50 us
        done = pool.map(lambda a: [fn(x) for x in items[a:a + step]], range(0, len(items), step))
        return [r for part in done for r in part]

    todo = range(len(absolute))
    sigs: list = [None] * len(absolute)
    if memo:  # stat first; read only what changed since the stored stat
        sigs = _stats(absolute, chunked)
        for i, sig, h in known:
            if sigs[i] == sig:
                hashes[lo + i] = h
        todo = []
        for i, sig in enumerate(sigs):
            if isinstance(sig, OSError):
                errors[lo + i] = f"unreadable file: {sig.strerror or sig}"
            elif hashes[lo + i] is None:
                todo.append(i)
    fresh = []  # stored with the stat taken before reading: a file changed meanwhile is re-hashed next time
    for i, h in zip(todo, chunked(_read, [absolute[i] for i in todo], 16)):
        if isinstance(h, OSError):
            errors[lo + i] = f"unreadable file: {h.strerror or h}"
        else:
            hashes[lo + i] = h
            if sigs[i] is not None:
                fresh.append((_key(absolute[i]), *sigs[i], h))
    return fresh


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
