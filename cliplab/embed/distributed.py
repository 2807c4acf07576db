"""Image embedding spread over a Ray cluster (``cliplab embed --ray``, ``cliplab.embed(..., ray="local")``).

The same plan as the single-process engine (:func:`cliplab.embed.engine.plan_embedding`: every item's key, the cache
looked up, the positions to compute in dataset order) is cut into shards of ``shard_batches`` batches of
``batch_size`` images, on the batches a single-process run forms. Ray runs the rest:

- decoding and preprocessing as CPU tasks, one per batch (the PIL path of the single-process engine, item by item,
  with its failure reasons), their pixels in Ray's object store;
- the towers as a pool of actors: one per GPU where the cluster has GPUs, else one CPU actor per node, each loading
  the driver's model by its spec with the same backend and precision (its fingerprint must match the driver's, or the
  run stops) and encoding the shard's batches in order;
- the driver commits each finished shard to the cache (:meth:`EmbeddingCache.write`: atomic, with its checksum) as
  it arrives, and advances one progress bar for the whole job.

So the cache holds what a single-process run writes, keyed the same way, and every study reuses it; a rerun looks it
up and computes only the shards that were not committed. Actors are restarted by Ray when their process dies and the
calls they had not finished are retried (``max_restarts``/``max_task_retries``); decode tasks are retried too. Only
the driver writes the cache, so workers need not see its folder: the images must be readable from every node (a
shared filesystem, or fsspec URLs).
"""
from __future__ import annotations

import os
import resource
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from cliplab.threads import catch_warnings
from cliplab.data.base import ImageDataset
from cliplab.data.sources import ImageSource
from cliplab.embed.descriptors import DescriptorSpec
from cliplab.embed.engine import EmbeddingResult, _collate, _Preprocessed, assemble, plan_embedding
from cliplab.errors import ParameterError
from cliplab.inputs import RunOptions, as_options
from cliplab.progress import note, progress_bar

if TYPE_CHECKING:
    from cliplab.models.base import LoadedModel

INSTALL = "pip install 'cliplab[ray]'"
IN_FLIGHT = 2  # shards queued per actor: one encoding, one decoding ahead


def check_address(value: str | None) -> str | None:
    """``local`` | ``auto`` | ``ray://HOST:PORT`` (or None: no Ray), else a :class:`ParameterError` naming ``ray``."""
    if value is None:
        return None
    if value in ("local", "auto") or (value.startswith("ray://") and len(value) > len("ray://")):
        return value
    raise ParameterError("ray", value, "choose local (a Ray started on this machine), auto (the cluster this "
                         "machine belongs to) or ray://HOST:PORT (a cluster's client address)")


def require_ray(value: str):
    """The ``ray`` module, or a :class:`ParameterError` naming ``ray`` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ParameterError("ray", value, f"needs Ray, which is not installed: {INSTALL}") from None
    return ray


@dataclass
class Cluster:
    """How a run used Ray: start-up seconds, the actors, and the peak memory of the processes that worked."""
    address: str
    startup_seconds: float = 0.0
    actors: int = 0
    devices: str = "cpu"
    threads: int = 0  # torch threads per CPU actor
    actor_peak_rss: dict[int, int] = field(default_factory=dict)  # pid -> bytes
    decode_peak_rss: dict[int, int] = field(default_factory=dict)  # pid -> bytes
    restarts: int = 0  # shards whose actor call was retried after its process died (seen as a new pid)
    model_load_seconds: float = 0.0  # the longest an actor took to load the model
    ready_after_seconds: float = 0.0  # from the first shard sent to the last actor ready (one machine's clock)


@dataclass
class ShardDone:
    """A shard committed by the driver (given to ``on_commit``)."""
    index: int
    rows: int
    failures: int
    pid: int  # the actor process that encoded it
    committed: int  # shards committed so far in this run


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _decode(source: ImageSource, positions: list[int], preprocess, cfg: dict):
    """One batch through the single-process engine's PIL path: (positions, pixels as numpy or None, failures,
    (pid, peak RSS))."""
    items = _Preprocessed(source, positions, preprocess, cfg)
    pos, pixels, bad = _collate([items[j] for j in range(len(items))])
    return pos, (pixels.numpy() if pixels is not None else None), bad, (os.getpid(), _peak_rss())


class _Tower:
    """A Ray actor holding the model: encodes a shard's decoded batches in order."""

    def __init__(self, spec: dict, load: dict, fingerprint: str, threads: int):
        import torch

        from cliplab.models import open_model
        from cliplab.progress import Silent, use

        t = time.perf_counter()
        if threads > 0:
            torch.set_num_threads(threads)
        with use(Silent()):  # the driver already said what loading this model says
            self.model = open_model(spec["model"], spec.get("pretrained"), **load)
        if self.model.fingerprint != fingerprint:
            raise RuntimeError(f"the model loaded on a Ray worker has fingerprint {self.model.fingerprint}, the "
                               f"driver's {fingerprint}: its weights or preprocessing differ there")
        from cliplab.embed.descriptors import make_encoder

        self.encode = make_encoder(self.model, DescriptorSpec())
        self.loaded = (time.perf_counter() - t, time.time())  # (seconds it took, when it ended)

    def run(self, batches: list) -> tuple:
        import ray
        import torch

        pos_all, rows, bad_all, decoders = [], [], [], {}
        tick = time.perf_counter()
        for ref in batches:
            pos, pixels, bad, (pid, rss) = ray.get(ref)
            decoders[pid] = max(rss, decoders.get(pid, 0))
            bad_all.extend(bad)
            if pixels is not None:
                # the object store's arrays are read-only, which torch warns about: the tower only reads them
                rows.append(self.encode(torch.from_numpy(np.require(pixels, requirements="W"))))
                pos_all.extend(pos)
        seconds = time.perf_counter() - tick
        emb = np.concatenate(rows) if rows else None
        return pos_all, emb, bad_all, seconds, (os.getpid(), _peak_rss()), decoders, self.loaded


