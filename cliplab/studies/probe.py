"""Probe study: linear probe (weight-decay sweep, refit) and k-shot probes on cached embeddings, beside zero-shot.

Images of both splits are embedded once (cached); every probe, seed and k reuses those arrays.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

from cliplab.data.base import ImageDataset, check_disjoint
from cliplab.embed import EmbeddingResult, embed_images
from cliplab.models.base import LoadedModel
from cliplab.progress import console, progress_bar
from cliplab.prompts import TemplateSet
from cliplab.embed.texts import class_text_embeddings
from cliplab.tasks.probe import DEFAULT_WD_GRID, KShotRow, ProbeResult, ProbeWarning, kshot_probes, linear_probe
from cliplab.tasks.zeroshot import build_classifier, evaluate


@dataclass
class ProbeStudy:
    model: LoadedModel
    train: ImageDataset
    test: ImageDataset
    train_images: EmbeddingResult
    test_images: EmbeddingResult
    zeroshot: dict | None = None  # metrics of the zero-shot classifier on test
    templates: TemplateSet | None = None
    linear: ProbeResult | None = None
    kshot: list[KShotRow] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # unconverged fits, a weight decay chosen at a grid edge


@contextmanager
def _probe_warnings(study: ProbeStudy):
    """Probe warnings are printed as one ``warning:`` line each (and kept on the study); others pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProbeWarning)
        yield
    for w in caught:
        if issubclass(w.category, ProbeWarning):
            study.warnings.append(str(w.message))
            console.print(f"[yellow]warning: {w.message}[/yellow]", highlight=False)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _check(train: ImageDataset, test: ImageDataset) -> None:
    for ds in (train, test):
        ds.require_classes("a probe")
    check_disjoint(train, test, "probe training")


def run_probe(model: LoadedModel, train: ImageDataset, test: ImageDataset, cache_dir=None, *,
              templates: TemplateSet | None = None, linear: bool = True, kshots=(1, 2, 4, 8, 16), seeds=(0, 1, 2),
              zeroshot_init: bool = True, wd: float | None = None, val_fraction: float = 0.2, seed: int = 0,
              device=None, batch_size: int = 64, num_workers: int | None = None, quiet: bool = False) -> ProbeStudy:
    _check(train, test)
    t0 = time.perf_counter()
    tr = embed_images(model, train, cache_dir, batch_size=batch_size, num_workers=num_workers, quiet=quiet,
                      description=f"embedding {train.split}")
    te = embed_images(model, test, cache_dir, batch_size=batch_size, num_workers=num_workers, quiet=quiet,
                      description=f"embedding {test.split}")
    study = ProbeStudy(model, train, test, tr, te, templates=templates)
    study.seconds["images"] = time.perf_counter() - t0
    Xtr, ytr = tr.embeddings, train.labels[tr.indices]
    Xte, yte = te.embeddings, test.labels[te.indices]
    C = len(train.classnames)
    zs_weights = None
    if templates is not None:
        zs_weights = build_classifier(class_text_embeddings(model, train.classnames, templates, cache_dir))
        study.zeroshot = evaluate(Xte, yte, zs_weights).metrics
    if linear:
        t1 = time.perf_counter()
        n_sweep = 0 if wd is not None else len(DEFAULT_WD_GRID)
        with progress_bar(n_sweep + 1, "linear probe (weight-decay sweep + refit)", quiet, unit="fits") as bar, \
                _probe_warnings(study):
            def on_fit(done, total):
                bar.set_total(total + 1)
                bar.advance()

            study.linear = linear_probe(Xtr, ytr, Xte, yte, C, wd=wd, val_fraction=val_fraction, seed=seed,
                                        device=device, on_fit=on_fit)
            bar.advance()
        study.seconds["linear"] = time.perf_counter() - t1
    if kshots:
        t1 = time.perf_counter()
        n_fits = len(kshots) * len(seeds) * (2 if zeroshot_init and zs_weights is not None else 1)
        with progress_bar(n_fits, "k-shot probes", quiet, unit="fits") as bar, _probe_warnings(study):
            study.kshot = kshot_probes(Xtr, ytr, Xte, yte, C, ks=tuple(kshots), seeds=tuple(seeds),
                                       zeroshot_weights=zs_weights if zeroshot_init else None,
                                       logit_scale=model.logit_scale, val_fraction=val_fraction, device=device,
                                       on_fit=bar.advance)
        study.seconds["kshot"] = time.perf_counter() - t1
    study.seconds["total"] = time.perf_counter() - t0
    return study
