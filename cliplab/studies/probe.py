"""Probe study: linear probe (weight-decay sweep, refit) and k-shot probes on cached embeddings, beside zero-shot.

Images of both splits are embedded once (cached); every probe, seed and k reuses those arrays.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from typing import TYPE_CHECKING

from cliplab.threads import catch_warnings
from cliplab.data.base import check_disjoint
from cliplab.embed import EmbeddingResult, class_text_embeddings, embed_images
from cliplab.inputs import (TEXTS, CLASSNAMES_P, DATA_ROOT_P, DATASET_P, LIMIT_P, ONE_MODEL, RUN, SPLIT_P,
                            TEMPLATE_P, TRAIN_LIMIT_P, TRAIN_SPLIT_P, Fitting, Inputs, Templates)
from cliplab.errors import ParameterError
from cliplab.fit_memo import FitMemo
from cliplab.params import DATASET, Param, param
from cliplab.progress import note, progress_bar, warn
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import TEXT_PT, _plt
from cliplab.report.rows import DATA, MODEL, groups, latest, model_key, model_labels, text, with_columns
from cliplab.results.result import DatasetInfo, Failure, ReportFigure, ReportSection, Rows, SingleModel, Table, pct
from cliplab.tasks.zeroshot import build_classifier, evaluate

if TYPE_CHECKING:  # tasks.probe fits in torch: imported when a probe is fitted
    from cliplab.data.base import ImageDataset
    from cliplab.tasks.probe import KShotRow, ProbeFit
    from cliplab.models.base import LoadedModel
    from cliplab.prompts import TemplateSet


HEADLINE = ("acc1", "acc5", "mean_per_class_recall")


@dataclass(frozen=True)
class ProbeParams:
    """The probe study's own parameters."""
    kshot: tuple[int, ...] = param((1, 2, 4, 8, 16), "shots per class for k-shot probes, comma-separated ('' or 0 = "
                                   "none).", min=0)
    seeds: int = param(3, "k-shot repetitions with different samples.", min=1)
    linear: bool = param(True, "the full-data linear probe.")
    zeroshot_init: bool = param(True, "also fit k-shot probes anchored at the zero-shot classifier (both are "
                                "reported).")
    wd: float | None = param(None, "a fixed weight decay for the linear probe (default: swept on the validation "
                             "part).", min=0.0)
    val_fraction: float = param(0.2, "share of the training split the weight decay is chosen on.", min=0.01, max=0.9)
    seed: int = param(0, "the seed of the validation part and of the first k-shot sample.")
    allow_fewer: bool = param(False, "let a class with fewer training images than k train a k-shot probe on the images "
                              "it has (the row says so); without it, such a k is an error.")


TRAIN = Param("train", DATASET, None, optional=True, help=(
    "what the probes are trained on when it is not {p:train_split} of {p:dataset}: another dataset (its "
    "{p:train_split}; in Python also a loaded dataset)."))


