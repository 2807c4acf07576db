"""Robust image opening: every mode PIL knows becomes RGB, and unreadable files raise ``BadImage`` with a reason."""
from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# Images above this many pixels (400 MP) are refused with a clear reason instead of exhausting memory. PIL warns
# above MAX_IMAGE_PIXELS and raises above twice that; both become the same "400 MP" refusal here.
MAX_PIXELS = 20_000 * 20_000
MAX_MEGAPIXELS = MAX_PIXELS // 1_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def _too_large(pixels: int | None, size: str = "") -> BadImage:
    what = f"{size} = {pixels:,} pixels" if size else (f"{pixels:,} pixels" if pixels else "over the limit")
    return BadImage(f"image too large ({what}; the limit is {MAX_MEGAPIXELS} MP)")
ImageFile.LOAD_TRUNCATED_IMAGES = False


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
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise _too_large(img.width * img.height, f"{img.width}x{img.height}")
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
