"""Image->image retrieval study: descriptors (global / MAC / R-MAC / GeM), PCA-whitening, query expansion,
evaluation with Oxford/Paris ground truth or class labels."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from typing import TYPE_CHECKING

from cliplab.data.imageio import open_rgb
from cliplab.data.oxford import read_oxford_gt
from cliplab.data.sources import CroppedSource, FileSource
from cliplab.embed import embed_images
from cliplab.embed.descriptors import POOLINGS, DescriptorSpec, region_count
from cliplab.errors import CliplabError, ParameterError
from cliplab.files import printable
from cliplab.index import VectorIndex
from cliplab.inputs import DATA_ROOT_P, DATASET_P, LIMIT_P, METRIC_P, ONE_MODEL, RUN, SPLIT_P, Inputs
from cliplab.params import DATASET, param
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import image_grid, save_figure
from cliplab.results.exports import FileArtifact
from cliplab.results.result import DatasetInfo, Failure, Figure, ReportSection, Rows, SingleModel, Table, pct
from cliplab.tasks.clustering import kmeans
from cliplab.tasks.image_retrieval import (PROTOCOLS, Whitening, average_query_expansion, cluster_rerank, gt_map,
                                           labelled_metrics_of_ranking, labelled_retrieval_metrics, nearest_centre,
                                           revisited_ground_truth, rmac_aggregate)
from cliplab.tasks.stats import bootstrap_diff_ci
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.ranking import chunked_topk, metric_note

if TYPE_CHECKING:
    from cliplab.data.base import ImageDataset
    from cliplab.models.base import LoadedModel


@dataclass(frozen=True)
class SimilarParams:
    """How ``similar`` describes, whitens, queries and scores the gallery."""
    descriptor: str = param("global", "global (the CLIP embedding) | mac | rmac | gem, the last three from "
                            "{p:layer}.", choices=POOLINGS)
    layer: str | None = param(None, "module path for mac/rmac/gem (default: visual.layer4 for ResNets, "
                              "visual.transformer patch tokens for ViTs).")
    levels: int = param(3, "R-MAC scales.", min=1)
    gem_p: float = param(3.0, "GeM exponent.", min=1.0)
    pca_dim: int | None = param(None, "PCA to this many dimensions.", min=1)
    whiten: bool = param(True, "whiten with the PCA (when {p:pca_dim} or {p:pca_fit} is given).")
    pca_fit: str | None = param(None, "learn the PCA(-whitening) on these images (a folder or dataset; in Python also "
                                "a loaded dataset), not on the gallery.", kind=DATASET)
    qe: int = param(0, "average query expansion with the top N neighbours.", min=0)
    gt: Path | None = param(None, "ground truth: an Oxford/Paris folder (*_query.txt, _good, _ok, _junk), a "
                            "revisited gnd_*.pkl (easy/hard/junk: Easy, Medium and Hard protocols), or a .csv/.tsv "
                            "table with the columns query, relevant[, junk] (gallery image names or stems; one row "
                            "per pair or ';'-separated lists, a query's rows merged; the query itself is left out of "
                            "its ranking unless listed as relevant). mAP and mP@1/5/10 with junk ignored; positives "
                            "missing from the gallery count as misses (a table must name gallery images only). "
                            "Without {p:gt}, class labels are used.")
    no_crop: bool = param(False, "with {p:gt}: use whole query images, not their boxes.")
    k: int = param(10, "k for mAP@k / P@k and for {p:query} results.", min=1, flag="--topk", short="-k")
    query: tuple[str, ...] = param((), "query image(s): files or http(s) URLs; show their top-k.")
    cluster_rerank: int | None = param(None, "k-means with K clusters fitted on the gallery descriptors only (never "
                                       "the query images of {p:gt}; with class labels every gallery image is also "
                                       "a query; cosine: on the unit descriptors, dot/euclidean: on the raw ones), "
                                       "then each ranking re-ranked: the gallery images of the query's "
                                       "cluster (its nearest centre) first, each part in its plain order. mAP is "
                                       "reported against plain retrieval with a paired bootstrap 95 % CI over "
                                       "queries.", min=2, metavar="K")
    seed: int = param(0, "seed of {p:cluster_rerank}'s k-means and of its bootstrap.")

    def spec(self) -> DescriptorSpec:
        spec = DescriptorSpec(self.descriptor, self.layer, self.levels, 0.4, self.gem_p)
        spec.validate()
        return spec


@dataclass
class QueryHits:
    """Top-k gallery positions (into ``SimilarResult.indices``) and scores of ad-hoc query images."""
    paths: list[str]
    scores: np.ndarray  # (Q, k)
    positions: np.ndarray  # (Q, k)


@dataclass(repr=False)  # Notebook's repr: the summary and tables, not every field
class SimilarResult(SingleModel, Notebook):
    """Image->image retrieval over a gallery (the study contract: :mod:`cliplab.results.result`)."""
    model: LoadedModel
    gallery: ImageDataset
    spec: DescriptorSpec
    descriptors: np.ndarray  # (N, k) final, unit rows, aligned with ``indices``
    indices: np.ndarray
    scores: dict = field(default_factory=dict)  # mAP, P@k, ... by name (``metrics`` is the rows' DataFrame)
    whitening: Whitening | None = None
    notes: list[str] = field(default_factory=list)
    pca_dim: int | None = None
    whiten: bool = True
    pca_fit: str | None = None  # name of the set the PCA was learned on (None: the gallery, or no PCA)
    qe: int = 0
    k: int = 10
    gt: str | None = None
    label: str | None = None  # the variant's name, if not the one built from the options
    skipped: list = field(default_factory=list)  # (index, id, reason) of gallery images that could not be used
    queries: QueryHits | None = None
    metric: str = "cosine"  # how descriptors are compared; dot / euclidean: ``descriptors`` are not normalised
    cluster_rerank: int | None = None  # K of the k-means re-ranking
    seed: int = 0
    rerank_scores: dict = field(default_factory=dict)  # the metrics of the re-ranked retrieval
    rerank_diff: dict = field(default_factory=dict)  # name -> (re-ranked - plain, CI low, CI high, queries)
    task = "image_retrieval"

    @property
    def variant(self) -> str:
        """The options that make the descriptor, e.g. ``rmac pca=16 whiten qe=2``."""
        if self.label is not None:
            return self.label
        return (self.spec.pooling + (f" layer={self.spec.layer}" if self.spec.layer else "")
                + (f" pca={self.pca_dim}" if self.pca_dim else "")
                + (" whiten" if self.whitening is not None and self.whiten else "")
                + (f" qe={self.qe}" if self.qe else "")
                + ("" if self.metric == "cosine" else f" metric={self.metric}"))

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.gallery, int(len(self.indices)))

    @property
    def params(self) -> dict:
        return {"descriptor": asdict(self.spec), "pca_dim": self.pca_dim, "whiten": self.whiten,
                "pca_fit": self.pca_fit, "qe": self.qe, "k": self.k, "gt": self.gt,
                "queries": list(self.queries.paths) if self.queries else [], "metric": self.metric,
                "cluster_rerank": self.cluster_rerank, "seed": self.seed}

    @property
    def failures(self) -> list[Failure]:
        return Failure.from_embedding(self.skipped)

    def metric_rows(self) -> pd.DataFrame:
        """Every numeric metric (variant = :attr:`variant`, n = the number of queries)."""
        rows = Rows()
        for key, v in self.scores.items():
            if isinstance(v, (int, float)) and key != "queries":
                rows.add(task=self.task, model=self.model, dataset=self.gallery, variant=self.variant, metric=key,
                         value=v, n=self.scores.get("queries"))
        if self.cluster_rerank:
            kw = dict(task=self.task, model=self.model, dataset=self.gallery, seed=self.seed,
                      variant=f"{self.variant} rerank=k{self.cluster_rerank}")
            for key, v in self.rerank_scores.items():
                if isinstance(v, (int, float)) and key != "queries":
                    rows.add(metric=key, value=v, n=self.rerank_scores.get("queries"), **kw)
            for key, (diff, lo, hi, n) in self.rerank_diff.items():
                rows.add(metric=f"{key}_diff", value=diff, ci=(lo, hi), n=n, **kw)
        return rows.frame()

    def summary(self) -> str:
        head = f"image retrieval {self.model.name} on {self.gallery.name} ({self.variant})"
        key = next((k for k in ("mAP", "mAP_medium", f"mAP@{self.k}") if k in self.scores), None)
        return f"{head}: {key} {pct(self.scores[key])} %" if key else f"{head}: nothing to evaluate"

    def tables(self) -> list[Table | str]:
        """The metrics (one row per protocol with revisited ground truth), then one line per query image."""
        out: list[Table | str] = [self.metrics_table() if self.scores else
                                  "no labels or --gt: nothing to evaluate (use --query to search)"]
        if self.rerank_diff:
            cols = ["plain %", "re-ranked %", "difference (95 % CI)"]
            out.append(Table(f"cluster re-ranking · k-means k={self.cluster_rerank} on the gallery (seed {self.seed})",
                             ["metric", *cols], right=frozenset(cols),
                             rows=[[key, pct(self.scores[key]), pct(self.rerank_scores[key]),
                                    f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"]
                                   for key, (d, lo, hi, _) in self.rerank_diff.items()],
                             caption="each ranking with the images of the query's cluster first (its nearest k-means "
                                     "centre), each part in its plain order; CI: paired bootstrap over queries"))
        if self.queries is not None:
            src = self.gallery.source
            for qp, pos, sc in zip(self.queries.paths, self.queries.positions, self.queries.scores):
                hits = ", ".join(f"{Path(src.id(int(self.indices[p]))).name} ({s:.3f})" for p, s in zip(pos, sc))
                out.append(printable(f"{Path(qp).name}: {hits}"))
        return out

    def metrics_table(self) -> Table:
        m = self.scores
        title = (f"image retrieval · {self.model.name} · {self.gallery.name} · {self.variant} "
                 f"(dim {self.descriptors.shape[1]})")
        protocols = [p for p in PROTOCOLS if f"mAP_{p}" in m]
        if protocols:
            cols = ["mAP %", "mP@1 %", "mP@5 %", "mP@10 %"]
            return Table(title, ["protocol", *cols], right=frozenset(cols),
                         rows=[[p.capitalize(), *[pct(m[f"{key}_{p}"]) for key in ("mAP", "mP@1", "mP@5", "mP@10")]]
                               for p in protocols],
                         caption=f"{m.get('queries', '?')} queries · Easy: easy positives, hard ignored · Medium: "
                                 "easy + hard positives · Hard: hard positives, easy ignored · junk ignored")
        table = Table(title, ["metric", "value"], right=frozenset(["value"]))
        for key, v in m.items():
            if isinstance(v, float):
                table.rows.append([key, f"{pct(v)} %"])
            elif isinstance(v, int) and not isinstance(v, bool):
                table.rows.append([key, str(v)])
        return table

    def record(self) -> dict:
        return {"task": self.task, "model": self.model.name, "pretrained": self.model.pretrained,
                "dataset": self.gallery.name, "metrics": self.scores, "descriptor": asdict(self.spec),
                "variant": self.variant, "model_fingerprint": self.model.fingerprint,
                **({} if self.metric == "cosine" else {"metric": self.metric}),
                **({"cluster_rerank": {"k": self.cluster_rerank, "seed": self.seed, "metrics": self.rerank_scores,
                                       "difference": {k: {"value": d, "ci_low": lo, "ci_high": hi, "queries": n}
                                                      for k, (d, lo, hi, n) in self.rerank_diff.items()}}}
                   if self.cluster_rerank else {})}

    def artifacts(self) -> dict:
        out: dict = {"index": self.index_file()}
        if self.queries is not None:
            out["grid"] = self.grid_figure()
        return out

    def index_file(self) -> FileArtifact:
        """A FAISS flat index of the final descriptors for the run's metric (inner product for cosine and dot, L2
        for euclidean; ids = gallery image ids), and, when a PCA was learned, the PCA next to it as
        ``<index>.pca.npz``."""
        def save(path: Path) -> None:
            ids = [self.gallery.source.id(int(i)) for i in self.indices]
            VectorIndex.build(self.descriptors, ids, "flat", meta={"model_fingerprint": self.model.fingerprint,
                                                                   "descriptor": asdict(self.spec)},
                              metric=self.metric).save(path)
            if self.whitening is not None:
                self.whitening.save(path.with_name(path.name + ".pca.npz"))

        return FileArtifact("FAISS flat index of the gallery descriptors", save)

    def write_index(self, path: str | Path) -> list[tuple[Path, None]]:
        """Write :meth:`index_file` to ``path``."""
        return self.index_file().write(path)

    def grid_figure(self) -> Figure:
        """The query images, each followed by its top-k gallery images with scores (a PNG)."""
        caption = f"similar images · {self.variant}"

        def draw(path: Path) -> list[tuple[Path, str]]:
            return [(self._draw_grid(path), caption)]

        return Figure(caption, draw)

    def _draw_grid(self, path: Path) -> Path:
        q = self.queries
        src = self.gallery.source
        imgs, caps, rows = [], [], []
        for qi, qp in enumerate(q.paths):
            imgs.append(open_rgb(qp))
            caps.append("query")
            for j in range(q.positions.shape[1]):
                imgs.append(src.load(int(self.indices[q.positions[qi, j]])))
                caps.append(f"#{j + 1}  {q.scores[qi, j]:.3f}")
            rows.append(Path(qp).name)
        fig = image_grid(imgs, caps, cols=q.positions.shape[1] + 1, row_titles=rows,
                         title=f"similar images · {self.model.name} · {self.spec.pooling}")
        return save_figure(fig, [path])[0]


def _finish(raw: np.ndarray, spec: DescriptorSpec, n_regions: int, whitening: Whitening | None,
            metric: str = "cosine") -> np.ndarray:
    """The final descriptors: unit rows for cosine; for dot and euclidean the same without the last L2
    normalisation (global, mac, gem without PCA: the raw embeddings; with a PCA: the projected vectors)."""
    unit = metric == "cosine"
    if spec.pooling == "rmac":
        return rmac_aggregate(raw.reshape(len(raw), n_regions, -1), whitening, normalize=unit)
    if whitening is not None:
        return whitening.transform(l2_normalize(raw), normalize=unit)
    return l2_normalize(raw) if unit else np.asarray(raw, np.float32)


def _fit_whitening(raw: np.ndarray, spec, n_regions, dim, whiten) -> Whitening:
    if spec.pooling == "rmac":
        regions = l2_normalize(raw.reshape(len(raw) * n_regions, -1))
        return Whitening.fit(regions, dim, whiten)
    return Whitening.fit(l2_normalize(raw), dim, whiten)


def run_similar(inputs: Inputs, params: SimilarParams = SimilarParams()) -> SimilarResult:
    """Gallery descriptors, their evaluation and the top-k of any query images: a :class:`SimilarResult`."""
    from cliplab.data.urls import is_url, local_copy

    spec = params.spec()
    query = []
    for q in params.query:
        if is_url(q):
            query.append(str(local_copy(q, inputs.options.cache_dir, "query")))
            continue
        if not Path(q).is_file():
            raise ParameterError("query", q, "file not found", quote=False)
        query.append(q)
    pca_fit = inputs.open_dataset(params.pca_fit, param="pca_fit") if params.pca_fit is not None else None
    return retrieve_similar(inputs.model, inputs.dataset, spec, inputs.options, pca_fit=pca_fit,
                            pca_dim=params.pca_dim, whiten=params.whiten, qe=params.qe, k=params.k, gt=params.gt,
                            crop_queries=not params.no_crop, query=query,
                            metric=inputs.values.get("metric", "cosine"), cluster_rerank=params.cluster_rerank,
                            seed=params.seed)


def retrieve_similar(model: LoadedModel, gallery: ImageDataset, spec: DescriptorSpec, options=None, *,
                     pca_fit: ImageDataset | None = None, pca_dim: int | None = None, whiten: bool = True,
                     qe: int = 0, k: int = 10, gt: str | Path | None = None, crop_queries: bool = True,
                     query: Sequence[str | Path] = (), variant: str | None = None,
                     metric: str = "cosine", cluster_rerank: int | None = None, seed: int = 0) -> SimilarResult:
    """Gallery descriptors, their evaluation and the top-k of the ``query`` images: a :class:`SimilarResult`.

    Evaluated against ``gt`` (Oxford/Paris ground truth) if given, else the class labels; ``variant`` names the run
    in the results instead of the descriptor options; ``metric``: cosine, dot or euclidean (the last two on the
    descriptors without their last L2 normalisation)."""
    gt_dir, query_images = gt, query
    spec.validate()
    if gt_dir is not None:
        read_oxford_gt(gt_dir)  # a bad ground truth fails before the gallery is embedded
    n_regions = region_count(model, spec)
    g = embed_images(model, gallery, options, descriptor=spec, description="gallery descriptors")
    if not len(g.indices):
        raise CliplabError(f"{gallery.name}: no usable gallery images")
    run = SimilarResult(model, gallery, spec, np.zeros((0, 0)), g.indices, pca_dim=pca_dim, whiten=whiten,
                     pca_fit=pca_fit.name if pca_fit is not None else None, qe=qe, k=k,
                     gt=str(gt_dir) if gt_dir is not None else None, label=variant, skipped=list(g.failures),
                     metric=metric, cluster_rerank=cluster_rerank, seed=seed)
    note = metric_note(metric)
    if note:
        run.notes.append(note)
    if pca_dim is not None or pca_fit is not None:
        if pca_fit is not None:
            fit_raw = embed_images(model, pca_fit, options, descriptor=spec,
                                   description="PCA-fit descriptors").embeddings
        else:
            fit_raw = g.embeddings
            run.notes.append("PCA-whitening learned on the gallery itself (pass {p:pca_fit} DIR to learn it on a "
                             "separate set, as the R-MAC protocol does)")
        run.whitening = _fit_whitening(fit_raw, spec, n_regions, pca_dim, whiten)
    run.descriptors = _finish(g.embeddings, spec, n_regions, run.whitening, metric)
    db = run.descriptors
    clusters = _gallery_clusters(db, cluster_rerank, seed) if cluster_rerank else None

    if gt_dir is not None:
        ids = [gallery.source.id(int(i)) for i in g.indices]
        stems = {Path(x).stem: pos for pos, x in enumerate(ids)}
        gt_queries = read_oxford_gt(gt_dir, set(stems))
        pos_of = [stems[q.image] for q in gt_queries]
        src = CroppedSource(gallery.source, [(int(g.indices[p]), q.box if crop_queries else None)
                                             for p, q in zip(pos_of, gt_queries)])
        qr = embed_images(model, src, options, descriptor=spec, description="query descriptors", workers=0)
        if len(qr.indices) != len(gt_queries):
            raise CliplabError(f"{len(gt_queries) - len(qr.indices)} query images could not be read")
        qd = _finish(qr.embeddings, spec, n_regions, run.whitening, metric)
        if qe:
            qd = average_query_expansion(qd, db, qe, metric)
        _, rank = chunked_topk(qd, db, len(db)) if metric == "cosine" else chunked_topk(qd, db, len(db),
                                                                                         metric=metric)
        run.scores, notes = gt_metrics(gt_queries, rank, stems)
        run.notes.extend(notes)
        if clusters is not None:
            run.rerank_scores, _ = gt_metrics(gt_queries, cluster_rerank_of(rank, qd, *clusters), stems)
    elif gallery.labels is not None:
        labels = gallery.labels[g.indices]
        qd = average_query_expansion(db, db, qe, metric) if qe else None
        if clusters is None:
            run.scores = labelled_retrieval_metrics(db, labels, k, query_desc=qd, metric=metric)
        else:
            q = db if qd is None else qd
            _, rank = chunked_topk(q, db, len(db)) if metric == "cosine" else chunked_topk(q, db, len(db),
                                                                                           metric=metric)
            run.scores = labelled_metrics_of_ranking(rank, labels, k, per_query=True)
            run.rerank_scores = labelled_metrics_of_ranking(cluster_rerank_of(rank, q, *clusters), labels, k,
                                                            per_query=True)
    if run.rerank_scores:
        run.rerank_diff = paired_differences(run.scores, run.rerank_scores, seed)
    if query_images:
        paths = [str(q) for q in query_images]
        run.queries = QueryHits(paths, *query_hits(run, model, paths, options, k, qe))
    return run


def _gallery_clusters(db: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(assignment of each gallery row, centres) of k-means fitted on the gallery descriptors ``db`` alone."""
    if k > len(db):
        raise ParameterError("cluster_rerank", k, f"more clusters than gallery images ({len(db)})", quote=False)
    fit = kmeans(db, k, seed=seed)
    return fit.assignments, fit.centers


