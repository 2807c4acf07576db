"""Local models: the ``tiny-shapes`` model shipped inside the package, and models trained by ``cliplab train``.

Trained models live in ``<cache>/models/<name>/`` as a real open_clip pair: ``<name>.json`` (model config) +
``<name>.pt`` (checkpoint with ``state_dict``), plus ``open_clip_config.json`` and ``open_clip_model.safetensors``
(the ``local-dir:``/hub layout) and ``meta.json`` (training record).

The shipped model (``cliplab/models/weights/tiny-shapes/``) has the same layout without the ``.pt``: its weights
are the fp16 ``open_clip_model.safetensors`` (loaded into an fp32 model). It is what ``--model tiny-shapes``
means on every machine. A cache model of the same name replaces it only if it was trained with
``cliplab train --name tiny-shapes --force`` (its meta.json says ``overrides_shipped``); a ``tiny-shapes`` that
older cliplab versions trained into the cache on first use is ignored (and left in place).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_NAMES = ("tiny-shapes",)


@dataclass
class LocalModel:
    name: str
    folder: Path
    config: Path
    checkpoint: Path
    meta: dict
    shipped: bool = False


def models_dir(cache_dir: Path) -> Path:
    return cache_dir / "models"


def shipped_model(name: str) -> LocalModel | None:
    """The model of that name shipped inside the package (None if there is none)."""
    if name not in SHIPPED_NAMES:
        return None
    folder = SHIPPED_DIR / name
    cfg, weights = folder / f"{name}.json", folder / "open_clip_model.safetensors"
    if not (cfg.is_file() and weights.is_file()):
        return None
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return LocalModel(name, folder, cfg, weights, meta, shipped=True)


def list_local_models(cache_dir: Path) -> list[LocalModel]:
    """The models ``--model NAME`` finds: shipped ones (unless overridden) and the cache's trained ones."""
    out = {}
    for name in SHIPPED_NAMES:
        m = find_local_model(name, cache_dir)
        if m is not None:
            out[name] = m
    root = models_dir(cache_dir)
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if d.name in out or d.name.startswith("."):
                continue
            m = _read(d)
            if m is not None and not (d.name in SHIPPED_NAMES and not overrides_shipped(m)):
                out[d.name] = m
    return list(out.values())


def _read(folder: Path) -> LocalModel | None:
    cfg, ckpt = folder / f"{folder.name}.json", folder / f"{folder.name}.pt"
    if not (cfg.is_file() and ckpt.is_file()):
        return None
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return LocalModel(folder.name, folder, cfg, ckpt, meta)


def overrides_shipped(model: LocalModel) -> bool:
    return bool(model.meta.get("overrides_shipped"))


def find_local_model(name: str, cache_dir: Path) -> LocalModel | None:
    """A cache model trained under ``name``, else the shipped model of that name, else None. For a shipped name
    the cache copy counts only if it was trained with ``--force`` to replace the shipped one."""
    if "/" in name or name.endswith(".json") or ":" in name:
        return None
    cached = _read(models_dir(cache_dir) / name)
    if cached is not None and (name not in SHIPPED_NAMES or overrides_shipped(cached)):
        return cached
    return shipped_model(name)
