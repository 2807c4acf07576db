"""``LoadedModel``: what every model source is turned into — towers, preprocessing, tokenizer, fingerprint."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # importing this module loads no torch: a model known from its memo (models/memo.py) needs none
    import torch


@dataclass(repr=False)
class LoadedModel:
    model: torch.nn.Module
    preprocess: Callable  # PIL image -> CHW float tensor (the reference, PIL-based path)
    tokenizer: Callable  # list[str] -> LongTensor (or a dict of tensors for HF)
    fingerprint: str  # hash of (architecture, weights, preprocessing, precision)
    name: str
    pretrained: str | None
    device: torch.device
    precision: str  # fp32 | amp | amp_bf16 | fp16 | bf16
    embed_dim: int
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)
    source: str = "open_clip"  # open_clip | hf
    channels_last: bool = False  # inputs (and the tower) in NHWC memory format
    backend: str = "torch"  # the name of the backend that runs the towers (self.model stays the PyTorch module)
    weights_fingerprint: str = ""  # the fingerprint of the PyTorch model, whatever runs it
    runtime: Any = field(default=None, repr=False)  # the backend's runtime (cliplab.models.backends.Runtime)
    trained_on: str | None = None  # the pretraining data the weights' metadata records (cliplab.models.facts)
    spec: dict | None = None  # what was asked for: {"model": ..., "pretrained": ...} as given (a run's config names it)

    @property
    def conv_tower(self) -> bool:
        """A convolutional image tower (ResNet / ConvNeXt), where channels_last pays off."""
        visual = getattr(self.model, "visual", None)
        return visual is not None and (hasattr(visual, "layer4") or "convnext" in type(
            getattr(visual, "trunk", visual)).__name__.lower())

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale) of the model (100 for trained CLIPs); 100 when the model has none."""
        import torch

        ls = getattr(self.model, "logit_scale", None)
        return float(ls.detach().exp().item()) if isinstance(ls, torch.Tensor) else 100.0

    @property
    def logit_bias(self) -> float | None:
        """The learned bias of a sigmoid head (SigLIP models); None for a CLIP model (a softmax head)."""
        import torch

        b = getattr(self.model, "logit_bias", None)
        return float(b.detach().float().reshape(-1)[0].item()) if isinstance(b, torch.Tensor) else None

    @property
    def head(self) -> str:
        """How the model turns cosines into probabilities: ``softmax`` over the classes (CLIP) or ``sigmoid`` of
        each class on its own, with :attr:`logit_bias` (SigLIP)."""
        return "softmax" if self.logit_bias is None else "sigmoid"

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.preprocess_cfg.get("size", 224)
        return (size, size) if isinstance(size, int) else tuple(size)

    def autocast(self):
        if self.device.type == "cuda" and self.precision in ("amp", "amp_bf16"):
            import torch

            dtype = torch.bfloat16 if self.precision == "amp_bf16" else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings as float32 on the CPU (run by the model's backend)."""
        return self.runtime.encode_images(self, pixels)

    def prepare_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels -> the tower's device, dtype and memory format."""
        pixels = pixels.to(self.device, non_blocking=True)
        if self.precision in ("fp16", "bf16"):
            pixels = pixels.to(next(self.model.parameters()).dtype)
        if self.channels_last:
            import torch

            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return pixels

    def text_backend(self, n: int) -> str:
        """The backend that runs a call with ``n`` texts (a backend may leave small calls to PyTorch when converting
        its text tower would cost more: see the backend's runtime)."""
        return self.runtime.text_backend(n)

    def text_fingerprint(self, backend: str) -> str:
        """The cache key of text embeddings computed by ``backend`` (PyTorch's is that of the fp32 weights)."""
        return self.fingerprint if backend == self.backend else (self.weights_fingerprint or self.fingerprint)

    def encode_texts(self, texts: list[str], backend: str | None = None) -> torch.Tensor:
        """Unnormalised text embeddings as float32 on the CPU, from ``backend`` (default: :meth:`text_backend`)."""
        return self.runtime.encode_texts(self, self.tokenizer(texts), backend or self.text_backend(len(texts)))

    def __repr__(self) -> str:
        pre = f", pretrained={self.pretrained!r}" if self.pretrained else ""
        return (f"LoadedModel({self.name!r}{pre}, backend={self.backend!r}, precision={self.precision!r}, "
                f"device='{self.device}', embed_dim={self.embed_dim}, fingerprint={self.fingerprint!r})")

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "pretrained": self.pretrained,
            "fingerprint": self.fingerprint,
            "precision": self.precision,
            "backend": self.backend,
            "device": str(self.device),
            "embed_dim": self.embed_dim,
            "num_params": self.num_params,
            "preprocess": self.preprocess_cfg,
        }