def cluster_rerank_of(rankings: np.ndarray, queries: np.ndarray, assignments: np.ndarray,
                      centres: np.ndarray) -> np.ndarray:
    """The rankings re-ranked by cluster: each query's cluster is its nearest centre (the centres were fitted on the
    gallery only), and the gallery images of that cluster come first (:func:`cluster_rerank`)."""
    return cluster_rerank(rankings, assignments, nearest_centre(queries, centres))


def paired_differences(plain: dict, reranked: dict, seed: int = 0) -> dict:
    """Per mAP (each protocol's with revisited ground truth): (re-ranked - plain, paired bootstrap 95 % CI over the
    queries both score, number of those queries)."""
    out = {}
    for suffix in ("", "_easy", "_medium", "_hard"):
        key, per = f"mAP{suffix}", f"per_query_ap{suffix}"
        if key not in plain or per not in plain or per not in reranked:
            continue
        a, b = plain[per], reranked[per]
        a = np.asarray(list(a.values()) if isinstance(a, dict) else a, float)
        b = np.asarray(list(b.values()) if isinstance(b, dict) else b, float)
        valid = ~np.isnan(a) & ~np.isnan(b)
        lo, hi = bootstrap_diff_ci(a[valid], b[valid], seed=seed)
        out[key] = (float(b[valid].mean() - a[valid].mean()) if valid.any() else float("nan"), lo, hi,
                    int(valid.sum()))
    return out


