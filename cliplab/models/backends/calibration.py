"""``--backend auto`` on the CPU, chosen by measurement: both backends run the model's own image tower at the run's
batch size (a warm-up on two images, then one to three full batches each: a few seconds for a ViT-B-32 at batch 64
on 2 cores, plus OpenVINO's conversion of the tower the first time, which is cached and then used by the run), and
the images per second are kept in the cache folder, keyed by the CPU (its model name and the flags that change which
kernels run), the threads, the model's weights, the batch size, the precision and the versions of both runtimes.
The measurement is reported once, in a note, when it is taken.

The choice for a run: PyTorch for a few images (``TINY_IMAGES``: nothing measured, nothing converted); without a
calibration, PyTorch below ``CALIBRATE_MIN`` images (measuring would cost about what it could save); otherwise the
backend that embeds the run's images sooner by at least ``MIN_GAIN`` (a smaller gain is within the noise of two
measurements, and a backend flipping with it would key the run's embeddings differently each time), counting
OpenVINO's conversion of the image tower (its measured time, recorded in the calibration) when the converted tower is not in the cache. OpenVINO is measured (which converts the
tower) only by a run whose images could pay for the conversion even at the best gain OpenVINO has shown
(``OPENVINO_GAIN_BOUND``); until then the calibration holds PyTorch's rate alone and the run uses PyTorch. The run's
image count is the number of images it reads (an upper bound of those still to embed: the embedding cache is keyed
by the backend, so it can only be looked up once the backend is chosen). The choice depends only on the calibration,
whether the converted tower is cached and that count, so a rerun makes the same choice and finds its embeddings
(unless a larger run has completed the calibration in between).

The same module says, once per process, when ``--precision bf16`` would be faster on this CPU (AMX-BF16 or
AVX512-BF16) for an fp32 run above ``BF16_NOTE_MIN`` images.
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

from cliplab.io import hash_json, write_json_atomic
from cliplab.progress import note

VERSION = 1
TINY_IMAGES = 128  # fewer images: PyTorch, nothing measured or converted
CALIBRATE_MIN = 500  # fewer images and no calibration yet: PyTorch (measuring and converting would not pay)
BF16_NOTE_MIN = 300  # an fp32 run of at least this many images on a CPU with bf16 units hears about --precision bf16
MEASURE_SECONDS = 0.6  # each backend runs full batches until this much time has passed (at least one, at most 3)
# The flags that decide which kernels PyTorch (oneDNN) and OpenVINO run; recorded with every calibration and
# benchmark result.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16",
             "amx_int8")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# bf16 against fp32, as measured by benchmarks/openvino_towers.py (docs/benchmarks.md, "The towers on the CPU").
BF16_AGREEMENT = ("agreement with fp32 in docs/benchmarks.md: min cosine 1 - 1e-4 or closer, top-1 of random "
                  "images against texts unchanged on ViT-B-32, RN50 and ConvNeXt-Base, 1 of 16 changed on ViT-B-16")


def cpu_info() -> dict[str, Any]:
    """The CPU's model name (``/proc/cpuinfo``'s "model name", else ``lscpu``'s, else ``platform.processor()``), the
    kernel-relevant flags it has (:data:`CPU_FLAGS`) and the cores this process may use."""
    text = ""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        pass
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)
    model = name.group(1).strip() if name else _lscpu_model() or platform.processor() or platform.machine()
    have = set(flags.group(1).split()) if flags else set()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in have], "cores": cores}


def _lscpu_model() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else None


def calibration_key(loaded, batch_size: int, precision: str) -> dict[str, Any]:
    """What a calibration holds for: this CPU, threads, model weights, batch size, precision, runtime versions."""
    import torch

    from cliplab.models.backends import openvino

    cpu = cpu_info()
    return {"version": VERSION, "cpu": cpu["model"], "flags": cpu["flags"], "threads": torch.get_num_threads(),
            "weights": loaded.weights_fingerprint, "model": loaded.name, "batch_size": int(batch_size),
            "precision": precision, "torch": torch.__version__.split("+")[0], "openvino": openvino.version()}


def calibration_path(cache_dir: Path, key: dict) -> Path:
    return Path(cache_dir) / "calibration" / f"backends-{hash_json(key)[:24]}.json"


def _rates(encoders: dict[str, Any], pixels) -> dict[str, float]:
    """Images per second of each ``encoders[name](pixels)``: a warm-up on two images each, then full batches taken in
    turn (one of each per round, so all see the same load from other processes) until :data:`MEASURE_SECONDS` per
    encoder have passed (at least one round, at most three); the fastest batch of each counts."""
    for encode in encoders.values():
        encode(pixels[:2])
    best = {name: float("inf") for name in encoders}
    spent, rounds = 0.0, 0
    while rounds < 3 and (rounds == 0 or spent < MEASURE_SECONDS * len(encoders)):
        for name, encode in encoders.items():
            t0 = time.perf_counter()
            encode(pixels)
            dt = time.perf_counter() - t0
            best[name], spent = min(best[name], dt), spent + dt
        rounds += 1
    return {name: len(pixels) / seconds for name, seconds in best.items()}


def measure(loaded, batch_size: int, precision: str, cache_dir: Path, *, backends: tuple[str, ...] = ("torch",),
            bf16: bool = False) -> dict[str, Any]:
    """Images per second of ``loaded``'s image tower on each of ``backends`` at ``batch_size`` (random pixels,
    seeded; batches of the backends taken in turn). For OpenVINO also the seconds it took to convert the tower (when
    it was not in the cache) and to load the converted tower from the cache; with ``bf16``, OpenVINO's bf16 rate too.
    The OpenVINO runtime is left in ``record["runtime"]`` for the run to use."""
    import torch

    from cliplab.models.backends.openvino import OpenVINOTowers, _cached
    from cliplab.models.backends.pytorch import TorchRuntime

    h, w = loaded.image_size
    pixels = torch.randn(batch_size, 3, h, w, generator=torch.Generator().manual_seed(0))
    out: dict[str, Any] = {}
    encoders: dict[str, Any] = {}
    towers = None
    if "openvino" in backends:
        towers = OpenVINOTowers(loaded, cache_dir, precision)
        if not _cached(towers._path("image")):
            t0 = time.perf_counter()
            if towers.image is None:  # OpenVINO could not convert it (the warning said why): PyTorch it is
                out["openvino_images_per_second"] = None
                towers = None
            else:
                out["convert_seconds"] = time.perf_counter() - t0  # trace, convert, save, compile, check
                towers = OpenVINOTowers(loaded, cache_dir, precision)
        if towers is not None:
            t0 = time.perf_counter()
            if towers.image is None:  # a cached tower that failed its checks was moved aside and converted again
                out["openvino_images_per_second"] = None
                towers = None
            else:
                out["load_seconds"] = time.perf_counter() - t0  # read, compile, check: what every later run pays
    if "torch" in backends:
        torch_rt = TorchRuntime()
        encoders["torch"] = lambda p: torch_rt.encode_images(loaded, p)
    if towers is not None:
        encoders["openvino"] = lambda p: towers.encode_images(loaded, p)
        if bf16:
            fast = OpenVINOTowers(loaded, cache_dir, "bf16")
            if fast.image is not None:
                encoders["openvino_bf16"] = lambda p: fast.encode_images(loaded, p)
    nhwc = "torch" in encoders and loaded.conv_tower  # as the PyTorch backend runs a convolutional tower
    if nhwc:
        loaded.model.visual.to(memory_format=torch.channels_last)
        loaded.channels_last = True
    try:
        rates = _rates(encoders, pixels) if encoders else {}
    finally:
        if nhwc:
            loaded.model.visual.to(memory_format=torch.contiguous_format)
            loaded.channels_last = False
    out.update({f"{name}_images_per_second": rate for name, rate in rates.items()})
    if towers is not None:
        out["runtime"] = towers
    return out


def _read(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "torch_images_per_second" in record else None


def has_bf16(cpu: dict | None = None) -> bool:
    return any(f in (cpu or cpu_info())["flags"] for f in BF16_FLAGS)


# OpenVINO fp32 over PyTorch eager, at most, in every measurement so far (1.01x on an Intel Xeon with AMX, up to
# 2.29x on AMD Zen: docs/benchmarks.md), with room: before OpenVINO is measured on a model (which converts its
# tower), the images must be able to save more than the conversion would cost at this gain.
OPENVINO_GAIN_BOUND = 3.0
# OpenVINO is chosen only when it finishes the run at least this much sooner than PyTorch: two measurements of the same
# tower on a shared machine differ by several per cent (tiny-shapes measured 1.07x and 2.03x on one CPU), and a
# choice that flips with that noise would key the same run's embeddings differently from one cache to the next.
MIN_GAIN = 1.1
CONVERT_SECONDS_GUESS = 3.0  # the conversion, before one was measured on this CPU (ViT-B-32: 3 s on Zen 5, 7.5 on Xeon)


def convert_guess(cache_dir: Path, cpu: str) -> float:
    """Seconds a conversion is expected to take: the longest measured on this CPU (any model), else a guess."""
    seen = []
    for path in (Path(cache_dir) / "calibration").glob("backends-*.json"):
        record = _read(path)
        if record and record.get("cpu") == cpu and record.get("convert_seconds"):
            seen.append(float(record["convert_seconds"]))
    return max(seen) if seen else CONVERT_SECONDS_GUESS


def worth_measuring(record: dict, images: int | None, convert_seconds: float) -> bool:
    """Whether measuring OpenVINO (which converts the tower) can pay for a run of ``images`` images (None: unknown,
    assumed to): at :data:`OPENVINO_GAIN_BOUND` they would save more than ``convert_seconds``."""
    if images is None:
        return True
    t = record.get("torch_images_per_second") or 0
    return t > 0 and images / t * (1 - 1 / OPENVINO_GAIN_BOUND) > convert_seconds


def _report(loaded, record: dict, path: Path, kept: str) -> None:
    t, o = record["torch_images_per_second"], record.get("openvino_images_per_second")
    if "openvino_images_per_second" not in record:
        ov = "OpenVINO not measured (too few images to pay for converting the tower)"
    elif o:
        conv = record.get("convert_seconds")
        ov = f"OpenVINO {o:.1f} img/s ({o / t:.2f}x)" + (f", converting the tower took {conv:.1f} s" if conv else "")
    else:
        ov = "OpenVINO could not convert the image tower"
    threads = f"{record['threads']} thread" + ("s" if record["threads"] != 1 else "")
    note(f"{{p:backend}} auto: measured {loaded.name}'s image tower at batch {record['batch_size']} "
         f"({record['precision']}) on {record['cpu']}, {threads}: PyTorch {t:.1f} img/s, {ov} "
         f"({kept}; delete it to measure again)", once=True)


def calibrate(loaded, batch_size: int, precision: str, cache_dir: Path, images: int | None) -> dict[str, Any]:
    """The calibration for this CPU, model, batch size and precision: the cached one, completed with OpenVINO's
    figures when this run is the first large enough to pay for converting the tower; else measured now. A new or
    completed one is written (atomically) and reported in a note. ``record["runtime"]``: the OpenVINO runtime
    measured, when one was."""
    key = calibration_key(loaded, batch_size, precision)
    path = calibration_path(cache_dir, key)
    record = _read(path)
    changed = record is None
    if record is None:
        record = {**key, **measure(loaded, batch_size, precision, cache_dir, backends=("torch",))}
    runtime = None
    if "openvino_images_per_second" not in record and worth_measuring(record, images,
                                                                       convert_guess(cache_dir, key["cpu"])):
        measured = measure(loaded, batch_size, precision, cache_dir, backends=("torch", "openvino"),
                           bf16=precision == "fp32" and has_bf16())
        runtime = measured.pop("runtime", None)
        record.update(measured)
        changed = True
    if changed:
        record["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            write_json_atomic(path, record)
            kept = f"kept in {path}"
        except OSError as exc:
            kept = f"not kept: {exc.strerror or exc}"
        _report(loaded, record, path, kept)
    return {**record, "runtime": runtime}


def choose(record: dict | None, images: int | None, tower_cached: bool) -> str:
    """``torch`` or ``openvino`` for a run of ``images`` images (None: not known, e.g. a model loaded on its own:
    by rate) from a calibration ``record``: OpenVINO only when it embeds them at least :data:`MIN_GAIN` times sooner,
