"""A look at the data first: how many images each class has, and a grid of a few of them per class (seeded random
picks), before any model is run -- as every hand-made CLIP study opens with one. No model is loaded."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cliplab.inputs import CACHE_DIR_P, IMAGES, Inputs
from cliplab.params import param
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import image_grid, save_figure
from cliplab.report.rows import groups, latest, text
from cliplab.results.result import (DatasetInfo, Failure, Figure, ModelInfo, ReportFigure, ReportSection, Rows,
                                     Table, packed_name)

if TYPE_CHECKING:
    from cliplab.data.base import ImageDataset


@dataclass(frozen=True)
class PreviewParams:
    """How many images the preview shows, and which."""
    per_class: int = param(8, "images shown per class.", min=1)
    max_classes: int = param(40, "classes shown in the grid (the largest first when there are more).", min=1)
    seed: int = param(0, "the seed of the random picks.")


@dataclass(repr=False)
class PreviewResult(Notebook):
    """A dataset's classes with their sizes, and sample images of each (no model)."""
    data: ImageDataset
    counts: pd.DataFrame  # class, images
    picks: dict  # class index (or -1: unlabelled) -> dataset positions
    per_class: int
    task = "preview"

    @property
    def models(self) -> list[ModelInfo]:
        return [ModelInfo("none")]

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.data, len(self.data))

    @property
    def params(self) -> dict:
        return {"per_class": self.per_class}

    @property
    def failures(self) -> list[Failure]:
        return []

    def metric_rows(self) -> pd.DataFrame:
        """The whole set's size and number of classes under one variant (``classes``: the summary's row), and each
        class's size as ``images`` with the class in the tidy ``class`` column (stored as ``images[CLASS]``)."""
        rows, none = Rows(), ModelInfo("none")
        labelled = bool(self.data.classnames)
        add = partial(rows.add, task=self.task, model=none, dataset=self.data, variant=VARIANT, n=len(self.data))
        add(metric="images", value=len(self.data))
        if labelled:
            sizes = self.counts["images"]
            add(metric="classes", value=len(self.counts))
            add(metric="smallest_class", value=int(sizes.min()))
            add(metric="largest_class", value=int(sizes.max()))
            for name, n in zip(self.counts["class"], sizes):
                add(metric=packed_name("images", str(name)), value=int(n))
        return rows.frame()

    def summary(self) -> str:
        if self.data.classnames:
            sizes = self.counts["images"]
            return (f"{self.data.name} ({self.data.split}): {len(self.data)} images in {len(self.counts)} classes "
                    f"({int(sizes.min())}-{int(sizes.max())} per class)")
        return f"{self.data.name} ({self.data.split}): {len(self.data)} images, no class labels"

    def tables(self) -> list[Table]:
        t = Table(f"preview · {self.data.name} ({self.data.split})", ["class", "images", "share %"],
                  right=frozenset(["images", "share %"]))
        total = max(1, int(self.counts["images"].sum()))
        t.rows = [[str(c), str(int(n)), f"{100 * n / total:.1f}"] for c, n in zip(self.counts["class"],
                                                                                self.counts["images"])]
        return [t]

    def record(self) -> dict:
        return {"task": self.task, "dataset": self.data.name, "split": self.data.split,
                "dataset_fingerprint": self.data.fingerprint, "num_images": len(self.data),
                "classes": self.counts.to_dict(orient="records"),
                "samples": {str(self._name(c)): [self.data.source.id(int(i)) for i in pos]
                            for c, pos in self.picks.items()}}

    def artifacts(self) -> dict:
        return {"counts": self.counts, "grid": self.grid_figure()}

    def _name(self, c: int) -> str:
        return self.data.classnames[c] if c >= 0 and self.data.classnames else "images"

    @property
    def grid_caption(self) -> str:
        return f"sample images per class · {self.data.name}"

    def grid(self):
        """The matplotlib figure of the sample images, one row per class."""
        imgs, caps, rows = [], [], []
        for c, pos in self.picks.items():
            for j in range(self.per_class):
                if j < len(pos):
                    imgs.append(self.data.source.load(int(pos[j])))
                    caps.append(Path(self.data.source.id(int(pos[j]))).name[:24])
                else:
                    imgs.append(None)
                    caps.append("")
            rows.append(f"{self._name(c)} ({len(pos)} shown)")
        return image_grid(imgs, caps, cols=self.per_class, row_titles=rows, title=self.grid_caption)

    def grid_figure(self) -> Figure:
        """Sample images, one row per class (a PNG)."""
        def draw(path: Path) -> list[tuple[Path, str]]:
            return [(save_figure(self.grid(), [path])[0], self.grid_caption)]

        return Figure(self.grid_caption, draw)


