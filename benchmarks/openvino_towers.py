"""The image and text towers on the CPU: PyTorch eager vs the OpenVINO backend (fp32, and bf16 opt-in), side by
side in one run on the same random pixels, with the tower's FLOPs counted and the machine's fp32 peak computed.

    .venv/bin/python benchmarks/openvino_towers.py [--model ViT-B-32] [--batch 32] [--repeats 5]

Random weights (seeded, the same for every backend): speed does not depend on them, agreement is measured on them.
The fp32 peak is cores x FMA units x fp32 lanes x 2 x clock; the clock is read from /proc/cpuinfo (the nominal
one; a CPU boosting above it makes the achieved fraction look higher than it is) and FMA units = 2 (Zen 4/5,
Intel server cores); both are recorded.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import best_seconds, machine, markdown_table, save
from cliplab.models import open_model


CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) { struct timespec a, b; long n = 2000000000L, x = 0;
  clock_gettime(CLOCK_MONOTONIC, &a);
  __asm__ volatile("1: addq $1, %0\n\t addq $1, %0\n\t addq $1, %0\n\t addq $1, %0\n\t subq $4, %1\n\t jnz 1b"
                   : "+r"(x), "+r"(n));
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%f\n", 2e9 / ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9) / 1e9); return 0; }
"""


def measured_clock_ghz() -> float | None:
    """The clock the core actually runs at: 2e9 dependent integer adds (one per cycle) timed, compiled with the
    system's C compiler (x86-64 only; None when that is not possible). A VM's /proc/cpuinfo shows the nominal clock,
    which a boosting CPU exceeds."""
    import platform
    import subprocess

    if platform.machine() not in ("x86_64", "AMD64") or shutil.which("cc") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "clock.c", Path(tmp) / "clock"
        src.write_text(CLOCK_C)
        if subprocess.run(["cc", "-O1", str(src), "-o", str(exe)], capture_output=True).returncode:
            return None
        return max(float(subprocess.run([str(exe)], capture_output=True, text=True).stdout) for _ in range(3))


def fp32_peak() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = set(re.search(r"^flags\s*:\s*(.*)$", info, re.M).group(1).split()) if "flags" in info else set()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    mhz = float(re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M).group(1)) if "cpu MHz" in info else float("nan")
    cores = len(os.sched_getaffinity(0))
    fma_units = 2
    clock = measured_clock_ghz() or mhz / 1000
    return {"cores": cores, "fma_units": fma_units, "fp32_lanes": lanes, "nominal_clock_ghz": mhz / 1000,
            "clock_ghz": clock, "clock": "measured" if clock != mhz / 1000 else "nominal (/proc/cpuinfo)",
            "gflops": cores * fma_units * lanes * 2 * clock}


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
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="cliplab-ov-bench-"))
    torch.manual_seed(0)
    variants = {}
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
    peak = fp32_peak()
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
            "GFLOP/s": round(ips * gflop, 1), "of fp32 peak %": round(100 * ips * gflop / peak["gflops"], 1),
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
    cols = ["variant", "load s", "images/s", "x torch", "GFLOP/s", "of fp32 peak %", "texts/s",
            "min cos image (1 - x)", "min cos text (1 - x)", "same top-1 (image vs texts)"]
    print(f"{args.model} image tower: {gflop:.2f} GFLOP per image; fp32 peak {peak['gflops']:.0f} GFLOP/s "
          f"({peak['cores']} cores x {peak['fma_units']} FMA x {peak['fp32_lanes']} lanes x 2 x "
          f"{peak['clock_ghz']:.2f} GHz, {peak['clock']})")
    print(markdown_table(rows, cols))
    path = save(f"openvino_towers-{args.model}", {"machine": machine(), "model": args.model, "batch": args.batch,
                                                   "tower_gflop_per_image": gflop, "fp32_peak": peak, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
