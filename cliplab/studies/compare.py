"""Model comparison: several models x datasets, zero-shot (and optionally a linear probe) side by side."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cliplab.data.base import ImageDataset
from cliplab.models.specs import ModelSpec
from cliplab.prompts import TemplateSet


@dataclass
class CompareRow:
    model: str  # display name
    model_name: str
    pretrained: str | None
    dataset: str
    split: str
    images: int
    classes: int
    acc1: float
    acc5: float
    mean_per_class_recall: float
    mean_correct_similarity: float
    images_per_second: float
    num_params: int
    embed_dim: int
    probe_acc1: float = float("nan")
    probe_train_acc1: float = float("nan")
    model_fingerprint: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def run_compare(specs: list[ModelSpec], datasets: list[tuple[ImageDataset, ImageDataset | None]],
                template_sets: list[TemplateSet], cache_dir=None, *, device=None, precision=None, batch_size=64,
                num_workers=None, quiet=False, recorder=None) -> list[CompareRow]:
    """``datasets``: (test split, train split or None); a train split adds the linear probe column.
    ``template_sets[i]`` is used for ``datasets[i]``. Each model is loaded once."""
    from cliplab.models import load_model
    from cliplab.results.rows import record_probe
    from cliplab.studies.probe import run_probe
    from cliplab.studies.zeroshot import run_zeroshot

    rows = []
    for spec in specs:
        m = load_model(spec.model, spec.pretrained, device=device, precision=precision, cache_dir=cache_dir)
        for (test, train), ts in zip(datasets, template_sets):
            run = run_zeroshot(m, test, [ts], cache_dir, batch_size=batch_size, num_workers=num_workers, quiet=quiet)
            met = run.evaluations[0].result.metrics
            row = CompareRow(spec.name, m.name, m.pretrained, test.name, test.split, int(len(run.images.indices)),
                             len(test.classnames), met["acc1"], met.get("acc5", float("nan")),
                             met["mean_per_class_recall"], met["mean_correct_similarity"],
                             run.images.images_per_second, m.num_params, m.embed_dim, model_fingerprint=m.fingerprint)
            if recorder is not None:
                recorder.add_result(run)
            if train is not None:
                study = run_probe(m, train, test, cache_dir, kshots=(), device=m.device, batch_size=batch_size,
                                  num_workers=num_workers, quiet=quiet)
                row.probe_acc1 = study.linear.test_metrics["acc1"]
                row.probe_train_acc1 = study.linear.train_metrics["acc1"]
                if recorder is not None:
                    record_probe(recorder, study)
            rows.append(row)
    return rows


def compare_figures(rows: list[CompareRow], stem: str | Path) -> list[Path]:
    """Grouped bars per dataset: zero-shot top-1 per model (and linear probe when present); PNG and SVG."""
    from cliplab.report.plots import grouped_bars, save_figure

    datasets = list(dict.fromkeys(r.dataset for r in rows))
    models = list(dict.fromkeys(r.model for r in rows))
    cell = {(r.model, r.dataset): r for r in rows}
    chance = [1.0 / next(r.classes for r in rows if r.dataset == d) for d in datasets]
    series = {m: [cell[(m, d)].acc1 if (m, d) in cell else np.nan for d in datasets] for m in models}
    has_probe = any(not np.isnan(r.probe_acc1) for r in rows)
    if has_probe:
        series = {f"{m} · zero-shot": v for m, v in series.items()}
        for m in models:
            series[f"{m} · linear probe"] = [cell[(m, d)].probe_acc1 if (m, d) in cell else np.nan for d in datasets]
    fig = grouped_bars(datasets, series, ylabel="top-1 accuracy (%)", title="model comparison", chance=chance)
    stem = Path(stem)
    return save_figure(fig, [stem.with_suffix(".png"), stem.with_suffix(".svg")])
