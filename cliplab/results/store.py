"""The results store: a folder of row files that every command appends to and ``pandas`` reads directly.

Each command run writes one new file ``<UTC time>-<command>-<run id>.parquet`` (or ``.jsonl``) atomically, so runs
never rewrite each other's rows, concurrent runs cannot corrupt the store, and an interrupted run leaves no
partial file. ``read_results(DIR)`` (or ``pd.read_parquet(DIR)`` for an all-parquet store) gives one frame.

One row per (model, dataset, task, variant, metric): a long format that tables and plots pivot as they need. The
files keep a number of one class under a packed name (``recall[cat]``, ``confusion[cat -> dog]``: the ``COLUMNS``
every store has had); ``read_results`` splits it (``results.result.tidy_metrics``) into ``metric`` and ``class`` /
``true`` / ``predicted``, as a result's ``.metrics`` does.
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import uuid
from pathlib import Path
from typing import Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ConfigDict
from typing_extensions import Required, TypedDict

from cliplab.errors import CliplabError, ParameterError
from cliplab.files import Shape, Str, UserFile, printable
from cliplab.io import atomic_path
from cliplab.results.exports import printable_frame, write_table
from cliplab.results.result import ModelInfo, Rows, tidy_metrics
from cliplab.version import __version__

COLUMNS = ["run_id", "timestamp", "cliplab_version", "command", "task", "model", "pretrained", "model_fingerprint",
           "dataset", "split", "dataset_fingerprint", "variant", "metric", "value", "ci_low", "ci_high", "seed",
           "n", "config", "artifact"]
FORMATS = ("parquet", "jsonl")
FIGURES = "_figures"  # leading underscore: pyarrow's dataset reader skips it, so pd.read_parquet(DIR) just works
_FLOATS = ("value", "ci_low", "ci_high")
_INTS = ("seed", "n")


def _arrow_schema():
    return pa.schema([(c, pa.float64() if c in _FLOATS else pa.int64() if c in _INTS else pa.string())
                      for c in COLUMNS])


class RunRecorder:
    """Collects the rows of one command run; ``context`` fields are shared by all its rows."""

    def __init__(self, command: str, config: dict | None = None):
        self.run_id = uuid.uuid4().hex[:12]
        # to the microsecond: runs made in the same second keep their order (the latest run is the one made last)
        self.timestamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
        self.base = {"run_id": self.run_id, "timestamp": self.timestamp, "cliplab_version": __version__,
                     "command": command, "config": json.dumps(config or {}, sort_keys=True, default=str)}
        self.rows: list[dict] = []
        self.groups: dict[str, str] = {}  # figure file -> the name of the set of figures it belongs to

    def add_rows(self, rows: pd.DataFrame, artifact: str | None = None) -> None:
        """Metric rows (columns ``METRIC_COLUMNS`` of :mod:`cliplab.results.result`) as rows of this run."""
        for row in rows.to_dict(orient="records"):
            self.rows.append({**self.base, **{k: (None if v is pd.NA else v) for k, v in row.items()},
                              "artifact": artifact})

    def add_result(self, result) -> None:
        """The metric rows of a study result."""
        self.add_rows(result.metric_rows())

    def add_figure(self, path: str | Path, result, caption: str, model=None, group: str | None = None) -> None:
        """A figure drawn from ``result`` (copied into the store's ``_figures/`` on write); the row names the
        study's task, its dataset and ``model``, else the study's model (or 'several'). ``group``: the artifact a
        figure of many files belongs to (e.g. ``grids``, one per query): its files are copied into one folder,
        ``_figures/<run>-<group>/``, which the report shows as one set (a picker) instead of one figure each."""
        if group:
            self.groups[str(path)] = group
        rows = Rows()
        rows.add(task=result.task, model=model or (result.models[0] if len(result.models) == 1 else
                                                   ModelInfo("several")),
                 dataset=result.dataset, metric="figure", value=None, variant=caption)
        self.add_rows(rows.frame(), artifact=str(path))

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=COLUMNS)
        df["seed"] = df["seed"].astype("Int64")
        df["n"] = df["n"].astype("Int64")
        return df

    def write(self, folder: str | Path | None, fmt: str = "parquet") -> Path | None:
        if folder is None or not self.rows:
            return None
        if fmt not in FORMATS:
            raise ParameterError("results_format", fmt, "choose parquet or jsonl")
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ParameterError("results", folder, "exists and is not a folder", quote=False)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = self.timestamp.replace(":", "").replace("-", "").split("+")[0]
        command = "".join(ch if ch.isalnum() else "-" for ch in self.base["command"])
        path = folder / f"{stamp}-{command}-{self.run_id}.{fmt}"
        frame = printable_frame(self.frame())
        frame["artifact"] = [self._copy_artifact(a, folder) for a in frame["artifact"]]
        if fmt == "parquet":  # one fixed schema for every file, so the folder reads as one dataset
            table = pa.Table.from_pandas(frame, schema=_arrow_schema(), preserve_index=False)
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp)
        else:
            write_table(path, frame)
        return path

    def _copy_artifact(self, src, folder: Path):
        """Figures travel with the store (relative paths), so a results folder can be moved or sent whole."""
        if not isinstance(src, str) or not Path(src).is_file():
            return None
        group = self.groups.get(src)  # a figure of a set: in the set's folder, named as any other figure
        dest = folder / FIGURES / (f"{self.run_id}-{group}" if group else "") / f"{self.run_id}-{Path(src).name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        return str(dest.relative_to(folder))


class StoreRow(TypedDict, total=False):
    """A row of the results store as a file holds it (parquet and JSONL alike): the columns cliplab writes, those it
    needs marked Required; other columns are kept."""
    __pydantic_config__ = ConfigDict(extra="allow", coerce_numbers_to_str=True)  # noqa: RUF012 - pydantic's hook
    run_id: Required[Str]
    timestamp: Optional[Str]
    cliplab_version: Optional[Str]
    command: Required[Str]
    task: Required[Str]
    model: Required[Str]
    pretrained: Optional[Str]
    model_fingerprint: Optional[Str]
    dataset: Required[Str]
    split: Optional[Str]
    dataset_fingerprint: Optional[Str]
    variant: Optional[Str]
    metric: Required[Str]
    value: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    seed: Optional[int]
    n: Optional[int]
    config: Optional[Str]
    artifact: Optional[Str]


STORE_ROW = Shape(StoreRow, "a row of the results store")


def _store_file(path: Path, folder: Path) -> UserFile:
    return UserFile(path, None, value=f"results folder {folder}")


def read_results(*folders: str | Path) -> pd.DataFrame:
    """All rows of one or more results folders (parquet and JSONL files, in any mix), oldest run first, as one
    tidy frame: the columns of a result's ``.metrics`` (``metric``, ``variant``, ``class``, ``true``, ``predicted``,
    ``value``, ... ``metric_name``) with the run's columns (``run_id``, ``timestamp``, ``command``, ``config``,
    ``artifact``, ...) before ``metric_name``; ``artifact`` paths are made absolute. A file that cannot be read
    (truncated, not the store's rows) is one error naming it."""
    rows: list[dict] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise CliplabError(f"results folder {printable(str(folder))} not found")
        for p in sorted(folder.iterdir()):
            if p.suffix not in (".parquet", ".jsonl") or not p.is_file():
                continue
            file = _store_file(p, folder)
            found = file.parquet() if p.suffix == ".parquet" else file.jsonl()
            for row in found.validate(STORE_ROW):
                a = row.get("artifact")
                row["artifact"] = str(folder / a) if isinstance(a, str) and a not in ("", "None") else None
                rows.append(row)
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in COLUMNS))
    df = pd.DataFrame(rows, columns=COLUMNS + extra)
    for c in _FLOATS:
        df[c] = df[c].astype("float64")
    for c in _INTS:
        df[c] = df[c].astype("Int64")
    return tidy_metrics(df.sort_values(["timestamp", "run_id"], kind="stable").reset_index(drop=True))
