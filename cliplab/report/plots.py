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


TEXT_PT = 8  # the smallest text in report figures: >= 9 px on the page in a figure at most FULL_WIDTH wide
_CHAR_IN = 0.068  # width of an average character at TEXT_PT, inches
_ROW_IN = 0.28  # height of a table row (a class) at TEXT_PT, inches
PAGE_PX = 1200  # the report's page width: wider images are shown smaller
REPORT_DPI = 110  # the report draws its figures at this resolution
FULL_WIDTH = 10.5  # inches: a figure this wide fills the page at REPORT_DPI (with room for bbox_inches='tight')
MIN_TEXT_PX = 9  # the smallest text on the page, in pixels
GRID_DPI = 90  # image grids: 2-inch cells = 180 px thumbnails
THUMB_PX = 180


def save_figure(fig, paths: Sequence[str | Path], description: str | None = None) -> list[Path]:
    """Write ``fig`` to each path (format from the suffix). Image grids (``image_grid``) are written at
    ``GRID_DPI`` as 256-colour palette PNGs: thumbnails, a few hundred KB instead of megabytes. ``description``
    (e.g. how the images shown were chosen) travels in the file (PNG and SVG metadata); the report shows it under
    the figure (``figure_description``)."""
    grid = getattr(fig, "cliplab_grid", False)
    meta = {"Description": description} if description else None
    out = []
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        fmt = p.suffix.lstrip(".").lower() or "png"
        with atomic_path(p) as tmp:
            if grid and fmt == "png":
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=GRID_DPI, bbox_inches="tight", metadata=meta)
                Path(tmp).write_bytes(compact_png(buf.getvalue()))
            else:
                fig.savefig(tmp, format=fmt, dpi=GRID_DPI if grid else 130, bbox_inches="tight",
                            metadata=meta if fmt in ("png", "svg") else None)
        out.append(p)
    _plt().close(fig)
    return out


def figure_description(path: str | Path) -> str:
    """The description a figure file carries (``save_figure``); '' when it has none."""
    try:
        with Image.open(path) as im:
            return str(getattr(im, "text", {}).get("Description", ""))
    except (OSError, ValueError):
        return ""


