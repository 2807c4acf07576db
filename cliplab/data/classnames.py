"""Class names fit for prompts: 'aquarium_fish' -> 'aquarium fish', WordNet ids ('n01440764') -> 'tench' from a
shipped map, files override."""
from __future__ import annotations

import functools
import gzip
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field

from cliplab.errors import DatasetParameterError
from cliplab.files import Name, Shape, UserFile, one_of, printable
from cliplab.progress import note, warn


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


WORDNET_ID = re.compile(r"^n\d{8}$")
WORDNET_NAMES = Path(__file__).resolve().parent / "wordnet_names.tsv.gz"  # tools/make_wordnet_names.py writes it


@functools.lru_cache(maxsize=1)
def _wordnet() -> dict[str, list[str]]:
    """WordNet id -> [name, lemma, ...]: ImageNet-1k ids named as CLIP names them, other ImageNet-21k ids by
    WordNet's first lemma."""
    with gzip.open(WORDNET_NAMES, "rt", encoding="utf-8") as f:
        return {parts[0]: parts[1:] for parts in (line.rstrip("\n").split("\t") for line in f) if len(parts) > 1}


def wordnet_classnames(folder_names: list[str], where: str = "") -> list[str] | None:
    """Names for class folders that are all WordNet ids (ImageNet's ``n01440764/`` layout), else None. Two ids that
    would get the same name are told apart by another WordNet lemma, or by their id; ids the map does not hold keep
    their id. Each of these is said (a note, or a warning for ids without a name)."""
    if not folder_names or not all(WORDNET_ID.match(n) for n in folder_names):
        return None
    table = _wordnet()
    names = [table.get(n, [n])[0] for n in folder_names]
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    used, renamed = set(names), []
    for name, members in groups.items():
        if len(members) < 2:
            continue
        for i in members:  # members with another lemma take it, until one class is left with the shared name
            if sum(names[j] == name for j in members) < 2:
                break
            others = [w for w in table.get(folder_names[i], [])[1:] if w not in used]
            if others:
                names[i] = others[0]
                used.add(names[i])
                renamed.append(i)
        left = [i for i in members if names[i] == name]
        for i in left if len(left) > 1 else []:
            names[i] = f"{name} ({folder_names[i]})"
            renamed.append(i)
    renamed = [f"{folder_names[i]} {names[i]!r}" for i in sorted(renamed)]
    unknown = [n for n in folder_names if n not in table]
    note(f"{where}class folders are WordNet ids ({folder_names[0]}, ...): named from cliplab's WordNet map "
         f"({folder_names[0]} -> {names[0]!r}; ImageNet-1k ids as CLIP names them); pass {{p:classnames}} FILE to name "
         "them yourself" + (f"; told apart where two ids share a name: {', '.join(renamed[:4])}"
                            f"{', ...' if len(renamed) > 4 else ''}" if renamed else ""))
    if unknown:
        warn(f"{where}{len(unknown)} WordNet id(s) not in cliplab's map keep their id as the class name (e.g. "
             f"{unknown[0]}); name them with {{p:classnames}} FILE")
    return names


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
