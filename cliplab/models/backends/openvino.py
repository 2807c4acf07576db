"""The OpenVINO backend for the CPU: each tower of a loaded model traced (``torch.export`` when tracing fails),
converted with OpenVINO, checked against PyTorch and compiled for the CPU on first use; the converted models are
cached on disk, so only the first run converts.

Each converted model is written with a checksum of its .xml and .bin (``<name>.sum``, committed before the .xml, which
marks a complete model). A cached model is used only when its files match that checksum and it gives PyTorch's
embeddings on a few inputs (checked at every load, as right after a conversion); one that does not is moved into
``<cache>/quarantine/`` (never deleted, reported in one warning) and converted again. A model converted by an older
cliplab has no checksum: it is checked against PyTorch, and its checksum is written once it agrees.

Only inference goes through OpenVINO (``LoadedModel.encode_images`` / ``encode_texts``). Anything that needs the
PyTorch modules (gradients, training, forward hooks for MAC/R-MAC/GeM descriptors) keeps using ``loaded.model``.
A tower OpenVINO cannot convert stays on PyTorch, with a warning that says so.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from typing import Any

import numpy as np

from cliplab.threads import catch_warnings
from cliplab.io import hash_json, write_text_atomic
from cliplab.models.backends import Backend, Runtime, register
from cliplab.models.backends.pytorch import TorchRuntime
from cliplab.progress import warn
from cliplab.quarantine import move_aside, record

# OpenVINO's CPU inference precision for each cliplab precision: fp32 is exact (the default); bf16 is opt-in.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def available() -> bool:
    """Whether OpenVINO is installed."""
    return importlib.util.find_spec("openvino") is not None


def version() -> str:
    import openvino as ov  # optional dependency

    return ov.__version__.split("-")[0]


def _tower(model, method: str):
    """One tower of a CLIP model as a module of its own (what ``torch.export`` takes): ``encode_image`` or
    ``encode_text``."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.method = model, method

        def forward(self, inputs):
            return getattr(self.model, self.method)(inputs)

    return Tower()


def cache_path(cache_dir: Path, fingerprint: str, tower: str, shape: tuple[int, ...]) -> Path:
    """Where a converted tower is kept: keyed by the model's weights fingerprint, the tower, its input shape policy
    (dynamic batch, fixed size) and the OpenVINO version."""
    dims = "x".join(str(d) for d in shape)
    return Path(cache_dir) / "openvino" / f"{fingerprint}-{tower}-dynbatch-{dims}-ov{version()}.xml"


def _traced(module, example):
    """TorchScript trace of ``module``: OpenVINO converts it several times faster than a ``torch.export`` program,
    whose ``run_decompositions`` dominates (docs/benchmarks.md)."""
    import torch

    with torch.no_grad(), catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python values: the converted tower is checked below
        return torch.jit.trace(module.eval(), example, check_trace=False)


def _exported(module, example):
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(module.eval(), (example,), dynamic_shapes=({0: batch},))


