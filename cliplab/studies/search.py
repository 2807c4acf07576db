"""Text->image (and image->image, image+text) search over a dataset's images, for one or more models."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from typing import TYPE_CHECKING

from cliplab.data.sources import FileSource
from cliplab.embed import EmbeddingResult, embed_images, embed_texts
from cliplab.errors import CliplabError, ParameterError
from cliplab.files import Name, Shape, Str, UserFile, one_of, printable
from cliplab.index import FAISS_KINDS, VectorIndex
from cliplab.inputs import TEXTS, DATA_ROOT_P, DATASET_P, LIMIT_P, METRIC_P, MODELS_P, PRETRAINEDS_P, RUN, SPLIT_P, Inputs
from cliplab.params import param
from cliplab.progress import progress_bar
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import TEXT_PT, _plt, image_grid, save_figure, wrap_text
from cliplab.report.rows import DATA, MODEL, groups, latest, model_key, model_labels, text, with_columns
from cliplab.results.exports import TABLE_SUFFIXES
from cliplab.results.result import (DatasetInfo, Failure, Figure, ModelInfo, ReportFigure, ReportSection, Rows, Table,
                                    skipped)
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.ranking import metric_note, pairwise_scores

if TYPE_CHECKING:
    from cliplab.data.base import ImageDataset
    from cliplab.models.base import LoadedModel


@dataclass(frozen=True)
class SearchParams:
    """What ``search`` looks for, and how."""
    query: tuple[str, ...] = param((), "text queries (or use {p:queries} / {p:image}).", argument=True,
                                   metavar="[QUERY]...")
    queries: Path | None = param(None, "file: one query per line ('# name' starts a query family), or JSON "
                                 "{family: [queries]}.", hint="{p:queries} is a file; give the queries themselves as "
                                 "{p:query}=[...]")
    image: tuple[str, ...] = param((), "query image(s): files or http(s) URLs (image→image search).")
    plus: str | None = param(None, "with {p:image}: add this text's embedding (e.g. {p:image} dog.jpg {p:plus} "
                             "'in the snow').")
    minus: str | None = param(None, "with {p:image}: subtract this text's embedding.")
    text_weight: float = param(1.0, "weight of {p:plus}/{p:minus} texts.")
    k: int = param(8, "images per query.", min=1, flag="--topk", short="-k")
    index_type: str | None = param(None, "search with a FAISS index instead of exact chunked search: flat (exact) | "
                                   "ivf | hnsw.", choices=FAISS_KINDS)
    index: Path | None = param(None, "FAISS index file: reused when it matches the model and images, else built "
                               "and saved here.", config=False)


@dataclass
class Query:
    text: str | None = None
    image: str | None = None  # path of a query image
    plus: str | None = None  # text added to an image query ("image + text" arithmetic)
    minus: str | None = None  # text subtracted
    family: str = ""
    source: str | None = None  # the URL an image query was downloaded from

    @property
    def label(self) -> str:
        if self.image is None:
            return self.text or ""
        out = f"[{self.source or Path(self.image).name}]"
        if self.plus:
            out += f" + '{self.plus}'"
        if self.minus:
            out += f" - '{self.minus}'"
        return out


def build_queries(texts: Sequence[str] | None = None, queries_file: str | Path | None = None,
                  images: Sequence[str | Path] | None = None, plus: str | None = None,
                  minus: str | None = None, cache_dir=None) -> list[Query]:
    """The queries of a search: ``texts``, then those of ``queries_file``, then ``images`` (files or URLs, each ±
    ``plus`` / ``minus`` texts)."""
    from cliplab.data.urls import is_url, local_copy

    qs = [Query(text=t) for t in (texts or [])] + (read_queries(queries_file) if queries_file else [])
    for p in images or []:
        if is_url(str(p)):
            qs.append(Query(image=str(local_copy(str(p), cache_dir, "image")), plus=plus, minus=minus,
                            source=str(p)))
            continue
        if not Path(p).is_file():
            raise ParameterError("image", p, "file not found", quote=False)
        qs.append(Query(image=str(p), plus=plus, minus=minus))
    if (plus or minus) and not images:
        raise ParameterError("plus", plus or minus, "{p:plus}/{p:minus} modify an image query; give {p:image} too",
                             prefix=False)
    if not qs:
        raise ParameterError("query", None, "no query: give text queries, {p:queries} FILE or {p:image} PATH",
                             prefix=False)
    return qs


QUERIES_JSON = Shape(one_of("a list of queries or {family: [queries]}", list=list[Name],
                            object=dict[Str, list[Name]]), "a list of queries or {family: [queries]}")


def read_queries(path: str | Path) -> list[Query]:
    """A .txt file (one query per line; ``# family`` lines start a family), or JSON ``{family: [queries]}`` (or a
    list); a file with no queries is an error."""
    path = Path(path)
    file = UserFile(path, "queries")
    out: list[Query] = []
    if file.suffix == ".json":
        data = file.json(QUERIES_JSON)
        for fam, qs in (data.items() if isinstance(data, dict) else [("", data)]):
            out += [Query(text=q, family=fam) for q in qs]
    else:
        fam = ""
        for line in file.lines("queries", comments=False):
            if line.text.startswith("#"):
                fam = line.text.lstrip("#").strip()
            else:
                out.append(Query(text=line.text, family=fam))
    if not out:
        raise file.fail("has no queries" + (" (only # family lines)" if file.suffix != ".json" else ""))
    return out


@dataclass
class ModelHits:
    model: LoadedModel
    images: EmbeddingResult
    scores: np.ndarray  # (Q, k)
    positions: np.ndarray  # (Q, k) positions into images.indices
    score_stats: list[dict] = field(default_factory=list)  # distribution of all gallery scores per query


@dataclass(repr=False)  # Notebook's repr: the summary and tables, not every field
class SearchResult(Notebook):
    """Top-k images per query and model (the study contract: :mod:`cliplab.results.result`)."""
    data: ImageDataset
    queries: list[Query]
    hits: list[ModelHits]
    k: int
    text_weight: float = 1.0
    index_type: str | None = None
    metric: str = "cosine"
    task = "search"

    @property
    def notes(self) -> list[str]:
        note = metric_note(self.metric)
        return [note] if note else []

    def variant(self, query: Query) -> str:
        """A query's store variant: its label, then `` metric=<metric>`` unless the metric is cosine."""
        return query.label + ("" if self.metric == "cosine" else f" metric={self.metric}")

    @property
    def models(self) -> list[ModelInfo]:
        return [ModelInfo.of(h.model) for h in self.hits]

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.data, int(len(self.hits[0].images.indices)))

    @property
    def params(self) -> dict:
        return {"queries": [{"query": q.label, "family": q.family} for q in self.queries], "k": self.k,
                "text_weight": self.text_weight, "index_type": self.index_type, "metric": self.metric}

    @property
    def failures(self) -> list[Failure]:
        """Gallery images that could not be embedded (once, whichever model met them)."""
        seen: dict[str, Failure] = {}
        for h in self.hits:
            for f in Failure.from_embedding(h.images.failures):
                seen.setdefault(f.id, f)
        return list(seen.values())

    def ids(self, h: ModelHits, q: int) -> list[str]:
        """The ids of query ``q``'s hits, as tables show them (:func:`~cliplab.files.printable`)."""
        src = self.data.source
        return [printable(src.id(int(h.images.indices[p]))) for p in h.positions[q]]

    def metric_rows(self) -> pd.DataFrame:
        """Per model and query (variant = the query): the top-1 score, the mean top-k score and the distribution
        of the scores of all gallery images (cosine, dot product, or L2 distance with metric euclidean)."""
        rows = Rows()
        for h in self.hits:
            for q, query in enumerate(self.queries):
                kw = dict(task=self.task, model=h.model, dataset=self.data, variant=self.variant(query),
                          n=len(h.images.indices))
                valid = h.positions[q] >= 0
                rows.add(metric="top1_score", value=h.scores[q, 0], **kw)
                rows.add(metric=f"mean_top{self.k}_score", value=float(h.scores[q][valid].mean()), **kw)
                for stat, v in h.score_stats[q].items():
                    rows.add(metric=f"all_scores_{stat}", value=v, **kw)
        return rows.frame()

    def summary(self) -> str:
        return (f"search: {len(self.queries)} quer{'y' if len(self.queries) == 1 else 'ies'} over {self.data.name} "
                f"({self.dataset.n} images), top {self.k} for {', '.join(m.name for m in self.models)}"
                + ("" if self.metric == "cosine" else f" by {self.metric}"
                   + (" (L2 distance, nearest first)" if self.metric == "euclidean" else "")))

    def tables(self) -> list[Table]:
        shown = min(self.k, 5)
        several = len(self.hits) > 1
        cols = ["query", *(["model"] if several else []), *[f"#{j + 1}" for j in range(shown)], "all: mean ± std"]
        by = "" if self.metric == "cosine" else f" · {self.metric}" + (" (distance)" if self.metric == "euclidean" else "")
        table = Table(f"search · {self.data.name} ({len(self.hits[0].images.indices)} images){by}", cols,
                      right=frozenset(["all: mean ± std"]),
                      wrap={"query": 40, **{f"#{j + 1}": 28 for j in range(shown)}})
        for q, query in enumerate(self.queries):
            for h in self.hits:
                ids = self.ids(h, q)
                cells = [f"{_short(ids[j])} ({h.scores[q, j]:.3f})" for j in range(min(shown, len(ids)))]
                cells += [""] * (shown - len(cells))
                st = h.score_stats[q]
                table.rows.append([query.label, *([h.model.name] if several else []), *cells,
                                   f"{st['mean']:.3f} ± {st['std']:.3f}"])
        return [table]

    def record(self) -> dict:
        """The hits of every query and model (as ``hits_frame``), with the score distribution per query."""
        return {"task": self.task, "dataset": self.data.name, "split": self.data.split,
                "dataset_fingerprint": self.data.fingerprint, "k": self.k,
                **({} if self.metric == "cosine" else {"metric": self.metric}),
                "models": [{"model": m.name, "pretrained": m.pretrained, "model_fingerprint": m.fingerprint}
                           for m in self.models],
                "queries": self.params["queries"], "hits": self.hits_frame().to_dict(orient="records"),
                "score_stats": [{"query": query.label, "model": h.model.name, **h.score_stats[q]}
                                for h in self.hits for q, query in enumerate(self.queries)],
                "skipped_images": skipped(self.failures)}

    def artifacts(self) -> dict:
        return {"hits": self.hits_frame(), "grids": self.grids_figure()}

    def hits_frame(self) -> pd.DataFrame:
        """One row per model, query and rank: the query, its family, the model, the image, its score and the metric
        the score is (cosine, dot, or euclidean: an L2 distance, smaller first)."""
        rows = [{"query": printable(qy.label), "family": qy.family, "model": h.model.name,
                 "pretrained": h.model.pretrained,
                 "rank": j + 1, "image": ident, "score": float(h.scores[q, j]), "metric": self.metric}
                for h in self.hits for q, qy in enumerate(self.queries) for j, ident in enumerate(self.ids(h, q))]
        return pd.DataFrame(rows)

    def grids_figure(self, family: bool = False) -> Figure:
        """A folder with one PNG per query: a row of top-k images (with cosine scores) per model; each captioned
        ``search: <query>`` (with ``family``: followed by the query's family in brackets)."""
        def caption(q: Query) -> str:
            return f"search: {q.label}" + (f" ({q.family})" if family else "")

        def draw(folder: Path, limit: int | None = None) -> list[tuple[Path, str]]:
            return [(p, caption(q)) for p, q in zip(self._draw_grids(folder, limit), self.queries)]

        return Figure("search: top-k images per query", draw, many=True)

    def _draw_grids(self, folder: Path, limit: int | None = None) -> list[Path]:
        src = self.data.source
        out = []
        queries = self.queries[:limit]
        with progress_bar(len(queries), "drawing figures", unit="figures") as bar:
            for q, query in enumerate(queries):
                imgs, caps, rows = [], [], []
                for h in self.hits:
                    rows.append(h.model.name if h.model.pretrained is None else
                                f"{h.model.name}\n{h.model.pretrained}")
                    for j in range(self.k):
                        if j < h.positions.shape[1] and h.positions[q, j] >= 0:
                            p = int(h.positions[q, j])
                            imgs.append(src.load(int(h.images.indices[p])))
                            caps.append(f"#{j + 1}  {h.scores[q, j]:.3f}")
                        else:
                            imgs.append(None)
                            caps.append("")
                fig = image_grid(imgs, caps, cols=self.k, row_titles=rows if len(self.hits) > 1 else None,
                                 title=f"{query.label}" + (f"  ({query.family})" if query.family else "")
                                 + ("" if len(self.hits) > 1 else f" · {self.hits[0].model.name}"))
                slug = "".join(ch if ch.isalnum() else "-" for ch in query.label.lower()).strip("-")[:60] or "query"
                out += save_figure(fig, [folder / f"{q + 1:03d}-{slug}.png"])
                bar.advance()
        return out


