"""Decoding and the tower on the CPU cores: how close a cold image pass comes to the tower alone, and which way of
decoding (in turn, in a thread ahead of the tower, in DataLoader worker processes) gets there.

    .venv/bin/python benchmarks/decode_split.py [--model ViT-B-32] [--backend openvino] [--sets food101,cifar10]
                                                [--limit 500] [--repeats 3] [--docs decode-split]

One process, the model loaded and converted once (not timed). Per image set, in the same run and in turn (so a
machine growing busier does not favour one row): the tower alone on the set's own images, decoded and preprocessed
beforehand (batches of --batch-size, as a run forms them), and each way of decoding embedding the same images from
scratch (no cache) with the PIL pipeline; best of --repeats for each. "Share of the tower" = end-to-end images/s
over the tower's. Also measured alone: decoding + preprocessing per image in the main process.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from _common import best_seconds, cpu_label, cpu_info, machine, markdown_table, save, write_docs_region
from cliplab.data import open_dataset
from cliplab.embed import embed_images, engine
from cliplab.models import open_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"food101": (SHARED / "food101-10", "test"), "cifar10": (SHARED / "cifar10-test", None)}
# (label, DataLoader worker processes, batches decoded ahead in a thread when there are none)
MODES = [("in turn, this process", 0, 0), ("a thread ahead of the tower", 0, engine.PREFETCH_BATCHES),
         ("1 worker process", 1, 0), ("2 worker processes", 2, 0)]
GOAL = 0.90  # issue 23: end-to-end images/s after start-up >= 90 % of the tower-only rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--sets", default="food101,cifar10")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--docs", metavar="REGION", help="write the table into docs/benchmarks.md's region REGION")
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="cliplab-split-"))
    model = open_model(args.model, device="cpu", backend=args.backend, cache_dir=cache)
    model.encode_images(torch.zeros(2, 3, *model.image_size))  # converted once, outside the timings
    rows = []
    for name in args.sets.split(","):
        folder, split = SETS[name]
        ds = open_dataset(str(folder), split=split, limit=args.limit)
        n = len(ds)
        pixels = [model.preprocess(ds.source.load(i)) for i in range(n)]
        decode_ms = 1000 * best_seconds(lambda: [model.preprocess(ds.source.load(i)) for i in range(min(n, 200))],
                                        1) / min(n, 200)
        batches = [torch.stack(pixels[s:s + args.batch_size]) for s in range(0, n, args.batch_size)]
        best = {"tower": float("inf"), **{m[0]: float("inf") for m in MODES}}
        for _ in range(args.repeats):
            best["tower"] = min(best["tower"], best_seconds(lambda: [model.encode_images(b) for b in batches], 1))
            for label, workers, ahead in MODES:
                engine.PREFETCH_BATCHES = ahead
                best[label] = min(best[label], best_seconds(
                    lambda: embed_images(model, ds, use_cache=False, workers=workers, batch_size=args.batch_size), 1))
        engine.PREFETCH_BATCHES = MODES[1][2]
        tower = n / best["tower"]
        rows.append({"images": f"{name} ({n})", "decoding": "none: the tower alone on preprocessed images",
                     "images/s": f"{tower:.1f}", "share of the tower": "1"})
        for label, *_ in MODES:
            rate = n / best[label]
            rows.append({"images": "", "decoding": label, "images/s": f"{rate:.1f}",
                         "share of the tower": f"{rate / tower:.2f}" + (" ✓" if rate / tower >= GOAL else "")})
        rows[-len(MODES) - 1]["decode+preprocess ms/img"] = f"{decode_ms:.2f}"
        print(markdown_table(rows, list(rows[0]) + ["decode+preprocess ms/img"]), flush=True)
    cols = ["images", "decoding", "images/s", "share of the tower", "decode+preprocess ms/img"]
    body = (markdown_table(rows, cols) + f"\n\n{cpu_label(cpu_info())}, {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} after the runs; {args.model} ({model.backend}, {model.precision}), batch "
            f"{args.batch_size}, best of {args.repeats}; `python benchmarks/decode_split.py --backend {args.backend} "
            f"--limit {args.limit} --repeats {args.repeats}`. ✓: at least {GOAL:.0%} of the tower alone.")
    print(body)
    save(f"decode_split-{args.model}-{model.backend}", {"machine": machine(), "model": args.model,
                                                        "backend": model.backend, "rows": rows})
    if args.docs:
        write_docs_region(args.docs, body)


if __name__ == "__main__":
    main()
