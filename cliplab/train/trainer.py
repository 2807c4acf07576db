"""Train or fine-tune an open_clip model with the CLIP contrastive loss on a captioned image set.

The model is built by open_clip from a model config (``CLIP(**cfg)`` via ``create_model``), trained with
open_clip's ``ClipLoss``, and saved in open_clip's own formats, so every open_clip tool can load it:

- ``<name>.json`` + ``<name>.pt`` (``{"state_dict": ..., "epoch": ...}``, as open_clip's trainer saves),
  loadable with ``--model <name>.json --pretrained <name>.pt``;
- ``open_clip_config.json`` + ``open_clip_model.safetensors``, the hub layout, loadable with
  ``--model local-dir:<folder>``.

Training runs the towers itself (it needs gradients); evaluation always goes through ``cliplab.embed``.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from cliplab.data.base import ImageDataset
from cliplab.data.imageio import BadImage
from cliplab.errors import CliplabError, ParameterError
from cliplab.io import atomic_path, write_json_atomic
from cliplab.models.local import SHIPPED_NAMES, models_dir
from cliplab.models.openclip import quiet_hub, register_config_file
from cliplab.models.specs import read_model_config
from cliplab.progress import progress_bar

# A tiny CLIP for the built-in ``shapes`` data: open_clip's ModifiedResNet image tower (one block per stage,
# width 8) and a 2-layer text transformer. It trains in under two minutes on two CPU cores. (A ViT of the same
# cost only learned colour in that budget; the conv tower learns all five attributes.) The text tower has 8 heads
# of width 8: with EOT pooling each attribute word needs an attention route to the EOT token, and with 2 heads
# some words (top/bottom, colours) were left without one depending on seed and CPU (docs/training.md).
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 8, "layers": 2, "mlp_ratio": 2.0},
}


@dataclass
class TrainConfig:
    epochs: int = 16
    batch_size: int = 128
    lr: float = 1e-3  # 2e-3 left colour words without a route for some seeds (docs/training.md)
    weight_decay: float = 0.1
    warmup_steps: int = 200
    seed: int = 0
    num_threads: int | None = None
    max_memory_gb: float = 4.0  # preprocessed images are held in memory up to this size, else streamed
    history: list = field(default_factory=list)


class _Pairs(Dataset):
    """(preprocessed image, one random caption's tokens) per item; captions re-drawn every epoch."""

    def __init__(self, images, tokens: list[torch.Tensor], seed: int, source=None, preprocess=None):
        self.images, self.tokens, self.source, self.preprocess = images, tokens, source, preprocess
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int):
        img = self.images[i] if self.images is not None else self.preprocess(self.source.load(i))
        caps = self.tokens[i]
        return img, caps[self.rng.integers(len(caps))]


def _preprocess_all(ds: ImageDataset, preprocess) -> tuple[torch.Tensor, list[int]]:
    out, keep = [], []
    with progress_bar(len(ds), "preparing images") as bar:
        for i in range(len(ds)):
            try:
                out.append(preprocess(ds.source.load(i)))
                keep.append(i)
            except BadImage:
                pass
            bar.advance()
    return torch.stack(out), keep


