"""Typographic attack: write a (wrong) class name onto each image, as in "Multimodal Neurons" (Goh et al., 2021)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cliplab.data.sources import ImageSource
from cliplab.errors import CliplabError, ParameterError
from cliplab.io import hash_json

POSITIONS = ("center", "top", "bottom", "random")
RULES = ("random", "next", "most-confused")


@dataclass(frozen=True)
class TypographicParams:
    font_size: float = 0.22  # fraction of the image's shorter side
    position: str = "center"  # center | top | bottom | random (seeded per image)
    opacity: float = 1.0
    color: str = "white"
    stroke: float = 0.08  # outline width as a fraction of the font size (black outline keeps text legible)
    font: str | None = None  # a .ttf/.otf file; default: Pillow's bundled FreeType font
    seed: int = 0

    def validate(self) -> None:
        if self.position not in POSITIONS:
            raise ParameterError("position", self.position, f"choose one of {', '.join(POSITIONS)}")
        if not 0.0 < self.opacity <= 1.0:
            raise ParameterError("opacity", self.opacity, "must be in (0, 1]", quote=False)
        if not 0.01 <= self.font_size <= 1.0:
            raise ParameterError("font_size", self.font_size, "a fraction of the image side in [0.01, 1]", quote=False)
        try:
            Image.new("RGB", (1, 1), self.color)
        except ValueError:
            raise ParameterError("color", self.color, "not a colour Pillow knows (e.g. white, red, #ff8800)") from None
        _font(self.font, 12)


@lru_cache(maxsize=64)
def _font(path: str | None, size: int):
    try:
        return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)
    except OSError:
        raise ParameterError("font", path, "cannot load this font file (use a .ttf or .otf file)",
                             quote=False) from None


def render_text(img: Image.Image, text: str, params: TypographicParams, index: int = 0) -> Image.Image:
    """``img`` with ``text`` drawn on it; words wrap to fit the width, the font shrinks if it still does not fit."""
    img = img.convert("RGB")
    w, h = img.size
    size = max(6, int(round(params.font_size * min(w, h))))
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    while True:
        font = _font(params.font, size)
        stroke = max(1, int(round(params.stroke * size)))
        lines = _wrap(draw, text, font, w * 0.94, stroke)
        box = draw.multiline_textbbox((0, 0), "\n".join(lines), font=font, stroke_width=stroke, align="center")
        tw, th = box[2] - box[0], box[3] - box[1]
        if (tw <= w * 0.98 and th <= h * 0.98) or size <= 6:
            break
        size = max(6, int(size * 0.85))
    rng = np.random.default_rng([params.seed, index])
    x = (w - tw) / 2
    if params.position == "top":
        y = h * 0.03
    elif params.position == "bottom":
        y = h * 0.97 - th
    elif params.position == "random":
        x = rng.uniform(0, max(0.0, w - tw))
        y = rng.uniform(0, max(0.0, h - th))
    else:
        y = (h - th) / 2
    alpha = int(round(255 * params.opacity))
    fill = Image.new("RGB", (1, 1), params.color).getpixel((0, 0)) + (alpha,)
    draw.multiline_text((x - box[0], y - box[1]), "\n".join(lines), font=font, fill=fill, stroke_width=stroke,
                        stroke_fill=(0, 0, 0, alpha), align="center")
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


def _wrap(draw, text: str, font, max_width: float, stroke: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for word in words:
        cand = f"{cur} {word}".strip()
        if cur and draw.textlength(cand, font=font) + 2 * stroke > max_width:
            lines.append(cur)
            cur = word
        else:
            cur = cand
    return lines + [cur] if cur else lines or [text]


def choose_targets(labels: np.ndarray, num_classes: int, rule: str = "random", seed: int = 0,
                   confusion: np.ndarray | None = None) -> np.ndarray:
    """The class written on each image — never its true class. ``random``: uniform over the other classes
    (seeded); ``next``: label + 1 (mod C); ``most-confused``: the class the clean classifier most often
    confuses this class with (needs ``confusion``; falls back to ``next`` for classes never confused)."""
    if num_classes < 2:
        raise CliplabError("a typographic attack needs at least two classes")
    labels = np.asarray(labels)
    if rule == "next":
        return (labels + 1) % num_classes
    if rule == "random":
        rng = np.random.default_rng(seed)
        off = rng.integers(1, num_classes, size=len(labels))
        return (labels + off) % num_classes
    if rule == "most-confused":
        if confusion is None:
            raise ValueError("most-confused needs the clean confusion matrix")
        cm = np.asarray(confusion, dtype=float).copy()
        np.fill_diagonal(cm, -1)
        best = cm.argmax(1)
        best = np.where(cm.max(1) > 0, best, (np.arange(num_classes) + 1) % num_classes)
        return best[labels]
    raise ParameterError("target", rule, f"choose one of {', '.join(RULES)}")


class AttackedSource(ImageSource):
    """The images of ``base`` with ``texts[i]`` written on image i. Cache keys combine the base key, the text and
    the rendering parameters, so attacked embeddings are cached and never mixed up with clean ones."""

    def __init__(self, base: ImageSource, texts: list[str], params: TypographicParams):
        if len(texts) != len(base):
            raise ValueError("one text per image")
        self.base, self.texts, self.params = base, list(texts), params
        self.tag = hash_json({"typographic": asdict(params), "renderer": 1})[:16]
        self.key_errors: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.base)

    def id(self, i: int) -> str:
        return f"{self.base.id(i)} +text {self.texts[i]!r}"

    def keys(self) -> list[str | None]:
        base = self.base.keys()
        self.key_errors = dict(self.base.key_errors)
        return [None if k is None else f"typo:{self.tag}:{hash_json([k, t])[:24]}" for k, t in zip(base, self.texts)]

    def load(self, i: int) -> Image.Image:
        return render_text(self.base.load(i), self.texts[i], self.params, index=i)
