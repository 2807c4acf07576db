"""Local-feature descriptors for image->image retrieval, computed by the embedding engine from an intermediate
layer of the image tower via a forward hook (no copy of the tower's code).

ResNet towers (open_clip ModifiedResNet): a stage output, default ``visual.layer4`` (B, C, H, W).
ViT towers: the patch tokens of ``visual.transformer`` (prefix tokens such as CLS dropped), reshaped to the
patch grid (B, D, gh, gw). Any module path of ``model.model`` can be given with ``layer``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cliplab.errors import CliplabError, ParameterError
from cliplab.io import hash_json
from cliplab.tasks.pooling import gem, mac, region_max, rmac_regions

POOLINGS = ("global", "mac", "rmac", "gem")


@dataclass(frozen=True)
class DescriptorSpec:
    pooling: str = "global"  # global = the CLIP embedding itself
    layer: str | None = None
    levels: int = 3
    overlap: float = 0.4
    gem_p: float = 3.0

    def validate(self) -> None:
        if self.pooling not in POOLINGS:
            raise ParameterError("descriptor", self.pooling, f"choose one of {', '.join(POOLINGS)}")
        if self.levels < 1:
            raise ParameterError("levels", self.levels, "{p:levels} must be >= 1", prefix=False)

    @property
    def is_global(self) -> bool:
        return self.pooling == "global"

    def cache_kind(self) -> str:
        return "image" if self.is_global else f"desc-{self.pooling}-{hash_json(asdict(self))[:12]}"


def default_layer(model) -> str:
    visual = model.model.visual
    if hasattr(visual, "layer4"):
        return "visual.layer4"
    if hasattr(visual, "transformer"):
        return "visual.transformer"
    raise ParameterError("layer", None, f"cannot pick a feature layer for {type(visual).__name__}; pass {{p:layer}} "
                         "MODULE.PATH", prefix=False)


def _module(model, path: str) -> torch.nn.Module:
    import torch

    try:
        return model.model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.model.visual.named_children()]
        raise ParameterError("layer", path, f"{{p:layer}} {path!r} is not a module of this model (visual has: "
                             f"{', '.join(names)})", prefix=False) from None


def _as_map(out, model) -> torch.Tensor:
    import torch

    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() == 4:
        return out
    if out.dim() == 3:  # tokens (B, L, D) from a ViT
        visual = model.model.visual
        gh, gw = getattr(visual, "grid_size", (None, None))
        if gh is None:
            side = int(round((out.shape[1]) ** 0.5))
            gh = gw = side
        n_patch = gh * gw
        if out.shape[1] < n_patch and out.shape[0] >= n_patch:  # (L, B, D) layout
            out = out.transpose(0, 1)
        tokens = out[:, out.shape[1] - n_patch:, :]
        return tokens.transpose(1, 2).reshape(out.shape[0], out.shape[2], gh, gw)
    raise CliplabError(f"feature layer output has shape {tuple(out.shape)}; expected (B, C, H, W) or tokens")


def make_encoder(model, spec: DescriptorSpec):
    """pixels -> float32 numpy rows: (B, C) for mac/gem, (B, R * C) region MACs for rmac (R fixed per input size)."""
    spec.validate()
    if spec.is_global:  # nothing loaded until an image is encoded (all may come from the cache)
        return lambda pixels: model.encode_images(pixels).numpy()
    import torch

    module = _module(model, spec.layer or default_layer(model))
    regions_cache: dict[tuple[int, int], list] = {}

    @torch.inference_mode()
    def encode(pixels: torch.Tensor) -> np.ndarray:
        import torch

        captured = {}
        handle = module.register_forward_hook(lambda mod, inp, out: captured.__setitem__("out", out))
        try:
            with model.autocast():
                model.model.encode_image(model.prepare_pixels(pixels))
        finally:
            handle.remove()
        fmap = _as_map(captured["out"], model).float()
        if spec.pooling == "mac":
            vec = mac(fmap)
        elif spec.pooling == "gem":
            vec = gem(fmap, spec.gem_p)
        else:
            hw = tuple(fmap.shape[2:])
            if hw not in regions_cache:
                regions_cache[hw] = rmac_regions(*hw, levels=spec.levels, overlap=spec.overlap)
            vec = region_max(fmap, regions_cache[hw]).flatten(1)
        return vec.cpu().numpy().astype(np.float32)

    return encode


def region_count(model, spec: DescriptorSpec) -> int:
    """Regions per image for ``rmac`` at the model's input size (to un-flatten cached rows)."""
    if spec.pooling != "rmac":
        return 1  # no torch: a warm study on global descriptors imports none (issue 23)
    import torch

    module = _module(model, spec.layer or default_layer(model))
    captured = {}
    handle = module.register_forward_hook(lambda mod, inp, out: captured.__setitem__("out", out))
    try:
        with torch.inference_mode():
            h, w = model.image_size
            model.model.encode_image(torch.zeros(1, 3, h, w, device=model.device,
                                                 dtype=next(model.model.parameters()).dtype))
    finally:
        handle.remove()
    fmap = _as_map(captured["out"], model)
    return len(rmac_regions(*fmap.shape[2:], levels=spec.levels, overlap=spec.overlap))
