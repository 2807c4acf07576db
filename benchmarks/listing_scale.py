"""What a warm rerun over a folder of a million files costs: time and memory per file.

    python benchmarks/listing_scale.py --n 1000000 [--keep /tmp/cliplab-listing] [--docs listing-scale]

A folder of N tiny distinct images (8x8 PPM, 100 class folders) is generated; its embedding cache is filled as a cold
run would leave it (every file's real content key, from the real file-hash memo, in shards of 1,024 rows written by
``EmbeddingCache.write``; the vectors are random: nothing of a warm rerun reads them but the lookup) for a random
model of the tiny-shapes architecture with a 16-d embedding (so the result matrix, which a warm run must return, is
small: N x 16 x 4 bytes). Then, in a fresh process each (best of ``--repeats``), ``open_dataset`` + ``embed_images``
run warm, and the parts are timed: listing the folder, the content keys (the file-hash memo: a stat per file), the
cache lookup and the rest. Memory: the process's peak RSS growth over the warm rerun (the kernel's high-water mark
reset just before it), with and without the result matrix.

Assumptions when extrapolating to 10M files: the per-file cost stays linear (it does between 100k and 1M here, see
the table), the files' metadata is in the kernel's cache (a warm rerun just after another; on network storage each
stat costs a round trip), and the cache folder holds shards of ~1,000 rows.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_label, machine, markdown_table, save, write_docs_region

CLASSES = 100
DIM = 16
SHARD = 1024


def make_files(folder: Path, n: int) -> None:
    """n distinct 8x8 PPM images in CLASSES class folders (the image index in the first pixels)."""
    header = b"P6\n8 8\n255\n"
    for c in range(CLASSES):
        (folder / f"class{c:03d}").mkdir(parents=True, exist_ok=True)
    pad = bytes(192 - 8)
    for i in range(n):
        with open(folder / f"class{i % CLASSES:03d}" / f"img{i:08d}.ppm", "wb") as fh:
            fh.write(header + i.to_bytes(8, "little") + pad)


def model_files(tmp: Path) -> tuple[Path, Path]:
    import open_clip
    import torch

    from cliplab.train import TINY_CONFIG

    cfg = {**TINY_CONFIG, "embed_dim": DIM}
    (tmp / "tiny16.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    torch.save({"state_dict": open_clip.CLIP(**cfg).state_dict()}, tmp / "tiny16.pt")
    return tmp / "tiny16.json", tmp / "tiny16.pt"


def fill_cache(folder: Path, cache: Path, cfg: Path, ckpt: Path) -> float:
    """The cache a cold run leaves: the memo of every file's hash and shards of (key, random vector)."""
    import numpy as np

    from cliplab.data import open_dataset
    from cliplab.data.filehash import MEMO_NAME, file_hash_memo
    from cliplab.embed.cache import EmbeddingCache
    from cliplab.embed.descriptors import DescriptorSpec
    from cliplab.embed.engine import _use_tensor_pipeline
    from cliplab.inputs import RunOptions
    from cliplab.models import open_model

    t0 = time.perf_counter()
    model = open_model(str(cfg), str(ckpt), device="cpu", cache_dir=cache, backend="torch")
    ds = open_dataset(str(folder))
    with file_hash_memo(cache / MEMO_NAME):
        keys = ds.source.keys()
    kind = DescriptorSpec().cache_kind() + ("+tensor" if _use_tensor_pipeline(RunOptions().pipeline, model) else "")
    store = EmbeddingCache(cache, model.fingerprint, kind)
    rng = np.random.default_rng(0)
    for lo in range(0, len(keys), SHARD):
        part = keys[lo:lo + SHARD]
        store.write(part, rng.standard_normal((len(part), DIM), dtype=np.float32), {}, 1.0)
    return time.perf_counter() - t0


WARM = r"""
import json, os, sys, time
from pathlib import Path
folder, cache, cfg, ckpt = map(Path, sys.argv[1:5])
from cliplab.models import open_model
from cliplab.data import open_dataset
from cliplab.data.sources import FileSource
from cliplab.embed import embed_images
from cliplab.embed.cache import EmbeddingCache
model = open_model(str(cfg), str(ckpt), device="cpu", cache_dir=cache, backend="torch")
parts = {"keys": 0.0, "lookup": 0.0}
def timed(name, fn):
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            parts[name] += time.perf_counter() - t0
    return wrapper
FileSource.keys = timed("keys", FileSource.keys)
name = "lookup_rows" if hasattr(EmbeddingCache, "lookup_rows") else "lookup"  # an older checkout: lookup
setattr(EmbeddingCache, name, timed("lookup", getattr(EmbeddingCache, name)))
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
before = rss("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # resets the peak RSS (VmHWM) to the current RSS
t0 = time.perf_counter()
ds = open_dataset(str(folder))
t1 = time.perf_counter()
res = embed_images(model, ds, cache)
t2 = time.perf_counter()
assert res.computed == 0 and len(res.embeddings) == len(ds), (res.computed, len(res.embeddings), len(ds))
print(json.dumps({"list": t1 - t0, "embed_images": t2 - t1, "total": t2 - t0, **parts,
                  "peak_growth": rss("VmHWM:") - before, "result_bytes": res.embeddings.nbytes + res.indices.nbytes,
                  "n": len(ds)}))
"""


