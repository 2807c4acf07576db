"""The shard index (issue 26) is a hint: lookups with it equal lookups without it on random caches; a stale, damaged,
forged or foreign index never changes what a lookup returns (at worst it is slower, or a forged one hides a key: never
a wrong vector); damaged shards are still moved aside; a folder that cannot be written gets no index and no warning;
shards that hold none of the wanted keys are not opened."""
from __future__ import annotations

import contextlib
import errno
import logging
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from recording import Recording
from cliplab.embed import cache as cache_mod
from cliplab.embed import shard_index
from cliplab.embed.cache import EmbeddingCache
from cliplab.progress import use
from cliplab.quarantine import FOLDER

DIM = 3


# ---- helpers ----

def write_shards(cache: EmbeddingCache, shards: list[tuple[list[str], dict[str, str]]], seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for keys, failures in shards:
        paths.append(cache.write(keys, rng.standard_normal((len(keys), DIM)).astype(np.float32), failures,
                                 float(rng.integers(1, 9))))
    return paths


def simple_cache(tmp_path: Path, n: int = 12, per: int = 5, name: str = "fp") -> tuple[EmbeddingCache, list[Path]]:
    """``n`` shards of ``per`` keys (``k<shard>-<row>``) and one failure each (``bad<shard>``)."""
    cache = EmbeddingCache(tmp_path, name, "image")
    return cache, write_shards(cache, [([f"k{s}-{i}" for i in range(per)], {f"bad{s}": f"why {s}"})
                                       for s in range(n)])


def reference(cache: EmbeddingCache, keys: list[str]) -> cache_mod.CacheHits:
    """What a lookup must return, the plain way: every shard in name order, every key compared (undamaged shards)."""
    wanted, hits = set(keys), cache_mod.CacheHits()
    for shard in cache.shards():
        with np.load(shard) as z:
            a = {n: z[n] for n in z.files}
        rows = [i for i, k in enumerate(a["keys"].tolist()) if k in wanted]
        frows = [i for i, k in enumerate(a["fail_keys"].tolist()) if k in wanted]
        if not rows and not frows:
            continue
        for i in rows:
            hits.vectors[a["keys"][i]] = a["emb"][i]
        if rows:
            hits.seconds += float(a["seconds"]) * len(rows) / max(len(a["keys"]), 1)
            hits.counted += len(rows)
        for i in frows:
            hits.failures[a["fail_keys"][i]] = a["fail_reasons"][i]
        hits.unverified += "checksum" not in a
    return hits


def assert_same(got: cache_mod.CacheHits, want: cache_mod.CacheHits) -> None:
    assert got.vectors.keys() == want.vectors.keys()
    for k in want.vectors:
        assert np.array_equal(got.vectors[k], want.vectors[k]), k
    assert got.failures == want.failures
    assert (got.seconds, got.counted, got.unverified) == (want.seconds, want.counted, want.unverified)


@contextlib.contextmanager
def opened():
    """The names of the shards lookups inside the block open, in order."""
    names = []
    real = EmbeddingCache._read

    def spy(self, shard, wanted):
        names.append(shard.name)
        return real(self, shard, wanted)

    EmbeddingCache._read = spy
    try:
        yield names
    finally:
        EmbeddingCache._read = real


def index_of(cache: EmbeddingCache) -> shard_index.ShardIndex | None:
    return shard_index.ShardIndex.load(cache.dir, cache.scope)


def indexed_names(cache: EmbeddingCache) -> list[str]:
    index = index_of(cache)
    return [] if index is None else index.names


def forge(cache: EmbeddingCache, change) -> None:
    """Rewrite the index with valid checksum after ``change(entries)`` edits its (name, stat, hashes) entries."""
    index = index_of(cache)
    entries = [(n, tuple(index.stats[i].tolist()), index.entries(i).copy()) for i, n in enumerate(index.names)]
    assert shard_index.write(cache.dir, cache.scope, change(entries)) is not None


def keys_of(shard: Path) -> set[str]:
    """A shard's keys and failure keys."""
    with np.load(shard) as z:
        return set(z["keys"].tolist()) | set(z["fail_keys"].tolist())


# ---- key hashes ----

keys_strategy = st.lists(st.one_of(st.text(max_size=12), st.from_regex(r"f:[0-9a-f]{8}", fullmatch=True)),
                         max_size=40)


@settings(max_examples=200, deadline=None)
@given(keys=keys_strategy, chunk=st.integers(1, 9))
@example(keys=["ab", "c", "\0de"], chunk=9)  # the right length, zeros at the row ends, but not the separators
@example(keys=["f:01", "f:\x00\x00", "f:ü\udcff"], chunk=9)
def test_a_key_hashes_the_same_in_a_list_and_in_a_numpy_array(keys, chunk):
    """The index is built from the shards' numpy arrays and searched with the lookup's Python list: a key must hash
    the same both ways (whatever its characters, NULs or length, and across hashing chunks), or it would be missed."""
    real = shard_index.CHUNK
    shard_index.CHUNK = chunk
    try:
        got = shard_index.key_hashes(keys)
    finally:
        shard_index.CHUNK = real
    assert np.array_equal(got, shard_index.array_hashes(np.asarray(keys, dtype=np.str_)))
    assert np.array_equal(got, shard_index.key_hashes(keys))  # one chunk or many


def test_content_keys_do_not_collide():
    keys = [f"f:{i:032x}" for i in range(200_000)] + [f"d:{'ab' * 8}:{i}" for i in range(100_000)]
    assert len(np.unique(shard_index.key_hashes(keys))) == len(keys)


# ---- lookups with the index equal lookups without it ----

pool = [f"f:{i:04x}" for i in range(30)] + ["", "ü€", "a\0b", "x" * 50]


@st.composite
def caches(draw):
    """Shards drawn from a small pool of keys (so keys repeat across shards and within one), with failures, some in
    the old format without a checksum; the keys to look up (some not cached); what happens after the index."""
    shards = []
    for _ in range(draw(st.integers(0, 12))):
        keys = draw(st.lists(st.sampled_from(pool), max_size=8))
        fails = draw(st.dictionaries(st.sampled_from(pool), st.sampled_from(["unreadable", "too big"]), max_size=2))
        shards.append((keys, fails, draw(st.booleans())))
    wanted = draw(st.lists(st.sampled_from(pool + ["f:none", "nothing"]), max_size=30))
    after = draw(st.sampled_from(["nothing", "add", "remove", "replace"]))
    return shards, wanted, after, draw(st.integers(1, 3))


def old_format(path: Path) -> None:
    with np.load(path) as z:
        arrays = {n: z[n] for n in z.files if n != "checksum"}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(case=caches())
def test_lookups_with_the_index_equal_lookups_without_it(case, tmp_path_factory, monkeypatch):
    shards, wanted, after, rebuild_min = case
    monkeypatch.setattr(shard_index, "REBUILD_MIN", rebuild_min)
    cache = EmbeddingCache(tmp_path_factory.mktemp("c"), "fp", "text")
    paths = write_shards(cache, [(k, f) for k, f, _ in shards])
    for path, (_, _, old) in zip(paths, shards):
        if old:
            old_format(path)
    want = reference(cache, wanted)

    assert_same(cache.lookup(wanted), want)  # no index yet: it is written when the folder has enough shards
    assert (cache.dir / shard_index.NAME).exists() == (len(paths) >= rebuild_min)
    with opened() as names:
        assert_same(cache.lookup(wanted), want)  # with the index
    if len(paths) >= rebuild_min:  # only the shards holding a wanted key are opened
        assert sorted(names) == sorted(p.name for p in paths if keys_of(p) & set(wanted))

    # the folder changes after the index was written: the index must not change any result
    if after == "add":
        write_shards(cache, [(pool[:5] + ["new"], {"f:none": "unreadable"})], seed=9)
    elif after == "remove" and paths:
        paths[len(paths) // 2].unlink()
    elif after == "replace" and paths:
        target = paths[-1]
        other = write_shards(cache, [(pool[3:9], {})], seed=7)[0]
        os.replace(other, target)
    want = reference(cache, wanted + ["new"])
    assert_same(cache.lookup(wanted + ["new"]), want)
    assert_same(cache.lookup(wanted + ["new"]), want)


def test_the_index_spares_opening_the_shards_without_wanted_keys(tmp_path):
    cache, paths = simple_cache(tmp_path, n=40)
    assert not (cache.dir / shard_index.NAME).exists()
    cache.lookup([])  # 40 shards not indexed: an index is written
    assert sorted(indexed_names(cache)) == sorted(p.name for p in paths)
    with opened() as names:
        hits = cache.lookup(["k7-1", "k7-3", "bad20", "nothing"])
    assert sorted(names) == sorted([paths[7].name, paths[20].name])
    assert_same(hits, reference(cache, ["k7-1", "k7-3", "bad20", "nothing"]))
    with opened() as names:
        assert cache.lookup([f"f:{i:032x}" for i in range(1000)]).vectors == {}
    assert names == []  # a cold run opens no shard


def test_a_small_folder_gets_no_index(tmp_path):
    cache, paths = simple_cache(tmp_path, n=shard_index.REBUILD_MIN - 1)
    assert_same(cache.lookup(["k1-1"]), reference(cache, ["k1-1"]))
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(p.name for p in paths)


def test_hash_collisions_only_open_more_shards(tmp_path, monkeypatch):
    """Every key hashing alike: the index sends every lookup to every shard, and rows are still matched exactly."""
    monkeypatch.setattr(shard_index, "_hash_codes", lambda codes: np.zeros(len(codes), np.uint64))
    cache, paths = simple_cache(tmp_path)
    cache.lookup([])
    wanted = ["k3-1", "bad5", "k3-9"]
    with opened() as names:
        assert_same(cache.lookup(wanted), reference(cache, wanted))
    assert len(names) == len(paths)


# ---- stale indexes ----

def test_a_shard_added_after_the_index_is_found(tmp_path):
    cache, paths = simple_cache(tmp_path)
    cache.lookup([])
    new = write_shards(cache, [(["late"], {"late-bad": "why"})], seed=3)[0]
    hits = cache.lookup(["late", "late-bad", "k1-1"])
    assert set(hits.vectors) == {"late", "k1-1"} and hits.failures == {"late-bad": "why"}
    assert new.name not in indexed_names(cache)  # one unindexed shard: opened, not worth a new index yet


def test_a_shard_removed_after_the_index_is_no_error(tmp_path):
    cache, paths = simple_cache(tmp_path)
    cache.lookup([])
    paths[4].unlink()
    hits = cache.lookup(["k4-0", "k5-0", "bad4"])
    assert set(hits.vectors) == {"k5-0"} and hits.failures == {} and hits.moved == []


def test_a_shard_replaced_under_its_name_is_read_again(tmp_path):
    cache, paths = simple_cache(tmp_path)
    cache.lookup([])
    other = write_shards(cache, [(["other-0", "other-1"], {})], seed=5)[0]
    os.replace(other, paths[2])
    hits = cache.lookup(["k2-0", "other-1"])
    assert_same(hits, reference(cache, ["k2-0", "other-1"]))
    assert set(hits.vectors) == {"other-1"}


def test_a_replaced_shard_of_the_same_size_and_mtime_is_read_again(tmp_path):
    """Same name, same size (same key count and lengths) and its mtime set back: the inode and change time tell the
    index entry from the file (an entry tied to size and mtime alone would hide the new keys)."""
    cache, paths = simple_cache(tmp_path)
    cache.lookup([])
    target = paths[6]
    before = target.stat()
    other = write_shards(cache, [([f"z{6}-{i}" for i in range(5)], {"zad6": "why 6"})], seed=11)[0]
    assert other.stat().st_size == before.st_size
    os.replace(other, target)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_mtime_ns == before.st_mtime_ns and target.stat().st_size == before.st_size
    hits = cache.lookup(["z6-2", "zad6", "k6-2"][:2])  # none of the keys the index recorded for it
    assert set(hits.vectors) == {"z6-2"} and hits.failures == {"zad6": "why 6"}


def test_an_index_that_puts_a_key_in_the_wrong_shard_is_dropped(tmp_path):
    """The index says a key of shard B is in shard Z (the last by name), not in B: Z is read, does not match what
    the index recorded for it, so every shard is read again in order as without an index (the key found, and the
    first shard's rows, read before Z, counted once), and a right index is written."""
    cache, paths = simple_cache(tmp_path)
    cache.lookup([])
    first, b, z = sorted(paths)[0], sorted(paths)[1], sorted(paths)[-1]
    names = indexed_names(cache)
    key = sorted(k for k in keys_of(b) if k.startswith("k"))[0]
    ib, iz = names.index(b.name), names.index(z.name)
    moved_hash = shard_index.key_hashes([key])[0]

    def misplace(entries):
        nb, sb, hb = entries[ib]
        nz, sz, hz = entries[iz]
        entries[ib] = (nb, sb, hb[hb != moved_hash])
        entries[iz] = (nz, sz, np.append(hz, moved_hash))
        return entries

    forge(cache, misplace)
    wanted = [key, sorted(keys_of(first))[-1], sorted(keys_of(z))[0]]  # a vector of the first, a failure of Z
    with opened() as read:
        hits = cache.lookup(wanted)
    assert_same(hits, reference(cache, wanted))
    assert set(hits.vectors) | set(hits.failures) == set(wanted)
    assert read[:2] == [first.name, z.name] and sorted(read[2:]) == sorted(p.name for p in paths)
    fresh = index_of(cache)  # rewritten from the shards themselves
    assert moved_hash in fresh.entries(fresh.pos[b.name]) and moved_hash not in fresh.entries(fresh.pos[z.name])
    with opened() as read:
        assert set(cache.lookup([key]).vectors) == {key}
    assert read == [b.name]


def test_a_forged_index_can_hide_a_key_but_never_serve_a_wrong_vector(tmp_path):
    """The documented limit: an index that drops a key from an unchanged shard (and puts it nowhere) makes that key
    look uncached (it is computed again); it cannot make a lookup return another key's vector."""
    cache, paths = simple_cache(tmp_path)
    cache.lookup([])
    names = indexed_names(cache)
    i3, i8 = names.index(paths[3].name), names.index(paths[8].name)

    def swap(entries):  # shard 3's entries and shard 8's exchanged: every key claimed by the other shard
        (n3, s3, h3), (n8, s8, h8) = entries[i3], entries[i8]
        entries[i3], entries[i8] = (n3, s3, h8), (n8, s8, h3)
        return entries

    forge(cache, swap)
    hits = cache.lookup(["k3-1", "k8-0"])  # shard 8 is read for k3-1 and shard 3 for k8-0: both contradict it
    assert_same(hits, reference(cache, ["k3-1", "k8-0"]))

    cache.lookup([])
    hide = shard_index.key_hashes(["k3-1"])[0]
    forge(cache, lambda entries: [(n, s, h[h != hide]) for n, s, h in entries])
    hits = cache.lookup(["k3-1", "k3-2"])  # shard 3 is read for k3-2: its keys contradict the index
    assert set(hits.vectors) == {"k3-1", "k3-2"}
    forge(cache, lambda entries: [(n, s, h[h != hide]) for n, s, h in entries])
    hits = cache.lookup(["k3-1"])  # nothing sends the lookup to shard 3: hidden, and nothing else served
    want = reference(cache, ["k3-1"])
    assert hits.vectors == {} and want.vectors.keys() == {"k3-1"}


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(300))


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def flipped_hash(path: Path) -> None:  # a valid archive whose hashes were changed (checksum kept)
    with np.load(path) as z:
        a = {n: z[n] for n in z.files}
    a["hashes"] = a["hashes"] ^ np.uint64(1)
    with open(path, "wb") as fh:
        np.savez(fh, **a)


def other_version(path: Path) -> None:
    with np.load(path) as z:
        a = {n: z[n] for n in z.files}
    a["version"] = np.asarray("cliplab-shard-index-v0")
    with open(path, "wb") as fh:
        np.savez(fh, **a)


@pytest.mark.parametrize("damage", [garbage, truncated, empty, a_folder, flipped_hash, other_version],
                         ids=lambda f: f.__name__)
def test_a_damaged_index_is_ignored_and_rebuilt(damage, tmp_path, caplog):
    cache, paths = simple_cache(tmp_path)
    cache.lookup([])
    damage(cache.dir / shard_index.NAME)
    assert index_of(cache) is None
    wanted = ["k1-1", "bad2", "k11-4"]
    progress = Recording()
    with use(progress), caplog.at_level(logging.DEBUG, logger="cliplab"):
        hits = cache.lookup(wanted)
    assert_same(hits, reference(cache, wanted))
    assert progress.warnings == [] and not (tmp_path / FOLDER).exists()  # never quarantined, never a warning
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG]
    if damage is not a_folder:
        assert sorted(indexed_names(cache)) == sorted(p.name for p in paths)  # rebuilt


