"""Per-image inspection: rank every class (or user prompt) for a few images, with scores and figures."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cliplab.data.base import ImageDataset
from cliplab.data.folder import IMAGE_EXTENSIONS, list_images
from cliplab.data.imageio import open_rgb
from cliplab.data.sources import FileSource
from cliplab.embed import EmbeddingResult, class_text_embeddings, embed_images, embed_texts
from cliplab.errors import ParameterError
from cliplab.files import UserFile, printable
from cliplab.inputs import (TEXTS, CLASSNAMES_P, DATASET_P, DEFAULT_DATASET, MODELS_P, PRETRAINEDS_P, RUN, SPLIT_P,
                            TEMPLATE_P, Inputs, Templates, dataset_templates, open_dataset)
from cliplab.params import REQUIRED, param
from cliplab.progress import progress_bar
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import image_with_bars, save_figure
from cliplab.report.rows import model_labels
from cliplab.results.exports import TABLE_SUFFIXES
from cliplab.results.result import (DatasetInfo, Failure, Figure, ModelInfo, ReportSection, Rows, SingleModel, Table,
                                    skipped)
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.zeroshot import build_classifier, head_probabilities, scores

if TYPE_CHECKING:
    from cliplab.models.base import LoadedModel
    from cliplab.prompts import TemplateSet


@dataclass(frozen=True)
class InspectParams:
    """What ``inspect`` ranks for which images."""
    images: tuple[str, ...] = param(REQUIRED, "image files, folders, or http(s) URLs (downloaded once into the "
                                    "cache).", argument=True, metavar="IMAGES...")
    classes: tuple[str, ...] = param((), "class names to rank (comma-separated, or repeated), through "
                                     "{p:templates}.")
    prompts: tuple[str, ...] = param((), "prompts ranked as written (no template): a text file with one per line, "
                                     "or the prompts themselves, e.g. 'a chest X-ray with pneumonia'.")
    topk: int = param(5, "candidates shown per image.", min=1)


def image_paths(args, cache_dir=None) -> list[Path]:
    """Files as given; folders expanded to the images in them (sorted, recursive); URLs downloaded into the cache."""
    from cliplab.data.urls import is_url, local_copy

    out: list[Path] = []
    for a in args:
        if is_url(a):
            out.append(local_copy(a, cache_dir, "images"))
            continue
        p = Path(a).expanduser()
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise ParameterError("images", a, f"folder has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})",
                                     quote=False)
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ParameterError("images", a, "no such image file or folder", quote=False)
    if not out:
        raise ParameterError("images", None, "no images given")
    return out


def read_prompts(path: str | Path) -> list[str]:
    """Prompts of a text file: one per line, ``#`` comment lines; at least two."""
    file = UserFile(Path(path), "prompts")
    prompts = [line.text for line in file.lines("prompts")]
    if len(prompts) < 2:
        raise file.fail("need at least two prompts, one per line")
    return prompts


def parse_classes(given) -> list[str]:
    """Class names: comma-separated text (one value) or a list of names; at least two."""
    values = [given] if isinstance(given, str) else list(given)
    if len(values) == 1:
        values = values[0].split(",")
    names = [c.strip() for c in values if c.strip()]
    if len(names) < 2:  # one candidate would score 100 %
        raise ParameterError("classes", list(names) if not isinstance(given, str) else given,
                             "give at least two (comma-separated or a list)")
    return names


def prompt_list(given) -> list[str]:
    """Prompts: a text file (one per line; ``#`` comments) as the only value, or the prompts themselves."""
    values = [given] if isinstance(given, (str, Path)) else list(given)
    if len(values) == 1 and (Path(values[0]).suffix.lower() == ".txt" or Path(values[0]).is_file()):
        return read_prompts(values[0])
    if len(values) < 2:
        raise ParameterError("prompts", values, "give at least two prompts (or a file with one per line)")
    return [str(v) for v in values]


