"""Zero-shot study: embed images once, then evaluate any number of template sets against them."""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cliplab.embed import EmbeddingResult, class_text_embeddings, embed_images
from cliplab.files import printable
from cliplab.inputs import TEXTS, IMAGES, ONE_MODEL, RUN, TEMPLATES_P, Inputs, Templates
from cliplab.params import param
from cliplab.prompts import TemplateSet
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import FULL_WIDTH, class_recall_figure
from cliplab.report.rows import (DATA, MODEL, blank, distinct, groups, latest, model_key, model_labels, natural_key,
                                 text, with_columns)
from cliplab.results.exports import TABLE_SUFFIXES
from cliplab.results.result import (METRIC_NAME, DatasetInfo, Failure, ReportFigure, ReportSection, Rows, SingleModel,
                                    Table, packed_name, pct, skipped, tidy_metrics)
from cliplab.tasks.zeroshot import ClassScores, build_classifier, evaluate

if TYPE_CHECKING:
    from cliplab.data.base import ImageDataset
    from cliplab.models.base import LoadedModel



@dataclass(frozen=True)
class ZeroShotParams:
    """The zero-shot study's own parameters."""
    ensemble: bool = param(False, "merge all {p:templates} into one ensemble.")
    topk: int = param(5, "predictions kept per image (the top-k columns of the per-image predictions).", min=1)
    acc_at: tuple[int, ...] = param((1, 5), "the top-k accuracies reported, comma-separated (e.g. 1,3,5): in the "
                                    "table, the store, the JSON and the report (k above the number of classes counts "
                                    "every image).", min=1, flag="--acc-at")


@dataclass
class TemplateEvaluation:
    template_set: TemplateSet
    result: ClassScores
    text_seconds: float


