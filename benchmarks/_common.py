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
    """The machine a result was measured on: versions, cores, threads and the CPU (:func:`cpu_info`)."""
    import torch

    import cliplab

    info = {"python": platform.python_version(), "torch": torch.__version__, "cliplab": cliplab.__version__,
            "cpu_cores": os.cpu_count(), "cuda": torch.cuda.is_available(), "threads": torch.get_num_threads(),
            "cpu": cpu_info()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# AMD's and Intel's CPU families by /proc/cpuinfo's "cpu family" and "model" (a VM often hides the model name:
# "AMD EPYC" alone); what decides which kernels run is in the flags, recorded beside it.
AMD_FAMILIES = {23: "Zen / Zen 2", 25: "Zen 3 / Zen 4", 26: "Zen 5"}
ZEN4_MODELS = set(range(0x10, 0x20)) | set(range(0x60, 0x80)) | set(range(0xA0, 0xB0))  # family 25: Genoa, Raphael...


def cpu_info() -> dict:
    """The CPU every benchmark result is recorded with: its model name, vendor, family/model numbers, a family label
    (AMD Zen generation; Intel server core by its AMX flags) and the kernel-relevant flags (avx512f, avx512_bf16,
    amx_bf16, amx_tile, ...: cliplab.models.backends.calibration.CPU_FLAGS)."""
    import re

    from cliplab.models.backends.calibration import cpu_info as base

    info = dict(base())
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    field = lambda name: (re.search(rf"^{name}\s*:\s*(.+)$", text, re.M) or [None, None])[1]  # noqa: E731
    vendor, family, model = field("vendor_id"), field("cpu family"), field(r"model")
    info.update(vendor=vendor, cpu_family=int(family) if family else None,
                cpu_model_number=int(model) if model else None)
    label = None
    if vendor == "AuthenticAMD" and info["cpu_family"] in AMD_FAMILIES:
        label = AMD_FAMILIES[info["cpu_family"]]
        if info["cpu_family"] == 25:
            label = "Zen 4" if info["cpu_model_number"] in ZEN4_MODELS else "Zen 3"
    elif vendor == "GenuineIntel":
        label = "Intel with AMX" if "amx_tile" in info["flags"] else "Intel without AMX"
    info["family_label"] = label
    if not info.get("model") or info["model"] == "unknown":
        info["model"] = cpu_model()
    return info


def cpu_label(info: dict | None = None) -> str:
    """``AMD EPYC (Zen 4; avx512f, avx512_bf16)``: the CPU in one line, for tables and docs."""
    info = info or cpu_info()
    flags = [f for f in ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if f in info["flags"]]
    family = f"{info['family_label']}; " if info.get("family_label") else ""
    return f"{info['model']} ({family}{', '.join(flags) or 'no AVX-512'})"


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


DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_docs_region(name: str, body: str, docs: Path = DOCS) -> Path:
    """Replace the body of ``<!-- numbers:NAME -->`` ... ``<!-- /numbers:NAME -->`` in ``docs`` (the README's
    mechanism, benchmarks/docs_numbers.py): figures in the docs come from the scripts, never typed by hand. The
    markers are placed once by hand; text outside them is never touched."""
    import re

    text = docs.read_text()
    # the markers on lines of their own, with or without a body between them (a new region is two lines)
    mark = re.compile(rf"(<!-- numbers:{re.escape(name)} -->\n)(?:.*?\n)?(<!-- /numbers:{re.escape(name)} -->)", re.S)
    if not mark.search(text):
        raise SystemExit(f"{docs} has no region <!-- numbers:{name} --> ... <!-- /numbers:{name} -->; add the "
                         "markers where the table belongs")
    docs.write_text(mark.sub(lambda mo: mo.group(1) + body.rstrip("\n") + "\n" + mo.group(2), text, count=1))
    return docs