def compact_png(data: bytes, max_width: int | None = None) -> bytes:
    """A PNG re-encoded as a 256-colour palette PNG (no dithering), optionally downscaled to ``max_width``, its
    description kept; returns the original bytes when that is not smaller."""
    from PIL.PngImagePlugin import PngInfo

    with Image.open(io.BytesIO(data)) as im:
        resized = bool(max_width and im.width > max_width)
        info = PngInfo()
        if getattr(im, "text", {}).get("Description"):
            info.add_itxt("Description", im.text["Description"])
        im = im.convert("RGB")
        if resized:
            im = im.resize((max_width, max(1, round(im.height * max_width / im.width))), Image.LANCZOS)
        small = im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        small.save(buf, format="PNG", optimize=True, pnginfo=info)
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
    """Bars per group (e.g. dataset) for each series (e.g. model), each bar labelled with its value; NaN values
    are left out. At most ``FULL_WIDTH`` wide, no text under ``TEXT_PT`` points."""
    plt = _plt()
    n = max(1, len(series))
    width = 0.8 / n
    fig_w = min(FULL_WIDTH, max(5.0, 0.9 * len(groups) * n + 2))
    fig, ax = plt.subplots(figsize=(fig_w, 4.2))
    x = np.arange(len(groups))
    scale = 100.0 if percent else 1.0
    upright = (fig_w - 1.5) / max(1, len(groups)) * width < 0.4  # bars too narrow for a level label
    for j, (name, vals) in enumerate(series.items()):
        v = np.asarray(vals, dtype=float) * scale
        err = None if not errors or name not in errors else np.asarray(errors[name], dtype=float) * scale
        bars = ax.bar(x + (j - (n - 1) / 2) * width, np.nan_to_num(v), width, label=printable(name), yerr=err, capsize=3)
        for b, val in zip(bars, v):
            if not np.isnan(val):
                ax.annotate(f"{val:.1f}" if percent else f"{val:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=TEXT_PT, xytext=(0, 2), textcoords="offset points",
                            rotation=90 if upright else 0)
    if chance is not None:
        for xi, c in zip(x, chance):
            ax.hlines(c * scale, xi - 0.45, xi + 0.45, colors="grey", linestyles="dotted", linewidth=1)
    groups = [printable(g) for g in groups]
    ax.set_xticks(x, [wrap_text(g, 24, 2) for g in groups], fontsize=TEXT_PT + 1,
                  rotation=15 if len(groups) * 12 > (fig_w - 1.5) * 10 else 0)
    ax.tick_params(axis="y", labelsize=TEXT_PT + 1)
    ax.set_ylabel(ylabel)
    ax.set_title(printable(title))
    if percent:
        ax.set_ylim(0, 112 if upright else 105)
    ax.legend(fontsize=TEXT_PT, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
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
    not cut; ``highlight`` frames images green/red. ``save_figure`` writes it as a compact PNG. A wide grid is
    shown smaller on the page (``PAGE_PX``): its text grows so that it still reads at ``MIN_TEXT_PX`` or more."""
    plt = _plt()
    n = len(images)
    cols = max(1, min(cols, n)) if row_titles is None else cols
    rows = max(1, int(np.ceil(n / cols)))
    width = 2.0 * cols + (1.6 if row_titles else 0)
    shrink = min(1.0, PAGE_PX / (width * GRID_DPI))  # how much smaller the page shows it
    cap_pt = max(7.0, MIN_TEXT_PX * 72 / GRID_DPI / shrink)
    title_pt = max(8.0, cap_pt)
    caps = [wrap_text(c, int(30 * 7 / cap_pt), 6) if c else "" for c in captions]
    titles = [wrap_text(t, int(28 * 8 / title_pt), 8) for t in (row_titles or [])[:rows]]
    line_in = cap_pt / 72 * 1.25
    extra = max([c.count("\n") + 1 for c in caps] + [0]) * line_in - 0.25  # captions below the 2-inch image
    fig, axes = plt.subplots(rows, cols, figsize=(width, (2.0 + max(0.25, extra)) * rows + (0.5 if title else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
        if i >= n or images[i] is None:
            continue
        ax.imshow(thumbnail(images[i]))
        ax.set_xlabel(caps[i], fontsize=cap_pt)
        if highlight is not None:
            for s in ax.spines.values():
                s.set_visible(True)
                s.set_color("tab:green" if highlight[i] else "tab:red")
                s.set_linewidth(2.5)
    for r, t in enumerate(titles):
        axes[r, 0].set_ylabel(t, fontsize=title_pt, rotation=0, ha="right", va="center", labelpad=10)
    if title:
        fig.suptitle(wrap_text(title, int(30 * cols * 7 / cap_pt), 4), fontsize=max(10.0, title_pt))
    fig.tight_layout()
    fig.cliplab_grid = True
    return fig


def class_recall_figure(values, rows: list[str], columns: list[str], confusions: list[tuple[str, list[str], dict]],
                        *, title: str, width: float = FULL_WIDTH):
    """Per-class numbers as a heatmap, a row per class and a labelled column per evaluation, every cell written
    out; beside it one confusion panel per ``(title, classes, {(true, predicted): count})``: the row-normalised
    matrix when every cell is known, else the largest counts off the diagonal. At most ``width`` inches wide
    (panels that do not fit go below the heatmap); no text under ``TEXT_PT`` points."""
    plt = _plt()
    values = np.asarray(values, dtype=float)
    heads = [wrap_text(c, 18, 3) for c in columns]
    full = [classes for _, classes, cells in confusions if _full(classes, cells)]
    if full:  # the matrices number their classes: the heatmap's rows say which number is which class
        rows = [f"{full[0].index(r) + 1}. {r}" if r in full[0] else r for r in rows]
    name_w = _CHAR_IN * max([len(r) for r in rows] + [4]) + 0.3
    heat = (name_w + 0.9 * len(columns), _ROW_IN * len(rows) + 0.2 * max(h.count("\n") + 1 for h in heads) + 0.7)
    panels = [_confusion_size(classes, cells) for _, classes, cells in confusions]
    one_row = heat[0] + sum(w for w, _ in panels) <= width
    if one_row or not panels:
        fig = plt.figure(figsize=(min(width, heat[0] + sum(w for w, _ in panels)),
                                  max([heat[1]] + [h for _, h in panels]) + 0.4), layout="constrained")
        grid = fig.add_gridspec(1, 1 + len(panels), width_ratios=[heat[0]] + [w for w, _ in panels])
        axes = [fig.add_subplot(grid[0, j]) for j in range(1 + len(panels))]
    else:
        per_row = max(1, int(width // max(w for w, _ in panels)))
        n_rows = -(-len(panels) // per_row)
        heights = [heat[1]] + [max(h for _, h in panels[r * per_row:(r + 1) * per_row]) for r in range(n_rows)]
        fig = plt.figure(figsize=(width, sum(heights) + 0.4), layout="constrained")
        grid = fig.add_gridspec(1 + n_rows, per_row, height_ratios=heights)
        axes = [fig.add_subplot(grid[0, :])] + [fig.add_subplot(grid[1 + i // per_row, i % per_row])
                                               for i in range(len(panels))]
    _heatmap(axes[0], values, rows, heads)
    for ax, (name, classes, cells) in zip(axes[1:], confusions):
        _confusion(ax, name, classes, cells)
    fig.suptitle(title, fontsize=TEXT_PT + 2)
    return fig


def _heatmap(ax, values, rows: list[str], heads: list[str]) -> None:
    ax.set_label("per-class recall")
    ax.imshow(values, cmap="Blues", vmin=0, vmax=100, aspect=_ROW_IN / 0.9, interpolation="nearest")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "—" if np.isnan(v) else f"{v:.1f}", ha="center", va="center", fontsize=TEXT_PT,
                color="white" if v > 60 else "black")
    ax.set_xticks(np.arange(len(heads)), heads, fontsize=TEXT_PT)
    ax.xaxis.tick_top()
    ax.set_yticks(np.arange(len(rows)), rows, fontsize=TEXT_PT)
    ax.tick_params(length=0)
    ax.set_title("recall (%)", fontsize=TEXT_PT + 1)


ANNOTATED = 12  # confusion matrices of up to this many classes have their numbers written in the cells


def _cell_in(classes: list[str]) -> float:
    """A confusion cell's side: room for its number, else small enough for two matrices side by side."""
    return _ROW_IN if len(classes) <= ANNOTATED else min(_ROW_IN, 3.6 / len(classes))


def _full(classes: list[str], cells: dict) -> bool:
    return len(classes) <= 30 and all((t, p) in cells for t in classes for p in classes)


def _confusion_size(classes: list[str], cells: dict) -> tuple[float, float]:
    if _full(classes, cells):
        side = _cell_in(classes) * max(len(classes), 4)
        return side + (0.8 if len(classes) <= ANNOTATED else 1.4), side + 1.3
    longest = max([len(f"{t} → {p}") for t, p in cells] + [10])
    return _CHAR_IN * min(longest, 60) + 2.0, _ROW_IN * 10 + 1.0


def _confusion(ax, name: str, classes: list[str], cells: dict) -> None:
    """A confusion panel: the matrix in % of each true class (classes by number, as the heatmap numbers them), or
    the 10 largest counts off the diagonal."""
    ax.set_label("confusion")
    if _full(classes, cells):
        cm = np.array([[cells[(t, p)] for p in classes] for t in classes], dtype=float)
        pct = 100 * cm / np.maximum(cm.sum(1, keepdims=True), 1)
        image = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100, aspect="equal", interpolation="nearest")
        if len(classes) <= ANNOTATED:
            for (i, j), v in np.ndenumerate(pct):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=TEXT_PT,
                        color="white" if v > 60 else "black")
        else:
            ax.figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=TEXT_PT)
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, [str(i + 1) for i in ticks], fontsize=TEXT_PT)
        ax.set_yticks(ticks, [str(i + 1) for i in ticks], fontsize=TEXT_PT)
        ax.set_xlabel("predicted", fontsize=TEXT_PT)
        ax.set_ylabel("true", fontsize=TEXT_PT)
        ax.set_title(f"confusion, % of each true class\n{name}", fontsize=TEXT_PT + 1)
        return
    off = sorted(((v, t, p) for (t, p), v in cells.items() if t != p and v > 0), key=lambda x: -x[0])[:10][::-1]
    y = np.arange(len(off))
    ax.barh(y, [v for v, _, _ in off], color="tab:orange")
    ax.set_yticks(y, [wrap_text(f"{t} → {p}", 60, 1) for _, t, p in off], fontsize=TEXT_PT)
    ax.tick_params(axis="x", labelsize=TEXT_PT)
    ax.set_xlabel("images", fontsize=TEXT_PT)
    ax.set_title(f"most frequent confusions (true → predicted)\n{name}", fontsize=TEXT_PT + 1)
    if not off:
        ax.text(0.5, 0.5, "no confusions", transform=ax.transAxes, ha="center", fontsize=TEXT_PT)


