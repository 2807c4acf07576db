"""What the tabular inputs share (manifests, Hugging Face datasets, tar shards): the ``#image=COL,label=COL``
column choices of a spec, and label columns turned into class indices + class names."""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from cliplab.data.classnames import map_classnames, read_classnames
from cliplab.errors import DatasetParameterError

_OPTIONS = re.compile(r"^(?P<base>.+)#(?P<opts>\w+=[^,#=]+(?:,\w+=[^,#=]+)*)$")
_INTEGER = re.compile(r"^-?\d+$")


def split_options(spec: str) -> tuple[str, dict[str, list[str]]]:
    """``PATH#image=COL,label=COL,caption=C1,caption=C2`` -> (``PATH``, {key: [values]}); a spec without such a
    tail -> (spec, {})."""
    found = _OPTIONS.match(spec)
    if not found:
        return spec, {}
    options: dict[str, list[str]] = {}
    for item in found.group("opts").split(","):
        key, _, value = item.partition("=")
        options.setdefault(key, []).append(value.strip())
    return found.group("base"), options


def check_options(options: dict[str, list[str]], allowed: Sequence[str], spec: str, what: str) -> None:
    """Raise unless every option key is one ``what`` understands and single-valued where it must be."""
    for key, values in options.items():
        if key not in allowed:
            raise DatasetParameterError("dataset", spec, f"unknown option {key!r} for {what}; the options are "
                                        f"{', '.join(f'{k}=NAME' for k in allowed)} (e.g. #image=file,label=class)",
                                        quote=False)
        if key != "caption" and len(values) > 1:
            raise DatasetParameterError("dataset", spec, f"option {key!r} is given {len(values)} times; give it once",
                                        quote=False)


def choose_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str,
                  spec: str) -> str | None:
    """The column the user named (it must exist), else the first of ``candidates`` present, else None."""
    if wanted is not None:
        if wanted not in columns:
            raise DatasetParameterError("dataset", spec, f"no column {wanted!r} for the {what}; its columns: "
                                        f"{', '.join(columns)}", quote=False)
        return wanted
    return next((c for c in candidates if c in columns), None)


def encode_labels(values: Sequence, spec: str, what: str, classnames_file: str | None = None,
                  names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(class index per item, class names) from one label per item.

    ``names`` (a ``ClassLabel``'s, CLIP_benchmark's classnames.txt) makes the values class indices into it; a
    ``classnames_file`` replaces those names (same count). Without ``names``, integer values (or strings of digits,
    as CSV holds them) are class indices whose names must come from ``classnames_file``; other strings are the class
    names themselves, sorted (a ``classnames_file`` then maps them: a JSON object by value, a list by position).
    """
    missing = next((i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip())), None)
    if missing is not None:
        raise DatasetParameterError("dataset", spec, f"item {missing} has no label in its {what}; every item of a "
                                    "labelled set needs one", quote=False)
    integers = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                   or (isinstance(v, str) and _INTEGER.match(v.strip())) for v in values)
    if names is None and not integers:
        raw = sorted({str(v).strip() for v in values})
        lookup = {v: i for i, v in enumerate(raw)}
        labels = np.array([lookup[str(v).strip()] for v in values], dtype=np.int64)
        return labels, (map_classnames(classnames_file, raw) if classnames_file else raw)
    if not integers:
        bad = next(v for v in values if not (isinstance(v, (int, np.integer)) or _INTEGER.match(str(v).strip())))
        raise DatasetParameterError("dataset", spec, f"its {what} include {bad!r}, not a class number",
                                    quote=False)
    labels = np.array([int(v) for v in values], dtype=np.int64)
    if names is not None:
        names = read_classnames(classnames_file, expected=len(names)) if classnames_file else list(names)
    elif classnames_file:
        names = read_classnames(classnames_file)
    else:
        raise DatasetParameterError("classnames", None, f"{{p:dataset}} {spec} has class numbers in its {what}; "
                                    "name the classes with {p:classnames} (a .txt file, one name per line, class 0 "
                                    "first)", prefix=False)
    out_of_range = labels[(labels < 0) | (labels >= len(names))]
    if out_of_range.size:
        raise DatasetParameterError("dataset", spec, f"its {what} include class {int(out_of_range[0])}, but there are "
                                    f"{len(names)} class names (classes 0 to {len(names) - 1})", quote=False)
    return labels, [str(n) for n in names]
