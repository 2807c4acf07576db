"""On-disk embedding cache.

Layout: ``<cache>/embeddings/<model fingerprint>/<kind>/shard-*.npz``; each shard holds ``keys`` (content keys),
``emb`` (float32 rows), ``fail_keys``/``fail_reasons`` (items that cannot be embedded, so they are not retried)
and ``seconds`` (compute time, for throughput figures). Shards are written atomically (temp file + rename), so a
run killed at any moment leaves only whole shards behind and the next run resumes after the last one.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cliplab.io import atomic_path


@dataclass
class CacheHits:
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # compute time recorded for the shards that served these keys
    counted: int = 0  # rows those seconds covered


class EmbeddingCache:
    def __init__(self, cache_dir: Path, fingerprint: str, kind: str):
        self.dir = Path(cache_dir) / "embeddings" / fingerprint / kind

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz")) if self.dir.is_dir() else []

    def lookup(self, keys: list[str]) -> CacheHits:
        wanted = set(keys)
        hits = CacheHits()
        for shard in self.shards():
            try:
                with np.load(shard, allow_pickle=False) as z:
                    skeys = z["keys"]
                    rows = [i for i, k in enumerate(skeys.tolist()) if k in wanted]
                    fkeys = z["fail_keys"].tolist()
                    if rows:
                        emb = z["emb"]
                        for i in rows:
                            hits.vectors[skeys[i]] = emb[i]
                        hits.seconds += float(z["seconds"]) * len(rows) / max(len(skeys), 1)
                        hits.counted += len(rows)
                    if fkeys:
                        for k, r in zip(fkeys, z["fail_reasons"].tolist()):
                            if k in wanted:
                                hits.failures[k] = r
            except (OSError, ValueError, KeyError):
                continue  # an unreadable shard is ignored; its items are recomputed
        return hits

    def write(self, keys: list[str], emb: np.ndarray, failures: dict[str, str], seconds: float) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"shard-{uuid.uuid4().hex}.npz"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    keys=np.asarray(keys, dtype=np.str_),
                    emb=np.asarray(emb, dtype=np.float32),
                    fail_keys=np.asarray(list(failures), dtype=np.str_),
                    fail_reasons=np.asarray(list(failures.values()), dtype=np.str_),
                    seconds=np.float64(seconds),
                )
        return path
