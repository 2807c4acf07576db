"""The tensor image pipeline: decode to uint8 tensors (JPEG decoding batched on the GPU with
``torchvision.io.decode_jpeg(device='cuda')``), then resize / centre-crop / normalise as batched tensor ops on
the model's device. The PIL path (open_clip's own transform) stays the reference and the CPU default.

What differs from the reference: torchvision's tensor resize (bicubic, antialias) instead of PIL's, and the
JPEG decoder (nvJPEG on GPU, libjpeg-turbo on CPU through torchvision, vs PIL's libjpeg). ``benchmarks/
pipeline_fidelity.py`` measures the embedding cosine and the zero-shot accuracy delta between the two paths;
the fast path is only chosen when asked for (``pipeline='tensor'``) or on CUDA with ``pipeline='auto'``.

What does not differ: which files are used and why the others are skipped, and the pixels. Every file's header is
read first (:func:`header`): the same memory checks as the PIL path refuse the same images with the same reasons,
and only what torchvision decodes to the PIL path's exact pixels is decoded here -- JPEGs in RGB or grey, and 8-bit
PNGs, whose alpha is composited on white with the PIL path's integer rounding (:func:`on_white`). Everything else
(palette transparency, GIF, WebP, 16-bit PNGs, CMYK JPEGs, and every file the tensor decoders reject: empty,
truncated, not an image) goes through the PIL path, which decodes it or gives the reason it is skipped.
"""
from __future__ import annotations

import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F
from cliplab.threads import catch_warnings

_INTERP = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
           "nearest": InterpolationMode.NEAREST}


@dataclass(frozen=True)
class TensorPreprocess:
    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def from_cfg(cls, cfg: dict) -> "TensorPreprocess":
        size = cfg.get("size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(size, tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                   tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))), cfg.get("interpolation", "bicubic"),
                   cfg.get("resize_mode", "shortest"))

    def supported(self) -> bool:
        return self.resize_mode in ("shortest", "squash") and self.interpolation in _INTERP

    def one(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) on any device -> uint8 (..., 3, h, w) resized and cropped, not yet normalised."""
        interp = _INTERP[self.interpolation]
        if self.resize_mode == "squash":
            out = F.resize(img, list(self.size), interpolation=interp, antialias=True)
        else:
            out = F.resize(img, [min(self.size)], interpolation=interp, antialias=True)
            out = F.center_crop(out, list(self.size))
        return out

    def batch(self, images: list[torch.Tensor], device) -> torch.Tensor:
        """uint8 images (any sizes) -> normalised float batch (B, 3, h, w) on ``device``.

        Images of one size (a CIFAR batch, a folder of 640x480 photos) are stacked and resized in one call, and
        CPU-held ones go to the GPU as one pinned, asynchronous copy per size: a handful of kernels per batch
        instead of a few per image. Results equal the per-image ones (tested).
        """
        dev = torch.device(device)
        mean = torch.tensor(self.mean, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=dev).view(1, 3, 1, 1)
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault((tuple(im.shape), im.device), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(images)
        for idx in groups.values():
            x = torch.stack([images[i] for i in idx])
            if dev.type == "cuda" and x.device.type == "cpu":
                x = x.pin_memory()
            resized = self.one(x.to(dev, non_blocking=True))
            for j, i in enumerate(idx):
                out[i] = resized[j]
        x = torch.stack(out).float().div_(255.0)
        return x.sub_(mean).div_(std)


def read_bytes(paths: list[str], threads: int = 8) -> list[torch.Tensor | Exception]:
    """Each file's bytes as a uint8 tensor (empty for an empty file), or the exception that reading raised."""
    def one(p):
        try:
            with open(p, "rb") as fh:
                data = fh.read()
            return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
        except Exception as exc:  # noqa: BLE001 - reported for this file by the PIL path
            return exc

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, paths))


JPEG, PNG, PNG_ALPHA, PIL_PATH = "jpeg", "png", "png-alpha", "pil"


