"""Embeddings for the probe benchmark: the shared EuroSAT and CIFAR-10 folders under tiny-shapes or a seeded
random-weight ViT-B-32, embedded once into a fixed cache (``--cache-dir``) and reused by every later run.

    python benchmarks/_probe_data.py --cache-dir /tmp/cliplab-probe-bench [--models tiny-shapes,ViT-B-32]

embeds everything up front (the slow part: ~10+ minutes of ViT-B-32 on 2 CPU cores); the benchmark then only
reads the cache.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import _common  # noqa: F401  (puts the repository on sys.path)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_TEST_FRACTION = 0.5  # CIFAR-10 folder has one split: a seeded stratified half is the test part
CIFAR_SPLIT_SEED = 2024


def load_model_by_name(name: str, cache_dir, device=None):
    import torch

    from cliplab.models import open_model

    if name == "tiny-shapes":
        from cliplab.train.tiny import ensure_tiny_model

        ensure_tiny_model(cache_dir)
        return open_model("tiny-shapes", device=device, cache_dir=cache_dir)
    torch.manual_seed(0)  # random weights, seeded: same fingerprint, so the embedding cache is reused
    return open_model(name, None, device=device, cache_dir=cache_dir)


def features(model, dataset: str, cache_dir, limit: int | None = None, quiet: bool = True):
    """(X_train, y_train, X_test, y_test, classnames) for ``eurosat`` (train = validation split, test = test split)
    or ``cifar10`` (the one 10,000-image folder split into seeded stratified halves). ``limit`` takes a seeded
    subset of each part (CIFAR: of the folder before the split)."""
    from cliplab.data import open_dataset
    from cliplab.embed import embed_images
    from cliplab.tasks.probe import stratified_split

    def emb(ds):
        r = embed_images(model, ds, cache_dir, description=f"embedding {ds.name} {ds.split}")
        return r.embeddings, ds.labels[r.indices]

    if dataset == "eurosat":
        tr = open_dataset(str(SHARED / "eurosat"), split="validation", limit=limit, cache_dir=cache_dir)
        te = open_dataset(str(SHARED / "eurosat"), split="test", limit=limit, cache_dir=cache_dir)
        return (*emb(tr), *emb(te), list(tr.classnames))
    if dataset == "cifar10":
        ds = open_dataset(str(SHARED / "cifar10-test"), limit=limit, cache_dir=cache_dir)
        X, y = emb(ds)
        tr, te = stratified_split(y, CIFAR_TEST_FRACTION, CIFAR_SPLIT_SEED)
        return X[tr], y[tr], X[te], y[te], list(ds.classnames)
    raise SystemExit(f"unknown dataset {dataset!r}: eurosat or cifar10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--models", default="tiny-shapes,ViT-B-32")
    ap.add_argument("--datasets", default="eurosat,cifar10")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    for name in args.models.split(","):
        model = load_model_by_name(name, args.cache_dir)
        for d in args.datasets.split(","):
            Xtr, ytr, Xte, yte, _ = features(model, d, args.cache_dir, args.limit)
            print(f"{name} {d}: train {Xtr.shape} test {Xte.shape} classes {len(np.unique(ytr))}", flush=True)


if __name__ == "__main__":
    main()