def _short(ident: str) -> str:
    return Path(ident).name if "/" in ident else ident


def query_vectors(model: LoadedModel, queries: list[Query], options=None, text_weight: float = 1.0,
                  metric: str = "cosine") -> np.ndarray:
    """Query vectors: texts, images, and images plus/minus texts. Cosine: unit vectors (each part normalised, then
    the sum); dot and euclidean: the raw embeddings, an image query plus/minus ``text_weight`` times the raw text
    embeddings, not normalised."""
    unit = l2_normalize if metric == "cosine" else (lambda x: np.asarray(x, np.float32))  # noqa: E731
    out = np.zeros((len(queries), model.embed_dim), np.float32)
    texts = [q.text for q in queries if q.image is None]
    if texts:
        t = unit(embed_texts(model, texts, options))
        out[[i for i, q in enumerate(queries) if q.image is None]] = t
    img_q = [i for i, q in enumerate(queries) if q.image is not None]
    if img_q:
        src = FileSource([queries[i].image for i in img_q])
        res = embed_images(model, src, options, workers=0)
        if res.failures:
            _, ident, reason = res.failures[0]
            raise ParameterError("image", ident, reason, quote=False)
        vecs = unit(res.embeddings)
        for j, i in enumerate(img_q):
            q = queries[i]
            v = vecs[j].copy()
            if q.plus:
                v = v + text_weight * unit(embed_texts(model, [q.plus], options))[0]
            if q.minus:
                v = v - text_weight * unit(embed_texts(model, [q.minus], options))[0]
            out[i] = unit(v)
    return out