@dataclass(repr=False)  # Notebook's repr: the summary and tables, not every field
class ProbeResult(SingleModel, Notebook):
    """Linear and k-shot probes trained on one split and tested on another, beside zero-shot (the study contract:
    :mod:`cliplab.results.result`; ``dataset`` is the test split)."""
    model: LoadedModel
    train: ImageDataset
    test: ImageDataset
    train_images: EmbeddingResult
    test_images: EmbeddingResult
    zeroshot: dict | None = None  # metrics of the zero-shot classifier on test
    templates: TemplateSet | None = None
    linear: ProbeFit | None = None
    kshot: list[KShotRow] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # unconverged fits, a weight decay chosen at a grid edge
    fewer: dict = field(default_factory=dict)  # k -> (classes with fewer than k shots, their fewest), allow_fewer
    params: dict = field(default_factory=dict)  # what the study was asked for (k, seeds, weight decay, ...)
    reused: int = 0  # probe results (the linear probe, the k-shot sweep) taken from the fit memo, not refitted
    task = "linear_probe"

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.test, int(len(self.test_images.indices)))

    @property
    def failures(self) -> list[Failure]:
        return Failure.from_embedding(self.train_images.failures + self.test_images.failures)

    def metric_rows(self) -> pd.DataFrame:
        """Zero-shot and linear-probe test metrics, the probe's fit (and every weight decay of its sweep), each
        k-shot accuracy per seed (with mean and std over seeds)."""
        rows = Rows()
        base = dict(task=self.task, model=self.model, dataset=self.test, n=self.dataset.n)
        if self.zeroshot is not None:  # named as a zero-shot run names it: its task, the template set's name
            rows.add_metrics(self.zeroshot, HEADLINE, variant=self.templates.name,
                             **{**base, "task": "zeroshot_classification"})
        if self.linear is not None:
            lp = self.linear
            rows.add_metrics(lp.test_metrics, HEADLINE, variant="linear probe", **base)
            rows.add(metric="train_acc1", value=lp.train_metrics["acc1"], variant="linear probe", **base)
            rows.add(metric="weight_decay", value=lp.wd, variant="linear probe", **base)
            rows.add(metric="iterations", value=lp.model.iterations, variant="linear probe", **base)
            rows.add(metric="converged", value=float(lp.converged), variant="linear probe", **base)
            if lp.sweep is not None:  # every weight decay tried (non-headline metrics: stored, not in the summary)
                for p in lp.sweep.points:
                    chosen = " (chosen)" if p.wd == lp.wd else ""
                    kw = {**base, "variant": f"linear probe · sweep wd={p.wd:.2e}{chosen}"}
                    rows.add(metric="sweep_train_acc1", value=p.train_acc, **{**kw, "n": lp.sweep.n_train})
                    rows.add(metric="sweep_val_acc1", value=p.val_acc, **{**kw, "n": lp.sweep.n_val})
                    rows.add(metric="sweep_iterations", value=p.iterations, **kw)
                    rows.add(metric="sweep_converged", value=float(p.converged), **kw)
        for r in self.kshot:
            if r.k == 0:  # the zero-shot baseline: its accuracy is the zeroshot_classification acc1 above
                continue
            fewer = self.fewer.get(r.k) if r.k else None
            mark = f" (fewer for {fewer[0]} classes, min {fewer[1]})" if fewer else ""
            kw = {**base, "task": "kshot_probe", "variant": f"{r.variant} k={r.k}{mark}"}
            for s, acc in zip(r.seeds or [None] * len(r.accs), r.accs):
                rows.add(metric="acc1", value=acc, seed=s, **kw)
            if len(r.accs) > 1:
                rows.add(metric="acc1_mean", value=r.mean, **kw)
                rows.add(metric="acc1_std", value=r.std, **kw)
        return rows.frame()

    def summary(self) -> str:
        parts = []
        if self.zeroshot is not None:
            parts.append(f"zero-shot {pct(self.zeroshot['acc1'])} %")
        if self.linear is not None:
            parts.append(f"linear probe {pct(self.linear.test_metrics['acc1'])} %")
        parts += [f"{r.variant} k={r.k} {pct(r.mean)} %" for r in self.kshot if r.k]
        return (f"probes {self.model.name} on {self.test.name} (train {self.train.split}, test {self.test.split}, "
                f"{self.dataset.n} images): top-1 " + ", ".join(parts))

    def tables(self) -> list[Table]:
        """Every classifier's accuracy; the linear probe's weight-decay sweep (when it swept)."""
        n_cls = len(self.test.classnames)
        cols = ["classifier", "shots/class", "train top-1 %", "test top-1 %", f"test top-{min(5, n_cls)} %",
                "mean class recall %", "weight decay"]
        table = Table(f"probes · {self.model.name} · {self.test.name} (train: {self.train.split} "
                      f"{len(self.train_images.indices)} images, test: {self.test.split} "
                      f"{len(self.test_images.indices)} images, {n_cls} classes)", cols, right=frozenset(cols[1:]))
        if self.zeroshot is not None:
            z = self.zeroshot
            table.rows.append([f"zero-shot ({self.templates.name})", "0", "", pct(z["acc1"]), pct(z.get("acc5")),
                               pct(z["mean_per_class_recall"]), ""])
        if self.linear is not None:
            lp = self.linear
            table.rows.append(["linear probe", "all", pct(lp.train_metrics["acc1"]), pct(lp.test_metrics["acc1"]),
                               pct(lp.test_metrics.get("acc5")), pct(lp.test_metrics["mean_per_class_recall"]),
                               f"{lp.wd:.1e}"])
        for r in self.kshot:
            if r.k == 0:
                continue
            acc = f"{100 * r.mean:.2f} ± {100 * r.std:.2f}" if len(r.accs) > 1 else pct(r.mean)
            table.rows.append([r.variant, str(r.k), "", acc, "", "", f"{np.median(r.wds):.1e}"])
        seeds = max((len(r.accs) for r in self.kshot if r.k), default=0)
        table.caption = (f"chance = {100 / n_cls:.1f} % · k-shot: mean ± std over {seeds} seeds, weight decay "
                         "chosen on a validation part of the train split" if seeds else f"chance = {100 / n_cls:.1f} %")
        if self.linear is not None:
            lp = self.linear
            state = "converged" if lp.converged else "NOT converged (see warnings)"
            table.caption += (f" · linear probe refit: {lp.model.iterations} L-BFGS iterations, {state} "
                              f"(max |gradient| ≤ {lp.tol:.0e})")
        sweep = self.sweep_table()
        return [table] if sweep is None else [table, sweep]

    def sweep_table(self) -> Table | None:
        """The linear probe's weight-decay sweep: train and validation accuracy of every grid point, the choice."""
        sw = self.linear.sweep if self.linear is not None else None
        if sw is None:
            return None
        cols = ["weight decay", "C = 1/(wd·n)", "train top-1 %", "val top-1 %", "iterations", "converged", ""]
        table = Table(f"linear probe weight-decay sweep (fit on {sw.n_train} train images, chosen on "
                      f"{sw.n_val} validation images of the {self.train.split} split)", cols, right=frozenset(cols))
        for p in sw.points:
            mark = "◀ chosen" if p.wd == sw.best else ("added" if p.added else "")
            table.rows.append([f"{p.wd:.1e}", f"{1 / (p.wd * sw.n_train):.3g}", pct(p.train_acc), pct(p.val_acc),
                               str(p.iterations), "yes" if p.converged else "NO", mark])
        notes = ["best = highest validation accuracy, ties to the larger weight decay"]
        if sw.extended:
            notes.append(f"{len(sw.extended)} point(s) added beyond the grid's end where the choice sat")
        if sw.edge:
            notes.append(f"the choice is still at the {sw.edge} end of the grid: pass a wider grid")
        table.caption = " · ".join(notes)
        return table

    def record(self) -> dict:
        """CLIP_benchmark-style ``metrics`` (the linear probe's test metrics), the zero-shot metrics, the linear
        probe with its sweep and per-class recall, the k-shot accuracies and the warnings."""
        def metrics(m):
            return {k: m[k] for k in HEADLINE if k in m}

        out = {"dataset": self.test.name, "model": self.model.name, "pretrained": self.model.pretrained,
               "task": self.task, "split": self.test.split, "train_split": self.train.split,
               "classnames": self.test.classnames, "num_train": int(len(self.train_images.indices)),
               "num_test": int(len(self.test_images.indices)), "model_fingerprint": self.model.fingerprint,
               "dataset_fingerprint": self.test.fingerprint, "timing": self.seconds}
        if self.zeroshot is not None:
            out["zeroshot"] = metrics(self.zeroshot)
        if self.linear is not None:
            lp = self.linear
            out["metrics"] = metrics(lp.test_metrics)
            out["linear_probe"] = {
                "weight_decay": lp.wd, "train": metrics(lp.train_metrics), "test": metrics(lp.test_metrics),
                "val_curve": lp.val_curve, "n_val": lp.n_val, "iterations": lp.model.iterations,
                "converged": lp.converged, "tol": lp.tol, "max_iter": lp.max_iter,
                "sweep": None if lp.sweep is None else {
                    "n_train": lp.sweep.n_train, "n_val": lp.sweep.n_val, "edge": lp.sweep.edge,
                    "points": [{"weight_decay": p.wd, "C": 1 / (p.wd * lp.sweep.n_train), "train_acc1": p.train_acc,
                                "val_acc1": p.val_acc, "iterations": p.iterations, "converged": p.converged,
                                "max_abs_gradient": p.grad_max, "added": p.added, "chosen": p.wd == lp.wd}
                               for p in lp.sweep.points]},
                "per_class_recall": dict(zip(self.test.classnames, lp.test_metrics["per_class_recall"]))}
        out["warnings"] = list(self.warnings)
        out["kshot"] = [{"k": r.k, "variant": r.variant, "acc1": r.accs, "seeds": r.seeds, "mean": r.mean,
                         "std": r.std, "weight_decay": r.wds} for r in self.kshot]
        return out

    def artifacts(self) -> dict:
        return {}


