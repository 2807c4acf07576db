"""Prompt study: many templates, ensembles and class descriptions on one image pass, with paired statistics.

Images are embedded once (cached); each template costs one small text pass. Every template is also scored on its
own, so a named set contributes both its ensemble row and one row per template.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from typing import TYPE_CHECKING, Annotated, Literal

from cliplab.data.base import check_disjoint
from cliplab.embed import EmbeddingResult, class_text_embeddings, embed_images, embed_texts
from cliplab.errors import ParameterError
from cliplab.files import Name, Shape, Str, UserFile, one_of
from cliplab.inputs import TEXTS, IMAGES, ONE_MODEL, RUN, SPLIT_OR_DATASET, TEMPLATES_P, Fitting, Inputs, Templates
from cliplab.params import Param, param
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import TEXT_PT, _plt
from cliplab.report.rows import DATA, MODEL, groups, latest, model_key, model_labels, text, with_columns
from cliplab.results.result import DatasetInfo, Failure, ReportFigure, ReportSection, Rows, SingleModel, Table, pct
from cliplab.tasks.selection import greedy_template_selection
from cliplab.tasks.stats import PairedComparison, compare_paired
from cliplab.tasks.zeroshot import build_classifier, build_classifier_ragged, evaluate, evaluate_scores, scores_max

if TYPE_CHECKING:
    from cliplab.data.base import ImageDataset
    from cliplab.models.base import LoadedModel


@dataclass(frozen=True)
class PromptsParams:
    """The prompt study's own parameters."""
    baseline: str | None = param(None, "template or set name every row is tested against (default: the first "
                                 "template).")
    descriptions: tuple[Path, ...] | None = param(None, "repeatable: a JSON {class: [description, ...]} scored as "
                                                  "one more row (named after the file when there are several), or "
                                                  "{set name: {class: [...]}}, a row per named set; rows are tested "
                                                  "against the baseline and, with several sets, against each "
                                                  "other.")
    aggregate: Literal["mean", "max"] = param("mean", "descriptions: mean (one embedding per class) or max (the "
                                              "best-matching description).")
    select: bool = param(False, "greedy template selection on a validation part of {p:select_split}, reported on "
                         "the evaluated split.")
    val_fraction: float = param(0.2, "share of {p:select_split} the selection validates on.", min=0.01, max=1.0)
    bootstrap: int = param(2000, "bootstrap resamples for the 95 % CIs.", min=100)
    seed: int = param(0, "the seed of the validation part and of the bootstrap.")


SELECT_SPLIT = Param("select_split", SPLIT_OR_DATASET, "train", flag="--select-split", aliases=("--train-split",),
                     help="split the validation part is carved from, never the evaluated split (in Python also a "
                          "loaded dataset).")


@dataclass
class PromptRow:
    name: str  # template text, set name, or "descriptions (mean)"
    kind: str  # template | ensemble | descriptions | selected
    n_prompts: int
    metrics: dict
    correct: np.ndarray
    vs_baseline: PairedComparison | None = None
    templates: tuple[str, ...] = ()


@dataclass(frozen=True)
class DescriptionSet:
    """One set of class descriptions: ``texts[c]`` are class c's descriptions; ``source``: the file it came from."""
    name: str
    texts: list
    source: str
    named: bool = False  # named in a file of named sets (else: the file's own name)


@dataclass(frozen=True)
class PairedRows:
    """Row ``b`` against row ``a`` on the same images: ``comparison.diff`` = top-1 of b - top-1 of a."""
    a: str
    b: str
    comparison: PairedComparison


CLASSIFICATION = ("acc1", "acc5", "mean_per_class_recall", "mean_correct_similarity")


