"""A study on cached embeddings: the cold run (empty cache) against warm reruns, as a person types them.

    python benchmarks/warm_study.py [--model tiny-shapes] [--pretrained P] [--dataset shapes] [--split S]
                                    [--limit N] [--templates openai-imagenet-7]
                                    [--also zeroshot,compare,search,search-image,retrieval,queries,similar,
                                            cluster,probe]
                                    [--repeats 3] [--backend auto]

Each run is a fresh ``cliplab`` process (the CLI, exactly as typed, with ``-q``) timed by its wall clock, from start to
exit, and by its CPU time (user + system: what the wall time would be on an idle machine, the process being
single-threaded when nothing is computed): the first on an empty cache computes every image and text embedding; the
reruns find them all cached, so the model is known from its memo (``cliplab/models/memo.py``) and never loaded. Each
run also reports the heavy modules it imported (torch, open_clip, torchvision, openvino, sklearn, scipy.stats): a warm
run imports only those its own math needs (the probe's fit: torch; k-means: sklearn). ``--also``: further studies,
each run cold then warm on the cache the prompt study filled (zero-shot and compare need no new embedding; probe
embeds its training split on its cold run; search embeds its queries; search-image a drawn query image; retrieval
needs a captioned dataset, queries class names: a study the dataset cannot serve is skipped, saying why). The CPU
(``lscpu`` model name, family and kernel flags: ``_common.cpu_label``) and the load average before the runs are
recorded with the figures: this machine is shared, and wall times move with the load.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_info, cpu_label, markdown_table, save, write_docs_region

ROOT = Path(__file__).resolve().parents[1]
RUNNER = """
import json, sys
from cliplab.cli import main
sys.argv = ["cliplab", *json.loads(sys.argv[1])]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
heavy = [m for m in ("torch", "open_clip", "torchvision", "openvino", "sklearn", "scipy.stats") if m in sys.modules]
sys.stderr.write("\\nWARM-STUDY " + json.dumps({"torch": "torch" in sys.modules, "heavy": heavy, "code": code}) + "\\n")
"""


def run(args: list[str]) -> dict:
    """One ``cliplab`` process: wall seconds, CPU seconds, whether it imported torch and which heavy modules."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(args)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = [line for line in out.stderr.splitlines() if line.startswith("WARM-STUDY ")]
    info = json.loads(tail[-1][len("WARM-STUDY "):]) if tail else {"torch": None, "code": out.returncode}
    if info["code"]:
        raise RuntimeError(f"cliplab {' '.join(args)} failed:\n{out.stderr[-1500:]}")
    return {"wall_s": wall, "cpu_s": cpu, "torch_imported": info["torch"], "heavy": info.get("heavy")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-shapes")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--dataset", default="shapes")
    ap.add_argument("--split", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--templates", default="openai-imagenet-7")
    ap.add_argument("--also", default="zeroshot,compare,search,search-image,retrieval,queries,similar,cluster,probe")
    ap.add_argument("--queries", default="a photo of a {}.", help="search: one query per class from this template")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache-dir", default=None, help="default: a new temporary folder (removed at the end)")
    ap.add_argument("--docs", default=None, metavar="REGION",
                    help="write the table into docs/benchmarks.md's <!-- numbers:REGION --> block")
    args = ap.parse_args()

    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="cliplab-warm-"))
    shared = ["-m", args.model, "-d", args.dataset, "--backend", args.backend, "--cache-dir", str(cache), "-q"]
    shared += ["-p", args.pretrained] if args.pretrained else []
    shared += ["--split", args.split] if args.split else []
    shared += ["--limit", str(args.limit)] if args.limit else []
    studies = {"prompts": ["prompts", *shared, "-t", args.templates]}
    query_image = cache / "query.png"
    for name in [s for s in args.also.split(",") if s]:
        if name == "search":
            own = ["search", *shared, "a photo of a cat"]
        elif name == "search-image":
            from PIL import Image

            cache.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64), (200, 30, 30)).save(query_image)
            own = ["search", *shared, "--image", str(query_image), "--plus", "red"]
        else:
            own = [name, *shared]
        studies[name] = own
    load = os.getloadavg()
    rows = []
    try:
        for name, argv in studies.items():
            try:
                cold = run(argv)
            except RuntimeError as exc:  # e.g. a probe on a dataset without a training split
                print(f"{name}: skipped ({str(exc).strip().splitlines()[-1]})", file=sys.stderr)
                continue
            warm = [run(argv) for _ in range(args.repeats)]
            walls = [w["wall_s"] for w in warm]
            rows.append({"study": name, "cold_s": round(cold["wall_s"], 2), "warm_best_s": round(min(walls), 2),
                         "warm_median_s": round(statistics.median(walls), 2),
                         "ratio": round(cold["wall_s"] / statistics.median(walls), 1),
                         "warm_cpu_s": round(statistics.median(w["cpu_s"] for w in warm), 2),
                         "warm_imports_torch": any(w["torch_imported"] for w in warm),
                         "warm_heavy": ", ".join(sorted({m for w in warm for m in (w["heavy"] or [])})) or "none",
                         "command": "cliplab " + " ".join(a.replace(str(cache), "CACHE") for a in argv)})
            print(f"{name}: cold {cold['wall_s']:.2f} s, warm {min(walls):.2f}-{max(walls):.2f} s, "
                  f"torch in warm runs: {rows[-1]['warm_imports_torch']}", file=sys.stderr)
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)
    cpu = cpu_label()
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load average before the runs {load[0]:.2f}")
    print(markdown_table(rows, ["study", "cold_s", "warm_best_s", "warm_median_s", "ratio", "warm_cpu_s",
                                "warm_heavy"]))
    tag = Path(args.dataset.rstrip("/")).name.replace(":", "-")
    path = save(f"warm_study-{args.model.replace('/', '-')}-{tag}", {
        "cpu_model": cpu, "cpu": cpu_info(), "cpu_cores": os.cpu_count(), "load_average_before": load,
        "python": sys.version.split()[0],
        "args": vars(args), "rows": rows})
    print(f"figures: {path}", file=sys.stderr)
    if args.docs:
        write_docs_region(args.docs, docs_table(rows, cpu, load[0], args.repeats))


def docs_table(rows: list[dict], cpu: str, load: float, repeats: int) -> str:
    """The table docs/benchmarks.md shows, from this run's rows (figures are never typed by hand)."""
    head = (f"{cpu}, {os.cpu_count()} cores, load average {load:.1f} before the runs; warm = median of {repeats}.\n\n"
            "| command (CACHE: the run's cache folder) | cold s | warm s | warm CPU s | heavy modules a warm run imports |\n"
            "|---|---|---|---|---|")
    lines = [f"| `{r['command']}` | {r['cold_s']:.2f} | **{r['warm_median_s']:.2f}** | {r['warm_cpu_s']:.2f} | "
             f"{r['warm_heavy']} |" for r in rows]
    return "\n".join([head, *lines])


if __name__ == "__main__":
    main()
