"""Linear probe: cliplab (torch L-BFGS, weight-decay sweep + refit) vs scikit-learn under the same protocol.

    python benchmarks/_probe_data.py --cache-dir /tmp/probe-bench/cache        # embed once (slow: ViT-B-32)
    python benchmarks/probe_vs_sklearn.py --cache-dir /tmp/probe-bench/cache [--device cpu|cuda]
        [--models tiny-shapes,ViT-B-32] [--datasets eurosat,cifar10] [--limit N] [--old-rev REV]

Data: the shared EuroSAT folder (train = its validation split, 5,400 images; test = its test split, 2,700) and
the shared CIFAR-10 folder (10,000 test images; a seeded stratified half is train, the other half test, see
``_probe_data.py``), embedded by the trained tiny-shapes model and by a seeded random-weight ViT-B-32.

Protocol, identical for both: L2-normalised features; a seeded stratified 20 % validation part of train; the
grid of weight decays cliplab swept (its default grid plus any edge extension) as C = 1 / (wd * n);
best = highest validation accuracy, ties to the larger wd; refit on all of train; test accuracy once.
scikit-learn: ``LogisticRegression(solver="lbfgs", max_iter=10000, tol=1e-8)``, each fit from scratch, with
ConvergenceWarning recorded (the run reports how many). Times are fit time only (embeddings given), measured in
the same process, one after the other. ``--old-rev`` adds the probe of an earlier commit for comparison.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import device_tag, machine, markdown_table, save
from _probe_data import features, load_model_by_name

ROOT = Path(__file__).resolve().parents[1]


def sklearn_protocol(Xtr, ytr, Xte, yte, grid, val_fraction=0.2, seed=0) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from cliplab.tasks.metrics import l2_normalize
    from cliplab.tasks.probe import stratified_split

    tr, va = stratified_split(ytr, val_fraction, seed)
    N, Nte = l2_normalize(Xtr).astype(np.float64), l2_normalize(Xte).astype(np.float64)
    unconverged = []

    def fit(idx, wd):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            m = LogisticRegression(C=1.0 / (wd * len(idx)), solver="lbfgs", max_iter=10000, tol=1e-8).fit(
                N[idx], ytr[idx])
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            unconverged.append(wd)
        return m

    t0 = time.perf_counter()
    points = []
    for wd in sorted(grid, reverse=True):
        m = fit(tr, wd)
        points.append({"wd": wd, "val_acc": float(m.score(N[va], ytr[va])), "n_iter": int(m.n_iter_.max())})
    best = max(points, key=lambda p: (p["val_acc"], p["wd"]))["wd"]
    final = fit(np.arange(len(ytr)), best)
    seconds = time.perf_counter() - t0
    return {"wd": best, "test_acc": float(final.score(Nte, yte)), "seconds": seconds, "points": points,
            "refit_n_iter": int(final.n_iter_.max()), "unconverged": unconverged}


def old_probe(rev: str):
    """The probe module as it was at commit ``rev`` (to show the defect next to the fix)."""
    src = subprocess.run(["git", "show", f"{rev}:cliplab/tasks/probe.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path("/tmp") / f"cliplab_probe_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"cliplab_probe_{rev}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", required=True, help="embedding cache (filled by _probe_data.py)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--models", default="tiny-shapes,ViT-B-32")
    ap.add_argument("--datasets", default="eurosat,cifar10")
    ap.add_argument("--limit", type=int, default=None, help="seeded subset of each folder/split (see _probe_data)")
    ap.add_argument("--old-rev", default=None, help="also run the probe of this commit (e.g. 0504341)")
    args = ap.parse_args()
    import torch

    from cliplab.tasks.probe import fit_logreg, linear_probe

    old = old_probe(args.old_rev) if args.old_rev else None
    rows, details = [], []
    for name in args.models.split(","):
        model = load_model_by_name(name, args.cache_dir, args.device)
        for ds in args.datasets.split(","):
            Xtr, ytr, Xte, yte, classes = features(model, ds, args.cache_dir, args.limit)
            C = len(classes)
            fit_logreg(Xtr[:64], ytr[:64], C, 1e-3, device=args.device, max_iter=5, warn=False)  # warm-up
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                res = linear_probe(Xtr, ytr, Xte, yte, C, device=args.device)
                if torch.cuda.is_available() and str(args.device or "cuda").startswith("cuda"):
                    torch.cuda.synchronize()
                t_cl = time.perf_counter() - t0
            sk = sklearn_protocol(Xtr, ytr, Xte, yte, [p.wd for p in res.sweep.points])
            row = {"model": name, "dataset": ds, "n_train": len(ytr), "n_test": len(yte), "dim": Xtr.shape[1],
                   "classes": C, "grid_points": len(res.sweep.points), "extended": len(res.sweep.extended),
                   "edge": res.sweep.edge, "cliplab_wd": res.wd, "sklearn_wd": sk["wd"],
                   "cliplab_acc": 100 * res.test_metrics["acc1"], "sklearn_acc": 100 * sk["test_acc"],
                   "cliplab_s": t_cl, "sklearn_s": sk["seconds"], "speedup": sk["seconds"] / t_cl,
                   "cliplab_converged": res.converged, "cliplab_refit_iter": res.model.iterations,
                   "sklearn_unconverged": len(sk["unconverged"]), "sklearn_refit_iter": sk["refit_n_iter"],
                   "warnings": [str(w.message) for w in caught]}
            row["diff_pt"] = row["cliplab_acc"] - row["sklearn_acc"]
            if old is not None:
                t0 = time.perf_counter()
                o = old.linear_probe(Xtr, ytr, Xte, yte, C, device=args.device)
                row.update(old_acc=100 * o.test_metrics["acc1"], old_wd=o.wd, old_s=time.perf_counter() - t0,
                           old_refit_iter=o.model.iterations)
            sk_val = {p["wd"]: p for p in sk["points"]}
            details.append({"model": name, "dataset": ds, "points": [
                {"wd": p.wd, "C": 1 / (p.wd * res.sweep.n_train), "cliplab_train_acc": p.train_acc,
                 "cliplab_val_acc": p.val_acc, "sklearn_val_acc": sk_val[p.wd]["val_acc"],
                 "cliplab_iter": p.iterations, "cliplab_converged": p.converged,
                 "sklearn_iter": sk_val[p.wd]["n_iter"], "added": p.added} for p in res.sweep.points]})
            rows.append(row)
            print({k: v for k, v in row.items() if k != "warnings"}, flush=True)
            print(markdown_table(details[-1]["points"], ["wd", "cliplab_train_acc", "cliplab_val_acc",
                                                         "sklearn_val_acc", "cliplab_iter", "sklearn_iter",
                                                         "cliplab_converged", "added"]), flush=True)
    cols = ["model", "dataset", "n_train", "n_test", "dim", "grid_points", "cliplab_wd", "sklearn_wd",
            "cliplab_acc", "sklearn_acc", "diff_pt", "cliplab_s", "sklearn_s", "speedup", "cliplab_converged",
            "sklearn_unconverged"] + (["old_acc", "old_wd"] if old is not None else [])
    print(markdown_table(rows, cols))
    payload = {"machine": machine(), "device": args.device or "auto", "limit": args.limit, "old_rev": args.old_rev,
               "rows": rows, "sweeps": details}
    tag = "-".join([args.models.replace(",", "+"), args.datasets.replace(",", "+")]
                   + ([f"limit{args.limit}"] if args.limit else []) + [device_tag(args.device)])
    print(f"saved {save('probe_vs_sklearn-' + tag, payload)}")


if __name__ == "__main__":
    main()