def test_an_index_copied_from_another_folder_is_ignored(tmp_path):
    """Another model's index (its checksum covers its place: never read here), and the same model's index from
    another cache (its entries name other files: none used); the lookup reads this folder's shards and indexes them."""
    a, _ = simple_cache(tmp_path / "a", name="model-a")
    a.lookup([])
    for other in (EmbeddingCache(tmp_path / "a", "model-b", "image"), EmbeddingCache(tmp_path / "b", "model-a",
                                                                                      "image")):
        paths = write_shards(other, [([f"b{s}" for s in range(3)] + ["k1-1"], {})] * 9)
        shutil.copy2(a.dir / shard_index.NAME, other.dir / shard_index.NAME)
        assert (index_of(other) is None) == (other.scope != a.scope)
        with opened() as names:
            assert_same(other.lookup(["b1", "k1-1"]), reference(other, ["b1", "k1-1"]))
        assert len(names) == 9
        assert sorted(indexed_names(other)) == sorted(p.name for p in paths)


# ---- damaged shards with an index ----

def flip_in_emb(path: Path) -> None:
    with np.load(path) as z:
        a = {n: z[n] for n in z.files}
    a["emb"] = a["emb"].copy()
    a["emb"][0, 0] += 1  # checksum kept: not what was written
    with open(path, "wb") as fh:
        np.savez(fh, **a)


