"""Linear and k-shot probes on frozen embeddings: multinomial logistic regression in torch, full-batch L-BFGS.

Objective (the same as scikit-learn's ``LogisticRegression(C=...)`` with ``C = 1 / (wd * n)``)::

    mean_i CE(W x_i + b, y_i) + wd / 2 * ||W - W_anchor||^2        (bias not penalised)

``W_anchor`` is zero for a plain probe. (Anchored probes also penalise the bias, towards zero.) With a zero-shot initialisation the probe starts from, and is pulled
towards, the zero-shot classifier (scaled by the model's logit scale), so few shots refine it rather than
replace it; on a convex objective a mere starting point would make no difference, the anchor does.

Features are L2-normalised first (as zero-shot scores are), so the same weight-decay grid fits every model.
Written in torch rather than calling scikit-learn so that it runs on the GPU next to the embeddings; the
agreement with scikit-learn is tested and the speed ratio is in ``benchmarks/probe_vs_sklearn.py``.

Convergence: a fit runs until max |gradient of the objective| <= ``tol`` (scikit-learn's lbfgs criterion), in
float32 and then, if float32 stalls first, in float64; otherwise it reports ``converged=False`` and warns with
its iteration count (:class:`ProbeWarning`). The weight-decay sweep goes from large to small, each fit
warm-started from the previous one, and extends the grid when the choice sits at one of its ends.

k-shot probes (n = k x classes images, often fewer than the feature dimension d) use a second solver for the
same objective and the same gradient test, ``_SpanNewton`` (float64, CPU), because near-separable shots with
tiny weight decays take L-BFGS hundreds to thousands of iterations to the tolerance:

- Span of the data: at the optimum ``W - W_anchor`` lies in the row space of the shots (a component outside it
  changes no logit and only adds penalty), so with ``Q`` an orthonormal basis of that space (QR, when n < d) the
  fit runs on ``W = W_anchor + V Q^T``: ``classes x (min(n, d) + 1)`` unknowns instead of ``classes x (d + 1)``,
  an exact reduction. ``W_anchor`` enters as a fixed logit offset ``X W_anchor^T``.
- Truncated Newton: each step solves ``H D = -gradient`` by conjugate gradients with Hessian-vector products
  (exact softmax Hessian), preconditioned by the inverses of the Hessian's per-class diagonal blocks
  ``F^T diag(p_c (1 - p_c)) F / n + wd``, on class-centred matrices (the softmax is unchanged by adding one
  vector to every class, so the optimum is centred and that direction is left out), then an Armijo line search.
  Newton's steps do not slow down where the curvature is tiny (probabilities near 0 or 1 on separable shots),
  which is what makes L-BFGS crawl there.
- Path over the grid: the sweep goes from large to small weight decays and starts each fit on the tangent of the
  path of optima, ``theta + log(wd'/wd) * d theta / d log wd`` with ``d theta / d log wd = -H^-1 (wd * theta)``
  (penalised coordinates), taken when it lowers the objective; most grid points then need 1-4 Newton steps.

Problems too large for it (``NEWTON_MAX_COST``: many classes and shots) keep L-BFGS.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.linalg import lapack
from threadpoolctl import ThreadpoolController

from cliplab.errors import CliplabError
from cliplab.tasks.metrics import classification_metrics, l2_normalize

# Half-decade steps from 1e-9 to 10; a choice at either end extends the grid (``extend``) before it is accepted.
DEFAULT_WD_GRID = tuple(float(x) for x in np.logspace(-9, 1, 21))
KSHOT_WD_GRID = tuple(float(x) for x in np.logspace(-7, 1, 9))
DEFAULT_MAX_ITER = 10000
DEFAULT_TOL = 1e-6  # on max |gradient| of the (mean) objective: scikit-learn's lbfgs ``tol`` has the same meaning
DEFAULT_EXTEND = 4  # grid points added beyond an edge where the choice sits, at the grid's own spacing
# k-shot sweeps use the Newton solver while one preconditioner build costs at most this many multiply-adds
# (C r^2 (n + r), r = min(n, d) + 1; EuroSAT k = 16 with 512-d features: 8e7); larger problems use L-BFGS.
NEWTON_MAX_COST = 2e9
# the Newton solver goes on past ``tol`` to this max |gradient| (float64 allows it, a step or two more): at tol 1e-6
# directions whose curvature is ~wd (1e-7) are still undetermined by O(10), enough to move held-out predictions
POLISH_TOL = 1e-12


class ProbeWarning(UserWarning):
    """A probe fit stopped unconverged, or the chosen weight decay sits at an edge of the grid."""


@dataclass
class LinearModel:
    W: np.ndarray  # (C, d)
    b: np.ndarray  # (C,)
    wd: float
    iterations: int = 0
    converged: bool = True
    grad_max: float = 0.0  # max |gradient| of the objective where the fit stopped

    def scores(self, X: np.ndarray) -> np.ndarray:
        return l2_normalize(X) @ self.W.T + self.b


def _device(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Problem:
    """Features (normalised once, with a constant column for the bias) and labels on the device, reused by every
    fit of a sweep.

    Each fit minimises the same objective over ``V`` with ``[W, b] = V P``, ``P = (M + wd S)^(-1/2)`` (``M`` the
    second-moment matrix of the features, ``S`` the penalised coordinates): a change of variables, so the optimum
    and the objective are unchanged, but L-BFGS sees a well-conditioned problem (CLIP-like features sit in a narrow
    cone; unpreconditioned, small weight decays took thousands of iterations). The convergence test is on the
    gradient in the original ``W, b``. Fits run in float32 and, when float32 stops making progress before the test
    is met, continue from there in float64."""

    def __init__(self, X, y, num_classes: int, device=None, normalize: bool = True, dtype=torch.float32):
        self.device = _device(device)
        X = l2_normalize(X) if normalize else np.asarray(X, np.float32)
        X = torch.as_tensor(X, device=self.device).to(dtype)
        self.Xa = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype, device=self.device)], 1)
        self.M = torch.zeros(self.Xa.shape[1], self.Xa.shape[1], dtype=torch.float64, device=self.device)
        for i in range(0, len(X), 65536):  # second moments in float64, without a float64 copy of the features
            chunk = self.Xa[i:i + 65536].double()
            self.M += chunk.T @ chunk
        self.M /= max(len(X), 1)
        self.dtype = dtype
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.long, device=self.device)
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= num_classes):
            raise CliplabError(f"labels must lie in [0, num_classes={num_classes}); got "
                               f"{int(self.y.min())}..{int(self.y.max())}")
        self.num_classes = num_classes

    def fit(self, wd: float, *, anchor=None, init=None, max_iter: int = DEFAULT_MAX_ITER,
            tol: float = DEFAULT_TOL) -> LinearModel:
        dev, C, D = self.device, self.num_classes, self.Xa.shape[1]
        d = D - 1
        A = np.zeros((C, d)) if anchor is None else np.asarray(anchor, np.float64)
        W0, b0 = (A, np.zeros(C)) if init is None else init
        theta = torch.cat([torch.as_tensor(np.asarray(W0), device=dev).double(),
                           torch.as_tensor(np.asarray(b0), device=dev).double()[:, None]], 1)
        A_aug = torch.cat([torch.as_tensor(A, device=dev), torch.zeros(C, 1, dtype=torch.float64, device=dev)], 1)
        S = torch.ones(D, dtype=torch.float64, device=dev)
        if anchor is None:
            S[-1] = 0.0  # the bias is not penalised (anchored probes pull it to zero too)
        K = self.M + torch.diag(wd * S)
        e, Q = torch.linalg.eigh(K)
        e = e.clamp_min(float(e.max()) * 1e-12 + 1e-300)
        P = (Q * e.rsqrt()) @ Q.T
        P_inv = (Q * e.sqrt()) @ Q.T
        iters, gmax = 0, math.inf
        for dt in dict.fromkeys((self.dtype, torch.float64)):
            V = (theta @ P_inv).to(dt).requires_grad_(True)
            n, gmax = _lbfgs(self.Xa.to(dt) @ P.to(dt), self.y, V, P.to(dt), P_inv.to(dt), A_aug.to(dt), S.to(dt), wd,
                             max_iter - iters, tol, retry=dt == torch.float64)
            iters += n
            theta = V.detach().double() @ P.to(dt).double()  # the same (rounded) P the fit used
            if gmax <= tol or iters >= max_iter:
                break
        theta = theta.cpu().numpy()
        return LinearModel(theta[:, :d], theta[:, d], float(wd), iters, bool(gmax <= tol), gmax)


def _lbfgs(Z, yt, V, P, P_inv, A, S, wd: float, max_iter: int, tol: float, retry: bool = True,
           chunk: int = 10) -> tuple[int, float]:
    """Minimise mean CE(Z V^T) + wd/2 ||(V P - A) * sqrt(S)||^2 over ``V`` in place; returns (iterations,
    max |gradient| with respect to ``[W, b] = V P``) where it stopped: at the gradient test, at ``max_iter``, or
    when ``chunk`` iterations no longer lower the objective beyond rounding (this precision's floor; with
    ``retry``, after one more try from a fresh curvature history)."""
    # tolerance_grad/change=0: torch's own exits would test the gradient in V or stop silently at float
    # precision; the accepted stop is the gradient test in [W, b] after every chunk, progress is checked there.
    opt = torch.optim.LBFGS([V], lr=1.0, max_iter=chunk, tolerance_grad=0.0, tolerance_change=0.0,
                            history_size=20, line_search_fn="strong_wolfe")
    eps = torch.finfo(V.dtype).eps

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(Z @ V.T, yt) + 0.5 * wd * ((V @ P - A).pow(2) * S).sum()
        loss.backward()
        return loss

    def state():
        with torch.enable_grad():
            loss = float(closure().detach())
        return loss, float((V.grad @ P_inv).abs().max())  # dF/dV = g P, so g = dF/dV P^-1

    iters, retried = 0, False
    loss, gmax = state()
    while gmax > tol and iters < max_iter:
        n = min(chunk, max_iter - iters)
        opt.param_groups[0].update(max_iter=n, max_eval=10 * n)
        before = opt.state[V].get("n_iter", 0)
        opt.step(closure)
        ran = opt.state[V].get("n_iter", 0) - before
        iters += ran
        new_loss, gmax = state()
        if gmax <= tol:
            break
        if loss - new_loss > 4 * eps * max(1.0, abs(loss)):
            retried = False
            if ran < n:  # torch stopped early (no descent direction, zero step, evaluations): fresh history
                opt.state.clear()
        elif retry and not retried:
            retried = True
            opt.state.clear()
        else:
            break
        loss = min(loss, new_loss)
    return iters, gmax


@functools.cache
def _blas() -> ThreadpoolController:
    """The BLAS/LAPACK pools numpy and scipy use (found once)."""
    return ThreadpoolController()


def _centre(V: np.ndarray) -> np.ndarray:
    """``V`` minus its mean over classes (rows): the part that changes the objective."""
    return V - V.mean(0)


class _SpanNewton:
    """k-shot fits in float64 on the CPU: truncated Newton in the span of the shots (see the module docstring)."""

    LAG = 10  # rebuild the preconditioner once a conjugate-gradient solve needs more iterations than this

    def __init__(self, X, y, num_classes: int, normalize: bool = True):
        X = (l2_normalize(X) if normalize else np.asarray(X, np.float32)).astype(np.float64)
        self.y = np.asarray(y, dtype=np.int64)
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= num_classes):
            raise CliplabError(f"labels must lie in [0, num_classes={num_classes}); got "
                               f"{int(self.y.min())}..{int(self.y.max())}")
        self.X, self.num_classes = X, num_classes
        n, d = X.shape
        # W - anchor lies in the row space of X at the optimum (outside it the penalty grows, the loss does not)
        with _blas().limit(limits=1, user_api="blas"):  # one thread, as in fit
            self.Q = np.linalg.qr(X.T)[0] if n < d else None
            F = X if self.Q is None else X @ self.Q
        self.F = np.hstack([F, np.ones((n, 1))])  # reduced features, then the bias column
        self.onehot = np.eye(num_classes)[self.y]
        self.precond = None
        self.last_cg = 0
        self.last = None  # (model, anchor, theta, probabilities) of the previous fit: where the path goes on

    @staticmethod
    def cost(n: int, d: int, num_classes: int) -> float:
        """Multiply-adds of one preconditioner build: C r^2 (n + r), r = min(n, d) + 1."""
        r = min(n, d) + 1
        return float(num_classes) * r * r * (n + r)

    def objective(self, theta, offset, wd, mask):
        """Objective, logits and log-partition at ``theta`` = [W - anchor in the reduced basis, b]."""
        Z = offset + self.F @ theta.T
        top = Z.max(1)
        lse = np.log(np.exp(Z - top[:, None]).sum(1)) + top
        loss = float(np.mean(lse - Z[np.arange(len(self.y)), self.y]))
        return loss + 0.5 * wd * float((theta * theta * mask).sum()), Z, lse

    def gradient(self, theta, Z, lse, wd, mask):
        """Gradient in the reduced coordinates and the class probabilities."""
        P = np.exp(Z - lse[:, None])
        return (P - self.onehot).T @ self.F / len(self.y) + wd * mask * theta, P

    def hessian_times(self, V, P, s):
        """Hessian of the objective at probabilities ``P`` (penalty ``s`` per column) times ``V``."""
        PZ = P * (self.F @ V.T)
        return (PZ - P * PZ.sum(1, keepdims=True)).T @ self.F / len(self.y) + s * V

    def build_preconditioner(self, P, s):
        """Inverses of the Hessian's per-class diagonal blocks F^T diag(p_c (1 - p_c)) F / n + diag(s)."""
        n, r = self.F.shape
        C = self.num_classes
        w = P * (1.0 - P)
        B = ((self.F[:, None, :] * w[:, :, None]).reshape(n, C * r).T @ self.F).reshape(C, r, r) / n
        B[:, np.arange(r), np.arange(r)] += s + 1e-12 * (1.0 + B.diagonal(0, 1, 2).max(1, keepdims=True))
        inv = np.empty_like(B)
        for c in range(C):
            L, info = lapack.dpotrf(B[c], lower=1)
            if info == 0:
                L, info = lapack.dpotri(L, lower=1)
            inv[c] = np.tril(L) + np.tril(L, -1).T if info == 0 else np.diag(1.0 / B[c].diagonal())
        self.precond = inv

    def solve(self, rhs, P, s, rtol: float) -> np.ndarray:
        """Preconditioned conjugate gradients for H D = rhs on class-centred matrices, to ``rtol`` relative."""
        if self.precond is None or self.last_cg > self.LAG:
            self.build_preconditioner(P, s)

        def apply(R):
            return _centre((self.precond @ R[:, :, None])[:, :, 0])

        r = _centre(rhs)
        D = np.zeros_like(r)
        goal = rtol * float(np.sqrt((r * r).sum()))
        z = apply(r)
        p, rz = z, float((r * z).sum())
        limit = min(250, (self.num_classes - 1) * self.F.shape[1] + 1)
        for it in range(1, limit + 1):
            Hp = _centre(self.hessian_times(p, P, s))
            pHp = float((p * Hp).sum())
            if not pHp > 0:
                break
            a = rz / pHp
            D += a * p
            r = r - a * Hp
            if float(np.sqrt((r * r).sum())) <= goal:
                break
            z = apply(r)
            rz, rz_old = float((r * z).sum()), rz
            p = z + (rz / rz_old) * p
        self.last_cg = it
        return D

    def grad_max(self, G) -> float:
        """max |gradient| with respect to the original W and b."""
        gW = G[:, :-1] if self.Q is None else G[:, :-1] @ self.Q.T
        return max(float(np.abs(gW).max()), float(np.abs(G[:, -1]).max()))

    def line_search(self, theta, D, f, slope, gmax, offset, wd, mask):
        """(theta, f, Z, lse, below_rounding) of an accepted step along ``D``, or None when none makes progress."""
        # the predicted decrease below the objective's rounding: the full step is judged by max |gradient| instead
        if -slope <= 8 * np.finfo(float).eps * max(1.0, abs(f)):
            trial = theta + D
            f_new, Z, lse = self.objective(trial, offset, wd, mask)
            if self.grad_max(self.gradient(trial, Z, lse, wd, mask)[0]) <= 0.5 * gmax:
                return trial, f_new, Z, lse, True
            return None
        t = 1.0
        while t >= 1e-10:  # backtracking from the full Newton step to the Armijo condition
            trial = theta + t * D
            f_new, Z, lse = self.objective(trial, offset, wd, mask)
            if f_new <= f + 1e-4 * t * slope:
                return trial, f_new, Z, lse, False
            t *= 0.5
        return None

    def start(self, wd, A, anchor, init, offset, mask):
        """Starting point: the tangent of the path from the previous fit when ``init`` is that fit, else ``init``."""
        if self.last is not None and init is not None and init[0] is self.last[0].W and self.last[1] is anchor:
            prev, _, theta, P = self.last
            s = prev.wd * mask
            # d theta / d log(wd) = -H^-1 (wd mask theta): differentiate gradient = 0 along the weight decay
            step = self.solve(-s * theta, P, s, 1e-2)
            guess = theta + math.log(wd / prev.wd) * step if prev.wd > 0 and wd > 0 else theta
            if self.objective(guess, offset, wd, mask)[0] < self.objective(theta, offset, wd, mask)[0]:
                return guess
            return theta
        theta = np.zeros((self.num_classes, self.F.shape[1]))
        if init is not None:
            dW = np.asarray(init[0], np.float64) - A
            theta[:, :-1] = dW if self.Q is None else dW @ self.Q
            theta[:, -1] = np.asarray(init[1], np.float64)
        return _centre(theta)

    def fit(self, wd: float, *, anchor=None, init=None, max_iter: int = DEFAULT_MAX_ITER,
            tol: float = DEFAULT_TOL) -> LinearModel:
        """Minimise the probe objective at ``wd`` (the same as :meth:`_Problem.fit`); iterations are Newton steps."""
        # one BLAS thread: the matrices are small (more threads only add synchronisation, ruinous on a busy
        # machine), and the result is then the same bit for bit whatever the thread settings
        with _blas().limit(limits=1, user_api="blas"):
            return self.newton(wd, anchor, init, max_iter, tol)

    def newton(self, wd: float, anchor, init, max_iter: int, tol: float) -> LinearModel:
        """The body of :meth:`fit`."""
        C, d = self.num_classes, self.X.shape[1]
        A = np.zeros((C, d)) if anchor is None else np.asarray(anchor, np.float64)
        offset = self.X @ A.T
        mask = np.ones(self.F.shape[1])
        mask[-1] = 0.0 if anchor is None else 1.0  # the bias is not penalised (anchored probes pull it to zero)
        s = wd * mask
        theta = self.start(wd, A, anchor, init, offset, mask)
        f, Z, lse = self.objective(theta, offset, wd, mask)
        G, P = self.gradient(theta, Z, lse, wd, mask)
        gmax, iters, flat = self.grad_max(G), 0, 0
        # past tol, Newton's last steps are nearly free: going on to POLISH_TOL makes the fit the optimum itself,
        # so that predictions do not depend on where within tol a solver, path or thread count stopped
        while gmax > min(tol, POLISH_TOL) and iters < max_iter:
            D = self.solve(-G, P, s, min(0.1, math.sqrt(float(np.sqrt((G * G).sum())))))
            slope = float((G * D).sum())
            step = self.line_search(theta, D, f, slope, gmax, offset, wd, mask) if slope < 0 else None
            flat = flat + 1 if step is not None and step[4] else 0
            if step is None or flat > 3:  # no further progress at float64 precision
                break
            theta, f, Z, lse, _ = step
            G, P = self.gradient(theta, Z, lse, wd, mask)
            gmax, iters = self.grad_max(G), iters + 1
        dW = theta[:, :-1] if self.Q is None else theta[:, :-1] @ self.Q.T
        model = LinearModel(A + dW, theta[:, -1].copy(), float(wd), iters, bool(gmax <= tol), gmax)
        self.last = (model, anchor, theta, P)
        return model