@contextmanager
def _probe_warnings(study: ProbeResult):
    """Probe warnings go to the current progress as one ``warning:`` each (and are kept on the study); others pass
    through."""
    from cliplab.tasks.probe import ProbeWarning

    with catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProbeWarning)
        yield
    for w in caught:
        if issubclass(w.category, ProbeWarning):
            study.warnings.append(str(w.message))
            warn(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _short_classes(labels: np.ndarray, classnames: list[str], ks, val_fraction: float, split: str,
                   allow: bool) -> dict[int, tuple[int, int]]:
    """k -> (number of classes with fewer than k images to draw shots from, their fewest) -- an error unless
    ``allow``: a "k-shot" row computed from fewer images would say what it is not."""
    from cliplab.tasks.probe import stratified_split

    part, _ = stratified_split(labels, val_fraction, seed=12345)  # the part kshot_probes draws the shots from
    counts = np.bincount(labels[part], minlength=len(classnames))
    out = {}
    for k in ks:
        short = np.flatnonzero(counts < k)
        if not len(short):
            continue
        if not allow:
            c = int(short[np.argmin(counts[short])])
            raise ParameterError("kshot", k, f"class {classnames[c]!r} has only {int(counts[c])} image(s) to draw "
                                 f"{k} shots from (the {split!r} split, less the {val_fraction:.0%} held out to choose "
                                 f"the weight decay), and {len(short)} class(es) have fewer than {k}: lower "
                                 "{p:kshot}, or pass {p:allow_fewer} to train those classes on the images they have "
                                 "(the rows say so)")
        out[k] = (len(short), int(counts[short].min()))
    return out


def _check(train: ImageDataset, test: ImageDataset, options) -> None:
    for ds in (train, test):
        ds.require_classes("a probe")
    check_disjoint(train, test, "probe training", options.cache_dir if options.use_cache else None)


def _device_kind(device) -> str:
    """'cpu' / 'cuda' / 'mps': the fits' numbers may differ between kinds of device, not between two GPUs' indices."""
    return str(getattr(device, "type", device)).split(":")[0]


def run_probe(inputs: Inputs, params: ProbeParams = ProbeParams()) -> ProbeResult:
    """Linear and k-shot probes trained on the fitted split, tested on the evaluated one beside zero-shot: a
    :class:`ProbeResult`."""
    model, train, test, options = inputs.model, inputs.train, inputs.dataset, inputs.options
    templates = inputs.templates[0] if inputs.templates else None
    linear, kshots, zeroshot_init = params.linear, [k for k in params.kshot if k > 0], params.zeroshot_init
    seeds, wd, val_fraction, seed = tuple(range(params.seed, params.seed + params.seeds)), params.wd, \
        params.val_fraction, params.seed
    device = model.device
    from cliplab.tasks.probe import DEFAULT_WD_GRID, kshot_probes, linear_probe
    _check(train, test, options)
    if kshots:  # before any image is embedded: the dataset's labels (the exact check follows the embedding)
        _short_classes(train.labels, train.classnames, kshots, val_fraction, train.split, params.allow_fewer)
    t0 = time.perf_counter()
    tr = embed_images(model, train, options, description=f"embedding {train.split}")
    te = embed_images(model, test, options, description=f"embedding {test.split}")
    study = ProbeResult(model, train, test, tr, te, templates=templates, params={
        "templates": templates.name if templates is not None else None, "linear": linear, "kshots": list(kshots),
        "seeds": list(seeds), "zeroshot_init": zeroshot_init, "wd": wd, "val_fraction": val_fraction, "seed": seed})
    study.seconds["images"] = time.perf_counter() - t0
    import cliplab.tasks.probe as solver
    memo = FitMemo(options.cache_dir if options.use_cache else None, (solver,))
    Xtr, ytr = tr.embeddings, train.labels[tr.indices]
    Xte, yte = te.embeddings, test.labels[te.indices]
    C = len(train.classnames)
    zs_weights = None
    if templates is not None:
        zs_weights = build_classifier(class_text_embeddings(model, train.classnames, templates, options))
        study.zeroshot = evaluate(Xte, yte, zs_weights).metrics
    if linear:
        t1 = time.perf_counter()
        n_sweep = 0 if wd is not None else len(DEFAULT_WD_GRID)
        with progress_bar(n_sweep + 1, "linear probe (weight-decay sweep + refit)", unit="fits") as bar, \
                _probe_warnings(study):
            def on_fit(done, total):
                bar.set_total(total + 1)
                bar.advance()

            hits = memo.hits
            data, fit = (Xtr, ytr, Xte, yte, C), dict(wd=wd, val_fraction=val_fraction, seed=seed)  # the key is the call
            study.linear = memo.get("linear", [data, fit, _device_kind(device)],
                                    lambda: linear_probe(*data, **fit, device=device, on_fit=on_fit))
            if memo.hits > hits:  # reused: no fits ran, the bar ends complete
                bar.set_total(1)
            bar.advance()
        study.seconds["linear"] = time.perf_counter() - t1
    if kshots:
        study.fewer = _short_classes(ytr, train.classnames, kshots, val_fraction, train.split, params.allow_fewer)
        t1 = time.perf_counter()
        n_fits = len(kshots) * len(seeds) * (2 if zeroshot_init and zs_weights is not None else 1)
        with progress_bar(n_fits, "k-shot probes", unit="fits") as bar, _probe_warnings(study):
            hits = memo.hits
            data = (Xtr, ytr, Xte, yte, C)
            fit = dict(ks=tuple(kshots), seeds=tuple(seeds), zeroshot_weights=zs_weights if zeroshot_init else None,
                       logit_scale=float(model.logit_scale), val_fraction=val_fraction)  # the key is the call
            study.kshot = memo.get("kshot", [data, fit, _device_kind(device)],
                                   lambda: kshot_probes(*data, **fit, device=device, on_fit=bar.advance))
            if memo.hits > hits:
                bar.advance(n_fits)
        study.seconds["kshot"] = time.perf_counter() - t1
    if memo.hits:
        study.reused = memo.hits
        note(f"probe fits reused: {memo.hits} of {memo.hits + memo.misses} probe results came from the cache "
             f"({memo.folder}), where nothing they depend on changed (embeddings, labels, parameters, solver code)")
    study.seconds["total"] = time.perf_counter() - t0
    return study


# ---- how the HTML report shows this task (rows of a results store, any number of runs) ----
def kshot_figures(df: pd.DataFrame) -> list[ReportFigure]:
    """Per model and dataset split (the latest run of each): test top-1 against shots per class, a line per probe
    (mean ± std over seeds), zero-shot as a dashed line."""
    plt = _plt()
    out = []
    df = with_columns(df, ["task", "metric"])
    ks = df[(df.task == "kshot_probe") & (df.metric == "acc1")]
    # the zero-shot baseline: the probe run's own zeroshot_classification top-1 (stores written before issue 24 also
    # held it as the k-shot variant 'zero-shot k=0')
    zs = with_columns(df, ["run_id", "variant"])
    zs = zs[(zs.task == "zeroshot_classification") & (zs.metric == "acc1")]
    names = model_labels(model_key(r) for r in ks.to_dict(orient="records"))
    for key, run in groups(latest(ks, (*MODEL, *DATA)), (*MODEL, *DATA)):
        parsed = run.variant.str.extract(r"^(?P<name>.*) k=(?P<k>\d+)$")
        run = run.assign(name=parsed["name"], k=pd.to_numeric(parsed["k"])).dropna(subset=["k"])
        if run.empty:
            continue
        own = zs[zs.run_id.map(text).isin(set(run.run_id.map(text)) if "run_id" in run else {""})]
        for c in (*MODEL, *DATA):
            own = own[own[c].map(text) == text(key[c])]
        fig, ax = plt.subplots(figsize=(6.5, 4))
        if not own.empty and not (run.name == "zero-shot").any():
            ax.axhline(own.value.iloc[0] * 100, color="grey", linestyle="--", label="zero-shot")
        for name, grp in run.groupby("name", sort=False):
            if name == "zero-shot":
                ax.axhline(grp.value.mean() * 100, color="grey", linestyle="--", label="zero-shot")
                continue
            stats = grp.groupby("k").value.agg(["mean", "std"]).fillna(0)
            ax.errorbar(stats.index, stats["mean"] * 100, yerr=stats["std"] * 100, marker="o", capsize=3, label=name)
        shots = sorted(k for k in run.k.unique() if k > 0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(int(k)) for k in shots])
        ax.minorticks_off()
        ax.set_xlabel("shots per class")
        ax.set_ylabel("test top-1 (%), mean ± std over seeds")
        model, data = names[model_key(key)], text(key["dataset"])
        ax.set_title(f"k-shot probes · {model} · {data}", fontsize=10)
        ax.legend(fontsize=TEXT_PT + 1)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out.append(ReportFigure(f"k-shot probes: {model} on {data}", fig))
    return out


