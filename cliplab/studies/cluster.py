"""Clustering study: k-means on image embeddings (optionally after PCA), its agreement with the labels (NMI, ARI,
purity), the cluster assignments and sample images per cluster (closest to the centre first)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from typing import TYPE_CHECKING

from cliplab.embed import EmbeddingResult, embed_images
from cliplab.files import printable
from cliplab.inputs import IMAGES, METRIC_P, ONE_MODEL, RUN, Inputs
from cliplab.params import param
from cliplab.progress import bar_total, progress_bar
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import image_grid, save_figure
from cliplab.results.exports import TABLE_SUFFIXES
from cliplab.results.result import DatasetInfo, Failure, Figure, ReportSection, Rows, SingleModel, Table
from cliplab.tasks.clustering import CLUSTER_METRICS, KMEANS, WHY_NO_DOT, Clustering, kmeans, prepare
from cliplab.tasks.ranking import metric_note

if TYPE_CHECKING:
    from cliplab.data.base import ImageDataset
    from cliplab.models.base import LoadedModel


@dataclass(frozen=True)
class ClusterParams:
    """The clustering study's own parameters."""
    k: tuple[int, ...] = param((), "number of clusters, or a comma list to sweep (default: the number of classes, "
                               "else 10).", min=2, flag="--k")
    pca_dim: int | None = param(None, "PCA before clustering.", min=1)
    kmeans: str = param("sklearn", "k-means implementation: sklearn | faiss.", choices=KMEANS)
    seed: int = param(0, "the seed of k-means (and of the PCA).")
    per_cluster: int = param(8, "images per cluster in the grid.", min=1)


@dataclass(repr=False)  # Notebook's repr: the summary and tables, not every field
class ClusterResult(SingleModel, Notebook):
    """k-means for one or more k on one dataset split (the study contract: :mod:`cliplab.results.result`)."""
    model: LoadedModel
    data: ImageDataset
    images: EmbeddingResult
    X: np.ndarray  # what was clustered: unit embeddings, after the PCA if any (aligned with images.indices)
    labels: np.ndarray | None  # labels of the embedded images, if the dataset has labels
    clusterings: list[Clustering] = field(default_factory=list)
    kmeans: str = "sklearn"  # the k-means implementation: sklearn | faiss
    pca_dim: int | None = None
    seed: int = 0
    per_cluster: int = 8  # images per cluster in the grid
    metric: str = "cosine"  # cosine: k-means on L2-normalised embeddings; euclidean: on the raw embeddings
    task = "clustering"

    @property
    def variant(self) -> str:
        return (f"kmeans-{self.kmeans}" + (f" pca={self.pca_dim}" if self.pca_dim else "")
                + ("" if self.metric == "cosine" else f" metric={self.metric}"))

    @property
    def notes(self) -> list[str]:
        note = metric_note(self.metric)
        return [note] if note else []

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.data, int(len(self.X)))

    @property
    def params(self) -> dict:
        return {"ks": [c.k for c in self.clusterings], "pca_dim": self.pca_dim, "kmeans": self.kmeans,
                "seed": self.seed, "metric": self.metric}

    @property
    def failures(self) -> list[Failure]:
        return Failure.from_embedding(self.images.failures)

    def metric_rows(self) -> pd.DataFrame:
        """Inertia, silhouette and (with labels) NMI, ARI and purity per k (variant ``<variant> k=<k>``)."""
        rows = Rows()
        for c in self.clusterings:
            for key, v in c.metrics.items():
                rows.add(task=self.task, model=self.model, dataset=self.data, variant=f"{self.variant} k={c.k}",
                         metric=key, value=v, n=len(c.assignments))
        return rows.frame()

    def summary(self) -> str:
        parts = [f"k={c.k}" + (f" NMI {c.metrics['nmi']:.3f}" if "nmi" in c.metrics else
                               f" inertia {c.metrics['inertia']:.1f}") for c in self.clusterings]
        return f"k-means {self.model.name} on {self.data.name} ({len(self.X)} images): " + ", ".join(parts)

    def tables(self) -> list[Table]:
        labelled = self.labels is not None
        cols = ["k", "inertia", "silhouette"] + (["NMI", "ARI", "purity"] if labelled else [])
        table = Table(f"k-means · {self.model.name} · {self.data.name} ({len(self.X)} images"
                      + (f", {len(self.data.classnames)} classes)" if labelled else ")"), cols, right=frozenset(cols))
        for c in self.clusterings:
            mt = c.metrics
            table.rows.append([str(c.k), f"{mt['inertia']:.1f}", f"{mt.get('silhouette', float('nan')):.3f}",
                               *([f"{mt['nmi']:.3f}", f"{mt['ari']:.3f}", f"{100 * mt['purity']:.1f} %"]
                                 if labelled else [])])
        return [table]

    def record(self) -> dict:
        return {"task": self.task, "model": self.model.name, "pretrained": self.model.pretrained,
                "dataset": self.data.name, "split": self.data.split, "variant": self.variant,
                "num_images": int(len(self.X)), "runs": [{"k": c.k, "metrics": c.metrics} for c in self.clusterings],
                "model_fingerprint": self.model.fingerprint, "dataset_fingerprint": self.data.fingerprint}

    def artifacts(self) -> dict:
        return {"assignments": self.assignments(), "grid": self.grid_figure()}

    def assignments(self) -> pd.DataFrame:
        """One row per image: its id, its label (if any) and its cluster for every k (``cluster_k<k>``)."""
        df = pd.DataFrame({"id": [printable(self.data.source.id(int(i))) for i in self.images.indices]})
        if self.labels is not None:
            df["label"] = np.asarray(self.data.classnames, dtype=object)[self.labels]
        for c in self.clusterings:
            df[f"cluster_k{c.k}"] = c.assignments
        return df

    def grid_figure(self) -> Figure:
        """Sample images of every cluster of the first k, closest to the centre first (a PNG)."""
        caption = f"cluster samples (k = {self.clusterings[0].k})"

        def draw(path: Path) -> list[tuple[Path, str]]:
            return [(self._draw_grid(self.clusterings[0], path), caption)]

        return Figure(caption, draw)

    def _draw_grid(self, clustering: Clustering, path: Path) -> Path:
        names, labels, X, per = self.data.classnames, self.labels, self.X, self.per_cluster
        imgs, caps, rows = [], [], []
        for c in range(clustering.k):
            members = np.flatnonzero(clustering.assignments == c)
            d = np.linalg.norm(X[members] - clustering.centers[c], axis=1)
            pick = members[np.argsort(d, kind="stable")[:per]]
            for j in range(per):
                if j < len(pick):
                    imgs.append(self.data.source.load(int(self.images.indices[pick[j]])))
                    caps.append(names[labels[pick[j]]] if labels is not None and names else "")
                else:
                    imgs.append(None)
                    caps.append("")
            major = ""
            if labels is not None and len(members) and names:
                vals, counts = np.unique(labels[members], return_counts=True)
                major = f" · {names[vals[counts.argmax()]]} {100 * counts.max() / len(members):.0f} %"
            rows.append(f"cluster {c} ({len(members)}){major}")
        note = f"each row: the {per} images closest to the cluster's centre, closest first"
        fig = image_grid(imgs, caps, cols=per, row_titles=rows,
                         title=f"k-means clusters (k = {clustering.k}) · {note}")
        return save_figure(fig, [path], description=note)[0]


