"""Content keys of files: the metadata memo must save the reading, never serve a stale hash."""
from __future__ import annotations

import os

import pytest

from cliplab.data import filehash
from cliplab.data.sources import FileSource
from cliplab.io import hash_file


@pytest.fixture
def counted(monkeypatch):
    """Count the files actually read for hashing."""
    calls: list[str] = []

    def counting(path, *a, **k):
        calls.append(os.path.basename(path))
        return hash_file(path, *a, **k)

    monkeypatch.setattr(filehash, "hash_file", counting)
    return calls


def _files(tmp_path, n=4):
    paths = []
    for i in range(n):
        p = tmp_path / "imgs" / f"{i}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(bytes([i]) * (100 + i))
        paths.append(str(p))
    return paths


def test_memo_skips_unchanged_files_and_rehashes_changed_ones(tmp_path, counted):
    paths = _files(tmp_path)
    memo = tmp_path / "cache" / filehash.MEMO_NAME
    with filehash.file_hash_memo(memo):
        first = FileSource(paths).keys()
    assert sorted(counted) == ["0.bin", "1.bin", "2.bin", "3.bin"] and memo.is_file()
    assert first == ["f:" + hash_file(p) for p in paths]

    counted.clear()
    with filehash.file_hash_memo(memo):
        again = FileSource(paths).keys()
    assert again == first and counted == []  # nothing read

    # same size, new content, new mtime -> re-hashed, new key; a rewrite keeping size and mtime is trusted (git's rule)
    with open(paths[1], "r+b") as fh:
        fh.write(b"\xff")
    st = os.stat(paths[1])
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    counted.clear()
    with filehash.file_hash_memo(memo):
        changed = FileSource(paths).keys()
    assert counted == ["1.bin"] and changed[1] == "f:" + hash_file(paths[1]) != first[1]
    assert changed[0] == first[0] and changed[2:] == first[2:]

    # without an active memo every file is read (what --no-cache gets)
    counted.clear()
    assert FileSource(paths).keys() == changed and len(counted) == 4


def test_corrupt_memo_is_rebuilt_unusable_one_skipped_missing_files_reported(tmp_path, counted, caplog):
    paths = _files(tmp_path, 2) + [str(tmp_path / "gone.jpg")]
    bad = tmp_path / "corrupt.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    src = FileSource(paths)
    with caplog.at_level("WARNING"), filehash.file_hash_memo(bad):
        keys = src.keys()
    assert keys[:2] == ["f:" + hash_file(p) for p in paths[:2]] and keys[2] is None
    assert "unreadable file" in src.key_errors[2] and "No such file" in src.key_errors[2]
    assert "corrupt" in caplog.text and str(bad) in caplog.text
    counted.clear()
    with filehash.file_hash_memo(bad):  # the rebuilt memo serves the next run
        assert FileSource(paths).keys() == keys and counted == []

    blocked = tmp_path / "a-folder.sqlite"
    blocked.mkdir()  # cannot be opened as a database: skipped, nothing deleted
    caplog.clear()
    with caplog.at_level("WARNING"), filehash.file_hash_memo(blocked):
        assert FileSource(paths).keys() == keys
    assert "unusable" in caplog.text and blocked.is_dir() and len(counted) == 3  # every path read (or tried)


def test_engine_uses_the_memo_only_with_the_cache(tiny_checkpoint, tmp_path, counted):
    from cliplab.data import open_dataset
    from cliplab.embed import embed_images
    from cliplab.models import open_model
    from conftest import make_image

    cfg, ckpt, _ = tiny_checkpoint
    m = open_model(str(cfg), str(ckpt), device="cpu", cache_dir=tmp_path / "c")
    for i in range(3):
        make_image(tmp_path / "imgs" / f"{i}.png", size=(40 + i, 40))
    a = embed_images(m, open_dataset(str(tmp_path / "imgs")), tmp_path / "c", workers=0)
    assert (tmp_path / "c" / filehash.MEMO_NAME).is_file() and len(counted) == 3
    counted.clear()
    b = embed_images(m, open_dataset(str(tmp_path / "imgs")), tmp_path / "c", workers=0)
    assert counted == [] and b.computed == 0 and (a.embeddings == b.embeddings).all()
    embed_images(m, open_dataset(str(tmp_path / "imgs")), tmp_path / "nc", workers=0,
                 use_cache=False)
    assert len(counted) == 3 and not (tmp_path / "nc").exists()
