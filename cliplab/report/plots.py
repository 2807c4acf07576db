"""Figures for people (matplotlib, no display needed). Every function writes PNG and/or SVG files atomically."""
from __future__ import annotations

import base64
import io
import sys
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from PIL import Image

from cliplab.files import printable
from cliplab.io import atomic_path


def _plt():
    """pyplot, on the Agg backend (files only) unless a Jupyter kernel runs us: there the user's backend (inline)
    stays, so their own plots keep showing; cliplab closes every figure it draws once written."""
    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # pyplot: only here, after the backend is chosen

    return plt


GRID_DPI = 90  # image grids: 2-inch cells = 180 px thumbnails
THUMB_PX = 180


def save_figure(fig, paths: Sequence[str | Path]) -> list[Path]:
    """Write ``fig`` to each path (format from the suffix). Image grids (``image_grid``) are written at
    ``GRID_DPI`` as 256-colour palette PNGs: thumbnails, a few hundred KB instead of megabytes."""
    grid = getattr(fig, "cliplab_grid", False)
    out = []
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        fmt = p.suffix.lstrip(".").lower() or "png"
        with atomic_path(p) as tmp:
            if grid and fmt == "png":
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=GRID_DPI, bbox_inches="tight")
                Path(tmp).write_bytes(compact_png(buf.getvalue()))
            else:
                fig.savefig(tmp, format=fmt, dpi=GRID_DPI if grid else 130, bbox_inches="tight")
        out.append(p)
    _plt().close(fig)
    return out


def compact_png(data: bytes, max_width: int | None = None) -> bytes:
    """A PNG re-encoded as a 256-colour palette PNG (no dithering), optionally downscaled to ``max_width``;
    returns the original bytes when that is not smaller."""
    with Image.open(io.BytesIO(data)) as im:
        resized = bool(max_width and im.width > max_width)
        im = im.convert("RGB")
        if resized:
            im = im.resize((max_width, max(1, round(im.height * max_width / im.width))), Image.LANCZOS)
        small = im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        small.save(buf, format="PNG", optimize=True)
    return buf.getvalue() if resized or len(buf.getvalue()) < len(data) else data


def png_data_uri(data: bytes, max_width: int) -> str:
    """PNG bytes as a data URI, downscaled to ``max_width`` and palette-encoded (``compact_png``)."""
    return "data:image/png;base64," + base64.b64encode(compact_png(data, max_width)).decode()


