"""Text tower batches: the default (sized so the progress bar moves ~20 times) vs one batch of 256 texts, same
process, alternating, fresh cache each time.

    .venv/bin/python benchmarks/text_batch.py [--model ViT-B-32] [--n 1195] [--repeats 3] [--backend torch]

A seeded random-weight model (no weights here); the texts are COCO-like captions of varied length. Reports the
median seconds of each and their ratio, and the largest difference between the two embeddings.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from _common import cpu_label, machine, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--n", type=int, default=1195)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backend", default="torch")
    args = ap.parse_args()
    import torch

    from cliplab.embed.texts import TEXT_BATCH_MAX, embed_texts, text_batch
    from cliplab.inputs import RunOptions
    from cliplab.models import open_model

    torch.manual_seed(0)
    model = open_model(args.model, device="cpu", backend=args.backend, cache_dir=tempfile.mkdtemp())
    words = "a man woman dog cat riding sitting on top of the red blue large small wave table beach street".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(6, 18)))) + f" #{i}" for i in range(args.n)]
    times: dict[str, list[float]] = {"default": [], "256": []}
    out = {}
    for _ in range(args.repeats):
        for name, bs in (("default", None), ("256", TEXT_BATCH_MAX)):
            opts = RunOptions.of(tempfile.mkdtemp(), backend=args.backend)
            t0 = time.perf_counter()
            out[name] = embed_texts(model, texts, opts, batch_size=bs)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"machine": machine(), "model": args.model, "backend": args.backend, "n": args.n,
              "default_batch": text_batch(args.n), "seconds": times, "median": med,
              "ratio_default_over_256": med["default"] / med["256"],
              "max_abs_diff": float(np.abs(out["default"] - out["256"]).max())}
    print(f"{cpu_label(result['machine']['cpu'])}: {args.n} texts, {args.model} ({args.backend}); batch "
          f"{text_batch(args.n)}: {med['default']:.2f} s, batch 256: {med['256']:.2f} s (median of {args.repeats}); "
          f"ratio {result['ratio_default_over_256']:.3f}; max |difference| {result['max_abs_diff']:.2e}")
    print(f"wrote {save(f'text_batch-{args.model}-{args.backend}', result)}")


if __name__ == "__main__":
    main()