def _convert(module, example, path: Path):
    """Convert ``module`` with OpenVINO for a dynamic batch and the fixed per-item shape of ``example``, and save it
    to ``path`` (atomically). The TorchScript route first (fast); ``torch.export`` when tracing fails."""
    import openvino as ov  # optional dependency

    # under the warnings lock: the converters' own catch_warnings must not interleave with an image decoded in the
    # thread beside (cliplab.threads)
    with catch_warnings():
        try:
            converted = ov.convert_model(_traced(module, example), example_input=example)
        except Exception:  # noqa: BLE001 - the slower exporter handles what tracing cannot
            converted = ov.convert_model(_exported(module, example))
    converted.reshape([-1, *example.shape[1:]])
    tmp = Path(tempfile.mkdtemp(dir=_mkdir(path.parent), prefix=f".{path.stem}.", suffix=".tmp"))
    try:  # the weights and the checksum first, then the .xml: a cached model is complete when its .xml exists
        ov.save_model(converted, str(tmp / "tower.xml"), compress_to_fp16=False)
        (tmp / "tower.sum").write_text(json.dumps(_sums(tmp / "tower.xml")) + "\n")
        for suffix in (".bin", ".sum"):
            os.replace((tmp / "tower").with_suffix(suffix), path.with_suffix(suffix))
        os.replace(tmp / "tower.xml", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return converted


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cached(path: Path) -> bool:
    """Whether the converted model at ``path`` is complete (its weights and its .xml, written last)."""
    return path.is_file() and path.with_suffix(".bin").is_file()


def _files(path: Path) -> list[Path]:
    """The files of the converted model at ``path``: its .xml, .bin and checksum."""
    return [path, path.with_suffix(".bin"), path.with_suffix(".sum")]


def _sums(xml: Path) -> dict[str, str]:
    """SHA-256 of the .xml and .bin of a converted model."""
    out = {}
    for part in ("xml", "bin"):
        with open(xml.with_suffix(f".{part}"), "rb") as fh:
            out[part] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


class DamagedModel(Exception):
    """A cached converted model that cannot be used: the message says why."""


def _verify_files(path: Path) -> bool:
    """Whether the cached model at ``path`` matches its checksum: True; False when it has none (converted by an older
    cliplab); raises :class:`DamagedModel` when its files are missing, unreadable or do not match."""
    if not path.is_file():
        raise DamagedModel("its .xml is not a file")
    if not path.with_suffix(".bin").is_file():
        raise DamagedModel("its weights (.bin) are missing")
    sums = path.with_suffix(".sum")
    if not os.path.lexists(sums):
        return False
    try:
        stored = json.loads(sums.read_text())
        got = _sums(path)
    except (OSError, ValueError) as exc:
        raise DamagedModel(f"its checksum cannot be read ({type(exc).__name__}: {exc})") from None
    bad = [f".{part}" for part in ("xml", "bin") if not isinstance(stored, dict) or stored.get(part) != got[part]]
    if bad:
        raise DamagedModel(f"checksum mismatch ({' and '.join(bad)}): the files are not what was converted")
    return True


def _seal(path: Path) -> None:
    """Write the checksum of a cached model that has none (converted by an older cliplab) once it agreed with
    PyTorch, so later damage is caught (best effort: a cache that cannot take it is checked against PyTorch again)."""
    with contextlib.suppress(OSError):
        write_text_atomic(path.with_suffix(".sum"), json.dumps(_sums(path)) + "\n")


# Texts in one call from which the text tower is converted (when it is not converted yet): converting it costs more
# than PyTorch takes for fewer texts (break-even measured in docs/benchmarks.md). Below it, and for transformers'
# text tower, texts run on PyTorch and are cached under PyTorch's key (LoadedModel.text_backend).
TEXT_CONVERT_MIN = 256

# A freshly converted tower must give the PyTorch tower's embeddings on a batch of another size than it was traced
# with (this catches a batch size baked into the graph): cosine at least this, per inference precision.
MIN_COSINE = {"f32": 0.99999, "bf16": 0.999}

# A tower read from the cache is checked the same way on the first LOAD_PROBE of those inputs (its batch handling was
# checked at conversion; this catches damaged weights, a runtime that compiles it differently on this CPU, or a
# PyTorch model that changed since): one PyTorch forward of a small batch per load (docs/reliability.md).
LOAD_PROBE = 2


def _check(compiled, module, probe, precision: str) -> None:
    import torch

    with torch.inference_mode():
        ref = module(probe).float()
    out = torch.from_numpy(np.asarray(compiled(probe.numpy())[0], dtype=np.float32))
    cos = float(torch.nn.functional.cosine_similarity(ref.double(), out.double()).min()) if out.shape == ref.shape \
        else float("nan")
    if not cos >= MIN_COSINE[precision]:
        raise RuntimeError(f"the converted tower disagrees with PyTorch (min cosine {cos:.9f} on "
                           f"{len(probe)} inputs)")


class OpenVINOTowers(Runtime):
    """The towers of one loaded model on OpenVINO, each converted (or read from the cache) and compiled on first use,
    so a study that needs one tower pays for one. ``image`` / ``text`` are the compiled models, or None for a tower
    that stays on PyTorch (it could not be converted: the warning says why). ``converted`` lists the towers this
    process converted (not read from the cache)."""

    name = "openvino"

    def __init__(self, loaded, cache_dir: Path, precision: str = "fp32", threads: int = 0):
        import torch

        self.model_name, self.weights = loaded.name, loaded.weights_fingerprint
        self.cache_dir, self.precision = Path(cache_dir), INFERENCE_PRECISION[precision]
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.precision}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        h, w = loaded.image_size
        self._jobs = {"image": (_tower(loaded.model, "encode_image"), torch.zeros(2, 3, h, w),
                                torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(0)))}
        if loaded.source == "open_clip":  # transformers' text tower takes a dict of tensors: it stays on PyTorch
            self._jobs["text"] = (_tower(loaded.model, "encode_text"), loaded.tokenizer(["a photo of a cat", "a dog"]),
                                  loaded.tokenizer(["a red circle", "x", "a large blue square in the top left"]))
        self._compiled: dict[str, object] = {}
        self.converted: list[str] = []
        self._torch = TorchRuntime()  # a tower OpenVINO could not convert, and few texts, run on PyTorch
        _write_meta(self.cache_dir, self.weights, loaded, precision)

    @property
    def image(self):
        return self._tower("image")

    def runs_texts(self, n: int) -> bool:
        """Whether a call with ``n`` texts runs on OpenVINO: when the text tower is compiled or cached already, at bf16
        (an explicit request), or when ``n`` is large enough to pay for the conversion (``TEXT_CONVERT_MIN``)."""
        if "text" in self._compiled:
            return self._compiled["text"] is not None
        if "text" not in self._jobs:
            return False
        return (_cached(self._path("text")) or self.precision != "f32" or n >= TEXT_CONVERT_MIN) and self.text is not None

    @property
    def text(self):
        return self._tower("text")

    def _tower(self, tower: str):
        if tower not in self._compiled:
            self._compiled[tower] = self._compile(tower) if tower in self._jobs else None
        return self._compiled[tower]

    def _path(self, tower: str) -> Path:
        """Where the converted ``tower`` is cached (for a tower not compiled yet)."""
        _, example, _ = self._jobs[tower]
        return cache_path(self.cache_dir, self.weights, tower, tuple(example.shape[1:]))

    def _compile(self, tower: str):
        path = self._path(tower)
        module, example, probe = self._jobs.pop(tower)
        if os.path.lexists(path):
            compiled = self._from_cache(tower, path, module, probe)
            if compiled is not None:
                return compiled
        fresh = False
        try:
            model = _convert(module, example, path)
            fresh = True
            compiled = _core().compile_model(model, "CPU", self.config)
            _check(compiled, module, probe, self.precision)
        except Exception as exc:  # noqa: BLE001 - any conversion failure: this tower stays on PyTorch
            warn(f"OpenVINO could not convert the {tower} tower of {self.model_name} ({type(exc).__name__}: "
                 f"{_first_line(exc)}); it runs on PyTorch")
            if fresh:  # a converted model that failed the check is not kept for the next run
                for file in _files(path):
                    with contextlib.suppress(OSError):
                        file.unlink(missing_ok=True)
            return None
        self.converted.append(tower)
        return compiled

    def _from_cache(self, tower: str, path: Path, module, probe):
        """The cached converted ``tower``, compiled once its files match their checksum and it agrees with PyTorch on
        a few inputs; None after moving one that does not into the quarantine (it is then converted again)."""
        try:
            sealed = _verify_files(path)
            compiled = _core().compile_model(_core().read_model(str(path)), "CPU", self.config)
            _check(compiled, module, probe[:LOAD_PROBE], self.precision)
        except Exception as exc:  # noqa: BLE001 - whatever a damaged model makes OpenVINO raise
            why = str(exc) if isinstance(exc, DamagedModel) else f"{type(exc).__name__}: {_first_line(exc)}"
            record([move_aside(self.cache_dir, _files(path), f"converted OpenVINO {tower} tower", why)])
            return None
        if not sealed:
            _seal(path)
        return compiled

    def encode_images(self, loaded, pixels):
        import torch

        if self.image is None:
            return self._torch.encode_images(loaded, pixels)
        out = self.image(pixels.detach().cpu().float().contiguous().numpy())[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32).copy())

    def text_backend(self, n: int) -> str:
        """OpenVINO when the text tower is converted already or the call pays for converting it (see
        :meth:`runs_texts`), else PyTorch (its texts are cached under PyTorch's key)."""
        return self.name if self.runs_texts(n) else self._torch.name

    def encode_texts(self, loaded, tokens, backend: str):
        import torch

        if backend != self.name:
            return self._torch.encode_texts(loaded, tokens, backend)
        out = self.text(tokens.detach().cpu().numpy())[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32).copy())

    def decode_workers(self, n_items: int, batch_size: int, cores: int) -> int:
        """None on 2 cores or fewer: decoding is a small share of the pass and workers gained nothing consistent there
        (docs/benchmarks.md, "decoding and the tower"), while each costs a process start."""
        return 0 if cores <= 2 else super().decode_workers(n_items, batch_size, cores)


