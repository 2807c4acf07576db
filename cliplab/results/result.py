"""The study-result contract: what every ``run_<study>`` returns, so that the results store, the ``--output``
files, the terminal tables and the HTML report are each written once, generically.

A study result carries who and what was evaluated (``task``, ``models``, ``dataset``, ``params``, ``failures``)
and offers:

- ``metric_rows()``: the long-format rows of the results store (one row per model, dataset, task, variant,
  metric; columns ``METRIC_COLUMNS``);
- ``summary()``: the one line a person reads;
- ``tables()``: the tables a person reads (plain data, rendered by :mod:`cliplab.report.tables`);
- ``record()``: the machine-readable document written by ``--output FILE.json`` (CLIP_benchmark-shaped where
  CLIP_benchmark has a shape for the task);
- ``artifacts()``: everything else a caller may ask for by name: per-item tables (``DataFrame``), figures
  (:class:`Figure`, drawn only when written) and arrays.

Nothing here names a particular study; studies build these objects from their own numbers.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import pandas as pd

from cliplab.files import printable

METRIC_COLUMNS = ["task", "model", "pretrained", "model_fingerprint", "dataset", "split", "dataset_fingerprint",
                  "variant", "metric", "value", "ci_low", "ci_high", "seed", "n"]

# The tidy frame (``.metrics``, ``cliplab.read_results``): what a number is first, then whose it is. A number that
# belongs to a class keeps its base name in ``metric`` (``recall``, ``confusion``) and names the class in ``class``
# (``true`` and ``predicted`` for a confusion cell); ``metric_name`` is the name the store keeps (``recall[cat]``,
# ``confusion[cat -> dog]``), one per row.
PER_CLASS = ("recall", "images")  # stored as metric[class] (recall of a class; images of a class in a preview)
PER_PAIR = ("confusion",)  # stored as metric[true -> predicted]
ARROW = " -> "
TIDY_FRONT = ["metric", "variant", "class", "true", "predicted", "value", "ci_low", "ci_high", "n", "seed"]
PROVENANCE = ["task", "model", "pretrained", "model_fingerprint", "dataset", "split", "dataset_fingerprint"]
METRIC_NAME = "metric_name"
TIDY_COLUMNS = [*TIDY_FRONT, *PROVENANCE, METRIC_NAME]
_PACKED = re.compile(r"^(" + "|".join(map(re.escape, (*PER_CLASS, *PER_PAIR))) + r")\[(.*)\]$", re.DOTALL)
_DATA_KEY = ("dataset", "split", "dataset_fingerprint")  # the rows whose classes tell a confusion pair apart


class AmbiguousPairWarning(UserWarning):
    """A stored confusion cell whose class names contain ' -> ' could not be split into true and predicted class."""


def packed_name(metric: str, cls: str | None = None, true: str | None = None, predicted: str | None = None) -> str:
    """The name the store keeps for a number: ``recall[cat]``, ``confusion[cat -> dog]``, else ``metric``."""
    if cls is not None:
        return f"{metric}[{cls}]"
    if true is not None or predicted is not None:
        return f"{metric}[{true}{ARROW}{predicted}]"
    return metric


def tidy_metrics(rows: pd.DataFrame) -> pd.DataFrame:
    """Long-format rows as the store keeps them (``METRIC_COLUMNS``, or the store's ``COLUMNS``) -> the tidy frame:
    the packed names ``recall[CLASS]`` and ``confusion[TRUE -> PREDICTED]`` split into ``metric`` (``recall``,
    ``confusion``) and ``class`` / ``true`` / ``predicted``; the stored name kept in ``metric_name``; columns in the
    order ``TIDY_FRONT``, ``PROVENANCE``, then the others (a store's run columns), then ``metric_name``. The one
    function that reads packed names: ``.metrics`` of every result and :func:`cliplab.read_results` both use it.

    A class name may contain brackets, unicode or ' -> ': the class of ``recall[...]`` is everything between the first
    '[' and the last ']'; a confusion name with more than one ' -> ' is split where both sides are classes that the
    rows of the same dataset split have a ``recall`` for. A pair that is still ambiguous (or not a pair) keeps empty
    ``true`` / ``predicted`` with a warning (its ``metric_name`` still says what it is)."""
    df = rows.reset_index(drop=True).copy()
    names = df["metric"].astype(object)
    base, cls, true, predicted = names.tolist(), [None] * len(df), [None] * len(df), [None] * len(df)
    pairs = []
    for i, name in enumerate(names):
        m = _PACKED.match(name) if isinstance(name, str) else None
        if m is None:
            continue
        base[i] = m.group(1)
        if m.group(1) in PER_CLASS:
            cls[i] = m.group(2)
        else:
            pairs.append((i, m.group(2)))
    if pairs:
        keys = [tuple(_key_text(df[c].iloc[i]) if c in df else "" for c in _DATA_KEY) for i in range(len(df))]
        known: dict[tuple, set[str]] = {}
        for i, c in enumerate(cls):
            if c is not None:
                known.setdefault(keys[i], set()).add(c)
        bad = []
        for i, inside in pairs:
            found = _split_pair(inside, known.get(keys[i], set()))
            if found is None:
                bad.append(inside)
            else:
                true[i], predicted[i] = found
        if bad:
            warnings.warn(f"{len(bad)} confusion row(s) could not be split into a true and a predicted class (class "
                          f"names containing {ARROW.strip()!r}), e.g. {bad[0]!r}: their 'true' and 'predicted' are "
                          "empty; 'metric_name' holds the stored name", AmbiguousPairWarning, stacklevel=2)
    for c in ("value", "ci_low", "ci_high"):  # numbers as float64 (a missing one NaN), as the store reads them
        if c in df:
            df[c] = df[c].astype("float64")
    text = df["metric"].dtype  # the frame's text type (pandas 3: str; else object), for the new columns too
    df[METRIC_NAME] = df["metric"]
    df["metric"] = pd.Series(base, index=df.index, dtype=text)
    for c, values in (("class", cls), ("true", true), ("predicted", predicted)):
        df[c] = pd.Series(values, index=df.index, dtype=text)
    front = [c for c in (*TIDY_FRONT, *PROVENANCE) if c in df]
    rest = [c for c in df.columns if c not in front and c != METRIC_NAME]
    return df[[*front, *rest, METRIC_NAME]]


def _key_text(v) -> str:
    return "" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)


def _split_pair(inside: str, classes: set[str]) -> tuple[str, str] | None:
    """``'a -> b'`` -> ``('a', 'b')``; with several ' -> ', the one split whose both sides are in ``classes``."""
    cuts = [m.start() for m in re.finditer(re.escape(ARROW), inside)]
    splits = [(inside[:c], inside[c + len(ARROW):]) for c in cuts]
    if len(splits) == 1:
        return splits[0]
    fits = [s for s in splits if s[0] in classes and s[1] in classes]
    return fits[0] if len(fits) == 1 else None


@dataclass(frozen=True)
class ModelInfo:
    """A model as results name it."""
    name: str
    pretrained: str | None = None
    fingerprint: str = ""
    backend: str = "torch"
    precision: str = ""

    @classmethod
    def of(cls, model) -> "ModelInfo":
        """From a loaded model (or anything with name, pretrained and fingerprint)."""
        if isinstance(model, ModelInfo):
            return model
        if isinstance(model, dict):
            return cls(model["name"], model.get("pretrained"), model.get("fingerprint", ""),
                       model.get("backend", "torch"), model.get("precision", ""))
        return cls(model.name, model.pretrained, model.fingerprint, getattr(model, "backend", "torch"),
                   str(getattr(model, "precision", "") or ""))


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset split as results name it; ``n`` is the number of items the numbers are computed on."""
    name: str
    split: str | None = None
    n: int | None = None
    fingerprint: str = ""

    @classmethod
    def of(cls, dataset, n: int | None = None) -> "DatasetInfo":
        if isinstance(dataset, DatasetInfo):
            return dataset if n is None else DatasetInfo(dataset.name, dataset.split, n, dataset.fingerprint)
        return cls(dataset.name, dataset.split, n, getattr(dataset, "fingerprint", "") or "")


@dataclass(frozen=True)
class Failure:
    """An input that was skipped, with the reason."""
    id: str
    reason: str

    @classmethod
    def from_embedding(cls, failures: Sequence[tuple]) -> list["Failure"]:
        """From the ``(index, id, reason)`` triples of an embedding result."""
        return [cls(str(ident), str(reason)) for _, ident, reason in failures]


@dataclass
class Figure:
    """A figure a study can draw. Nothing is drawn until a caller writes it: ``draw(path)`` writes the file (or,
    for ``many=True``, ``draw(folder, limit)`` a folder of files, the first ``limit`` of them when it is not None)
    and returns the paths written, each with its caption. ``model`` names
    the model a figure belongs to when that is not the study's one model (e.g. ``ModelInfo("several")``)."""
    caption: str
    draw: Callable[[Path], list[tuple[Path, str]]]
    many: bool = False
    model: ModelInfo | None = None

    def write(self, path: str | Path, limit: int | None = None) -> list[tuple[Path, str]]:
        """Draw into ``path``. ``limit``: of a figure of many files, draw the first ``limit`` only (e.g. the notebook
        shows a few of them)."""
        return self.draw(Path(path), limit=limit) if self.many else self.draw(Path(path))


@dataclass
class Table:
    """A table for people, as plain data: ``rows`` hold formatted cells; ``right`` names right-aligned columns."""
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""
    right: frozenset[str] = frozenset()
    wrap: dict[str, int] = field(default_factory=dict)  # column -> max width (wrapped); other columns don't wrap


class SingleModel:
    """``models`` for a study of one loaded model (held in ``self.model``)."""

    @property
    def models(self) -> list[ModelInfo]:
        return [ModelInfo.of(self.model)]


@runtime_checkable
class StudyResult(Protocol):
    task: str
    models: list[ModelInfo]
    dataset: DatasetInfo
    params: dict
    failures: list[Failure]

    def metric_rows(self) -> pd.DataFrame: ...

    def summary(self) -> str: ...

    def tables(self) -> list[Table]: ...

    def record(self) -> dict: ...

    def artifacts(self) -> dict[str, Any]: ...


class Rows:
    """Builds the long-format metric rows of a study (see ``METRIC_COLUMNS``)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, *, task: str, model, dataset, metric: str, value, variant: str = "", ci=(None, None),
            seed: int | None = None, n: int | None = None) -> None:
        m, d = ModelInfo.of(model), DatasetInfo.of(dataset)
        # names that hold file names not in UTF-8 are spelled \xNN: a frame's text is UTF-8 (pandas 3: Arrow)
        self.rows.append({"task": task, "model": printable(m.name), "pretrained": printable(m.pretrained or ""),
                          "model_fingerprint": m.fingerprint, "dataset": printable(d.name), "split": d.split,
                          "dataset_fingerprint": d.fingerprint, "variant": printable(variant), "metric": metric,
                          "value": number(value), "ci_low": number(ci[0]), "ci_high": number(ci[1]), "seed": seed,
                          "n": n})

    def add_metrics(self, metrics: dict, names: Sequence[str], **kw) -> None:
        for name in names:
            if name in metrics:
                self.add(metric=name, value=metrics[name], **kw)

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=METRIC_COLUMNS)
        df["seed"] = df["seed"].astype("Int64")
        df["n"] = df["n"].astype("Int64")
        return df


def number(v) -> float | None:
    """A metric value as a plain float; None for missing or NaN."""
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def pct(x) -> str:
    """A fraction as a percentage with two decimals ('—' when missing)."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def skipped(failures: Sequence[Failure]) -> list[dict]:
    """Failures as they appear in JSON records."""
    return [{"id": f.id, "reason": f.reason} for f in failures]


@dataclass
class ReportFigure:
    """A figure for the HTML report, made from the rows of a results store (matplotlib figure + title)."""
    title: str
    figure: Any
    caption: str = ""


@dataclass(frozen=True)
class ReportSection:
    """How the HTML report shows one task's rows of a results store (rows of many runs, possibly old ones).

    ``headline``: the metrics of the task's summary table, in order; ``rates``: a regex of metrics shown as
    percentages; ``figures(df)``: the task's figures from all rows of the store; ``clip_benchmark``: the task's rows
    as CLIP_benchmark records (export) and ``from_clip_benchmark``: (CLIP_benchmark task name, function turning one
    CLIP_benchmark metric into store rows) for import. ``order`` places the section on the page."""
    task: str
    headline: tuple[str, ...] = ()
    rates: str = ""
    figures: Callable[[pd.DataFrame], list[ReportFigure]] | None = None
    clip_benchmark: Callable[[pd.DataFrame], list[dict]] | None = None
    from_clip_benchmark: tuple[str, Callable[[str, float], list[dict]]] | None = None
    order: int = 100