def run_search(inputs: Inputs, params: SearchParams = SearchParams()) -> SearchResult:
    """Top-k images per query and model: a :class:`SearchResult`. Exact chunked search by default; with
    ``index_type`` a FAISS index is built (or, with ``index``, reloaded when it fits the model and images, else
    rebuilt and saved)."""
    queries = build_queries(params.query, params.queries, params.image, params.plus, params.minus,
                            cache_dir=inputs.options.cache_dir)
    dataset, options = inputs.dataset, inputs.options
    kind = params.index_type or ("flat" if params.index else "exact")
    metric = inputs.values.get("metric", "cosine")
    hits = []
    for spec in inputs.models:
        m = inputs.open_model(spec)
        images = embed_images(m, dataset, options)
        if not len(images.indices):
            raise CliplabError(f"dataset {dataset.name!r}: no usable images to search")
        index = gallery_index(m, dataset, images, kind, _per_model_path(params.index, m, len(inputs.models)),
                              metric=metric)
        hits.append(search_gallery(m, images, index, queries, params.k, params.text_weight, options))
    return SearchResult(dataset, queries, hits, params.k, params.text_weight, params.index_type, metric)


def gallery_index(model: LoadedModel, dataset: ImageDataset, images: EmbeddingResult, kind: str = "exact",
                  path: str | Path | None = None, metric: str = "cosine") -> VectorIndex:
    """The index of a gallery's embeddings for one model and ``metric`` (read back from ``path`` when it fits, else
    built and saved there): what a long-lived process keeps to answer many searches."""
    meta = {"model_fingerprint": model.fingerprint, "dataset_fingerprint": dataset.fingerprint}
    index, _ = VectorIndex.load_or_build(path, images.embeddings, [str(int(i)) for i in images.indices], kind,
                                         meta=meta, metric=metric)
    return index


