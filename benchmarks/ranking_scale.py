"""Ranking metrics at scale: cliplab's chunked evaluator vs what a user would write, same data, same run.

    .venv/bin/python benchmarks/ranking_scale.py [--queries 1000] [--gallery 100000] [--dim 512] [--labels 100]
        [--repeats 3]

Data: ``--labels`` random unit centres in ``--dim`` dimensions; every gallery and query vector is its label's
centre plus Gaussian noise (``--noise`` per coordinate), renormalised, so the vectors are random unit vectors with
labels that carry some signal (mAP well away from 0 and 1). Relevant = same label.

Contenders, each ``--repeats`` times (taking turns, so that load from elsewhere on the machine falls on all of
them), each run in its own forked process after a warm-up call on 50 items. Time: wall clock of the call, the
fastest run. Memory: the process's peak resident set minus its resident set when the call starts (what the call
itself adds; the data are shared with the parent and not counted), the largest run.

* baseline: the full Q x N float32 score matrix (numpy), then ``sklearn.metrics.average_precision_score`` per
  query; AP only.
* cliplab ``evaluate_rankings`` (cosine; step AP = scikit-learn's, plus P@k, R@k, R-precision, nDCG@k for
  k = 1, 10, 100), with the default chunk (``SCORE_BUDGET // N`` queries) and with a small chunk.

The per-query APs of every contender are compared with the baseline's. They can differ where a relevant item's
float32 score ties another item's (scikit-learn pools the tie, cliplab orders it by gallery index) or where two
scores agree to ~1e-7 (numpy's and torch's float32 products round differently). To separate the two, the script
then runs scikit-learn on the very scores cliplab ranks and reports the largest difference on queries without
a tied relevant item (rounding of the sums only) and on the others.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import multiprocessing as mp
import time
import warnings

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from _common import cpu_model, machine, markdown_table, save
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.ranking import SCORE_BUDGET, evaluate_rankings


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure(fn, data, conn) -> None:
    with warnings.catch_warnings():  # warm-up on 50 items: libraries' first-use set-up and code are not counted
        warnings.simplefilter("ignore")  # (sklearn: a query without positives among the 50)
        fn(*(x[:50] for x in data))
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # free heap pages inherited from the parent go back to the system
    start = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    aps = fn(*data)
    seconds = time.perf_counter() - t0
    conn.send({"seconds": seconds, "peak_mib": (_rss_kib("VmHWM") - start) / 1024, "ap": np.asarray(aps)})
    conn.close()


def run_forked(fn, data) -> dict:
    """``fn(*data)`` in a forked child, after a warm-up call on a slice: its seconds, the peak memory it adds
    (MiB) and the per-query APs it returns."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_measure, args=(fn, data, child))
    proc.start()
    out = parent.recv()
    proc.join()
    return out


def make_data(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.labels, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def vectors(n):
        labels = rng.integers(0, args.labels, n)
        x = centres[labels] + rng.standard_normal((n, args.dim), dtype=np.float32) * np.float32(args.noise)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x, labels

    g, gl = vectors(args.gallery)
    q, ql = vectors(args.queries)
    return q, g, ql, gl


def same_scores_check(q, g, ql, gl, ours: np.ndarray, block: int = 100) -> dict:
    """scikit-learn's AP on the scores evaluate_rankings computes ((q/|q|) . g / |g| in float32 with torch), against
    cliplab's AP: the queries with a relevant item whose score ties another item's, and the largest difference on
    the others (float rounding only) and on those (scikit-learn pools ties, cliplab orders them by index)."""
    g_t = torch.as_tensor(g)
    g_scale = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", g, g)), 1e-12)
    tied, diff = np.zeros(len(q), bool), np.zeros(len(q))
    for start in range(0, len(q), block):
        scores = (torch.as_tensor(l2_normalize(q[start:start + block])) @ g_t.T).numpy() * g_scale[None, :]
        for i, row in enumerate(scores, start):
            srt, rel = np.sort(row), row[gl == ql[i]]
            tied[i] = np.any(np.searchsorted(srt, rel, "right") - np.searchsorted(srt, rel, "left") > 1)
            diff[i] = abs(average_precision_score(gl == ql[i], row) - ours[i])
    return {"queries_with_a_tied_relevant_item": int(tied.sum()),
            "max_abs_diff_without_ties": float(diff[~tied].max(initial=0.0)),
            "max_abs_diff_with_ties": float(diff[tied].max(initial=0.0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--noise", type=float, default=0.15, help="Gaussian noise per coordinate around the centres")
    ap.add_argument("--small-chunk", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="runs per contender: the fastest time, the largest peak")
    args = ap.parse_args()
    q, g, ql, gl = make_data(args)
    ks = (1, 10, 100)

    def baseline(q, g, ql, gl):
        scores = q @ g.T  # the full (Q, N) float32 score matrix
        return [average_precision_score(gl == ql[i], scores[i]) for i in range(len(q))]

    def cliplab(chunk=None):
        return lambda q, g, ql, gl: evaluate_rankings(q, g, ql, gl, ks, chunk=chunk, device="cpu").ap

    default_chunk = max(1, SCORE_BUDGET // len(g))
    contenders = [
        ("baseline: full score matrix + sklearn average_precision_score per query", len(q), baseline),
        ("cliplab evaluate_rankings, default chunk", min(default_chunk, len(q)), cliplab()),
        (f"cliplab evaluate_rankings, chunk={args.small_chunk}", min(args.small_chunk, len(q)),
         cliplab(args.small_chunk)),
    ]
    # the repeats take turns (baseline, cliplab, cliplab, baseline, ...), so every contender sees the same load
    runs = [[run_forked(fn, (q, g, ql, gl)) for _, _, fn in contenders] for _ in range(args.repeats)]
    rows, ref = [], runs[0][0]["ap"]
    for c, (name, chunk, _) in enumerate(contenders):
        mine = [rep[c] for rep in runs]
        diff = np.abs(mine[0]["ap"] - ref)
        rows.append({"contender": name, "queries scored at once": chunk, "scores held at once": chunk * len(g),
                     "seconds": round(min(r["seconds"] for r in mine), 2),
                     "seconds, every run": [round(r["seconds"], 2) for r in mine],
                     "peak MiB added": round(max(r["peak_mib"] for r in mine), 1),
                     "mAP": round(float(np.mean(mine[0]["ap"])), 6), "max |AP - sklearn AP|": float(diff.max()),
                     "queries with |diff| > 1e-9": int((diff > 1e-9).sum())})
        print(rows[-1], flush=True)
    ours = runs[0][1]["ap"]
    base = rows[0]
    for r in rows:
        r["speed-up"] = round(base["seconds"] / r["seconds"], 1)
        r["memory ratio"] = round(base["peak MiB added"] / max(r["peak MiB added"], 1e-9), 1)
    cols = ["contender", "queries scored at once", "seconds", "speed-up", "peak MiB added", "memory ratio", "mAP",
            "max |AP - sklearn AP|", "queries with |diff| > 1e-9"]
    print(markdown_table(rows, cols))
    check = same_scores_check(q, g, ql, gl, ours)
    print(f"scikit-learn AP on cliplab's own scores: {check}")
    info = {**machine(), "cpu_model": cpu_model()}
    path = save("ranking_scale-cpu", {"machine": info, "params": vars(args), "ks": ks, "rows": rows,
                                      "sklearn_on_the_same_scores": check})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
