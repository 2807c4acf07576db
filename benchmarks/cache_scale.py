"""What a cached run over a large folder costs: content keys (file hashes) and the embedding-cache lookup.

    python benchmarks/cache_scale.py [--n 20000] [--size 256]

A folder of N generated JPEGs is embedded once with a random model of the tiny-shapes architecture (64 px, so the
cold run is quick);
then the same call runs again, all from the cache, three ways:
* with the file-hash memo (the default since session 3: files are stat-ed, not read);
* with the memo deleted first (what every cached run did before: every file read and hashed);
and the two parts are timed on their own: ``FileSource.keys()`` with / without the memo and
``EmbeddingCache.lookup`` of all N keys. Files sit in the page cache here (just written), so hashing is
CPU-bound; on network or cold storage reading them costs far more, and the memo saves all of it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from _common import machine, make_jpegs, markdown_table, save

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()

    import open_clip
    import torch

    from cliplab.data import open_dataset
    from cliplab.data.filehash import MEMO_NAME, file_hash_memo
    from cliplab.embed import embed_images
    from cliplab.embed.cache import EmbeddingCache
    from cliplab.embed.descriptors import DescriptorSpec
    from cliplab.models import open_model
    from cliplab.train import TINY_CONFIG

    tmp = Path(tempfile.mkdtemp(prefix="cliplab-cache-scale-"))
    try:
        nbytes = sum(Path(p).stat().st_size for p in make_jpegs(tmp / "imgs", args.n, (args.size, args.size)))
        (tmp / "tiny.json").write_text(json.dumps(TINY_CONFIG))
        torch.manual_seed(0)
        torch.save({"state_dict": open_clip.CLIP(**TINY_CONFIG).state_dict()}, tmp / "tiny.pt")
        model = open_model(str(tmp / "tiny.json"), str(tmp / "tiny.pt"), device="cpu", cache_dir=tmp / "cache")
        cache_dir = tmp / "cache"
        t = {}

        def run(label):
            t0 = time.perf_counter()
            res = embed_images(model, open_dataset(str(tmp / "imgs")), cache_dir, batch_size=64)
            t[label] = time.perf_counter() - t0
            return res

        run("cold run (embed everything)")
        res = run("cached run, memo")
        assert res.computed == 0
        (cache_dir / MEMO_NAME).unlink()
        run("cached run, no memo (every file hashed)")

        t0 = time.perf_counter()
        ds = open_dataset(str(tmp / "imgs"))
        t["load_dataset (list the folder)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        keys = ds.source.keys()
        t["keys(), no memo"] = time.perf_counter() - t0
        again = open_dataset(str(tmp / "imgs")).source
        with file_hash_memo(cache_dir / MEMO_NAME):
            t0 = time.perf_counter()
            again.keys()
            t["keys(), memo"] = time.perf_counter() - t0
        cache = EmbeddingCache(cache_dir, model.fingerprint, DescriptorSpec().cache_kind())
        t0 = time.perf_counter()
        hits = cache.lookup(keys)
        t[f"cache lookup ({len(cache.shards())} shards)"] = time.perf_counter() - t0
        assert len(hits.vectors) == len(set(keys)) == args.n

        rows = [{"step": k, "seconds": v, "images_per_s": args.n / v} for k, v in t.items()]
        print(f"{args.n} JPEGs of {args.size}x{args.size}, {nbytes / 1e6:.0f} MB")
        print(markdown_table(rows, ["step", "seconds", "images_per_s"]))
        print(f"saved {save('cache_scale-cpu', {'machine': machine(), 'args': vars(args), 'megabytes': nbytes / 1e6, 'rows': rows})}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
