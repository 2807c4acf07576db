"""Linear probe: cliplab's torch L-BFGS vs scikit-learn LogisticRegression on the same features and regularisation.

    python benchmarks/probe_vs_sklearn.py [--device cpu|cuda]

Two feature sets: tiny-shapes embeddings of shapes (5000 train / 1000 test, 5 background classes) and a
synthetic CLIP-sized problem (20,000 x 512, 100 classes). Same objective (C = 1 / (wd * n)), same
L2-normalised features, both run to convergence (sklearn tol 1e-6); time of one fit and test accuracy per weight decay.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from _common import device_tag, machine, markdown_table, save


def synthetic(n_train=20000, n_test=5000, d=512, classes=100, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d)).astype(np.float32)
    def draw(n):
        y = rng.integers(0, classes, n)
        return (centers[y] + 9.0 * rng.normal(size=(n, d))).astype(np.float32), y
    return (*draw(n_train), *draw(n_test))


def shapes_features(device):
    from cliplab.data import load_dataset
    from cliplab.demo import ensure_tiny_model
    from cliplab.embed import embed_images
    from cliplab.models import load_model

    ensure_tiny_model(quiet=True)
    m = load_model("tiny-shapes", device=device)
    tr, te = (load_dataset("shapes:background", split=s) for s in ("train", "test"))
    a, b = embed_images(m, tr, quiet=True), embed_images(m, te, quiet=True)
    return a.embeddings, tr.labels[a.indices], b.embeddings, te.labels[b.indices]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--wds", default="1e-5,1e-4,1e-3")
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression

    from cliplab.tasks.metrics import l2_normalize
    from cliplab.tasks.probe import fit_logreg

    rows = []
    for name, data in (("tiny-shapes/shapes", shapes_features(args.device)), ("synthetic 20k x 512, 100 cls",
                                                                             synthetic())):
        Xtr, ytr, Xte, yte = data
        C = int(max(ytr.max(), yte.max()) + 1)
        Ntr, Nte = l2_normalize(Xtr), l2_normalize(Xte)
        for wd in [float(w) for w in args.wds.split(",")]:
            fit_logreg(Xtr[:64], ytr[:64], C, wd, device=args.device, max_iter=5)  # warm-up (CUDA context, kernels)
            t0 = time.perf_counter()
            m = fit_logreg(Xtr, ytr, C, wd, device=args.device)
            t_torch = time.perf_counter() - t0
            t0 = time.perf_counter()
            sk = LogisticRegression(C=1.0 / (wd * len(ytr)), max_iter=5000, tol=1e-6).fit(Ntr, ytr)
            t_sk = time.perf_counter() - t0
            rows.append({"features": name, "wd": wd, "torch_s": t_torch, "sklearn_s": t_sk,
                         "speedup": t_sk / t_torch, "torch_acc": float(np.mean(m.scores(Xte).argmax(1) == yte)),
                         "sklearn_acc": float(sk.score(Nte, yte))})
            rows[-1]["acc_diff_pt"] = 100 * (rows[-1]["torch_acc"] - rows[-1]["sklearn_acc"])
            print(rows[-1], flush=True)
    print(markdown_table(rows, ["features", "wd", "torch_s", "sklearn_s", "speedup", "torch_acc", "sklearn_acc",
                                "acc_diff_pt"]))
    print(f"saved {save('probe_vs_sklearn-' + device_tag(args.device), {'machine': machine(), 'device': args.device or 'auto', 'rows': rows})}")


if __name__ == "__main__":
    main()
