"""FAISS indexes over cached embeddings: exact (flat inner product on unit vectors = cosine), IVF and HNSW for
large collections; saved with a JSON sidecar (ids, model/dataset fingerprints) and reloaded only if they match."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cliplab.errors import CliplabError, ParameterError
from cliplab.io import atomic_path, write_json_atomic
from cliplab.tasks.metrics import l2_normalize

KINDS = ("flat", "ivf", "hnsw")


def _faiss():
    try:
        import faiss  # faiss: slow to import, only index building/loading needs it
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise CliplabError("FAISS is not installed: pip install faiss-cpu") from None
    return faiss


@dataclass
class VectorIndex:
    index: object
    kind: str
    ids: list[str]
    meta: dict = field(default_factory=dict)

    @classmethod
    def build(cls, emb: np.ndarray, ids: list[str], kind: str = "flat", *, nlist: int | None = None,
              nprobe: int = 16, hnsw_m: int = 32, meta: dict | None = None) -> "VectorIndex":
        faiss = _faiss()
        if kind not in KINDS:
            raise ParameterError("index_type", kind, f"choose one of {', '.join(KINDS)}")
        x = np.ascontiguousarray(l2_normalize(emb), dtype=np.float32)
        d = x.shape[1]
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            nlist = nlist or max(1, min(4096, int(4 * np.sqrt(len(x)))))
            if len(x) < nlist:
                raise ParameterError("index_type", kind, f"IVF index with {nlist} lists needs at least {nlist} vectors "
                                     f"(have {len(x)}); use {{p:index_type}} flat", prefix=False)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
            index.nprobe = min(nprobe, nlist)
        else:
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = max(64, 2 * hnsw_m)
        index.add(x)
        return cls(index, kind, list(ids), dict(meta or {}))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(l2_normalize(queries), dtype=np.float32)
        s, i = self.index.search(q, min(k, len(self.ids)))
        return s, i

    def save(self, path: str | Path) -> None:
        faiss = _faiss()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        write_json_atomic(path.with_name(path.name + ".json"), {"kind": self.kind, "ids": self.ids, **self.meta})

    @classmethod
    def load(cls, path: str | Path) -> "VectorIndex":
        faiss = _faiss()
        path = Path(path)
        side = path.with_name(path.name + ".json")
        if not path.is_file() or not side.is_file():
            raise CliplabError(f"index {path} (and its {side.name}) not found")
        meta = json.loads(side.read_text())
        return cls(faiss.read_index(str(path)), meta.pop("kind"), meta.pop("ids"), meta)

    def matches(self, meta: dict) -> bool:
        return all(self.meta.get(k) == v for k, v in meta.items())