def header(data: torch.Tensor) -> tuple[int, int, str]:
    """(width, height, how to decode) from a file's header, without decoding: ``jpeg``, ``png``, ``png-alpha`` or
    ``pil`` (the PIL path: what torchvision does not decode to the PIL path's pixels, or cannot read). Raises
    ``BadImage`` for an image over the memory limits, with the PIL path's reason."""
    from PIL import Image

    from cliplab.data.imageio import check_decode

    if data.numel() == 0:
        return 0, 0, PIL_PATH
    raw = data.numpy().tobytes()
    try:
        with catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                width, height, mode, fmt = img.width, img.height, img.mode, img.format
                transparent = "transparency" in img.info
    except Exception:  # noqa: BLE001 - not an image PIL knows, or a bomb: the PIL path gives the reason
        return 0, 0, PIL_PATH
    check_decode(width, height, mode, transparent)
    if fmt == "JPEG" and mode in ("RGB", "L"):
        return width, height, JPEG
    if fmt == "PNG" and raw[24] <= 8:  # IHDR bit depth
        if mode in ("RGBA", "LA"):
            return width, height, PNG_ALPHA
        if mode in ("RGB", "L", "1") or (mode == "P" and not transparent):
            return width, height, PNG  # a transparent colour of an RGB or grey PNG is ignored, as PIL does
    return width, height, PIL_PATH


def on_white(rgba: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """uint8 (4, H, W) -> (3, H, W): alpha composited on white exactly as ``PIL.Image.alpha_composite`` on an opaque
    white background rounds (round((c * a + 255 * (255 - a)) / 255), tested on every (c, a)), a strip of ``rows``
    rows at a time so the int32 arithmetic stays small."""
    out = torch.empty((3, *rgba.shape[1:]), dtype=torch.uint8, device=rgba.device)
    for r in range(0, rgba.shape[1], rows):
        strip = rgba[:, r:r + rows].to(torch.int32)
        a = strip[3:4]
        out[:, r:r + rows] = torch.div(strip[:3] * a + 255 * (255 - a) + 127, 255, rounding_mode="floor").to(torch.uint8)
    return out


def decode_batch(datas: list[torch.Tensor], device: torch.device,
                 hows: list[str] | None = None) -> list[torch.Tensor | Exception]:
    """uint8 RGB (3, H, W) per image, or an exception for what the PIL path must read. JPEGs are decoded together
    on CUDA when ``device`` is cuda; everything else (PNG, CPU runs, JPEGs nvJPEG rejects) through torchvision's CPU
    decoders. ``hows``: :func:`header`'s verdicts (read here when not given)."""
    if hows is None:
        hows = []
        for d in datas:
            try:
                hows.append(header(d)[2])
            except Exception:  # noqa: BLE001 - over the limits: the PIL path refuses it with the reason
                hows.append(PIL_PATH)
    out: list[torch.Tensor | Exception | None] = [None] * len(datas)
    if device.type == "cuda":
        jpeg = [i for i, d in enumerate(datas) if hows[i] == JPEG]
        if jpeg:
            try:
                decoded = decode_jpeg([datas[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)
                for i, im in zip(jpeg, decoded):
                    out[i] = im
            except RuntimeError:
                pass  # one bad JPEG fails the whole GPU batch: fall back to per-image CPU decoding below
    for i, d in enumerate(datas):
        if out[i] is not None:
            continue
        if hows[i] == PIL_PATH:
            out[i] = ValueError("read by the PIL path")
            continue
        try:
            if hows[i] == PNG_ALPHA:
                out[i] = on_white(decode_image(d, mode=ImageReadMode.RGB_ALPHA))
            else:
                out[i] = decode_image(d, mode=ImageReadMode.RGB)
            if out[i].dtype != torch.uint8:
                out[i] = ValueError("not 8-bit: read by the PIL path")
        except Exception as exc:  # noqa: BLE001 - any decoder error: the PIL path reads it or gives the reason
            out[i] = exc
    return out
