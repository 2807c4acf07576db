"""Model specifications: a model name paired with its pretrained tag/checkpoint and a display label, from
flags or a YAML/TOML/JSON file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictInt, Tag

from cliplab.errors import ParameterError
from cliplab.files import Name, Shape, Str, UserFile, one_of


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


class ModelEntry(BaseModel):
    """One model of a models file."""
    model_config = ConfigDict(extra="forbid")  # a misspelt key ('pretrianed') is an error, not ignored
    model: Name
    pretrained: Str | None = None
    label: Str | None = None


Entries = Annotated[list[one_of("a model name or {model, pretrained, label}", text=Name, object=ModelEntry)],
                    Field(min_length=1)]


class ModelsTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: Entries


MODELS_FILE = Shape(one_of("a list of {model, pretrained, label} entries, or {models: [...]}", list=Entries,
                           object=ModelsTable), "a list of {model, pretrained, label} entries")


def read_model_file(path: str | Path) -> list[ModelSpec]:
    """A YAML, TOML or JSON file: a list of {model, pretrained, label} (TOML: ``[[models]]`` tables)."""
    data = UserFile(Path(path), "models_file").data(MODELS_FILE)
    entries = data.models if isinstance(data, ModelsTable) else data
    return [ModelSpec(e) if isinstance(e, str) else ModelSpec(e.model, _none(e.pretrained), e.label or "")
            for e in entries]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # open_clip reads many more keys; these are the ones cliplab needs


class PreprocessCfg(_Open):
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


class ModelCfg(_Open):
    embed_dim: Annotated[StrictInt, Field(gt=0)]
    vision_cfg: dict[str, Any]
    text_cfg: dict[str, Any]
    preprocess_cfg: PreprocessCfg | None = None


class OpenClipConfig(_Open):
    model_cfg: ModelCfg
    preprocess_cfg: PreprocessCfg | None = None


MODEL_CONFIG = Shape(Annotated[Union[Annotated[OpenClipConfig, Tag("<wrapped>")], Annotated[ModelCfg, Tag("<bare>")]],
                               Discriminator(lambda v: None if not isinstance(v, dict) else
                                             "<wrapped>" if "model_cfg" in v else "<bare>",
                                             custom_error_type="kind", custom_error_message=(
                                                 "should be an open_clip model config (embed_dim, vision_cfg, "
                                                 "text_cfg) or an open_clip_config.json (model_cfg, "
                                                 "preprocess_cfg)"))], "an open_clip model config")


def read_model_config(path: str | Path, param: str = "model", error: type = ParameterError) -> tuple[dict, dict]:
    """(model config, preprocess config) of an open_clip model-config JSON: a bare model config (``embed_dim``,
    ``vision_cfg``, ``text_cfg``) or an ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg": ...}``);
    the dicts are the file's own (checked, not rewritten: the registered name hashes them)."""
    file = UserFile(Path(path), param, error=error)
    if file.suffix != ".json":
        raise file.fail("a model config is a .json file")
    data = file.parse_json(file.text())
    MODEL_CONFIG.validate(data, file)
    model_cfg = data.get("model_cfg", data)
    preprocess_cfg = dict(data.get("preprocess_cfg") or model_cfg.get("preprocess_cfg") or {})
    return {k: v for k, v in model_cfg.items() if k != "preprocess_cfg"}, preprocess_cfg


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
        hint = ("; set a label for each in {p:models_file} FILE" if models_file is not None else
                ": give each model once (a study that reads a models file takes a label for each)")
        raise ParameterError("models", models, f"two compared models have the same name ({names}){hint}",
                             prefix=False)
    return specs
