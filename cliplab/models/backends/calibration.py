"""``--backend auto`` on the CPU, chosen by measurement, with the measurement's own cost counted before it is paid.

**What is measured.** Both backends run the model's own image tower on a few random images (:data:`SAMPLE` per call,
after a one-image warm-up; the fastest of two or three calls counts: a ViT-B-32 runs at the same images/s on 4 images
as on 64 on the CPU, and each call costs about half a second on 2 cores instead of four). PyTorch first (about a
second); OpenVINO only when it can pay (below), which converts the image tower (cached, then used by the run: the
conversion is not repeated and its compiled model is not reloaded) and times it in turn with PyTorch again (the
ratio of calls taken minutes apart on a shared machine moves by more than the gains this decides on). The images per
second and the conversion's seconds are kept in the cache folder, keyed by the CPU (its model name and the flags that
change which kernels run), the threads, the model's weights, the sample size, the precision and the versions of both
runtimes, and reported once, in a note, when they are taken. bf16 is measured as well only when its conversion costs
under :data:`BF16_SHARE` of the run (else the bf16 note quotes docs/benchmarks.md).

**When OpenVINO is measured** (which costs the conversion, a few seconds: 3 s on Zen 5, 4-5 s on Zen 4, 7.5 s on an
Intel Xeon with AMX for a ViT-B-32). The run's images at PyTorch's measured rate give its time on PyTorch; the
measurement's cost is the conversion (the longest measured on this CPU, else the figure recorded for its family,
else :data:`CONVERT_SECONDS_GUESS`) plus OpenVINO's timing calls. On a CPU family with recorded figures
(:data:`RECORDED`: the fp32 gain of OpenVINO over PyTorch on the image towers in docs/benchmarks.md, raised by the
best gain measured on this CPU in this cache), OpenVINO is measured when the run would save more than the cost at
that gain, beyond the :data:`MIN_GAIN` margin the choice asks of OpenVINO: on a Xeon with AMX (1.01x) that never
happens, on Zen 4 (1.25x) it does from about a thousand ViT-B-32 images, on Zen 5 (2.3x) from a few hundred. On a
CPU without recorded figures it is measured when the cost is at most :data:`REGRET_SHARE` of the run on PyTorch (so
a calibration that finds no gain costs the run at most that). Until then the calibration holds PyTorch's rate alone
and the run uses PyTorch.

**The choice for a run:** PyTorch for a few images (:data:`TINY_IMAGES`: nothing measured, nothing converted);
without a calibration, PyTorch below :data:`CALIBRATE_MIN` images; otherwise the backend that embeds the run's images
sooner by at least :data:`MIN_GAIN` (a smaller gain is within the noise of two measurements, and a backend flipping
with it would key the run's embeddings differently each time), counting OpenVINO's conversion when the converted tower
is not in the cache and its load from the cache when it is. The run's image count is the number of images it reads
(an upper bound of those still to embed: the embedding cache is keyed by the backend, so it can only be looked up
once the backend is chosen). The choice depends only on the calibration, whether the converted tower is cached and
that count, so a rerun makes the same choice and finds its embeddings (unless a larger run has completed the
calibration in between).

The same module says, once per process, when ``--precision bf16`` would be faster on this CPU (AMX-BF16 or
AVX512-BF16) for an fp32 run above :data:`BF16_NOTE_MIN` images.
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

VERSION = 2  # 2: timed on SAMPLE images (1: on a full batch), keyed by the sample size, costs counted
TINY_IMAGES = 128  # fewer images: PyTorch, nothing measured or converted
CALIBRATE_MIN = 500  # fewer images and no calibration yet: PyTorch (measuring and converting would not pay)
BF16_NOTE_MIN = 300  # an fp32 run of at least this many images on a CPU with bf16 units hears about --precision bf16
SAMPLE = 8  # images per timed call (fewer when the run's batches are smaller)
MEASURE_SECONDS = 0.6  # timed calls per backend: two, and a third while less than this much time has passed
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
    kernel-relevant flags it has (:data:`CPU_FLAGS`), its vendor and family (``/proc/cpuinfo``; None elsewhere) and
    the cores this process may use."""
    text = ""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        pass
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)
    model = name.group(1).strip() if name else _lscpu_model() or platform.processor() or platform.machine()
    have = set(flags.group(1).split()) if flags else set()
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.M)
    family = re.search(r"^cpu family\s*:\s*(\d+)", text, re.M)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in have], "cores": cores,
            "vendor": vendor.group(1) if vendor else None, "family": int(family.group(1)) if family else None}


