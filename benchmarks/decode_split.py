"""Decoding and the tower on the CPU cores: where a cold image pass goes with the OpenVINO tower, and which split of
the cores between JPEG decoding (DataLoader worker processes) and the tower (OpenVINO inference threads) is fastest.

    .venv/bin/python benchmarks/decode_split.py [--model ViT-B-32] [--sets food101,cifar10] [--limit 500]

One process, the model converted once (not timed); each row embeds the same images from scratch (no cache) with
the PIL pipeline (the reference), best of ``--repeats``. Also measured alone: decoding + preprocessing per image
in the main process, and the tower per image on random pixels, so the serial sum can be compared with the run.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from _common import best_seconds, machine, markdown_table, save
from cliplab.data import open_dataset
from cliplab.embed import embed_images
from cliplab.models import open_model
from cliplab.models.backends import openvino as ov_backend

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"food101": (SHARED / "food101-10", "test"), "cifar10": (SHARED / "cifar10-test", None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--sets", default="food101,cifar10")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="cliplab-split-"))
    torch.manual_seed(0)
    model = open_model(args.model, device="cpu", backend="openvino", cache_dir=cache)
    model.encode_images(torch.zeros(2, 3, *model.image_size))  # converted once, outside the timings
    pixels = torch.randn(32, 3, *model.image_size)
    rows = []
    for name in args.sets.split(","):
        folder, split = SETS[name]
        ds = open_dataset(str(folder), split=split, limit=args.limit)
        n = min(len(ds), 200)
        decode_ms = 1000 * best_seconds(lambda: [model.preprocess(ds.source.load(i)) for i in range(n)], 1) / n
        for threads in (2, 1):
            model.runtime = ov_backend.compile_towers(model, cache, "fp32", threads=threads)
            tower_ms = 1000 * best_seconds(lambda: model.encode_images(pixels), args.repeats) / len(pixels)
            for workers in (0, 1, 2):
                s = best_seconds(lambda: embed_images(model, ds, use_cache=False, workers=workers),
                         args.repeats)
                rows.append({"images": f"{name} ({len(ds)})", "OpenVINO threads": threads, "decode workers": workers,
                             "images/s": round(len(ds) / s, 1), "decode+preprocess ms/img": round(decode_ms, 2),
                             "tower ms/img": round(tower_ms, 1),
                             "serial sum img/s": round(1000 / (decode_ms + tower_ms), 1)})
                print(rows[-1], flush=True)
    cols = ["images", "OpenVINO threads", "decode workers", "images/s", "decode+preprocess ms/img", "tower ms/img",
            "serial sum img/s"]
    print(markdown_table(rows, cols))
    save(f"decode_split-{args.model}", {"machine": machine(), "model": args.model, "rows": rows})


if __name__ == "__main__":
    main()
