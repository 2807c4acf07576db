"""Robust image opening: every mode PIL knows becomes RGB, and unreadable files raise ``BadImage`` with a reason."""
from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError
from cliplab.threads import catch_warnings

# Images above this many pixels (400 MP) are refused with a clear reason instead of exhausting memory. PIL warns
# above MAX_IMAGE_PIXELS and raises above twice that; both become the same "400 MP" refusal here.
MAX_PIXELS = 20_000 * 20_000
MAX_MEGAPIXELS = MAX_PIXELS // 1_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


ImageFile.LOAD_TRUNCATED_IMAGES = False

# What one image may cost in memory (docs/reliability.md, "Signals, memory and machines"). Decoding a file and
# converting it to RGB holds, at the peak, PEAK_BYTES bytes per pixel (by the file's mode: PIL's decoded image plus
# the conversions of to_rgb; measured as peak RSS on 16 MP images, rounded up, and checked by tests/data/
# test_imageio.py); an image whose peak would pass DECODE_BUDGET is refused before anything is decoded. The model's
# resize makes the short side the model's input size, so an extreme aspect ratio makes a huge image from a small one
# (a 100000x1 PNG of 375 bytes becomes 22,400,000 x 224 at 224 px); an image whose resized size would pass
# RESIZE_BUDGET pixels is refused too (check_resize; 16.8 MP is an aspect ratio of 334:1 at 224 px, 65:1 at 504 px).
DECODE_BUDGET = 2 * 1024**3
RESIZE_BUDGET = 1 << 24
PEAK_BYTES = {"RGB": 5, "L": 6, "P": 6, "1": 6, "CMYK": 9, "YCbCr": 9, "LAB": 9, "HSV": 9, "RGBA": 21, "LA": 21,
              "PA": 22, "RGBa": 21, "La": 21, "I;16": 27, "I;16B": 27, "I;16L": 27, "I;16N": 27, "I": 29, "F": 29}
PEAK_TRANSPARENT = 22  # a palette image with a transparent colour is converted through RGBA
PEAK_OTHER = 29  # any other mode: as much as the widest


def _too_large(pixels: int | None, size: str = "") -> BadImage:
    what = f"{size} = {pixels:,} pixels" if size else (f"{pixels:,} pixels" if pixels else "over the limit")
    return BadImage(f"image too large ({what}; the limit is {MAX_MEGAPIXELS} MP)")


def check_decode(width: int, height: int, mode: str, transparency: bool = False) -> None:
    """Raise ``BadImage`` when an image of this size and mode is over the pixel limit or would need more than
    ``DECODE_BUDGET`` bytes to decode and convert to RGB (known from the file's header, before decoding)."""
    pixels = width * height
    if pixels > MAX_PIXELS:
        raise _too_large(pixels, f"{width}x{height}")
    per_pixel = PEAK_TRANSPARENT if mode == "P" and transparency else PEAK_BYTES.get(mode, PEAK_OTHER)
    need = pixels * per_pixel
    if need > DECODE_BUDGET:
        raise BadImage(f"image too large to decode ({width}x{height} {mode}: about {need / 2**30:.1f} GB to decode "
                       f"and convert to RGB; the budget is {DECODE_BUDGET / 2**30:g} GB)")


def resized_size(width: int, height: int, preprocess_cfg: dict) -> tuple[int, int]:
    """The size an image of ``width`` x ``height`` has after the model's resize (before its centre crop)."""
    size = preprocess_cfg.get("size", 224)
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    mode = preprocess_cfg.get("resize_mode", "shortest")
    if mode == "squash":
        return out_w, out_h
    side = max(out_w, out_h) if mode == "longest" else min(out_w, out_h)
    if (width <= height) == (mode != "longest"):  # this side of the image becomes `side`, as torchvision computes
        return side, max(1, int(side * height / width))
    return max(1, int(side * width / height)), side


def check_resize(width: int, height: int, preprocess_cfg: dict) -> None:
    """Raise ``BadImage`` when the model's resize would make more than ``RESIZE_BUDGET`` pixels of this image."""
    w, h = resized_size(width, height, preprocess_cfg)
    if w * h > RESIZE_BUDGET:
        raise BadImage(f"extreme aspect ratio ({width}x{height} would be resized to {w}x{h} = {w * h:,} pixels for "
                       f"the model; the limit is {RESIZE_BUDGET:,})")


class BadImage(Exception):
    """An image that cannot be used; ``str(exc)`` is the reason shown to the user."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; 16-bit and float images are rescaled, alpha is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            arr = arr / 257.0
        elif img.mode == "I":
            hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
            arr = arr * (255.0 / hi)
        else:  # float: assume [0, 1] when it looks like it, else min-max
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr = arr * 255.0 if lo >= 0 and hi <= 1 else (arr - lo) * (255.0 / max(hi - lo, 1e-12))
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    # CMYK, YCbCr, LAB, HSV, L, 1, P: PIL's own conversion is correct for these.
    return img.convert("RGB")


def open_rgb(path: str) -> Image.Image:
    """Open, fully decode and convert an image file; raise ``BadImage`` with a human reason on any failure."""
    try:
        return _decode(path)
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except UnidentifiedImageError:
        size = os.path.getsize(path) if os.path.exists(path) else -1
        raise BadImage("empty file (0 bytes)" if size == 0 else "not an image (unrecognised format)") from None


def decode_rgb(data: bytes) -> Image.Image:
    """:func:`open_rgb` for an image file's bytes held in memory (a tar member, a dataset cell)."""
    try:
        return _decode(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImage("empty file (0 bytes)" if not data else "not an image (unrecognised format)") from None


def _decode(fp) -> Image.Image:
    """Decode ``fp`` (a path or a binary file object) to RGB; every failure but a missing or unidentified file
    becomes ``BadImage``."""
    try:
        with catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                check_decode(img.width, img.height, img.mode, "transparency" in img.info)
                img.load()
                return to_rgb(img)
    except (BadImage, FileNotFoundError, UnidentifiedImageError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))  # PIL: "Image size (N pixels) exceeds limit of ..."
        raise _too_large(int(found.group(1)) if found else None) from None
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg.lower() or "broken data stream" in msg:
            raise BadImage(f"truncated or corrupt image data ({msg})") from None
        raise BadImage(f"cannot decode image ({msg})") from None
    except (SyntaxError, ValueError, MemoryError) as exc:
        raise BadImage(f"cannot decode image ({type(exc).__name__}: {exc})") from None
