"""Linear and k-shot probes: cliplab vs scikit-learn under the same protocol.

    python benchmarks/_probe_data.py --cache-dir /tmp/probe-bench/cache        # embed once (slow: ViT-B-32)
    python benchmarks/probe_vs_sklearn.py --cache-dir /tmp/probe-bench/cache [--device cpu|cuda]
        [--models tiny-shapes,ViT-B-32] [--datasets eurosat,cifar10] [--limit N] [--old-rev REV]
        [--kshot 1,2,4,8,16] [--seeds 3] [--no-linear] [--threads N] [--repeats R] [--also-sklearn SOLVER]

Data: the shared EuroSAT folder (train = its validation split, 5,400 images; test = its test split, 2,700) and
the shared CIFAR-10 folder (10,000 test images; a seeded stratified half is train, the other half test, see
``_probe_data.py``), embedded by the trained tiny-shapes model and by a seeded random-weight ViT-B-32. A dataset
whose shared folder is absent is skipped with a note.

Linear probe protocol, identical for both: L2-normalised features; a seeded stratified 20 % validation part of
train; the grid of weight decays cliplab swept (its default grid plus any edge extension) as C = 1 / (wd * n);
best = highest validation accuracy, ties to the larger wd; refit on all of train; test accuracy once.
scikit-learn: ``LogisticRegression(solver="lbfgs", max_iter=10000, tol=1e-8)``, each fit from scratch, with
ConvergenceWarning recorded (the run reports how many).

k-shot protocol (``--kshot``), identical for both: the validation part ``kshot_probes`` holds out (seed 12345),
k shots per class drawn from the rest with seeds 0..seeds-1, the k-shot grid (1e-7 ... 10, 9 weight decays) as
C = 1 / (wd * n), the choice on the validation part (ties to the larger wd), test accuracy of the chosen fit.
Same tolerance on both sides: ``tol=1e-6`` (max |gradient| of the mean objective; cliplab's default and
scikit-learn's lbfgs criterion), ``max_iter=10000``. cliplab is timed as ``kshot_probes`` (the plain probe; the
zero-shot-anchored variant, which scikit-learn cannot fit, is timed beside it on the tiny model's zero-shot
classifier); scikit-learn as the same loop of ``LogisticRegression`` fits. Each side's time is the best of
``--repeats`` runs.

Times are fit time only (embeddings given), measured in the same process, one after the other, with
``--threads`` torch and BLAS threads. ``--old-rev`` adds the probes of an earlier commit for comparison. The
result JSON records the CPU model (``lscpu``) and the thread counts.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import device_tag, machine, markdown_table, save, write_docs_region
from _probe_data import SHARED, features, load_model_by_name
from threadpoolctl import threadpool_info, threadpool_limits

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


FOLDERS = {"eurosat": "eurosat", "cifar10": "cifar10-test"}  # dataset -> folder under the shared data


def cpu_model() -> str:
    """lscpu's "Model name" (the CPU the times were measured on)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown"


def threads() -> dict:
    """torch, BLAS/OpenMP pool and environment thread counts in force."""
    import torch

    return {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "pools": sorted({(p["internal_api"], p["num_threads"]) for p in threadpool_info()})}


def timed(fn, repeats: int):
    """(best seconds of ``repeats`` calls, result of the last call, warnings of the last call)."""
    best, result, caught = float("inf"), None, []
    for _ in range(repeats):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - t0)
    return best, result, caught