def _lscpu_model() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else None


def sample_size(batch_size: int | None) -> int:
    """Images per timed call: :data:`SAMPLE`, or the run's batch size when that is smaller."""
    return max(1, min(int(batch_size or SAMPLE), SAMPLE))


def calibration_key(loaded, batch_size: int, precision: str) -> dict[str, Any]:
    """What a calibration holds for: this CPU, threads, model weights, images per timed call (the run's batch size
    up to :data:`SAMPLE`), precision, runtime versions."""
    import torch

    from cliplab.models.backends import openvino

    cpu = cpu_info()
    return {"version": VERSION, "cpu": cpu["model"], "flags": cpu["flags"], "threads": torch.get_num_threads(),
            "weights": loaded.weights_fingerprint, "model": loaded.name, "sample": sample_size(batch_size),
            "precision": precision, "torch": torch.__version__.split("+")[0], "openvino": openvino.version()}


def calibration_path(cache_dir: Path, key: dict) -> Path:
    return Path(cache_dir) / "calibration" / f"backends-{hash_json(key)[:24]}.json"


def _rates(encoders: dict[str, Any], pixels) -> dict[str, float]:
    """Images per second of each ``encoders[name](pixels)``: a warm-up on one image each, then calls taken in turn
    (one of each per round, so all see the same load from other processes): two rounds, and a third while less than
    :data:`MEASURE_SECONDS` per encoder have passed; the fastest call of each counts."""
    for encode in encoders.values():
        encode(pixels[:1])
    best = {name: float("inf") for name in encoders}
    spent, rounds = 0.0, 0
    while rounds < 3 and (rounds < 2 or spent < MEASURE_SECONDS * len(encoders)):
        for name, encode in encoders.items():
            t0 = time.perf_counter()
            encode(pixels)
            dt = time.perf_counter() - t0
            best[name], spent = min(best[name], dt), spent + dt
        rounds += 1
    return {name: len(pixels) / seconds for name, seconds in best.items()}


def measure(loaded, sample: int, precision: str, cache_dir: Path, *, backends: tuple[str, ...] = ("torch",),
            bf16: bool = False) -> dict[str, Any]:
    """Images per second of ``loaded``'s image tower on each of ``backends``, timed on ``sample`` random images
    (seeded) per call (:func:`_rates`). For OpenVINO also the seconds it took to convert the tower (when it was not in
    the cache; the converted tower is then timed and handed over as it is, not read back) or to load it from the
    cache; with ``bf16``, OpenVINO's bf16 rate too. The OpenVINO runtime is left in ``record["runtime"]`` for the run
    to use."""
    import torch

    from cliplab.models.backends.openvino import OpenVINOTowers
    from cliplab.models.backends.pytorch import TorchRuntime

    h, w = loaded.image_size
    pixels = torch.randn(sample, 3, h, w, generator=torch.Generator().manual_seed(0))
    out: dict[str, Any] = {}
    encoders: dict[str, Any] = {}
    towers = None
    if "openvino" in backends:
        towers = OpenVINOTowers(loaded, cache_dir, precision)
        t0 = time.perf_counter()
        if towers.image is None:  # OpenVINO could not convert it (the warning said why): PyTorch it is
            out["openvino_images_per_second"] = None
            towers = None
        else:  # trace, convert, save, compile, check; or read, compile, check: what every later run pays
            out["convert_seconds" if "image" in towers.converted else "load_seconds"] = time.perf_counter() - t0
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


