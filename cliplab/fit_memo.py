"""Results of deterministic fits on cached embeddings, reused when nothing they depend on changed.

A probe study fits dozens of classifiers on embeddings that come from the cache; rerunning it with the same images,
model and parameters fits them again to the same numbers. :class:`FitMemo` keeps each fit's result under a digest of
everything it depends on: the bytes, shapes and dtypes of the arrays it was given, its parameters, the source text of
the modules that compute it (any change to the solver is a new key, so a memo can never serve a result of other
code), and the numpy, torch and cliplab versions. A changed image, label, split, seed or parameter is a new key.

Each entry is ``<cache>/fits/<name>/<digest>.pkl``: a checksum line and the pickled result, written atomically. It is
read with an unpickler that builds only numpy arrays, plain containers and the classes of the modules that compute
it, and it is used only when the checksum holds; any other entry is a miss and is computed again (and rewritten).
The warnings a fit gave are kept with it and given again on a reuse, so a reused result says what a fresh one says.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np

from cliplab.threads import catch_warnings
from cliplab.io import atomic_path
from cliplab.version import __version__

FOLDER = "fits"


def _digest_part(h, part: Any) -> None:
    """Feed one key part to the hash: arrays by dtype, shape and bytes; the rest by its repr (parameters)."""
    if isinstance(part, np.ndarray):
        a = np.ascontiguousarray(part)
        h.update(f"ndarray {a.dtype.str} {a.shape}\0".encode())
        h.update(memoryview(a).cast("B"))
    elif isinstance(part, (list, tuple)):
        h.update(f"{type(part).__name__} {len(part)}\0".encode())
        for p in part:
            _digest_part(h, p)
    elif isinstance(part, dict):
        h.update(f"dict {len(part)}\0".encode())
        for k in sorted(part):
            _digest_part(h, k)
            _digest_part(h, part[k])
    elif part is None or isinstance(part, (bool, int, float, str)):
        h.update(f"{type(part).__name__} {part!r}\0".encode())
    else:
        raise TypeError(f"a fit memo key part must be arrays, numbers, strings or containers, not {type(part)!r}")


def _closure(modules: tuple[ModuleType, ...]) -> list[ModuleType]:
    """``modules`` and every cliplab module they use (modules, functions and classes in their globals), transitively:
    the solver's numbers depend on its helpers' code too (``tasks.metrics`` normalises the features and scores the
    fits)."""
    seen: dict[str, ModuleType] = {}
    todo = list(modules)
    while todo:
        m = todo.pop()
        if m.__name__ in seen:
            continue
        seen[m.__name__] = m
        for value in vars(m).values():
            name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
            if isinstance(name, str) and (name == "cliplab" or name.startswith("cliplab.")) and name not in seen:
                found = sys.modules.get(name)
                if found is not None and getattr(found, "__file__", None):
                    todo.append(found)
    return [seen[k] for k in sorted(seen)]


def _code(modules: tuple[ModuleType, ...]) -> str:
    """A digest of the code the results depend on: the source of ``modules`` and of the cliplab modules they use,
    and the versions of the libraries that compute with it."""
    import scipy
    import torch

    h = hashlib.sha256(f"numpy {np.__version__} scipy {scipy.__version__} torch {torch.__version__} "
                       f"cliplab {__version__}\0".encode())
    for m in _closure(modules):
        h.update(m.__name__.encode() + b"\0" + Path(m.__file__).read_bytes())
    return h.hexdigest()


# numpy's own reconstructors (arrays, dtypes, scalars), by module and name: nothing else of numpy is built
_NUMPY_NAMES = {(module, name) for name in ("_reconstruct", "scalar") for module in
                ("numpy.core.multiarray", "numpy._core.multiarray")} | {("numpy", "ndarray"), ("numpy", "dtype")} | {
    (module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")}  # protocol 5 arrays
_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "float", "int", "complex", "bool", "str", "bytes"}


class _Restricted(pickle.Unpickler):
    """Builds numpy arrays, plain containers and the dataclasses defined in the memo's own modules, nothing else: no
    dotted names (protocol 4 resolves ``module.attr.attr``), no functions, no modules, no other classes."""

    def __init__(self, data: bytes, modules: tuple[str, ...]):
        super().__init__(io.BytesIO(data))
        self.modules = modules

    def find_class(self, module: str, name: str):
        if "." not in name:
            if (module, name) in _NUMPY_NAMES or (module == "builtins" and name in _BUILTINS):
                return super().find_class(module, name)
            if module in self.modules:
                found = getattr(sys.modules.get(module), name, None)
                if isinstance(found, type) and dataclasses.is_dataclass(found) and found.__module__ == module:
                    return found
        raise pickle.UnpicklingError(f"{module}.{name} is not something a fit memo holds")


class FitMemo:
    """``memo.get(name, parts, compute)``: ``compute()``'s result for these parts, from the memo when it holds one.
    ``folder`` None: no memo (every call computes). ``modules``: the modules whose code the results depend on
    (their classes are the only ones a memo entry may build). ``hits``/``misses`` count this memo's calls."""

    def __init__(self, folder: str | Path | None, modules: tuple[ModuleType, ...]):
        self.folder = Path(folder) / FOLDER if folder is not None else None
        self.modules = modules
        self.hits = self.misses = 0
        self._code = None

    def key(self, name: str, parts: Any) -> str:
        if self._code is None:
            self._code = _code(self.modules)
        h = hashlib.sha256(f"{name}\0{self._code}\0".encode())
        _digest_part(h, parts)
        return h.hexdigest()

    def _read(self, path: Path):
        try:
            data = path.read_bytes()
            checksum, _, body = data.partition(b"\n")
            if hashlib.sha256(body).hexdigest().encode() != checksum:
                return None
            return _Restricted(body, tuple(m.__name__ for m in self.modules)).load()
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
            return None

    def get(self, name: str, parts: Any, compute: Callable[[], Any]) -> Any:
        """The result of ``compute()`` (and the warnings it gave, given again here) for these key parts."""
        path = self.folder / name / f"{self.key(name, parts)}.pkl" if self.folder is not None else None
        entry = self._read(path) if path is not None and path.is_file() else None
        if isinstance(entry, tuple) and len(entry) == 2:
            self.hits += 1
            result, given = entry
        else:
            self.misses += 1
            try:
                with catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    result = compute()
            except BaseException:  # the fit failed: what it said before failing is still said
                for w in caught:
                    warnings.warn(w.message, w.category, stacklevel=2)
                raise
            given = [(f"{w.category.__module__}:{w.category.__qualname__}", str(w.message)) for w in caught]
            if path is not None:
                body = pickle.dumps((result, given), protocol=pickle.HIGHEST_PROTOCOL)
                try:
                    with atomic_path(path) as tmp:
                        tmp.write_bytes(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
                except OSError as exc:  # a memo that cannot be written costs a refit next time, never this run
                    warnings.warn(f"fit memo not written ({exc}); the next run fits again", RuntimeWarning,
                                  stacklevel=2)
        for category, message in given:
            warnings.warn(message, _category(category), stacklevel=2)
        return result


def _category(name: str) -> type[Warning]:
    """The warning class named ``module:qualname`` (UserWarning when it is gone)."""
    import importlib

    module, _, qualname = name.partition(":")
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return UserWarning
    return found if isinstance(found, type) and issubclass(found, Warning) else UserWarning
