"""How much embedding work a kill -9 loses: shards flushed by count only vs by count or time.

A `cliplab embed` process (random-init open_clip model, no download) is started on generated JPEGs, its cache
shards are watched, and it is SIGKILLed after --kill-after seconds. Work lost = seconds since the last shard
write at the moment of the kill (or since the first batch started when nothing was written), converted to images
with the throughput the shards record. Pass --code DIR to run another checkout (e.g. the code before the time
flush) for comparison.

    OMP_NUM_THREADS=1 python benchmarks/flush_loss.py --kill-after 150
    OMP_NUM_THREADS=1 python benchmarks/flush_loss.py --kill-after 150 --code /tmp/old-checkout
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, make_jpegs, save

REPO = Path(__file__).resolve().parents[1]


def run(code: Path, images: Path, cache: Path, model: str, batch: int, kill_after: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "CLIPLAB_OFFLINE": "1"}
    args = [sys.executable, "-m", "cliplab.cli", "embed", "--model", model, "--dataset", str(images), "--cache-dir",
            str(cache), "--batch-size", str(batch), "--workers", "0", "--quiet"]
    t0 = time.monotonic()
    proc = subprocess.Popen(args, env=env)
    writes: dict[str, float] = {}
    started = None  # the file-hash memo is written when the keys are known, i.e. just before the first batch
    while time.monotonic() - t0 < kill_after and proc.poll() is None:
        now = time.monotonic()
        if started is None and (cache / "file-hashes.sqlite").exists():
            started = now
        for p in cache.glob("embeddings/*/*/shard-*.npz"):
            writes.setdefault(p.name, now)
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t_kill = time.monotonic()
    shards = sorted(cache.glob("embeddings/*/*/shard-*.npz"))
    rows, secs = 0, 0.0
    for p in shards:
        with np.load(p) as z:
            rows += len(z["keys"])
            secs += float(z["seconds"])
    times = sorted(writes.values())
    last = times[-1] if times else (started or t0)
    gaps = np.diff([started or t0] + times) if times else np.array([])
    return {"code": str(code), "shards": len(shards), "images_cached": rows,
            "images_per_second": rows / secs if secs else float("nan"),
            "seconds_between_writes": [round(float(g), 1) for g in gaps],
            "seconds_lost": round(t_kill - last, 1),
            "images_lost_est": round((t_kill - last) * (rows / secs), 0) if secs else None,
            "embedding_seconds_before_kill": round(t_kill - (started or t0), 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", type=Path, default=REPO)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--kill-after", type=float, default=150.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_jpegs(tmp / "imgs", a.images, size=(320, 240))
        res = run(a.code, tmp / "imgs", tmp / "cache", a.model, a.batch_size, a.kill_after)
    res.update(model=a.model, batch_size=a.batch_size, kill_after=a.kill_after, machine=machine())
    print(res)
    tag = "head" if a.code == REPO else Path(a.code).name
    print("wrote", save(f"flush_loss-{tag}", res))


if __name__ == "__main__":
    main()
