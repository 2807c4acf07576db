"""`cliplab demo` wall time, this checkout against an older commit, on one machine in one run (issue 24: "the demo's
wall time before and after").

Each commit runs from its own ``git worktree`` (made in a temporary folder, removed after) with this checkout's
Python environment (``PYTHONPATH`` puts the old tree first), ``--backend torch`` (the old commit's default backend
choice may differ), a fresh cache and output folder per run (cold: embeddings, probes and the report are all made),
and then once more on the same cache (warm: what a second ``make demo`` costs). Runs alternate, old then new, pair by
pair, so a machine whose speed drifts moves both; the ratio is taken per pair and its median reported.

    python benchmarks/demo_wall.py --before adcf716 --pairs 3

Writes benchmarks/results/demo_wall.json (with the CPU model and thread settings) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, markdown_table, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_demo(tree: Path, cache: Path, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "cliplab.cli", "demo", "--cache-dir", str(cache), "--output-dir", str(out),
           "--backend", "torch", "--quiet"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"demo at {tree} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the older commit (e.g. the parent of the first issue-24 commit)")
    ap.add_argument("--after", default="HEAD", help="the newer commit (default HEAD)")
    ap.add_argument("--pairs", type=int, default=3, help="old/new pairs of cold runs (default 3)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="demo-wall-"))
    trees = {}
    try:
        for name, rev in (("before", args.before), ("after", args.after)):
            trees[name] = work / name
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(trees[name]), rev],
                           check=True)
        revs = {n: subprocess.run(["git", "-C", str(t), "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True, check=True).stdout.strip() for n, t in trees.items()}
        cold: dict[str, list[float]] = {"before": [], "after": []}
        warm: dict[str, list[float]] = {"before": [], "after": []}
        for i in range(args.pairs):
            for name in ("before", "after"):
                run = work / f"{name}-{i}"
                cold[name].append(run_demo(trees[name], run / "cache", run / "demo"))
                warm[name].append(run_demo(trees[name], run / "cache", run / "demo"))
                shutil.rmtree(run)
                print(f"pair {i + 1}: {name} cold {cold[name][-1]:.1f} s, warm {warm[name][-1]:.1f} s", flush=True)
    finally:
        for t in trees.values():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(t)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for kind, times in (("cold (empty cache)", cold), ("warm (second run)", warm)):
        ratios = [a / b for a, b in zip(times["before"], times["after"])]
        rows.append({"run": kind, f"before {revs['before']} s": f"{statistics.median(times['before']):.1f}",
                     f"after {revs['after']} s": f"{statistics.median(times['after']):.1f}",
                     "before/after (median of pairs)": f"{statistics.median(ratios):.2f}x"})
    payload = {"cpu": cpu_model(), "cores": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "before": revs["before"], "after": revs["after"], "pairs": args.pairs, "cold": cold, "warm": warm,
               "table": rows}
    path = save("demo_wall", payload)
    print(f"CPU: {payload['cpu']} ({payload['cores']} cores); {args.pairs} pairs, alternating\n")
    print(markdown_table(rows, list(rows[0])))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