def search_gallery(model: LoadedModel, images: EmbeddingResult, index: VectorIndex, queries: list[Query], k: int,
                   text_weight: float = 1.0, options=None) -> ModelHits:
    """The top-k of every query in one model's gallery index (by the index's metric), with the distribution of all
    gallery scores per query."""
    metric = index.metric
    qv = query_vectors(model, queries, options, text_weight, metric)
    s, pos = index.search(qv, k)
    all_scores_stats = []
    gal = l2_normalize(images.embeddings)
    for r in range(0, len(qv), 256):
        block = qv[r:r + 256] @ gal.T if metric == "cosine" else pairwise_scores(qv[r:r + 256], images.embeddings,
                                                                                metric)
        for row in block:
            all_scores_stats.append({"mean": float(row.mean()), "std": float(row.std()),
                                     "p50": float(np.median(row)), "p99": float(np.quantile(row, 0.99)),
                                     "max": float(row.max())})
    return ModelHits(model, images, s, pos, all_scores_stats)


def _per_model_path(path, model: LoadedModel, n_models: int):
    if path is None:
        return None
    path = Path(path)
    return path if n_models == 1 else path.with_name(f"{path.stem}-{model.fingerprint[:8]}{path.suffix}")


# ---- how the HTML report shows this task (rows of a results store, any number of runs) ----
_METRIC_SUFFIX = r"^(.*) metric=(dot|euclidean)$"  # a query's store variant when it was not ranked by cosine


