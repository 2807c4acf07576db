"""`--ray local` against one process, same model, backend, precision and batch size, on real images.

    python benchmarks/ray_scale.py [--n 500] [--model ViT-B-32] [--backend torch] [--batch-size 32]

Images: the first n/2 of CIFAR-10's test split (32x32 JPEGs) and n/2 of Food-101 (up to 512 px JPEGs) from
../shared/data, listed in a CSV manifest (the script exits saying so when the folder is absent). Model: open_clip's
architecture with no weights given, so cliplab initialises it at random with its fixed seed (the same weights in the
driver and in every Ray worker: their fingerprints must match). Each run embeds everything into an empty cache.

Reported: Ray's start-up (``ray.init`` of a local cluster) on its own; the rest of the Ray run (tower actors loading
the model, decode tasks, encoding, the driver committing shards) against the single-process run (ratio); the peak
RSS of the driver, of each tower actor and of each decode worker process; the measured throughput of one tower
actor (rows / its encoding seconds) and of decoding on one core (CIFAR-10's 32 px and Food-101's 512 px apart), which docs/scaling.md's cluster table is computed
from; and whether the embeddings are identical. Results: benchmarks/results/ray_scale-<model>.json.
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import cpu_model, machine, markdown_table, save

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def manifest(n: int, folder: Path) -> Path:
    cifar = sorted((DATA / "cifar10-test").glob("*/*.jpg"))
    food = sorted((DATA / "food101-10" / "test").glob("*/*.jpg"))
    take = lambda files, k: [files[i] for i in np.linspace(0, len(files) - 1, k).astype(int)]  # noqa: E731
    rows = [(p, p.parent.name) for p in take(cifar, n // 2) + take(food, n - n // 2)]
    path = folder / "images.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filepath", "label"])
        w.writerows((str(p), label) for p, label in rows)
    return path


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
        rows.append({"cluster": f"{n} CPU node(s) x {CORES_PER_NODE} cores", "images/s": rate,
                     "hours for 10M": TARGET / rate / 3600})
    per_gpu = min(GPU_TOWER, CORES_PER_GPU * decode)
    for n in (1, 8, 32):
        rows.append({"cluster": f"{n} GPU(s), {CORES_PER_GPU} decode cores each", "images/s": n * per_gpu,
                     "hours for 10M": TARGET / (n * per_gpu) / 3600})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-batches", type=int, default=2)
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this benchmark reads CIFAR-10 and Food-101 images from it")

    import ray
    import torch

    from cliplab.data import open_dataset
    from cliplab.embed import embed_images
    from cliplab.embed.distributed import _decode, embed_images_ray
    from cliplab.models import open_model
    from cliplab.progress import Silent, use

    tmp = Path(tempfile.mkdtemp(prefix="cliplab-ray-scale-"))
    ds = open_dataset(str(manifest(args.n, tmp)))
    with use(Silent()):
        model = open_model(args.model, None, device="cpu", backend=args.backend, cache_dir=tmp / "models")
    kw = dict(batch_size=args.batch_size, shard_batches=args.shard_batches)
    out: dict = {"machine": machine(), "cpu_model": cpu_model(), "n": len(ds), "model": args.model,
                 "backend": model.backend, "precision": model.precision, "batch_size": args.batch_size,
                 "shard_batches": args.shard_batches, "torch_threads": torch.get_num_threads()}

    # decoding + preprocessing on one core, in this process (the PIL path the decode tasks run), per image set
    torch.set_num_threads(1)
    half = len(ds) // 2
    for name, lo, hi in (("cifar10", 0, half), ("food101", half, len(ds))):
        todo = list(range(lo, min(hi, lo + 96)))
        t0 = time.perf_counter()
        for s in range(0, len(todo), args.batch_size):
            _decode(ds.source, todo[s:s + args.batch_size], model.preprocess, model.preprocess_cfg)
        out[f"decode_images_per_second_per_core_{name}"] = len(todo) / (time.perf_counter() - t0)
    torch.set_num_threads(out["torch_threads"])

    with use(Silent()):
        t0 = time.perf_counter()
        one = embed_images(model, ds, tmp / "cache-one", **kw)
        out["single_process_seconds"] = time.perf_counter() - t0
        out["single_process_images_per_second"] = len(one.indices) / out["single_process_seconds"]
        out["driver_peak_rss_after_single"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        out["ray_startup_seconds"] = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            res = embed_images_ray(model, ds, tmp / "cache-ray", address="local", **kw)
            out["ray_rest_seconds"] = time.perf_counter() - t0
        finally:
            ray.shutdown()
    c = res.cluster
    out["ratio_ray_rest_to_single"] = out["ray_rest_seconds"] / out["single_process_seconds"]
    out["ray_actor_model_load_seconds"] = c.model_load_seconds  # in the actor (the driver's load is not timed)
    out["ray_actor_ready_after_seconds"] = c.ready_after_seconds
    out["ray_pipeline_seconds"] = out["ray_rest_seconds"] - c.ready_after_seconds  # once the tower actor is ready
    out["ratio_ray_pipeline_to_single"] = out["ray_pipeline_seconds"] / out["single_process_seconds"]
    out["ray_actors"], out["ray_actor_threads"] = c.actors, c.threads
    out["actor_peak_rss"] = sorted(c.actor_peak_rss.values())
    out["decode_worker_peak_rss"] = sorted(c.decode_peak_rss.values())
    out["driver_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["actor_images_per_second"] = res.computed / res.seconds  # rows / the actors' encoding seconds
    out["identical"] = bool(np.array_equal(one.embeddings, res.embeddings) and one.failures == res.failures)
    a = one.embeddings / np.linalg.norm(one.embeddings, axis=1, keepdims=True)
    b = res.embeddings / np.linalg.norm(res.embeddings, axis=1, keepdims=True)
    out["min_cosine"] = float((a * b).sum(1).min())
    out["cluster_table"] = cluster_table(out)
    path = save(f"ray_scale-{args.model}", out)
    mb = lambda v: f"{v / 2**20:.0f} MB"  # noqa: E731
    print(markdown_table([
        {"run": "single process", "seconds": out["single_process_seconds"], "images/s":
         out["single_process_images_per_second"], "peak RSS": mb(out["driver_peak_rss_after_single"])},
        {"run": "Ray start-up (ray.init, local)", "seconds": out["ray_startup_seconds"]},
        {"run": "Ray: tower actor ready (worker start + model load)", "seconds": c.ready_after_seconds},
        {"run": f"Ray rest ({c.actors} tower actor x {c.threads} threads + decode tasks)", "seconds":
         out["ray_rest_seconds"], "images/s": len(res.indices) / out["ray_rest_seconds"],
         "peak RSS": "actor " + ", ".join(map(mb, out["actor_peak_rss"])) + "; decode workers " +
         ", ".join(map(mb, out["decode_worker_peak_rss"]))},
    ], ["run", "seconds", "images/s", "peak RSS"]))
    print(f"ratio (Ray rest / single) {out['ratio_ray_rest_to_single']:.2f}, once the actor is ready "
          f"{out['ratio_ray_pipeline_to_single']:.2f}; identical: {out['identical']} "
          f"(min cosine {out['min_cosine']:.7f}); one actor {out['actor_images_per_second']:.1f} img/s; decode "
          f"{out['decode_images_per_second_per_core_cifar10']:.0f} (CIFAR-10) / "
          f"{out['decode_images_per_second_per_core_food101']:.0f} (Food-101) img/s/core; {out['cpu_model']}\nwrote {path}")
    print(markdown_table(out["cluster_table"], ["cluster", "images/s", "hours for 10M"]))


if __name__ == "__main__":
    main()
