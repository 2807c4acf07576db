"""A per-folder index of the embedding cache's shards: which shard holds which key, so a lookup opens only the shards
that hold some of the keys it wants (issue 26: 1,000 shards opened to find the keys of one dataset among them).

The index is a hint, never the truth. ``<cache>/embeddings/<fingerprint>/<kind>/index.npz`` records, for each shard
it was built from, the shard's file name, its size, modification and change times (ns) and inode, and a 64-bit hash
of each of its keys and failure keys (:func:`key_hashes`), in the shard's row order. A lookup lists the shard folder
and uses an index entry only while the shard of that name is still there with the same size, times and inode; every
other shard (new since the index was written, replaced, or the index unreadable, from another folder or another
version) is opened and its keys read as before. Shards the index says hold none of the wanted keys are not opened;
the others are read and verified with their own checksums exactly as without an index, and their rows are found in
their own ``keys`` array, so the index can never serve a vector: at worst it makes a lookup slower or, if it is
wrong about a shard it is not compared with, makes a cached key look missing (the item is computed again).

Hashes, not keys: a wanted key whose hash is in a shard's entry is looked for in that shard's real keys, so a hash
collision only opens one shard more; equal keys always have equal hashes (no cached key can be missed through
hashing). Hashing the lookup's list of keys and matching the sorted hashes was the fastest way measured
(``benchmarks/cache_lookup_scale.py --match``: 2-4x faster than numpy fixed-width strings with ``searchsorted`` or
``pandas.Index.get_indexer`` on a million keys, and an index 3-11x smaller than one holding the strings).

How far the index is trusted: it carries a SHA-256 digest of its arrays and of the shard folder's place
(``<fingerprint>/<kind>``), so a damaged index, or one copied in from another folder, is ignored (and rebuilt), never
quarantined and never an error. An entry's hashes, in row order, are in effect a digest of its shard's keys, and
every shard the index sends a lookup to is compared with its entry: when the shard's keys do not hash to what the
index recorded (an index that puts a key in the wrong shard), the index is dropped for this lookup, every shard is
read in order as without an index, and a fresh index is written. What no digest can show without opening the shard
is an index that says an unchanged shard lacks a key it holds: we accept that the index is exactly as trustworthy as
the cache folder itself (whoever can write a forged index there can as well rewrite the shards with fresh
checksums); checking it would mean reading every shard's keys, which is what the index saves. Such an index hides
keys (computed again), it never serves a wrong vector. Damage a shard suffers without changing its size, times or
inode (bit rot) is found when the shard next serves a lookup, not by a lookup that skips it.

When it is written: after a lookup that opened at least ``max(REBUILD_MIN, indexed shards / REBUILD_SHARE)`` shards
the index did not cover, or found as many of its shards gone, or found it damaged or wrong. A
fresh index holds the old one's still-valid entries plus every shard the lookup opened. The 1/16 keeps the shards a
lookup must open beyond the index under ~6 % of the folder while a cache grows, and the cost of rewriting the index
(proportional to its keys: ~0.1 s a million here) to a geometric series, ~17x the final index written in all, not one
rewrite per new shard. Writes are atomic (temp file + rename, :func:`cliplab.io.atomic_path`): processes racing to
write it leave one whole index, at worst a less complete one. A folder that cannot be written (read-only mount, full
disk) gets no index, with one debug log line; lookups stay right, as slow as without one.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cliplab.io import arrays_digest, atomic_path

log = logging.getLogger(__name__)

NAME = "index.npz"  # not matched by the shards' ``shard-*.npz``
VERSION = "cliplab-shard-index-v1"  # a new hash or layout needs a new version: older indexes are then ignored
REBUILD_MIN = 8
REBUILD_SHARE = 16
FIELDS = ("version", "names", "stats", "starts", "hashes", "order", "checksum")
CHUNK = 1 << 16  # keys hashed at once
CELLS = 1 << 21  # code points widened to 64 bits at once (16 MB)


# ---- key hashes: the same for a key in a Python list and in a numpy string array ----

def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (in place)."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


_MULT = np.zeros(0, np.uint64)


def _multipliers(width: int) -> np.ndarray:
    """One odd 64-bit multiplier per character position (fixed: the index stores hashes)."""
    global _MULT
    if len(_MULT) < width:
        n = max(width, 2 * len(_MULT), 64)
        _MULT = _fmix(np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
    return _MULT[:width]


def _hash_codes(codes: np.ndarray) -> np.ndarray:
    """Hashes of the rows of a (keys, positions) array of code points, each key zero-padded: the sum of each code
    point times its position's multiplier (mod 2**64; a zero adds nothing, so padding never changes a hash), mixed."""
    n, width = codes.shape
    out = np.empty(n, np.uint64)
    if width == 0:
        out[:] = 0
        return _fmix(out)
    mult = _multipliers(width)
    step = max(1, CELLS // width)
    for s in range(0, n, step):
        out[s:s + step] = codes[s:s + step].astype(np.uint64) @ mult
    return _fmix(out)


def array_hashes(keys: np.ndarray) -> np.ndarray:
    """The hashes of a 1-d numpy string array (a shard's ``keys``) as uint64."""
    keys = np.ascontiguousarray(keys)
    if keys.size == 0:
        return np.zeros(0, np.uint64)
    order = keys.dtype.byteorder if keys.dtype.byteorder in "<>" else "="
    return _hash_codes(keys.view(f"{order}u4").reshape(len(keys), -1))


def _codes(part: Sequence[str]) -> np.ndarray:
    """The code points of ``part`` as a zero-padded (keys, positions) array. Keys of one length without a NUL in
    them (content keys: ``f:`` + 32 hex digits) are joined and encoded at once, 2-3x faster than a numpy string array
    made from the list; any other list is made into one."""
    n = len(part)
    try:
        text = "\0".join(part) + "\0"
    except TypeError:  # a key that is no str: the numpy array below spells it
        text = ""
    width = len(part[0]) + 1 if text else 0
    if text and len(text) == n * width:
        ascii_ = text.isascii()
        data = text.encode("latin-1") if ascii_ else text.encode("utf-32-le", "surrogatepass")
        codes = np.frombuffer(data, np.uint8 if ascii_ else "<u4").reshape(n, width)
        # aligned when the n zeros are exactly the separators at the row ends (no key holds a NUL)
        if not codes[:, -1].any() and np.count_nonzero(codes == 0) == n:
            return codes
    return np.asarray(part, dtype=np.str_).view(np.uint32).reshape(n, -1)  # native order, as made


def key_hashes(keys: Sequence[str]) -> np.ndarray:
    """The hashes of a list of keys as uint64: equal to :func:`array_hashes` of the same keys in a numpy array."""
    out = np.empty(len(keys), np.uint64)
    for s in range(0, len(keys), CHUNK):
        part = keys[s:s + CHUNK]
        out[s:s + len(part)] = _hash_codes(_codes(part))
    return out


class Wanted:
    """The keys a lookup wants: a set (for exact matching), their sorted hashes, and a table of which hash values
    (their low bits) occur, which turns most keys away at once (for the index, and for finding a shard's candidate
    rows without a Python loop over its keys)."""

    def __init__(self, keys: Sequence[str] | set | dict):
        # a set or dict of the keys (lookup_rows' key -> position) serves as the set itself: a million keys are
        # not held in a second hash table
        self._given = keys if isinstance(keys, (set, frozenset, dict)) else None
        keys = keys if isinstance(keys, (list, tuple)) else list(keys)
        self.keys = keys
        self.hashes = np.sort(key_hashes(keys)) if keys else np.zeros(0, np.uint64)
        self._table()

    def _table(self) -> None:
        """The table of the low bits of the sorted ``hashes`` that occur."""
        bits = min(max(int(len(self.hashes) * 16).bit_length(), 10), 26)  # 16 slots a key: ~6 % let through
        self.low = np.uint64((1 << bits) - 1)
        self.seen = np.zeros(1 << bits, bool)
        self.seen[(self.hashes & self.low).astype(np.intp)] = True

    @functools.cached_property
    def set(self):
        """The wanted keys as a set: made when a shard first holds candidates (a cold run's lookup never does)."""
        return self._given if self._given is not None else set(self.keys)

    def maybe(self, hashes: np.ndarray) -> np.ndarray:
        """A mask: which of ``hashes`` may be hashes of wanted keys (all that are, and ~6 % of the others)."""
        if not len(self.hashes):
            return np.zeros(len(hashes), bool)
        return self.seen[(hashes & self.low).astype(np.intp)]

    def members(self, hashes: np.ndarray) -> np.ndarray:
        """A mask: which of ``hashes`` are hashes of wanted keys."""
        mask = self.maybe(hashes)
        some = np.flatnonzero(mask)
        if len(some):
            h = hashes[some]
            pos = np.searchsorted(self.hashes, h)
            np.minimum(pos, len(self.hashes) - 1, out=pos)
            mask[some] = self.hashes[pos] == h
        return mask

    def rows(self, keys: np.ndarray, hashes: np.ndarray) -> list[int]:
        """The rows of a shard's ``keys`` (with their ``hashes``) that are wanted, in order: those the hashes let
        through, checked against the wanted keys themselves."""
        cand = np.flatnonzero(self.maybe(hashes))
        if not len(cand):
            return []
        if len(cand) == len(keys):
            klist = keys.tolist()
            if all(map(self.set.__contains__, klist)):
                return list(range(len(klist)))
            return [i for i, k in enumerate(klist) if k in self.set]
        return [i for i, k in zip(cand.tolist(), keys[cand].tolist()) if k in self.set]


class Positions(Wanted):
    """The keys a lookup wants by position (:meth:`EmbeddingCache.lookup_rows`): a shard's keys are located among
    them through their sorted hashes (the order that sorts them kept) and checked against the keys themselves; no
    set or dict of the keys is made (a million keys: 24 MB of arrays instead of ~75 MB of dict and int objects).
    A key that occurs more than once is located at its first position; :attr:`repeats` pairs every other position
    with that one."""

    def __init__(self, keys: Sequence[str]):
        self._given = None
        self._recent: list[tuple[np.ndarray, np.ndarray]] = []
        self.keys = keys if isinstance(keys, (list, tuple)) else list(keys)
        h = key_hashes(self.keys) if self.keys else np.zeros(0, np.uint64)
        self.order = np.argsort(h, kind="stable")  # equal hashes: positions ascending
        self.hashes = h[self.order]
        del h
        self._table()
        self.repeats: list[tuple[int, int]] = []  # (position, first position of the same key)
        for s in (np.flatnonzero(self.hashes[1:] == self.hashes[:-1]) + 1).tolist():  # equal hashes: rare
            p = int(self.order[s])
            r = s
            while r > 0 and self.hashes[r - 1] == self.hashes[s]:
                r -= 1
            for t in range(r, s):  # the first earlier position with the same key (a collision has another)
                if self.keys[int(self.order[t])] == self.keys[p]:
                    self.repeats.append((p, int(self.order[t])))
                    break

    @functools.cached_property
    def set(self):
        return _Located(self)

    def locate(self, keys: np.ndarray, hashes: np.ndarray | None = None) -> np.ndarray:
        """The first position of each of ``keys`` (a numpy string array, with its ``hashes``) among the wanted keys,
        -1 where it is not one of them."""
        for seen, result in self._recent:  # the shard's keys, located once when its rows were found
            if seen is keys:
                return result
        hashes = array_hashes(keys) if hashes is None else hashes
        out = np.full(len(keys), -1, np.int64)
        self._recent = [(keys, out), *self._recent[:1]]  # the keys and the failure keys of the shard last read
        cand = np.flatnonzero(self.maybe(hashes))
        if not len(cand):
            return out
        hc = hashes[cand]
        up = np.argsort(hc)  # searched in ascending order: each search starts near the last (1.5x faster)
        lo = np.empty_like(up)
        lo[up] = np.searchsorted(self.hashes, hc[up], "left")
        hit = lo < len(self.hashes)
        hit[hit] = self.hashes[lo[hit]] == hc[hit]
        cand, lo = cand[hit], lo[hit]
        first = self.order[lo].tolist()
        wanted = self.keys
        for c, a, p, k in zip(cand.tolist(), lo.tolist(), first, keys[cand].tolist()):
            if wanted[p] == k:
                out[c] = p
                continue
            b = a + 1  # a hash collision: another wanted key with this hash may be the one
            while b < len(self.hashes) and self.hashes[b] == self.hashes[a]:
                q = int(self.order[b])
                if wanted[q] == k:
                    out[c] = q
                    break
                b += 1
        return out

    def rows(self, keys: np.ndarray, hashes: np.ndarray) -> list[int]:
        return np.flatnonzero(self.locate(keys, hashes) >= 0).tolist()


class _Located:
    """``key in positions.set`` for :class:`Positions` (one key at a time: for the odd caller)."""

    def __init__(self, positions: Positions):
        self.positions = positions

    def __contains__(self, key) -> bool:
        return bool(isinstance(key, str) and self.positions.locate(np.asarray([key]))[0] >= 0)


# ---- the index file ----

def stat_of(st: os.stat_result) -> tuple[int, int, int, int]:
    """What ties an index entry to a shard file: size, mtime and ctime (ns) and inode (to 63 bits)."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino & ((1 << 63) - 1)


def digest(scope: str, arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the index's arrays (name, dtype, shape, bytes) and of its folder's place."""
    return arrays_digest(VERSION, scope, arrays)


class ShardIndex:
    """An index as read (and checked) from its file; ``names[i]``'s entries are ``hashes[starts[i]:starts[i+1]]``
    (its keys, then its failure keys, in row order), ``order`` sorts ``hashes``."""

    def __init__(self, names: list[str], stats: np.ndarray, starts: np.ndarray, hashes: np.ndarray,
                 order: np.ndarray):
        self.names, self.stats, self.starts, self.hashes, self.order = names, stats, starts, hashes, order
        self.pos = {n: i for i, n in enumerate(names)}

    @classmethod
    def load(cls, folder: Path, scope: str) -> ShardIndex | None:
        """The index of ``folder``, or None when there is none or it cannot be used (unreadable, damaged, another
        folder's or version's): the lookup then opens every shard, as without an index."""
        path = Path(folder) / NAME
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {n: z[n] for n in FIELDS}
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any damage: the index is a hint, it is rebuilt
            log.debug("shard index %s ignored: unreadable (%s)", path, exc)
            return None
        why = _invalid(arrays, scope)
        if why:
            log.debug("shard index %s ignored: %s", path, why)
            return None
        return cls(arrays["names"].tolist(), arrays["stats"], arrays["starts"], arrays["hashes"], arrays["order"])

    def valid(self, stats: dict[str, tuple]) -> dict[str, int]:
        """{shard name: its position here} for the shards present (``stats``: name -> :func:`stat_of`) as indexed."""
        return {n: i for n, i in self.pos.items() if n in stats and tuple(self.stats[i].tolist()) == stats[n]}

    def entries(self, i: int) -> np.ndarray:
        return self.hashes[self.starts[i]:self.starts[i + 1]]

    def holding(self, wanted: Wanted) -> set[int]:
        """Positions of the shards whose entries include a wanted key's hash."""
        if not len(wanted.hashes) or not len(self.hashes):
            return set()
        sorted_ = self.hashes[self.order]  # ascending: the search walks both arrays in order
        hit = self.order[wanted.members(sorted_)]
        return set(np.unique(np.searchsorted(self.starts, hit, side="right") - 1).tolist())


def _invalid(a: dict[str, np.ndarray], scope: str) -> str | None:
    """Why arrays read from an index file cannot be used, or None."""
    version, names, stats, starts, hashes, order, checksum = (a[n] for n in FIELDS)
    if version.shape != () or str(version) != VERSION:
        return f"version {version!r}, not {VERSION}"
    if checksum.shape != () or checksum.dtype.kind != "U" or str(checksum) != digest(scope, a):
        return "checksum mismatch (damaged, or another folder's index)"
    n, m = len(names), len(hashes)
    if (names.ndim != 1 or names.dtype.kind != "U" or stats.shape != (n, 4) or stats.dtype != np.int64
            or starts.shape != (n + 1,) or starts.dtype != np.int64 or hashes.ndim != 1 or hashes.dtype != np.uint64
            or order.shape != (m,) or order.dtype.kind not in "iu"):
        return "arrays do not fit together"
    if starts[0] != 0 or starts[-1] != m or np.any(np.diff(starts) < 0) or len(set(names.tolist())) != n:
        return "arrays do not fit together"
    if m and (order.min() < 0 or order.max() >= m or np.any(np.bincount(order, minlength=m) != 1)
              or np.any(np.diff(hashes[order]) < 0)):
        return "order does not sort the hashes"
    return None


def rebuild_due(changed: int, indexed: int) -> bool:
    """Whether a lookup that met ``changed`` shards the index did not cover (or no longer present), with
    ``indexed`` shards it did, should write a fresh index."""
    return changed >= max(REBUILD_MIN, indexed // REBUILD_SHARE)


def _save(fh, arrays: dict[str, np.ndarray]) -> None:
    """Write the index's arrays (its own function, so tests can make writing fail here)."""
    np.savez(fh, **arrays)


def write(folder: Path, scope: str, shards: list[tuple[str, tuple, np.ndarray]]) -> Path | None:
    """Write the index of ``folder`` for ``shards`` ((name, :func:`stat_of`, hashes of its keys + failure keys));
    None, with a debug log line, when the folder cannot be written."""
    folder = Path(folder)
    path = folder / NAME
    if not os.access(folder, os.W_OK):
        log.debug("shard index %s not written: the folder is not writable", path)
        return None
    shards = sorted(shards, key=lambda s: s[0])
    hashes = np.concatenate([h for _, _, h in shards]).astype(np.uint64) if shards else np.zeros(0, np.uint64)
    arrays = {
        "version": np.asarray(VERSION),
        "names": np.asarray([n for n, _, _ in shards], dtype=np.str_),
        "stats": np.asarray([s for _, s, _ in shards], dtype=np.int64).reshape(len(shards), 4),
        "starts": np.concatenate([[0], np.cumsum([len(h) for _, _, h in shards], dtype=np.int64)]).astype(np.int64),
        "hashes": hashes,
        "order": np.argsort(hashes, kind="stable").astype(np.int32 if len(hashes) < 2**31 else np.int64),
    }
    arrays["checksum"] = np.asarray(digest(scope, arrays))
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                _save(fh, arrays)
    except OSError as exc:
        log.debug("shard index %s not written (%s)", path, exc)
        return None
    return path