conversion included; ``tower_cached``: OpenVINO's converted image tower is in the cache (else
    choosing OpenVINO pays for converting it: the time the calibration measured)."""
    if record is None or images is not None and images < TINY_IMAGES:
        return "torch"
    t, o = record.get("torch_images_per_second"), record.get("openvino_images_per_second")
    if not t or not o:
        return "torch"
    fixed = record.get("load_seconds") or 0.0
    if not tower_cached:
        fixed = (record.get("convert_seconds") or 0.0) + fixed
    if images is None:
        return "openvino" if o >= MIN_GAIN * t else "torch"
    return "openvino" if MIN_GAIN * (images / o + fixed) <= images / t else "torch"


def auto_backend(loaded, batch_size: int | None, precision: str, cache_dir: Path,
                 images: int | None) -> tuple[str, Any]:
    """The backend ``auto`` runs ``loaded`` with on the CPU, and the OpenVINO runtime measured on the way (None when
    nothing was measured or PyTorch is chosen). ``images``: how many images the run reads (None: unknown)."""
    from cliplab.models.backends.openvino import _cached, cache_path

    batch_size = batch_size or 64
    if images is not None and images < TINY_IMAGES:
        return "torch", None
    if images is not None and images < CALIBRATE_MIN and \
            _read(calibration_path(cache_dir, calibration_key(loaded, batch_size, precision))) is None:
        return "torch", None
    record = calibrate(loaded, batch_size, precision, cache_dir, images)
    runtime = record.pop("runtime", None)
    h, w = loaded.image_size
    cached = _cached(cache_path(cache_dir, loaded.weights_fingerprint, "image", (3, h, w)))
    choice = choose(record, images, cached)
    return choice, runtime if choice == "openvino" else None


_BF16_SAID: set[str] = set()


def bf16_note(loaded, precision: str, images: int | None, cache_dir: Path, batch_size: int | None) -> None:
    """Once per process: on a CPU with bf16 units, an fp32 run of at least :data:`BF16_NOTE_MIN` images hears that
    ``--precision bf16`` is faster (the measured factor from the calibration when there is one, else the benchmark),
    and how closely it agrees with fp32. Opt-in stays opt-in."""
    if precision != "fp32" or images is None or images < BF16_NOTE_MIN or loaded.device.type != "cpu":
        return
    cpu = cpu_info()
    units = [f for f in BF16_FLAGS if f in cpu["flags"]]
    if not units or cpu["model"] in _BF16_SAID:
        return
    from cliplab.models.backends import openvino

    if not openvino.available():
        return
    record = _read(calibration_path(cache_dir, calibration_key(loaded, batch_size or 64, precision)))
    if record is not None and "openvino_images_per_second" not in record:
        return  # too few images here to pay for converting the tower, which bf16 needs as well
    fast = record.get("openvino_bf16_images_per_second") if record else None
    base = max(record.get("torch_images_per_second") or 0, record.get("openvino_images_per_second") or 0) \
        if record else 0
    if fast and base and fast < 1.1 * base:  # measured, and not faster here: nothing to say
        return
    speed = (f"{fast / base:.1f}x faster than fp32 here ({fast:.1f} vs {base:.1f} img/s, measured)" if fast and base
             else "faster (see docs/benchmarks.md: 3.4-4.3x on AVX-512 BF16 / AMX machines)")
    _BF16_SAID.add(cpu["model"])
    note(f"this CPU has {' and '.join(units)}: {{p:precision}} bf16 (OpenVINO) is {speed}; {BF16_AGREEMENT}. fp32 "
         "stays the reference and the default", once=True)