def connect(address: str, ray=None) -> tuple[bool, float]:
    """Ray initialised for ``address`` (a Ray already initialised in this process is used as it is): (whether this
    call started it, so it shuts it down, seconds it took)."""
    ray = ray or require_ray(address)
    if ray.is_initialized():
        return False, 0.0
    t = time.perf_counter()
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    # Ray Client says each failed attempt in a warning before it gives up: on a failure the one error line says it
    with catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            if address == "local":
                ray.init(address="local", num_cpus=os.cpu_count() or 1, **kw)
            else:
                ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ParameterError("ray", address, f"cannot connect to Ray ({str(exc).splitlines()[0][:200]})") \
                from None
    for w in said:  # connected: what Ray said on the way is passed on
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return True, time.perf_counter() - t


def embed_images_ray(model: LoadedModel, data: ImageDataset | ImageSource, options: RunOptions | None = None, *,
                     address: str = "local", shard_batches: int = 16, description: str = "embedding images",
                     on_commit: Callable[[ShardDone], None] | None = None, **changes) -> EmbeddingResult:
    """:func:`cliplab.embed.embed_images` on a Ray cluster (see the module's docstring): the same
    :class:`EmbeddingResult`, and the same cache shards and keys. ``address``: ``local``, ``auto`` or
    ``ray://HOST:PORT``. ``on_commit`` is called in the driver after each shard is committed (tests use it).
    ``result.cluster`` says how Ray ran it (:class:`Cluster`)."""
    ray = require_ray(address)
    check_address(address)
    options = as_options(options, **changes)
    if options.pipeline == "tensor":
        raise ParameterError("pipeline", "tensor", "{p:pipeline} tensor runs in one process; with {p:ray} the images "
                             "are decoded by Ray tasks on the PIL path (leave {p:pipeline} at pil or auto)",
                             prefix=False)
    batch_size = options.batch_size if options.batch_size > 0 else 64
    source = data.source if isinstance(data, ImageDataset) else data
    kind = DescriptorSpec().cache_kind()
    plan = plan_embedding(source, options, model.fingerprint, kind)
    keys, cache, todo = plan.keys, plan.cache, plan.todo
    seconds, computed = plan.seconds, 0
    info = Cluster(address)
    if todo:
        if cache:
            cache.prepare(len(todo), model.embed_dim)
        started, info.startup_seconds = connect(address, ray)
        try:
            computed, seconds = _run(ray, model, source, plan, options, batch_size, shard_batches, description,
                                     on_commit, info, seconds)
        finally:
            if started:
                ray.shutdown()
        threads = f" x {info.threads} threads" if info.devices == "cpu" else ""
        note(f"Ray ({address}{', started' if started else ''} in {info.startup_seconds:.1f} s): {info.actors} tower "
             f"actor(s) on {info.devices}{threads}, {len(plan.todo):,} images"
             + (f"; {info.restarts} shard(s) retried after a worker died" if info.restarts else ""))
    result = assemble(plan, source, model.embed_dim, computed, seconds)
    result.cluster = info
    return result


