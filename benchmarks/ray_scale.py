"""`--ray local` against one process, same model, backend, precision and batch size, on real images.

    python benchmarks/ray_scale.py [--n 2000] [--model ViT-B-32] [--backend torch] [--batch-size 32] [--repeats 3]
                                   [--docs ray-scale] [--docs-only]

Images: n/2 of Food-101 (up to 512 px JPEGs; at most the 500 of the shared subset's test split) and the rest from
CIFAR-10's test split (32x32 JPEGs), spread evenly over each, from ../shared/data, listed in a CSV manifest (the script exits saying so when the folder is absent). Model: open_clip's
architecture with no weights given, so cliplab initialises it at random with its fixed seed (the same weights in the
driver and in every Ray worker: their fingerprints must match). Each run embeds everything into an empty cache.

Reported: Ray's start-up (``ray.init`` of a local cluster) on its own; the rest of the Ray run (tower actors loading
the model, decode tasks, encoding, the driver committing shards) against the single-process run (ratio); the peak
RSS of the driver, of each tower actor and of each decode worker process; the measured throughput of one tower
actor (rows / its encoding seconds) and of decoding on one core (CIFAR-10's 32 px and Food-101's 512 px apart), which docs/scaling.md's cluster table is computed
from; and whether the embeddings are identical. Each of --repeats runs measures both sides (the order alternates, so
a machine growing busier does not favour one side). Results: benchmarks/results/ray_scale-<model>-<backend>.json;
--docs REGION writes docs/scaling.md's region from them (--docs-only: from the saved results, measuring nothing).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import cpu_label, cpu_model, machine, markdown_table, save, write_docs_region

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCALING = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"
RESULTS = Path(__file__).resolve().parent / "results"


def manifest(n: int, folder: Path) -> tuple[Path, int]:
    cifar = sorted((DATA / "cifar10-test").glob("*/*.jpg"))
    food = sorted((DATA / "food101-10" / "test").glob("*/*.jpg"))
    take = lambda files, k: [files[i] for i in np.linspace(0, len(files) - 1, k).astype(int)]  # noqa: E731
    n_food = min(n - n // 2, len(food))  # the Food-101 subset has 500 test images: CIFAR-10 makes up the rest
    rows = [(p, p.parent.name) for p in take(cifar, n - n_food) + take(food, n_food)]
    if len({p for p, _ in rows}) != n:
        sys.exit(f"{n} distinct images asked for; {DATA} holds {len(cifar)} CIFAR-10 and {len(food)} Food-101 ones")
    path = folder / "images.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filepath", "label"])
        w.writerows((str(p), label) for p, label in rows)
    return path, n - n_food  # the CIFAR-10 rows come first


CORES_PER_NODE = 32  # a CPU node of the table (vCPUs, as the measured 2 are)
CORES_PER_GPU = 12  # decode cores beside each GPU (e.g. 96 vCPUs for 8 GPUs)
GPU_TOWER = 2000.0  # ViT-B-32 fp16 images/s one GPU's tower is ASSUMED to reach (not measured: no GPU here)
TARGET = 10_000_000


def cluster_table(out: dict) -> list[dict]:
    """Expected images/s and hours for 10M images, from the measured single-actor and decode rates: a CPU image
    costs (actor threads / actor img/s) core-seconds to encode plus 1 / (decode img/s per core) to decode (Food-101's
    512 px photos, the realistic case), and the work spreads linearly over cores and nodes; a GPU runs at the lesser
    of its tower (GPU_TOWER, assumed) and what its CORES_PER_GPU cores decode."""
    decode = out["decode_images_per_second_per_core_food101"]
    per_image = out["ray_actor_threads"] / out["actor_images_per_second"] + 1 / decode  # core-seconds
    rows = []
    for n in (1, 4, 16, 64):
        rate = n * CORES_PER_NODE / per_image
        rows.append({"cluster": f"{n} CPU node{'s' * (n > 1)} × {CORES_PER_NODE} vCPUs", "images/s": rate,
                     "hours for 10M": TARGET / rate / 3600})
    per_gpu = min(GPU_TOWER, CORES_PER_GPU * decode)
    for n in (1, 8, 32):
        rows.append({"cluster": f"{n} GPU{'s' * (n > 1)}, {CORES_PER_GPU} decode vCPUs{' each' * (n > 1)}",
                     "images/s": n * per_gpu, "decode-bound": per_gpu < GPU_TOWER,
                     "hours for 10M": TARGET / (n * per_gpu) / 3600})
    return rows


def measure(model, ds, tmp: Path, kw: dict, ray_first: bool) -> dict:
    """One run: the single process and the Ray run (ray.init timed apart), each into an empty cache."""
    import ray

    from cliplab.embed import embed_images
    from cliplab.embed.distributed import embed_images_ray
    from cliplab.progress import Silent, use

    out: dict = {"ray_first": ray_first}
    res = one = None

    def single():
        nonlocal one
        t0 = time.perf_counter()
        one = embed_images(model, ds, Path(tempfile.mkdtemp(dir=tmp)), **kw)
        out["single_process_seconds"] = time.perf_counter() - t0

    def distributed():
        nonlocal res
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        out["ray_startup_seconds"] = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            res = embed_images_ray(model, ds, Path(tempfile.mkdtemp(dir=tmp)), address="local", **kw)
            out["ray_rest_seconds"] = time.perf_counter() - t0
        finally:
            ray.shutdown()

    with use(Silent()):
        for step in ((distributed, single) if ray_first else (single, distributed)):
            step()
    c = res.cluster
    out["single_process_images_per_second"] = len(one.indices) / out["single_process_seconds"]
    out["ratio_ray_rest_to_single"] = out["ray_rest_seconds"] / out["single_process_seconds"]
    out["ray_actor_model_load_seconds"] = c.model_load_seconds  # in the actor (the driver's load is not timed)
    out["ray_actor_ready_after_seconds"] = c.ready_after_seconds
    out["ray_pipeline_seconds"] = out["ray_rest_seconds"] - c.ready_after_seconds  # once the tower actor is ready
    out["ratio_ray_pipeline_to_single"] = out["ray_pipeline_seconds"] / out["single_process_seconds"]
    out["ray_actors"], out["ray_actor_threads"] = c.actors, c.threads
    out["actor_peak_rss"] = sorted(c.actor_peak_rss.values())
    out["decode_worker_peak_rss"] = sorted(c.decode_peak_rss.values())
    out["actor_images_per_second"] = res.computed / res.seconds  # rows / the actors' encoding seconds
    out["identical"] = bool(np.array_equal(one.embeddings, res.embeddings) and one.failures == res.failures)
    a = one.embeddings / np.linalg.norm(one.embeddings, axis=1, keepdims=True)
    b = res.embeddings / np.linalg.norm(res.embeddings, axis=1, keepdims=True)
    out["min_cosine"] = float((a * b).sum(1).min())
    out["load_average"] = os.getloadavg()
    return out


def render(payloads: list[dict]) -> str:
    """docs/scaling.md's region: every run of every saved backend, the goal, memory, and the cluster table (from
    the OpenVINO results when there are some, the backend CPU actors use where it is installed: the rates are per
    core of the measured kind)."""
    mb = lambda v: f"{v / 2**20:,.0f}"  # noqa: E731
    rows, notes = [], []
    for p in payloads:
        for i, r in enumerate(p["runs"], 1):
            rows.append({"backend": p["backend"], "run": f"{i}{' (Ray first)' if r['ray_first'] else ''}",
                         "single process (s)": f"{r['single_process_seconds']:.1f} "
                                               f"({r['single_process_images_per_second']:.1f} img/s)",
                         "Ray start-up (s)": f"{r['ray_startup_seconds']:.1f}",
                         "Ray rest (s)": f"{r['ray_rest_seconds']:.1f}",
                         "rest / single": f"**{r['ratio_ray_rest_to_single']:.2f}**",
                         "of the rest: actor ready (s)": f"{r['ray_actor_ready_after_seconds']:.1f}",
                         "identical": "yes" if r["identical"] else f"no (min cos {r['min_cosine']:.7f})",
                         "load average": f"{r['load_average'][0]:.1f}"})
        ratios = sorted(r["ratio_ray_rest_to_single"] for r in p["runs"])
        met = sum(x <= 1.25 for x in ratios)
        last = p["runs"][-1]
        actor = "/".join(f"{r['actor_images_per_second']:.1f}" for r in p["runs"])
        notes.append(
            f"{p['backend']} ({p['n']:,} images, batch {p['batch_size']}, {p['shard_batches']} batches a shard, "
            f"{last['ray_actors']} tower actor × {last['ray_actor_threads']} threads): rest / single "
            f"{' '.join(f'{x:.2f}' for x in ratios)} — the goal (≤ 1.25) met in {met} of {len(ratios)} runs; peak "
            f"RSS (MB): driver {mb(p['driver_peak_rss'])}, tower actor "
            f"{'/'.join(mb(max(r['actor_peak_rss'])) for r in p['runs'])}, each decode worker "
            f"{'/'.join(mb(max(r['decode_worker_peak_rss'])) for r in p['runs'])}; one tower actor "
            f"{actor} img/s; decoding on one "
            f"core {p['decode_images_per_second_per_core_cifar10']:.0f} (CIFAR-10) / "
            f"{p['decode_images_per_second_per_core_food101']:.0f} (Food-101) img/s.")
    first = payloads[0]
    cols = list(rows[0])
    text = (markdown_table(rows, cols) + "\n\n" + "\n\n".join(notes) + f"\n\n{cpu_label(first['machine'].get('cpu'))}, "
            f"{first['machine'].get('cpu_cores', '?')} cores; `python benchmarks/ray_scale.py --n {first['n']} "
            f"--repeats {len(first['runs'])} --backend BACKEND`; the single-process figure excludes its model load "
            f"(done before timing), the Ray rest includes the actor's.")
    base = dict(next((p for p in payloads if p["backend"] == "openvino"), first))
    base["actor_images_per_second"] = float(np.median([r["actor_images_per_second"] for r in base["runs"]]))
    table = [{"cluster": r["cluster"], "images/s": f"{r['images/s']:,.0f}" + " (decode-bound)" * r.get("decode-bound", 0),
              "hours for 10M images": f"{r['hours for 10M']:.2g}"} for r in cluster_table(base)]
    return text + "\n\n@@table@@\n" + (
        f"Computed from the {base['backend']} runs (tower actor {base['actor_images_per_second']:.1f} img/s on "
        f"{base['ray_actor_threads']} threads, the median of the runs; Food-101 decoding "
        f"{base['decode_images_per_second_per_core_food101']:.0f} img/s on one core):\n\n"
        + markdown_table(table, list(table[0])))


def write_scaling(payloads: list[dict]) -> None:
    runs, table = render(payloads).split("\n\n@@table@@\n")
    write_docs_region("ray-scale", runs, SCALING)
    write_docs_region("ray-table", table, SCALING)


def saved() -> list[dict]:
    out = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("ray_scale-*-*.json"))]
    return [p for p in out if "runs" in p]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-batches", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--docs", action="store_true", help="write docs/scaling.md's regions from the saved results")
    ap.add_argument("--docs-only", action="store_true", help="measure nothing: only --docs")
    args = ap.parse_args()
    if args.docs_only:
        write_scaling(saved())
        return
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this benchmark reads CIFAR-10 and Food-101 images from it")

    import torch

    from cliplab.data import open_dataset
    from cliplab.embed.distributed import _decode
    from cliplab.models import open_model
    from cliplab.progress import Silent, use

    tmp = Path(tempfile.mkdtemp(prefix="cliplab-ray-scale-"))
    listed, n_cifar = manifest(args.n, tmp)
    ds = open_dataset(str(listed))
    with use(Silent()):
        model = open_model(args.model, None, device="cpu", backend=args.backend, cache_dir=tmp / "models")
    kw = dict(batch_size=args.batch_size, shard_batches=args.shard_batches)
    out: dict = {"machine": machine(), "cpu_model": cpu_model(), "n": len(ds), "model": args.model,
                 "backend": model.backend, "precision": model.precision, "batch_size": args.batch_size,
                 "shard_batches": args.shard_batches, "torch_threads": torch.get_num_threads()}

    # decoding + preprocessing on one core, in this process (the PIL path the decode tasks run), per image set
    torch.set_num_threads(1)
    for name, lo, hi in (("cifar10", 0, n_cifar), ("food101", n_cifar, len(ds))):
        todo = list(range(lo, min(hi, lo + 96)))
        t0 = time.perf_counter()
        for s in range(0, len(todo), args.batch_size):
            _decode(ds.source, todo[s:s + args.batch_size], model.preprocess, model.preprocess_cfg)
        out[f"decode_images_per_second_per_core_{name}"] = len(todo) / (time.perf_counter() - t0)
    torch.set_num_threads(out["torch_threads"])

    out["runs"] = []
    for i in range(args.repeats):
        run = measure(model, ds, tmp, kw, ray_first=bool(i % 2))
        out["runs"].append(run)
        print(json.dumps(run), file=sys.stderr)
    out["driver_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["actor_images_per_second"] = float(np.median([r["actor_images_per_second"] for r in out["runs"]]))
    out["ray_actor_threads"] = out["runs"][-1]["ray_actor_threads"]
    out["cluster_table"] = cluster_table(out)
    path = save(f"ray_scale-{args.model}-{model.backend}", out)
    print(render([out]).replace("@@table@@", ""))
    print(f"{out['cpu_model']}; wrote {path}")
    if args.docs:
        write_scaling(saved())


if __name__ == "__main__":
    main()
