"""Models trained by ``cliplab train`` live in ``<cache>/models/<name>/`` as a real open_clip pair:
``<name>.json`` (model config) + ``<name>.pt`` (checkpoint with ``state_dict``), plus ``open_clip_config.json`` and
``open_clip_model.safetensors`` (the ``local-dir:``/hub layout) and ``meta.json`` (training record)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LocalModel:
    name: str
    folder: Path
    config: Path
    checkpoint: Path
    meta: dict


def models_dir(cache_dir: Path) -> Path:
    return cache_dir / "models"


def list_local_models(cache_dir: Path) -> list[LocalModel]:
    out = []
    root = models_dir(cache_dir)
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        m = _read(d)
        if m is not None:
            out.append(m)
    return out


def _read(folder: Path) -> LocalModel | None:
    cfg, ckpt = folder / f"{folder.name}.json", folder / f"{folder.name}.pt"
    if not (cfg.is_file() and ckpt.is_file()):
        return None
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return LocalModel(folder.name, folder, cfg, ckpt, meta)


def find_local_model(name: str, cache_dir: Path) -> LocalModel | None:
    if "/" in name or name.endswith(".json") or ":" in name:
        return None
    return _read(models_dir(cache_dir) / name)
