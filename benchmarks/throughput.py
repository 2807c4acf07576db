"""End-to-end image embedding throughput: cliplab vs a straightforward open_clip loop.

    python benchmarks/throughput.py [--models ViT-B-32,ViT-B-16,ViT-L-14,RN50] [--n-jpeg 2048] [--n-mem 10000]
                                    [--device cuda] [--batch-size 256]

Data (generated, same for every contender): a folder of 640x480 JPEGs (quality 90, photo-like gradients +
texture) and an in-memory uint8 set of 32x32 images (CIFAR-sized). Models have random weights (speed only).

Contenders, all from cold (no cache) unless marked:
* baseline — the loop CLIP_benchmark and most notebooks use: a torch DataLoader over PIL images with open_clip's
  transform (same workers), ``encode_image`` under ``no_grad`` (+ fp16 autocast on CUDA), results to the CPU;
* cliplab pil — ``embed_images`` with the reference PIL pipeline (sharded cache writes included);
* cliplab tensor — ``embed_images(pipeline='tensor')``: threaded file reads, torchvision decoding (nvJPEG on
  CUDA), batched tensor resize/normalise on the device; for the in-memory set the uint8 arrays skip PIL;
* cliplab tensor --compile (with ``--compile``) — the tensor pipeline with ``torch.compile`` of the image encoder;
  compilation happens in a warm-up call on one full batch, timed separately (``compile_s``: paid once per process);
* cliplab cached — the same call again: everything comes from the embedding cache.

cliplab loads models with its defaults (channels_last for conv towers, fp16 autocast on CUDA); the baseline uses
the open_clip module as created (NCHW) with fp16 autocast on CUDA.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import device_tag, machine, make_jpegs, markdown_table, save


def baseline(model, images: list, workers: int, batch_size: int, from_array: bool = False) -> float:
    """The straightforward loop; returns seconds."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    class DS(Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            img = Image.fromarray(images[i]) if from_array else Image.open(images[i]).convert("RGB")
            return model.preprocess(img)

    dev = model.device
    net = model.model
    t0 = time.perf_counter()
    loader = DataLoader(DS(), batch_size=batch_size, workers=workers, pin_memory=dev.type == "cuda")
    out = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=dev.type == "cuda"):
        for x in loader:
            out.append(net.encode_image(x.to(dev)).float().cpu())
    torch.cuda.synchronize() if dev.type == "cuda" else None
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ViT-B-32")
    ap.add_argument("--n-jpeg", type=int, default=256)
    ap.add_argument("--n-mem", type=int, default=1024)
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=64, help="0 = cliplab's choice from free GPU memory, for all")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="add a torch.compile contender")
    args = ap.parse_args()

    from cliplab.data.sources import FileSource, IndexedSource
    from cliplab.embed import embed_images
    from cliplab.embed.engine import auto_batch_size, default_workers
    from cliplab.models import open_model

    tmp = Path(tempfile.mkdtemp(prefix="cliplab-throughput-"))
    try:
        paths = make_jpegs(tmp / "jpeg", args.n_jpeg)
        arr = (np.random.default_rng(1).random((args.n_mem, 32, 32, 3)) * 255).astype(np.uint8)
        rows = []
        for name in args.models.split(","):
            model = open_model(name, None, device=args.device)
            plain = open_model(name, None, device=args.device, channels_last=False)  # the baseline's module, as
            plain.model.load_state_dict(model.model.state_dict())  # open_clip creates it: NCHW, same weights
            bs = args.batch_size if args.batch_size > 0 else auto_batch_size(model)
            workers = args.workers if args.workers is not None else default_workers(args.n_jpeg, bs, model.runtime)
            with torch.no_grad():  # warm-up: kernels, allocator, thread pools
                model.encode_images(torch.zeros(2, 3, *model.image_size))
                plain.encode_images(torch.zeros(2, 3, *model.image_size))
            compiled, compile_s = None, None
            if args.compile:
                compiled = open_model(name, None, device=args.device, compile=True)
                compiled.model.load_state_dict(model.model.state_dict())
                t0 = time.perf_counter()
                compiled.encode_images(torch.zeros(bs, 3, *model.image_size))
                compile_s = time.perf_counter() - t0
            for data, n in (("jpeg 640x480", args.n_jpeg), ("uint8 32x32 in memory", args.n_mem)):
                mem = data.startswith("uint8")
                src = (IndexedSource(n, lambda i: __import__("PIL.Image").Image.fromarray(arr[i]), "bench-mem",
                                     "mem", tensor_loader=lambda i: torch.from_numpy(arr[i]).permute(2, 0, 1))
                       if mem else FileSource(paths))
                t_base = baseline(plain, list(arr) if mem else paths, 0 if mem else workers, bs,
                                  from_array=mem)
                timings = {"baseline": t_base}
                contenders = [("cliplab pil", "pil", model), ("cliplab tensor", "tensor", model)]
                if compiled is not None:
                    contenders.append(("cliplab tensor --compile", "tensor", compiled))
                for label, pipeline, m in contenders:
                    cache = tmp / f"cache-{name}-{label.replace(' ', '_')}-{mem}"
                    t0 = time.perf_counter()
                    embed_images(m, src, cache, batch_size=bs, pipeline=pipeline,
                                 workers=0 if mem else workers)
                    timings[label] = time.perf_counter() - t0
                    if label == "cliplab tensor":
                        t0 = time.perf_counter()
                        embed_images(model, src, cache, batch_size=bs, pipeline=pipeline)
                        timings["cliplab cached"] = time.perf_counter() - t0
                for label, sec in timings.items():
                    rows.append({"model": name, "data": data, "images": n, "contender": label, "batch": bs,
                                 "images_per_s": n / sec, "ratio_vs_baseline": t_base / sec,
                                 "compile_s": compile_s if label.endswith("--compile") else None})
                    print(rows[-1], flush=True)
        print(markdown_table(rows, ["model", "data", "images", "contender", "batch", "images_per_s", "ratio_vs_baseline",
                                    "compile_s"]))
        print(f"saved {save('throughput-' + device_tag(args.device), {'machine': machine(), 'args': vars(args), 'rows': rows})}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
