"""The image and text towers on the CPU: PyTorch eager vs the OpenVINO backend (fp32, and bf16 opt-in), side by
side in one run on the same random pixels, with the tower's FLOPs counted and the machine's fp32 peak computed.

    .venv/bin/python benchmarks/openvino_towers.py [--model ViT-B-32] [--batch 32] [--repeats 5]

Random weights (seeded, the same for every backend): speed does not depend on them, agreement is measured on them.
The fp32 peak is measured, not computed from a clock: a large fp32 matrix product (sgemm, FMA-throughput bound) on
the same cores, so "of sgemm peak %" says how close the tower comes to what a dense FMA kernel achieves here. The
CPU's model name and flags (avx512f, avx512_bf16, amx_bf16, amx_tile, ...) are recorded with every result;
``--docs`` also writes the table into docs/benchmarks.md's region for this CPU family and model.
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import best_seconds, cpu_info, cpu_label, machine, markdown_table, save, write_docs_region
from cliplab.models import open_model


def sgemm_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n by n x n fp32 matrix product (2 n^3 FLOPs) with PyTorch on ``threads`` threads, the best of
    ``repeats`` after a warm-up: what a dense, well-blocked FMA kernel achieves on these cores."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.mm(a, b)
        return 2 * n ** 3 / best_seconds(lambda: torch.mm(a, b), repeats) / 1e9
    finally:
        torch.set_num_threads(old)


def fp32_peak() -> dict:
    """The practical fp32 peak of the cores this process may use: a large fp32 matrix product (MKL/oneDNN sgemm
    through PyTorch, FMA-throughput bound) timed on one thread and on all of them. A measured ceiling, not the
    datasheet's: no clock is read or assumed (a dependent-add loop timed as a clock read 15 GHz on an Intel Xeon,
    issue 23), and the theoretical lanes x FMA units x 2 x clock is only shown beside it as lanes."""
    cores = len(os.sched_getaffinity(0))
    one = sgemm_gflops(1)
    every = max(sgemm_gflops(cores), one) if cores > 1 else one  # below one core's: other jobs took the cores
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = set(re.search(r"^flags\s*:\s*(.*)$", info, re.M).group(1).split()) if "flags" in info else set()
    return {"cores": cores, "fp32_lanes": 16 if "avx512f" in flags else 8 if "avx2" in flags else 4,
            "method": "sgemm 2048^3 fp32 (torch.mm), best of 5", "gflops_one_thread": one, "gflops": every}


def tower_gflops(model, pixels_one: torch.Tensor) -> float:
    """FLOPs of one image through the image tower (2 per multiply-add), counted with the attention fast path off:
    FlopCounterMode does not see inside nn.MultiheadAttention's fused kernel (it counted 5.9 of ViT-B-32's 8.7)."""
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model.model.encode_image(pixels_one)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    return counter.get_total_flops() / 1e9


def per_second(encode, items, repeats: int) -> float:
    """Items per second of ``encode(items)``: best of ``repeats`` calls after a warm-up on two items."""
    encode(items[:2])
    return len(items) / best_seconds(lambda: encode(items), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tag", default="", help="results file suffix and docs region name, e.g. zen4")
    ap.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md's region "
                    "<!-- numbers:openvino-towers-TAG-MODEL -->")
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="cliplab-ov-bench-"))
    torch.manual_seed(0)
    variants = {}
    load_before = os.getloadavg()[0]
    peak_before = fp32_peak()  # the peak measured before and after the towers: the best of the two counts
    for name, kw in (("torch fp32", dict(backend="torch")), ("openvino fp32", dict(backend="openvino")),
                     ("openvino fp32 (cached)", dict(backend="openvino")),
                     ("openvino bf16", dict(backend="openvino", precision="bf16"))):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        m = open_model(args.model, device="cpu", cache_dir=cache, **kw)
        if hasattr(m.runtime, "converted"):  # OpenVINO towers are converted (or read from the cache) on first use: count it in the load
            m.runtime.image, m.runtime.text  # noqa: B018
        variants[name] = (m, time.perf_counter() - t0)
    ref = variants["torch fp32"][0]
    pixels = torch.randn(args.batch, 3, *ref.image_size, generator=torch.Generator().manual_seed(1))
    texts = [f"a photo of a {c}, type {i}" for i, c in enumerate(["cat", "dog", "car", "tree"] * 16)]
    gflop = tower_gflops(ref, pixels[:1])
    after = fp32_peak()
    peak = {**after, **{k: max(peak_before[k], after[k]) for k in ("gflops", "gflops_one_thread")}}
    ref_img, ref_txt = ref.encode_images(pixels), ref.encode_texts(texts)
    rows = []
    for name, (m, load_s) in variants.items():
        if name == "openvino fp32 (cached)":
            rows.append({"variant": name, "load s": round(load_s, 2)})
            continue
        ips = per_second(m.encode_images, pixels, args.repeats)
        img, txt = m.encode_images(pixels), m.encode_texts(texts)
        rows.append({
            "variant": name, "load s": round(load_s, 2), "images/s": round(ips, 1),
            "GFLOP/s": round(ips * gflop, 1), "of sgemm peak %": round(100 * ips * gflop / peak["gflops"], 1),
            "texts/s": round(per_second(m.encode_texts, texts, args.repeats), 1),
            "min cos image": float(torch.nn.functional.cosine_similarity(img.double(), ref_img.double()).min()),
            "min cos text": float(torch.nn.functional.cosine_similarity(txt.double(), ref_txt.double()).min()),
            "same top-1 (image vs texts)": float(((img @ txt.T).argmax(1) == (ref_img @ ref_txt.T).argmax(1))
                                                 .float().mean()),
        })
    for r in rows:  # cosines as 1 - distance, so the table shows how close they are
        for key in ("min cos image", "min cos text"):
            if key in r:
                r[key + " (1 - x)"] = f"{1 - r[key]:.1e}"
    base = rows[0]["images/s"]
    for r in rows:
        if "images/s" in r:
            r["x torch"] = round(r["images/s"] / base, 2)
    cols = ["variant", "load s", "images/s", "x torch", "GFLOP/s", "of sgemm peak %", "texts/s",
            "min cos image (1 - x)", "min cos text (1 - x)", "same top-1 (image vs texts)"]
    cpu = cpu_info()
    head = (f"{args.model} image tower: {gflop:.2f} GFLOP per image; CPU {cpu_label(cpu)}, {peak['cores']} cores; "
            f"fp32 sgemm peak {peak['gflops']:.0f} GFLOP/s on {peak['cores']} cores ({peak['gflops_one_thread']:.0f} "
            f"on one; {peak['fp32_lanes']} fp32 lanes); batch {args.batch}, best of {args.repeats}; load average "
            f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other processes on these cores)")
    table = markdown_table(rows, cols)
    print(head)
    print(table)
    path = save(f"openvino_towers-{args.model}" + (f"-{args.tag}" if args.tag else ""),
                {"machine": machine(), "cpu": cpu, "model": args.model, "batch": args.batch,
                 "repeats": args.repeats, "tower_gflop_per_image": gflop, "fp32_peak": peak, "rows": rows,
                 "load_average": [load_before, os.getloadavg()[0]]})
    if args.docs:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        region = write_docs_region(f"openvino-towers-{args.tag or 'cpu'}-{args.model}",
                                   f"{head}.\n\n{table}\n\n({stamp}; `{path.relative_to(path.parents[2])}`)")
        print(f"wrote {region}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
