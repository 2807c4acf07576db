"""The OpenVINO backend for the CPU: both towers of a loaded model exported with ``torch.export``, converted with
OpenVINO and compiled for the CPU; the converted models are cached on disk, so only the first run converts.

Only inference goes through OpenVINO (``LoadedModel.encode_images`` / ``encode_texts``). Anything that needs the
PyTorch modules (gradients, training, forward hooks for MAC/R-MAC/GeM descriptors) keeps using ``loaded.model``.
A tower OpenVINO cannot convert stays on PyTorch, with a warning that says so.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from cliplab.progress import warn

BACKENDS = ("auto", "torch", "openvino")
# OpenVINO's CPU inference precision for each cliplab precision: fp32 is exact (the default); bf16 is opt-in.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def available() -> bool:
    """Whether OpenVINO is installed."""
    return importlib.util.find_spec("openvino") is not None


def version() -> str:
    import openvino as ov  # optional dependency

    return ov.__version__.split("-")[0]


class _Tower(torch.nn.Module):
    """One tower of a CLIP model as a module of its own (what ``torch.export`` takes): ``encode_image`` or
    ``encode_text``."""

    def __init__(self, model, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, inputs):
        return getattr(self.model, self.method)(inputs)


def cache_path(cache_dir: Path, fingerprint: str, tower: str, shape: tuple[int, ...]) -> Path:
    """Where a converted tower is kept: keyed by the model's weights fingerprint, the tower, its input shape policy
    (dynamic batch, fixed size) and the OpenVINO version."""
    dims = "x".join(str(d) for d in shape)
    return Path(cache_dir) / "openvino" / f"{fingerprint}-{tower}-dynbatch-{dims}-ov{version()}.xml"


def _convert(module: torch.nn.Module, example: torch.Tensor, path: Path):
    """Export ``module`` for a dynamic batch, convert it with OpenVINO and save it to ``path`` (atomically)."""
    import openvino as ov  # optional dependency

    batch = torch.export.Dim("batch", min=1, max=4096)
    exported = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: batch},))
    converted = ov.convert_model(exported)
    tmp = Path(tempfile.mkdtemp(dir=_mkdir(path.parent), prefix=f".{path.stem}.", suffix=".tmp"))
    try:  # the weights first, then the .xml: a cached model is complete when its .xml exists
        ov.save_model(converted, str(tmp / "tower.xml"), compress_to_fp16=False)
        os.replace(tmp / "tower.bin", path.with_suffix(".bin"))
        os.replace(tmp / "tower.xml", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return converted


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _load_or_convert(core, module, example, path: Path) -> tuple[object, bool]:
    """(OpenVINO model, whether it was converted now)."""
    if path.is_file() and path.with_suffix(".bin").is_file():
        return core.read_model(str(path)), False
    return _convert(module, example, path), True


class OpenVINOTowers:
    """Compiled OpenVINO models for the towers of one loaded model (either may be None: that tower stays on
    PyTorch). ``converted`` lists the towers converted by this load (empty when both came from the cache)."""

    def __init__(self, image=None, text=None, converted: tuple[str, ...] = (), precision: str = "f32"):
        self.image, self.text, self.converted, self.precision = image, text, converted, precision

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.image(pixels.detach().cpu().float().numpy())[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32).copy())

    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.text(tokens.detach().cpu().numpy())[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32).copy())


_CORE = None


def _core():
    """One OpenVINO runtime per process (as OpenVINO recommends): every compiled tower shares its thread pools."""
    global _CORE
    if _CORE is None:
        import openvino as ov  # optional dependency

        _CORE = ov.Core()
    return _CORE


def compile_towers(loaded, cache_dir: Path, precision: str = "fp32") -> OpenVINOTowers:
    """Convert (or read from the cache) and compile both towers of ``loaded`` for the CPU. A tower that cannot be
    converted stays on PyTorch: the warning says which and why."""
    core = _core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision]}
    weights = loaded.weights_fingerprint
    h, w = loaded.image_size
    towers, converted = {}, []
    jobs = [("image", _Tower(loaded.model, "encode_image"), torch.zeros(2, 3, h, w), (3, h, w))]
    if loaded.source == "open_clip":  # transformers' text tower takes a dict of tensors: it stays on PyTorch
        tokens = loaded.tokenizer(["a photo of a cat", "a dog"])
        jobs.append(("text", _Tower(loaded.model, "encode_text"), tokens, tuple(tokens.shape[1:])))
    for tower, module, example, shape in jobs:
        path = cache_path(cache_dir, weights, tower, shape)
        try:
            model, fresh = _load_or_convert(core, module, example, path)
            towers[tower] = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001 - any conversion failure: this tower stays on PyTorch
            warn(f"OpenVINO could not convert the {tower} tower of {loaded.name} ({type(exc).__name__}: "
                 f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); it runs on PyTorch")
            continue
        if fresh:
            converted.append(tower)
    _write_meta(cache_dir, weights, loaded, precision)
    return OpenVINOTowers(towers.get("image"), towers.get("text"), tuple(converted), INFERENCE_PRECISION[precision])


def _write_meta(cache_dir: Path, weights: str, loaded, precision: str) -> None:
    meta = Path(cache_dir) / "openvino" / f"{weights}.json"
    if not meta.is_file():
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"model": loaded.name, "pretrained": loaded.pretrained, "openvino": version(),
                                    "image_size": list(loaded.image_size)}) + "\n")
