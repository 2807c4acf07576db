"""Ground truth for image->image retrieval in the two Oxford/Paris formats.

- classic Oxford5k / Paris6k folder: ``<query>_query.txt`` ("<image> x1 y1 x2 y2"), and ``<query>_good.txt``,
  ``<query>_ok.txt``, ``<query>_junk.txt`` listing image names (no extension);
- revisited Oxford/Paris (``gnd_roxford5k.pkl``, ``gnd_rparis6k.pkl``): a pickle holding ``imlist`` (database
  image names), ``qimlist`` (query image names) and ``gnd``, one dict per query with ``bbx`` (x1, y1, x2, y2) and
  ``easy``, ``hard``, ``junk`` (indices into ``imlist``). It is read with an unpickler that only builds plain
  containers, strings, numbers and numpy arrays, so a pickle from elsewhere cannot run code.

and a table beside them (:func:`read_table_gt`): a CSV or TSV with a header row and the columns ``query``,
``relevant`` and (optional) ``junk``, for any set converted by hand (e.g. a paintings set).
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from cliplab.errors import DatasetParameterError
from cliplab.files import FileName, Shape, UserFile, printable


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


Coordinate = Annotated[float, Field(allow_inf_nan=False)]


class QueryLine(BaseModel):
    """The line of a classic ``<query>_query.txt``: the query image and, optionally, its box."""
    image: FileName
    box: tuple[Coordinate, Coordinate, Coordinate, Coordinate] | None = None


QUERY_LINE = Shape(QueryLine, "IMAGE x1 y1 x2 y2")


def _gt_file(path: Path, folder: Path) -> UserFile:
    return UserFile(path, "gt", value=folder, error=DatasetParameterError)


def _names(path: Path, folder: Path) -> list[str]:
    """The image names of a ``_good``/``_ok``/``_junk`` file, one per line (none when there is no such file)."""
    if not path.is_file():
        return []
    file = _gt_file(path, folder)
    text = file.text()
    return [line.text for line in file.lines("image names", comments=False, text=text)] if text.strip() else []


def _query_line(path: Path, folder: Path) -> QueryLine:
    file = _gt_file(path, folder)
    first = file.lines("query image (IMAGE x1 y1 x2 y2)", comments=False)[0]
    parts = first.text.split()
    if len(parts) not in (1, 5):
        raise file.fail(f"expected IMAGE or IMAGE x1 y1 x2 y2, found {len(parts)} values", f"line {first.number}")
    return QUERY_LINE.validate({"image": parts[0], "box": parts[1:] or None}, file, f"line {first.number}")


TABLE_GT_SUFFIXES = (".csv", ".tsv")


def read_oxford_gt(path: str | Path, gallery_stems: set[str] | None = None) -> list[OxfordQuery]:
    """Queries of a classic ground-truth folder, a revisited ``gnd_*.pkl`` file or a CSV/TSV table
    (:func:`read_table_gt`)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in TABLE_GT_SUFFIXES:
        return read_table_gt(path, gallery_stems)
    if path.is_file():
        if path.suffix.lower() != ".pkl":
            raise DatasetParameterError("gt", path, "expected a folder of *_query.txt files, a revisited-Oxford "
                                        "gnd_*.pkl file or a .csv/.tsv table (query, relevant[, junk])",
                                        quote=False)
        queries = read_revisited_gnd(path)
        if gallery_stems is not None:
            for q in queries:
                if q.image not in gallery_stems:
                    raise DatasetParameterError("gt", path, f"query image {q.image!r} is not in the gallery "
                                                "folder", quote=False)
        return queries
    folder = path
    if not folder.is_dir():
        raise DatasetParameterError("gt", folder, "folder not found", quote=False)
    files = sorted(folder.glob("*_query.txt"))
    if not files:
        raise DatasetParameterError("gt", folder, "no *_query.txt files (Oxford/Paris ground-truth format)",
                                    quote=False)
    out = []
    for f in files:
        name = f.name[: -len("_query.txt")]
        line = _query_line(f, folder)
        image = line.image
        if gallery_stems is not None and image not in gallery_stems and image.startswith("oxc1_"):
            image = image[len("oxc1_"):]  # Oxford names queries 'oxc1_<image>'
        out.append(OxfordQuery(name, image, line.box, _names(folder / f"{name}_good.txt", folder),
                               _names(folder / f"{name}_ok.txt", folder), _names(folder / f"{name}_junk.txt", folder)))
        if gallery_stems is not None and image not in gallery_stems:
            raise _gt_file(f, folder).fail(f"query image {printable(image)!r} is not in the gallery folder")
    return out


class TableRow(BaseModel):
    """A row of a ground-truth table: the query image, and image names separated by ';' (a cell may hold one)."""
    model_config = ConfigDict(extra="forbid")
    query: FileName
    relevant: str = ""
    junk: str = ""


TABLE_ROW = Shape(TableRow, "columns query, relevant[, junk] (image names; several separated by ';')")


def _cell_names(text: str) -> list[str]:
    return [n.strip() for n in text.split(";") if n.strip()]


