"""Model specifications: a model name paired with its pretrained tag/checkpoint and a display label, from
flags or a YAML/TOML/JSON file."""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

from cliplab.errors import CliplabError, ParameterError


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
        raise ParameterError("models_file", path, "file not found", quote=False)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ParameterError("models_file", path, "use a .yaml, .toml or .json file", quote=False)
    except CliplabError:
        raise
    except Exception as exc:  # parser errors of three libraries, reported the same way
        raise ParameterError("models_file", path, f"cannot parse ({type(exc).__name__}: {exc})", quote=False) from None
    if isinstance(data, dict):
        data = data.get("models")
    if not isinstance(data, list) or not data:
        raise ParameterError("models_file", path, "expected a non-empty list of {model, pretrained, label} entries",
                             quote=False)
    out = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            item = {"model": item}
        if not isinstance(item, dict) or "model" not in item:
            raise ParameterError("models_file", path, f"entry {i + 1} needs a 'model' key", quote=False)
        out.append(ModelSpec(str(item["model"]), _none(item.get("pretrained")), str(item.get("label") or "")))
    return out


def model_specs(models: list[str] | None, pretrained: list[str] | None,
                models_file: str | Path | None) -> list[ModelSpec]:
    """``--model`` values paired by position with ``--pretrained`` values ('none' or '-' for no tag), after the
    entries of ``models_file`` (``--models``)."""
    specs = read_model_file(models_file) if models_file else []
    models, pretrained = list(models or []), list(pretrained or [])
    if len(pretrained) > len(models):
        raise ParameterError("pretrained", pretrained, f"{len(pretrained)} {{p:pretrained}} values for {len(models)} "
                             "{p:models} values; give them in pairs (use 'none' for a model without a tag)",
                             prefix=False)
    pretrained += [None] * (len(models) - len(pretrained))
    specs += [ModelSpec(m, _none(p)) for m, p in zip(models, pretrained)]
    if not specs:
        raise ParameterError("models", models, "no models to compare: give {p:models} (repeatable) and/or "
                             "{p:models_file} FILE", prefix=False)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ParameterError("models", models, f"two compared models have the same name ({names}); set a label in "
                             "{p:models_file} FILE", prefix=False)
    return specs