@dataclass(repr=False)  # Notebook's repr: the summary and tables, not every field
class InspectResult(SingleModel, Notebook):
    """Every candidate (class name or prompt) ranked for each image (the study contract:
    :mod:`cliplab.results.result`; ``dataset`` names where the candidates come from)."""
    model: LoadedModel
    paths: list[Path]
    labels: list[str]  # class names or prompts, in score-column order
    images: EmbeddingResult
    scores: np.ndarray  # (n_ok, L) cosine similarities
    probs: np.ndarray  # what the model's head outputs (tasks.zeroshot.head_probabilities)
    source: DatasetInfo = DatasetInfo("classes", "-")
    classnames: list[str] | None = None  # as given (None when ranking prompts)
    prompts: list[str] | None = None
    template_set: TemplateSet | None = None
    topk: int = 5  # columns of the table, bars per figure
    head: str = "softmax"  # the model's head: softmax over the candidates (CLIP) or sigmoid per candidate (SigLIP)
    task = "inspection"

    @property
    def probability(self) -> str:
        """The name of the head's number in rows and tables: ``probability`` (softmax), ``sigmoid_probability``."""
        return "probability" if self.head == "softmax" else f"{self.head}_probability"

    def head_text(self) -> str:
        """The head's formula, as the table's caption says it."""
        if self.head == "softmax":
            return (f"softmax over the {len(self.labels)} candidates of {self.model.logit_scale:.4g} × cos (the "
                    "model's CLIP head; each row sums to 1)")
        return (f"sigmoid({self.model.logit_scale:.4g} × cos {self.model.logit_bias:+.4g}) for each candidate on its "
                "own (the model's SigLIP head; they need not sum to 1)")

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.source, int(len(self.images.indices)))

    @property
    def params(self) -> dict:
        return {"candidates": "prompts" if self.prompts else "classes", "labels": list(self.labels),
                "templates": self.template_set.name if self.template_set is not None else None, "topk": self.topk,
                "head": self.head}

    @property
    def failures(self) -> list[Failure]:
        return Failure.from_embedding(self.images.failures)

    def ranking(self, row: int, k: int) -> list[tuple[str, float, float]]:
        order = np.argsort(-self.scores[row], kind="stable")[:k]
        return [(self.labels[j], float(self.scores[row, j]), float(self.probs[row, j])) for j in order]

    def metric_rows(self) -> pd.DataFrame:
        """Top-1 candidate and its score per image (variant = image file name: candidate)."""
        rows = Rows()
        for row, idx in enumerate(self.images.indices):
            (label, cos, prob), = self.ranking(row, 1)
            kw = dict(task=self.task, model=self.model, dataset=self.source,
                      variant=f"{self.paths[int(idx)].name}: {label}")
            rows.add(metric="top1_cosine", value=cos, **kw)
            rows.add(metric=f"top1_{self.probability}", value=prob, **kw)
        return rows.frame()

    def summary(self) -> str:
        tops = [f"{self.paths[int(idx)].name}: {self.ranking(row, 1)[0][0]}"
                for row, idx in enumerate(self.images.indices)]
        return (f"{self.model.name} ranked {len(self.labels)} candidates for {len(tops)} images: "
                + "; ".join(tops[:5]) + (" ..." if len(tops) > 5 else ""))

    def tables(self) -> list[Table]:
        k = min(self.topk, len(self.labels))
        short = "prob" if self.head == "softmax" else self.head
        cols = [f"#{j + 1} (cos · {short})" for j in range(k)]
        table = Table(f"per-image ranking · {self.model.name} · {len(self.labels)} candidates · {self.head} head",
                      ["image", *cols], wrap={c: 34 for c in cols}, caption=f"{short}: {self.head_text()}")
        for row, idx in enumerate(self.images.indices):
            name = self.paths[int(idx)].name
            table.rows.append([name if len(name) <= 40 else name[:39] + "…",
                               *[f"{lab} ({c:.3f} · {p:.2f})" for lab, c, p in self.ranking(row, self.topk)]])
        return [table]

    def record(self) -> dict:
        """The candidates and each image's top-k ranking (cosine and what the model's head outputs)."""
        return {"task": self.task, "model": self.model.name, "pretrained": self.model.pretrained,
                "model_fingerprint": self.model.fingerprint, "dataset": self.source.name, **self.params,
                "logit_scale": self.model.logit_scale, "logit_bias": self.model.logit_bias,
                "images": [{"image": str(self.paths[int(idx)]),
                            "ranking": [{"candidate": lab, "cosine": c, self.probability: p}
                                        for lab, c, p in self.ranking(row, self.topk)]}
                           for row, idx in enumerate(self.images.indices)],
                "skipped_images": skipped(self.failures)}

    def artifacts(self) -> dict:
        """``scores``: one row per image x candidate; ``figures``: one PNG per image with its top-k bars."""
        return {"scores": self.scores_frame(), "figures": Figure("per-image ranking", self.draw_figures, many=True),
                "heatmap": self.heatmap_figure()}

    def draw_figures(self, folder: Path, limit: int | None = None, suffix: str = "") -> list[tuple[Path, str]]:
        """One PNG per image (the first ``limit``) in ``folder``, ``suffix`` added to each file's name."""
        return [(p, f"ranking for {self.paths[int(idx)].name}" + (f" · {self.model.name}" if suffix else ""))
                for p, idx in zip(inspection_figures(self, folder, self.topk, limit, suffix), self.images.indices)]

    def heatmap_figure(self) -> Figure:
        """The candidates x images cosine-similarity matrix (a PNG or SVG): images grouped by their best-scoring
        candidate, cosines written in the cells while the matrix is small."""
        caption = (f"cosine similarity · {self.model.name} · {len(self.labels)} candidates × "
                   f"{len(self.images.indices)} images")

        def draw(path: Path) -> list[tuple[Path, str]]:
            from cliplab.report.plots import SIMILARITY_ANNOTATED, save_figure, similarity_matrix

            rows = list(self.images.indices)
            thumbs = [_load(self.paths[int(i)]) for i in rows] if len(rows) <= SIMILARITY_ANNOTATED else \
                [None] * len(rows)
            fig = similarity_matrix(self.scores, thumbs, [self.paths[int(i)].name for i in rows], self.labels,
                                    title=caption)
            how = ("images grouped by the candidate each scores highest (candidates' order), best score first; "
                   "every image of the run")
            return [(p, caption) for p in save_figure(fig, [path], description=how)]

        return Figure(caption, draw)

    def scores_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"image": printable(str(self.paths[int(i)])), "candidate": lab, "rank": r + 1,
                              "cosine": c, self.probability: p}
                             for row, i in enumerate(self.images.indices)
                             for r, (lab, c, p) in enumerate(self.ranking(row, len(self.labels)))])


