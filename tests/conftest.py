"""Shared fixtures: a tiny open_clip model saved in real checkpoint formats, and a cache for the shipped,
trained tiny-shapes model."""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("CLIPLAB_OFFLINE", "1")  # never try to reach a model hub from the test suite

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cliplab-cache")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(config.json, checkpoint.pt, in-memory model) for a random tiny ViT CLIP built by open_clip."""
    import open_clip

    d = tmp_path_factory.mktemp("tiny")
    cfg_path = d / "tiny-vit.json"
    cfg_path.write_text(json.dumps(TINY_VIT))
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_VIT).eval()
    ckpt = d / "tiny-vit.pt"
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, ckpt)
    return cfg_path, ckpt, model


@pytest.fixture(scope="session")
def trained_cache(tmp_path_factory) -> Path:
    """A cache in which ``--model tiny-shapes`` is the checkpoint shipped with the package (the same weights on
    every machine, so thresholds on it are deterministic up to float noise; training is tested on its own in
    tests/train/test_training.py)."""
    from cliplab.train.tiny import ensure_tiny_model
    from cliplab.models.local import SHIPPED_DIR

    cache = tmp_path_factory.mktemp("trained-cache")
    assert ensure_tiny_model(cache) == SHIPPED_DIR / "tiny-shapes"
    return cache


def make_image(path: Path, size=(48, 40), color=(200, 30, 30), mode="RGB", fmt=None) -> Path:
    from PIL import Image

    rng = np.random.default_rng(zlib.crc32(path.name.encode("utf-8", "surrogateescape")))  # same in every process
    arr = (rng.random((size[1], size[0], 3)) * 60 + np.asarray(color) * 0.7).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path
