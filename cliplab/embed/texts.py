"""Text embeddings: prompts through the text tower (cached per text), and the class x template embeddings
every classifier is built from."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cliplab.embed import long_text
from cliplab.embed.cache import EmbeddingCache
from cliplab.errors import ParameterError
from cliplab.io import hash_bytes
from cliplab.inputs import RunOptions, as_options
from cliplab.progress import progress_bar
from cliplab.prompts import TemplateSet

if TYPE_CHECKING:
    from cliplab.models.base import LoadedModel

TEXT_BATCH_MAX = 256  # the largest batch of texts through the tower at once
TEXT_BATCH_MIN = 32  # below this, a batch costs mostly the call: fewer, larger ones
BAR_STEPS = 20  # texts to embed are cut into about this many batches, so the bar moves (1,195 captions through
# ViT-B-32 on a CPU took 55 s: at 256 a batch, five steps of 11 s each)


def text_batch(n: int) -> int:
    """Batch size for ``n`` texts still to embed: about :data:`BAR_STEPS` batches, within
    [:data:`TEXT_BATCH_MIN`, :data:`TEXT_BATCH_MAX`]. (A text's embedding does not depend on its batch beyond
    float rounding, which already varies with what the cache holds: only texts not cached are batched.)"""
    return int(min(TEXT_BATCH_MAX, max(TEXT_BATCH_MIN, -(-n // BAR_STEPS))))


def embed_texts(model: LoadedModel, texts: list[str], options: RunOptions | str | Path | None = None, *,
                batch_size: int | None = None) -> np.ndarray:
    """Raw text embeddings (float32, rows in the order of ``texts``), cached per text (``options``: the run's
    options, or a cache folder). A prompt longer than the text tower's context is cut (``options.long_text``
    truncate: counted, and reported once per run) or embedded whole as the unit-length mean of its windows
    (``windows``; see :mod:`cliplab.embed.long_text`). ``batch_size``: texts per forward pass (default
    :func:`text_batch` of the number still to embed)."""
    options = as_options(options)
    mode = options.long_text
    unique = list(dict.fromkeys(texts))
    # a model known from its memo and not loaded yet: lengths from the memo, embeddings from the cache, if they can
    lay, lengths = long_text.measure(model, unique, options.cache_dir if options.use_cache else None)
    if mode == "windows" and (lay is None or not lay.windowed):
        raise ParameterError("long_text", mode, f"{{p:long_text}} windows cannot lay out windows for the tokenizer "
                             f"of {model.name} ({type(model.tokenizer).__name__}); use {{p:long_text}} truncate",
                             prefix=False)
    long: dict[str, int] = {}
    if lay is not None and unique:
        long = {t: n for t, n in zip(unique, lengths) if n > lay.context_length}
        long_text.record(model, lay, mode, unique, long)
    windowed = long if mode == "windows" else {}
    keys = [("tw:" if t in windowed else "t:") + hash_bytes(t.encode("utf-8")) for t in texts]
    unique_keys = list(dict.fromkeys(keys))
    backend, cache, vectors = None, None, {}
    if options.use_cache and getattr(model, "loaded", True) is False:
        for candidate in model.cached_text_backends():  # a key whose cache holds every text: no model needed
            cache = EmbeddingCache(options.cache_dir, model.text_fingerprint(candidate), "text")
            vectors = dict(cache.lookup(unique_keys).vectors)
            if len(vectors) == len(unique_keys):
                backend = candidate
                break
    if backend is None:
        backend = model.text_backend(len(texts))  # the key names what computes them: never mixed across runtimes
        cache = EmbeddingCache(options.cache_dir, model.text_fingerprint(backend), "text") if options.use_cache \
            else None
        vectors = dict(cache.lookup(unique_keys).vectors) if cache else {}
    todo = list(dict.fromkeys(k for k in keys if k not in vectors))
    if todo and cache:  # before any text is embedded: the cache must be able to take them
        cache.prepare(len(todo), model.embed_dim)
    if todo:
        text_of = dict(zip(keys, texts))
        plain = [k for k in todo if not k.startswith("tw:")]
        whole = [k for k in todo if k.startswith("tw:")]
        new_rows = []
        batch_size = batch_size or text_batch(len(todo))
        t0 = time.perf_counter()
        with progress_bar(len(todo), "embedding texts", unit="texts") as bar:
            for s in range(0, len(plain), batch_size):
                chunk = plain[s:s + batch_size]
                out = model.encode_texts([text_of[k] for k in chunk], backend).numpy()
                new_rows.append(out)
                vectors.update(zip(chunk, out))
                bar.advance(len(chunk))
            if whole:
                lay = lay if lay.content is not None else long_text.layout(model)  # the tokenizer itself
                out = long_text.encode_windows(model, lay, [text_of[k] for k in whole], backend, batch_size, bar)
                new_rows.append(out)
                vectors.update(zip(whole, out))
        if cache:
            cache.write(plain + whole, np.concatenate(new_rows), {}, time.perf_counter() - t0)
    if not texts:
        return np.zeros((0, model.embed_dim), np.float32)
    return np.stack([vectors[k] for k in keys]).astype(np.float32, copy=False)


def class_text_embeddings(model: LoadedModel, classnames: list[str], template_set: TemplateSet,
                          options: RunOptions | str | Path | None = None) -> np.ndarray:
    """(C, T, d) raw text embeddings of every class x template prompt (cached)."""
    texts = template_set.texts(classnames)
    emb = embed_texts(model, texts, options)
    return emb.reshape(len(classnames), len(template_set.templates), -1)
