"""Hugging Face transformers CLIP (``--model hf:openai/clip-vit-base-patch32`` or ``hf:/local/folder``).

Optional: needs ``pip install 'cliplab[hf]'``. Preprocessing follows the model's CLIPImageProcessor config
(resize shortest side, centre crop, normalise) as a torchvision transform so it runs in DataLoader workers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchvision import transforms as T

from cliplab.errors import ModelParameterError
from cliplab.models.openclip import state_dict_identity, weights_identity


class _HFTowers(torch.nn.Module):
    """Gives a transformers CLIPModel the open_clip ``encode_image`` / ``encode_text`` interface."""

    def __init__(self, model):
        super().__init__()
        self.hf = model

    @property
    def logit_scale(self):
        return getattr(self.hf, "logit_scale", None)

    @property
    def logit_bias(self):
        return getattr(self.hf, "logit_bias", None)

    @staticmethod
    def _tensor(out):
        # transformers >= 5 may return a model output object instead of a tensor
        return out if isinstance(out, torch.Tensor) else getattr(out, "pooler_output", out[0])

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._tensor(self.hf.get_image_features(pixel_values=pixels))

    def encode_text(self, tokens: dict) -> torch.Tensor:
        return self._tensor(self.hf.get_text_features(**tokens))


class _HFTokenizer:
    def __init__(self, tok, max_length: int):
        self.tok, self.max_length = tok, max_length

    def __call__(self, texts: list[str]) -> dict:
        enc = self.tok(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                       return_tensors="pt")
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def _size(value, key: str, default: int) -> int:
    """A size of an image processor config: a number, a dict (transformers 4) or a SizeDict (transformers 5, which
    has ``get`` but is no dict); ``default`` when the key is missing or None."""
    if isinstance(value, (int, float)):
        return int(value)
    got = value.get(key) if hasattr(value, "get") else None
    return int(got) if got is not None else default


def load_hf(spec: str, device: torch.device, precision: str) -> dict[str, Any]:
    try:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel  # optional: extra [hf]
    except ImportError:
        raise ModelParameterError("model", spec, "{p:model} hf:... needs Hugging Face transformers: pip install "
                                  "'cliplab[hf]'", prefix=False) from None

    name = spec[len("hf:"):]
    local = Path(name).expanduser()
    try:
        model = CLIPModel.from_pretrained(str(local) if local.is_dir() else name)
        proc = CLIPImageProcessor.from_pretrained(str(local) if local.is_dir() else name)
        tok = AutoTokenizer.from_pretrained(str(local) if local.is_dir() else name)
    except OSError as exc:
        raise ModelParameterError(
            "model", spec, f"cannot load {spec} (offline or not found: {str(exc).splitlines()[0][:160]}); download it "
            "on a machine with internet (save_pretrained) and pass {p:model} hf:/path/to/folder",
            prefix=False) from None
    model.eval().to(device)
    if precision in ("fp16", "bf16"):
        model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
    size = _size(proc.crop_size, "height", 224)
    short = _size(proc.size, "shortest_edge", size)
    mean, std = list(proc.image_mean), list(proc.image_std)
    preprocess = T.Compose([
        T.Resize(short, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])
    max_len = int(getattr(model.config.text_config, "max_position_embeddings", 77))
    pp_cfg = {"size": size, "mean": mean, "std": std, "interpolation": "bicubic", "resize_mode": "shortest"}
    arch = model.config.to_dict()
    for k in ("_name_or_path", "transformers_version", "architectures"):
        arch.pop(k, None)

    weights_file = next((local / f for f in ("model.safetensors", "pytorch_model.bin") if (local / f).is_file()), None) \
        if local.is_dir() else None
    weights = weights_identity(str(weights_file)) if weights_file else ("hub:" + name if not local.is_dir()
                                                                         else state_dict_identity(model))
    return dict(model=_HFTowers(model), preprocess=preprocess, tokenizer=_HFTokenizer(tok, max_len), name=spec,
                pretrained=None, preprocess_cfg=pp_cfg, arch=arch, weights=weights,
                embed_dim=int(model.config.projection_dim))
