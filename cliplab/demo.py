"""The offline default: the ``shapes`` dataset and a tiny CLIP trained on it (``tiny-shapes``)."""
from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "tiny-shapes"
DEMO_TEMPLATE_SETS = ["simple", "bare", "a drawing of a {}.", "openai-cifar", "openai-imagenet-7"]
DEMO_ATTRIBUTES = ["shape", "color", "size", "position", "background"]


def ensure_tiny_model(cache_dir: str | Path | None = None, quiet: bool = False) -> Path:
    """Train ``tiny-shapes`` on the shapes train split unless it is already in the cache."""
    from cliplab.data import load_dataset
    from cliplab.models.local import find_local_model
    from cliplab.paths import resolve_cache_dir
    from cliplab.progress import console
    from cliplab.train import train_clip

    cache = resolve_cache_dir(cache_dir)
    found = find_local_model(DEFAULT_MODEL, cache)
    if found is not None:
        return found.folder
    if not quiet:
        console.print(f"training {DEFAULT_MODEL} on shapes (first run only, about a minute on 2 CPU cores)...")
    ds = load_dataset("shapes", split="train", cache_dir=cache)
    return train_clip(ds, cache, DEFAULT_MODEL, quiet=quiet)


def run_demo(cache_dir: str | Path | None = None, quiet: bool = False) -> list:
    from cliplab.data import load_dataset
    from cliplab.models import load_model
    from cliplab.prompts import resolve_all
    from cliplab.report.tables import stdout_console, zeroshot_table
    from cliplab.studies.zeroshot import run_zeroshot

    ensure_tiny_model(cache_dir, quiet=quiet)
    model = load_model(DEFAULT_MODEL, cache_dir=cache_dir)
    out = stdout_console()
    runs = []
    for attr in DEMO_ATTRIBUTES:
        ds = load_dataset(f"shapes:{attr}", split="test", cache_dir=cache_dir)
        run = run_zeroshot(model, ds, resolve_all(DEMO_TEMPLATE_SETS), cache_dir, quiet=quiet)
        out.print(zeroshot_table(run))
        runs.append(run)
    return runs
