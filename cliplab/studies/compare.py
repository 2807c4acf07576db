"""Model comparison: several models x datasets, zero-shot (and optionally a linear probe) side by side."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from typing import TYPE_CHECKING

from cliplab.files import printable_value
from cliplab.inputs import (TEXTS, DATA_ROOT_P, DATASETS_P, LIMIT_P, MODELS_FILE_P, MODELS_P, PRETRAINEDS_P, RUN, SPLIT_P,
                            TEMPLATE_P, TRAIN_LIMIT_P, TRAIN_SPLIT_P, Fitting, Inputs, Templates)
from cliplab.models.facts import facts_of
from cliplab.params import param
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import grouped_bars, save_figure
from cliplab.report.rows import (DATA, MODEL, distinct, groups, latest, model_key, model_labels, natural_key, text,
                                 with_columns)
from cliplab.results.exports import TABLE_SUFFIXES
from cliplab.results.result import DatasetInfo, Failure, Figure, ModelInfo, ReportFigure, ReportSection, Table, pct
from cliplab.studies.probe import ProbeParams, run_probe
from cliplab.studies.zeroshot import run_zeroshot

if TYPE_CHECKING:
    from cliplab.data.base import ImageDataset
    from cliplab.models.base import LoadedModel
    from cliplab.models.specs import ModelSpec


@dataclass(frozen=True)
class CompareParams:
    """The comparison's own parameters."""
    probe: bool = param(False, "add a linear probe column (trained on {p:train_split}).")
    plot_top5: bool = param(False, "the {p:plot} figure shows zero-shot top-5 beside top-1 (a bar each per model).")


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
    backbone: str = ""  # image backbone with its patch size (cliplab.models.facts)
    resolution: int | None = None  # input side in pixels
    pretraining_data: str = ""  # as the weights' metadata records it, else unknown

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(repr=False)  # Notebook's repr: the summary and tables, not every field
class CompareResult(Notebook):
    """Several models on several datasets: one row per (model, dataset) with zero-shot (and linear-probe)
    accuracy (the study contract: :mod:`cliplab.results.result`; ``dataset`` is the first dataset compared).

    The zero-shot runs and probes it ran are kept as their metric rows and skipped inputs, not as objects, so
    that only one model is in memory at a time."""
    data: list[ImageDataset]  # the evaluated splits, in order
    models: list[ModelInfo] = field(default_factory=list)
    rows: list[CompareRow] = field(default_factory=list)
    parts: list[pd.DataFrame] = field(default_factory=list)  # metric rows of every zero-shot run and probe
    failures: list[Failure] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    plot_top5: bool = False  # the figure shows top-5 beside top-1 (a drawing choice: not in the record)
    task = "compare"

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.data[0])

    @property
    def has_probe(self) -> bool:
        return any(not math.isnan(r.probe_acc1) for r in self.rows)

    def metric_rows(self) -> pd.DataFrame:
        """The rows of every zero-shot run and linear probe, as those studies record them."""
        return pd.concat(self.parts, ignore_index=True)

    def summary(self) -> str:
        best = {}
        for r in self.rows:
            if r.dataset not in best or r.acc1 > best[r.dataset].acc1:
                best[r.dataset] = r
        return (f"compared {len(self.models)} model(s) on {len(self.data)} dataset(s); best zero-shot top-1: "
                + ", ".join(f"{d} {r.model} {pct(r.acc1)} %" for d, r in best.items()))

    def tables(self) -> list[Table]:
        cols = ["model", "dataset", "top-1 %", "top-5 %", "mean class recall %", "sim(true)", "probe test %",
                "probe train %", "images/s", "params (M)", "dim"]
        table = Table("model comparison (zero-shot" + (" vs linear probe)" if self.has_probe else ")"), cols,
                      right=frozenset(cols[2:]), wrap={"model": 60})
        for r in sorted(self.rows, key=lambda r: (r.dataset, -r.acc1)):
            table.rows.append([r.model, r.dataset, pct(r.acc1), pct(r.acc5), pct(r.mean_per_class_recall),
                               f"{r.mean_correct_similarity:.3f}", pct(r.probe_acc1), pct(r.probe_train_acc1),
                               "—" if math.isnan(r.images_per_second) else f"{r.images_per_second:,.0f}",
                               f"{r.num_params / 1e6:.2f}", str(r.embed_dim)])
        table.caption = "images/s: image-tower throughput when the embeddings were computed (cached runs keep it)"
        facts = Table("the models compared", ["model", "backbone", "res", "params (M)", "dim", "pretraining data"],
                      right=frozenset(["res", "params (M)", "dim"]), wrap={"model": 60})
        for r in {r.model: r for r in self.rows}.values():
            facts.rows.append([r.model, r.backbone, str(r.resolution or "unknown"), f"{r.num_params / 1e6:.2f}",
                               str(r.embed_dim), r.pretraining_data])
        facts.caption = ("params: both towers (sum of their parameters); pretraining data: as the weights' metadata "
                         "records it, else unknown")
        return [table, facts]

    def record(self) -> dict:
        return {"task": self.task, "models": [asdict(m) for m in self.models],
                "datasets": [{"name": d.name, "split": d.split, "dataset_fingerprint": d.fingerprint}
                             for d in self.data], **self.params, "rows": [r.as_dict() for r in self.rows]}

    def artifacts(self) -> dict:
        """``comparison``: the table, one row per (model, dataset); ``plot``: grouped bars, drawn to a path stem
        as STEM.png and STEM.svg (one figure: the SVG is the PNG's vector copy, not a figure of its own)."""
        def draw(stem: Path) -> list[tuple[Path, str | None]]:
            return [(p, caption if p.suffix == ".png" else None)
                    for p in compare_figures(self.rows, stem, top5=bool(self.plot_top5))]

        caption = "model comparison (zero-shot" + (" top-1 and top-5" if self.plot_top5 else "") + \
            " vs probe)"
        return {"comparison": pd.DataFrame([printable_value(r.as_dict()) for r in self.rows]),
                "plot": Figure(caption, draw, model=ModelInfo("several"))}


