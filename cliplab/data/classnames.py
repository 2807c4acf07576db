"""Class names fit for prompts: 'aquarium_fish' -> 'aquarium fish', 'n01440764' kept, files override."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field

from cliplab.errors import DatasetParameterError
from cliplab.files import Name, Shape, UserFile, one_of, printable


def clean_classname(name: str) -> str:
    """Underscores become spaces and CamelCase is split and lower-cased; other capitals (proper nouns) stay."""
    s = name.replace("_", " ")
    split = re.sub(r"(?<=[a-z])(?=[A-Z][a-z])", " ", s)  # AnnualCrop -> Annual Crop
    if split != s or (s.isupper() and len(s) > 1):
        s = split.lower()
    return re.sub(r"\s+", " ", s).strip()


def clean_classnames(names: list[str]) -> list[str]:
    """Clean a dataset's names consistently: if any name is CamelCase (EuroSAT), lower-case them all."""
    cleaned = [clean_classname(n) for n in names]
    if any(c != n.replace("_", " ") and c == c.lower() for c, n in zip(cleaned, names)):
        cleaned = [c.lower() for c in cleaned]
    return cleaned


CLASSNAMES_JSON = Shape(one_of("a list of class names or {folder name: class name}",
                               list=Annotated[list[Name], Field(min_length=1)],
                               object=Annotated[dict[str, Name], Field(min_length=1)]),
                        "a list of class names or {folder name: class name}")


def _file(path: str | Path) -> UserFile:
    return UserFile(Path(path), "classnames", error=DatasetParameterError)


def _read(path: str | Path) -> list[str] | dict[str, str]:
    """A class-name file as a list (.txt: one name per line, ``#`` comment lines; a JSON list) or a dict (a JSON
    object)."""
    file = _file(path)
    if file.suffix == ".json":
        return file.json(CLASSNAMES_JSON)
    return [line.text for line in file.lines("class names")]


def read_classnames(path: str | Path, expected: int | None = None) -> list[str]:
    """One name per line (.txt, ``#`` comment lines), a JSON list, or a JSON object {folder_name: prompt_name}."""
    data = _read(path)
    names = list(data.values()) if isinstance(data, dict) else data
    if expected is not None and len(names) != expected:
        raise _file(path).fail(f"has {len(names)} names but the dataset has {expected} classes")
    return names


def map_classnames(path: str | Path, folder_names: list[str]) -> list[str]:
    """Apply a classnames file to folder names: JSON objects map by key, lists map by position."""
    data = _read(path)
    if isinstance(data, dict):
        missing = [f for f in folder_names if f not in data]
        if missing:
            raise _file(path).fail(f"lacks names for: {', '.join(printable(m) for m in missing[:5])}")
        return [data[f] for f in folder_names]
    if len(data) != len(folder_names):
        raise _file(path).fail(f"has {len(data)} names but the dataset has {len(folder_names)} classes")
    return data