# OpenVINO fp32 over PyTorch eager on the image towers, and the seconds converting a ViT-B-32's image tower took, per
# CPU family, as recorded in docs/benchmarks.md ("The towers on the CPU" and the calibrations quoted there). Used only
# to decide whether measuring OpenVINO can pay for a run; the measurement decides the backend.
RECORDED = {
    "AMD Zen 5": {"gain": 2.29, "convert_seconds": 3.0},  # ViT-B-32 2.23, RN50 1.73, ConvNeXt-B 2.07, ViT-B-16 2.29
    # ViT-B-32, 2 cores shared with other jobs: 1.30 and 1.41 in two calibrations at batch 64; 1.15-1.59 (median
    # 1.25) in eight interleaved measurements at 8-64 images; 1.86 in the towers table, under heavy contention
    "AMD Zen 4": {"gain": 1.25, "convert_seconds": 4.9},
    "Intel Xeon with AMX": {"gain": 1.01, "convert_seconds": 7.5},  # ViT-B-32, issue 23
}
# On a CPU of no recorded family: the most of the run on PyTorch that measuring OpenVINO may cost (all of it lost
# when OpenVINO is no faster).
REGRET_SHARE = 0.05
# bf16 over fp32 on the image towers where the CPU has bf16 units, the least recorded (docs/benchmarks.md: 3.4-4.3x on
# AVX512-BF16 and AMX machines): whether a run's images would repay converting its tower to bf16, for the note
BF16_GAIN = 3.4
BF16_SHARE = 0.02  # bf16 is measured too (its own conversion) only when that costs at most this share of the run
# OpenVINO is chosen only when it finishes the run at least this much sooner than PyTorch: two measurements of the same
# tower on a shared machine differ by several per cent (tiny-shapes measured 1.07x and 2.03x on one CPU), and a
# choice that flips with that noise would key the same run's embeddings differently from one cache to the next.
MIN_GAIN = 1.1
CONVERT_SECONDS_GUESS = 5.0  # a conversion on a CPU of no recorded family before one was measured on it
LOAD_SECONDS_GUESS = 1.0  # reading a converted tower back, compiling and checking it, before it was measured


def cpu_family(cpu: dict) -> str | None:
    """The key of :data:`RECORDED` this CPU belongs to (vendor, family and flags from ``/proc/cpuinfo``), or None."""
    vendor, family, flags = cpu.get("vendor"), cpu.get("family"), set(cpu.get("flags") or ())
    if vendor == "GenuineIntel" and "amx_bf16" in flags:
        return "Intel Xeon with AMX"
    if vendor == "AuthenticAMD" and family == 26:
        return "AMD Zen 5"
    if vendor == "AuthenticAMD" and family == 25 and "avx512f" in flags:  # Zen 3 (also family 25) has no AVX-512
        return "AMD Zen 4"
    return None


def _records(cache_dir: Path, cpu: str):
    for path in (Path(cache_dir) / "calibration").glob("backends-*.json"):
        record = _read(path)
        if record and record.get("cpu") == cpu:
            yield record


def convert_guess(cache_dir: Path, cpu: dict) -> float:
    """Seconds a conversion is expected to take: the longest measured on this CPU (any model), else the figure
    recorded for its family, else :data:`CONVERT_SECONDS_GUESS`."""
    seen = [float(r["convert_seconds"]) for r in _records(cache_dir, cpu["model"]) if r.get("convert_seconds")]
    known = RECORDED.get(cpu_family(cpu) or "", {}).get("convert_seconds")
    return max(seen) if seen else known or CONVERT_SECONDS_GUESS


def expected_gain(cache_dir: Path, cpu: dict) -> float | None:
    """OpenVINO's fp32 gain expected on this CPU: its family's recorded figure, raised by any larger gain measured on
    this CPU in this cache; None for a CPU of no recorded family."""
    known = RECORDED.get(cpu_family(cpu) or "", {}).get("gain")
    if known is None:
        return None
    seen = [r["openvino_images_per_second"] / r["torch_images_per_second"] for r in _records(cache_dir, cpu["model"])
            if r.get("openvino_images_per_second") and r.get("torch_images_per_second")]
    return max([known, *seen])


def measuring_cost(record: dict, cache_dir: Path, cpu: dict) -> float:
    """Seconds measuring OpenVINO is expected to cost a run: converting the tower, and the timing calls of both
    backends, in turn (a warm-up image and up to three calls of the sample each, at PyTorch's rate: OpenVINO no faster
    is the worst case)."""
    t = record.get("torch_images_per_second") or 0
    timing = 2 * (1 + 3 * record["sample"]) / t if t > 0 else 0.0
    return convert_guess(cache_dir, cpu) + timing


def worth_measuring(record: dict, images: int | None, cost: float, gain: float | None) -> bool:
    """Whether measuring OpenVINO (which converts the tower, ``cost`` seconds in all) can pay for a run of
    ``images`` images (None: unknown, assumed to). ``gain``: OpenVINO's gain expected on this CPU (its family's
    recorded figure): the run would save more than the cost at that gain beyond the :data:`MIN_GAIN` margin
    :func:`choose` asks of OpenVINO (a gain within the margin is never taken, so it cannot repay the measurement).
    None (no figures for this CPU): the cost is at most :data:`REGRET_SHARE` of the run on PyTorch."""
    if images is None:
        return True
    t = record.get("torch_images_per_second") or 0
    if t <= 0:
        return False
    run = images / t
    if gain is not None:
        return run * (1 - MIN_GAIN / gain) > cost
    return cost <= REGRET_SHARE * run