def test_a_damaged_shard_is_still_moved_aside(tmp_path):
    cache, paths = simple_cache(tmp_path)
    cache.lookup([])
    flip_in_emb(paths[5])
    progress = Recording()
    with use(progress):
        hits = cache.lookup(["k5-0", "k6-0"])
    assert set(hits.vectors) == {"k6-0"} and len(hits.moved) == 1 and "checksum mismatch" in hits.moved[0].reason
    assert (tmp_path / FOLDER / paths[5].relative_to(tmp_path)).is_file() and not paths[5].exists()
    assert len(progress.warnings) == 1
    assert set(cache.lookup(["k5-0", "k6-0"]).vectors) == {"k6-0"}  # the index entry of the moved shard: ignored


def test_a_shard_damaged_unread_by_the_index_waits_until_it_is_used(tmp_path):
    """Damage that leaves the keys readable in a shard nobody asks for: like without an index, nothing happens
    until the shard serves a lookup."""
    cache, paths = simple_cache(tmp_path)
    cache.lookup([])
    flip_in_emb(paths[5])
    assert cache.lookup(["k6-0"]).moved == [] and paths[5].exists()
    assert len(cache.lookup(["k5-1"]).moved) == 1


def test_a_shard_damaged_in_its_keys_after_indexing_is_moved_aside(tmp_path):
    cache, paths = simple_cache(tmp_path)
    cache.lookup([])
    truncated(paths[9])
    hits = cache.lookup(["k9-0", "k1-0"])
    assert set(hits.vectors) == {"k1-0"} and len(hits.moved) == 1 and "unreadable" in hits.moved[0].reason


