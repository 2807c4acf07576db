"""Listing a folder of millions of files (issue 26): one scandir pass without a stat or a Path object per file, the
fingerprint hashed in chunks, the file-hash memo read and written a chunk at a time. Everything must give exactly
what the straightforward code gives: the same files in the same order, the same fingerprint digest, the same keys."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cliplab.data import filehash
from cliplab.data.folder import IMAGE_EXTENSIONS, folder_fingerprint, image_files, load_folder
from cliplab.data.sources import FileSource
from cliplab.data.webdataset import is_webdataset_folder
from cliplab.io import hash_file, hash_json


def reference_listing(folder: Path, recursive: bool = True) -> list[str]:
    """What cliplab listed before (os.walk, splitext, a stat per file through os.path.isfile, Path normalisation)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        found.extend(os.path.join(dirpath, f) for f in filenames
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    return [str(Path(p)) for p in sorted(found) if os.path.isfile(p)]


def tree(root: Path) -> Path:
    """Every kind of entry a listing meets."""
    for rel in ("a/1.jpg", "a/2.JPG", "a/sub/3.png", "a/sub/deeper/4.webp", "a/.hidden.jpg", "a/.dir/5.jpg",
                "a/notes.txt", "a/noext", "a/x.", "a/..jpg", "b/6.jpeg", "b-c/7.jpg", "b0/8.jpg", "loose.png",
                "c/é-ü.jpg", "c/9.tiff"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rel.encode())
    (root / "a" / "link.jpg").symlink_to(root / "b" / "6.jpeg")  # a link to a file: listed
    (root / "a" / "broken.jpg").symlink_to(root / "missing.jpg")  # a broken link: not a file
    (root / "a" / "linkdir").symlink_to(root / "b", target_is_directory=True)  # not descended into
    (root / "a" / "dir.jpg").mkdir()  # a folder named like an image
    (root / "top-link").symlink_to(root / "c", target_is_directory=True)
    return root


@pytest.mark.parametrize("start, recursive", [("", True), ("", False), ("a", True), ("a", False), ("top-link", True),
                                              ("c", True)])
def test_the_listing_is_the_reference_listing(tmp_path, start, recursive):
    root = tree(tmp_path / "t")
    folder = root / start if start else root
    assert image_files(str(folder), recursive) == reference_listing(folder, recursive)


def test_a_relative_folder_and_the_current_one(tmp_path, monkeypatch):
    root = tree(tmp_path / "t")
    monkeypatch.chdir(root)
    assert image_files(".") == reference_listing(Path("."))
    assert image_files("a") == reference_listing(Path("a"))
    assert image_files(".")[0] == "a/1.jpg"  # no ./ in front, as Path spells it


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), max_size=40), st.integers(1, 7),
       st.text(min_size=1, max_size=20))
def test_the_chunked_fingerprint_is_hash_json(names, step, root):
    """The fingerprint, taken in chunks, is byte for byte hash_json's: any text (quotes, backslashes, control
    characters, non-ASCII, surrogate escapes of non-UTF-8 names), any chunking, the empty list."""
    names = names + ["bad\udce9name.jpg"]
    chunks = [names[i:i + step] for i in range(0, len(names), step)]
    assert folder_fingerprint(root, chunks) == hash_json({"root": root, "files": names})
    assert folder_fingerprint(root, []) == hash_json({"root": root, "files": []})
    assert folder_fingerprint(root, [[], names, []]) == hash_json({"root": root, "files": names})


def test_the_folder_fingerprint_names_each_file_relative_to_the_folder(tmp_path, monkeypatch):
    root = tmp_path / "set"
    for rel in ("cat/1.jpg", "cat/sub/2.jpg", "dog/3.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    expect = "folder:" + hash_json({"root": str(root.resolve()),
                                    "files": ["cat/1.jpg", "cat/sub/2.jpg", "dog/3.jpg"]})[:24]
    assert load_folder(root).fingerprint == expect
    monkeypatch.chdir(root)
    assert load_folder(".").fingerprint == expect
    # a flat folder given as "." (regression: its names lost their first two characters, "1.jpg" -> "jpg")
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("1.jpg", "22.jpg"):
        (flat / name).write_bytes(name.encode())
    monkeypatch.chdir(flat)
    ds = load_folder(".")
    assert ds.source.paths == ["1.jpg", "22.jpg"] and ds.classnames is None
    assert ds.fingerprint == "folder:" + hash_json({"root": str(flat.resolve()), "files": ["1.jpg", "22.jpg"]})[:24]


def test_a_class_folder_with_a_tar_in_it_stays_an_image_folder(tmp_path):
    root = tmp_path / "imgs"
    for rel in ("cat/1.jpg", "dog/2.jpg", "dog/archive.tar"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    assert not is_webdataset_folder(root)
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "0.tar").write_bytes(b"")
    assert is_webdataset_folder(shards)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".tar").write_bytes(b"")  # a hidden file named .tar has no .tar suffix
    assert not is_webdataset_folder(hidden)


# -- the file-hash memo, a chunk at a time ------------------------------------------------------------------------


