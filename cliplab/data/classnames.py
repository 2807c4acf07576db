"""Class names fit for prompts: 'aquarium_fish' -> 'aquarium fish', 'n01440764' kept, files override."""
from __future__ import annotations

import json
import re
from pathlib import Path

from cliplab.errors import DatasetParameterError


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


def read_classnames(path: str | Path, expected: int | None = None) -> list[str]:
    """One name per line (.txt), a JSON list, or a JSON object {folder_name: prompt_name}."""
    path = Path(path)
    if not path.is_file():
        raise DatasetParameterError("classnames", path, f"{{p:classnames}} file not found: {path}", prefix=False)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        names = list(data.values()) if isinstance(data, dict) else list(data)
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if expected is not None and len(names) != expected:
        raise DatasetParameterError("classnames", path, f"{{p:classnames}} {path} has {len(names)} names but the "
                                    f"dataset has {expected} classes", prefix=False)
    return [str(n) for n in names]


def map_classnames(path: str | Path, folder_names: list[str]) -> list[str]:
    """Apply a classnames file to folder names: JSON objects map by key, lists map by position."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            missing = [f for f in folder_names if f not in data]
            if missing:
                raise DatasetParameterError("classnames", path, f"{{p:classnames}} {path} lacks names for: "
                                            f"{', '.join(missing[:5])}", prefix=False)
            return [str(data[f]) for f in folder_names]
    return read_classnames(path, expected=len(folder_names))
