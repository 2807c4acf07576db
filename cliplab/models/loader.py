"""Loading a model from any source: ``open_model`` and the checks of device, precision and backend."""
from __future__ import annotations

from pathlib import Path

import torch

from cliplab.errors import ModelParameterError
from cliplab.io import hash_json
from cliplab.models.base import LoadedModel
from cliplab.models.hf import load_hf
from cliplab.models import openvino
from cliplab.models.local import SHIPPED_NAMES, find_local_model
from cliplab.models.openclip import load_open_clip
from cliplab.paths import resolve_cache_dir
from cliplab.progress import note

PRECISIONS = ("fp32", "amp", "amp_bf16", "fp16", "bf16")


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelParameterError("device", device, "not a device name; use cpu, cuda, cuda:1 or mps",
                                  quote=False) from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ModelParameterError("device", device, f"cliplab runs on cpu, cuda or mps, not {dev.type}", quote=False)
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelParameterError("device", device, "MPS is not available on this machine; use {p:device} cpu",
                                  quote=False)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelParameterError("device", device, "CUDA is not available on this machine; use {p:device} cpu",
                                  quote=False)
    return dev


def resolve_backend(backend: str | None, dev: torch.device, compile: bool = False) -> str:
    """The backend that runs the towers: ``auto`` (the default) is OpenVINO on the CPU when it is installed, else
    PyTorch; asking for ``compile`` (torch.compile) makes ``auto`` PyTorch."""
    backend = backend or "auto"
    if backend not in openvino.BACKENDS:
        raise ModelParameterError("backend", backend, f"choose one of {', '.join(openvino.BACKENDS)}")
    if backend == "auto":
        return "openvino" if dev.type == "cpu" and openvino.available() and not compile else "torch"
    if backend == "openvino" and dev.type != "cpu":
        raise ModelParameterError("backend", backend, f"OpenVINO runs the towers on the CPU, not {dev.type}; use "
                                  "{p:backend} torch there", quote=False)
    if backend == "openvino" and not openvino.available():
        raise ModelParameterError("backend", backend, "OpenVINO is not installed: pip install openvino",
                                  quote=False)
    return backend


def resolve_precision(precision: str | None, dev: torch.device, backend: str = "torch") -> str:
    """The precision to run at on ``dev`` (default: amp on CUDA, fp32 elsewhere); raises for an unusable one.
    On the CPU, OpenVINO also runs bf16 (opt-in)."""
    precision = precision or ("amp" if dev.type == "cuda" else "fp32")
    if precision not in PRECISIONS:
        raise ModelParameterError("precision", precision, f"choose one of {', '.join(PRECISIONS)}")
    if backend == "openvino" and precision not in openvino.INFERENCE_PRECISION:
        raise ModelParameterError("precision", precision, "the OpenVINO backend runs fp32 (exact) or bf16")
    if dev.type == "cpu" and precision != "fp32" and backend != "openvino":
        raise ModelParameterError("precision", precision, f"{{p:precision}} {precision} needs a GPU; use fp32 on CPU",
                                  prefix=False)
    return precision


def check_options(device: str | torch.device | None, precision: str | None, backend: str | None = "auto") -> None:
    """Device, backend and precision checked without loading anything (callers check them before slow work)."""
    dev = resolve_device(device)
    resolve_precision(precision, dev, resolve_backend(backend, dev))


