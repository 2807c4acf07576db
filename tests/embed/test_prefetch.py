"""Decoding ahead of the tower in a thread (engine.prefetched): the same batches in the same order, errors where the
consumer is, a thread that stops when the consumer does, and embeddings equal to decoding in turn."""
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cliplab.embed import engine
from cliplab.embed.engine import prefetched


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "cliplab-decode"]


@settings(max_examples=40, deadline=None)
@given(items=st.lists(st.integers(), max_size=30), depth=st.integers(0, 4))
def test_same_items_in_the_same_order(items, depth):
    assert list(prefetched(iter(items), depth)) == items
    assert not _decode_threads()


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_an_error_of_the_producer_is_raised_to_the_consumer_after_the_items_before_it(depth):
    def batches():
        yield 1
        yield 2
        raise ValueError("broken batch")

    seen = []
    with pytest.raises(ValueError, match="broken batch"):
        for b in prefetched(batches(), depth):
            seen.append(b)
    assert seen == [1, 2]
    assert not _decode_threads()


def test_the_thread_runs_at_most_depth_batches_ahead_and_stops_with_the_consumer():
    made = []

    def batches():
        for i in range(1000):
            made.append(i)
            yield i

    it = prefetched(batches(), 2)
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(made) < 4 and time.monotonic() < deadline:  # bounded wait for the producer to fill its slots
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(made) <= 4  # the consumer's item, 2 in the slots, 1 waiting for a slot
    it.close()
    assert not _decode_threads()
    assert len(made) <= 4


def test_the_work_overlaps(monkeypatch):
    """The next batch is produced while the consumer works on this one (with depth 0 it is not)."""
    log = []

    def batches():
        for i in range(3):
            log.append(("made", i))
            yield i

    for b in prefetched(batches(), 1):
        time.sleep(0.05)  # the tower
        log.append(("used", b))
    assert log.index(("made", 1)) < log.index(("used", 0))
    log.clear()
    for b in prefetched(batches(), 0):
        log.append(("used", b))
    assert log == [("made", 0), ("used", 0), ("made", 1), ("used", 1), ("made", 2), ("used", 2)]


def test_embeddings_and_failures_equal_decoding_in_turn(tiny_checkpoint, tmp_path, monkeypatch):
    """A folder with a broken file, decoded ahead in a thread and in turn: identical rows and the same failures
    (and the run did decode in the thread when decoding in this process)."""
    from conftest import make_image

    from cliplab.data import open_dataset
    from cliplab.embed import embed_images
    from cliplab.models import open_model

    cfg, ckpt, _ = tiny_checkpoint
    model = open_model(str(cfg), str(ckpt), cache_dir=tmp_path / "m", backend="torch", device="cpu")
    folder = tmp_path / "imgs" / "a"
    for i in range(21):
        make_image(folder / f"{i:02d}.png", size=(40 + i, 30), color=(10 * i, 50, 200 - 5 * i))
    (folder / "10.png").write_bytes(b"not an image")
    ds = open_dataset(str(tmp_path / "imgs"))
    depths, real = [], engine.prefetched

    def spy(batches, depth):
        depths.append(depth)
        return real(batches, depth)

    monkeypatch.setattr(engine, "prefetched", spy)
    results = {}
    for depth in (0, 2):
        monkeypatch.setattr(engine, "PREFETCH_BATCHES", depth)
        results[depth] = embed_images(model, ds, use_cache=False, batch_size=4, workers=0)
    assert depths == [0, 2]
    assert np.array_equal(results[0].embeddings, results[2].embeddings)
    assert np.array_equal(results[0].indices, results[2].indices)
    assert results[0].failures == results[2].failures and len(results[0].failures) == 1
    assert not _decode_threads()