def files(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{i:03d}.bin"
        p.write_bytes(i.to_bytes(2, "little") * 3)
        out.append(str(p))
    return out


@pytest.fixture
def reads(monkeypatch):
    seen: list[str] = []

    def counting(path, *a, **k):
        seen.append(path)
        return hash_file(path, *a, **k)

    monkeypatch.setattr(filehash, "hash_file", counting)
    return seen


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_keys_in_chunks_are_the_keys(tmp_path, monkeypatch, reads, chunk):
    """Chunks of any size give the hashes of every file; the memo written chunk by chunk serves them all next time;
    duplicates, a missing file, a relative path and a name that is not UTF-8 included."""
    monkeypatch.setattr(filehash, "CHUNK", chunk)
    paths = files(tmp_path / "f", 10)
    odd = os.fsdecode(os.fsencode(str(tmp_path / "f")) + b"/caf\xe9.bin")
    with open(os.fsencode(odd), "wb") as fh:
        fh.write(b"odd")
    monkeypatch.chdir(tmp_path)
    paths = paths[:4] + [paths[2], str(tmp_path / "f" / "gone.bin"), odd, "f/005.bin"] + paths[4:]
    expect = [None if "gone" in p else hash_file(os.path.abspath(p)) for p in paths]
    memo = tmp_path / "cache" / filehash.MEMO_NAME
    with filehash.file_hash_memo(memo):
        first, errors = filehash.hash_files(paths)
    assert first == expect and list(errors) == [5]
    reads.clear()
    with filehash.file_hash_memo(memo):
        again, errors = filehash.hash_files(paths)
    assert again == expect and list(errors) == [5] and reads == []  # every file served by the memo


def test_paths_spread_over_a_larger_memo_are_found_one_by_one(tmp_path, monkeypatch, reads):
    """When the range between a chunk's first and last path holds many more memo rows than the chunk (other
    folders' files in between), the memo is read by the join instead of the range: same hashes, nothing read."""
    monkeypatch.setattr(filehash, "CHUNK", 4)
    monkeypatch.setattr(filehash, "SCAN_SLACK", 8)  # rows a range may hold beyond twice the chunk's
    many = files(tmp_path / "m", 400)
    memo = tmp_path / "cache" / filehash.MEMO_NAME
    with filehash.file_hash_memo(memo):
        filehash.hash_files(many)
    spread = many[::97] + many[1:2]  # four paths from the whole range in a chunk: 400 rows between
    calls = []
    real = filehash._joined
    monkeypatch.setattr(filehash, "_joined", lambda *a: calls.append(1) or real(*a))
    reads.clear()
    with filehash.file_hash_memo(memo):
        got, _ = filehash.hash_files(spread)
    assert got == [hash_file(p) for p in spread] and reads == [] and calls
    calls.clear()
    with filehash.file_hash_memo(memo):
        filehash.hash_files(many[10:14])  # a contiguous chunk: the range scan alone
    assert calls == []


def test_a_memo_that_fails_in_a_later_chunk_hashes_the_rest(tmp_path, monkeypatch, reads, caplog):
    monkeypatch.setattr(filehash, "CHUNK", 3)
    paths = files(tmp_path / "f", 9)
    memo = tmp_path / "cache" / filehash.MEMO_NAME
    with filehash.file_hash_memo(memo):
        filehash.hash_files(paths)
    real, calls = filehash._known, []

    def failing(con, chunk):
        calls.append(1)
        if len(calls) == 2:
            raise filehash.sqlite3.OperationalError("database is locked")
        return real(con, chunk)

    monkeypatch.setattr(filehash, "_known", failing)
    reads.clear()
    with filehash.file_hash_memo(memo):
        got, errors = filehash.hash_files(paths)
    assert got == [hash_file(p) for p in paths] and not errors
    assert sorted(reads) == paths[3:]  # the first chunk from the memo, the rest read
    assert "hashing the remaining files" in caplog.text


def test_a_file_source_takes_any_path_like(tmp_path):
    paths = files(tmp_path / "f", 3)
    assert FileSource([Path(p) for p in paths]).paths == paths


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(max_size=10), max_size=20), st.data())
def test_a_path_list_behaves_as_the_list(paths, data):
    """PathList (one string + offsets after the common prefix) is the list it was made from: length, every index
    (negative too), slices with steps, iteration, equality, pickling; empty strings and shared prefixes included."""
    import pickle

    from cliplab.data.sources import PathList

    pl = PathList(paths)
    assert len(pl) == len(paths) and list(pl) == paths and pl == paths and pl == PathList(paths)
    for i in range(-len(paths), len(paths)):
        assert pl[i] == paths[i]
    for bad in (len(paths), -len(paths) - 1):
        with pytest.raises(IndexError):
            pl[bad]
    a, b, step = data.draw(st.integers(-25, 25)), data.draw(st.integers(-25, 25)), data.draw(st.sampled_from([1, 2, -1, 3]))
    assert pl[a:b:step] == paths[a:b:step]
    assert pickle.loads(pickle.dumps(pl)) == paths
    assert pl != paths + ["x"]


@pytest.mark.parametrize("slow", [True, False])
def test_stats_run_in_threads_only_where_a_stat_is_slow(tmp_path, monkeypatch, slow):
    """A stat slower than SLOW_STAT (network storage) sends the rest of the chunk's stats to the threads; a fast one
    keeps them in this thread (threads only cost there). The signatures are the same either way."""
    import threading

    paths = files(tmp_path / "f", 300)
    monkeypatch.setattr(filehash, "SLOW_STAT", -1.0 if slow else 1.0)
    where, real = set(), filehash._signature
    monkeypatch.setattr(filehash, "_signature", lambda p: where.add(threading.current_thread().name) or real(p))
    memo = tmp_path / "cache" / filehash.MEMO_NAME
    with filehash.file_hash_memo(memo):
        got, _ = filehash.hash_files(paths)
    assert got == [hash_file(p) for p in paths]
    assert (len(where) > 1) == slow and threading.current_thread().name in where
