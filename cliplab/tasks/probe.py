"""Linear and k-shot probes on frozen embeddings: multinomial logistic regression in torch, full-batch L-BFGS.

Objective (the same as scikit-learn's ``LogisticRegression(C=...)`` with ``C = 1 / (wd * n)``)::

    mean_i CE(W x_i + b, y_i) + wd / 2 * ||W - W_anchor||^2        (bias not penalised)

``W_anchor`` is zero for a plain probe. (Anchored probes also penalise the bias, towards zero.) With a zero-shot initialisation the probe starts from, and is pulled
towards, the zero-shot classifier (scaled by the model's logit scale), so few shots refine it rather than
replace it; on a convex objective a mere starting point would make no difference, the anchor does.

Features are L2-normalised first (as zero-shot scores are), so the same weight-decay grid fits every model.
Written in torch rather than calling scikit-learn so that it runs on the GPU next to the embeddings; the
agreement with scikit-learn is tested and the speed ratio is in ``benchmarks/probe_vs_sklearn.py``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from cliplab.tasks.metrics import classification_metrics, l2_normalize

DEFAULT_WD_GRID = tuple(float(x) for x in np.logspace(-7, 1, 17))


@dataclass
class LinearModel:
    W: np.ndarray  # (C, d)
    b: np.ndarray  # (C,)
    wd: float
    iterations: int = 0

    def scores(self, X: np.ndarray) -> np.ndarray:
        return l2_normalize(X) @ self.W.T + self.b


def _device(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit_logreg(X: np.ndarray | torch.Tensor, y: np.ndarray, num_classes: int, wd: float, *,
               anchor: np.ndarray | None = None, init: tuple[np.ndarray, np.ndarray] | None = None,
               device=None, max_iter: int = 500, tol: float = 1e-7, normalize: bool = True) -> LinearModel:
    """Fit one probe. ``X`` (n, d) raw or normalised features, ``y`` int labels in ``[0, num_classes)``."""
    dev = _device(device)
    Xt = torch.as_tensor(l2_normalize(X) if normalize else np.asarray(X, np.float32), device=dev)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long, device=dev)
    d = Xt.shape[1]
    A = torch.zeros(num_classes, d, device=dev) if anchor is None else torch.as_tensor(anchor, device=dev,
                                                                                        dtype=torch.float32)
    if init is not None:
        W = torch.tensor(init[0], device=dev, dtype=torch.float32, requires_grad=True)
        b = torch.tensor(init[1], device=dev, dtype=torch.float32, requires_grad=True)
    else:
        W = A.clone().requires_grad_(True)
        b = torch.zeros(num_classes, device=dev, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(Xt @ W.T + b, yt) + 0.5 * wd * (W - A).pow(2).sum()
        if anchor is not None:  # anchored probes keep the zero-shot decision rule's zero bias too
            loss = loss + 0.5 * wd * b.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    return LinearModel(W.detach().cpu().numpy(), b.detach().cpu().numpy(), float(wd), iters)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): ``fraction`` of every class (at least one image when the class has two) to val."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.extend(idx[:n_val].tolist())
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def _accuracy(model: LinearModel, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.scores(X).argmax(1) == y)) if len(y) else float("nan")


def sweep_weight_decay(X_tr, y_tr, X_val, y_val, num_classes: int, grid=DEFAULT_WD_GRID, *, anchor=None,
                       device=None, max_iter: int = 500) -> tuple[float, list[tuple[float, float]]]:
    """Validation accuracy for each weight decay (largest first, warm-started); best = highest accuracy,
    ties resolved towards the larger (safer) weight decay."""
    curve = []
    prev = None
    for wd in sorted(grid, reverse=True):
        m = fit_logreg(X_tr, y_tr, num_classes, wd, anchor=anchor, init=prev, device=device, max_iter=max_iter)
        prev = (m.W, m.b)
        curve.append((wd, _accuracy(m, X_val, y_val)))
    best = max(curve, key=lambda t: (t[1], t[0]))[0]
    return best, sorted(curve)


@dataclass
class ProbeResult:
    wd: float
    val_curve: list[tuple[float, float]]
    train_metrics: dict
    test_metrics: dict
    model: LinearModel
    seconds: float
    n_train: int
    n_val: int


def linear_probe(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 num_classes: int, *, wd: float | None = None, grid=DEFAULT_WD_GRID, val_fraction: float = 0.2,
                 seed: int = 0, anchor=None, device=None, ks=(1, 5)) -> ProbeResult:
    """Sweep weight decay on a stratified validation part of train (unless ``wd`` is given), refit on all of
    train, report train and test metrics. Test data is used once, at the end."""
    t0 = time.perf_counter()
    curve: list[tuple[float, float]] = []
    n_val = 0
    if wd is None:
        tr, va = stratified_split(y_train, val_fraction, seed)
        n_val = len(va)
        wd, curve = sweep_weight_decay(X_train[tr], y_train[tr], X_train[va], y_train[va], num_classes, grid,
                                       anchor=anchor, device=device)
    model = fit_logreg(X_train, y_train, num_classes, wd, anchor=anchor, device=device)
    return ProbeResult(wd=wd, val_curve=curve, train_metrics=classification_metrics(model.scores(X_train), y_train, ks),
                       test_metrics=classification_metrics(model.scores(X_test), y_test, ks), model=model,
                       seconds=time.perf_counter() - t0, n_train=len(y_train), n_val=n_val)


def sample_kshot(labels: np.ndarray, k: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """k random indices per class (all of a class's images if it has fewer), seeded."""
    rng = np.random.default_rng(seed)
    allowed = np.ones(len(labels), bool)
    if exclude is not None:
        allowed[exclude] = False
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero((labels == c) & allowed)
        out.extend(rng.permutation(idx)[:k].tolist())
    return np.sort(np.asarray(out, dtype=np.int64))


@dataclass
class KShotRow:
    k: int
    variant: str  # "probe" | "probe (zero-shot init)" | "zero-shot"
    accs: list[float] = field(default_factory=list)  # test top-1 per seed
    wds: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accs)) if self.accs else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.accs, ddof=1)) if len(self.accs) > 1 else 0.0


