"""Tiny files that decode, or would be resized, into huge images (decompression and aspect-ratio bombs)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image


def png_header_only(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> Path:
    """A PNG whose header declares ``width`` x ``height`` (colour type 0 grey, 2 RGB, 6 RGBA) with a few bytes of
    pixel data: the header is all a decoder reads before it allocates."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def write_bombs(folder: Path) -> dict[str, str]:
    """Write the bombs (and one wide image that is not one) into ``folder``: {file name: what it is}."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("L", (100_000, 1), 200).save(folder / "wide.png")  # 375 bytes; 22,400,000 x 224 after a 224 resize
    Image.new("L", (1, 100_000), 200).save(folder / "tall.png")
    png_header_only(folder / "declared-huge.png", 30_000, 30_000)  # 900 MP: over the pixel limit
    png_header_only(folder / "sixteen-bit-huge.png", 12_000, 12_000, 16, 0)  # 144 MP, ~3.6 GB to convert
    png_header_only(folder / "rgba-huge.png", 11_000, 11_000, 8, 6)  # 121 MP RGBA, ~2.4 GB to composite
    Image.new("RGB", (3_000, 40), (10, 120, 200)).save(folder / "panorama.png")  # 75:1, not a bomb
    return {"wide.png": "100000x1", "tall.png": "1x100000", "declared-huge.png": "30000x30000 declared",
            "sixteen-bit-huge.png": "12000x12000 16-bit declared", "rgba-huge.png": "11000x11000 RGBA declared",
            "panorama.png": "3000x40 (embedded)"}
