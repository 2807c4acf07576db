"""Machine-readable outputs: CLIP_benchmark-shaped JSON, per-image prediction CSVs, embedding files."""
from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from cliplab.io import atomic_path, write_json_atomic
from cliplab.version import __version__

SCALAR_METRICS = ("acc1", "acc5", "mean_per_class_recall", "mean_correct_similarity")


def provenance() -> dict:
    import torch

    return {"cliplab_version": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_json(path: str | Path, record: dict) -> None:
    write_json_atomic(path, record)


def write_table(path: str | Path, df: pd.DataFrame) -> None:
    """CSV, JSONL or parquet by extension, written atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif suffix in (".jsonl", ".ndjson"):
            df.to_json(tmp, orient="records", lines=True)
        else:
            raise ValueError(f"{path}: use .csv, .parquet or .jsonl")


def write_embeddings(path: str | Path, result, dataset) -> list[Path]:
    """``.npy`` (+ ``<stem>.ids.csv`` sidecar with id/path/label per row) or ``.parquet`` (one row per image)."""
    path = Path(path)
    ids = [dataset.source.id(int(i)) for i in result.indices]
    meta = pd.DataFrame({"row": np.arange(len(ids)), "id": ids})
    if dataset.labels is not None:
        meta["label"] = dataset.labels[result.indices]
        if dataset.classnames:
            meta["classname"] = np.asarray(dataset.classnames, dtype=object)[meta["label"].to_numpy()]
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, result.embeddings)
        side = path.with_name(path.stem + ".ids.csv")
        write_table(side, meta)
        return [path, side]
    if suffix == ".parquet":
        meta["embedding"] = list(result.embeddings)
        write_table(path, meta)
        return [path]
    raise ValueError(f"--output {path}: use .npy or .parquet")


def prompt_study_json(study, config: dict) -> dict:
    def row(r):
        out = {"name": r.name, "kind": r.kind, "n_prompts": r.n_prompts, "templates": list(r.templates),
               "metrics": {k: r.metrics[k] for k in ("acc1", "acc5", "mean_per_class_recall",
                                                      "mean_correct_similarity")},
               "per_class_recall": dict(zip(study.dataset.classnames, r.metrics["per_class_recall"]))}
        if r.vs_baseline is not None:
            c = r.vs_baseline
            out["vs_baseline"] = {"diff": c.diff, "ci95": [c.ci_low, c.ci_high], "mcnemar_p": c.p_value,
                                  "only_baseline_correct": c.only_a, "only_this_correct": c.only_b,
                                  "significant": c.significant}
        return out

    return {"dataset": study.dataset.name, "model": study.model.name, "pretrained": study.model.pretrained,
            "task": "prompt_study", "split": study.dataset.split, "baseline": study.baseline,
            "rows": [row(r) for r in study.rows], "selection": study.selection,
            "num_images": int(len(study.labels)), "model_fingerprint": study.model.fingerprint,
            "dataset_fingerprint": study.dataset.fingerprint, "timing": study.seconds, "config": config,
            **provenance()}


def probe_json(study, config: dict) -> dict:
    def metrics(m):
        return {k: m[k] for k in ("acc1", "acc5", "mean_per_class_recall") if k in m}

    out = {"dataset": study.test.name, "model": study.model.name, "pretrained": study.model.pretrained,
           "task": "linear_probe", "split": study.test.split, "train_split": study.train.split,
           "classnames": study.test.classnames, "num_train": int(len(study.train_images.indices)),
           "num_test": int(len(study.test_images.indices)), "model_fingerprint": study.model.fingerprint,
           "dataset_fingerprint": study.test.fingerprint, "timing": study.seconds, "config": config, **provenance()}
    if study.zeroshot is not None:
        out["zeroshot"] = metrics(study.zeroshot)
    if study.linear is not None:
        lp = study.linear
        out["metrics"] = metrics(lp.test_metrics)
        out["linear_probe"] = {"weight_decay": lp.wd, "train": metrics(lp.train_metrics),
                               "test": metrics(lp.test_metrics), "val_curve": lp.val_curve, "n_val": lp.n_val,
                               "iterations": lp.model.iterations, "converged": lp.converged, "tol": lp.tol,
                               "max_iter": lp.max_iter,
                               "sweep": None if lp.sweep is None else {
                                   "n_train": lp.sweep.n_train, "n_val": lp.sweep.n_val, "edge": lp.sweep.edge,
                                   "points": [{"weight_decay": p.wd, "C": 1 / (p.wd * lp.sweep.n_train),
                                               "train_acc1": p.train_acc, "val_acc1": p.val_acc,
                                               "iterations": p.iterations, "converged": p.converged,
                                               "max_abs_gradient": p.grad_max, "added": p.added,
                                               "chosen": p.wd == lp.wd} for p in lp.sweep.points]},
                               "per_class_recall": dict(zip(study.test.classnames,
                                                            lp.test_metrics["per_class_recall"]))}
    out["warnings"] = list(getattr(study, "warnings", []))
    out["kshot"] = [{"k": r.k, "variant": r.variant, "acc1": r.accs, "seeds": r.seeds, "mean": r.mean, "std": r.std,
                     "weight_decay": r.wds} for r in study.kshot]
    return out


def write_artifact(path: str | Path, result, name: str, artifacts: dict, config: dict) -> list[tuple[Path, str | None]]:
    """Write one thing a study result offers: ``record`` (its JSON document, with the run's config and
    provenance), a table (CSV/parquet/JSONL by suffix), or anything with ``write(path) -> [(path, caption)]``
    (figures; files such as an index). Returns (path, caption) per file written; the caption is None for anything
    that is not a figure."""
    path = Path(path)
    if name == "record":
        write_json(path, {**result.record(), "config": config, **provenance()})
        return [(path, None)]
    obj = artifacts[name]
    if isinstance(obj, pd.DataFrame):
        write_table(path, obj)
        return [(path, None)]
    if callable(getattr(obj, "write", None)):  # a Figure, or any artifact that writes itself (e.g. an index)
        return [(Path(p), caption) for p, caption in obj.write(path)]
    raise TypeError(f"artifact {name!r}: cannot write a {type(obj).__name__}")