# ---- when the index is written ----

def test_the_index_is_rewritten_when_enough_shards_are_new(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_index, "REBUILD_MIN", 4)
    monkeypatch.setattr(shard_index, "REBUILD_SHARE", 4)
    cache, paths = simple_cache(tmp_path, n=3)
    cache.lookup([])
    assert index_of(cache) is None  # 3 shards: below the minimum
    paths += write_shards(cache, [([f"n{s}"], {}) for s in range(2)], seed=1)
    cache.lookup(["n1"])
    assert sorted(indexed_names(cache)) == sorted(p.name for p in paths)
    paths += write_shards(cache, [([f"m{s}"], {}) for s in range(3)], seed=2)
    cache.lookup(["m0"])
    assert len(indexed_names(cache)) == 5  # 3 new < REBUILD_MIN: scanned, not indexed
    paths += write_shards(cache, [(["last"], {})], seed=3)
    cache.lookup(["m0"])
    assert sorted(indexed_names(cache)) == sorted(p.name for p in paths)  # 4 new: rewritten with all 9
    paths[0].unlink()
    cache.lookup(["last"])
    assert len(indexed_names(cache)) == 9  # one gone: its entry ignored
    for p in paths[1:4]:
        p.unlink()
    cache.lookup(["last"])
    assert sorted(indexed_names(cache)) == sorted(p.name for p in paths[4:])  # 4 gone: rewritten


