"""``shapes``: a deterministic synthetic captioned dataset with a label per attribute.

Each image shows one shape (kind x colour x size x position) on a textured, low-saturation background.
Every image gets several captions that mention different subsets of its attributes, so a CLIP model trained
on them learns each attribute's words on their own — which is what zero-shot prompts like
'a photo of a red shape.' need. The images are written once as PNG files (content-hashed like any folder)
plus ``captions.jsonl`` — the same caption-file format users train and evaluate on.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cliplab.data.captions import load_caption_file
from cliplab.data.splits import SplitError
from cliplab.errors import DatasetError
from cliplab.io import write_text_atomic

GENERATOR_VERSION = 1
IMAGE_SIZE = 64
_SS = 4  # supersampling for anti-aliased edges

SHAPES = ["circle", "square", "triangle", "star", "cross"]
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 20),
    "purple": (140, 40, 180),
    "orange": (245, 130, 10),
}
SIZES = ["small", "large"]
POSITIONS = ["top left", "top right", "bottom left", "bottom right", "center"]
BACKGROUNDS = ["plain", "striped", "checkered", "noisy", "gradient"]

# Class names used as prompt fillers for each attribute ("a photo of a {}.").
ATTRIBUTE_CLASSNAMES = {
    "shape": SHAPES,
    "color": [f"{c} shape" for c in COLORS],
    "size": [f"{s} shape" for s in SIZES],
    "position": [f"shape in the {p}" for p in POSITIONS],
    "background": [f"shape on a {b} background" for b in BACKGROUNDS],
}
ATTRIBUTE_VALUES = {"shape": SHAPES, "color": list(COLORS), "size": SIZES, "position": POSITIONS,
                    "background": BACKGROUNDS}
DEFAULT_SPLIT_SIZES = {"train": 5000, "test": 1000}


def _polygon(kind: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(math.cos(rot + k * math.pi / 2 + math.pi / 4), math.sin(rot + k * math.pi / 2 + math.pi / 4)) for k in range(4)]
        return [(cx + r * x, cy + r * y) for x, y in pts]
    if kind == "triangle":
        return [(cx + r * math.cos(rot - math.pi / 2 + k * 2 * math.pi / 3), cy + r * math.sin(rot - math.pi / 2 + k * 2 * math.pi / 3)) for k in range(3)]
    if kind == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            a = rot - math.pi / 2 + k * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    if kind == "cross":
        w = 0.33
        base = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in base]
    raise ValueError(kind)


def _background(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(90, 200)
    tint = rng.integers(-15, 16, size=3)
    c1 = np.clip(base + tint, 0, 255).astype(np.float32)
    c2 = np.clip(c1 + rng.choice([-1, 1]) * rng.integers(35, 60), 0, 255).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "plain":
        return np.broadcast_to(c1, (size, size, 3)).astype(np.float32)
    if kind == "striped":
        period = int(rng.integers(6, 12))
        band = ((xx if rng.random() < 0.5 else yy) // (period // 2)) % 2
        return np.where(band[..., None] == 0, c1, c2)
    if kind == "checkered":
        period = int(rng.integers(8, 14))
        band = ((xx // (period // 2)) + (yy // (period // 2))) % 2
        return np.where(band[..., None] == 0, c1, c2)
    if kind == "noisy":
        return c1 + rng.normal(0, 28, size=(size, size, 3)).astype(np.float32)
    if kind == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(a) + yy * math.sin(a)
        t = ((t - t.min()) / max(float(t.max() - t.min()), 1e-9)).astype(np.float32)
        return c1 * (1 - t[..., None]) + c2 * t[..., None]
    raise ValueError(kind)


def render(shape: str, color: str, size: str, position: str, background: str, seed: int) -> Image.Image:
    """Render one image deterministically from its attributes and a seed.

    The background is drawn at the final size; the shape is drawn as a supersampled mask (anti-aliased edges)
    and composited over it.
    """
    rng = np.random.default_rng(seed)
    n = IMAGE_SIZE
    bg = _background(background, rng, n)
    S = n * _SS
    r = (rng.uniform(0.10, 0.13) if size == "small" else rng.uniform(0.21, 0.25)) * S
    margin = r + 0.04 * S
    if position == "center":
        x, y = S / 2, S / 2
    else:
        v, h = position.split()
        x = margin if h == "left" else S - margin
        y = margin if v == "top" else S - margin
    x += rng.uniform(-0.04, 0.04) * S
    y += rng.uniform(-0.04, 0.04) * S
    jitter = rng.integers(-18, 19, size=3)
    fill = np.clip(np.asarray(COLORS[color]) + jitter, 0, 255).astype(np.float32)
    rot = rng.uniform(-0.35, 0.35)
    mask = Image.new("L", (S, S), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    else:
        draw.polygon(_polygon(shape, x, y, r, rot), fill=255)
    alpha = np.asarray(mask.reduce(_SS), dtype=np.float32)[..., None] / 255.0
    img = Image.fromarray(np.clip(bg * (1 - alpha) + fill * alpha, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.8))))
    return img


_ARTICLE_TEMPLATES = [
    "a photo of a {desc}.",
    "a {desc}.",
    "an image of a {desc}.",
    "a picture of a {desc}.",
    "a drawing of a {desc}.",
    "there is a {desc}.",
]


def captions_for(shape: str, color: str, size: str, position: str, background: str, rng: random.Random) -> list[str]:
    """Captions mentioning different subsets of attributes, with a few phrasings each."""
    bg = f"on a {background} background"
    pos = f"in the {position}"
    descs = [
        f"{size} {color} {shape} {pos} {bg}",
        f"{color} {shape}",
        f"{shape}",
        f"{color} shape",
        f"{size} shape",
        f"shape {pos}",
        f"shape {bg}",
        f"{size} {shape}",
        f"{color} {shape} {pos}",
        f"{shape} {bg}",
    ]
    return [rng.choice(_ARTICLE_TEMPLATES).format(desc=d) for d in descs]


def generate_split(root: Path, split: str, n: int, seed: int) -> Path:
    """Write ``n`` images and ``captions.jsonl`` under ``root/split``; returns the caption file path."""
    out = root / split
    index = out / "captions.jsonl"
    if index.exists():
        return index
    (out / "images").mkdir(parents=True, exist_ok=True)
    split_seed = seed * 1000 + {"train": 1, "val": 2, "test": 3}.get(split, 9)
    rng = random.Random(split_seed)
    lines = []
    for i in range(n):
        attrs = dict(
            shape=rng.choice(SHAPES),
            color=rng.choice(list(COLORS)),
            size=rng.choice(SIZES),
            position=rng.choice(POSITIONS),
            background=rng.choice(BACKGROUNDS),
        )
        img = render(**attrs, seed=split_seed * 100003 + i)
        rel = f"images/{i:06d}.png"
        img.save(out / rel, optimize=False, compress_level=1)
        lines.append(json.dumps({"image": rel, "captions": captions_for(**attrs, rng=rng), **attrs}))
    write_text_atomic(index, "\n".join(lines) + "\n")
    return index


def shapes_root(cache_dir: Path, seed: int, sizes: dict[str, int]) -> Path:
    tag = "-".join(f"{k}{v}" for k, v in sorted(sizes.items()))
    return cache_dir / "datasets" / f"shapes-v{GENERATOR_VERSION}-seed{seed}-{tag}"


def ensure_shapes(cache_dir: Path, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    sizes = dict(sizes or DEFAULT_SPLIT_SIZES)
    root = shapes_root(cache_dir, seed, sizes)
    for split, n in sizes.items():
        generate_split(root, split, n, seed)
    return root


def load_shapes(cache_dir: Path, split: str = "test", seed: int = 0, attribute: str = "shape",
                sizes: dict[str, int] | None = None):
    sizes = dict(sizes or DEFAULT_SPLIT_SIZES)
    if split not in sizes:
        raise SplitError("shapes", split, sorted(sizes))
    if attribute not in ATTRIBUTE_CLASSNAMES:
        raise DatasetError(f"shapes has attributes {sorted(ATTRIBUTE_CLASSNAMES)}, not {attribute!r}")
    root = ensure_shapes(cache_dir, seed, sizes)
    ds = load_caption_file(root / split / "captions.jsonl", name="shapes", split=split)
    # The caption loader numbers values alphabetically; renumber them in this module's canonical order.
    for attr, values in ATTRIBUTE_VALUES.items():
        remap = np.array([values.index(v) for v in ds.attribute_classnames[attr]], dtype=np.int64)
        ds.attributes[attr] = remap[ds.attributes[attr]]
    ds.attribute_classnames = {k: list(v) for k, v in ATTRIBUTE_CLASSNAMES.items()}
    ds.attribute_values = {k: list(v) for k, v in ATTRIBUTE_VALUES.items()}
    return ds.with_label(attribute)