def gt_metrics(queries, rankings, position_of: dict[str, int]) -> tuple[dict, list[str]]:
    """mAP / mP@1,5,10 of ranked gallery positions against Oxford-style ground truth (image names).

    Classic ground truth: positives = good + ok, junk ignored. Revisited ground truth (easy/hard lists): the Easy,
    Medium and Hard protocols, metrics suffixed ``_easy``/``_medium``/``_hard``. Ground-truth images that are not
    in the gallery stay in the positives (they count as misses, as in revisitop); the notes say how many.
    """
    missing: dict[str, int] = {}

    def ids(names_):  # a name missing from the gallery gets its own negative id: never ranked, so a miss
        return [position_of[n] if n in position_of else missing.setdefault(n, -1 - len(missing)) for n in names_]

    names = [q.name for q in queries]
    metrics: dict = {"queries": len(queries)}
    if queries and all(q.revisited for q in queries):
        for protocol in PROTOCOLS:
            gts = [tuple(ids(x) for x in revisited_ground_truth(q.easy, q.hard, q.junk, protocol)) for q in queries]
            m = gt_map(rankings, gts)
            for key in ("mAP", "mP@1", "mP@5", "mP@10", "queries_without_positives"):
                metrics[f"{key}_{protocol}"] = m[key]
            metrics[f"per_query_ap_{protocol}"] = dict(zip(names, m["per_query_ap"]))
    else:
        m = gt_map(rankings, [(ids(q.good + q.ok), ids(q.junk)) for q in queries])
        metrics.update({k: m[k] for k in ("mAP", "mP@1", "mP@5", "mP@10", "queries_without_positives")})
        metrics["per_query_ap"] = dict(zip(names, m["per_query_ap"]))
    notes = []
    if missing:
        pos_names = {n for q in queries for n in q.good + q.ok}
        n_pos = len(pos_names & set(missing))
        notes.append(f"{len(missing)} ground-truth image(s) are not in the gallery ({n_pos} of them positives, "
                     f"e.g. {next(iter(missing))!r}); positives missing from the gallery count as misses, as in the "
                     "revisited Oxford/Paris protocol: check that {p:dataset} is the whole gallery (no {p:limit})")
    for k, v in metrics.items():
        if k.startswith("queries_without_positives") and v:
            where = f" under the {k.rsplit('_', 1)[1]} protocol" if k != "queries_without_positives" else ""
            notes.append(f"{v} query(s) have no positives{where} and are left out of its means (as revisitop does)")
    return metrics, notes