def kshot_sklearn(Xtr, ytr, Xte, yte, k: int, seeds, solver: str = "lbfgs", tol: float = 1e-6) -> dict:
    """scikit-learn under ``kshot_probes``' protocol (plain probe): chosen wd and test accuracy per seed."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from cliplab.tasks.metrics import l2_normalize
    from cliplab.tasks.probe import KSHOT_WD_GRID, sample_kshot, stratified_split

    N, Nte = l2_normalize(Xtr).astype(np.float64), l2_normalize(Xte).astype(np.float64)
    tr, va = stratified_split(ytr, 0.2, seed=12345)
    accs, wds, unconverged = [], [], 0
    for s in seeds:
        shots = tr[sample_kshot(ytr[tr], k, seed=s)]
        val = {}
        for wd in sorted(KSHOT_WD_GRID, reverse=True):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                m = LogisticRegression(C=1.0 / (wd * len(shots)), solver=solver, max_iter=10000, tol=tol).fit(
                    N[shots], ytr[shots])
            unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
            val[wd] = (m.score(N[va], ytr[va]), m)
        best = max(val, key=lambda w: (val[w][0], w))
        accs.append(float(val[best][1].score(Nte, yte)))
        wds.append(best)
    return {"accs": accs, "wds": wds, "unconverged": unconverged}


def zeroshot_anchor(model, classes: list[str], cache_dir):
    """The tiny zero-shot classifier (template set "simple") the anchored k-shot variant is pulled towards."""
    from cliplab.embed.texts import class_text_embeddings
    from cliplab.prompts import resolve_templates
    from cliplab.tasks.zeroshot import build_classifier

    return build_classifier(class_text_embeddings(model, classes, resolve_templates("simple")[0], cache_dir))


def kshot_rows(name, ds, Xtr, ytr, Xte, yte, classes, zs, logit_scale, args, old) -> list[dict]:
    """One row per k: cliplab's k-shot sweeps vs scikit-learn's (same shots, grid, tolerance), plus the anchored
    variant and the old probe's times."""
    from cliplab.tasks.probe import kshot_probes

    C, seeds = len(classes), tuple(range(args.seeds))
    kw = dict(seeds=seeds, device=args.device)
    kshot_probes(Xtr, ytr, Xte, yte, C, ks=(1,), seeds=(0,), device=args.device)  # warm-up
    rows = []
    for k in args.kshot:
        t_cl, cl, caught = timed(lambda: kshot_probes(Xtr, ytr, Xte, yte, C, ks=(k,), **kw)[0], args.repeats)
        t_sk, sk, _ = timed(lambda: kshot_sklearn(Xtr, ytr, Xte, yte, k, seeds), args.repeats)
        t_an, an, caught_an = timed(lambda: kshot_probes(Xtr, ytr, Xte, yte, C, ks=(k,), zeroshot_weights=zs,
                                                         logit_scale=logit_scale, **kw)[-1], args.repeats)
        diffs = [100 * (a - b) for a, b in zip(cl.accs, sk["accs"])]
        row = {"model": name, "dataset": ds, "dim": Xtr.shape[1], "classes": C, "k": k, "seeds": len(seeds),
               "cliplab_s": t_cl, "sklearn_s": t_sk, "ratio": t_sk / t_cl, "cliplab_acc": 100 * cl.mean,
               "sklearn_acc": 100 * float(np.mean(sk["accs"])), "diff_pt": float(np.mean(diffs)),
               "max_abs_diff_pt": float(np.max(np.abs(diffs))), "cliplab_wds": cl.wds, "sklearn_wds": sk["wds"],
               "same_wd": sum(a == b for a, b in zip(cl.wds, sk["wds"])), "sklearn_unconverged": sk["unconverged"],
               "cliplab_warnings": [str(w.message) for w in caught + caught_an],
               "anchored_s": t_an, "anchored_acc": 100 * an.mean}
        for solver in args.also_sklearn:
            t_x, x, _ = timed(lambda: kshot_sklearn(Xtr, ytr, Xte, yte, k, seeds, solver=solver), args.repeats)
            row[f"sklearn_{solver}_s"] = t_x
            row[f"sklearn_{solver}_acc"] = 100 * float(np.mean(x["accs"]))
        if old is not None:
            row["old_s"], o, _ = timed(lambda: old.kshot_probes(Xtr, ytr, Xte, yte, C, ks=(k,), **kw)[0], 1)
            row["old_acc"] = 100 * o.mean
            row["old_anchored_s"], _, _ = timed(lambda: old.kshot_probes(
                Xtr, ytr, Xte, yte, C, ks=(k,), zeroshot_weights=zs, logit_scale=logit_scale, **kw)[-1], 1)
        rows.append(row)
        print({key: v for key, v in row.items() if key != "cliplab_warnings"}, flush=True)
    total = {"model": name, "dataset": ds, "dim": Xtr.shape[1], "classes": C, "k": "all", "seeds": len(seeds)}
    for key in ("cliplab_s", "sklearn_s", "anchored_s", "old_s", "old_anchored_s",
                *(f"sklearn_{solver}_s" for solver in args.also_sklearn)):
        if key in rows[0]:
            total[key] = sum(r[key] for r in rows)
    total["ratio"] = total["sklearn_s"] / total["cliplab_s"]
    total["max_abs_diff_pt"] = max(r["max_abs_diff_pt"] for r in rows)
    return rows + [total]


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


