"""On-disk embedding cache.

Layout: ``<cache>/embeddings/<model fingerprint>/<kind>/shard-*.npz``; each shard holds ``keys`` (content keys),
``emb`` (float32 rows), ``fail_keys``/``fail_reasons`` (items that cannot be embedded, so they are not retried),
``seconds`` (compute time, for throughput figures) and ``checksum``: a SHA-256 digest of every other array (name,
dtype, shape and bytes) and of the shard's place (``<fingerprint>/<kind>``), written in the same file. Shards are
written atomically (temp file + fsync + rename), so a run killed at any moment leaves only whole shards behind and the
next run resumes after the last one.

A shard is verified when it serves a lookup: one that cannot be read (truncated, empty, not an archive, a folder),
whose arrays do not fit together or whose checksum does not match is moved into ``<cache>/quarantine/`` (never
deleted, :mod:`cliplab.quarantine`), reported in one warning, and its items are computed again as if they had never
been cached. Shards written before checksums existed (no ``checksum`` array) are read when every array reads whole
(the zip format's CRC-32 of each array is checked on reading) and they fit together; they cannot be checked against
what was written, so they are "unverified" (``CacheHits.unverified``). A shard that serves none of the keys looked up
is not read beyond its keys.

A folder's ``index.npz`` (:mod:`cliplab.embed.shard_index`) records which shard holds which key, so a lookup does
not open the shards that hold none of its keys; it is only a hint, tied to each shard's name, size, times and inode,
and checked against every shard read: the shards and their checksums stay the only truth.
"""
from __future__ import annotations

import errno
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from cliplab.embed import shard_index
from cliplab.errors import ParameterError
from cliplab.io import arrays_digest, atomic_path
from cliplab.paths import CACHE_REMEDY, human_bytes, require_space, require_writable
from cliplab.quarantine import Moved, move_aside, record

ARRAYS = ("keys", "emb", "fail_keys", "fail_reasons", "seconds")  # what every shard holds (and ``checksum``)
FULL_DISK = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
MARGIN = 1 << 20  # bytes kept free beyond the estimate (zip headers, the file-hash memo, rounding)


@dataclass
class CacheHits:
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # compute time recorded for the shards that served these keys
    counted: int = 0  # rows those seconds covered
    unverified: int = 0  # shards read that carry no checksum (written by an older cliplab)
    moved: list[Moved] = field(default_factory=list)  # damaged shards moved aside by this lookup


@dataclass
class RowHits(CacheHits):
    """:meth:`EmbeddingCache.lookup_rows`: ``rows[j]`` is the cached row of position j where ``found[j]``
    (``rows`` is None when nothing was found); ``failures`` by position. ``vectors`` stays empty."""
    rows: np.ndarray | None = None
    found: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    failures: dict[int, str] = field(default_factory=dict)  # type: ignore[assignment]


@dataclass
class _Plan:
    """What a lookup reads: the wanted keys, the shard folder's listing (name -> path, in name order), the shards to
    open, and the index it used (None: none, or unusable) with its entries still valid (name -> position)."""
    wanted: shard_index.Wanted
    paths: dict[str, Path]
    open: list[str]
    index: shard_index.ShardIndex | None
    valid: dict[str, int]
    state: str  # "none" (no index file), "bad" (unusable), "ok", "wrong" (a shard read contradicted it)


class Damaged(Exception):
    """A shard that cannot be used: the message says why."""


def checksum(scope: str, arrays: dict[str, np.ndarray]) -> str:
    """The digest of a shard's arrays (every one but ``checksum``: name, dtype, shape, bytes) and of its place."""
    return arrays_digest("cliplab-shard-v2", scope, arrays)


def _savez(fh, arrays: dict[str, np.ndarray]) -> None:
    """Write the shard's arrays (its own function, so tests can make the disk fill up here)."""
    np.savez(fh, **arrays)


def estimate_bytes(rows: int, dim: int, key_chars: int = 34) -> int:
    """Disk space ``rows`` new embeddings of ``dim`` floats take in the cache, with a margin: the float32 rows, the
    keys (numpy stores 4 bytes a character), the file-hash memo's row and the shard index's entry (12 bytes, twice
    while it is rewritten), plus 10 % and ``MARGIN``."""
    per_row = 4 * dim + 4 * key_chars + 256
    return int(rows * per_row * 1.1) + MARGIN


