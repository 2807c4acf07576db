"""The only code that runs the towers for evaluation: batched, cached, resumable, tolerant of bad files."""
from __future__ import annotations

import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from cliplab.data.base import ImageDataset
from cliplab.data.filehash import MEMO_NAME, file_hash_memo
from cliplab.data.imageio import BadImage, check_resize
from cliplab.data.sources import FileSource, ImageSource, SubsetSource
from cliplab.embed.cache import EmbeddingCache
from cliplab.embed.descriptors import DescriptorSpec, make_encoder
from cliplab.errors import DatasetError, ParameterError

if TYPE_CHECKING:  # torch and the towers load only when something is computed
    from cliplab.models.base import LoadedModel
from cliplab.inputs import RunOptions, as_options
from cliplab.progress import progress_bar


FLUSH_SECONDS = 30.0  # a shard is written at least this often, so a kill loses at most ~30 s of work
PREFETCH_BATCHES = 2  # decoded in a thread ahead of the tower when no worker process decodes (0: decode in turn)


@dataclass
class EmbeddingResult:
    """Embeddings of the images that could be used, in dataset order.

    ``embeddings[j]`` belongs to dataset item ``indices[j]``; ``failures`` lists ``(index, id, reason)`` of the
    items that were skipped. Embeddings are raw (not L2-normalised) float32.
    """

    embeddings: np.ndarray
    indices: np.ndarray
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    computed: int = 0  # rows computed in this run (the rest came from the cache)
    seconds: float = 0.0  # compute seconds behind these rows (this run's, or recorded in the cache)
    cluster: object = None  # how Ray ran it (cliplab.embed.distributed.Cluster); None for a single-process run

    @property
    def images_per_second(self) -> float:
        return float(len(self.indices) / self.seconds) if self.seconds > 0 else float("nan")


PIPELINES = ("pil", "tensor", "auto")


class _Preprocessed:
    """The images to compute, preprocessed one by one (a map-style dataset for torch's DataLoader)."""

    def __init__(self, source: ImageSource, positions: list[int], preprocess, preprocess_cfg: dict):
        self.source, self.positions, self.preprocess, self.cfg = source, positions, preprocess, preprocess_cfg

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, j: int):
        pos = self.positions[j]
        try:
            img = self.source.load(pos)
            check_resize(img.width, img.height, self.cfg)  # before the resize allocates
            return pos, self.preprocess(img), None
        except BadImage as exc:
            return pos, None, str(exc)
        except Exception as exc:  # a transform failing on an odd image must not end the run
            return pos, None, f"cannot preprocess image ({type(exc).__name__}: {exc})"


def _collate(items):
    import torch

    ok = [(p, t) for p, t, r in items if t is not None]
    bad = [(p, r) for p, t, r in items if t is None]
    pos = [p for p, _ in ok]
    pixels = torch.stack([t for _, t in ok]) if ok else None
    return pos, pixels, bad


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_MASK = getattr(signal, "pthread_sigmask", None)  # POSIX
_QUIET_ERRORS = (BrokenPipeError, ConnectionResetError, EOFError)


def _quiet_worker(worker_id: int) -> None:
    """A DataLoader worker leaves SIGINT and SIGTERM to the main process, which stops it: a Ctrl-C reaches every
    process of the terminal's group, and each worker printed its own KeyboardInterrupt traceback. Its threads say
    nothing when the main process has stopped reading (multiprocessing's resource sharer, which hands tensors' file
    descriptors to it, printed a BrokenPipeError traceback through sys.excepthook)."""
    import sys

    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if _MASK:
        _MASK(signal.SIG_UNBLOCK, STOP_SIGNALS)  # held back while it was started (_batches)
    thread_hook, process_hook = threading.excepthook, sys.excepthook

    def quiet_thread(args):
        if not issubclass(args.exc_type, _QUIET_ERRORS):
            thread_hook(args)

    def quiet(exc_type, exc, tb):
        if not issubclass(exc_type, _QUIET_ERRORS):
            process_hook(exc_type, exc, tb)

    threading.excepthook, sys.excepthook = quiet_thread, quiet


