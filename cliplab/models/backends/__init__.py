"""Backends: what runs a loaded model's towers for evaluation. Each backend is one module of this package that
registers a :class:`Backend` (its name, the devices and precisions it runs, how it keys the embeddings it computes,
and the :class:`Runtime` it attaches to a loaded model); :func:`resolve` makes the choice once, when the model is
loaded, and nothing outside this package names a backend. Adding a backend is one module here plus its tests.

Anything that needs gradients or the PyTorch modules themselves (training, forward hooks for descriptors) uses
``loaded.model`` whatever the backend.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from cliplab.errors import ModelParameterError

if TYPE_CHECKING:
    import torch

AUTO = "auto"


class Runtime:
    """What a backend attaches to one loaded model: the towers as that backend runs them."""

    name = "torch"

    def encode_images(self, loaded, pixels: "torch.Tensor") -> "torch.Tensor":
        """Unnormalised image embeddings as float32 on the CPU."""
        raise NotImplementedError

    def text_backend(self, n: int) -> str:
        """The name of the backend that runs a call with ``n`` texts (its key names the cache entries)."""
        return self.name

    def encode_texts(self, loaded, tokens, backend: str) -> "torch.Tensor":
        """Unnormalised text embeddings as float32 on the CPU, computed by ``backend``."""
        raise NotImplementedError

    def decode_workers(self, n_items: int, batch_size: int, cores: int) -> int:
        """DataLoader worker processes that decode images while this runtime runs the towers."""
        if n_items < 2 * batch_size:
            return 0
        return min(4, cores)


class Backend:
    """One way of running the towers. ``devices``: where it runs; ``precisions``: what it runs at."""

    name = ""
    devices: tuple[str, ...] = ("cpu", "cuda", "mps")
    precisions: tuple[str, ...] = ()

    def available(self) -> bool:
        return True

    def install_hint(self) -> str:
        return ""

    def auto_rank(self, device: "torch.device", compile: bool) -> int | None:
        """How strongly ``auto`` prefers this backend for ``device`` (higher first; None: never)."""
        return None

    def check_precision(self, precision: str, device: "torch.device") -> None:
        """Raise a :class:`~cliplab.errors.ParameterError` for a precision this backend cannot run on ``device``."""
        if precision not in self.precisions:
            raise ModelParameterError("precision", precision, f"the {self.name} backend runs "
                                      f"{' or '.join(self.precisions)}")

    def torch_precision(self, precision: str) -> str:
        """The precision the PyTorch modules are loaded at."""
        return precision

    def fingerprint(self, weights: str, precision: str) -> str:
        """The fingerprint of a model run by this backend (it keys every cached embedding)."""
        return weights

    def attach(self, loaded, cache_dir, precision: str, **options: Any) -> Runtime:
        """The runtime that runs ``loaded``'s towers."""
        raise NotImplementedError


_BACKENDS: dict[str, Backend] = {}
_FOUND = False


def register(backend: Backend) -> Backend:
    _BACKENDS[backend.name] = backend
    return backend


def _discover() -> dict[str, Backend]:
    global _FOUND
    if not _FOUND:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _FOUND = True
    return _BACKENDS


def names() -> tuple[str, ...]:
    """Every backend's name, and ``auto``."""
    return (AUTO, *sorted(_discover(), key=lambda n: (n != "torch", n)))


def get(name: str) -> Backend:
    return _discover()[name]


def resolve(name: str | None, device: "torch.device", compile: bool = False) -> Backend:
    """The backend that runs the towers: the one named, or for ``auto`` the available backend that ranks highest
    for ``device`` (``compile``: torch.compile asked for); raises for one that cannot run there."""
    name = name or AUTO
    backends = _discover()
    if name != AUTO and name not in backends:
        raise ModelParameterError("backend", name, f"choose one of {', '.join(names())}")
    if name == AUTO:
        ranked = [(b.auto_rank(device, compile), b.name) for b in backends.values() if b.available()]
        ranked = [(r, n) for r, n in ranked if r is not None]
        return backends[max(ranked)[1]]
    backend = backends[name]
    if device.type not in backend.devices:
        raise ModelParameterError("backend", name, f"the {name} backend runs the towers on "
                                  f"{' or '.join(backend.devices)}, not {device.type}; use {{p:backend}} torch there",
                                  quote=False)
    if not backend.available():
        raise ModelParameterError("backend", name, f"{name} is not installed: {backend.install_hint()}", quote=False)
    return backend


def measured_auto(candidate: Backend, loaded, batch_size: int | None, precision: str, cache_dir,
                  images: int | None) -> tuple[Backend, Runtime | None]:
    """For ``auto`` on the CPU: when ``candidate`` (what :func:`resolve` ranked first) is OpenVINO at fp32, the
    backend chosen by measurement (:mod:`.calibration`) and the runtime the measurement attached, if it is kept;
    else ``candidate`` as it is."""
    if candidate.name != "openvino" or precision != "fp32":
        return candidate, None
    from cliplab.models.backends.calibration import auto_backend

    name, runtime = auto_backend(loaded, batch_size, precision, cache_dir, images)
    return get(name), runtime


def bf16_hint(loaded, requested: str | None, precision: str, images: int | None, cache_dir,
              batch_size: int | None) -> None:
    """The note that ``--precision bf16`` is faster on this CPU (:func:`.calibration.bf16_note`), for a run that could
    use it (backend auto or openvino)."""
    if (requested or AUTO) in (AUTO, "openvino"):
        from cliplab.models.backends.calibration import bf16_note

        bf16_note(loaded, precision, images, cache_dir, batch_size)


__all__ = ["Backend", "Runtime", "register", "resolve", "get", "names", "measured_auto", "bf16_hint", "AUTO"]
