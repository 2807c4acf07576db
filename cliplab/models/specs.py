"""Model specifications: a model name paired with its pretrained tag/checkpoint and a display label, from
flags or a YAML/TOML/JSON file."""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cliplab.errors import CliplabError


@dataclass(frozen=True)
class ModelSpec:
    model: str
    pretrained: str | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or (f"{self.model} ({Path(self.pretrained).name})" if self.pretrained else self.model)


def _none(v):
    return None if v in (None, "", "none", "-") else v


def read_model_file(path: str | Path) -> list[ModelSpec]:
    """A YAML, TOML or JSON file: a list of {model, pretrained, label} (TOML: ``[[models]]`` tables)."""
    path = Path(path)
    if not path.is_file():
        raise CliplabError(f"--models {path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise CliplabError(f"--models {path}: use a .yaml, .toml or .json file")
    except CliplabError:
        raise
    except Exception as exc:  # parser errors of three libraries, reported the same way
        raise CliplabError(f"--models {path}: cannot parse ({type(exc).__name__}: {exc})") from None
    if isinstance(data, dict):
        data = data.get("models")
    if not isinstance(data, list) or not data:
        raise CliplabError(f"--models {path}: expected a non-empty list of {{model, pretrained, label}} entries")
    out = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            item = {"model": item}
        if not isinstance(item, dict) or "model" not in item:
            raise CliplabError(f"--models {path}: entry {i + 1} needs a 'model' key")
        out.append(ModelSpec(str(item["model"]), _none(item.get("pretrained")), str(item.get("label") or "")))
    return out


def model_specs(models: list[str] | None, pretrained: list[str] | None, file: str | Path | None) -> list[ModelSpec]:
    """``--model`` values paired by position with ``--pretrained`` values ('none' or '-' for no tag)."""
    specs = read_model_file(file) if file else []
    models, pretrained = list(models or []), list(pretrained or [])
    if len(pretrained) > len(models):
        raise CliplabError(f"{len(pretrained)} --pretrained values for {len(models)} --model values; "
                           "give them in pairs (use 'none' for a model without a tag)")
    pretrained += [None] * (len(models) - len(pretrained))
    specs += [ModelSpec(m, _none(p)) for m, p in zip(models, pretrained)]
    if not specs:
        raise CliplabError("no models to compare: give --model (repeatable) and/or --models FILE")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise CliplabError(f"two compared models have the same name ({names}); set a label in --models FILE")
    return specs
