"""Text embeddings: prompts through the text tower (cached per text), and the class x template embeddings
every classifier is built from."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cliplab.embed.cache import EmbeddingCache
from cliplab.io import hash_bytes
from cliplab.inputs import RunOptions, as_options
from cliplab.progress import progress_bar
from cliplab.prompts import TemplateSet

if TYPE_CHECKING:
    from cliplab.models.base import LoadedModel


def embed_texts(model: LoadedModel, texts: list[str], options: RunOptions | str | Path | None = None, *,
                batch_size: int = 256) -> np.ndarray:
    """Raw text embeddings (float32, rows in the order of ``texts``), cached per text (``options``: the run's
    options, or a cache folder)."""
    options = as_options(options)
    keys = ["t:" + hash_bytes(t.encode("utf-8")) for t in texts]
    backend = model.text_backend(len(texts))  # the key names what computes them: never mixed across runtimes
    cache = EmbeddingCache(options.cache_dir, model.text_fingerprint(backend), "text") if options.use_cache \
        else None
    vectors = dict(cache.lookup(list(dict.fromkeys(keys))).vectors) if cache else {}
    todo = list(dict.fromkeys(k for k in keys if k not in vectors))
    if todo and cache:  # before any text is embedded: the cache must be able to take them
        cache.prepare(len(todo), model.embed_dim)
    if todo:
        text_of = dict(zip(keys, texts))
        new_rows = []
        t0 = time.perf_counter()
        with progress_bar(len(todo), "embedding texts", unit="texts") as bar:
            for s in range(0, len(todo), batch_size):
                chunk = todo[s:s + batch_size]
                out = model.encode_texts([text_of[k] for k in chunk], backend).numpy()
                new_rows.append(out)
                vectors.update(zip(chunk, out))
                bar.advance(len(chunk))
        if cache:
            cache.write(todo, np.concatenate(new_rows), {}, time.perf_counter() - t0)
    if not texts:
        return np.zeros((0, model.embed_dim), np.float32)
    return np.stack([vectors[k] for k in keys]).astype(np.float32, copy=False)


def class_text_embeddings(model: LoadedModel, classnames: list[str], template_set: TemplateSet,
                          options: RunOptions | str | Path | None = None) -> np.ndarray:
    """(C, T, d) raw text embeddings of every class x template prompt (cached)."""
    texts = template_set.texts(classnames)
    emb = embed_texts(model, texts, options)
    return emb.reshape(len(classnames), len(template_set.templates), -1)