def _unconverged_text(m: LinearModel, tol: float, max_iter: int) -> str:
    why = f"hit max_iter={max_iter}" if m.iterations >= max_iter else "made no further progress"
    return (f"wd={m.wd:.1e}: stopped after {m.iterations} iterations ({why}), max |gradient| {m.grad_max:.1e} > "
            f"tol {tol:.0e}")


def fit_logreg(X: np.ndarray, y: np.ndarray, num_classes: int, wd: float, *, anchor: np.ndarray | None = None,
               init: tuple[np.ndarray, np.ndarray] | None = None, device=None, max_iter: int = DEFAULT_MAX_ITER,
               tol: float = DEFAULT_TOL, normalize: bool = True, warn: bool = True,
               dtype=torch.float32) -> LinearModel:
    """Fit one probe. ``X`` (n, d) raw or normalised features, ``y`` int labels in ``[0, num_classes)``.

    Converged = the largest absolute entry of the objective's gradient is at most ``tol`` (the test
    scikit-learn's lbfgs applies with its ``tol``). A fit that stops before (``max_iter`` iterations, or no
    further progress at floating-point precision) returns ``converged=False`` and, with ``warn``, warns
    (:class:`ProbeWarning`) with the iteration count."""
    if wd < 0 or not math.isfinite(wd):
        raise CliplabError(f"wd must be a non-negative number, got {wd}")
    m = _Problem(X, y, num_classes, device, normalize, dtype).fit(wd, anchor=anchor, init=init, max_iter=max_iter,
                                                                  tol=tol)
    if warn and not m.converged:
        warnings.warn(f"probe fit unconverged: {_unconverged_text(m, tol, max_iter)}; raise max_iter or tol",
                      ProbeWarning, stacklevel=2)
    return m


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