_CORE = None


def _core():
    """One OpenVINO runtime per process (as OpenVINO recommends): every compiled tower shares its thread pools."""
    global _CORE
    if _CORE is None:
        import openvino as ov  # optional dependency

        _CORE = ov.Core()
    return _CORE


def compile_towers(loaded, cache_dir: Path, precision: str = "fp32", threads: int = 0) -> OpenVINOTowers:
    """The OpenVINO towers of ``loaded``: each is converted (or read from the cache) and compiled for the CPU when it
    is first used. A tower that cannot be converted stays on PyTorch: the warning says which and why."""
    return OpenVINOTowers(loaded, cache_dir, precision, threads)


def _first_line(exc: BaseException) -> str:
    """The line of an exception's message that says what went wrong (OpenVINO's start with where it was raised)."""
    lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("Exception from src/")]
    return lines[0][:200] if lines else ""


def _write_meta(cache_dir: Path, weights: str, loaded, precision: str) -> None:
    """Which model the converted towers of ``weights`` come from, for people looking in the cache (best effort)."""
    meta = Path(cache_dir) / "openvino" / f"{weights}.json"
    if not meta.is_file():
        with contextlib.suppress(OSError):
            write_text_atomic(meta, json.dumps({"model": loaded.name, "pretrained": loaded.pretrained,
                                                "openvino": version(), "image_size": list(loaded.image_size)}) + "\n")


class OpenVINOBackend(Backend):
    """OpenVINO on the CPU: fp32 (the PyTorch numbers to float rounding, checked after each conversion) or bf16
    (opt-in)."""
    name = "openvino"
    devices = ("cpu",)
    precisions = tuple(INFERENCE_PRECISION)

    def available(self) -> bool:
        return available()

    def install_hint(self) -> str:
        return "pip install openvino"

    def auto_rank(self, device, compile: bool) -> int | None:
        return 1 if device.type == "cpu" and not compile else None

    def check_precision(self, precision: str, device) -> None:
        if precision not in self.precisions:
            from cliplab.errors import ModelParameterError

            raise ModelParameterError("precision", precision, "the OpenVINO backend runs fp32 (exact) or bf16")

    def torch_precision(self, precision: str) -> str:
        return "fp32"  # what is converted: the fp32 PyTorch towers (bf16 is OpenVINO's inference precision)

    def fingerprint(self, weights: str, precision: str) -> str:
        return hash_json({"weights": weights, "backend": self.name, "precision": precision})[:32]

    def attach(self, loaded, cache_dir, precision: str, **_: Any) -> OpenVINOTowers:
        return compile_towers(loaded, cache_dir, precision)


OPENVINO = register(OpenVINOBackend())