def _report(loaded, record: dict, path: Path, kept: str, seconds: float) -> None:
    t, o = record["torch_images_per_second"], record.get("openvino_images_per_second")
    if "openvino_images_per_second" not in record:
        ov = "OpenVINO not measured (too few images to pay for converting the tower)"
    elif o:
        conv = record.get("convert_seconds")
        ov = f"OpenVINO {o:.1f} img/s ({o / t:.2f}x)" + (f", converting the tower took {conv:.1f} s" if conv else "")
    else:
        ov = "OpenVINO could not convert the image tower"
    threads = f"{record['threads']} thread" + ("s" if record["threads"] != 1 else "")
    note(f"{{p:backend}} auto: measured {loaded.name}'s image tower on {record['sample']} images "
         f"({record['precision']}) on {record['cpu']}, {threads}: PyTorch {t:.1f} img/s, {ov}; measuring took "
         f"{seconds:.1f} s ({kept}; delete it to measure again)", once=True)


def calibrate(loaded, batch_size: int, precision: str, cache_dir: Path, images: int | None) -> dict[str, Any]:
    """The calibration for this CPU, model, sample size and precision: the cached one, completed with OpenVINO's
    figures when this run is the first that can pay for measuring them (:func:`worth_measuring`); else PyTorch
    measured now, and OpenVINO too when the run can pay. A new or completed one is written (atomically) and reported
    in a note. ``record["runtime"]``: the OpenVINO runtime measured, when one was."""
    key = calibration_key(loaded, batch_size, precision)
    path = calibration_path(cache_dir, key)
    record = _read(path)
    changed = record is None
    t0 = time.perf_counter()
    if record is None:
        record = {**key, **measure(loaded, key["sample"], precision, cache_dir, backends=("torch",))}
    runtime = None
    if "openvino_images_per_second" not in record:
        cpu = cpu_info()
        cost = measuring_cost(record, cache_dir, cpu)
        if worth_measuring(record, images, cost, expected_gain(cache_dir, cpu)):
            run = images / record["torch_images_per_second"] if images else 0.0
            bf16 = precision == "fp32" and has_bf16(cpu) and cost <= BF16_SHARE * run
            # PyTorch timed again, in turn with OpenVINO: calls taken minutes apart on a shared machine differ by
            # more than the gain this decides on
            measured = measure(loaded, key["sample"], precision, cache_dir, backends=("torch", "openvino"), bf16=bf16)
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
        _report(loaded, record, path, kept, time.perf_counter() - t0)
    return {**record, "runtime": runtime}


def choose(record: dict | None, images: int | None, tower_cached: bool) -> str:
    """``torch`` or ``openvino`` for a run of ``images`` images (None: not known, e.g. a model loaded on its own:
    by rate) from a calibration ``record``: OpenVINO only when it embeds them at least :data:`MIN_GAIN` times sooner,
    its fixed cost included: loading its tower from the cache when ``tower_cached`` (or in hand: the run that
    converted it decides as its reruns will), else converting it (the time the calibration measured)."""
    if record is None or images is not None and images < TINY_IMAGES:
        return "torch"
    t, o = record.get("torch_images_per_second"), record.get("openvino_images_per_second")
    if not t or not o:
        return "torch"
    if tower_cached:
        fixed = record.get("load_seconds") or LOAD_SECONDS_GUESS
    else:
        fixed = (record.get("convert_seconds") or CONVERT_SECONDS_GUESS) + (record.get("load_seconds") or 0.0)
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
    cached = runtime is not None or _cached(cache_path(cache_dir, loaded.weights_fingerprint, "image", (3, h, w)))
    choice = choose(record, images, cached)
    return choice, runtime if choice == "openvino" else None


_BF16_SAID: set[str] = set()


def bf16_note(loaded, precision: str, images: int | None, cache_dir: Path, batch_size: int | None) -> None:
    """Once per process: on a CPU with bf16 units, an fp32 run of at least :data:`BF16_NOTE_MIN` images, which at
    :data:`BF16_GAIN` would save more than converting its tower costs (from PyTorch's calibrated rate, when there is
    one), hears that ``--precision bf16`` is faster (the measured factor from the calibration when there is one, else
    the benchmark), and how closely it agrees with fp32. Opt-in stays opt-in."""
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
    t = record.get("torch_images_per_second") if record else None
    if t and images / t * (1 - 1 / BF16_GAIN) <= convert_guess(cache_dir, cpu):
        return  # too few images here to pay for converting the tower to bf16
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
