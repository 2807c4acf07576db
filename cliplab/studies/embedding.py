"""Embeddings as a tool: ``cliplab embed`` / ``cliplab.embed`` (a dataset's images into the cache, and out as an
array, a DataFrame or a file) and ``cliplab.embed_texts`` (texts, in order). Declared like the studies, so both
doors take the same parameters, but they store no results."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cliplab.embed import EmbeddingResult, embed_images, embed_texts
from cliplab.inputs import IMAGES, LOADING, ONE_MODEL, RUN, TEXTS, Inputs
from cliplab.params import REQUIRED, param
from cliplab.progress import warn
from cliplab.registry import Output, Study, register
from cliplab.results.exports import FileArtifact, embedding_frame, write_embeddings
from cliplab.results.result import Failure, ModelInfo, DatasetInfo

if TYPE_CHECKING:
    from cliplab.data.base import ImageDataset
    from cliplab.models.base import LoadedModel


def _ray_address(value: str) -> str:
    """A ``--ray`` value checked with the other parameters, before the model or the images are opened."""
    from cliplab.embed.distributed import check_address, require_ray

    require_ray(check_address(value))
    return value


@dataclass(frozen=True)
class EmbedParams:
    """How ``embed`` runs and what the Python function returns."""
    shard_batches: int = param(16, "batches per cache shard (the resume unit).", min=1)
    compile: bool = param(False, "torch.compile the image encoder (pays off on large collections on GPU).")
    channels_last: bool | None = param(None, "NHWC memory format for the image tower (default: on for conv towers).")
    frame: bool = param(False, "return a DataFrame (row, id, label, classname, embedding) instead of an array.",
                        doors=frozenset({"api"}))
    normalize: bool = param(False, "unit-length rows (the studies' cosine space); default: the tower's raw output, as "
                            "`cliplab embed` writes.", doors=frozenset({"api"}))
    ray: str | None = param(None, "spread the work over Ray: local (start Ray on this machine), auto (the cluster "
                            "this machine belongs to) or ray://HOST:PORT; the same cache and keys as one process "
                            "(needs `pip install 'cliplab[ray]'`; docs/scaling.md).", metavar="ADDRESS", config=False,
                            validate=_ray_address)


@dataclass
class EmbedResult:
    """A dataset's image embeddings (from the cache where they are)."""
    model: LoadedModel
    data: ImageDataset
    images: EmbeddingResult
    task = "embedding"

    @property
    def failures(self) -> list[Failure]:
        return Failure.from_embedding(self.images.failures)

    @property
    def models(self) -> list[ModelInfo]:
        return [ModelInfo.of(self.model)]

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.data, int(len(self.images.indices)))

    def tables(self) -> list[str]:
        res = self.images
        return [f"{len(res.indices)} embeddings (dim {res.embeddings.shape[1]}), {res.computed} computed, "
                f"{len(res.indices) - res.computed} from cache; model fingerprint {self.model.fingerprint}"]

    def artifacts(self) -> dict:
        return {"embeddings": FileArtifact("the embeddings (.npy + .ids.csv, or .parquet)",
                                           lambda path: write_embeddings(path, self.images, self.data))}


def run_embed(inputs: Inputs, params: EmbedParams = EmbedParams()) -> EmbedResult:
    """Every image of the dataset embedded (computed only where the cache lacks it): an :class:`EmbedResult`."""
    if params.ray is not None:
        from cliplab.embed.distributed import embed_images_ray

        images = embed_images_ray(inputs.model, inputs.dataset, inputs.options, address=params.ray,
                                  shard_batches=params.shard_batches)
    else:
        images = embed_images(inputs.model, inputs.dataset, inputs.options, shard_batches=params.shard_batches)
    return EmbedResult(inputs.model, inputs.dataset, images)


def embeddings_out(result: EmbedResult, values: dict) -> np.ndarray | pd.DataFrame:
    """What ``cliplab.embed`` returns: the array, or a DataFrame with ``frame``; unit rows with ``normalize``."""
    res = result.images
    if res.failures:
        warn(f"{len(res.failures)} image(s) could not be read and are left out (e.g. {res.failures[0][1]}: "
             f"{res.failures[0][2]})")
    X = res.embeddings
    if values.get("normalize"):
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    if not values.get("frame"):
        return X
    out = embedding_frame(res, result.data)
    out["embedding"] = list(X)
    return out


EMBED = register(Study(
    "embed", run_embed, "Embed a dataset's images into the cache (resumable), optionally exporting them.",
    description="Shards are written every {p:shard_batches} batches or 30 s; unreadable images and images over "
                "400 MP are skipped with the reason.",
    params=EmbedParams, inputs=(*ONE_MODEL, *IMAGES, *RUN), model_extra=("compile", "channels_last"),
    outputs=(Output("output", "embeddings", ".npy (+ .ids.csv sidecar) or .parquet.", (".npy", ".parquet"),
                    short="-o", beside=lambda p: [p, p.with_name(p.stem + ".ids.csv")] if p.suffix.lower() == ".npy"
                    else [p]),),
    tool=True, api_result=embeddings_out, group="Models, datasets and embeddings", order=3,
    returns="One row per readable image, in dataset order; unreadable images are left out with a warning.",
    example='X = cliplab.embed("tiny-shapes", "shapes:color", limit=100, quiet=True)\nX.shape'))


@dataclass(frozen=True)
class TextParams:
    """What ``embed_texts`` embeds."""
    texts: tuple[str, ...] = param(REQUIRED, "the texts (one string or a list).")
    normalize: bool = param(False, "unit-length rows (default: the tower's raw output).")


def run_embed_texts(inputs: Inputs, params: TextParams) -> np.ndarray:
    """Text embeddings (cached per text), rows in the order of the texts."""
    T = embed_texts(inputs.model, list(params.texts), inputs.options)
    return T / np.maximum(np.linalg.norm(T, axis=1, keepdims=True), 1e-12) if params.normalize else T


EMBED_TEXTS = register(Study(
    "embed_texts", run_embed_texts, "Text embeddings (cached per text), rows in the order of the texts.",
    params=TextParams, inputs=(*ONE_MODEL, *LOADING, *TEXTS), positional=("model", "texts"), tool=True,
    doors=frozenset({"api"}), group="Models, datasets and embeddings", order=4,
    example='T = cliplab.embed_texts("tiny-shapes", ["a red circle", "a blue square"], normalize=True)'))
