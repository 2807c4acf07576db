"""The baseline side of `vs_clip_benchmark.py`: CLIP_benchmark's zero-shot `evaluate()`, as its CLI calls it, run in
CLIP_benchmark's own virtual environment (this file imports nothing from cliplab).

    <venv>/bin/python benchmarks/_clip_benchmark_eval.py --model ViT-B-32 --checkpoint ckpt.pt --folder F \
        --classnames names.json --templates runs.json --out result.json [--batch-size 64] [--workers 4]

`runs.json` is a list of template lists (cliplab's '{}' placeholder): one `evaluate()` per list, the model loaded
once (one process for all runs: the baseline is spared K - 1 imports and model loads). The result records each
run's metrics, its seconds, and the top-1 class of every image (by path) for the agreement check.
"""
from __future__ import annotations

import argparse
import json
import time

T0 = time.perf_counter()

import open_clip  # noqa: E402
import torch  # noqa: E402
from clip_benchmark.metrics import zeroshot_classification as zsc  # noqa: E402
from torchvision.datasets import ImageFolder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    for flag in ("--model", "--checkpoint", "--folder", "--classnames", "--templates", "--out"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--batch-size", type=int, default=64)  # CLIP_benchmark's CLI defaults
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=args.checkpoint)
    model.eval()
    tokenizer = open_clip.get_tokenizer(args.model)
    dataset = ImageFolder(args.folder, transform=preprocess)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False,
                                         num_workers=args.workers)
    classnames = json.loads(open(args.classnames).read())
    captured = {}
    run_classification = zsc.run_classification

    def keep_logits(*a, **kw):  # evaluate() returns metrics only; keep its logits for the per-image comparison
        captured["logits"], captured["target"] = run_classification(*a, **kw)
        return captured["logits"], captured["target"]

    zsc.run_classification = keep_logits
    runs = []
    for templates in json.loads(open(args.templates).read()):
        t = time.perf_counter()
        metrics = zsc.evaluate(model, loader, tokenizer, classnames, [s.replace("{}", "{c}") for s in templates],
                               "cpu", amp=False)
        seconds = time.perf_counter() - t
        top1 = captured["logits"].argmax(1).tolist()
        runs.append({"templates": templates, "seconds": seconds, "metrics": metrics,
                     "top1": {path: int(k) for (path, _), k in zip(dataset.samples, top1)}})
    json.dump({"startup_seconds": None, "total_seconds": time.perf_counter() - T0, "runs": runs},
              open(args.out, "w"))


if __name__ == "__main__":
    main()