def figure_data_uri(fig, max_width: int, dpi: int) -> str:
    """A matplotlib figure as a PNG data URI (see ``png_data_uri``); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return png_data_uri(buf.getvalue(), max_width)


def thumbnail(image, max_side: int = THUMB_PX):
    """A copy of a PIL image (or HxWx3 uint8 array) no larger than ``max_side`` pixels per side."""
    img = Image.fromarray(np.asarray(image)) if not isinstance(image, Image.Image) else image
    if max(img.size) <= max_side:
        return img
    img = img.copy()
    img.thumbnail((max_side, max_side), Image.LANCZOS)
    return img


def wrap_text(text: str, width: int, max_lines: int) -> str:
    """Wrap each line of ``text`` at ``width`` characters; past ``max_lines`` lines the last one ends in '…'. File
    names that are not UTF-8 are spelled ``\\xNN`` (:func:`~cliplab.files.printable`): fonts cannot draw them."""
    lines = [w for part in printable(str(text)).split("\n") for w in (textwrap.wrap(part, width) or [""])]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1].rstrip() + "…"
    return "\n".join(lines)


def grouped_bars(groups: list[str], series: dict[str, list[float]], *, ylabel: str, title: str,
                 errors: dict[str, list[float]] | None = None, percent: bool = True, chance: list[float] | None = None):
    """Bars per group (e.g. dataset) for each series (e.g. model); NaN values are left out."""
    plt = _plt()
    n = max(1, len(series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) * n + 2), 4.2))
    x = np.arange(len(groups))
    scale = 100.0 if percent else 1.0
    for j, (name, vals) in enumerate(series.items()):
        v = np.asarray(vals, dtype=float) * scale
        err = None if not errors or name not in errors else np.asarray(errors[name], dtype=float) * scale
        bars = ax.bar(x + (j - (n - 1) / 2) * width, np.nan_to_num(v), width, label=printable(name), yerr=err, capsize=3)
        for b, val in zip(bars, v):
            if not np.isnan(val):
                ax.annotate(f"{val:.1f}" if percent else f"{val:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    if chance is not None:
        for xi, c in zip(x, chance):
            ax.hlines(c * scale, xi - 0.45, xi + 0.45, colors="grey", linestyles="dotted", linewidth=1)
    groups = [printable(g) for g in groups]
    ax.set_xticks(x, groups, rotation=15 if max((len(g) for g in groups), default=0) > 12 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(printable(title))
    if percent:
        ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    return fig


def image_with_bars(image, labels: list[str], values: list[float], *, title: str = "", highlight: str | None = None,
                    xlabel: str = "cosine similarity"):
    """An image beside a horizontal bar chart of its top-k classes (best on top)."""
    plt = _plt()
    k = len(labels)
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(8.5, max(2.6, 0.38 * k + 1)), gridspec_kw={"width_ratios": [1, 1.6]})
    a0.imshow(image)
    a0.axis("off")
    a0.set_title(printable(title), fontsize=8)
    labels = [printable(lab) for lab in labels]
    highlight = printable(highlight) if highlight is not None else None
    y = np.arange(k)[::-1]
    colors = ["tab:green" if highlight is not None and lab == highlight else "tab:blue" for lab in labels]
    a1.barh(y, values, color=colors)
    a1.set_yticks(y, [lab if len(lab) <= 40 else lab[:37] + "..." for lab in labels], fontsize=8)
    lo = min(values) if values else 0.0
    a1.set_xlim(min(0.0, lo - 0.02), max(values) * 1.08 if values and max(values) > 0 else 1.0)
    for yi, v in zip(y, values):
        a1.annotate(f"{v:.3f}", (v, yi), xytext=(2, 0), textcoords="offset points", va="center", fontsize=7)
    a1.set_xlabel(xlabel)
    fig.tight_layout()
    return fig


def image_grid(images: list, captions: list[str], *, title: str = "", cols: int = 5, row_titles: list[str] | None = None,
               highlight: list[bool] | None = None):
    """A grid of thumbnails with a caption under each (scores, labels) and optional row titles, both wrapped,
    not cut; ``highlight`` frames images green/red. ``save_figure`` writes it as a compact PNG."""
    plt = _plt()
    n = len(images)
    cols = max(1, min(cols, n)) if row_titles is None else cols
    rows = max(1, int(np.ceil(n / cols)))
    caps = [wrap_text(c, 30, 5) if c else "" for c in captions]
    titles = [wrap_text(t, 28, 8) for t in (row_titles or [])[:rows]]
    extra = max([c.count("\n") - 1 for c in caps] + [0]) * 0.13  # room for captions longer than two lines
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols + (1.6 if titles else 0),
                                                  (2.25 + extra) * rows + (0.4 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
        if i >= n or images[i] is None:
            continue
        ax.imshow(thumbnail(images[i]))
        ax.set_xlabel(caps[i], fontsize=7)
        if highlight is not None:
            for s in ax.spines.values():
                s.set_visible(True)
                s.set_color("tab:green" if highlight[i] else "tab:red")
                s.set_linewidth(2.5)
    for r, t in enumerate(titles):
        axes[r, 0].set_ylabel(t, fontsize=8, rotation=0, ha="right", va="center", labelpad=10)
    if title:
        fig.suptitle(wrap_text(title, 30 * cols, 2), fontsize=10)
    fig.tight_layout()
    fig.cliplab_grid = True
    return fig