@dataclass
class SweepPoint:
    wd: float
    train_acc: float  # on the part of train the sweep fits on
    val_acc: float
    iterations: int
    converged: bool
    grad_max: float
    added: bool = False  # beyond the given grid (edge extension)


@dataclass
class WeightDecaySweep:
    """Every fitted weight decay (ascending), the choice, and what the user must know about it."""
    best: float
    points: list[SweepPoint]
    n_train: int
    n_val: int
    tol: float
    max_iter: int
    edge: str | None = None  # "low" / "high": the choice is still at that end of the (extended) grid
    model: LinearModel | None = None  # the chosen fit (on the sweep's train part)

    @property
    def curve(self) -> list[tuple[float, float]]:
        return [(p.wd, p.val_acc) for p in self.points]

    @property
    def unconverged(self) -> list[SweepPoint]:
        return [p for p in self.points if not p.converged]

    @property
    def extended(self) -> list[float]:
        return [p.wd for p in self.points if p.added]

    def messages(self, label: str = "linear probe") -> list[str]:
        out = []
        if self.unconverged:
            pts = "; ".join(f"wd={p.wd:.1e}: {p.iterations} iterations, max |gradient| {p.grad_max:.1e}"
                            for p in self.unconverged)
            out.append(f"{label}: {len(self.unconverged)} of {len(self.points)} weight-decay fits stopped "
                       f"unconverged (tol {self.tol:.0e}, max_iter {self.max_iter}): {pts}")
        if self.edge:
            ext = f" (extended by {len(self.extended)} points)" if self.extended else ""
            out.append(f"{label}: the chosen weight decay {self.best:.1e} is at the {self.edge} end of the grid"
                       f"{ext}; validation accuracy may still improve beyond it: pass a wider grid")
        return out