def _actors(ray, model: LoadedModel, options: RunOptions, info: Cluster) -> list:
    """The tower actors: one per GPU where the cluster has GPUs, else one CPU actor per node."""
    import torch

    gpus = int(ray.cluster_resources().get("GPU", 0))
    # nodes where a CPU actor can be placed (a head started with --num-cpus=0 takes none)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
    spec = dict(model.spec or {"model": model.name, "pretrained": model.pretrained})
    load = dict(precision=model.precision, backend=model.backend, channels_last=model.channels_last,
                cache_dir=str(options.cache_dir) if options.cache_dir else None)
    retry = dict(max_restarts=-1, max_task_retries=-1)
    if gpus and model.device.type == "cuda":
        info.actors, info.devices, info.threads = gpus, "cuda", 0
        cls = ray.remote(num_gpus=1, num_cpus=1, **retry)(_Tower)
        return [cls.remote(spec, {**load, "device": "cuda"}, model.fingerprint, 0) for _ in range(gpus)]
    # CPU: as many torch threads as a single-process run here (local), or the node's cores (a cluster)
    threads = torch.get_num_threads() if info.address == "local" else \
        max(1, int(min(n["Resources"].get("CPU", 1) for n in nodes)))
    info.actors, info.devices, info.threads = max(1, len(nodes)), "cpu", threads
    cls = ray.remote(num_cpus=1, scheduling_strategy="SPREAD", **retry)(_Tower)
    return [cls.remote(spec, {**load, "device": "cpu"}, model.fingerprint, threads) for _ in range(info.actors)]


def _run(ray, model, source, plan, options, batch_size, shard_batches, description, on_commit, info, seconds):
    keys, cache = plan.keys, plan.cache
    per = batch_size * shard_batches
    shards = [plan.todo[s:s + per] for s in range(0, len(plan.todo), per)]
    decode = ray.remote(num_cpus=1, max_retries=3)(_decode)
    src, prep = ray.put(source), ray.put(model.preprocess)
    actors = _actors(ray, model, options, info)
    pending: dict = {}  # future -> shard index
    nxt, committed, computed = 0, 0, 0
    dim = model.embed_dim
    pids: dict[int, set[int]] = {}

    def submit(i: int) -> None:
        refs = [decode.remote(src, shards[i][b:b + batch_size], prep, model.preprocess_cfg)
                for b in range(0, len(shards[i]), batch_size)]
        pending[actors[i % len(actors)].run.remote(refs)] = i

    t0 = time.time()
    with progress_bar(len(plan.todo), description) as bar:
        while nxt < len(shards) and len(pending) < IN_FLIGHT * len(actors):
            submit(nxt)
            nxt += 1
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            pos, emb, bad, shard_seconds, (pid, rss), decoders, (load, ready) = ray.get(done[0])
            info.model_load_seconds = max(info.model_load_seconds, load)
            info.ready_after_seconds = max(info.ready_after_seconds, ready - t0)
            info.actor_peak_rss[pid] = max(rss, info.actor_peak_rss.get(pid, 0))
            for p, r in decoders.items():
                info.decode_peak_rss[p] = max(r, info.decode_peak_rss.get(p, 0))
            pids.setdefault(i % len(actors), set()).add(pid)
            fails = {keys[p]: reason for p, reason in bad}
            shard_keys = [keys[p] for p in pos]
            if emb is not None:
                dim = emb.shape[1]
                plan.vectors.update(zip(shard_keys, emb))
            plan.key_failures.update(fails)
            if cache and (shard_keys or fails):
                cache.write(shard_keys, emb if emb is not None else np.zeros((0, dim), np.float32), fails,
                            shard_seconds)
            committed += 1
            computed += len(pos)
            seconds += shard_seconds
            bar.advance(len(pos) + len(bad))
            if on_commit is not None:
                on_commit(ShardDone(i, len(pos), len(bad), pid, committed))
            if nxt < len(shards):
                submit(nxt)
                nxt += 1
    info.restarts = sum(len(s) - 1 for s in pids.values())
    return computed, seconds
