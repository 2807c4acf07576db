"""Model facts, as the course slides tabulate them: image backbone (and patch size), input resolution, parameters,
embedding width, text context and the pretraining data of the weights.

Every fact is read from the model or its declared config, never guessed: parameters are ``sum(p.numel())`` of the
model (for an architecture not loaded, of the model built on PyTorch's ``meta`` device: shapes without weights);
the pretraining data is what the weights' own metadata records (a tag's pretrained config when it names its
``dataset``, a model trained by ``cliplab train`` its meta.json); open_clip's tag configs record none, so for its tags
the data their name says by the model zoo's convention, marked ``(by its tag name)``; else ``unknown``; and ``none
(random weights)`` for a model built without weights.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cliplab.models.base import LoadedModel

UNKNOWN = "unknown"
RANDOM = "none (random weights)"


@dataclass(frozen=True)
class ModelFacts:
    backbone: str  # "ViT" / "ModifiedResNet" / "timm:<name>" / "HF CLIPVisionModel" ...
    patch_size: int | None  # a ViT's patch (None for convolutional towers)
    resolution: int | None  # input side in pixels
    parameters: int | None  # sum(p.numel()) of the whole model (both towers)
    embed_dim: int | None
    context_length: int | None  # text tokens the text tower reads
    pretraining_data: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def backbone_text(self) -> str:
        """The backbone with its patch size (``ViT /32``), as tables show it."""
        return f"{self.backbone} /{self.patch_size}" if self.patch_size else self.backbone


def _side(v) -> int | None:
    if v is None:
        return None
    if isinstance(v, (tuple, list)):
        return int(v[0])
    return int(v)


def _visual_facts(visual) -> tuple[str, int | None]:
    """(backbone, patch size) of an open_clip image tower module."""
    name = type(visual).__name__
    if name == "TimmModel":
        trunk = getattr(visual, "trunk", None)
        cfg = getattr(trunk, "default_cfg", None) or getattr(trunk, "pretrained_cfg", None) or {}
        arch = cfg.get("architecture") if isinstance(cfg, dict) else None
        patch = getattr(getattr(trunk, "patch_embed", None), "patch_size", None)
        return f"timm:{arch or type(trunk).__name__}", _side(patch)
    if name == "VisionTransformer":
        return "ViT", _side(getattr(visual, "patch_size", None))
    return name, None


def facts_of(model: "LoadedModel") -> ModelFacts:
    """The facts of a loaded model (of a model known from its memo and not loaded: as memoised)."""
    known = model.architecture if getattr(model, "loaded", True) is False else None
    if known is not None:
        backbone, patch, context = known["backbone"], known["patch_size"], known["context_length"]
        return ModelFacts(backbone, patch, model.image_size[0], model.num_params, model.embed_dim, context,
                          pretraining_data(model))
    net = model.model
    hf = getattr(net, "hf", None)
    if hf is not None:  # cliplab's hf: towers
        vc = hf.config.vision_config
        backbone, patch = f"HF {type(hf.vision_model).__name__}", _side(getattr(vc, "patch_size", None))
    else:
        backbone, patch = _visual_facts(getattr(net, "visual", None))
    tok = model.tokenizer
    context = getattr(tok, "context_length", None) or getattr(tok, "max_length", None)
    return ModelFacts(backbone, patch, model.image_size[0], model.num_params, model.embed_dim,
                      int(context) if context else None, pretraining_data(model))


def pretraining_data(model: "LoadedModel") -> str:
    """What the weights' metadata says they were trained on (see the module's docstring)."""
    if str(model.pretrained or "").startswith("random (seed"):
        return RANDOM
    return model.trained_on or UNKNOWN


# open_clip's tags name their pretraining data by a convention of its model zoo (its pretrained.py and docs), not a
# recorded field: read from the tag's name, and said so ("by its tag name"). Longest prefix first; a tag no prefix
# matches stays unknown.
TAG_DATA = (
    ("mscoco_finetuned_laion2b", "LAION-2B, fine-tuned on MS-COCO"), ("frozen_laion5b", "LAION-5B"),
    ("laion_aesthetic", "LAION-Aesthetics"), ("laion400m", "LAION-400M"), ("laion2b", "LAION-2B"),
    ("laion5b", "LAION-5B"), ("datacomp_xl", "DataComp-1B (XL pool)"), ("datacomp_l", "DataComp (L pool)"),
    ("datacomp_m", "DataComp (M pool)"), ("datacomp_s", "DataComp (S pool)"), ("datacompdr", "DataCompDR"),
    ("datacomp1b", "DataComp-1B"), ("datacomp_s34b", "DataComp-1B"), ("commonpool_xl", "CommonPool XL"),
    ("commonpool_l", "CommonPool L"), ("commonpool_m", "CommonPool M"), ("commonpool_s", "CommonPool S"),
    ("dfndr2b", "DFN-2B (reinforced)"), ("dfn2b", "DFN-2B"), ("dfn5b", "DFN-5B"), ("merged2b", "Merged-2B"),
    ("metaclip2_worldwide", "MetaCLIP 2 (worldwide)"), ("metaclip_400m", "MetaCLIP 400M"),
    ("metaclip_fullcc", "MetaCLIP 2.5B"), ("metaclip_altogether", "MetaCLIP (Altogether recaptioned)"),
    ("openai", "WIT-400M"), ("webli", "WebLI"), ("yfcc15m", "YFCC-15M"), ("cc12m", "CC-12M"),
)
BY_TAG = " (by its tag name)"


def tag_data(arch: str, tag: str) -> str:
    """The pretraining data of an open_clip tag: what its pretrained config records, else what the tag's name says
    by open_clip's naming convention (marked ``(by its tag name)``), else ``unknown``."""
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch, tag) or {}
    data = cfg.get("dataset") or cfg.get("data")
    if data:
        return str(data)
    name = str(tag).lower()
    for prefix, dataset in sorted(TAG_DATA, key=lambda p: -len(p[0])):
        if name.startswith(prefix):
            return dataset + BY_TAG
    return UNKNOWN


