"""The PyTorch backend: the towers run as loaded (any device; autocast for the amp precisions on CUDA; NHWC memory
format for convolutional image towers; optionally ``torch.compile``)."""
from __future__ import annotations

from typing import Any

from cliplab.errors import ModelParameterError
from cliplab.models.backends import Backend, Runtime, register


class TorchRuntime(Runtime):
    """The PyTorch towers of a loaded model."""

    name = "torch"

    def __init__(self, encode_image=None):
        self._encode_image = encode_image  # a torch.compile'd encoder, if any

    def encode_images(self, loaded, pixels):
        import torch

        with torch.inference_mode(), loaded.autocast():
            out = (self._encode_image or loaded.model.encode_image)(loaded.prepare_pixels(pixels))
        return out.float().cpu()

    def encode_texts(self, loaded, tokens, backend: str):
        import torch

        with torch.inference_mode():
            dev = loaded.device
            tokens = {k: v.to(dev) for k, v in tokens.items()} if isinstance(tokens, dict) else tokens.to(dev)
            with loaded.autocast():
                out = loaded.model.encode_text(tokens)
        return out.float().cpu()


class TorchBackend(Backend):
    name = "torch"
    precisions = ("fp32", "amp", "amp_bf16", "fp16", "bf16")

    def auto_rank(self, device, compile: bool) -> int:
        return 0  # always possible; other backends rank above it where they are faster

    def check_precision(self, precision: str, device) -> None:
        super().check_precision(precision, device)
        if device.type == "cpu" and precision != "fp32":
            raise ModelParameterError("precision", precision, f"{{p:precision}} {precision} needs a GPU; use fp32 on "
                                      "CPU", prefix=False)

    def attach(self, loaded, cache_dir, precision: str, *, channels_last: bool | None = None, compile: bool = False,
               **_: Any) -> TorchRuntime:
        import torch

        if channels_last is None:
            channels_last = loaded.conv_tower
        if channels_last:
            loaded.model.visual.to(memory_format=torch.channels_last)
            loaded.channels_last = True
        return TorchRuntime(torch.compile(loaded.model.encode_image, dynamic=True) if compile else None)


TORCH = register(TorchBackend())