REPORT_SECTIONS = [
    ReportSection("linear_probe", ("acc1", "train_acc1", "acc5", "mean_per_class_recall", "weight_decay"),
              rates=r"train_acc1", order=30),
    ReportSection("kshot_probe", ("acc1_mean", "acc1_std"), rates=r"acc1_mean|acc1_std", figures=kshot_figures,
              order=35),
]

STUDY = register(Study(
    "probe", run_probe, "Linear and k-shot probes on frozen embeddings, beside zero-shot.",
    description="Logistic regression in torch with L-BFGS (GPU when available); the weight decay is swept on a "
                "validation part of the training split only, then the probe is refit on all of it; the evaluated "
                "split is used once, for the reported numbers.",
    params=ProbeParams,
    inputs=(*ONE_MODEL, DATASET_P, SPLIT_P, DATA_ROOT_P, LIMIT_P.with_(help="seeded subset of N evaluated images."),
            CLASSNAMES_P, TRAIN_SPLIT_P.with_(help="split the probes are trained on (a validation part of it chooses "
                                              "the weight decay; in Python also a loaded dataset)."),
            TRAIN_LIMIT_P, TRAIN, TEMPLATE_P.with_(help="template set of the zero-shot row and of the zero-shot "
                                                   "initialisation (default: the dataset's usual set)."), *RUN, *TEXTS),
    fitting=Fitting(split="train_split", limit="train_limit", dataset="train", purpose="probe training"),
    templates=Templates(ensemble=True, one=True),
    outputs=(Output("output", "record", "study JSON.", (".json",), short="-o"),),
    group="Classification studies", sections=tuple(REPORT_SECTIONS), order=30,
    example='cliplab.probe("tiny-shapes", "shapes:color", kshot=[1, 4], limit=300, train_limit=600, quiet=True)'))