def _choose(points: dict[float, SweepPoint]) -> float:
    return max(points.values(), key=lambda p: (p.val_acc, p.wd)).wd


def sweep_weight_decay(X_tr, y_tr, X_val, y_val, num_classes: int, grid=DEFAULT_WD_GRID, *, anchor=None,
                       device=None, max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL,
                       extend: int = DEFAULT_EXTEND, on_fit=None, warn: bool = True,
                       label: str = "linear probe") -> WeightDecaySweep:
    """Fit every weight decay of ``grid`` (largest first, each warm-started from the previous solution) and
    score it on the validation part; best = highest validation accuracy, ties towards the larger (safer) weight
    decay. While the best sits at an end of the grid, up to ``extend`` more points are added beyond that end at
    the grid's spacing; if it still does, ``edge`` says so (and, with ``warn``, a :class:`ProbeWarning`, as for
    fits that stopped unconverged). ``on_fit(done, total)`` is called after each fit (total grows on extension).
    """
    grid = _check_grid(grid)
    sweep = _sweep(_Problem(X_tr, y_tr, num_classes, device), X_tr, y_tr, X_val, y_val, grid, anchor=anchor,
                   max_iter=max_iter, tol=tol, extend=extend, on_fit=on_fit)
    if warn:
        for msg in sweep.messages(label):
            warnings.warn(msg, ProbeWarning, stacklevel=2)
    return sweep


