"""Cost of a K-template prompt study: cliplab (one image pass + K small text passes) vs re-encoding per prompt.

    python benchmarks/prompt_cost.py [--model tiny-shapes] [--dataset shapes:shape] [--limit N] [--device cpu]

For each K in {1, 8, 80} (the first K of the 80 OpenAI ImageNet templates) a prompt study runs from an empty
embedding cache (images and texts embedded from scratch); its wall time is reported as a ratio to K = 1.
The naive notebook loop — encode all images again for every prompt — is measured once (one image pass) and
extrapolated as K image passes + the same text passes.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _common import device_tag, machine, markdown_table, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-shapes")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--dataset", default="shapes:shape")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--ks", default="1,8,80")
    args = ap.parse_args()

    from cliplab.data import open_dataset
    from cliplab.train.tiny import DEFAULT_MODEL, ensure_tiny_model
    from cliplab.embed import embed_images
    from cliplab.models import open_model
    from cliplab.prompts import TemplateSet, resolve_templates
    from cliplab.inputs import Inputs
    from cliplab.studies.prompts import PromptsParams, run_prompts

    if args.model == DEFAULT_MODEL:
        ensure_tiny_model()
    model = open_model(args.model, args.pretrained, device=args.device)
    ds = open_dataset(args.dataset, split="test", limit=args.limit)
    all80 = resolve_templates("openai-imagenet-80")[0].templates
    warm = tempfile.mkdtemp(prefix="cliplab-bench-")  # one-off costs (threads, allocator) out of the K = 1 row
    run_prompts(Inputs.of(model, ds.subset(range(min(64, len(ds))), "warmup"),
                          template_sets=[TemplateSet("w", tuple(all80[:2]))], options=warm), PromptsParams(bootstrap=100))
    shutil.rmtree(warm, ignore_errors=True)
    rows = []
    for k in [int(x) for x in args.ks.split(",")]:
        ts = TemplateSet(f"first {k}", tuple(all80[:k]))
        tmp = tempfile.mkdtemp(prefix="cliplab-bench-")
        try:
            t0 = time.perf_counter()
            study = run_prompts(Inputs.of(model, ds, template_sets=[ts], options=tmp), PromptsParams(bootstrap=200))
            total = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append({"K": k, "prompts": k * len(ds.classnames), "rows": len(study.rows), "seconds": total,
                     "image_s": study.seconds["images"], "text_s": study.seconds["texts"]})
    # one uncached image pass = what the naive loop pays per prompt
    tmp = tempfile.mkdtemp(prefix="cliplab-bench-")
    try:
        t0 = time.perf_counter()
        embed_images(model, ds, tmp, use_cache=False)
        image_pass = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0]["seconds"]
    for r in rows:
        r["ratio_to_K1"] = r["seconds"] / base
        r["naive_s"] = r["K"] * image_pass + r["text_s"]
        r["speedup_vs_naive"] = r["naive_s"] / r["seconds"]
    payload = {"machine": machine(), "model": args.model, "dataset": args.dataset, "images": len(ds),
               "classes": len(ds.classnames), "image_pass_s": image_pass, "rows": rows}
    print(markdown_table(rows, ["K", "prompts", "seconds", "ratio_to_K1", "image_s", "text_s", "naive_s",
                                "speedup_vs_naive"]))
    print(f"saved {save(f'prompt_cost-{Path(args.model).stem}-{len(ds)}-{device_tag(args.device)}', payload)}")


if __name__ == "__main__":
    main()