def kshot_tables() -> dict[str, str]:
    """docs/benchmarks.md's k-shot tables (region ``kshot-<model>-<dataset>``), from the saved one-thread results
    (``probe_vs_sklearn-kshot-*-t1-cpu.json``) beside their two-thread twins (``-t2-``)."""
    results = Path(__file__).resolve().parent / "results"
    tables = {}
    for one in sorted(results.glob("probe_vs_sklearn-kshot-*-t1-cpu.json")):
        two_path = Path(str(one).replace("-t1-cpu", "-t2-cpu"))
        rows1 = json.loads(one.read_text())["kshot_rows"]
        rows2 = json.loads(two_path.read_text())["kshot_rows"] if two_path.is_file() else []
        twin = {(r["model"], r["dataset"], r["k"]): r for r in rows2}
        for (model, ds) in dict.fromkeys((r["model"], r["dataset"]) for r in rows1):
            mine = [r for r in rows1 if (r["model"], r["dataset"]) == (model, ds)]
            old = any("old_s" in r for r in mine)
            solvers = sorted({k[len("sklearn_"):-2] for r in mine for k in r if k.startswith("sklearn_")
                              and k.endswith("_s") and k != "sklearn_s"})
            out = []
            for r in mine:
                t = twin.get((model, ds, r["k"]), {})
                total = r["k"] == "all"
                row = {"k": r["k"], "seeds": r["seeds"], "cliplab s": f"{r['cliplab_s']:.3f}",
                       "sklearn s": f"{r['sklearn_s']:.2f}", "ratio": f"**{r['ratio']:.1f}×**",
                       "cliplab s (2 thr.)": f"{t['cliplab_s']:.3f}" if t else "",
                       "sklearn s (2 thr.)": f"{t['sklearn_s']:.2f}" if t else "",
                       "ratio (2 thr.)": f"{t['ratio']:.1f}×" if t else "",
                       "cliplab acc %": "" if total else f"{r['cliplab_acc']:.2f}",
                       "sklearn acc %": "" if total else f"{r['sklearn_acc']:.2f}",
                       "Δ pt (max per seed)": f"(max {r['max_abs_diff_pt']:.2f})" if total else
                       f"{r['diff_pt']:+.2f} ({r['max_abs_diff_pt']:.2f})",
                       "anchored s": f"{r['anchored_s']:.3f}" if "anchored_s" in r else ""}
                for solver in solvers:
                    row[f"sklearn {solver} s"] = f"{r[f'sklearn_{solver}_s']:.2f}"
                if old:
                    row["old s (anchored)"] = (f"{r['old_s']:.1f} ({r['old_anchored_s']:.1f})"
                                               if "old_s" in r and "old_anchored_s" in r else "")
                out.append(row)
            region = f"kshot-{model}-{ds}"
            if region in tables:  # e.g. the same model and set with and without --limit: one table each, not the last
                raise SystemExit(f"two saved results make the table {region} ({one.name} and another): keep one")
            tables[region] = markdown_table(out, list(out[0]))
    return tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", required=True, help="embedding cache (filled by _probe_data.py)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--models", default="tiny-shapes,ViT-B-32")
    ap.add_argument("--datasets", default="eurosat,cifar10")
    ap.add_argument("--limit", type=int, default=None, help="seeded subset of each folder/split (see _probe_data)")
    ap.add_argument("--old-rev", default=None, help="also run the probe of this commit (e.g. 0504341)")
    ap.add_argument("--kshot", default="1,2,4,8,16", help="k-shot rows for these k ('' for none)")
    ap.add_argument("--seeds", type=int, default=3, help="k-shot seeds per k")
    ap.add_argument("--no-linear", action="store_true", help="k-shot rows only")
    ap.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (default: as configured)")
    ap.add_argument("--repeats", type=int, default=1, help="k-shot: best of this many runs per side")
    ap.add_argument("--also-sklearn", default="", help="k-shot: more scikit-learn solvers to time, e.g. newton-cg")
    ap.add_argument("--docs", action="store_true", help="write docs/benchmarks.md's k-shot tables from the saved "
                    "results (after the runs; with --docs-only, measuring nothing)")
    ap.add_argument("--docs-only", action="store_true")
    if "--docs-only" in sys.argv:
        for region, body in kshot_tables().items():
            write_docs_region(region, body)
        return
    args = ap.parse_args()
    args.kshot = [int(k) for k in args.kshot.split(",") if k]
    args.also_sklearn = [x for x in args.also_sklearn.split(",") if x]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        run(args, torch)