def open_model(model: str, pretrained: str | None = None, device: str | torch.device | None = None,
               precision: str | None = None, cache_dir: str | Path | None = None,
               force_quick_gelu: bool | None = None, channels_last: bool | None = None,
               compile: bool = False, backend: str | None = "auto") -> LoadedModel:
    """A CLIP model from any supported source, loaded: a :class:`LoadedModel` (``cliplab.load_model`` in Python and
    every command's ``--model`` come here).

    - ``load_model("ViT-B-32", "openai")`` — open_clip name + pretrained tag (QuickGELU applied as the tag needs)
    - ``load_model("ViT-B-32", "/path/ckpt.pt")`` — open_clip name + local checkpoint
    - ``load_model("my_config.json", "/path/ckpt.pt")`` — custom open_clip model config + checkpoint
    - ``load_model("hf-hub:org/name")`` / ``load_model("local-dir:/folder")`` — open_clip hub/folder layouts
    - ``load_model("hf:openai/clip-vit-base-patch32")`` — Hugging Face transformers CLIP (extra ``[hf]``)
    - ``load_model("tiny-shapes")`` — a model trained by ``cliplab train`` (see ``cliplab models``)

    ``precision`` defaults to ``amp`` (fp16 autocast) on CUDA and ``fp32`` on CPU. ``channels_last`` (default: on
    for convolutional image towers, on CPU (oneDNN) and CUDA alike: 1.2-1.4x on 2 CPU cores) stores the tower and its inputs NHWC; ``compile`` wraps the image
    encoder in ``torch.compile`` (first batch pays the compilation). Neither changes the fingerprint: both are
    execution choices with numerically equivalent results (checked in the tests on CPU).

    ``backend``: ``torch``, ``openvino`` (both towers converted with OpenVINO for the CPU, cached on disk; fp32 by
    default, ``precision="bf16"`` opt-in) or ``auto`` (the default: OpenVINO on the CPU when installed and ``compile`` is
    off, else PyTorch). The fingerprint, and
    with it every cache key, names the backend and precision, so embeddings computed one way are never reused for
    another; ``weights_fingerprint`` stays that of the PyTorch weights.
    """
    cache = resolve_cache_dir(cache_dir)
    dev = resolve_device(device)
    backend = resolve_backend(backend, dev, compile)
    precision = resolve_precision(precision, dev, backend)
    torch_precision = "fp32" if backend == "openvino" else precision

    requested = {"model": model, "pretrained": pretrained}
    if model.startswith("hf:"):
        parts = load_hf(model, dev, torch_precision)
    else:
        local = find_local_model(model, cache) if not pretrained else None
        if local is None and model in SHIPPED_NAMES and not pretrained:
            raise ModelParameterError("model", model, f"the shipped {model} model is missing from this cliplab "
                                      f"installation (cliplab/models/weights/{model}); reinstall cliplab", quote=False)
        if local is not None and local.name in SHIPPED_NAMES and not local.shipped:
            note(f"{local.name} is the model trained with `cliplab train --force` in {local.folder}, not the one "
                 "shipped with cliplab; remove that folder to use the shipped one again")
        if local is not None:
            model, pretrained = str(local.config), str(local.checkpoint)
        parts = load_open_clip(model, pretrained, dev, torch_precision, cache, force_quick_gelu=force_quick_gelu)
        if local is not None:
            parts["name"] = local.name

    weights = hash_json({"arch": parts["arch"], "weights": parts["weights"],
                         "preprocess": parts["preprocess_cfg"], "precision": torch_precision})[:32]
    fingerprint = weights if backend == "torch" else hash_json({"weights": weights, "backend": backend,
                                                                "precision": precision})[:32]
    loaded = LoadedModel(model=parts["model"], preprocess=parts["preprocess"], tokenizer=parts["tokenizer"],
                         fingerprint=fingerprint, name=parts["name"], pretrained=parts["pretrained"], device=dev,
                         precision=precision, embed_dim=parts["embed_dim"], preprocess_cfg=parts["preprocess_cfg"],
                         source="hf" if model.startswith("hf:") else "open_clip", backend=backend,
                         weights_fingerprint=weights, spec=requested)
    if backend == "openvino":
        loaded._ov = openvino.compile_towers(loaded, cache, precision)
        return loaded
    if channels_last is None:
        channels_last = loaded.conv_tower
    if channels_last:
        loaded.model.visual.to(memory_format=torch.channels_last)
        loaded.channels_last = True
    if compile:
        loaded.compile_image_encoder()
    return loaded


__all__ = ["open_model", "LoadedModel", "check_options", "resolve_backend", "resolve_device", "resolve_precision", "PRECISIONS"]