def _check_grid(grid) -> list[float]:
    """The grid as distinct weight decays, largest first; an error unless all are positive and finite."""
    grid = sorted({float(w) for w in grid}, reverse=True)
    if not grid or grid[-1] <= 0 or not all(math.isfinite(w) for w in grid):
        raise CliplabError(f"grid: weight decays must be positive finite numbers, got {grid}")
    return grid


def _sweep(prob, X_tr, y_tr, X_val, y_val, grid: list[float], *, anchor, max_iter: int, tol: float, extend: int,
           on_fit) -> WeightDecaySweep:
    """The sweep of :func:`sweep_weight_decay` on a problem (``_Problem`` or ``_SpanNewton``), without warnings."""
    points: dict[float, SweepPoint] = {}
    models: dict[float, LinearModel] = {}
    total = [len(grid)]

    def run(wd, init, added=False):
        m = prob.fit(wd, anchor=anchor, init=init, max_iter=max_iter, tol=tol)
        models[wd] = m
        points[wd] = SweepPoint(wd, _accuracy(m, X_tr, y_tr), _accuracy(m, X_val, y_val), m.iterations,
                                m.converged, m.grad_max, added)
        if on_fit is not None:
            on_fit(len(points), total[0])
        return m

    prev = None
    for wd in grid:
        m = run(wd, None if prev is None else (prev.W, prev.b))
        prev = m
    edge = None
    if len(grid) > 1:
        for side in ("low", "high"):
            ratio = grid[-2] / grid[-1] if side == "low" else grid[0] / grid[1]
            for _ in range(extend):
                end = min(points) if side == "low" else max(points)
                if _choose(points) != end:
                    break
                total[0] += 1
                nxt = end / ratio if side == "low" else end * ratio
                run(nxt, (models[end].W, models[end].b), added=True)
            end = min(points) if side == "low" else max(points)
            if _choose(points) == end:
                edge = side
    best = _choose(points)
    return WeightDecaySweep(best, [points[w] for w in sorted(points)], len(y_tr), len(y_val), tol, max_iter, edge,
                            models[best])