def warm(folder: Path, cache: Path, cfg: Path, ckpt: Path, code: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)} if code else None
    out = subprocess.run([sys.executable, "-c", WARM, str(folder), str(cache), str(cfg), str(ckpt)], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(payload: dict) -> str:
    """The docs table of a results file."""
    rows, info, args = payload["rows"], payload["machine"], payload["args"]
    table = [{"files": f"{r['n']:,}", "cliplab": r["code"], "warm rerun (s)": f"{r['total']:.2f}",
              "µs per file": f"{1e6 * r['total'] / r['n']:.1f}",
              "listing (s)": f"{r['list']:.2f}", "content keys (s)": f"{r['keys']:.2f}",
              "cache lookup (s)": f"{r['lookup']:.2f}",
              "rest (s)": f"{r['embed_images'] - r['keys'] - r['lookup']:.2f}",
              "peak RSS growth (MB)": f"{r['peak_growth_max'] / 1e6:.0f}",
              "of which the result (MB)": f"{r['result_bytes'] / 1e6:.0f}"} for r in rows]
    return (markdown_table(table, list(table[0])) + f"\n\n{cpu_label(info.get('cpu'))}, {info.get('cpu_cores', '?')} "
            f"cores; best of {args['repeats']} fresh processes (peak: the largest of them); "
            f"`python benchmarks/listing_scale.py --n {' '.join(map(str, args['n']))}`.{payload.get('before', '')}"
            + goals(rows))


def goals(rows: list[dict]) -> str:
    """The issue's goals checked on the largest size this checkout ran, and a linear extrapolation to 10M files."""
    mine = [r for r in rows if r["code"] == "this checkout"]
    if not mine:
        return ""
    big = max(mine, key=lambda r: r["n"])
    per_file, peak = 1e6 * big["total"] / big["n"], big["peak_growth_max"] / 1e6
    scale = 10_000_000 / big["n"]
    return (f"\n\nGoals at {big['n']:,} files: peak RSS growth ≤ 300 MB — {'met' if peak <= 300 else 'not met'} "
            f"({peak:.0f} MB); warm rerun ≤ 10 µs a file — {'met' if per_file <= 10 else 'not met'} "
            f"({per_file:.1f} µs). Linear to 10M files (same per-file cost, metadata in the kernel's cache): "
            f"~{big['total'] * scale:.0f} s and ~{peak * scale / 1e3:.1f} GB, "
            f"{big['result_bytes'] * scale / 1e9:.1f} GB of it the result.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="generate the folders here and keep them (reused when present)")
    ap.add_argument("--before", type=Path, metavar="CHECKOUT",
                    help="also run the warm reruns with the cliplab of another checkout (a git worktree of an older "
                         "commit), as the table's 'before' rows")
    ap.add_argument("--docs-only", action="store_true",
                    help="measure nothing: write the table of the saved results (benchmarks/results) into --docs")
    ap.add_argument("--docs", metavar="REGION", help="write the table into docs/benchmarks.md's region REGION")
    args = ap.parse_args()
    if args.docs_only:
        saved = Path(__file__).resolve().parent / "results" / "listing_scale-cpu.json"
        write_docs_region(args.docs or "listing-scale", render(json.loads(saved.read_text())))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="cliplab-listing-"))
    rows = []
    try:
        root.mkdir(parents=True, exist_ok=True)
        cfg, ckpt = model_files(root)
        for n in args.n:
            folder, cache = root / f"files-{n}", root / f"cache-{n}"
            done = root / f"files-{n}.done"
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)
                shutil.rmtree(cache, ignore_errors=True)
                t0 = time.perf_counter()
                make_files(folder, n)
                made = time.perf_counter() - t0
                filled = fill_cache(folder, cache, cfg, ckpt)
                done.write_text(json.dumps({"make_seconds": made, "fill_seconds": filled}))
                print(f"{n:,} files made in {made:.0f} s, cache filled in {filled:.0f} s", file=sys.stderr)
            for code in ([args.before] if args.before else []) + [None]:
                runs = [warm(folder, cache, cfg, ckpt, code) for _ in range(args.repeats)]
                best = min(runs, key=lambda r: r["total"])
                best["peak_growth_max"] = max(r["peak_growth"] for r in runs)
                best["code"] = "before" if code else "this checkout"
                rows.append(best)
                print(json.dumps(best), file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    info = machine()
    before = ""
    if args.before:
        rev = subprocess.run(["git", "-C", str(args.before), "log", "-1", "--format=%h"], capture_output=True,
                             text=True).stdout.strip()
        before = f" 'before': cliplab at {rev or args.before} (`--before CHECKOUT`)."
    payload = {"machine": info, "rows": rows, "before": before, "args": {"n": args.n, "repeats": args.repeats}}
    save("listing_scale-cpu", payload)
    body = render(payload)
    print(body)
    if args.docs:
        write_docs_region(args.docs, body)


if __name__ == "__main__":
    main()