def query_hits(run: SimilarResult, model, paths: list[str], options, k: int, qe: int = 0):
    """Top-k gallery scores and positions for ad-hoc query images."""
    n_regions = region_count(model, run.spec)
    res = embed_images(model, FileSource(paths), options, descriptor=run.spec, workers=0)
    if res.failures:
        _, ident, reason = res.failures[0]
        raise ParameterError("query", ident, reason, quote=False)
    q = _finish(res.embeddings, run.spec, n_regions, run.whitening, run.metric)
    if qe:
        q = average_query_expansion(q, run.descriptors, qe, run.metric)
    if run.metric == "cosine":
        return chunked_topk(q, run.descriptors, k)
    return chunked_topk(q, run.descriptors, k, metric=run.metric)


# ---- how the HTML report shows this task (rows of a results store, any number of runs) ----
REPORT_SECTIONS = [ReportSection(
    "image_retrieval", ("mAP", "mP@10", "mAP@10", "P@10", "mAP_easy", "mAP_medium", "mAP_hard",
                                  "mP@10_medium"),
              rates=r"mAP|mAP@\d+|P@\d+|(mAP|mP@\d+)(_easy|_medium|_hard)?", order=50)]


STUDY = register(Study(
    "similar", run_similar, "Image→image retrieval: global/MAC/R-MAC/GeM descriptors, PCA-whitening, query "
    "expansion, mAP.",
    params=SimilarParams,
    inputs=(*ONE_MODEL, DATASET_P.with_(help="gallery: a folder (class subfolders = labels), or any dataset (see "
                                        "`cliplab zeroshot --help`)."), SPLIT_P, DATA_ROOT_P, LIMIT_P, METRIC_P, *RUN),
    outputs=(Output("grid", "grid", "PNG of the {p:query} results.", (".png",), requires="query"),
             Output("index", "index", "save a FAISS flat index of the final descriptors (+ the PCA as "
                    "INDEX.pca.npz).", beside=lambda p: [p, p.with_name(p.name + ".json"),
                                                         p.with_name(p.name + ".pca.npz")]),
             Output("output", "record", "results JSON.", (".json",), short="-o")),
    group="Retrieval studies", sections=tuple(REPORT_SECTIONS), order=130,
    returns="``.metrics``; ``.write_index(path)`` saves a FAISS index of the descriptors; inline: the query grid.",
    example='cliplab.similar("tiny-shapes", "shapes:color", descriptor="rmac", pca_dim=16, limit=300, quiet=True)'))