@dataclass
class ProbeFit:
    wd: float
    val_curve: list[tuple[float, float]]
    train_metrics: dict
    test_metrics: dict
    model: LinearModel
    seconds: float
    n_train: int
    n_val: int
    sweep: WeightDecaySweep | None = None
    tol: float = DEFAULT_TOL
    max_iter: int = DEFAULT_MAX_ITER

    @property
    def converged(self) -> bool:
        """The refit and every fit of the sweep met the gradient test."""
        return self.model.converged and not (self.sweep and self.sweep.unconverged)


def linear_probe(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 num_classes: int, *, wd: float | None = None, grid=DEFAULT_WD_GRID, val_fraction: float = 0.2,
                 seed: int = 0, anchor=None, device=None, ks=(1, 5), max_iter: int = DEFAULT_MAX_ITER,
                 tol: float = DEFAULT_TOL, extend: int = DEFAULT_EXTEND, on_fit=None) -> ProbeFit:
    """Sweep weight decay on a stratified validation part of train (unless ``wd`` is given), refit on all of
    train (warm-started from the chosen sweep fit), report train and test metrics. Test data is used once, at
    the end. Unconverged fits and a choice at a grid edge warn (:class:`ProbeWarning`) and are recorded."""
    t0 = time.perf_counter()
    sweep = None
    init = None
    if wd is None:
        tr, va = stratified_split(y_train, val_fraction, seed)
        sweep = sweep_weight_decay(X_train[tr], y_train[tr], X_train[va], y_train[va], num_classes, grid,
                                   anchor=anchor, device=device, max_iter=max_iter, tol=tol, extend=extend,
                                   on_fit=on_fit)
        wd, init = sweep.best, (sweep.model.W, sweep.model.b)
    model = _Problem(X_train, y_train, num_classes, device).fit(wd, anchor=anchor, init=init, max_iter=max_iter,
                                                                  tol=tol)
    if not model.converged:
        warnings.warn(f"linear probe refit on all of train unconverged: {_unconverged_text(model, tol, max_iter)}; "
                      "raise max_iter or tol", ProbeWarning, stacklevel=2)
    return ProbeFit(wd=wd, val_curve=sweep.curve if sweep else [],
                       train_metrics=classification_metrics(model.scores(X_train), y_train, ks),
                       test_metrics=classification_metrics(model.scores(X_test), y_test, ks), model=model,
                       seconds=time.perf_counter() - t0, n_train=len(y_train), n_val=sweep.n_val if sweep else 0,
                       sweep=sweep, tol=tol, max_iter=max_iter)