class EmbeddingCache:
    def __init__(self, cache_dir: Path, fingerprint: str, kind: str):
        self.root = Path(cache_dir)
        self.kind, self.scope = kind, f"{fingerprint}/{kind}"
        self.dir = self.root / "embeddings" / fingerprint / kind
        self.written = 0  # shards committed by this cache object (this run)
        self.rows_written = 0

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz")) if self.dir.is_dir() else []

    def lookup(self, keys: list[str]) -> CacheHits:
        """What the cache holds for ``keys``. Damaged shards met on the way are moved aside and reported (their
        items are simply not in the hits)."""
        hits = CacheHits()
        for rows, frows, arrays in self._serving(keys, hits):
            skeys, emb = arrays["keys"], arrays["emb"]
            for i in rows:
                hits.vectors[skeys[i]] = emb[i]
            for i in frows:
                hits.failures[arrays["fail_keys"][i]] = arrays["fail_reasons"][i]
        return hits

    def lookup_rows(self, keys: Sequence[str | None]) -> RowHits:
        """What the cache holds for ``keys`` (None: no key), by position: one matrix with the row of every position
        found (every position of a key that occurs more than once), a mask of those positions and the failures
        by position. Rows are copied from each shard that serves them straight into the matrix: no object per row,
        and the keys are located by their hashes (:class:`shard_index.Positions`), not through a dict. Damaged
        shards are moved aside and reported, as :meth:`lookup` does."""
        hits = RowHits(found=np.zeros(len(keys), dtype=bool))
        valid = np.flatnonzero(np.fromiter((k is not None for k in keys), dtype=bool, count=len(keys))) \
            if None in keys else None  # positions of the keys among all (None: every position has one)
        wanted = shard_index.Positions(keys if valid is None else [keys[j] for j in valid.tolist()])

        def at(found: np.ndarray) -> np.ndarray:  # positions among the wanted keys -> among ``keys``
            return found if valid is None else valid[found]

        for rows, frows, arrays in self._serving(wanted, hits):
            if rows:
                emb = arrays["emb"]
                where = at(wanted.locate(arrays["keys"])[rows])
                if hits.rows is None:
                    hits.rows = np.empty((len(keys), emb.shape[1]), dtype=np.float32)
                hits.rows[where] = emb[rows]
                hits.found[where] = True
            if frows:
                where = at(wanted.locate(arrays["fail_keys"])[frows]).tolist()
                hits.failures.update(zip(where, arrays["fail_reasons"][frows].tolist()))
        for j, first in wanted.repeats:
            j, first = (j, first) if valid is None else (int(valid[j]), int(valid[first]))
            if hits.found[first]:
                hits.rows[j] = hits.rows[first]
                hits.found[j] = True
            elif first in hits.failures:
                hits.failures[j] = hits.failures[first]
        return hits

    def _serving(self, keys, hits: CacheHits):
        """(rows, failure rows, arrays) of each shard that holds any of ``keys``, verified, in name order (a key in
        several shards: the last one's row is the one kept); damaged shards are moved aside into ``hits.moved``
        (reported at the end), the compute time and unverified shards counted into ``hits``; a shard whose rows have
        another dimension than the first one served is damaged. The folder's shard
        index (:mod:`cliplab.embed.shard_index`) spares opening the shards that hold none of ``keys``; when a shard
        read contradicts it, every shard is served again in order as without an index, the counts starting over
        (what was served before is served again or stays as it was). A fresh index is written when due."""
        plan = self._plan(keys)
        moved: dict[str, Moved] = {}
        scanned: dict[str, tuple] = {}  # name -> (stat, key hashes) of every shard whose keys were read
        names, check, dim = plan.open, True, None
        while True:
            wrong = False
            for name in names:
                if name in moved:
                    continue
                shard = plan.paths[name]
                try:
                    st, hashes, found = self._read(shard, plan.wanted)
                    if found is not None and found[0] and dim is not None and found[2]["emb"].shape[1] != dim:
                        raise Damaged(f"embeddings of dimension {found[2]['emb'].shape[1]} where the other shards "
                                      f"have {dim}")
                except FileNotFoundError:
                    continue  # moved aside by another process since it was listed
                except Damaged as exc:
                    m = move_aside(self.root, [shard], f"{self.kind} embedding shard", str(exc))
                    if m is not None:
                        moved[name] = m
                    continue
                scanned[name] = (st, hashes)
                i = plan.valid.get(name)
                if (check and i is not None and tuple(plan.index.stats[i].tolist()) == st
                        and not np.array_equal(plan.index.entries(i), hashes)):
                    wrong = True  # the index is not what this unchanged shard holds: trust none of it
                    break
                if found is None:
                    continue
                rows, frows, arrays, verified = found
                if rows:
                    dim = arrays["emb"].shape[1]
                    hits.seconds += float(arrays["seconds"]) * len(rows) / max(len(arrays["keys"]), 1)
                    hits.counted += len(rows)
                hits.unverified += not verified
                yield rows, frows, arrays
            if not wrong:
                break
            hits.seconds, hits.counted, hits.unverified = 0.0, 0, 0
            names, check = list(plan.paths), False
            plan.index, plan.valid, plan.state = None, {}, "wrong"
        hits.moved = [moved[n] for n in sorted(moved)]
        record(hits.moved)
        self._refresh_index(plan, scanned)

    def _plan(self, keys) -> _Plan:
        """Which shards a lookup of ``keys`` opens: every shard the index does not cover as it is now, and the
        covered ones it says hold a wanted key."""
        wanted = keys if isinstance(keys, shard_index.Wanted) else shard_index.Wanted(keys)
        paths = {p.name: p for p in self.shards()}
        index, state = None, "none"
        if paths and (self.dir / shard_index.NAME).exists():
            index = shard_index.ShardIndex.load(self.dir, self.scope)
            state = "bad" if index is None else "ok"
        if index is None:
            return _Plan(wanted, paths, list(paths), None, {}, state)
        stats = {}
        for name, path in paths.items():
            try:
                stats[name] = shard_index.stat_of(path.stat())
            except OSError:
                pass  # gone since it was listed (or unreadable: opened below, and moved aside if damaged)
        valid = index.valid(stats)
        holding = index.holding(wanted)
        to_open = [n for n in paths if n not in valid or valid[n] in holding]
        return _Plan(wanted, paths, to_open, index, valid, state)

    def _refresh_index(self, plan: _Plan, scanned: dict) -> None:
        """Write a fresh index when this lookup met enough shards the index did not cover (or gone from it), or
        found the index damaged or wrong: the old entries still valid plus every shard read."""
        index, valid = plan.index, plan.valid
        new = [n for n in scanned if n not in valid]
        gone = sum(n not in plan.paths for n in index.names) if index is not None else 0
        due = plan.state in ("bad", "wrong") or shard_index.rebuild_due(len(new) + gone, len(valid))
        if not due or not (scanned or valid):
            return
        entries = []
        for name in plan.paths:
            if name in scanned:
                entries.append((name, *scanned[name]))
            elif name in valid:
                i = valid[name]
                entries.append((name, tuple(index.stats[i].tolist()), index.entries(i)))
        shard_index.write(self.dir, self.scope, entries)

    def _read(self, shard: Path, wanted: shard_index.Wanted):
        """(:func:`shard_index.stat_of` the file read, hashes of its keys and failure keys, and (rows, failure
        rows, arrays, whether a checksum verified them) when it holds any ``wanted`` key, else None); raises
        :class:`Damaged` for a shard that cannot be used."""
        try:
            fh = open(shard, "rb")
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - a folder in its place, no permission
            raise Damaged(f"unreadable ({_why(exc)})") from None
        with fh:
            st = shard_index.stat_of(os.fstat(fh.fileno()))
            try:
                z = np.load(fh, allow_pickle=False)
            except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes the reader raise
                raise Damaged(f"unreadable ({_why(exc)})") from None
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise Damaged("not an npz archive")
            with z:
                missing = [n for n in ARRAYS if n not in z.files]
                if missing:
                    raise Damaged(f"no {', '.join(missing)} array")
                try:
                    skeys, fkeys = z["keys"], z["fail_keys"]
                    _text_vector(skeys, "keys")
                    _text_vector(fkeys, "fail_keys")
                    khash, fhash = shard_index.array_hashes(skeys), shard_index.array_hashes(fkeys)
                    hashes = np.concatenate([khash, fhash])
                    rows, frows = wanted.rows(skeys, khash), wanted.rows(fkeys, fhash)
                    if not rows and not frows:
                        return st, hashes, None
                    arrays = {name: z[name] for name in z.files if name not in ("keys", "fail_keys")}
                    arrays.update(keys=skeys, fail_keys=fkeys)
                except Damaged:
                    raise
                except Exception as exc:  # noqa: BLE001 - a damaged member (bad CRC-32, short data, odd header)
                    raise Damaged(f"unreadable ({_why(exc)})") from None
        return st, hashes, (rows, frows, arrays, self._verify(arrays))

    def _verify(self, arrays: dict[str, np.ndarray]) -> bool:
        """Check a shard's arrays: True when its checksum matches, False for a shard without one whose arrays fit
        together (older cliplab); raises :class:`Damaged` otherwise."""
        stored = arrays.get("checksum")
        if stored is not None:
            if stored.shape != () or stored.dtype.kind != "U":
                raise Damaged("checksum is not a digest")
            if str(stored) != checksum(self.scope, arrays):
                raise Damaged("checksum mismatch: the shard is not what was written")
        keys, emb = arrays["keys"], arrays["emb"]
        if emb.ndim != 2 or emb.dtype != np.float32 or emb.shape[0] != len(keys):
            raise Damaged(f"embeddings {emb.dtype}{list(emb.shape)} do not fit {len(keys)} keys")
        _text_vector(arrays["fail_reasons"], "fail_reasons")
        if len(arrays["fail_reasons"]) != len(arrays["fail_keys"]):
            raise Damaged("fail_keys and fail_reasons differ in length")
        seconds = arrays["seconds"]
        if seconds.shape != () or seconds.dtype.kind != "f":
            raise Damaged("seconds is not a number")
        return stored is not None

    def prepare(self, rows: int, dim: int, key_chars: int = 34) -> None:
        """Before computing ``rows`` embeddings to cache: the shard folder must be writable and its disk must have
        room for them (:func:`estimate_bytes`), else a :class:`ParameterError` naming ``cache_dir``."""
        require_writable(self.root, self.dir)
        require_space(self.root, self.dir, estimate_bytes(rows, dim, key_chars),
                      f"{rows:,} {self.kind} embeddings of dimension {dim}")

    def write(self, keys: list[str], emb: np.ndarray, failures: dict[str, str], seconds: float) -> Path:
        """Commit one shard (atomically, with its checksum); a full disk or a cache that cannot be written is a
        :class:`ParameterError` naming ``cache_dir`` that says what was kept."""
        arrays = {
            "keys": np.asarray(keys, dtype=np.str_),
            "emb": np.asarray(emb, dtype=np.float32),
            "fail_keys": np.asarray(list(failures), dtype=np.str_),
            "fail_reasons": np.asarray(list(failures.values()), dtype=np.str_),
            "seconds": np.float64(seconds),
        }
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        arrays["checksum"] = np.asarray(checksum(self.scope, arrays))
        path = self.dir / f"shard-{uuid.uuid4().hex}.npz"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    _savez(fh, arrays)
        except OSError as exc:
            raise self._write_error(exc) from None
        self.written += 1
        self.rows_written += len(keys)
        return path

    def _write_error(self, exc: OSError) -> ParameterError:
        kept = (f"the {self.written} shard{'s' if self.written != 1 else ''} ({self.rows_written:,} embeddings) this "
                "run wrote before are kept, and a rerun resumes after them" if self.written else
                "nothing this run computed was cached yet")
        if exc.errno in FULL_DISK:
            from cliplab.paths import free_bytes

            free = free_bytes(self.dir)
            msg = (f"the disk holding the cache is full ({exc.strerror or exc}; {human_bytes(free)} free): {kept}; "
                   "free some space and run again, or " + CACHE_REMEDY)
        else:
            msg = f"cannot write in the cache ({exc.strerror or exc}: {exc.filename or self.dir}): {kept}; " + \
                CACHE_REMEDY
        return ParameterError("cache_dir", str(self.root), msg, quote=False)


def _text_vector(a: np.ndarray, name: str) -> None:
    if a.ndim != 1 or a.dtype.kind != "U":
        raise Damaged(f"{name} is not a list of strings")


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
