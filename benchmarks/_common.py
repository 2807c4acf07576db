"""Shared bits of the benchmark scripts: machine description, generated JPEGs, timing, markdown output."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def machine() -> dict:
    import torch

    import cliplab

    info = {"python": platform.python_version(), "torch": torch.__version__, "cliplab": cliplab.__version__,
            "cpu_cores": os.cpu_count(), "cuda": torch.cuda.is_available(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_model() -> str:
    """The CPU's name as ``lscpu`` reports it ("Model name"), else platform.processor()."""
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else (platform.processor() or "unknown")


def make_jpegs(folder: Path, n: int, size=(640, 480), seed: int = 0) -> list[str]:
    """n distinct photo-like JPEGs (random two-colour gradient + texture, quality 90) of ``size`` (w, h)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i in range(n):
        c0, c1 = rng.random(3) * 255, rng.random(3) * 255
        t = (xx * rng.random() + yy * rng.random()) / (w + h)
        img = c0 * (1 - t[..., None]) + c1 * t[..., None] + rng.normal(0, 12, (h, w, 3))
        p = folder / f"{i:06d}.jpg"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(str(p))
    return paths


def device_tag(device: str | None) -> str:
    """'cuda' or 'cpu': the suffix of every results file, so CPU and GPU figures sit side by side."""
    import torch

    return (device or ("cuda" if torch.cuda.is_available() else "cpu")).split(":")[0]


def best_seconds(fn, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn()``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@contextmanager
def timer(out: dict, key: str):
    t0 = time.perf_counter()
    yield
    out[key] = time.perf_counter() - t0


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def save(name: str, payload: dict) -> Path:
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
