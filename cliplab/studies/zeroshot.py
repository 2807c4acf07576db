"""Zero-shot study: embed images once, then evaluate any number of template sets against them."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cliplab.data.base import ImageDataset
from cliplab.embed import EmbeddingResult, embed_images, embed_texts
from cliplab.models.base import LoadedModel
from cliplab.prompts import TemplateSet
from cliplab.tasks.zeroshot import ZeroShotResult, build_classifier, evaluate


@dataclass
class TemplateEvaluation:
    template_set: TemplateSet
    result: ZeroShotResult
    text_seconds: float


@dataclass
class ZeroShotRun:
    model: LoadedModel
    dataset: ImageDataset
    images: EmbeddingResult
    labels: np.ndarray  # labels of the embedded images (aligned with images.indices)
    evaluations: list[TemplateEvaluation] = field(default_factory=list)
    seconds: float = 0.0


def class_text_embeddings(model: LoadedModel, classnames: list[str], template_set: TemplateSet,
                          cache_dir: Path | str | None) -> np.ndarray:
    """(C, T, d) raw text embeddings of every class x template prompt (cached)."""
    texts = template_set.texts(classnames)
    emb = embed_texts(model, texts, cache_dir)
    return emb.reshape(len(classnames), len(template_set.templates), -1)


def run_zeroshot(model: LoadedModel, dataset: ImageDataset, template_sets: list[TemplateSet],
                 cache_dir: Path | str | None = None, *, batch_size: int = 64, num_workers: int | None = None,
                 use_cache: bool = True, quiet: bool = False, ks: tuple[int, ...] = (1, 5),
                 pipeline: str = "pil") -> ZeroShotRun:
    dataset.require_classes("zero-shot classification")
    t0 = time.perf_counter()
    images = embed_images(model, dataset, cache_dir, batch_size=batch_size, num_workers=num_workers,
                          use_cache=use_cache, quiet=quiet, pipeline=pipeline)
    labels = dataset.labels[images.indices]
    run = ZeroShotRun(model=model, dataset=dataset, images=images, labels=labels)
    for ts in template_sets:
        t1 = time.perf_counter()
        classifier = build_classifier(class_text_embeddings(model, dataset.classnames, ts, cache_dir))
        text_seconds = time.perf_counter() - t1
        run.evaluations.append(TemplateEvaluation(ts, evaluate(images.embeddings, labels, classifier, ks), text_seconds))
    run.seconds = time.perf_counter() - t0
    return run
