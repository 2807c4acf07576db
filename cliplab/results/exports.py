"""Machine-readable outputs: CLIP_benchmark-shaped JSON, per-image prediction CSVs, embedding files."""
from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import sys
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version as _package_version
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from cliplab.errors import ParameterError
from cliplab.files import printable, printable_value
from cliplab.io import _json_default, atomic_path, write_json_atomic
from cliplab.progress import progress_bar
from cliplab.results.result import Figure
from cliplab.version import __version__


def _version(package: str) -> str:
    """An installed package's version: the module's own when it is loaded (torch's carries its CUDA build, e.g.
    ``2.14.1+cu130``), else its metadata (so writing a record does not import it)."""
    if package in sys.modules:
        return str(getattr(sys.modules[package], "__version__", "") or _package_version(package))
    try:
        return _version_file(package) or _package_version(package)
    except PackageNotFoundError:
        return "not installed"


def _version_file(package: str) -> str | None:
    """``__version__`` as the package's ``version.py`` spells it (torch's with its CUDA build), read without importing
    the package: a record says the same whether the run imported it or answered from the cache."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        try:
            text = (Path(folder) / "version.py").read_text(encoding="utf-8")
        except OSError:
            continue
        found = re.search(r"^__version__\s*(?::\s*str\s*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
        if found:
            return found.group(1)
    return None


TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")  # what a table can be written as


@dataclass
class FileArtifact:
    """A file a result writes only when asked (like :class:`~cliplab.results.result.Figure`, without a caption):
    ``save(path)`` writes it, with any sidecar files next to it (and may return every path it wrote); ``write``
    returns ``[(path, None)]`` per file."""
    description: str
    save: Callable[[Path], list[Path] | None]

    def write(self, path: str | Path) -> list[tuple[Path, None]]:
        path = Path(path)
        written = self.save(path)
        return [(Path(p), None) for p in (written or [path])]


def provenance() -> dict:
    return {"cliplab_version": __version__, "torch": _version("torch"), "python": platform.python_version(),
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_json(path: str | Path, record: dict) -> None:
    """A JSON document, written atomically; file names that are not UTF-8 spelled with ``\\xNN`` (:func:`printable`)."""
    write_json_atomic(path, printable_value(record))


def printable_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its text cells and column names :func:`printable` (a file name that is not UTF-8 written with
    ``\\xNN`` for its bytes, so CSV, JSONL and parquet writers can encode it); ``df`` itself when nothing changes."""
    def needs(v) -> bool:
        return isinstance(v, str) and printable(v) != v or isinstance(v, (list, tuple, dict)) and \
            printable_value(v) != v

    columns = [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype)]
    bad = [c for c in columns if any(needs(v) for v in df[c])]
    names = {c: printable(c) for c in df.columns if isinstance(c, str) and printable(c) != c}
    if not bad and not names:
        return df
    out = df.copy()
    for c in bad:
        out[c] = [printable_value(v) if isinstance(v, (str, list, tuple, dict)) else v for v in df[c]]
    return out.rename(columns=names)


def _jsonl(df: pd.DataFrame) -> str:
    """One JSON object per row, every float in full (the shortest text that reads back as the same number;
    ``DataFrame.to_json`` keeps 10 significant digits), missing and non-finite values as null."""
    def plain(v):
        if v is None or v is pd.NA:
            return None
        if isinstance(v, (float, np.floating)):
            return float(v) if math.isfinite(v) else None
        return v

    return "".join(json.dumps({k: plain(v) for k, v in row.items()}, default=_json_default) + "\n"
                   for row in df.to_dict(orient="records"))


def write_table(path: str | Path, df: pd.DataFrame) -> None:
    """CSV, JSONL or parquet by extension, written atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    df = printable_frame(df)
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif suffix in (".jsonl", ".ndjson"):
            Path(tmp).write_text(_jsonl(df), encoding="utf-8")
        else:
            raise ValueError(f"{path}: use .csv, .parquet or .jsonl")


def embedding_frame(result, dataset) -> pd.DataFrame:
    """One row per embedded image of an embedding result: ``row`` (its row in the array), ``id`` and, for labelled
    datasets, ``label`` and ``classname``."""
    ids = [printable(dataset.source.id(int(i))) for i in result.indices]
    meta = pd.DataFrame({"row": np.arange(len(ids)), "id": ids})
    if dataset.labels is not None:
        meta["label"] = dataset.labels[result.indices]
        if dataset.classnames:
            meta["classname"] = np.asarray(dataset.classnames, dtype=object)[meta["label"].to_numpy()]
    return meta


def write_embeddings(path: str | Path, result, dataset) -> list[Path]:
    """``.npy`` (+ ``<stem>.ids.csv`` sidecar with id/path/label per row) or ``.parquet`` (one row per image)."""
    path = Path(path)
    meta = embedding_frame(result, dataset)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, result.embeddings)
        side = path.with_name(path.stem + ".ids.csv")
        write_table(side, meta)
        return [path, side]
    if suffix == ".parquet":
        meta["embedding"] = list(result.embeddings)
        write_table(path, meta)
        return [path]
    raise ParameterError("output", path, "use .npy or .parquet", quote=False)


def write_artifact(path: str | Path, result, name: str, artifacts: dict, config: dict) -> list[tuple[Path, str | None]]:
    """Write one thing a study result offers: ``record`` (its JSON document, with the run's config and
    provenance), a table (CSV/parquet/JSONL by suffix), or anything with ``write(path) -> [(path, caption)]``
    (figures; files such as an index). Returns (path, caption) per file written; the caption is None for anything
    that is not a figure."""
    path = Path(path)
    if name == "record":
        models = [asdict(m) for m in result.models]  # name, pretrained, fingerprint, backend, precision
        write_json(path, {**result.record(), "models": models, "config": config, **provenance()})
        return [(path, None)]
    obj = artifacts[name]
    if isinstance(obj, pd.DataFrame):
        write_table(path, obj)
        return [(path, None)]
    if isinstance(obj, Figure) and not obj.many:  # a figure of many files counts them itself
        with progress_bar(1, f"drawing {obj.caption}", unit="figures") as bar:
            written = obj.write(path)
            bar.advance()
        return [(Path(p), caption) for p, caption in written]
    if callable(getattr(obj, "write", None)):  # a Figure, or any artifact that writes itself (e.g. an index)
        return [(Path(p), caption) for p, caption in obj.write(path)]
    raise TypeError(f"artifact {name!r}: cannot write a {type(obj).__name__}")