def score_distribution_figure(df: pd.DataFrame) -> list[ReportFigure]:
    """Per gallery (dataset split): for each query and model (the latest run of each), the mean ± std, 99th
    percentile and top-1 of the cosine scores of every gallery image; a query's models sit together, labelled."""
    df = with_columns(df, ["task", "metric"])
    s = df[(df.task == "search") & df.metric.isin(["all_scores_mean", "all_scores_std", "top1_score",
                                                   "all_scores_p99"])]
    if s.empty:
        return []
    plt = _plt()
    names = model_labels(model_key(r) for r in s.to_dict(orient="records"))
    out = []
    s = latest(s, (*MODEL, *DATA, "variant"))
    found = s.variant.astype(str).str.extract(_METRIC_SUFFIX)
    s = s.assign(query=found[0].fillna(s.variant.astype(str)), score_metric=found[1].fillna("cosine"))
    for data, rows in groups(s, (*DATA, "score_metric")):
        metric = text(data["score_metric"])
        axis = {"cosine": "cosine similarity", "dot": "dot product (raw embeddings)",
                "euclidean": "Euclidean distance (lower is closer)"}.get(metric, metric)
        points = []  # (query, model, {metric: value}), a query's models together
        for key, grp in groups(rows, ("query", *MODEL)):
            points.append((text(key["query"]), names[model_key(key)], dict(zip(grp.metric, grp.value))))
        order = list(dict.fromkeys(q for q, _, _ in points))
        points.sort(key=lambda p: order.index(p[0]))
        several = len({m for _, m, _ in points}) > 1
        get = lambda metric: np.array([v.get(metric, np.nan) for _, _, v in points], dtype=float)  # noqa: E731
        fig, ax = plt.subplots(figsize=(8, 0.32 * len(points) + 1.3))
        y = np.arange(len(points))[::-1]
        ax.errorbar(get("all_scores_mean"), y, xerr=get("all_scores_std"), fmt="o", label="all images: mean ± std")
        ax.scatter(get("all_scores_p99"), y, marker="|", s=120, label="99th percentile")
        ax.scatter(get("top1_score"), y, marker="*", s=60, label="top-1")
        ax.set_yticks(y, [wrap_text(f"{q} · {m}" if several else q, 60, 1) for q, m, _ in points], fontsize=TEXT_PT)
        ax.set_xlabel(axis)
        ax.legend(fontsize=TEXT_PT, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(alpha=0.3)
        models = list(dict.fromkeys(m for _, m, _ in points))
        gallery = text(data["dataset"]) + (f" ({text(data['split'])})" if text(data["split"]) else "")
        by = "" if metric == "cosine" else f" · by {metric}"
        ax.set_title(f"search scores · {gallery}" + ("" if several else f" · {models[0]}") + by, fontsize=10)
        fig.tight_layout()
        out.append(ReportFigure(f"Score distributions per query: {', '.join(models)} on {gallery}{by}", fig,
                                f"each query's {axis} to every gallery image (latest run per model and query)"))
    return out


REPORT_SECTIONS = [ReportSection(
    "search", ("top1_score", "all_scores_mean", "all_scores_p99"), figures=score_distribution_figure,
              order=80)]


STUDY = register(Study(
    "search", run_search, "Search images by text (or image, or image ± text): top-k with cosine scores, grids, several "
    "models.",
    params=SearchParams,
    inputs=(MODELS_P, PRETRAINEDS_P, DATASET_P.with_(help="images to search: a folder, a caption file, a dataset name "
                                                     "(see `cliplab zeroshot --help`)."),
            SPLIT_P, DATA_ROOT_P, LIMIT_P, METRIC_P, *RUN, *TEXTS),
    outputs=(Output("grids", "grids", "folder for one PNG grid per query (top-k images with scores, one row per "
                    "model).", folder=True),
             Output("output", "hits", "hits as .csv/.parquet/.jsonl.", TABLE_SUFFIXES, short="-o")),
    positional=("model", "dataset", "query"), group="Retrieval studies", sections=tuple(REPORT_SECTIONS), order=120,
    returns="Inline: one image grid per query (a row per model).",
    example='cliplab.search("tiny-shapes", "shapes", ["a red circle", "a small blue square"], k=6)'))