def facts_of_architecture(arch: str, count_parameters: bool = True) -> ModelFacts:
    """The facts of an open_clip architecture from its model config (parameters: the model built on the ``meta``
    device, None when it cannot be built here, e.g. a text tower whose config lives on the Hugging Face hub)."""
    import open_clip

    return facts_of_config(open_clip.get_model_config(arch) or {},
                           count_architecture_parameters(arch) if count_parameters else None)


def facts_of_config(cfg: dict, parameters: int | None = None, pretraining: str = UNKNOWN) -> ModelFacts:
    """The facts an open_clip model config declares (``parameters``, ``pretraining``: counted or read elsewhere)."""
    vc, tc = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if vc.get("timm_model_name"):
        backbone, patch = f"timm:{vc['timm_model_name']}", None
    elif isinstance(vc.get("layers"), (list, tuple)):
        backbone, patch = "ModifiedResNet", None
    elif vc:
        backbone, patch = "ViT", _side(vc.get("patch_size"))
    else:
        backbone, patch = UNKNOWN, None
    context = tc.get("context_length")
    return ModelFacts(backbone, patch, _side(vc.get("image_size")), parameters, cfg.get("embed_dim"),
                      int(context) if context else None, pretraining)


def count_config_parameters(cfg: dict) -> int | None:
    """``sum(p.numel())`` of an open_clip ``CLIP`` built from a model config on the meta device (None if it cannot
    be built so)."""
    import open_clip
    import torch

    try:
        with torch.device("meta"):
            net = open_clip.CLIP(**{k: v for k, v in cfg.items() if k in ("embed_dim", "vision_cfg", "text_cfg",
                                                                          "quick_gelu")})
    except Exception:  # noqa: BLE001 - unknown rather than guessed
        return None
    return sum(p.numel() for p in net.parameters())


def count_architecture_parameters(arch: str) -> int | None:
    """``sum(p.numel())`` of ``arch`` built on the meta device (no weights allocated, nothing downloaded)."""
    import open_clip
    import torch

    from cliplab.models.openclip import quiet_hub

    try:
        with torch.device("meta"), quiet_hub(True):
            net = open_clip.create_model(arch, pretrained=None, device="meta")
    except Exception:  # noqa: BLE001 - a fact that cannot be had here is shown as unknown, never guessed
        logging.getLogger(__name__).debug("cannot build %s on the meta device", arch, exc_info=True)
        return None
    return sum(p.numel() for p in net.parameters())
