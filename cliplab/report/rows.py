"""Which rows of a results store one figure draws, and how it names what it draws.

A store holds the rows of many runs, and one run may hold several models (compare, search), datasets (compare) or
variants (template sets, k-shot sizes). A figure that groups rows by run alone mixes them: its bars then belong to
several models under one model's title. Figures here take their rows per evaluation (``MODEL`` + ``DATA`` + the
study's own keys), the latest run of each, and label every model and evaluation they show by what tells it apart.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

MODEL = ("model", "pretrained", "model_fingerprint")  # one model: its name, weights and fingerprint
DATA = ("dataset", "split", "dataset_fingerprint")  # one dataset split, as the rows were computed on it


def with_columns(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``df`` with every column of ``columns`` (missing ones empty), e.g. the metric rows of a result that has not
    been stored (no run id, no timestamp)."""
    missing = [c for c in columns if c not in df]
    return df.assign(**{c: None for c in missing}) if missing else df


def blank(value) -> bool:
    """Missing: None, NA or NaN."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def text(value) -> str:
    """A key value as text ('' when missing)."""
    return "" if blank(value) else str(value)


def latest(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """The rows of the latest run of each ``by`` group (latest timestamp, then the last in store order); rows
    without a run id count as one run."""
    if df.empty:
        return df
    df = with_columns(df, [*by, "run_id", "timestamp"]).reset_index(drop=True)
    stamps, runs = df.timestamp.map(text).tolist(), df.run_id.map(text).tolist()
    keep = np.zeros(len(df), dtype=bool)
    for idx in df.groupby(list(by), dropna=False, sort=False).indices.values():
        last = runs[max(idx, key=lambda i: (stamps[i], i))]
        keep[[i for i in idx if runs[i] == last]] = True
    return df[keep]


def groups(df: pd.DataFrame, by: Sequence[str]) -> list[tuple[dict, pd.DataFrame]]:
    """``(key, rows)`` per ``by`` group, in the order the groups first appear; ``key`` maps each column to its
    value."""
    df = with_columns(df, by)
    return [(dict(zip(by, key if isinstance(key, tuple) else (key,))), grp)
            for key, grp in df.groupby(list(by), dropna=False, sort=False)]


def model_key(row) -> tuple[str, ...]:
    """The ``MODEL`` key of a row (or of a ``groups`` key)."""
    return tuple(text(row.get(c) if isinstance(row, dict) else getattr(row, c, None)) for c in MODEL)


def model_labels(keys: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """A label per model key: its name (a model named by a file path: the file's name); when two models share a
    name, the name with the file name (or tag) of its weights; when that is not enough either, with the start of
    its fingerprint."""
    keys = list(dict.fromkeys(keys))
    labels = {k: (Path(k[0]).name if k[0].startswith(("/", "./", "../")) else k[0]) or "model" for k in keys}
    for step in (lambda k: Path(k[1]).name if k[1] else "no weights", lambda k: k[2][:8] or "?"):
        clash = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
        labels = {k: f"{lab} ({step(k)})" if lab in clash else lab for k, lab in labels.items()}
    return labels


def distinct(records: list[dict], fields: Sequence[str], always: str | None = None) -> list[str]:
    """One label per record: its values of the ``fields`` that differ between the records (``always`` is shown
    even when it does not), joined by ' · '."""
    shown = [f for f in fields if f == always or len({text(r.get(f)) for r in records}) > 1]
    return [" · ".join(text(r.get(f)) for f in shown if text(r.get(f))) for r in records]


def natural_key(value) -> tuple:
    """Sort key that orders the numbers inside text as numbers: 'probe k=2' before 'probe k=16'; missing values
    first."""
    if blank(value):
        return ((0, ""),)
    if isinstance(value, (int, float)):
        return ((1, float(value)),)
    parts = re.split(r"(\d+(?:\.\d+)?)", str(value))
    return tuple((1, float(p)) if i % 2 else (2, p.casefold()) for i, p in enumerate(parts) if p)