def run(args, torch) -> None:
    from cliplab.tasks.probe import fit_logreg, linear_probe

    old = old_probe(args.old_rev) if args.old_rev else None
    rows, details, krows = [], [], []
    for name in args.models.split(","):
        model = load_model_by_name(name, args.cache_dir, args.device)
        for ds in args.datasets.split(","):
            folder = SHARED / FOLDERS.get(ds, ds)
            if not folder.is_dir():
                print(f"skipping {ds}: {folder} is absent", flush=True)
                continue
            Xtr, ytr, Xte, yte, classes = features(model, ds, args.cache_dir, args.limit)
            C = len(classes)
            if args.kshot:
                krows += kshot_rows(name, ds, Xtr, ytr, Xte, yte, classes, zeroshot_anchor(model, classes,
                                    args.cache_dir), model.logit_scale, args, old)
            if args.no_linear:
                continue
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
    if not rows and not krows:
        print("nothing measured (no data)")
        return
    if rows:
        cols = ["model", "dataset", "n_train", "n_test", "dim", "grid_points", "cliplab_wd", "sklearn_wd",
                "cliplab_acc", "sklearn_acc", "diff_pt", "cliplab_s", "sklearn_s", "speedup", "cliplab_converged",
                "sklearn_unconverged"] + (["old_acc", "old_wd"] if old is not None else [])
        print(markdown_table(rows, cols))
    if krows:
        cols = ["model", "dataset", "dim", "k", "seeds", "cliplab_s", "sklearn_s", "ratio", "cliplab_acc",
                "sklearn_acc", "diff_pt", "max_abs_diff_pt", "same_wd", "anchored_s"]
        cols += [f"sklearn_{solver}_s" for solver in args.also_sklearn]
        print(markdown_table(krows, cols + (["old_s", "old_anchored_s"] if old is not None else [])))
    info = {**machine(), "cpu_model": cpu_model(), "threads": threads()}
    payload = {"machine": info, "device": args.device or "auto", "limit": args.limit, "old_rev": args.old_rev,
               "rows": rows, "sweeps": details, "kshot_rows": krows}
    tag = "-".join((["kshot"] if args.no_linear else []) + [args.models.replace(",", "+"),
                                                           args.datasets.replace(",", "+")]
                   + ([f"limit{args.limit}"] if args.limit else [])
                   + ([f"t{args.threads}"] if args.threads else []) + [device_tag(args.device)])
    print(f"saved {save('probe_vs_sklearn-' + tag, payload)}")
    if args.docs:
        for region, body in kshot_tables().items():
            write_docs_region(region, body)


if __name__ == "__main__":
    main()