def kshot_probes(X_train, y_train, X_test, y_test, num_classes: int, ks=(1, 2, 4, 8, 16), seeds=(0, 1, 2), *,
                 zeroshot_weights: np.ndarray | None = None, logit_scale: float = 100.0, grid=None,
                 val_fraction: float = 0.2, device=None, on_fit=None) -> list[KShotRow]:
    """For each k and seed: sample k shots per class from the train part (a stratified validation part of the
    train split is held out and used only to choose the weight decay), fit, score on test. With
    ``zeroshot_weights`` (C, d unit rows) also the anchored variant and the zero-shot baseline (k = 0)."""
    grid = grid or DEFAULT_WD_GRID[::2]
    tr, va = stratified_split(y_train, val_fraction, seed=12345)
    rows = []
    anchor = None
    if zeroshot_weights is not None:
        anchor = logit_scale * l2_normalize(zeroshot_weights)
        zs = LinearModel(anchor, np.zeros(num_classes, np.float32), 0.0)
        rows.append(KShotRow(0, "zero-shot", [_accuracy(zs, X_test, y_test)]))
    variants = [("probe", None)] + ([("probe (zero-shot init)", anchor)] if anchor is not None else [])
    for k in ks:
        for name, anc in variants:
            row = KShotRow(k, name)
            for s in seeds:
                shots = tr[sample_kshot(y_train[tr], k, seed=s)]
                wd, _ = sweep_weight_decay(X_train[shots], y_train[shots], X_train[va], y_train[va], num_classes,
                                           grid, anchor=anc, device=device, max_iter=200)
                m = fit_logreg(X_train[shots], y_train[shots], num_classes, wd, anchor=anc, device=device)
                row.accs.append(_accuracy(m, X_test, y_test))
                row.wds.append(wd)
                row.seeds.append(s)
                if on_fit is not None:
                    on_fit()
            rows.append(row)
    return rows
