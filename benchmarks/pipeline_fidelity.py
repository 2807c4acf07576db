"""How far the tensor pipeline (torchvision / nvJPEG decoding + batched tensor resize) is from the PIL reference.

    python benchmarks/pipeline_fidelity.py [--device cuda] [--images ../shared/data/food101-10/test]
                                           [--model ViT-B-32 [--pretrained TAG]] [--limit 500]

Two measurements, both pipelines on the same files, same model, same device:

A. real JPEGs (default: the shared Food-101 sample, class folders): embedding cosine between the two pipelines
   (mean, min), mean absolute difference of the preprocessed pixels (normalised units), and — the images have
   class labels — zero-shot top-1 of both pipelines and how often their top-1 class agrees. With random weights
   (no hub here) the accuracies are chance level; agreement and cosine still measure the pipelines.
B. an accuracy oracle: the trained ``tiny-shapes`` model (trained on first use, ~1.5 min on 2 cores) on the shapes
   test split (shape attribute) re-encoded as 256x256 JPEGs (quality 90), so both pipelines decode JPEGs and
   downscale 4x. Zero-shot top-1 of each pipeline, the paired difference with its bootstrap 95 % CI and the
   McNemar p-value: "within noise" means the CI contains 0.

The tensor pipeline may become the GPU default (``--pipeline auto``) only when B is within noise on CUDA.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import device_tag, machine, markdown_table, save

SHARED_FOOD = Path(__file__).resolve().parents[2] / "shared" / "data" / "food101-10" / "test"


def compare_pipelines(model, dataset, cache: Path, batch_size: int) -> dict:
    """Embed ``dataset`` through both pipelines; zero-shot with 'a photo of a {}.' on each."""
    from cliplab.embed import embed_images
    from cliplab.prompts import resolve_templates
    from cliplab.embed.texts import class_text_embeddings
    from cliplab.tasks.metrics import l2_normalize
    from cliplab.tasks.stats import compare_paired
    from cliplab.tasks.zeroshot import build_classifier, evaluate

    runs = {p: embed_images(model, dataset, cache, batch_size=batch_size, pipeline=p, workers=0)
            for p in ("pil", "tensor")}
    pil, ten = runs["pil"], runs["tensor"]
    common, ia, ib = np.intersect1d(pil.indices, ten.indices, return_indices=True)
    a, b = pil.embeddings[ia], ten.embeddings[ib]
    cos = (l2_normalize(a) * l2_normalize(b)).sum(1)
    out = {"dataset": dataset.name, "images": int(len(common)), "cos_mean": float(cos.mean()), "cos_min": float(cos.min())}
    if dataset.labels is not None and dataset.classnames:
        labels = dataset.labels[common]
        clf = build_classifier(class_text_embeddings(model, dataset.classnames,
                                                     resolve_templates("a photo of a {}.")[0], cache))
        ra, rb = evaluate(a, labels, clf), evaluate(b, labels, clf)
        pa, pb = ra.scores.argmax(1), rb.scores.argmax(1)
        cmp = compare_paired(pa == labels, pb == labels)
        out.update({"top1_pil": 100 * cmp.acc_a, "top1_tensor": 100 * cmp.acc_b, "delta_pt": 100 * cmp.diff,
                    "ci95_pt": f"[{100 * cmp.ci_low:+.2f}, {100 * cmp.ci_high:+.2f}]", "mcnemar_p": cmp.p_value,
                    "top1_agreement": float((pa == pb).mean()),
                    "within_noise": bool(cmp.ci_low <= 0.0 <= cmp.ci_high)})
    return out


def pixel_difference(model, paths: list[str]) -> float:
    """Mean |tensor - PIL| of the preprocessed (normalised) pixels on up to 64 files."""
    from cliplab.data.imageio import open_rgb
    from cliplab.embed.tensor_pipeline import TensorPreprocess, decode_batch, read_bytes

    paths = paths[:64]
    prep = TensorPreprocess.from_cfg(model.preprocess_cfg)
    x = prep.batch(decode_batch(read_bytes(paths), model.device), model.device).float().cpu()
    y = torch.stack([model.preprocess(open_rgb(p)) for p in paths])
    return float((x - y).abs().mean())


def shapes_as_jpegs(cache: Path, out: Path, size: int = 256, quality: int = 90):
    from PIL import Image

    from cliplab.data import open_dataset
    from cliplab.data.folder import load_folder

    ds = open_dataset("shapes:shape", split="test", cache_dir=cache)
    for i in range(len(ds)):
        d = out / ds.classnames[int(ds.labels[i])]
        d.mkdir(parents=True, exist_ok=True)
        ds.source.load(i).resize((size, size), Image.LANCZOS).save(d / f"{i:05d}.jpg", quality=quality)
    return load_folder(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(SHARED_FOOD), help="class folders of real JPEGs")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cache-dir", default=None, help="where tiny-shapes lives / is trained (default: cliplab's)")
    args = ap.parse_args()

    from cliplab.data import open_dataset
    from cliplab.data.folder import list_images
    from cliplab.train.tiny import ensure_tiny_model
    from cliplab.models import open_model
    from cliplab.paths import resolve_cache_dir

    rows = []
    with tempfile.TemporaryDirectory(prefix="cliplab-fidelity-") as tmp:
        tmp = Path(tmp)
        if Path(args.images).is_dir():
            model = open_model(args.model, args.pretrained, device=args.device)
            ds = open_dataset(args.images, limit=args.limit)
            row = compare_pipelines(model, ds, tmp / "emb-a", args.batch_size)
            row.update(model=f"{args.model} ({args.pretrained or 'random weights'})",
                       pixel_mad=pixel_difference(model, [str(p) for p in list_images(Path(args.images))]))
            rows.append(row)
            print(row, flush=True)
        else:
            print(f"skipping A: {args.images} is not a folder (the shared data sample is absent)")
        cache = resolve_cache_dir(args.cache_dir)
        ensure_tiny_model(cache)
        tiny = open_model("tiny-shapes", device=args.device, cache_dir=cache)
        ds = shapes_as_jpegs(cache, tmp / "shapes-jpeg")
        row = compare_pipelines(tiny, ds, tmp / "emb-b", args.batch_size)
        row.update(model="tiny-shapes (trained)", pixel_mad=pixel_difference(tiny, ds.paths))
        rows.append(row)
        print(row, flush=True)
    cols = ["model", "dataset", "images", "cos_mean", "cos_min", "pixel_mad", "top1_pil", "top1_tensor", "delta_pt",
            "ci95_pt", "mcnemar_p", "top1_agreement", "within_noise"]
    print(markdown_table(rows, cols))
    print(f"saved {save('pipeline_fidelity-' + device_tag(args.device), {'machine': machine(), 'args': vars(args), 'rows': rows})}")


if __name__ == "__main__":
    main()