@dataclass(repr=False)  # Notebook's repr: the summary and tables, not every field
class ZeroShotResult(SingleModel, Notebook):
    """Zero-shot classification of one dataset split, one evaluation per template set (the study contract:
    :mod:`cliplab.results.result`)."""
    model: LoadedModel
    data: ImageDataset
    images: EmbeddingResult
    labels: np.ndarray  # labels of the embedded images (aligned with images.indices)
    evaluations: list[TemplateEvaluation] = field(default_factory=list)
    seconds: float = 0.0
    topk: int = 5  # columns of the per-image predictions
    acc_at: tuple[int, ...] = (1, 5)  # the top-k accuracies reported
    task = "zeroshot_classification"

    @property
    def headline(self) -> tuple[str, ...]:
        """The metrics of the table, the store and the record: the top-k accuracies asked for, then the rest."""
        return (*[f"acc{k}" for k in self.acc_at], "mean_per_class_recall", "mean_correct_similarity")

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.data, int(len(self.images.indices)))

    @property
    def params(self) -> dict:
        return {"template_sets": [{"name": ev.template_set.name, "templates": list(ev.template_set.templates)}
                                  for ev in self.evaluations], "topk": self.topk, "acc_at": list(self.acc_at)}

    @property
    def failures(self) -> list[Failure]:
        return Failure.from_embedding(self.images.failures)

    def metric_rows(self) -> pd.DataFrame:
        rows = Rows()
        for ev in self.evaluations:
            kw = dict(task=self.task, model=self.model, dataset=self.data, variant=ev.template_set.name,
                      n=self.dataset.n)
            rows.add_metrics(ev.result.metrics, self.headline, **kw)
            rows.add(metric="images_per_second", value=self.images.images_per_second, **kw)
            for cname, r in zip(self.data.classnames, ev.result.metrics["per_class_recall"]):
                rows.add(metric=packed_name("recall", cname), value=r, **kw)
            confusion_rows(rows, ev.result.metrics["confusion"], self.data.classnames, **kw)
        return rows.frame()

    def summary(self) -> str:
        best = max(self.evaluations, key=lambda ev: ev.result.metrics["acc1"])
        return (f"zero-shot {self.model.name} on {self.data.name} ({self.data.split}, {self.dataset.n} images): "
                f"top-1 {pct(best.result.metrics['acc1'])} % with {best.template_set.name}")

    def tables(self) -> list[Table]:
        n_cls = len(self.data.classnames)
        accs = [f"top-{min(k, n_cls)} %" for k in self.acc_at]
        table = Table(f"zero-shot · {self.model.name} · {self.data.name} ({self.data.split}, "
                      f"{len(self.images.indices)} images, {n_cls} classes)",
                      ["templates", "#", *accs, "mean class recall %", "sim(true)"],
                      right=frozenset(["#", *accs, "mean class recall %", "sim(true)"]))
        for ev in self.evaluations:
            m = ev.result.metrics
            name = ev.template_set.name if len(ev.template_set.name) <= 40 else ev.template_set.name[:37] + "..."
            table.rows.append([name, str(len(ev.template_set.templates)), *[pct(m.get(f"acc{k}")) for k in self.acc_at],
                               pct(m["mean_per_class_recall"]), f"{m['mean_correct_similarity']:.3f}"])
        ips = self.images.images_per_second
        table.caption = (f"chance = {100 / n_cls:.1f} % · images/s = {ips:,.0f}" if not math.isnan(ips) else
                         f"chance = {100 / n_cls:.1f} %") + (f" · skipped {len(self.images.failures)} unreadable "
                                                              "images" if self.images.failures else "")
        return [table]

    def record(self) -> dict:
        """One CLIP_benchmark-style record (``dataset``, ``model``, ``pretrained``, ``task``, ``metrics``); metrics
        are those of the first template set, every set's metrics are under ``template_sets``."""
        def metrics_of(ev) -> dict:
            m = {k: ev.result.metrics[k] for k in self.headline if k in ev.result.metrics}
            m["images_per_second"] = self.images.images_per_second
            return m

        return {
            "dataset": self.data.name, "model": self.model.name, "pretrained": self.model.pretrained,
            "task": self.task, "metrics": metrics_of(self.evaluations[0]), "language": "en",
            "split": self.data.split,
            "template_sets": [
                {"name": ev.template_set.name, "templates": list(ev.template_set.templates),
                 "metrics": metrics_of(ev),
                 "per_class_recall": dict(zip(self.data.classnames, ev.result.metrics["per_class_recall"])),
                 "confusion": ev.result.metrics["confusion"]}
                for ev in self.evaluations],
            "classnames": self.data.classnames, "num_images": self.dataset.n,
            "skipped_images": skipped(self.failures), "model_fingerprint": self.model.fingerprint,
            "dataset_fingerprint": self.data.fingerprint,
            "timing": {"total_seconds": self.seconds, "image_embedding_seconds": self.images.seconds,
                       "images_computed": self.images.computed},
        }

    def artifacts(self) -> dict:
        return {"predictions": self.predictions}

    @property
    def predictions(self) -> pd.DataFrame:
        """Per image, for the first template set: see :meth:`predictions_for`."""
        return self.predictions_for(0)

    def predictions_for(self, template_index: int = 0) -> pd.DataFrame:
        """Per image: id, true label, whether top-1 is right, the true class's score, top-k labels and scores."""
        ev = self.evaluations[template_index]
        names = np.asarray(self.data.classnames, dtype=object)
        idx, sc = ev.result.top_predictions(self.topk)
        df = pd.DataFrame({
            "id": [printable(self.data.source.id(int(i))) for i in self.images.indices],
            "true_label": names[self.labels],
            "correct": idx[:, 0] == self.labels,
            "true_score": ev.result.scores[np.arange(len(self.labels)), self.labels],
        })
        for j in range(idx.shape[1]):
            df[f"top{j + 1}_label"] = names[idx[:, j]]
            df[f"top{j + 1}_score"] = sc[:, j]
        return df


def confusion_rows(rows: Rows, confusion, classnames, max_full: int = 30, top: int = 50, **kw) -> None:
    """The whole confusion matrix for up to ``max_full`` classes, else its ``top`` largest off-diagonal cells,
    as rows ``confusion[true -> predicted]`` (counts)."""
    cm = np.asarray(confusion)
    if len(cm) <= max_full:
        cells = [(i, j) for i in range(len(cm)) for j in range(len(cm))]
    else:
        off = cm.copy()
        np.fill_diagonal(off, 0)
        flat = np.argsort(-off, axis=None, kind="stable")[:top]
        cells = [tuple(np.unravel_index(f, cm.shape)) for f in flat if off.flat[f] > 0]
    for i, j in cells:
        rows.add(metric=packed_name("confusion", true=classnames[i], predicted=classnames[j]), value=int(cm[i, j]),
                 **kw)