def run_compare(inputs: Inputs, params: CompareParams = CompareParams()) -> CompareResult:
    """Zero-shot (and linear probe) of every model on every dataset, each model loaded once, in turn: a
    :class:`CompareResult`."""
    from cliplab.models.base import LoadedModel

    options = inputs.options
    pairs = list(zip(inputs.datasets, inputs.fitting))
    sets = [ts[0] for ts in inputs.template_sets]
    run = CompareResult([test for test, _ in pairs], params={
        "specs": [_spec_params(s) for s in inputs.models],
        "templates": [ts.name for ts in sets], "probe": any(train is not None for _, train in pairs)})
    seen: set[Failure] = set()
    for spec in inputs.models:
        m = inputs.open_model(spec)
        run.models.append(ModelInfo.of(m))
        facts = facts_of(m)
        for (test, train), ts in zip(pairs, sets):
            zs = run_zeroshot(Inputs.of(m, test, template_sets=[ts], options=options))
            met = zs.evaluations[0].result.metrics
            row = CompareRow(m.name if isinstance(spec, LoadedModel) else spec.name, m.name, m.pretrained, test.name,
                             test.split, int(len(zs.images.indices)), len(test.classnames), met["acc1"],
                             met.get("acc5", float("nan")), met["mean_per_class_recall"],
                             met["mean_correct_similarity"], zs.images.images_per_second, m.num_params, m.embed_dim,
                             model_fingerprint=m.fingerprint, backbone=facts.backbone_text,
                             resolution=facts.resolution, pretraining_data=facts.pretraining_data)
            studies = [zs]
            if train is not None:
                probe = run_probe(Inputs.of(m, test, train=train, options=options), ProbeParams(kshot=()))
                row.probe_acc1 = probe.linear.test_metrics["acc1"]
                row.probe_train_acc1 = probe.linear.train_metrics["acc1"]
                studies.append(probe)
            run.rows.append(row)
            for study in studies:
                run.parts.append(study.metric_rows())
                new = [f for f in study.failures if f not in seen]
                seen.update(new)
                run.failures += new
    run.plot_top5 = params.plot_top5
    return run


def compare_figures(rows: list[CompareRow], stem: str | Path, top5: bool = False) -> list[Path]:
    """Grouped bars per dataset: zero-shot top-1 per model (``top5``: and top-5 beside it; and linear probe when
    present); PNG and SVG."""
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    models = list(dict.fromkeys(r.model for r in rows))
    cell = {(r.model, r.dataset): r for r in rows}
    chance = [1.0 / next(r.classes for r in rows if r.dataset == d) for d in datasets]
    series = {m: [cell[(m, d)].acc1 if (m, d) in cell else np.nan for d in datasets] for m in models}
    has_probe = any(not np.isnan(r.probe_acc1) for r in rows)
    if top5:
        series = {}
        for m in models:
            series[f"{m} · zero-shot top-1"] = [cell[(m, d)].acc1 if (m, d) in cell else np.nan for d in datasets]
            series[f"{m} · zero-shot top-5"] = [cell[(m, d)].acc5 if (m, d) in cell else np.nan for d in datasets]
            if has_probe:
                series[f"{m} · linear probe"] = [cell[(m, d)].probe_acc1 if (m, d) in cell else np.nan
                                                 for d in datasets]
    elif has_probe:
        series = {f"{m} · zero-shot": v for m, v in series.items()}
        for m in models:
            series[f"{m} · linear probe"] = [cell[(m, d)].probe_acc1 if (m, d) in cell else np.nan for d in datasets]
    fig = grouped_bars(datasets, series, ylabel="accuracy (%), dotted: top-1 chance" if top5 else "top-1 accuracy (%)",
                       title="model comparison", chance=chance)
    stem = Path(stem)
    return save_figure(fig, [stem.with_suffix(".png"), stem.with_suffix(".svg")])