@dataclass(repr=False)  # Notebook's repr: the summary and tables, not every field
class PromptsResult(SingleModel, Notebook):
    """Every template, ensemble and description set scored on one image pass, each tested against a baseline row
    (the study contract: :mod:`cliplab.results.result`)."""
    model: LoadedModel
    data: ImageDataset
    images: EmbeddingResult
    labels: np.ndarray
    rows: list[PromptRow] = field(default_factory=list)
    baseline: str = ""
    selection: dict | None = None
    selection_ids: list[str] = field(default_factory=list)  # the validation images the selection saw
    pairwise: list[PairedRows] = field(default_factory=list)  # description sets against each other
    seconds: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # what the study was asked for (templates, baseline, seed, ...)
    task = "prompt_study"

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.data, int(len(self.labels)))

    @property
    def failures(self) -> list[Failure]:
        return Failure.from_embedding(self.images.failures)

    def best_worst_classes(self, row: PromptRow, k: int = 3) -> tuple[list[str], list[str]]:
        rec = np.asarray(row.metrics["per_class_recall"], dtype=float)
        order = [i for i in np.argsort(-np.nan_to_num(rec, nan=-1), kind="stable") if not np.isnan(rec[i])]
        names = self.data.classnames
        return [names[i] for i in order[:k]], [names[i] for i in order[::-1][:k]]

    def metric_rows(self) -> pd.DataFrame:
        """The four classification metrics per row; rows other than the baseline add the paired accuracy
        difference (bootstrap CI, seeded) and McNemar's p."""
        rows = Rows()
        n = self.dataset.n
        for r in self.rows:
            kw = dict(task=self.task, model=self.model, dataset=self.data, variant=f"{r.kind}: {r.name}", n=n)
            rows.add_metrics(r.metrics, CLASSIFICATION, **kw)
            if r.vs_baseline is not None:
                c = r.vs_baseline
                rows.add(metric="acc1_diff_vs_baseline", value=c.diff, ci=(c.ci_low, c.ci_high),
                         seed=self.params.get("seed"), **kw)
                rows.add(metric="mcnemar_p", value=c.p_value, **kw)
        for pr in self.pairwise:
            c = pr.comparison
            kw = dict(task=self.task, model=self.model, dataset=self.data, variant=f"descriptions: {pr.b} vs {pr.a}",
                      n=n)
            rows.add(metric="acc1_diff_pairwise", value=c.diff, ci=(c.ci_low, c.ci_high),
                     seed=self.params.get("seed"), **kw)
            rows.add(metric="mcnemar_p_pairwise", value=c.p_value, **kw)
        return rows.frame()

    def summary(self) -> str:
        best = max(self.rows, key=lambda r: r.metrics["acc1"])
        return (f"prompt study {self.model.name} on {self.data.name} ({self.data.split}, {self.dataset.n} images): "
                f"best {best.name} ({best.kind}) top-1 {pct(best.metrics['acc1'])} %, baseline {self.baseline}")

    def tables(self) -> list[Table | str]:
        """The rows by accuracy, with their comparison to the baseline; the selected templates (with --select)."""
        n_cls = len(self.data.classnames)
        table = Table(f"prompt study · {self.model.name} · {self.data.name} ({self.data.split}, "
                      f"{len(self.labels)} images, {n_cls} classes) · baseline: {self.baseline}",
                      ["prompts", "kind", "#", "top-1 %", "Δ pt", "95 % CI (pt)", "McNemar p", "", "best classes",
                       "worst classes"], right=frozenset(["#", "top-1 %", "Δ pt", "95 % CI (pt)", "McNemar p"]),
                      wrap={"best classes": 30, "worst classes": 30})
        for r in sorted(self.rows, key=lambda r: -r.metrics["acc1"]):
            cmp = r.vs_baseline
            best, worst = self.best_worst_classes(r, k=max(1, min(3, n_cls // 2)))
            if cmp is None:
                delta, ci, p, mark = "baseline", "", "", ""
            else:
                delta = f"{100 * cmp.diff:+.2f}"
                ci = f"[{100 * cmp.ci_low:+.2f}, {100 * cmp.ci_high:+.2f}]"
                p = f"{cmp.p_value:.3g}"
                mark = "*" if cmp.significant else "n.s."
            name = r.name if len(r.name) <= 48 else r.name[:47] + "…"
            table.rows.append([name, r.kind, str(r.n_prompts), pct(r.metrics["acc1"]), delta, ci, p, mark,
                               ", ".join(best), ", ".join(worst)])
        table.caption = ("* = significant (McNemar exact p < 0.05 and bootstrap CI excludes 0); n.s. = not "
                         f"significant · chance {100 / n_cls:.1f} %")
        out: list[Table | str] = [table]
        if self.pairwise:
            pt = Table("description sets against each other (top-1 of the second minus the first)",
                       ["first", "second", "Δ pt", "95 % CI (pt)", "McNemar p", ""],
                       right=frozenset(["Δ pt", "95 % CI (pt)", "McNemar p"]))
            for pr in self.pairwise:
                c = pr.comparison
                pt.rows.append([pr.a, pr.b, f"{100 * c.diff:+.2f}", f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]",
                                f"{c.p_value:.3g}", "*" if c.significant else "n.s."])
            pt.caption = (f"the same test as against the baseline, for each of the {len(self.pairwise)} pairs "
                          "(p-values not corrected for the number of pairs)")
            out.append(pt)
        if self.selection:
            out.append(f"selected templates (validation: {self.selection['val_split']}): "
                       + " | ".join(self.selection["templates"]))
        return out

    def record(self) -> dict:
        """Every row with its templates, metrics, per-class recall and comparison to the baseline; the selection."""
        def row(r: PromptRow) -> dict:
            out = {"name": r.name, "kind": r.kind, "n_prompts": r.n_prompts, "templates": list(r.templates),
                   "metrics": {k: r.metrics[k] for k in CLASSIFICATION},
                   "per_class_recall": dict(zip(self.data.classnames, r.metrics["per_class_recall"]))}
            if r.vs_baseline is not None:
                c = r.vs_baseline
                out["vs_baseline"] = {"diff": c.diff, "ci95": [c.ci_low, c.ci_high], "mcnemar_p": c.p_value,
                                      "only_baseline_correct": c.only_a, "only_this_correct": c.only_b,
                                      "significant": c.significant}
            return out

        return {"dataset": self.data.name, "model": self.model.name, "pretrained": self.model.pretrained,
                "task": self.task, "split": self.data.split, "baseline": self.baseline,
                "rows": [row(r) for r in self.rows], "selection": self.selection,
                **({"pairwise": [{"first": pr.a, "second": pr.b, "diff": pr.comparison.diff,
                                  "ci95": [pr.comparison.ci_low, pr.comparison.ci_high],
                                  "mcnemar_p": pr.comparison.p_value, "only_first_correct": pr.comparison.only_a,
                                  "only_second_correct": pr.comparison.only_b,
                                  "significant": pr.comparison.significant} for pr in self.pairwise]}
                   if self.pairwise else {}),
                "num_images": int(len(self.labels)), "model_fingerprint": self.model.fingerprint,
                "dataset_fingerprint": self.data.fingerprint, "timing": self.seconds}

    def artifacts(self) -> dict:
        return {}


DESCRIPTIONS_JSON = Shape(Annotated[dict[Str, one_of("a text or a list of texts", text=Name,
                                                     list=Annotated[list[Name], Field(min_length=1)])],
                                    Field(min_length=1)], "an object {class name: [texts]}")


DESCRIPTION_SETS_JSON = Shape(Annotated[dict[Str, DESCRIPTIONS_JSON.tp], Field(min_length=1)],
                              "an object {set name: {class name: [texts]}}")


def _per_class(file: UserFile, data: dict, classnames: list[str], where: str = "") -> list[list[str]]:
    norm = {k.strip().lower().replace("_", " "): v for k, v in data.items()}
    out = []
    for c in classnames:
        texts = data.get(c, norm.get(c.lower()))
        if not texts:
            raise file.fail(f"{where}no descriptions for class {c!r}")
        out.append([texts] if isinstance(texts, str) else list(texts))
    return out


def load_descriptions(path: str | Path, classnames: list[str]) -> list[list[str]]:
    """``{class name: [texts]}``; every class of the dataset needs at least one text."""
    file = UserFile(Path(path), "descriptions")
    return _per_class(file, file.json(DESCRIPTIONS_JSON), classnames)


def load_description_sets(paths, classnames: list[str]) -> list[DescriptionSet]:
    """The description sets of one or more files: a file ``{class: [texts]}`` is one set named after the file (its
    stem), a file ``{set name: {class: [texts]}}`` (every value an object) one set per name. Every class of the
    dataset needs at least one text in every set; two sets may not share a name."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths or ())
    out: list[DescriptionSet] = []
    for path in paths:
        file = UserFile(Path(path), "descriptions")
        raw = file.parse_json(file.text())
        if isinstance(raw, dict) and raw and all(isinstance(v, dict) for v in raw.values()):
            sets = DESCRIPTION_SETS_JSON.validate(raw, file)
            found = [DescriptionSet(str(name), _per_class(file, data, classnames, f"set {name!r}: "), str(path), True)
                     for name, data in sets.items()]
        else:
            found = [DescriptionSet(Path(path).stem, _per_class(file, DESCRIPTIONS_JSON.validate(raw, file),
                                                                classnames), str(path))]
        for d in found:
            clash = next((o for o in out if o.name == d.name), None)
            if clash is not None:
                raise file.fail(f"the description set {d.name!r} is also in {clash.source}; give the sets "
                                "different names (a file of named sets, or files with other names)")
        out.extend(found)
    return out


def description_row_name(d: DescriptionSet, n_sets: int, aggregate: str) -> str:
    """A set's row: ``descriptions (mean)`` for the one set of a plain file, else ``<set name> (mean)``."""
    return f"descriptions ({aggregate})" if n_sets == 1 and not d.named else f"{d.name} ({aggregate})"


def _row(name, kind, n, res, labels, templates=()) -> PromptRow:
    correct = res.scores.argmax(1) == labels
    return PromptRow(name, kind, n, res.metrics, correct, templates=tuple(templates))


def run_prompts(inputs: Inputs, params: PromptsParams = PromptsParams()) -> PromptsResult:
    """Every template, ensemble (and description set) scored and tested against the baseline: a
    :class:`PromptsResult`."""
    model, dataset, template_sets, options = inputs.model, inputs.dataset, inputs.templates, inputs.options
    baseline, descriptions, aggregate = params.baseline, params.descriptions, params.aggregate
    select_from, val_fraction, n_boot, seed = inputs.train, params.val_fraction, params.bootstrap, params.seed
    max_val = 5000
    dataset.require_classes("a prompt study")
    desc_sets = load_description_sets(descriptions, dataset.classnames) if descriptions else []  # before any work
    t0 = time.perf_counter()
    images = embed_images(model, dataset, options)
    labels = dataset.labels[images.indices]
    study = PromptsResult(model, dataset, images, labels, params={
        "template_sets": [{"name": ts.name, "templates": list(ts.templates)} for ts in template_sets],
        "descriptions": _described(descriptions), "description_sets": [d.name for d in desc_sets],
        "aggregate": aggregate, "n_boot": n_boot, "seed": seed,
        "select_split": select_from.split if select_from is not None else None, "val_fraction": val_fraction})
    study.seconds["images"] = time.perf_counter() - t0
    names = dataset.classnames
    t1 = time.perf_counter()
    singles: dict[str, np.ndarray] = {}  # template -> (C, d) raw embeddings
    for ts in template_sets:
        emb = class_text_embeddings(model, names, ts, options)  # (C, T, d)
        for j, t in enumerate(ts.templates):
            singles.setdefault(t, emb[:, j])
        if len(ts.templates) > 1:
            res = evaluate(images.embeddings, labels, build_classifier(emb))
            study.rows.append(_row(ts.name, "ensemble", len(ts.templates), res, labels, ts.templates))
    for t, emb in singles.items():
        res = evaluate(images.embeddings, labels, build_classifier(emb[:, None, :]))
        study.rows.append(_row(t, "template", 1, res, labels, (t,)))
    described = []
    for d in desc_sets:
        flat = [t for ts in d.texts for t in ts]
        owner = np.repeat(np.arange(len(names)), [len(ts) for ts in d.texts])
        demb = embed_texts(model, flat, options)
        s = (scores_max(images.embeddings, demb, owner, len(names)) if aggregate == "max" else
             evaluate(images.embeddings, labels, build_classifier_ragged(demb, owner, len(names))).scores)
        row = _row(description_row_name(d, len(desc_sets), aggregate), "descriptions", len(flat),
                   evaluate_scores(s, labels), labels)
        if any(r.name == row.name for r in study.rows):
            raise ParameterError("descriptions", d.source, f"the description set {d.name!r} has the name of a "
                                 "template or set of the study; rename it", prefix=False)
        study.rows.append(row)
        described.append(row)
    study.seconds["texts"] = time.perf_counter() - t1

    if select_from is not None:
        study.selection = _select(study, model, select_from, singles, options, val_fraction, max_val, seed)

    # paired statistics against the baseline row
    by_name = {r.name: r for r in study.rows}
    base_name = baseline or (template_sets[0].templates[0] if template_sets else study.rows[0].name)
    if base_name not in by_name:
        raise ParameterError("baseline", base_name, f"{{p:baseline}} {base_name!r} is not among the evaluated templates/sets",
                             prefix=False)
    study.baseline = base_name
    study.params["baseline"] = base_name
    base = by_name[base_name]
    for r in study.rows:
        if r is not base:
            r.vs_baseline = compare_paired(base.correct, r.correct, n_boot=n_boot, seed=seed)
    for i, a in enumerate(described):  # description sets against each other, with the same paired test
        for b in described[i + 1:]:
            study.pairwise.append(PairedRows(a.name, b.name, compare_paired(a.correct, b.correct, n_boot=n_boot,
                                                                            seed=seed)))
    study.seconds["total"] = time.perf_counter() - t0
    return study


def _described(descriptions):
    """The description files as the record names them: one path as a string (as before several were taken), several
    as a list."""
    if not descriptions:
        return None
    items = [descriptions] if isinstance(descriptions, (str, Path)) else list(descriptions)
    return str(items[0]) if len(items) == 1 else [str(p) for p in items]


def _select(study: PromptsResult, model, train_ds: ImageDataset, singles: dict[str, np.ndarray], options,
            val_fraction, max_val, seed) -> dict:
    """Greedy ensemble selection on a validation part of the *train* split; scored once on the test split."""
    train_ds.require_classes("template selection")
    check_disjoint(train_ds, study.data, "template selection", options.cache_dir if options.use_cache else None)
    rng = np.random.default_rng(seed)
    n_val = min(max_val, max(1, int(round(val_fraction * len(train_ds)))))
    val_idx = np.sort(rng.permutation(len(train_ds))[:n_val])
    val = train_ds.subset(val_idx, tag=f"val{seed}")
    v = embed_images(model, val, options, description="embedding validation images")
    templates = list(singles)
    text = np.stack([singles[t] for t in templates], axis=1)  # (C, T, d), already embedded for the study
    sel = greedy_template_selection(v.embeddings, val.labels[v.indices], text)
    chosen = [templates[i] for i in sel.chosen]
    res = evaluate(study.images.embeddings, study.labels, build_classifier(text[:, sel.chosen]))
    study.rows.append(_row("selected ensemble", "selected", len(chosen), res, study.labels, chosen))
    study.selection_ids = [val.source.id(int(i)) for i in v.indices]
    return {"templates": chosen, "val_accuracy": sel.val_accuracy, "val_images": int(len(v.indices)),
            "val_split": f"{train_ds.split} ({val_fraction:.0%} seeded subset, seed {seed})",
            "test_accuracy": res.metrics["acc1"]}


# ---- how the HTML report shows this task (rows of a results store, any number of runs) ----
def prompt_figures(df: pd.DataFrame) -> list[ReportFigure]:
    """Per model and dataset split (the latest run of each): every template's top-1 difference to the baseline
    with its bootstrap CI, significant ones in colour."""
    plt = _plt()
    out = []
    df = with_columns(df, ["task", "metric"])
    ps = df[df.task == "prompt_study"]
    names = model_labels(model_key(r) for r in ps.to_dict(orient="records"))
    for key, run in groups(latest(ps, (*MODEL, *DATA)), (*MODEL, *DATA)):
        diff = run[run.metric == "acc1_diff_vs_baseline"].sort_values("value", kind="stable")
        if diff.empty:
            continue
        p = dict(zip(run[run.metric == "mcnemar_p"].variant, run[run.metric == "mcnemar_p"].value))
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(diff) + 1.2))
        y = np.arange(len(diff))
        err = np.vstack([(diff.value - diff.ci_low).to_numpy(), (diff.ci_high - diff.value).to_numpy()]) * 100
        sig = [(lo > 0 or hi < 0) and p.get(v, 1) < 0.05 for v, lo, hi in zip(diff.variant, diff.ci_low, diff.ci_high)]
        ax.barh(y, diff.value * 100, xerr=err, color=["tab:blue" if s else "lightgray" for s in sig], capsize=2)
        ax.set_yticks(y, [v if len(v) < 50 else v[:47] + "..." for v in diff.variant], fontsize=TEXT_PT)
        for yi, v, s in zip(y, diff.value * 100, sig):
            ax.annotate("*" if s else "n.s.", (v, yi), xytext=(4 if v >= 0 else -4, 0), textcoords="offset points",
                        ha="left" if v >= 0 else "right", va="center", fontsize=TEXT_PT)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("top-1 difference to the baseline (points), 95 % bootstrap CI")
        model, data = names[model_key(key)], text(key["dataset"])
        ax.set_title(f"prompt study · {model} · {data}", fontsize=10)
        fig.tight_layout()
        out.append(ReportFigure(f"Prompt study: {model} on {data}", fig,
                                "* = significant (McNemar exact p < 0.05 and CI excludes 0); grey = not significant"))
    return out


