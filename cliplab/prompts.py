"""Prompt templates: named sets (the official CLIP lists), files, and literal template strings.

A template is a string with one ``{}`` (or ``{c}``) where the class name goes. Named sets:
``simple`` ('a photo of a {}.'), ``openai-imagenet-80`` (CLIP's 80 ImageNet prompts, taken from open_clip),
``openai-imagenet-7`` (the 7-prompt subset CLIP selected), ``openai-cifar`` (18), ``openai-eurosat`` (3),
``openai-food101`` (1). Files: ``.txt`` one template per line, or ``.json`` (a list, or ``{name: [templates]}``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from cliplab.errors import ParameterError
from cliplab.files import Shape, Str, UserFile, one_of, printable


def _from_open_clip(attr: str) -> list[str]:
    return [t("{}") for t in getattr(_zero_shot_metadata(), attr)]


def _zero_shot_metadata():
    """open_clip's ``zero_shot_metadata`` (plain lists, no imports), read without importing open_clip itself, which
    imports torch: a study answered from the cache needs the templates and nothing of torch."""
    import importlib.util
    import sys

    name = "open_clip.zero_shot_metadata"
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("open_clip")
    folders = list(package.submodule_search_locations or []) if package is not None else []
    path = next((Path(f) / "zero_shot_metadata.py" for f in folders if (Path(f) / "zero_shot_metadata.py").is_file()),
                None)
    if path is None:  # laid out otherwise: through the package
        from open_clip import zero_shot_metadata

        return zero_shot_metadata
    spec = importlib.util.spec_from_file_location("cliplab._open_clip_zero_shot_metadata", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CIFAR = [
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.", "a low contrast photo of a {}.",
    "a high contrast photo of a {}.", "a bad photo of a {}.", "a good photo of a {}.", "a photo of a small {}.",
    "a photo of a big {}.", "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.", "a bad photo of the {}.",
    "a good photo of the {}.", "a photo of the small {}.", "a photo of the big {}.",
]

NAMED_SETS = {
    "simple": lambda: ["a photo of a {}."],
    "bare": lambda: ["{}"],
    "openai-imagenet-80": lambda: _from_open_clip("OPENAI_IMAGENET_TEMPLATES"),
    "openai-imagenet-7": lambda: _from_open_clip("SIMPLE_IMAGENET_TEMPLATES"),
    "openai-cifar": lambda: list(_CIFAR),
    "openai-eurosat": lambda: ["a centered satellite photo of {}.", "a centered satellite photo of a {}.",
                               "a centered satellite photo of the {}."],
    "openai-food101": lambda: ["a photo of {}, a type of food."],
}


@dataclass(frozen=True)
class TemplateSet:
    name: str
    templates: tuple[str, ...]

    def texts(self, classnames: list[str]) -> list[str]:
        """All prompts, class-major: texts[c * T + t] is template t filled with class c."""
        return [fill(t, c) for c in classnames for t in self.templates]


def fill(template: str, classname: str) -> str:
    return template.replace("{c}", classname).replace("{}", classname)


def _placeholder(template: str) -> str:
    if "{}" not in template and "{c}" not in template:
        raise ValueError(f"template {json.dumps(printable(template), ensure_ascii=False)} has no '{{}}' placeholder "
                         "for the class name")
    return template


Template = Annotated[Str, AfterValidator(_placeholder)]
Templates = Annotated[list[Template], Field(min_length=1)]
TEMPLATES_JSON = Shape(one_of("a list of templates or {set name: [templates]}", list=Templates,
                              object=Annotated[dict[str, Templates], Field(min_length=1)]),
                       "a list of templates or {set name: [templates]}")


def read_template_file(path: str | Path, spec: str | None = None) -> list[TemplateSet]:
    """A ``.txt`` file (one template per line, ``#`` comment lines) or a ``.json`` file (a list of templates, or
    ``{set name: [templates]}``) as template sets; anything else is one error naming the file, line and field."""
    path = Path(path)
    file = UserFile(path, "templates", value=None if spec is None or spec == str(path) else spec)
    if path.suffix.lower() == ".json":
        data = file.json(TEMPLATES_JSON)
        return [TemplateSet(str(name), tuple(ts)) for name, ts in
                (data.items() if isinstance(data, dict) else [(path.stem, data)])]
    out = []
    for line in file.lines("templates"):
        try:
            out.append(_placeholder(line.text))
        except ValueError as exc:
            raise file.fail(str(exc), f"line {line.number}") from None
    return [TemplateSet(path.stem, tuple(out))]


def resolve_templates(spec: str) -> list[TemplateSet]:
    """One ``--templates`` value -> one or more template sets."""
    if spec in NAMED_SETS:
        return [TemplateSet(spec, tuple(NAMED_SETS[spec]()))]
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".txt", ".json") and not ("{}" in spec or "{c}" in spec):
        return read_template_file(path, spec)
    if "{}" in spec or "{c}" in spec:
        return [TemplateSet(spec, (spec,))]
    raise ParameterError(
        "templates", spec, f"not a named set ({', '.join(NAMED_SETS)}), a .txt/.json file, or a template "
        "containing '{}'")


def resolve_all(specs: list[str], ensemble: bool = False) -> list[TemplateSet]:
    sets = [s for spec in specs for s in resolve_templates(spec)]
    if ensemble and len(sets) > 1:
        merged = tuple(dict.fromkeys(t for s in sets for t in s.templates))
        return [TemplateSet("+".join(s.name for s in sets), merged)]
    return sets