def run_zeroshot(inputs: Inputs, params: ZeroShotParams = ZeroShotParams()) -> ZeroShotResult:
    """Zero-shot classification of the dataset with each template set: a :class:`ZeroShotResult`."""
    model, dataset, options = inputs.model, inputs.dataset, inputs.options
    dataset.require_classes("zero-shot classification")
    t0 = time.perf_counter()
    images = embed_images(model, dataset, options)
    labels = dataset.labels[images.indices]
    run = ZeroShotResult(model=model, data=dataset, images=images, labels=labels, topk=params.topk,
                         acc_at=tuple(params.acc_at))
    for ts in inputs.templates:
        t1 = time.perf_counter()
        classifier = build_classifier(class_text_embeddings(model, dataset.classnames, ts, options))
        text_seconds = time.perf_counter() - t1
        run.evaluations.append(TemplateEvaluation(ts, evaluate(images.embeddings, labels, classifier,
                                                               tuple(params.acc_at)), text_seconds))
    run.seconds = time.perf_counter() - t0
    return run


# ---- how the HTML report shows this task (rows of a results store, any number of runs) ----
EVALUATION = (*MODEL, *DATA, "n", "variant")  # one evaluation: a model on a dataset split with one template set
MAX_CLASSES = 40  # classes drawn per figure; beyond that the 20 with the lowest and the 20 with the highest recall
MAX_COLUMNS = 10  # evaluations side by side in one figure


@dataclass
class _Evaluation:
    """The stored per-class rows of one evaluation (the latest run of its key)."""
    key: dict
    recall: dict[str, float]  # class -> recall (fraction)
    confusion: dict[tuple[str, str], float]  # (true, predicted) -> count
    acc1: float


def _evaluations(df: pd.DataFrame) -> list[_Evaluation]:
    if METRIC_NAME not in df:  # rows as a study makes them (packed names): tidy them, as .metrics does
        df = tidy_metrics(df)
    zs = with_columns(df, ["task", "metric", "value"])
    zs = zs[(zs.task == "zeroshot_classification") & zs.metric.isin(("recall", "confusion", "acc1"))]
    # of each evaluation, the latest run that has per-class rows (a probe's zero-shot rows have none: they would
    # hide the per-class rows of a zero-shot run of the same model, data and template set)
    per_class = set(zs.loc[zs.metric == "recall", "run_id"].map(text)) if "run_id" in zs else set()
    if "run_id" in zs:
        zs = zs[zs.run_id.map(text).isin(per_class)]
    out = []
    for key, rows in groups(latest(zs, EVALUATION), EVALUATION):
        rec = rows[rows.metric == "recall"]
        if rec.empty:
            continue
        conf = rows[(rows.metric == "confusion") & rows["true"].notna() & rows["predicted"].notna()]
        acc = rows[rows.metric == "acc1"].value
        out.append(_Evaluation(key, dict(zip(rec["class"], rec.value.astype(float))),
                               {(t, p): float(v) for t, p, v in zip(conf["true"], conf["predicted"], conf.value)},
                               float(acc.iloc[0]) if len(acc) and not blank(acc.iloc[0]) else float("nan")))
    # datasets in the summary table's order; models in the order the store first has them, whichever run of
    # theirs is the latest
    models = list(dict.fromkeys(model_key(r) for r in zs.to_dict(orient="records")))
    return sorted(out, key=lambda ev: (natural_key(text(ev.key["dataset"])), natural_key(text(ev.key["split"])),
                                       models.index(model_key(ev.key))))