REPORT_SECTIONS = [
    ReportSection("prompt_study", ("acc1", "acc1_diff_vs_baseline", "mcnemar_p"), rates=r"acc1_diff_vs_baseline",
              figures=prompt_figures, order=20),
]

STUDY = register(Study(
    "prompts", run_prompts, "Prompt study: accuracy per template, ensemble and description set, with significance "
    "tests.",
    description="Each row is compared with a baseline by McNemar's exact test and a paired bootstrap CI; {p:select} "
                "picks an ensemble on a validation part of the train split. Images are embedded once.",
    params=PromptsParams,
    inputs=(*ONE_MODEL, *IMAGES, TEMPLATES_P.with_(help="repeatable: named sets, files or template strings. Every "
                                                   "template is scored alone; sets with several templates also as "
                                                   "an ensemble (default: simple + openai-imagenet-7)."),
            SELECT_SPLIT, *RUN, *TEXTS),
    fitting=Fitting(split="select_split", limit=None, when="select", purpose="template selection"),
    templates=Templates(default=("simple", "openai-imagenet-7")),
    outputs=(Output("output", "record", "study JSON.", (".json",), short="-o"),),
    group="Classification studies", sections=tuple(REPORT_SECTIONS), order=20,
    example='cliplab.prompts("tiny-shapes", "shapes:color", templates="openai-imagenet-7", limit=200, quiet=True)'))
