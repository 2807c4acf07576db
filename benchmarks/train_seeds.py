"""Train the tiny-shapes recipe with several seeds and print per-attribute zero-shot test accuracy.

The source of the seed-spread table in ``docs/training.md``. Every run uses the shipped recipe
(``cliplab.train.TINY_CONFIG`` + ``TrainConfig()``) unless ``--set key=value`` overrides a TrainConfig field.

    OMP_NUM_THREADS=1 python benchmarks/train_seeds.py --seeds 0,1,2,3,4 --threads 1
    python benchmarks/train_seeds.py --seeds 0,1 --set epochs=8 --curve   # per-epoch accuracy (diagnosis)

Accuracy is top-1 with the template 'a photo of a {}.' on the 1000 test images, computed by cliplab's own
zero-shot study on the saved checkpoint (``--curve`` adds a quick in-memory evaluation after every epoch).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ATTRS = ["shape", "color", "size", "position", "background"]


def data_fingerprint(cache: Path) -> str:
    """Hash of the generated shapes files (captions + every PNG): equal on every machine if generation is
    deterministic."""
    from cliplab.data.shapes import DEFAULT_SPLIT_SIZES, ensure_shapes

    root = ensure_shapes(cache, 0, DEFAULT_SPLIT_SIZES)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


class Curve:
    """Per-epoch zero-shot accuracy on the test split, evaluated in memory (no cache writes)."""

    def __init__(self, cache: Path):
        import open_clip
        import torch

        from cliplab.data import open_dataset
        from cliplab.data.shapes import ATTRIBUTE_CLASSNAMES

        ds = open_dataset("shapes", split="test", cache_dir=cache)
        tf = open_clip.image_transform(64, is_train=False)
        self.images = torch.stack([tf(ds.source.load(i)) for i in range(len(ds))])
        self.labels = {a: np.asarray(ds.attributes[a]) for a in ATTRS}
        self.prompts = {a: [f"a photo of a {c}." for c in ATTRIBUTE_CLASSNAMES[a]] for a in ATTRS}
        self.rows = []

    def __call__(self, epoch, model):
        import open_clip
        import torch

        tok = open_clip.get_tokenizer("RN50")  # the standard CLIP BPE tokenizer, context cut to the model's
        was = model.training
        model.eval()
        row = {"epoch": epoch}
        with torch.no_grad():
            img = torch.nn.functional.normalize(model.encode_image(self.images), dim=-1)
            for a in ATTRS:
                t = tok(self.prompts[a], context_length=model.context_length)
                txt = torch.nn.functional.normalize(model.encode_text(t), dim=-1)
                row[a] = float(((img @ txt.T).argmax(1).numpy() == self.labels[a]).mean())
        model.train(was)
        self.rows.append(row)
        print("  epoch %2d  " % epoch + "  ".join(f"{a} {row[a]:.3f}" for a in ATTRS), flush=True)


def text_similarity(model) -> dict:
    """Cosine between the position prompts that differ only in top/bottom (or left/right): near 1 means the text
    tower ignores that word, the failure seen with the old recipe."""
    import torch

    from cliplab.data.shapes import ATTRIBUTE_CLASSNAMES

    names = ATTRIBUTE_CLASSNAMES["position"]
    with torch.no_grad():
        t = model.tokenizer([f"a photo of a {c}." for c in names])
        e = torch.nn.functional.normalize(model.model.encode_text(t), dim=-1)
    cos = (e @ e.T).numpy()
    i = {n.split(" the ")[1]: k for k, n in enumerate(names)}
    return {"cos_top_vs_bottom": float(np.mean([cos[i["top left"], i["bottom left"]],
                                                  cos[i["top right"], i["bottom right"]]])),
            "cos_left_vs_right": float(np.mean([cos[i["top left"], i["top right"]],
                                                  cos[i["bottom left"], i["bottom right"]]]))}


def evaluate(name: str, cache: Path) -> dict:
    from cliplab.data import open_dataset
    from cliplab.models import open_model
    from cliplab.prompts import resolve_all
    from cliplab.inputs import Inputs, RunOptions
    from cliplab.studies.zeroshot import run_zeroshot

    model = open_model(name, cache_dir=cache)
    out = {}
    for a in ATTRS:
        ds = open_dataset(f"shapes:{a}", split="test", cache_dir=cache)
        run = run_zeroshot(Inputs.of(model, ds, template_sets=resolve_all(["simple"]),
                                     options=RunOptions.of(cache, use_cache=False)))
        out[a] = float(run.evaluations[0].result.metrics["acc1"])
    out.update(text_similarity(model))
    return out


def main() -> None:
    import torch

    from cliplab.data import open_dataset
    from cliplab.train import TINY_CONFIG, TrainConfig, train_clip

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--set", action="append", default=[], help="TrainConfig override, e.g. epochs=8")
    ap.add_argument("--arch", action="append", default=[], help="TINY_CONFIG override, e.g. text_cfg.heads=4")
    ap.add_argument("--curve", action="store_true", help="evaluate after every epoch")
    ap.add_argument("--cache", type=Path, default=None, help="cache dir (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line per seed here")
    ap.add_argument("--summarize", type=Path, nargs="+", default=None,
                    help="only print the spread tables of earlier --json files (grouped by recipe and threads)")
    args = ap.parse_args()
    if args.summarize:
        rows = [json.loads(line) for f in args.summarize for line in f.read_text().splitlines() if line.strip()]
        groups: dict[str, list] = {}
        for r in rows:
            groups.setdefault(json.dumps(r["overrides"], sort_keys=True) + f" threads={r['threads']}", []).append(r)
        for key, rs in groups.items():
            print(f"\n{key}: seeds {sorted(r['seed'] for r in rs)}")
            spread_table(sorted(rs, key=lambda r: r["seed"]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = {f.name: f.type for f in fields(TrainConfig)}
    over = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        if k not in kinds:
            sys.exit(f"unknown TrainConfig field {k!r}")
        over[k] = type(getattr(TrainConfig(), k))(v) if getattr(TrainConfig(), k) is not None else float(v)
    model_cfg = copy.deepcopy(TINY_CONFIG)
    for kv in args.arch:
        k, v = kv.split("=", 1)
        part, key = k.split(".")
        model_cfg[part][key] = json.loads(v)
        over[k] = json.loads(v)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="cliplab-seeds-"))
    print(f"data fingerprint {data_fingerprint(cache)}  threads {torch.get_num_threads()}  overrides {over}",
          flush=True)
    ds = open_dataset("shapes", split="train", cache_dir=cache)
    curve = Curve(cache) if args.curve else None
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        name = f"seed{seed}-" + hashlib.sha1(json.dumps(over, sort_keys=True).encode()).hexdigest()[:6]
        t0 = time.perf_counter()
        cfg = TrainConfig(seed=seed, **{k: v for k, v in over.items() if "." not in k})
        if curve:
            curve.rows = []
        train_clip(ds, cache, name, config=cfg, model_cfg=model_cfg, on_epoch=curve, overwrite=True)
        secs = time.perf_counter() - t0
        acc = evaluate(name, cache)
        row = {"seed": seed, "threads": torch.get_num_threads(), "overrides": over, "train_seconds": round(secs, 1),
               **{a: round(acc[a], 4) for a in ATTRS},
               **{k: round(v, 3) for k, v in acc.items() if k.startswith("cos_")}}
        if curve:
            row["curve"] = curve.rows
        results.append(row)
        print(f"seed {seed}: " + "  ".join(f"{a} {acc[a]:.3f}" for a in ATTRS)
              + f"  text cos top/bottom {acc['cos_top_vs_bottom']:.2f} left/right {acc['cos_left_vs_right']:.2f}"
              + f"  ({secs:.0f} s)", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    if len(results) > 1:
        spread_table(results)


def spread_table(results: list[dict]) -> None:
    from cliplab.data.shapes import ATTRIBUTE_VALUES

    print("| attribute | chance | " + " | ".join(f"seed {r['seed']}" for r in results) + " | min | mean | max |")
    print("|---" * (len(results) + 5) + "|")
    for a in ATTRS:
        v = np.array([r[a] for r in results])
        print(f"| {a} | {100 / len(ATTRIBUTE_VALUES[a]):.1f} | " + " | ".join(f"{100 * x:.1f}" for x in v)
              + f" | {100 * v.min():.1f} | {100 * v.mean():.1f} | {100 * v.max():.1f} |")


if __name__ == "__main__":
    main()