def run_preview(inputs: Inputs, params: PreviewParams = PreviewParams()) -> PreviewResult:
    """Class sizes and a few seeded random images per class: a :class:`PreviewResult` (no model is loaded)."""
    return preview_of(inputs.dataset, params)


def preview_of(ds: ImageDataset, params: PreviewParams) -> PreviewResult:
    """The preview of a loaded dataset (the picks depend only on its labels and the seed)."""
    rng = np.random.default_rng(params.seed)
    if ds.labels is not None and ds.classnames:
        sizes = np.bincount(ds.labels, minlength=len(ds.classnames))
        counts = pd.DataFrame({"class": ds.classnames, "images": sizes})
        shown = np.argsort(-sizes, kind="stable")[:params.max_classes]
        picks = {int(c): np.sort(rng.permutation(np.flatnonzero(ds.labels == c))[:params.per_class])
                 for c in sorted(shown)}
    else:
        counts = pd.DataFrame({"class": ["(no labels)"], "images": [len(ds)]})
        picks = {-1: np.sort(rng.permutation(len(ds))[:params.per_class])}
    return PreviewResult(ds, counts, picks, params.per_class)


VARIANT = "class sizes"


def sample_grid_figures(df: pd.DataFrame) -> list[ReportFigure]:
    """The report's sample grid of each dataset split's latest preview. The store keeps numbers, not images, so the
    grid is drawn again from the dataset as the run recorded it (spec, split, limit, seed: the same picks); when the
    dataset cannot be opened any more, or its fingerprint is not the run's (files added, removed or renamed), the
    figure is left out and a note says why. A file edited in place keeps the fingerprint: the caption says the
    contents are not compared."""
    import json

    from cliplab.data import open_dataset
    from cliplab.errors import CliplabError
    from cliplab.progress import note

    figures = []
    df = df[df["task"] == "preview"] if "task" in df else df.iloc[:0]  # every section is given every row
    if df.empty or "config" not in df or df["config"].map(text).eq("").all():
        return figures  # rows of a result in memory (a notebook shows that result's own grid), not of a store
    for key, rows in groups(latest(df, ["dataset", "split"]), ["dataset", "split"]):
        row = rows.iloc[0]
        try:
            cfg = json.loads(text(row.get("config")) or "{}")
            split = cfg.get("split")  # as resolved; "all" is the whole dataset, what no split names
            ds = open_dataset(cfg["dataset"], split=None if split == "all" else split, data_root=cfg.get("data_root"),
                              limit=cfg.get("limit"), classnames=cfg.get("classnames"), download=False)
        except (CliplabError, KeyError, TypeError, ValueError, OSError) as exc:
            note(f"report: no sample grid for {key['dataset']} ({key['split']}): its dataset cannot be opened "
                 f"again ({str(exc).splitlines()[0][:160]})")
            continue
        if text(row.get("dataset_fingerprint")) and ds.fingerprint != text(row.get("dataset_fingerprint")):
            note(f"report: no sample grid for {key['dataset']} ({key['split']}): its files changed since the preview "
                 "ran (another fingerprint); run cliplab preview again")
            continue
        shown = PreviewParams(**{k: cfg[k] for k in ("per_class", "max_classes", "seed") if k in cfg})
        result = preview_of(ds, shown)
        figures.append(ReportFigure(result.grid_caption, result.grid(),
                                    f"{shown.per_class} images per class drawn at random (seed {shown.seed}), drawn "
                                    "again for this report from the dataset's files as they are now (the same file "
                                    "list as the run's; their contents are not compared)"))
    return figures


REPORT_SECTIONS = [ReportSection("preview", ("images", "classes", "smallest_class", "largest_class"),
                                 figures=sample_grid_figures, order=1)]

STUDY = register(Study(
    "preview", run_preview, "A look at the data first: images per class and a grid of samples per class (no model).",
    params=PreviewParams, inputs=(*IMAGES, CACHE_DIR_P),
    outputs=(Output("grid", "grid", "PNG of sample images, one row per class.", (".png",)),
             Output("output", "record", "JSON: classes, sizes and the sampled image ids.", (".json",), short="-o")),
    positional=("dataset",), group="Models, datasets and embeddings", sections=tuple(REPORT_SECTIONS), order=5,
    returns="Inline: the class table and the sample grid.",
    example='cliplab.preview("shapes:color", per_class=6)'))