def _batches(loader):
    """``iter(loader)``, with SIGINT and SIGTERM held back while its worker processes start: a forked worker inherits
    the mask, so no signal reaches it before it ignores them (a signal held back reaches this process right after)."""
    if not loader.num_workers or not _MASK:
        return iter(loader)
    previous = _MASK(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return iter(loader)
    finally:
        _MASK(signal.SIG_SETMASK, previous)


def prefetched(batches, depth: int = PREFETCH_BATCHES):
    """Iterate ``batches`` in a background thread, up to ``depth`` batches ahead of the consumer: with decoding in
    this process, the next batch is decoded and preprocessed while the tower runs the current one (PIL's decoders
    and resize and torch's ops release the GIL). Same batches, same order; an exception raised by ``batches`` is
    raised here; when the consumer stops early (an error, Ctrl-C, ``close()``) the thread stops after the batch it
    is on. ``depth`` 0: iterate in this thread."""
    if depth <= 0:
        yield from batches
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for batch in batches:
                if not put((batch, None)):
                    return
            put((end, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((None, exc))

    thread = threading.Thread(target=produce, name="cliplab-decode", daemon=True)
    thread.start()
    try:
        while True:
            batch, exc = slots.get()
            if exc is not None:
                raise exc
            if batch is end:
                return
            yield batch
    finally:
        stop.set()
        thread.join()


def default_workers(n_items: int, batch_size: int, runtime, cores: int | None = None) -> int:
    """DataLoader worker processes for decoding, as the model's backend runtime judges (none for a few batches)."""
    return runtime.decode_workers(n_items, batch_size, cores or os.cpu_count() or 1)


@dataclass
class Plan:
    """What an embedding run starts from: every item's key, the rows the cache already holds (``cached[i]`` where
    ``found[i]``), the positions to compute (the first occurrence of each key neither cached nor known to fail, in
    dataset order) and the failures known so far (by position; ``key_failures``: by key, for what this run finds
    failing). ``vectors``: the rows this run computes, by key."""
    keys: list
    cache: EmbeddingCache | None
    todo: list[int]
    vectors: dict[str, np.ndarray]
    key_failures: dict[str, str]
    failures: dict[int, str]
    seconds: float
    cached: np.ndarray | None = None
    found: np.ndarray | None = None


def plan_embedding(source: ImageSource, options: RunOptions, fingerprint: str, kind: str) -> Plan:
    """The keys of ``source``, looked up in the cache of ``fingerprint``/``kind``: a :class:`Plan` (shared by the
    single-process engine and the Ray one, so both compute the same items and key them the same way)."""
    root = options.cache_dir if options.use_cache else None
    cache = EmbeddingCache(root, fingerprint, kind) if root else None
    with file_hash_memo(root / MEMO_NAME if root else None):  # unchanged files are not read again
        keys = source.keys()
    failures: dict[int, str] = dict(source.key_errors)
    hits = cache.lookup_rows(keys) if cache else None
    found = hits.found if hits else np.zeros(len(keys), dtype=bool)
    if hits:
        failures.update(hits.failures)
    todo, seen = [], set()
    for i in np.flatnonzero(~found).tolist():  # a warm run visits nothing here
        k = keys[i]
        if k is None or i in failures or k in seen:
            continue
        seen.add(k)
        todo.append(i)
    return Plan(keys, cache, todo, {}, {}, failures, hits.seconds if hits else 0.0,
                hits.rows if hits else None, found)


def assemble(plan: Plan, source: ImageSource, dim: int, computed: int, seconds: float) -> EmbeddingResult:
    """The :class:`EmbeddingResult` of a run, in dataset order, from the plan's cached rows, the rows computed and
    the failures (filled in). A run served whole by the cache returns the cached matrix itself (no copy)."""
    keys, failures = plan.keys, plan.failures
    n = len(keys)
    have = plan.found.copy() if plan.found is not None else np.zeros(n, dtype=bool)
    at, rows = [], []
    for i in np.flatnonzero(~have).tolist():
        k = keys[i]
        if k is None or i in failures:
            continue
        row = plan.vectors.get(k)
        if row is not None:
            at.append(i)
            rows.append(row)
        else:
            failures[i] = plan.key_failures.get(k, "not embedded")
    table = plan.cached
    if rows:
        block = np.stack(rows).astype(np.float32, copy=False)
        if table is None:
            table = np.empty((n, block.shape[1]), dtype=np.float32)
        table[at] = block
        have[at] = True
    indices = np.flatnonzero(have)
    if table is None or not len(indices):
        emb = np.zeros((0, table.shape[1] if table is not None else dim), np.float32)
    else:
        emb = table if len(indices) == n else table[indices]
    fail_list = [(i, source.id(i), failures[i]) for i in sorted(failures)]
    if not len(indices) and fail_list:
        _, first, reason = fail_list[0]
        raise DatasetError(f"none of the {len(fail_list)} images could be read (e.g. {first}: {reason}); check the "
                           "files or the dataset path")
    return EmbeddingResult(embeddings=emb, indices=indices.astype(np.int64, copy=False), failures=fail_list,
                           computed=computed, seconds=seconds)


def embed_images(model: LoadedModel, data: ImageDataset | ImageSource, options: RunOptions | str | Path | None = None,
                 *, shard_batches: int = 16, flush_seconds: float = FLUSH_SECONDS,
                 description: str = "embedding images", descriptor=None, clock=time.monotonic,
                 **changes) -> EmbeddingResult:
    """Embed every image of ``data`` (a dataset or an image source), reusing and extending the disk cache:
    an :class:`EmbeddingResult`. ``options``: the run's :class:`~cliplab.inputs.RunOptions` (batch size, workers,
    cache on/off, pipeline), or a cache folder with the default options; ``changes`` replace some of them
    (``batch_size=16``).

    Work is written to the cache in shards, each atomically, after ``shard_batches`` batches or when the next
    batch would end more than ``flush_seconds`` after the last write (whichever comes first), so a kill loses at
    most about that much work (or one batch, if a batch takes longer) even with a slow model. Items are processed
    in dataset order and shards end on batch boundaries, so a resumed run forms exactly the batches an
    uninterrupted run would have, and gives bit-identical embeddings. ``clock`` is for tests.
    """
    options = as_options(options, **changes)
    batch_size, num_workers = options.batch_size, options.workers
    if batch_size <= 0:
        batch_size = auto_batch_size(model)
    descriptor = descriptor or DescriptorSpec()
    encode = make_encoder(model, descriptor)
    source = data.source if isinstance(data, ImageDataset) else data
    use_tensor = _use_tensor_pipeline(options.pipeline, model)
    kind = descriptor.cache_kind() + ("+tensor" if use_tensor else "")  # the two pipelines differ slightly
    plan = plan_embedding(source, options, model.fingerprint, kind)
    cache, keys, todo = plan.cache, plan.keys, plan.todo
    vectors, key_failures = plan.vectors, plan.key_failures

    seconds = plan.seconds
    computed = 0
    if todo and cache:  # before any image is embedded: a cache that cannot take the work fails now, not at the end
        cache.prepare(len(todo), model.embed_dim)
    if todo:
        if use_tensor:
            loader = _tensor_batches(source, todo, model, batch_size)
        else:
            workers = default_workers(len(todo), batch_size, model.runtime) if num_workers is None else num_workers
            from torch.utils.data import DataLoader

            loader = DataLoader(
                _Preprocessed(source, todo, model.preprocess, model.preprocess_cfg), batch_size=batch_size, shuffle=False,
                num_workers=workers, collate_fn=_collate, pin_memory=model.device.type == "cuda",
                prefetch_factor=4 if workers > 0 else None, persistent_workers=False,
                worker_init_fn=_quiet_worker if workers > 0 else None,
            )
        shard_keys: list[str] = []
        shard_rows: list[np.ndarray] = []
        shard_fail: dict[str, str] = {}
        shard_seconds = 0.0
        batches_in_shard = 0
        dim = model.embed_dim

        def flush():
            nonlocal shard_keys, shard_rows, shard_fail, shard_seconds, batches_in_shard
            if cache and (shard_keys or shard_fail):
                emb = np.concatenate(shard_rows) if shard_rows else np.zeros((0, dim), np.float32)
                cache.write(shard_keys, emb, shard_fail, shard_seconds)
            shard_keys, shard_rows, shard_fail, shard_seconds, batches_in_shard = [], [], {}, 0.0, 0

        with ExitStack() as stack, progress_bar(len(todo), description) as bar:
            tick = time.perf_counter()
            last_flush = batch_start = clock()
            batches = loader if use_tensor else _batches(loader)
            if not use_tensor and not loader.num_workers:
                batches = prefetched(batches, PREFETCH_BATCHES)
            stack.callback(getattr(batches, "close", lambda: None))  # its threads stop when this run does
            for pos, pixels, bad in batches:
                for p, reason in bad:
                    key_failures[keys[p]] = reason
                    shard_fail[keys[p]] = reason
                if pixels is not None:
                    out = encode(pixels)
                    dim = out.shape[1]
                    for p, row in zip(pos, out):
                        vectors[keys[p]] = row
                        shard_keys.append(keys[p])
                    shard_rows.append(out)
                    computed += len(pos)
                now = time.perf_counter()
                shard_seconds += now - tick
                tick = now
                batches_in_shard += 1
                bar.advance(len(pos) + len(bad))
                t = clock()
                batch_time, batch_start = t - batch_start, t
                # flush now if the next batch would end past flush_seconds: a kill then loses <= flush_seconds of
                # work (or one batch, when a single batch takes longer than that)
                if batches_in_shard >= shard_batches or t - last_flush + batch_time >= flush_seconds:
                    seconds += shard_seconds
                    flush()
                    last_flush = batch_start = clock()
            seconds += shard_seconds
            flush()

    return assemble(plan, source, model.embed_dim, computed, seconds)


def auto_batch_size(model: LoadedModel, fraction: float = 0.5, cap: int = 1024, cpu_default: int = 64) -> int:
    """Images per batch from free GPU memory: measure the peak memory of a 16-image forward pass and fill
    ``fraction`` of what is free (at most ``cap``). On CPU: ``cpu_default``."""
    if model.device.type != "cuda":
        return cpu_default
    import torch

    dev = model.device
    torch.cuda.synchronize(dev)
    free, _ = torch.cuda.mem_get_info(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    probe = 16
    model.encode_images(torch.zeros(probe, 3, *model.image_size))
    per_image = max(1.0, (torch.cuda.max_memory_allocated(dev) - base) / probe)
    return int(max(1, min(cap, fraction * free // per_image)))


def _use_tensor_pipeline(pipeline: str, model: LoadedModel) -> bool:
    if pipeline not in PIPELINES:
        raise ParameterError("pipeline", pipeline, f"choose one of {', '.join(PIPELINES)}")
    if pipeline == "pil" or model.source != "open_clip":
        return False
    from cliplab.embed.tensor_pipeline import TensorPreprocess

    ok = TensorPreprocess.from_cfg(model.preprocess_cfg).supported()
    if pipeline == "tensor" and not ok:
        raise ParameterError("pipeline", pipeline, "{p:pipeline} tensor does not support this model's preprocessing "
                             f"{model.preprocess_cfg}", prefix=False)
    return ok and (pipeline == "tensor" or model.device.type == "cuda")


def _file_path(source: ImageSource, i: int) -> str | None:
    if isinstance(source, FileSource):
        return source.paths[i]
    if isinstance(source, SubsetSource):
        return _file_path(source.base, source.indices[i])
    return None


def _uint8(source: ImageSource, i: int):
    """A pre-decoded uint8 tensor for item i when the source holds its pixels in memory, else None."""
    if isinstance(source, SubsetSource):
        return _uint8(source.base, source.indices[i])
    loader = getattr(source, "tensor_loader", None)
    return loader(i) if loader is not None else None


def _tensor_batches(source: ImageSource, todo: list[int], model: LoadedModel, batch_size: int):
    """(positions, pixels, failures) batches like the DataLoader's, from the tensor pipeline: file bytes read in
    threads (the next batch's while the model runs), their headers checked as the PIL path checks them, decoded
    (JPEG on the GPU when the model is on CUDA), resized/cropped/normalised on the model's device. What the tensor
    decoders do not read exactly as the PIL path does (see tensor_pipeline's docstring) goes through the PIL path;
    unreadable files become failures with the PIL path's reasons."""
    import torch
    import torchvision.transforms.v2.functional as TF

    from cliplab.embed.tensor_pipeline import PIL_PATH, TensorPreprocess, decode_batch, header, read_bytes

    prep = TensorPreprocess.from_cfg(model.preprocess_cfg)
    cfg = model.preprocess_cfg
    chunks = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]

    def read(chunk):
        paths = [_file_path(source, p) for p in chunk]
        datas = read_bytes([p for p in paths if p is not None])
        it = iter(datas)
        return [next(it) if p is not None else None for p in paths]

    def checked(d):
        """header(d) with the resize checked too: (how, None), or (None, the reason it is skipped)."""
        try:
            width, height, how = header(d)
            if how != PIL_PATH:
                check_resize(width, height, cfg)
            return how, None
        except BadImage as exc:
            return None, str(exc)

    def reference(p):
        """Item p through the PIL path (the reference): a uint8 tensor, or BadImage with the reason."""
        img = source.load(p)
        check_resize(img.width, img.height, cfg)
        return TF.pil_to_tensor(img)

    with ThreadPoolExecutor(max_workers=1) as prefetch:
        nxt = prefetch.submit(read, chunks[0]) if chunks else None
        for ci, chunk in enumerate(chunks):
            datas = nxt.result()
            nxt = prefetch.submit(read, chunks[ci + 1]) if ci + 1 < len(chunks) else None
            verdicts = [checked(d) if isinstance(d, torch.Tensor) else (PIL_PATH, None) for d in datas]
            files = [i for i, (d, (how, _)) in enumerate(zip(datas, verdicts)) if isinstance(d, torch.Tensor) and how]
            decoded = dict(zip(files, decode_batch([datas[i] for i in files], model.device,
                                                   [verdicts[i][0] for i in files])))
            images, pos, bad = [], [], []
            for i, p in enumerate(chunk):
                how, reason = verdicts[i]
                if reason is not None:
                    bad.append((p, reason))
                    continue
                im = decoded.get(i) if i in decoded else (_uint8(source, p) if datas[i] is None else None)
                try:
                    if isinstance(im, torch.Tensor) and im.numel() > 0:
                        check_resize(im.shape[-1], im.shape[-2], cfg)
                    else:
                        im = reference(p)
                    images.append(im)
                    pos.append(p)
                except BadImage as exc:
                    bad.append((p, str(exc)))
                except Exception as exc:  # noqa: BLE001 - one odd file must not end the run
                    bad.append((p, f"cannot preprocess image ({type(exc).__name__}: {exc})"))  # as the PIL path says
            yield pos, (prep.batch(images, model.device) if images else None), bad
