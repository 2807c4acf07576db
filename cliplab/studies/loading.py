"""Models and datasets from Python: ``cliplab.load_model`` and ``cliplab.load_dataset``, declared like the studies
(the same parameters, defaults, checks and errors as every command's ``--model`` / ``--dataset`` options), returning
the loaded objects every study function accepts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cliplab.errors import DatasetParameterError, ModelParameterError
from cliplab.inputs import CACHE_DIR_P, CLASSNAMES_P, DATA_ROOT_P, DATASET_P, LIMIT_P, LOADING, ONE_MODEL, SPLIT_P, \
    Inputs
from cliplab.params import param
from cliplab.registry import Study, register

if TYPE_CHECKING:
    from cliplab.data.base import ImageDataset
    from cliplab.models.base import LoadedModel


@dataclass(frozen=True)
class ModelParams:
    """How a model is loaded, beyond its name and weights."""
    channels_last: bool | None = param(None, "NHWC memory format for the image tower (default: on for convolutional "
                                       "towers).")
    compile: bool = param(False, "torch.compile the image encoder (pays off on large collections on GPU; makes "
                          "{p:backend} auto PyTorch).")
    force_quick_gelu: bool | None = param(None, "override the QuickGELU choice of an open_clip model (default: what "
                                          "its pretrained tag needs).")


def run_load_model(inputs: Inputs, params: ModelParams = ModelParams()) -> LoadedModel:
    """The model, loaded (the shipped ``tiny-shapes`` from the package)."""
    from cliplab.models.base import LoadedModel

    if isinstance(inputs.values.get("model"), LoadedModel):
        raise ModelParameterError("model", inputs.model.name, "is already loaded; pass it to the study functions as "
                                  "it is", quote=False)
    return inputs.model


register(Study(
    "load_model", run_load_model, "Load any supported CLIP model (the CLI's --model / --pretrained values).",
    params=ModelParams, inputs=(*ONE_MODEL, *LOADING), model_extra=("channels_last", "compile", "force_quick_gelu"),
    positional=("model", "pretrained"), tool=True, doors=frozenset({"api"}), group="Models, datasets and embeddings",
    order=1, returns="Accepted by every study function; ``.fingerprint`` keys its cached embeddings.",
    example='m = cliplab.load_model("ViT-B-32", pretrained="openai")\nm = cliplab.load_model("tiny-shapes")'))


def run_load_dataset(inputs: Inputs, params=None) -> ImageDataset:
    """The dataset, loaded."""
    from cliplab.data.base import ImageDataset

    if isinstance(inputs.values.get("dataset"), ImageDataset):
        raise DatasetParameterError("dataset", inputs.dataset.name, "is already loaded; pass it to the study "
                                    "functions as it is", quote=False)
    return inputs.dataset


register(Study(
    "load_dataset", run_load_dataset, "Load a dataset (the CLI's --dataset values).",
    inputs=(DATASET_P, SPLIT_P, DATA_ROOT_P, LIMIT_P, CLASSNAMES_P, CACHE_DIR_P), positional=("dataset",), tool=True,
    doors=frozenset({"api"}), group="Models, datasets and embeddings", order=2,
    returns="``.classnames``, ``.labels``, ``len(ds)``; accepted by every study function.",
    example='ds = cliplab.load_dataset("eurosat", data_root="data/", split="test")\n'
            'ds = cliplab.load_dataset("shapes:color", limit=200)'))