def run_cluster(inputs: Inputs, params: ClusterParams = ClusterParams()) -> ClusterResult:
    """k-means (sklearn or faiss) of the image embeddings for each k (default: the number of classes, else 10): a
    :class:`ClusterResult`."""
    model, dataset = inputs.model, inputs.dataset
    ks = list(params.k) or [len(dataset.classnames) if dataset.classnames else 10]
    images = embed_images(model, dataset, inputs.options)
    metric = inputs.values.get("metric", "cosine")
    X = prepare(images.embeddings, params.pca_dim, params.seed, metric=metric)
    labels = dataset.labels[images.indices] if dataset.labels is not None else None
    run = ClusterResult(model, dataset, images, X, labels, kmeans=params.kmeans, pca_dim=params.pca_dim,
                        seed=params.seed, per_cluster=params.per_cluster, metric=metric)
    work = len(X) * X.shape[1] * sum(ks) * 4  # n_init=4 restarts of k-means
    with progress_bar(bar_total(len(ks), work), "k-means", unit="k") as bar:
        for k in ks:
            run.clusterings.append(kmeans(X, k, implementation=params.kmeans, seed=params.seed, labels=labels))
            bar.advance()
    return run


# ---- how the HTML report shows this task (rows of a results store, any number of runs) ----
REPORT_SECTIONS = [ReportSection(
    "clustering", ("nmi", "ari", "purity", "silhouette"), rates=r"purity", order=60)]


STUDY = register(Study(
    "cluster", run_cluster, "k-means on image embeddings (optionally after PCA): NMI, ARI and purity against labels, "
    "sample grids.",
    params=ClusterParams, inputs=(*ONE_MODEL, *IMAGES, METRIC_P.with_(
        choices=CLUSTER_METRICS, hint=f"dot is not offered: {WHY_NO_DOT}", help=(
            "the geometry k-means clusters in: cosine (the default, L2-normalised embeddings; what CLIP models are "
            "trained for) or euclidean (the raw embeddings). No dot: k-means needs a distance, and no centre "
            "maximises a summed dot product (it grows with the centre's length). Results are keyed by it.")),
        *RUN),
    outputs=(Output("grid", "grid", "PNG of sample images per cluster (for the first k).", (".png",)),
             Output("output", "assignments", "assignments as .csv/.parquet/.jsonl.", TABLE_SUFFIXES, short="-o")),
    group="Retrieval studies", sections=tuple(REPORT_SECTIONS), order=140,
    returns="``.assignments()``: each image's cluster per k; inline: the sample grid.",
    example='cliplab.cluster("tiny-shapes", "shapes:color", k=[6, 12], quiet=True)'))
