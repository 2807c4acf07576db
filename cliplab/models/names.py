"""Model names people type: OpenAI's `clip` spellings (``ViT-B/32``, ``ViT-L/14@336px``) as aliases of open_clip's
architectures with the ``openai`` weights, and a suggested spelling for a name that is not known. Pure Python (no
torch, no open_clip): the names are checked before a model is built."""
from __future__ import annotations

import difflib
import re

# OpenAI's `clip.available_models()` -> open_clip's architecture of the same model (its weights: tag "openai").
OPENAI_NAMES = {
    "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16", "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14", "ViT-L/14@336px": "ViT-L-14-336",
}
OPENAI_TAG = "openai"


def openai_alias(model: str, pretrained: str | None) -> tuple[str, str | None, str | None]:
    """``(open_clip name, weights, note)`` for a name in OpenAI's spelling, else ``(model, pretrained, None)``.

    Only the spellings that are not also open_clip names are aliases (``ViT-B/32``, ``ViT-L/14@336px``): they mean
    OpenAI's weights, as ``clip.load`` gives them, unless other weights are given. ``RN50``, ``RN50x4``... are open_clip
    names as well (an architecture, built with random weights when no weights are given); the random-weights
    warning says how to get OpenAI's (:func:`random_weights_hint`)."""
    target = OPENAI_NAMES.get(model)
    if target is None or target == model:
        return model, pretrained, None
    if pretrained:
        return target, pretrained, (f"{{p:model}} {model} is OpenAI's name of open_clip's {target}: using {target} "
                                    f"with {{p:pretrained}} {pretrained}")
    return target, OPENAI_TAG, (f"{{p:model}} {model} is OpenAI's name of open_clip's {target} with the "
                                f"'{OPENAI_TAG}' weights: using {target} {{p:pretrained}} {OPENAI_TAG}")


def random_weights_hint(model: str) -> str:
    """What the random-weights warning adds for a name that is also OpenAI's (``RN50``): how to get those weights."""
    if OPENAI_NAMES.get(model) == model:
        return f" (OpenAI's {model}: {{p:pretrained}} {OPENAI_TAG})"
    return ""


def _key(name: str) -> str:
    """A spelling with case, separators and OpenAI's '@336px' left out: 'vit-b/32' and 'ViT_B_32' meet 'ViT-B-32'."""
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("@336px", "336"))


def suggest(model: str, known: list[str]) -> list[str]:
    """Up to three known names (open_clip's and OpenAI's) that ``model`` was probably meant to be."""
    names = list(dict.fromkeys([*known, *OPENAI_NAMES]))
    same = [n for n in names if _key(n) == _key(model)]
    if same:
        return same[:3]
    keys = {}
    for n in names:
        keys.setdefault(_key(n), n)
    return [keys[k] for k in difflib.get_close_matches(_key(model), list(keys), n=3, cutoff=0.75)]
