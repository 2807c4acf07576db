"""cliplab: evaluate CLIP-style vision-language models — cached, reproducible, fast.

Data flows one way: model + dataset -> cached embeddings -> task -> result rows -> report.
"""
from cliplab.version import __version__
from cliplab.errors import CliplabError, ModelLoadError, DatasetError


def load_model(model, pretrained=None, device=None, precision=None, **kwargs):
    """Load any supported CLIP model; see :func:`cliplab.models.load_model`."""
    from cliplab.models import load_model as _load  # heavy: cliplab.models imports torch; `import cliplab` stays light

    return _load(model, pretrained=pretrained, device=device, precision=precision, **kwargs)


__all__ = ["__version__", "load_model", "CliplabError", "ModelLoadError", "DatasetError"]
