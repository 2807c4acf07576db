"""Loading a model from any source: ``open_model`` and the checks of device, precision and backend."""
from __future__ import annotations

from pathlib import Path

import torch

from cliplab.errors import ModelParameterError
from cliplab.io import hash_json
from cliplab.models.base import LoadedModel
from cliplab.models import backends
from cliplab.models.hf import load_hf
from cliplab.models.local import SHIPPED_NAMES, find_local_model
from cliplab.models.names import openai_alias, random_weights_hint
from cliplab.models.openclip import load_open_clip
from cliplab.paths import resolve_cache_dir
from cliplab.progress import note, warn

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
    """The name of the backend that runs the towers (:func:`cliplab.models.backends.resolve`)."""
    return backends.resolve(backend, dev, compile).name


def resolve_precision(precision: str | None, dev: torch.device, backend: str = "torch") -> str:
    """The precision to run at on ``dev`` (default: amp on CUDA, fp32 elsewhere); raises for one the backend cannot
    run there."""
    precision = precision or ("amp" if dev.type == "cuda" else "fp32")
    if precision not in PRECISIONS:
        raise ModelParameterError("precision", precision, f"choose one of {', '.join(PRECISIONS)}")
    backends.get(backend).check_precision(precision, dev)
    return precision


def check_options(device: str | torch.device | None, precision: str | None, backend: str | None = "auto") -> None:
    """Device, backend and precision checked without loading anything (callers check them before slow work)."""
    dev = resolve_device(device)
    resolve_precision(precision, dev, resolve_backend(backend, dev))


def open_model(model: str, pretrained: str | None = None, device: str | torch.device | None = None,
               precision: str | None = None, cache_dir: str | Path | None = None,
               force_quick_gelu: bool | None = None, channels_last: bool | None = None,
               compile: bool = False, backend: str | None = "auto", batch_size: int | None = None,
               images: int | None = None) -> LoadedModel:
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
    default, ``precision="bf16"`` opt-in) or ``auto`` (the default: on the CPU with OpenVINO installed and ``compile``
    off, the faster of the two by at least 10 % as measured once for this CPU, model, ``batch_size`` (default 64) and
    precision, with PyTorch for a few ``images`` and OpenVINO's conversion counted against the ``images`` the run
    reads (:mod:`cliplab.models.backends.calibration`); else PyTorch). The fingerprint, and with it every cache key,
    names the backend and precision, so embeddings computed one way are never reused for another; so under ``auto``
    it follows the calibration in ``cache_dir``, while ``weights_fingerprint`` stays that of the PyTorch weights.
    """
    cache = resolve_cache_dir(cache_dir)
    dev = resolve_device(device)
    runner = backends.resolve(backend, dev, compile)
    precision = resolve_precision(precision, dev, runner.name)
    torch_precision = runner.torch_precision(precision)

    requested = {"model": model, "pretrained": pretrained}
    model, pretrained, alias_note = openai_alias(model, pretrained)  # said once loaded: an error stays one line
    local = None
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
        if parts["random_seed"] is not None:
            warn(f"{{p:model}} {model} has no weights given, so it is randomly initialised (seed "
                 f"{parts['random_seed']}) and its numbers are those of an untrained model; give {{p:pretrained}} (a tag "
                 "such as openai, or a checkpoint file; `cliplab models` lists the tags) for a trained one"
                 + random_weights_hint(model))

    if alias_note:
        note(alias_note)
    weights = hash_json({"arch": parts["arch"], "weights": parts["weights"],
                         "preprocess": parts["preprocess_cfg"], "precision": torch_precision})[:32]
    loaded = LoadedModel(model=parts["model"], preprocess=parts["preprocess"], tokenizer=parts["tokenizer"],
                         fingerprint=runner.fingerprint(weights, precision), name=parts["name"],
                         pretrained=parts["pretrained"], device=dev,
                         precision=precision, embed_dim=parts["embed_dim"], preprocess_cfg=parts["preprocess_cfg"],
                         source="hf" if model.startswith("hf:") else "open_clip", backend=runner.name,
                         weights_fingerprint=weights, spec=requested,
                         trained_on=local.meta.get("dataset") if local is not None and local.meta.get("dataset")
                         else parts.get("trained_on"))
    runtime = None
    if (backend or backends.AUTO) == backends.AUTO and dev.type == "cpu":
        runner, runtime = backends.measured_auto(runner, loaded, batch_size, precision, cache, images)
        loaded.backend, loaded.fingerprint = runner.name, runner.fingerprint(weights, precision)
    loaded.runtime = runtime or runner.attach(loaded, cache, precision, channels_last=channels_last, compile=compile)
    backends.bf16_hint(loaded, backend, precision, images, cache, batch_size)
    return loaded


__all__ = ["open_model", "LoadedModel", "check_options", "resolve_backend", "resolve_device", "resolve_precision", "PRECISIONS"]
