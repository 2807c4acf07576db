"""``EmbeddingCache.lookup_rows``: the cache's rows by position, copied into one matrix (no object per row: what a
warm run over a million files needs), must say exactly what the by-key ``lookup`` says, for any cache and any
list of keys (repeats, keys that are not cached, failures, no key)."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cliplab.embed.cache import EmbeddingCache
from cliplab.embed.engine import Plan, assemble
from cliplab.data.sources import IndexedSource

KEYS = [f"f:{i:04x}" for i in range(30)]


@st.composite
def caches(draw):
    """Shards of (keys, failures), keys possibly in several shards (a later shard wins, as in ``lookup``)."""
    shards = draw(st.lists(st.tuples(st.lists(st.sampled_from(KEYS), max_size=8, unique=True),
                                     st.lists(st.sampled_from(KEYS), max_size=3, unique=True)), max_size=5))
    query = draw(st.lists(st.one_of(st.none(), st.sampled_from(KEYS)), max_size=25))
    return shards, query


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(caches())
def test_rows_by_position_are_the_lookup_by_key(tmp_path_factory, drawn):
    shards, query = drawn
    cache = EmbeddingCache(tmp_path_factory.mktemp("c"), "fp", "image")
    rng = np.random.default_rng(len(shards))
    for keys, fails in shards:
        fails = {k: f"bad {k}" for k in fails if k not in keys}
        if keys or fails:
            cache.write(keys, rng.standard_normal((len(keys), 3), dtype=np.float32), fails, 1.0)
    by_key = cache.lookup([k for k in query if k is not None])
    rows = cache.lookup_rows(query)
    for j, k in enumerate(query):
        if k is not None and k in by_key.vectors:
            assert rows.found[j] and np.array_equal(rows.rows[j], by_key.vectors[k])
        else:
            assert not rows.found[j]
        if k is not None and k in by_key.failures and k not in by_key.vectors:
            assert rows.failures[j] == by_key.failures[k]
        elif not (k is not None and k in by_key.failures):
            assert j not in rows.failures
    assert (rows.rows is None) == (not rows.found.any())


def test_a_shard_of_another_dimension_is_moved_aside(tmp_path):
    cache = EmbeddingCache(tmp_path, "fp", "image")
    cache.write(["f:a"], np.ones((1, 4), np.float32), {}, 1.0)
    cache.write(["f:b"], np.ones((1, 5), np.float32), {}, 1.0)
    hits = cache.lookup_rows(["f:a", "f:b"])  # shards are read in name order (random names): either one is first
    assert len(hits.moved) == 1 and hits.found.sum() == 1
    assert hits.rows.shape == (2, 4 if hits.found[0] else 5) and "dimension" in hits.moved[0].reason
    assert len(list((tmp_path / "quarantine").rglob("*.npz"))) == 1


def test_a_warm_run_returns_the_cached_matrix_itself(tmp_path):
    """assemble() hands back the lookup's matrix when every position was found (no copy of a million rows), and
    the rows of the found ones (a copy) when some failed."""
    cache = EmbeddingCache(tmp_path, "fp", "image")
    cache.write(["f:a", "f:b"], np.arange(6, dtype=np.float32).reshape(2, 3), {"f:c": "broken"}, 1.0)
    source = IndexedSource(4, lambda i: None, "fp", "x")
    hits = cache.lookup_rows(["f:a", "f:b", "f:a"])
    plan = Plan(["f:a", "f:b", "f:a"], cache, [], {}, {}, {}, 0.0, hits.rows, hits.found)
    res = assemble(plan, source, 3, 0, 0.0)
    assert res.embeddings is hits.rows and res.indices.tolist() == [0, 1, 2]
    assert res.embeddings[2].tolist() == [0.0, 1.0, 2.0]
    hits = cache.lookup_rows(["f:c", "f:b", None])
    plan = Plan(["f:c", "f:b", None], cache, [], {}, {}, dict(hits.failures), 0.0, hits.rows, hits.found)
    res = assemble(plan, source, 3, 0, 0.0)
    assert res.indices.tolist() == [1] and res.embeddings.tolist() == [[3.0, 4.0, 5.0]]
    assert [(i, why) for i, _, why in res.failures] == [(0, "broken")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(caches())
def test_colliding_hashes_locate_the_right_keys(tmp_path_factory, drawn):
    """lookup_rows finds keys through their hashes: with a hash that collides all the time (3 values), every key
    is still located at its own positions, never at another key's that shares its hash."""
    import pytest

    from cliplab.embed import shard_index

    def weak(keys):
        return np.asarray([sum(map(ord, str(k))) % 3 for k in list(keys)], dtype=np.uint64)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shard_index, "key_hashes", weak)
        mp.setattr(shard_index, "array_hashes", weak)
        test_rows_by_position_are_the_lookup_by_key.hypothesis.inner_test(tmp_path_factory, drawn)