@dataclass(repr=False)
class InspectModelsResult(Notebook):
    """Several models' rankings of the same images and candidates, side by side (the study contract:
    :mod:`cliplab.results.result`): ``runs`` holds each model's :class:`InspectResult`; the tables add which top-1s
    agree, the heatmap draws one panel per model (each on its own colour scale: cosines of different models are not
    on one scale)."""
    runs: list[InspectResult]
    task = "inspection"

    def __post_init__(self):
        first = self.runs[0]
        for r in self.runs[1:]:
            if r.labels != first.labels or list(r.images.indices) != list(first.images.indices):
                raise ValueError("models compared in one inspection must rank the same candidates for the same images")

    @property
    def labels(self) -> list[str]:
        """A label per model: its name, with its weights or fingerprint where two share a name."""
        keys = [(m.name, m.pretrained or "", m.fingerprint) for m in self.models]
        names = [model_labels(keys)[k] for k in keys]
        return [f"{n} #{names[:i].count(n) + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]

    @property
    def models(self) -> list[ModelInfo]:
        return [ModelInfo.of(r.model) for r in self.runs]

    @property
    def dataset(self) -> DatasetInfo:
        return self.runs[0].dataset

    @property
    def params(self) -> dict:
        return self.runs[0].params

    @property
    def failures(self) -> list[Failure]:
        return self.runs[0].failures

    def _names(self) -> list[str]:
        first = self.runs[0]
        return [first.paths[int(i)].name for i in first.images.indices]

    def top1(self) -> np.ndarray:
        """(models, images): the index of each model's best candidate for each image."""
        return np.stack([np.argmax(r.scores, axis=1) for r in self.runs])

    def agreement(self) -> np.ndarray:
        """Per image: whether every model ranks the same candidate first."""
        t = self.top1()
        return (t == t[0]).all(axis=0)

    def metric_rows(self) -> pd.DataFrame:
        """Each model's rows, and the share of images on whose top-1 candidate every model agrees (model
        'several')."""
        rows = Rows()
        rows.add(task=self.task, model=ModelInfo("several"), dataset=self.runs[0].source,
                 variant=" vs ".join(self.labels), metric="top1_agreement", value=float(self.agreement().mean()),
                 n=len(self._names()))
        return pd.concat([*(r.metric_rows() for r in self.runs), rows.frame()], ignore_index=True)

    def summary(self) -> str:
        agree = self.agreement()
        return (f"{len(self.runs)} models ({', '.join(self.labels)}) ranked {len(self.runs[0].labels)} candidates "
                f"for {len(agree)} images; the same top-1 for {int(agree.sum())} of {len(agree)}")

    def tables(self) -> list[Table]:
        t, labels = self.top1(), self.labels
        cols = [f"{lab} top-1 (cos · {'prob' if r.head == 'softmax' else r.head})" for lab, r in zip(labels, self.runs)]
        table = Table(f"top-1 side by side · {len(self.runs)} models · {len(self.runs[0].labels)} candidates",
                      ["image", *cols, "same top-1"], wrap={c: 30 for c in cols},
                      caption="each model's own head (its softmax or sigmoid) gives its probability; cosines of "
                              "different models are not on one scale")
        for row, name in enumerate(self._names()):
            cells = [f"{r.labels[t[m, row]]} ({r.scores[row, t[m, row]]:.3f} · {r.probs[row, t[m, row]]:.2f})"
                     for m, r in enumerate(self.runs)]
            table.rows.append([name if len(name) <= 40 else name[:39] + "…", *cells,
                               "yes" if (t[:, row] == t[0, row]).all() else "no"])
        return [table, *(tab for r in self.runs for tab in r.tables())]

    def record(self) -> dict:
        """Each model's record, and the top-1 agreement per image."""
        return {"task": self.task, "models": [r.record() for r in self.runs], "labels": self.labels,
                "agreement": [{"image": str(self.runs[0].paths[int(i)]), "same_top1": bool(a)}
                              for i, a in zip(self.runs[0].images.indices, self.agreement())]}

    def artifacts(self) -> dict:
        """``scores``: every model's rows (a ``model`` column first); ``figures``: one PNG per image and model;
        ``heatmap``: the matrices side by side."""
        frames = [r.scores_frame().assign(model=lab) for lab, r in zip(self.labels, self.runs)]
        scores = pd.concat(frames, ignore_index=True)
        scores = scores[["model", *[c for c in scores.columns if c != "model"]]]

        def draw(folder: Path, limit: int | None = None) -> list[tuple[Path, str]]:
            return [item for lab, r in zip(self.labels, self.runs)
                    for item in r.draw_figures(folder, limit, suffix="-" + _file_label(lab))]

        return {"scores": scores, "figures": Figure("per-image ranking per model", draw, many=True),
                "heatmap": self.heatmap_figure()}

    def heatmap_figure(self) -> Figure:
        """The candidates x images matrix of every model, side by side (images in the first model's order)."""
        first = self.runs[0]
        caption = (f"cosine similarity · {len(self.runs)} models · {len(first.labels)} candidates × "
                   f"{len(first.images.indices)} images")

        def draw(path: Path) -> list[tuple[Path, str]]:
            from cliplab.report.plots import SIMILARITY_ANNOTATED, similarity_matrix

            rows = list(first.images.indices)
            thumbs = [_load(first.paths[int(i)]) for i in rows] if len(rows) <= SIMILARITY_ANNOTATED else \
                [None] * len(rows)
            fig = similarity_matrix([r.scores for r in self.runs], thumbs, self._names(), first.labels,
                                    title=caption, panels=self.labels)
            how = ("one panel per model, each on its own colour scale; images grouped by the candidate the first "
                   "model scores highest")
            return [(p, caption) for p in save_figure(fig, [path], description=how)]

        return Figure(caption, draw)


def _file_label(label: str) -> str:
    """A model label as part of a file name."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def run_inspect(inputs: Inputs, params: InspectParams) -> InspectResult | InspectModelsResult:
    """Each image scored against class names (through the template set) or raw prompts: an :class:`InspectResult`.
    Without class names or prompts, the classes of the dataset (default: shapes) are ranked."""
    paths = image_paths(params.images, inputs.options.cache_dir)
    prompts = prompt_list(params.prompts) if params.prompts else None
    names = parse_classes(params.classes) if params.classes else None
    ds, template_set = inputs.dataset, (inputs.templates or [None])[0]
    if not names and not prompts:
        if ds is None:
            v = inputs.values
            ds = open_dataset(DEFAULT_DATASET, inputs.options, split=v.get("split"), classnames=v.get("classnames"))
            template_set = template_set if v.get("templates") else dataset_templates(ds)[0]
        ds.require_classes("ranking classes")
        names = ds.classnames
    # where the candidates come from, as the user named it: the dataset given (none given: 'classes' / 'prompts')
    given = inputs.values.get("dataset")
    source = given.name if isinstance(given, ImageDataset) else (str(given) if given is not None else None)
    runs = [inspect_images(inputs.open_model(spec), paths, inputs.options, classnames=names if not prompts else None,
                           template_set=template_set, prompts=prompts, source=source, topk=params.topk)
            for spec in (inputs.models or [inputs.model])]
    return runs[0] if len(runs) == 1 else InspectModelsResult(runs)


def inspect_images(model: LoadedModel, paths: list[Path], options, *, classnames: list[str] | None = None,
                   template_set: TemplateSet | None = None, prompts: list[str] | None = None,
                   source: DatasetInfo | str | None = None, topk: int = 5) -> InspectResult:
    """Each image scored against class names (through ``template_set``) or raw ``prompts``."""
    ds = ImageDataset(name="inspect", split="-", source=FileSource(paths), fingerprint="inspect")
    images = embed_images(model, ds, options)
    if prompts:
        labels = list(prompts)
        weights = l2_normalize(embed_texts(model, labels, options))
    else:
        if not classnames or template_set is None:
            raise ParameterError("prompts", None, "give class names ({p:dataset}/{p:classes}) or {p:prompts} to rank",
                                 prefix=False)
        labels = list(classnames)
        weights = build_classifier(class_text_embeddings(model, labels, template_set, options))
    s = scores(images.embeddings, weights)
    probs = head_probabilities(s, model.logit_scale, model.logit_bias)
    if not isinstance(source, DatasetInfo):
        source = DatasetInfo(source or ("prompts" if prompts else "classes"), "-")
    return InspectResult(model, paths, labels, images, s, probs, source=source, classnames=classnames,
                         prompts=prompts, template_set=template_set, topk=topk, head=model.head)


def inspection_figures(ins: InspectResult, folder: str | Path, k: int = 5, limit: int | None = None,
                       suffix: str = "") -> list[Path]:
    """One PNG per image (the first ``limit`` images only, when given): the image and its top-k bars; ``suffix``
    ends each file's name (a model's label, when several models write into one folder)."""
    folder = Path(folder)
    out = []
    seen: dict[str, int] = {}
    rows = ins.images.indices[:limit]
    with progress_bar(len(rows), "drawing figures", unit="figures") as bar:
        for row, idx in enumerate(rows):
            path = ins.paths[int(idx)]
            rank = ins.ranking(row, k)
            fig = image_with_bars(_load(path), [r[0] for r in rank], [r[1] for r in rank],
                                  title=f"{path.name} · {ins.model.name}")
            stem = path.stem
            seen[stem] = seen.get(stem, 0) + 1
            name = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
            out += save_figure(fig, [folder / f"{name}-top{k}{suffix}.png"])
            bar.advance()
    return out


def _load(path: Path):
    return open_rgb(path)


# ---- how the HTML report shows this task (rows of a results store, any number of runs) ----
REPORT_SECTIONS = [
    ReportSection("inspection", ("top1_cosine", "top1_probability", "top1_sigmoid_probability", "top1_agreement"),
                  rates=r"top1_agreement", order=90),
]


STUDY = register(Study(
    "inspect", run_inspect, "Rank all classes (or your prompts) for given images, with cosine scores and the "
    "model's probabilities (CLIP: softmax over the candidates; SigLIP: a sigmoid per candidate).",
    params=InspectParams,
    inputs=(MODELS_P.with_(help="repeatable: the model(s); several are shown side by side on the same images and "
                           "candidates (default: tiny-shapes); paired by position with {p:pretrained}."),
            PRETRAINEDS_P, DATASET_P.with_(default=None, optional=True, help=(
                "take the class names from this dataset (default: shapes, unless {p:classes} or {p:prompts}).")),
            SPLIT_P, CLASSNAMES_P, TEMPLATE_P.with_(help="template set for class names (default: the dataset's usual "
                                                    "set, else simple)."), *RUN, *TEXTS),
    templates=Templates(ensemble=True, one=True),
    outputs=(Output("figures", "figures", "folder for one PNG per image: the image and its top-k bars.",
                    folder=True),
             Output("output", "scores", "all scores as .csv/.parquet/.jsonl (one row per image x candidate).",
                    TABLE_SUFFIXES, short="-o"),
             Output("heatmap", "heatmap", "PNG or SVG of the candidates x images cosine-similarity matrix (images "
                    "grouped by their best candidate; values in the cells up to 16 images).", (".png", ".svg"))),
    positional=("model", "images"), group="Classification studies", sections=tuple(REPORT_SECTIONS), order=50,
    returns="Inline: the ranking table, one figure per image (image + top-k bars) and the similarity matrix "
            "(``.heatmap_figure()``: candidates x images, as the CLI's --heatmap writes it); "
            "with several models an :class:`InspectModelsResult` (each model's ranking, their top-1 agreement, the "
            "matrices side by side).",
    example='cliplab.inspect("tiny-shapes", ["red-circle.png"], classes=["red shape", "blue shape"], quiet=True)'))