def per_class_figures(df: pd.DataFrame) -> list[ReportFigure]:
    """Per dataset split: the per-class recall of every evaluation side by side (a column per model and template
    set, each labelled) and, per model, the confusions of its best template set. A figure holds at most
    ``MAX_COLUMNS`` evaluations; more make more figures."""
    by_data: dict[tuple, list[_Evaluation]] = {}
    evaluations = _evaluations(df)
    names = model_labels(model_key(ev.key) for ev in evaluations)
    for ev in evaluations:
        by_data.setdefault((text(ev.key["dataset"]), text(ev.key["split"])), []).append(ev)
    out = []
    for evs in by_data.values():
        parts = math.ceil(len(evs) / MAX_COLUMNS)
        for start in range(0, len(evs), MAX_COLUMNS):
            out.append(_per_class_figure(evs[start:start + MAX_COLUMNS], names, (start // MAX_COLUMNS + 1, parts)))
    return out


def _per_class_figure(evs: list[_Evaluation], names: dict, part: tuple[int, int]) -> ReportFigure:
    models = list(dict.fromkeys(model_key(ev.key) for ev in evs))
    columns = distinct([{"model": names[model_key(ev.key)], "variant": ev.key["variant"],
                         "n": f"n={text(ev.key['n'])}", "data": f"data {text(ev.key['dataset_fingerprint'])[:8]}"}
                        for ev in evs], ["model", "variant", "n", "data"], always="variant")
    classes = list(dict.fromkeys(c for ev in evs for c in ev.recall))
    recall = np.array([[ev.recall.get(c, np.nan) for ev in evs] for c in classes], dtype=float) * 100
    shown, which = np.arange(len(classes)), "every class"
    if len(classes) > MAX_CLASSES:
        half = MAX_CLASSES // 2
        order = np.argsort(np.nanmean(recall, axis=1), kind="stable")
        shown = np.concatenate([order[:half], order[-half:]])
        which = f"the {half} classes with the lowest and the {half} with the highest mean recall"
    best = {m: max((ev for ev in evs if model_key(ev.key) == m), key=lambda ev: -1.0 if math.isnan(ev.acc1)
                   else ev.acc1) for m in models}
    first = evs[0].key
    data = f"{text(first['dataset'])} ({text(first['split'])})" if text(first["split"]) else text(first["dataset"])
    who = names[models[0]] if len(models) == 1 else ", ".join(names[m] for m in models)
    sets = {m: sum(model_key(ev.key) == m for ev in evs) for m in models}  # of several: the best one's confusions
    several = max(sets.values()) > 1
    fig = class_recall_figure(
        recall[shown], [classes[i] for i in shown], columns,
        [(f"{names[m]} · {best[m].key['variant']}" + (" (best top-1)" if sets[m] > 1 else ""), classes,
          best[m].confusion) for m in models],
        title=f"zero-shot per-class recall · {data}" + (f" · {who}" if len(models) == 1 else "")
        + (f" · part {part[0]} of {part[1]}" if part[1] > 1 else ""), width=FULL_WIDTH)
    whose = ("each model's" if len(models) > 1 else "the") + (" template set with the best top-1" if several else "")
    caption = (f"recall (%) of {which} for each {'model and ' if len(models) > 1 else ''}template set (the latest run "
               f"of each); confusions of {whose}, rows normalised to 100 %")
    return ReportFigure(f"Per-class recall: {who} on {data}" + (f" (part {part[0]} of {part[1]})" if part[1] > 1
                                                                else ""), fig, caption)


def clip_benchmark_records(df: pd.DataFrame) -> list[dict]:
    """One CLIP_benchmark zero-shot classification record per run and template set of the store."""
    out = []
    for (run_id, model, pre, ds, variant), g in df.groupby(["run_id", "model", "pretrained", "dataset", "variant"],
                                                           dropna=False, sort=False):
        m = {k: v for k, v in zip(g.metric, g.value) if re.fullmatch(r"acc\d+|mean_per_class_recall", k)}
        if m:
            out.append({"dataset": ds, "model": model, "pretrained": pre, "task": "zeroshot_classification",
                        "metrics": m, "language": "en", "templates": variant, "run_id": run_id})
    return out


REPORT_SECTIONS = [ReportSection(
    "zeroshot_classification", ("acc1", "acc2", "acc3", "acc5", "acc10", "mean_per_class_recall",
                                "mean_correct_similarity", "images_per_second"),
    rates=r"acc\d|mean_per_class_recall", figures=per_class_figures, clip_benchmark=clip_benchmark_records, order=10)]

STUDY = register(Study(
    "zeroshot", run_zeroshot, "Zero-shot classification: top-1/top-5, mean per-class recall, confusion, per-image "
    "predictions.",
    params=ZeroShotParams,
    inputs=(*ONE_MODEL, *IMAGES, TEMPLATES_P.with_(help=TEMPLATES_P.help + " Each value is evaluated separately "
                                                   "({p:ensemble} merges them)."), *RUN, *TEXTS),
    templates=Templates(ensemble="ensemble"),
    outputs=(Output("output", "record", "results JSON (CLIP_benchmark shape + config).", (".json",), short="-o"),
             Output("predictions", "predictions", "per-image table: true label, top-k labels and scores (first "
                    "template set).", TABLE_SUFFIXES)),
    group="Classification studies", sections=tuple(REPORT_SECTIONS), order=10,
    returns="``.metrics`` (long-format DataFrame), ``.predictions`` (per image), ``.record()`` (CLIP_benchmark-"
            "shaped dict); shows its tables and per-class figure inline in Jupyter.",
    example='m = cliplab.load_model("tiny-shapes")\nr = cliplab.zeroshot(m, "shapes:color", limit=200, quiet=True)\n'
            'r.metrics.query("metric == \'acc1\'").value.iloc[0] > 0.5'))