def read_table_gt(path: str | Path, gallery_stems: set[str] | None = None) -> list[OxfordQuery]:
    """Queries of a ground-truth table: a CSV (TSV) file with a header row naming the columns ``query``,
    ``relevant`` and, optionally, ``junk``.

    Each cell names gallery images, by file name or stem (``img_12.jpg`` and ``img_12`` are the same image; a folder
    part is dropped, as in the Oxford/Paris files), several in one cell separated by ``;``. A query may take one row
    per relevant image (``q1,a`` and ``q1,b``) or one row with a list (``q1,a;b``), or both: its rows are merged, in
    the order of its first row. The query image is left out of its own ranking (it is junk to itself) unless it is
    listed among its relevant images. With ``gallery_stems`` every name must be a gallery image: an unknown one is
    one error naming the file, the row and line, and the field."""
    path = Path(path)
    file = UserFile(path, "gt", error=DatasetParameterError)
    records = file.csv("\t" if file.suffix == ".tsv" else ",")
    if "query" not in records.columns or "relevant" not in records.columns:
        raise file.fail(f"needs the columns query and relevant (and optionally junk); it has "
                        f"{', '.join(records.columns) or 'none'}", "line 1")
    rows = records.validate(TABLE_ROW)
    merged: dict[str, tuple[list[str], list[str]]] = {}
    for row, place in zip(rows, records.places):
        query = _stem(Path(row.query).name)
        relevant = [_stem(Path(n).name) for n in _cell_names(row.relevant)]
        junk = [_stem(Path(n).name) for n in _cell_names(row.junk)]
        if not relevant and not junk:
            raise file.fail("field relevant: should name at least one image (or give junk)", place)
        if gallery_stems is not None:
            for name, col in ((query, "query"), *((n, "relevant") for n in relevant), *((n, "junk") for n in junk)):
                if name not in gallery_stems:
                    raise file.fail(f"field {col}: image {printable(name)!r} is not in the gallery (names are "
                                    "matched by file stem)", place)
        pos, jk = merged.setdefault(query, ([], []))
        pos += [n for n in relevant if n not in pos]
        jk += [n for n in junk if n not in jk]
    if not merged:
        raise file.fail("has no rows: one row per query (or per query and relevant image) is needed")
    out = []
    for query, (relevant, junk) in merged.items():
        if query not in relevant and query not in junk:
            junk = junk + [query]  # the query image is not its own answer
        out.append(OxfordQuery(query, query, None, relevant, [], junk))
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


def _plain(value):
    """numpy arrays and scalars of the pickle as lists and numbers."""
    return value.tolist() if hasattr(value, "tolist") else value


Plain = BeforeValidator(_plain)
Index = Annotated[StrictInt, Plain]
Indices = Annotated[list[Index], Plain]


class GndEntry(BaseModel):
    easy: Indices
    hard: Indices
    junk: Indices = []
    bbx: Annotated[tuple[Annotated[Coordinate, Plain], Annotated[Coordinate, Plain], Annotated[Coordinate, Plain],
                         Annotated[Coordinate, Plain]] | None, Plain] = None


class GndFile(BaseModel):
    imlist: Annotated[list[Annotated[FileName, Plain]], Plain]
    qimlist: Annotated[list[Annotated[FileName, Plain]], Plain]
    gnd: Annotated[list[GndEntry], Plain]


GND = Shape(GndFile, "a revisited-Oxford gnd file (imlist, qimlist, gnd)")


def read_revisited_gnd(path: str | Path) -> list[OxfordQuery]:
    """Queries of a revisited Oxford/Paris ground-truth pickle (``easy``/``hard``/``junk`` per query)."""
    path = Path(path)
    file = UserFile(path, "gt", error=DatasetParameterError)
    data = file.read_bytes()
    try:
        raw = _DataUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - a damaged pickle fails in any of the unpickler's ways
        raise file.fail(f"cannot read the ground-truth pickle ({type(exc).__name__}: {printable(str(exc))})"
                        ) from None
    gnd = GND.validate(raw, file)
    imlist = [_stem(x) for x in gnd.imlist]
    if len(gnd.gnd) != len(gnd.qimlist):
        raise file.fail(f"{len(gnd.gnd)} gnd entries for {len(gnd.qimlist)} query images")

    def names(q: int, key: str) -> list[str]:
        idx = getattr(gnd.gnd[q], key)
        bad = [i for i in idx if not 0 <= i < len(imlist)]
        if bad:
            raise file.fail(f"gnd[{q}]['{key}'] has indices outside imlist ({bad[:3]})")
        return [imlist[i] for i in idx]

    out, seen = [], {}
    for q, (qname, entry) in enumerate(zip(gnd.qimlist, gnd.gnd)):
        stem = _stem(qname)
        seen[stem] = seen.get(stem, 0) + 1
        label = stem if seen[stem] == 1 else f"{stem}#{seen[stem]}"
        easy, hard, junk = names(q, "easy"), names(q, "hard"), names(q, "junk")
        out.append(OxfordQuery(label, stem, entry.bbx, easy, hard, junk, easy=easy, hard=hard))
    return out