# ---- how the HTML report shows this task (rows of a results store, any number of runs) ----
def comparison_figure(df: pd.DataFrame) -> list[ReportFigure]:
    """Grouped bars per dataset split: each model's zero-shot top-1 (the first template set of its latest run) and
    linear-probe top-1, a model per colour, labelled; models that share a name are told apart by their weights."""
    df = with_columns(df, ["task", "metric"])
    zs = _first_rows(df[(df.task == "zeroshot_classification") & (df.metric == "acc1")])
    lp = _first_rows(df[(df.task == "linear_probe") & (df.metric == "acc1")])
    models = list(dict.fromkeys(model_key(r) for r in zs + lp))
    if not zs or (len(models) < 2 and not lp):
        return []
    names = model_labels(models)
    data = sorted(dict.fromkeys(tuple(text(r[c]) for c in DATA) for r in zs + lp),
                  key=lambda d: tuple(natural_key(v) for v in d))  # the summary tables' order
    groups_ = distinct([{"dataset": d[0], "split": d[1], "data": f"data {d[2][:8]}"} for d in data],
                       ["dataset", "split", "data"], always="dataset")
    series: dict[str, list[float]] = {}
    for kind, rows in (("zero-shot", zs), ("linear probe", lp)):
        value = {(model_key(r), tuple(text(r[c]) for c in DATA)): r["value"] for r in rows}
        for m in models:
            if any(model_key(r) == m for r in rows):
                series[f"{names[m]} · {kind}"] = [value.get((m, d), np.nan) for d in data]
    fig = grouped_bars(groups_, series, ylabel="top-1 accuracy (%)", title="model comparison")
    sets = sorted({text(r["variant"]) for r in zs}, key=natural_key)
    return [ReportFigure("Model comparison", fig, "latest run per model and dataset split; zero-shot with the first "
                         "template set of that run (" + ", ".join(sets) + ")")]


def _first_rows(rows: pd.DataFrame) -> list[dict]:
    """Of each model on each dataset split, the first row of its latest run."""
    return [grp.iloc[0].to_dict() for _, grp in groups(latest(rows, (*MODEL, *DATA)), (*MODEL, *DATA))]


REPORT_SECTIONS = [
    ReportSection("compare", figures=comparison_figure, order=5),
]


def _spec_params(spec: ModelSpec | LoadedModel) -> dict:
    from cliplab.models.base import LoadedModel

    if isinstance(spec, LoadedModel):
        return {"model": spec.name, "pretrained": spec.pretrained, "label": spec.name}
    return {"model": spec.model, "pretrained": spec.pretrained, "label": spec.name}


STUDY = register(Study(
    "compare", run_compare, "Compare models on datasets: zero-shot (and linear probe) side by side, with bar charts.",
    description="Columns: top-1/top-5, similarity of the true class, images/s, parameters, embedding dimension.",
    params=CompareParams,
    inputs=(MODELS_P, PRETRAINEDS_P, MODELS_FILE_P, DATASETS_P, SPLIT_P, DATA_ROOT_P, LIMIT_P,
            TEMPLATE_P.with_(help="one template set for every dataset (default: each dataset's usual set)."),
            TRAIN_SPLIT_P.with_(help="split the probe is trained on (with {p:probe})."), TRAIN_LIMIT_P, *RUN, *TEXTS),
    fitting=Fitting(split="train_split", limit="train_limit", when="probe", purpose="probe training"),
    templates=Templates(ensemble=True, one=True),
    outputs=(Output("output", "comparison", "the table as .csv, .parquet or .jsonl.", TABLE_SUFFIXES, short="-o"),
             Output("plot", "plot", "grouped bar chart path stem: writes STEM.png and STEM.svg.",
                    beside=lambda p: [p.with_suffix(".png"), p.with_suffix(".svg")])),
    group="Classification studies", sections=tuple(REPORT_SECTIONS), order=40,
    example='cliplab.compare(["tiny-shapes", m2], "shapes:color", limit=200, quiet=True)'))
