"""Ground truth in the Oxford5k / Paris6k format: ``<query>_query.txt`` ("<image> x1 y1 x2 y2"), and
``<query>_good.txt``, ``<query>_ok.txt``, ``<query>_junk.txt`` listing image names (no extension)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cliplab.errors import DatasetError


@dataclass
class OxfordQuery:
    name: str
    image: str  # image stem in the gallery
    box: tuple[float, float, float, float] | None
    good: list[str]
    ok: list[str]
    junk: list[str]


def _names(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def read_oxford_gt(folder: str | Path, gallery_stems: set[str] | None = None) -> list[OxfordQuery]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--gt {folder}: folder not found")
    files = sorted(folder.glob("*_query.txt"))
    if not files:
        raise DatasetError(f"--gt {folder}: no *_query.txt files (Oxford/Paris ground-truth format)")
    out = []
    for f in files:
        name = f.name[: -len("_query.txt")]
        parts = f.read_text().split()
        if not parts:
            raise DatasetError(f"{f}: empty query file")
        image = parts[0]
        if gallery_stems is not None and image not in gallery_stems and image.startswith("oxc1_"):
            image = image[len("oxc1_"):]  # Oxford names queries 'oxc1_<image>'
        box = tuple(float(v) for v in parts[1:5]) if len(parts) >= 5 else None
        out.append(OxfordQuery(name, image, box, _names(folder / f"{name}_good.txt"),
                               _names(folder / f"{name}_ok.txt"), _names(folder / f"{name}_junk.txt")))
        if gallery_stems is not None and image not in gallery_stems:
            raise DatasetError(f"{f}: query image {image!r} is not in the gallery folder")
    return out