def _kshot_problem(X, y, num_classes: int, device):
    """The solver for one k-shot sweep: Newton in the span of the shots when small enough, else L-BFGS."""
    n, d = np.shape(X)
    if _SpanNewton.cost(n, d, num_classes) <= NEWTON_MAX_COST:
        return _SpanNewton(X, y, num_classes)
    return _Problem(X, y, num_classes, device)


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
                 val_fraction: float = 0.2, device=None, on_fit=None, max_iter: int = DEFAULT_MAX_ITER,
                 tol: float = DEFAULT_TOL) -> list[KShotRow]:
    """For each k and seed: sample k shots per class from the train part (a stratified validation part of the
    train split is held out and used only to choose the weight decay), fit, score on test. With
    ``zeroshot_weights`` (C, d unit rows) also the anchored variant and the zero-shot baseline (k = 0).
    Fits that stop unconverged are counted in one :class:`ProbeWarning` at the end. The fits run on the CPU
    with the Newton solver (``_SpanNewton``) when the shots make a small enough problem (``NEWTON_MAX_COST``),
    else with L-BFGS on ``device``; both minimise the same objective to the same gradient test."""
    grid = _check_grid(grid or KSHOT_WD_GRID)
    tr, va = stratified_split(y_train, val_fraction, seed=12345)
    rows = []
    anchor = None
    if zeroshot_weights is not None:
        anchor = logit_scale * l2_normalize(zeroshot_weights)
        zs = LinearModel(anchor, np.zeros(num_classes, np.float32), 0.0)
        rows.append(KShotRow(0, "zero-shot", [_accuracy(zs, X_test, y_test)]))
    variants = [("probe", None)] + ([("probe (zero-shot init)", anchor)] if anchor is not None else [])
    n_fits, bad = 0, []
    for k in ks:
        for name, anc in variants:
            row = KShotRow(k, name)
            for s in seeds:
                shots = tr[sample_kshot(y_train[tr], k, seed=s)]
                # the sweep fits on the shots themselves: its chosen fit is the k-shot probe (no refit needed)
                prob = _kshot_problem(X_train[shots], y_train[shots], num_classes, device)
                # the Newton solver's sweep and scoring on one BLAS thread (small matrices, see _SpanNewton.fit)
                with (_blas().limit(limits=1, user_api="blas") if isinstance(prob, _SpanNewton) else
                      contextlib.nullcontext()):
                    sw = _sweep(prob, X_train[shots], y_train[shots], X_train[va], y_train[va], grid, anchor=anc,
                                max_iter=max_iter, tol=tol, extend=0, on_fit=None)
                    row.accs.append(_accuracy(sw.model, X_test, y_test))
                n_fits += len(sw.points)
                bad += [f"k={k} seed={s} {name} wd={p.wd:.0e} ({p.iterations} it.)" for p in sw.unconverged]
                row.wds.append(sw.best)
                row.seeds.append(s)
                if on_fit is not None:
                    on_fit()
            rows.append(row)
    if bad:
        warnings.warn(f"k-shot probes: {len(bad)} of {n_fits} fits stopped unconverged (tol {tol:.0e}, max_iter "
                      f"{max_iter}): " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""), ProbeWarning,
                      stacklevel=2)
    return rows
