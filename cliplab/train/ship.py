"""Store a model trained by ``cliplab train`` as the package's shipped model (maintainers only).

    cliplab train --name tiny-shapes-new          # the tiny-shapes recipe, default seed
    python -m cliplab.train.ship ~/.cache/cliplab/models/tiny-shapes-new
    make docs-numbers                             # README figures from exactly the stored checkpoint

The weights are stored as fp16 safetensors (open_clip's ``open_clip_model.safetensors``; about half the size) and
loaded into an fp32 model; every figure and test threshold is measured on that stored file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cliplab.errors import CliplabError
from cliplab.io import atomic_path, write_json_atomic
from cliplab.models.local import SHIPPED_DIR


def ship(folder: Path, name: str = "tiny-shapes", dest_root: Path = SHIPPED_DIR) -> Path:
    folder = Path(folder)
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    meta = json.loads((folder / "meta.json").read_text())
    weights = folder / "open_clip_model.safetensors"
    if not weights.is_file():
        raise CliplabError(f"{folder}: no open_clip_model.safetensors (not a folder written by cliplab train)")
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in load_file(str(weights)).items()}
    dest = Path(dest_root) / name
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest / "open_clip_model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_json_atomic(dest / "open_clip_config.json", cfg)
    write_json_atomic(dest / f"{name}.json", cfg["model_cfg"])
    meta = {**meta, "name": name, "architecture": f"{name}.json", "trained_as": meta.get("name"),
            "stored_dtype": "float16"}
    meta.pop("overrides_shipped", None)
    write_json_atomic(dest / "meta.json", meta)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a model folder written by `cliplab train`")
    ap.add_argument("--name", default="tiny-shapes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"stored {ship(args.folder, args.name)}")


if __name__ == "__main__":
    main()