def test_rebuild_share_of_a_large_folder():
    assert not shard_index.rebuild_due(7, 0) and shard_index.rebuild_due(8, 0)
    assert not shard_index.rebuild_due(7, 100) and shard_index.rebuild_due(8, 100)
    assert not shard_index.rebuild_due(61, 1000) and shard_index.rebuild_due(62, 1000)  # 1,000 / 16


# ---- a folder that cannot be written ----

def test_a_read_only_folder_gets_no_index_and_no_warning(tmp_path, monkeypatch, caplog):
    def refuse(fh, arrays):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(shard_index, "_save", refuse)
    cache, paths = simple_cache(tmp_path)
    progress = Recording()
    with use(progress), caplog.at_level(logging.DEBUG, logger="cliplab"):
        for _ in range(2):
            assert_same(cache.lookup(["k1-1", "bad3"]), reference(cache, ["k1-1", "bad3"]))
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(p.name for p in paths)  # no index, no temp file
    assert progress.warnings == [] and not [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert any("not written" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through permission bits "
                    "(the monkeypatched case covers root)")
def test_a_folder_without_write_permission_gets_no_index(tmp_path):
    cache, paths = simple_cache(tmp_path)
    cache.dir.chmod(0o555)
    try:
        assert_same(cache.lookup(["k1-1", "bad3"]), reference(cache, ["k1-1", "bad3"]))
        assert not (cache.dir / shard_index.NAME).exists()
    finally:
        cache.dir.chmod(0o755)


# ---- several processes ----

def _worker(root: str, w: int) -> list[str]:
    """Write shards and look up everything written so far, many times over; the keys this worker missed."""
    shard_index.REBUILD_MIN = 2
    cache = EmbeddingCache(Path(root), "fp", "image")
    missed = []
    mine: list[str] = []
    for s in range(12):
        keys = [f"w{w}-{s}-{i}" for i in range(4)]
        write_shards(cache, [(keys, {})], seed=w * 100 + s)
        mine += keys
        hits = cache.lookup(mine)
        missed += [k for k in mine if k not in hits.vectors]
    return missed


def test_processes_writing_shards_and_indexes_at_once_miss_nothing(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        missed = pool.starmap(_worker, [(str(tmp_path), w) for w in range(4)])
    assert missed == [[], [], [], []]
    cache = EmbeddingCache(tmp_path, "fp", "image")
    every = [f"w{w}-{s}-{i}" for w in range(4) for s in range(12) for i in range(4)]
    assert_same(cache.lookup(every), reference(cache, every))
    assert not [p for p in cache.dir.iterdir() if p.name.startswith(".")]  # no temp file left
    assert index_of(cache) is not None  # whole, whoever wrote it last
