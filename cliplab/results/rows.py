"""Result rows for the results store, one function per study type (see :mod:`cliplab.results.store`)."""
from __future__ import annotations

import numpy as np

from cliplab.results.store import RunRecorder

CLASSIFICATION = ("acc1", "acc5", "mean_per_class_recall", "mean_correct_similarity")


def record_prompt_study(rec: RunRecorder, study, seed: int) -> None:
    n = int(len(study.labels))
    for r in study.rows:
        kw = dict(task="prompt_study", model=study.model, dataset=study.dataset, variant=f"{r.kind}: {r.name}", n=n)
        rec.add_metrics(r.metrics, CLASSIFICATION, **kw)
        if r.vs_baseline is not None:
            c = r.vs_baseline
            rec.add(metric="acc1_diff_vs_baseline", value=c.diff, ci=(c.ci_low, c.ci_high), seed=seed, **kw)
            rec.add(metric="mcnemar_p", value=c.p_value, **kw)


def record_probe(rec: RunRecorder, study) -> None:
    n = int(len(study.test_images.indices))
    base = dict(task="linear_probe", model=study.model, dataset=study.test, n=n)
    if study.zeroshot is not None:
        rec.add_metrics(study.zeroshot, CLASSIFICATION[:3], variant=f"zero-shot ({study.templates.name})",
                        **{**base, "task": "zeroshot_classification"})
    if study.linear is not None:
        lp = study.linear
        rec.add_metrics(lp.test_metrics, CLASSIFICATION[:3], variant="linear probe", **base)
        rec.add(metric="train_acc1", value=lp.train_metrics["acc1"], variant="linear probe", **base)
        rec.add(metric="weight_decay", value=lp.wd, variant="linear probe", **base)
        rec.add(metric="iterations", value=lp.model.iterations, variant="linear probe", **base)
        rec.add(metric="converged", value=float(lp.converged), variant="linear probe", **base)
        if lp.sweep is not None:  # every weight decay tried (non-headline metrics: stored, not in the summary)
            for p in lp.sweep.points:
                chosen = " (chosen)" if p.wd == lp.wd else ""
                kw = {**base, "variant": f"linear probe · sweep wd={p.wd:.2e}{chosen}"}
                rec.add(metric="sweep_train_acc1", value=p.train_acc, **{**kw, "n": lp.sweep.n_train})
                rec.add(metric="sweep_val_acc1", value=p.val_acc, **{**kw, "n": lp.sweep.n_val})
                rec.add(metric="sweep_iterations", value=p.iterations, **kw)
                rec.add(metric="sweep_converged", value=float(p.converged), **kw)
    for r in study.kshot:
        kw = {**base, "task": "kshot_probe", "variant": f"{r.variant} k={r.k}"}
        for s, acc in zip(r.seeds or [None] * len(r.accs), r.accs):
            rec.add(metric="acc1", value=acc, seed=s, **kw)
        if len(r.accs) > 1:
            rec.add(metric="acc1_mean", value=r.mean, **kw)
            rec.add(metric="acc1_std", value=r.std, **kw)


def record_attack(rec: RunRecorder, res) -> None:
    s = res.summary()
    kw = dict(task="typographic_attack", model=res.model, dataset=res.dataset, n=s["n"], seed=res.params.seed,
              variant=f"{res.template_set.name}; target={res.rule}")
    for k, v in s.items():
        if k != "n":
            rec.add(metric=k, value=v, **kw)


def record_inspection(rec: RunRecorder, ins, ds) -> None:
    """Top-1 candidate and its score per image (variant = image file name)."""
    for row, idx in enumerate(ins.images.indices):
        (label, cos, prob), = ins.ranking(row, 1)
        kw = dict(task="inspection", model=ins.model, dataset=ds, variant=f"{ins.paths[int(idx)].name}: {label}")
        rec.add(metric="top1_cosine", value=cos, **kw)
        rec.add(metric="top1_probability", value=prob, **kw)
