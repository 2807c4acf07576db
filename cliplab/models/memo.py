"""Models known without loading them: what loading a model gave, remembered by what it was loaded from.

A study whose image and text embeddings are all in the cache needs no tower, only the model's fingerprint (the key of
those embeddings) and a few facts about it (name, embedding width, preprocessing, logit scale...). Loading a model
costs seconds (importing torch and open_clip, building the towers, hashing a checkpoint) just to learn them. So every
load by name (:func:`open_model`) writes a memo, ``<cache>/model-memo/<key>.json``: the facts of the loaded model, the
notes and warnings loading it gave, and the *signature* of every file it was loaded from (absolute path, size,
modification time in ns, inode; "missing" for a file that was not there). The next load of the same request
(model, pretrained, device, precision, backend, the options that change the model; and the versions of torch,
open_clip, OpenVINO, transformers and of cliplab's model-loading code) whose files all still have their signature
gets a :class:`LazyModel`: the facts at once, the real model loaded the first time anything needs it (an image or a
text the cache does not hold). Like git's index and the file-hash memo of images (:mod:`cliplab.data.filehash`), this
trusts that changing a file changes its size or mtime; any other change (a file replaced, touched, a model of the same
name trained into the cache, a package upgraded) makes the memo stale and the model is loaded, and memoised, again.

A lazy model loads with the backend the memo names (the one ``auto`` chose when it was memoised), and its fingerprint
must then be the memoised one: embeddings read from the cache under one key are never mixed with ones computed under
another. A model loaded otherwise (the memo is unusable: no cache folder, an ``hf:`` model, a GPU whose presence
needs torch to check; a ``--no-cache`` run, which computes every embedding anyway) is simply loaded.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from cliplab.errors import ModelLoadError
from cliplab.io import write_json_atomic
from cliplab.models.base import LoadedModel
from cliplab.progress import Progress, current, note, use, warn

log = logging.getLogger(__name__)

MEMO_DIR = "model-memo"
FORMAT = 1
PACKAGES = ("torch", "torchvision", "open_clip_torch", "openvino", "transformers", "safetensors")
FACTS = ("fingerprint", "weights_fingerprint", "name", "pretrained", "precision", "embed_dim", "preprocess_cfg",
         "source", "backend", "trained_on", "spec", "channels_last")


class DeviceName(str):
    """A device as a model known from its memo names it (``cpu``, ``cuda:1``): ``.type`` and ``.index`` like a
    ``torch.device``, and accepted wherever torch takes a device name."""

    @property
    def type(self) -> str:
        return self.split(":")[0]

    @property
    def index(self) -> int | None:
        _, _, i = self.partition(":")
        return int(i) if i else None


class LazyModel(LoadedModel):
    """A :class:`LoadedModel` known from its memo: the fingerprint and every fact at once, the towers, preprocessing
    and tokenizer loaded the first time one is needed (:attr:`loaded` says whether that happened)."""

    def __init__(self, facts: dict[str, Any], load: Callable[[], LoadedModel], forget: Callable[[], None]):
        for key in FACTS:
            setattr(self, key, facts[key])
        self.device = DeviceName(facts["device"])
        self._facts, self._load, self._forget = facts, load, forget
        self._real: LoadedModel | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._real is not None

    @property
    def architecture(self) -> dict | None:
        """backbone, patch_size and context_length (:func:`cliplab.models.facts.facts_of`), as memoised."""
        return self._facts.get("architecture")

    @property
    def text_layout(self) -> dict | None:
        """How the tokenizer lays out prompts (context_length, n_special, windows), as memoised (None: unknown)."""
        return self._facts.get("text_layout")

    def materialize(self) -> LoadedModel:
        """The real model, loaded now if it was not yet (the memo's backend; its fingerprint checked)."""
        with self._lock:
            if self._real is None:
                real = self._load()
                for key in ("fingerprint", "weights_fingerprint", "backend", "embed_dim"):
                    if getattr(real, key) != self._facts[key]:
                        self._forget()
                        raise ModelLoadError(
                            f"model {self.name} loaded now is not the one memoised ({key} {getattr(real, key)!r}, "
                            f"memoised {self._facts[key]!r}): a file it is loaded from changed during this run "
                            "without changing its size or modification time; the memo is removed, run again")
                self.device, self.channels_last = real.device, real.channels_last
                self._real = real
        return self._real

    # the heavy parts: loaded on first use
    model = property(lambda self: self.materialize().model)
    preprocess = property(lambda self: self.materialize().preprocess)
    tokenizer = property(lambda self: self.materialize().tokenizer)
    runtime = property(lambda self: self.materialize().runtime)

    # facts every result reads: from the memo until the model is loaded
    @property
    def num_params(self) -> int:
        return self._real.num_params if self._real is not None else int(self._facts["num_params"])

    @property
    def logit_scale(self) -> float:
        return self._real.logit_scale if self._real is not None else float(self._facts["logit_scale"])

    @property
    def logit_bias(self) -> float | None:
        return self._real.logit_bias if self._real is not None else self._facts["logit_bias"]

    @property
    def conv_tower(self) -> bool:
        return self._real.conv_tower if self._real is not None else bool(self._facts["conv_tower"])

    def text_backend(self, n: int) -> str:
        return self.materialize().text_backend(n)

    def cached_text_backends(self) -> list[str]:
        """The backends whose cached text embeddings may serve this model without loading it, first choice first:
        its own; then PyTorch's (the key of the fp32 weights, which a backend runs small text calls with) when the
        backend runs at the precision the PyTorch weights load at."""
        out = [self.backend]
        if self._facts.get("torch_precision") == self.precision and self.weights_fingerprint != self.fingerprint:
            out.append("")  # any other backend name: text_fingerprint gives the PyTorch weights' key
        return out

    def __eq__(self, other) -> bool:
        return self is other

    __hash__ = object.__hash__

    __repr__ = LoadedModel.__repr__  # the same as the loaded model's: loading is not something a user sees


# ---- what a load depends on ----

def signature(path: str) -> list:
    """``[absolute path, size, mtime_ns, inode]`` of a file, ``[absolute path, "missing"]`` when it is not there."""
    absolute = os.path.abspath(path)
    try:
        st = os.stat(absolute)
    except OSError:
        return [absolute, "missing"]
    return [absolute, st.st_size, st.st_mtime_ns, st.st_ino]


def dependencies(model: str, pretrained: str | None, cache_dir: Path) -> list[str] | None:
    """The files a load of ``model`` / ``pretrained`` reads (their signatures key the memo), or None for a model the
    memo does not cover (``hf:`` transformers models: what they load is the Hugging Face cache's business)."""
    from cliplab.models.local import find_local_model
    from cliplab.models.names import openai_alias

    if model.startswith("hf:"):
        return None
    model, pretrained, _ = openai_alias(model, pretrained)
    files: list[str] = []
    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:"):])
        if not folder.is_dir():
            return None
        files += sorted(str(p) for p in folder.iterdir() if p.is_file())
    elif model.endswith(".json"):
        files.append(model)
    elif not pretrained and not model.startswith("hf-hub:"):
        local = find_local_model(model, cache_dir)
        if local is not None:
            files += [str(local.config), str(local.checkpoint), str(local.folder / "meta.json")]
        if "/" not in model and ":" not in model:  # a model of this name trained into the cache later is used
            trained = cache_dir / "models" / model
            files += [str(trained / f"{model}.json"), str(trained / f"{model}.pt"), str(trained / "meta.json")]
    if pretrained:
        files.append(pretrained)  # a checkpoint file (a tag: a file of that name is "missing", and stays so)
    return files


@lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """What else decides a load's outcome: package versions and cliplab's own model-loading code (by signature)."""
    from importlib import metadata

    from cliplab.version import __version__

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    here = Path(__file__).resolve().parent
    code = [signature(str(p))[1:] for p in sorted([*here.glob("*.py"), *here.glob("backends/*.py")])]
    return {"format": FORMAT, "cliplab": __version__, "python": list(sys.version_info[:2]), "packages": versions,
            "code": hashlib.sha256(json.dumps(code).encode()).hexdigest()[:16],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def gpu_may_be_present() -> bool:
    """Whether ``device`` auto could mean a GPU here (telling for sure needs torch): an NVIDIA driver is loaded."""
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


def _request_key(request: dict) -> str:
    return hashlib.sha256(json.dumps([request, environment()], sort_keys=True, default=str).encode()).hexdigest()[:32]


def _path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / MEMO_DIR / f"{key}.json"


def _read(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            entry = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # a damaged memo is only a memo: the model is loaded
        log.warning("model memo %s unreadable (%s); loading the model", path, exc)
        return None
    return entry if isinstance(entry, dict) and entry.get("format") == FORMAT else None


def _forget(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


# ---- loading through the memo ----

class _Passing(Progress):
    """Passes what it is told on to ``inner``, keeping parameters unrendered (``{p:name}``) until ``inner`` spells
    them. A measurement note (``note(..., once=True)``) is always passed on and never kept: the load that took the
    measurement says it, no replay does."""

    def __init__(self, inner: Progress):
        super().__init__()
        self.inner = inner
        self.spell = lambda name: "{p:" + name + "}"
        self.bar = inner.bar

    def note_once(self, message: str) -> None:
        with use(self.inner):
            note(message, once=True)


class _Recording(_Passing):
    """Passes notes and warnings on to ``inner`` and keeps them unrendered (``{p:name}`` kept), to be said again by
    a load the memo answers."""

    def __init__(self, inner: Progress):
        super().__init__(inner)
        self.said = []

    def note(self, message: str) -> None:
        self.said.append(["note", message])
        with use(self.inner):
            note(message)

    def warn(self, message: str) -> None:
        self.said.append(["warn", message])
        with use(self.inner):
            warn(message)


class _Silenced(_Passing):
    """Drops the messages a load the memo answered said already; passes any other on."""

    def __init__(self, inner: Progress, said: list):
        super().__init__(inner)
        self.said = [tuple(m) for m in said]

    def note(self, message: str) -> None:
        if ("note", message) not in self.said:
            with use(self.inner):
                note(message)

    def warn(self, message: str) -> None:
        if ("warn", message) not in self.said:
            with use(self.inner):
                warn(message)


def _facts(loaded: LoadedModel, torch_precision: str) -> dict[str, Any]:
    from cliplab.embed.long_text import layout
    from cliplab.models.facts import facts_of

    facts = {key: getattr(loaded, key) for key in FACTS}
    lay = layout(loaded)
    known = facts_of(loaded)
    facts["architecture"] = {"backbone": known.backbone, "patch_size": known.patch_size,
                             "context_length": known.context_length}
    facts.update(device=str(loaded.device), num_params=int(loaded.num_params), logit_scale=loaded.logit_scale,
                 logit_bias=loaded.logit_bias, conv_tower=bool(loaded.conv_tower), torch_precision=torch_precision,
                 text_layout=None if lay is None else {"context_length": lay.context_length,
                                                       "n_special": lay.n_special, "windows": lay.pack is not None})
    return facts


def open_model(model: str, pretrained: str | None = None, *, device: str | None = None, precision: str | None = None,
               cache_dir: str | os.PathLike | None = None, backend: str | None = "auto",
               memo: bool = True, **extra) -> LoadedModel:
    """:func:`cliplab.models.loader.open_model`, answered from the memo when it can be (a :class:`LazyModel`), else
    loaded and memoised. ``extra``: the loader's other options (channels_last, compile, force_quick_gelu)."""
    from cliplab.paths import cache_dir_path

    cache = cache_dir_path(cache_dir)
    request = {"model": model, "pretrained": pretrained, "device": device, "precision": precision,
               "backend": backend or "auto",
               # how many images the run reads only steers --backend auto's first choice (recorded in the memo)
               "extra": {k: extra[k] for k in sorted(extra) if k != "images"}}
    files = dependencies(model, pretrained, cache) if memo else None
    if files is None or (device in (None, "auto") and gpu_may_be_present()):
        return _load(model, pretrained, device, precision, cache_dir, backend, extra)
    request["files"] = [os.path.abspath(f) for f in files]
    path = _path(cache, _request_key(request))
    before = [signature(f) for f in files]
    entry = _read(path)
    if entry is not None and entry.get("files") == before:
        for kind, message in entry["said"]:
            (warn if kind == "warn" else note)(message)
        facts, said = entry["facts"], entry["said"]

        def load() -> LoadedModel:
            with use(_Silenced(current(), said)):
                return _load(model, pretrained, device, precision, cache_dir, facts["backend"], extra)

        return LazyModel(facts, load, lambda: _forget(path))
    recording = _Recording(current())
    with use(recording):
        loaded = _load(model, pretrained, device, precision, cache_dir, backend, extra)
    if [signature(f) for f in files] == before:  # nothing changed while it loaded
        from cliplab.models import backends

        torch_precision = backends.get(loaded.backend).torch_precision(loaded.precision)
        try:
            write_json_atomic(path, {"format": FORMAT, "request": request, "files": before, "said": recording.said,
                                     "facts": _facts(loaded, torch_precision)})
        except OSError as exc:  # an unwritable cache: the next run loads the model again
            log.warning("model memo %s not written (%s)", path, exc)
    return loaded


def check_options(device: str | None, precision: str | None, backend: str | None,
                  cache_dir: str | os.PathLike | None = None) -> None:
    """:func:`cliplab.models.loader.check_options` (device, precision and backend checked before slow work), skipped
    when these options passed the same check before in this environment (it imports torch)."""
    from cliplab.paths import cache_dir_path

    def check(*options) -> None:
        from cliplab.models.loader import check_options as check_now

        check_now(*options)

    if device in (None, "auto") and gpu_may_be_present():
        return check(device, precision, backend)
    request = {"check": [device, precision, backend or "auto"]}
    path = _path(cache_dir_path(cache_dir), "options-" + _request_key(request))
    if _read(path) is not None:
        return None
    check(device, precision, backend)
    with contextlib.suppress(OSError):
        write_json_atomic(path, {"format": FORMAT, "request": request})
    return None


def _load(model, pretrained, device, precision, cache_dir, backend, extra) -> LoadedModel:
    from cliplab.models.loader import open_model as load

    return load(model, pretrained, device=device, precision=precision, cache_dir=cache_dir, backend=backend, **extra)


__all__ = ["open_model", "check_options", "LazyModel", "DeviceName", "dependencies", "signature"]
