"""Ground truth for image->image retrieval in the two Oxford/Paris formats.

- classic Oxford5k / Paris6k folder: ``<query>_query.txt`` ("<image> x1 y1 x2 y2"), and ``<query>_good.txt``,
  ``<query>_ok.txt``, ``<query>_junk.txt`` listing image names (no extension);
- revisited Oxford/Paris (``gnd_roxford5k.pkl``, ``gnd_rparis6k.pkl``): a pickle holding ``imlist`` (database
  image names), ``qimlist`` (query image names) and ``gnd``, one dict per query with ``bbx`` (x1, y1, x2, y2) and
  ``easy``, ``hard``, ``junk`` (indices into ``imlist``). It is read with an unpickler that only builds plain
  containers, strings, numbers and numpy arrays, so a pickle from elsewhere cannot run code.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

from cliplab.errors import DatasetError, DatasetParameterError


@dataclass
class OxfordQuery:
    name: str
    image: str  # image stem in the gallery
    box: tuple[float, float, float, float] | None
    good: list[str]
    ok: list[str]
    junk: list[str]
    easy: list[str] | None = None  # revisited protocol lists (None for the classic format)
    hard: list[str] | None = None

    @property
    def revisited(self) -> bool:
        return self.easy is not None


def _names(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def read_oxford_gt(path: str | Path, gallery_stems: set[str] | None = None) -> list[OxfordQuery]:
    """Queries of a classic ground-truth folder or a revisited ``gnd_*.pkl`` file."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".pkl":
            raise DatasetParameterError("gt_dir", path, "expected a folder of *_query.txt files or a "
                                        "revisited-Oxford gnd_*.pkl file", quote=False)
        queries = read_revisited_gnd(path)
        if gallery_stems is not None:
            for q in queries:
                if q.image not in gallery_stems:
                    raise DatasetParameterError("gt_dir", path, f"query image {q.image!r} is not in the gallery "
                                                "folder", quote=False)
        return queries
    folder = path
    if not folder.is_dir():
        raise DatasetParameterError("gt_dir", folder, "folder not found", quote=False)
    files = sorted(folder.glob("*_query.txt"))
    if not files:
        raise DatasetParameterError("gt_dir", folder, "no *_query.txt files (Oxford/Paris ground-truth format)",
                                    quote=False)
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


_NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                  ("numpy", "ndarray"), ("numpy", "dtype")}


class _DataUnpickler(pickle.Unpickler):
    """Builds only plain containers, strings, numbers and numpy arrays; anything else is refused."""

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _stem(name: str) -> str:
    return Path(name).stem if Path(name).suffix.lower() in (".jpg", ".jpeg", ".png") else name


def _as_list(v, what: str, path: Path) -> list:
    try:
        return list(v.tolist() if hasattr(v, "tolist") else v)
    except TypeError:
        raise DatasetParameterError("gt_dir", path, f"{what} is not a list", quote=False) from None


def read_revisited_gnd(path: str | Path) -> list[OxfordQuery]:
    """Queries of a revisited Oxford/Paris ground-truth pickle (``easy``/``hard``/``junk`` per query)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = _DataUnpickler(fh).load()
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError, IndexError) as exc:
        raise DatasetParameterError("gt_dir", path, f"cannot read the ground-truth pickle ({exc})",
                                    quote=False) from None
    if not isinstance(data, dict) or not {"imlist", "qimlist", "gnd"} <= set(data):
        raise DatasetParameterError("gt_dir", path, "not a revisited-Oxford gnd file (needs imlist, qimlist, gnd)",
                                    quote=False)
    imlist = [_stem(str(x)) for x in _as_list(data["imlist"], "imlist", path)]
    qimlist = [str(x) for x in _as_list(data["qimlist"], "qimlist", path)]
    gnd = _as_list(data["gnd"], "gnd", path)
    if len(gnd) != len(qimlist):
        raise DatasetParameterError("gt_dir", path, f"{len(gnd)} gnd entries for {len(qimlist)} query images",
                                    quote=False)

    def names(q: int, entry: dict, key: str) -> list[str]:
        idx = _as_list(entry.get(key, []), f"gnd[{q}]['{key}']", path)
        bad = [i for i in idx if not isinstance(i, int) or not 0 <= i < len(imlist)]
        if bad:
            raise DatasetParameterError("gt_dir", path, f"gnd[{q}]['{key}'] has indices outside imlist ({bad[:3]})",
                                        quote=False)
        return [imlist[i] for i in idx]

    out, seen = [], {}
    for q, (qname, entry) in enumerate(zip(qimlist, gnd)):
        if not isinstance(entry, dict) or not {"easy", "hard"} <= set(entry):
            raise DatasetParameterError("gt_dir", path, f"gnd[{q}] has no 'easy'/'hard' lists", quote=False)
        bbx = entry.get("bbx")
        box = None
        if bbx is not None:
            vals = [float(v) for v in _as_list(bbx, f"gnd[{q}]['bbx']", path)]
            if len(vals) != 4:
                raise DatasetParameterError("gt_dir", path, f"gnd[{q}]['bbx'] should be x1, y1, x2, y2", quote=False)
            box = tuple(vals)
        stem = _stem(qname)
        seen[stem] = seen.get(stem, 0) + 1
        label = stem if seen[stem] == 1 else f"{stem}#{seen[stem]}"
        easy, hard, junk = names(q, entry, "easy"), names(q, entry, "hard"), names(q, entry, "junk")
        out.append(OxfordQuery(label, stem, box, easy, hard, junk, easy=easy, hard=hard))
    return out