SIMILARITY_ANNOTATED = 16  # similarity matrices of up to this many images (and 24 candidates) have numbers in cells


def similarity_order(scores) -> list[int]:
    """Image order of a similarity matrix: grouped by the candidate each image scores highest (in the candidates'
    order), best-scoring first within a group, so a model that tells the candidates apart draws a diagonal."""
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return []
    best = scores.argmax(1)
    return sorted(range(len(scores)), key=lambda i: (int(best[i]), -float(scores[i, best[i]]), i))


def similarity_matrix(scores, images: list, image_names: list[str], candidates: list[str], *, title: str,
                      width: float = FULL_WIDTH, panels: list[str] | None = None):
    """A text x image cosine-similarity matrix (as CLIP's own notebook draws it): a row per candidate (class name
    or prompt), a column per image with its thumbnail above, images ordered by :func:`similarity_order`; every
    cell's cosine written out while the matrix is small (``SIMILARITY_ANNOTATED``), a colour bar otherwise. At
    most ``width`` inches wide; no text under ``TEXT_PT`` points.

    Several models side by side: ``scores`` a list of matrices (images x candidates, the same images and
    candidates) and ``panels`` their titles; the images keep the first model's order in every panel and each panel
    has its own colour scale (cosines of different models are not on one scale)."""
    plt = _plt()
    mats = [np.asarray(m, dtype=float) for m in (scores if panels else [scores])]
    panels = panels or [None]
    order = similarity_order(mats[0])
    n_img, n_txt = mats[0].shape[0], mats[0].shape[1]
    names = [wrap_text(printable(c), 40, 2) for c in candidates]
    name_w = _CHAR_IN * max([len(line) for n in names for line in n.split("\n")] + [4]) + 0.3
    annotate = n_img <= SIMILARITY_ANNOTATED and n_txt <= 24
    per = (width - name_w - 0.3 * len(mats)) / len(mats)  # inches for one panel's cells
    cell = max(0.1, min(0.62, (per - (0.0 if annotate else 0.7)) / max(n_img, 1)))
    thumbs = annotate and all(im is not None for im in images)
    fig_w = min(width, name_w + len(mats) * (cell * n_img + (0.3 if annotate else 1.0)))
    fig_h = _ROW_IN * n_txt + (cell + 0.5 if thumbs else 0.3) + 1.2 + (0.3 if panels[0] else 0)
    fig = plt.figure(figsize=(fig_w, fig_h), layout="constrained")
    outer = fig.add_gridspec(1, len(mats))
    shown = [printable(image_names[i]) for i in order]
    for k, (values, head) in enumerate(zip(mats, panels)):
        values = values[order].T  # candidates x images
        if thumbs:
            grid = outer[0, k].subgridspec(2, n_img, height_ratios=[cell, _ROW_IN * n_txt])
            for j, i in enumerate(order):
                tax = fig.add_subplot(grid[0, j])
                tax.imshow(thumbnail(images[i], 120))
                tax.axis("off")
            ax = fig.add_subplot(grid[1, :])
        else:
            ax = fig.add_subplot(outer[0, k])
        ax.set_label("similarity")
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        image = ax.imshow(values, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1e-6, aspect="auto",
                          interpolation="nearest")
        if annotate:
            mid = (lo + hi) / 2
            for (i, j), v in np.ndenumerate(values):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=TEXT_PT,
                        color="black" if v > mid else "white")
        else:
            fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01).ax.tick_params(labelsize=TEXT_PT)
        ax.set_yticks(np.arange(n_txt), names if k == 0 else [""] * n_txt, fontsize=TEXT_PT)
        if n_img <= 40:
            ax.set_xticks(np.arange(n_img), [t if len(t) <= 18 else t[:17] + "…" for t in shown], fontsize=TEXT_PT,
                          rotation=60, ha="right")
        else:
            ax.set_xticks([])
            ax.set_xlabel(f"{n_img} images, grouped by their best-scoring candidate", fontsize=TEXT_PT)
        ax.tick_params(length=0)
        if head:
            ax.set_title(printable(head), fontsize=TEXT_PT + 1)
    fig.suptitle(title, fontsize=TEXT_PT + 2)
    return fig