def train_clip(ds: ImageDataset, cache_dir: Path, name: str, *, out_dir: Path | None = None, model_cfg: dict | None = None,
               base_model: str | None = None, pretrained: str | None = None, config: TrainConfig | None = None,
               on_epoch=None, overwrite: bool = False,
               extra_meta: dict | None = None) -> Path:
    """Train on ``ds`` (which must have captions); save to ``out_dir/name`` (default: the cache's models folder,
    where ``--model name`` finds it). Returns that folder. An existing ``name`` folder is an error unless
    ``overwrite``; the model is written to a staging folder and moved into place only when training finished.
    ``on_epoch(epoch, model)``, if given, runs after every epoch (the seed-spread script's learning curves)."""
    cfg = config or TrainConfig()
    if not ds.captions or not any(ds.captions):
        raise CliplabError(f"dataset {ds.name!r} has no captions to train on; pass a caption file (.csv/.jsonl)")
    torch.manual_seed(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)

    final = Path(out_dir or models_dir(Path(cache_dir))) / name
    _check_target(final, name, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{name}.", suffix=".training"))
    try:
        _train_into(folder, ds, cache_dir, name, model_cfg, base_model, pretrained, cfg, on_epoch,
                    extra_meta or {})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _check_target(final, name, overwrite)  # someone may have created it while we trained
    if final.exists() and any(final.iterdir()):
        old = final.with_name(f".{name}.replaced-{os.getpid()}")
        os.replace(final, old)
        os.replace(folder, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(folder, final)
    return final


def check_name(name: str, out_dir: Path | None = None, overwrite: bool = False) -> bool:
    """Check a new model's name; returns True when training it makes a cache copy that replaces a model shipped
    with cliplab (allowed only with ``overwrite``)."""
    if "/" in name or ":" in name or name.endswith(".json") or name.startswith(".") or not name.strip():
        raise ParameterError("name", name, "use a plain name (no '/', ':', leading '.' or .json)")
    overrides = out_dir is None and name in SHIPPED_NAMES
    if overrides and not overwrite:
        raise ParameterError("name", name, f"{name} is the model shipped with cliplab; choose another {{p:name}}, or "
                             f"pass {{p:force}} to train a cache copy that {{p:model}} {name} will use instead of "
                             "the shipped one", quote=False)
    return overrides


def model_source(model: str | None) -> tuple[dict | None, str | None]:
    """What to train: (an open_clip model config from a .json file, or None; an architecture name, or None). Both
    None means the tiny-shapes recipe."""
    if model and model.endswith(".json"):
        model_cfg, preprocess_cfg = read_model_config(model)
        return ({**model_cfg, "preprocess_cfg": preprocess_cfg} if preprocess_cfg else model_cfg), None
    return None, model or None


def _check_target(final: Path, name: str, overwrite: bool) -> None:
    if final.is_dir() and not any(final.iterdir()):
        return
    if not final.exists():
        return
    if not final.is_dir() or not (final / f"{name}.pt").is_file():
        raise ParameterError("name", name, f"{final} exists and is not a model trained by cliplab; choose another "
                             "{p:name} or {p:output_dir}", quote=False)
    if not overwrite:
        raise ParameterError("name", name, f"a model named {name!r} already exists in {final.parent}; choose another "
                             "{p:name}, or pass {p:force} to replace it", quote=False)


def _train_into(folder: Path, ds: ImageDataset, cache_dir: Path, name: str, model_cfg, base_model, pretrained,
                cfg: TrainConfig, on_epoch, extra_meta: dict) -> None:
    if base_model is None:
        model_cfg = model_cfg or TINY_CONFIG
        cfg_path = folder / f"{name}.json"
        write_json_atomic(cfg_path, model_cfg)
        arch, model_cfg, _ = register_config_file(cfg_path, Path(cache_dir))
    else:
        arch = base_model
        model_cfg = open_clip.get_model_config(base_model)
        if model_cfg is None:
            raise CliplabError(f"unknown open_clip architecture {base_model!r}")
        write_json_atomic(folder / f"{name}.json", model_cfg)
    with quiet_hub(offline=False):
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
    tokenizer = open_clip.get_tokenizer(arch)
    model.train()

    keep = [i for i, c in enumerate(ds.captions) if c]
    if len(keep) < len(ds):
        ds = ds.subset(keep, tag="captioned")
    size = model.visual.preprocess_cfg["size"]
    h, w = (size, size) if isinstance(size, int) else size
    in_memory = len(ds) * 3 * h * w * 4 <= cfg.max_memory_gb * 2**30
    if in_memory:
        images, ok = _preprocess_all(ds, preprocess)
        if len(ok) < len(ds):
            ds = ds.subset(ok, tag="decodable")
    else:
        images = None
    tokens = [tokenizer(caps) for caps in ds.captions]
    pairs = _Pairs(images, tokens, cfg.seed, source=ds.source, preprocess=preprocess)
    loader = DataLoader(pairs, batch_size=cfg.batch_size, shuffle=True, drop_last=len(pairs) > cfg.batch_size,
                        num_workers=0 if in_memory else 2, generator=torch.Generator().manual_seed(cfg.seed))

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    total = cfg.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / cfg.warmup_steps if s < cfg.warmup_steps
        else 0.5 * (1 + math.cos(math.pi * (s - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))))
    loss_fn = ClipLoss()
    t0 = time.perf_counter()
    step = 0
    with progress_bar(total, f"training {name}", unit="steps") as bar:
        for epoch in range(cfg.epochs):
            losses = []
            for imgs, toks in loader:
                out = model(imgs, toks)
                img_f, txt_f, scale = (out["image_features"], out["text_features"], out["logit_scale"]) \
                    if isinstance(out, dict) else out[:3]
                loss = loss_fn(img_f, txt_f, scale)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                losses.append(loss.item())
                step += 1
                bar.advance()
            cfg.history.append({"epoch": epoch + 1, "loss": float(np.mean(losses))})
            if on_epoch is not None:
                on_epoch(epoch + 1, model)
    seconds = time.perf_counter() - t0
    model.eval()
    _save(model, folder, name, model_cfg, epoch=cfg.epochs)
    meta = {"name": name, "architecture": arch if base_model else f"{name}.json", "pretrained_from": pretrained,
            "dataset": ds.name, "split": ds.split, "dataset_fingerprint": ds.fingerprint, "images": len(ds),
            "train_seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(), "steps": step,
            "config": {k: v for k, v in asdict(cfg).items() if k != "history"}, "history": cfg.history, **extra_meta}
    write_json_atomic(folder / "meta.json", meta)


def _save(model, folder: Path, name: str, model_cfg: dict, epoch: int) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / f"{name}.pt") as tmp:
        torch.save({"epoch": epoch, "name": name, "state_dict": state}, tmp)
    with atomic_path(folder / "open_clip_model.safetensors") as tmp:
        save_file(state, str(tmp))
    pp = dict(model.visual.preprocess_cfg)
    write_json_atomic(folder / "open_clip_config.json", {
        "model_cfg": model_cfg,
        "preprocess_cfg": {k: (list(v) if isinstance(v, tuple) else v) for k, v in pp.items()},
    })
