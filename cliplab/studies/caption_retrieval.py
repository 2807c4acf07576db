"""Caption retrieval study: text->image and image->text recall@k and ranks over a captioned dataset."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from typing import TYPE_CHECKING

from cliplab.embed import EmbeddingResult, embed_images, embed_texts
from cliplab.errors import CliplabError
from cliplab.files import printable
from cliplab.inputs import TEXTS, DATA_ROOT_P, DATASET_P, LIMIT_P, METRIC_P, ONE_MODEL, RUN, SPLIT_P, Inputs
from cliplab.params import param
from cliplab.progress import warn
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import image_grid, save_figure
from cliplab.results.exports import TABLE_SUFFIXES
from cliplab.results.result import DatasetInfo, Failure, Figure, ReportSection, Rows, SingleModel, Table, pct, skipped
from cliplab.tasks.caption_retrieval import (MAX_CHOSEN, RetrievalRanks, caption_retrieval, chunked_topk,
                                             pick_captions)
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.ranking import metric_note, readable_scores

if TYPE_CHECKING:
    from cliplab.data.base import ImageDataset
    from cliplab.models.base import LoadedModel

DIRECTIONS = ("text_to_image", "image_to_text")


@dataclass(frozen=True)
class RetrievalParams:
    """The caption retrieval study's own parameters."""
    ks: tuple[int, ...] = param((1, 5, 10), "recall@k cut-offs.", min=1)
    near_duplicate: float = param(0.95, "image-image cosine from which an image ranked above a caption's own image "
                                  "counts as a near-duplicate of it (the failure analysis: 'many similar pictures').",
                                  min=0.0, max=1.0)
    show_captions: tuple[str, ...] = param((), "captions to show in the {p:chosen} grid, each with its own image "
                                           "and the images retrieved for it: a caption id (the captions table's "
                                           "caption_id: the dataset's captions numbered from 0 in file order) or a "
                                           "text (every caption containing it, any case; at most "
                                           f"{MAX_CHOSEN} rows in all). Repeat the flag for several.",
                                           metavar="ID|TEXT")


@dataclass(repr=False)  # Notebook's repr: the summary and tables, not every field
class RetrievalResult(SingleModel, Notebook):
    """Text->image and image->text retrieval over a captioned dataset (the study contract:
    :mod:`cliplab.results.result`)."""
    model: LoadedModel
    data: ImageDataset
    images: EmbeddingResult
    captions: list[str]
    caption_image: np.ndarray  # position (into images.embeddings) of each caption's image
    text_emb: np.ndarray
    result: RetrievalRanks
    seconds: float = 0.0
    ks: tuple[int, ...] = (1, 5, 10)
    near_duplicate: float = 0.95
    metric: str = "cosine"
    caption_ids: np.ndarray | None = None  # each caption's id: its number among the dataset's captions (file order)
    chosen: tuple[int, ...] = ()  # captions (positions in ``captions``) picked by show_captions, in the given order
    task = "caption_retrieval"

    def _ids(self) -> np.ndarray:
        return np.arange(len(self.captions)) if self.caption_ids is None else np.asarray(self.caption_ids)

    @property
    def notes(self) -> list[str]:
        note = metric_note(self.metric)
        return [note] if note else []

    def _suffix(self) -> str:
        return "" if self.metric == "cosine" else f" metric={self.metric}"

    def _topk(self, texts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k images of caption embeddings ``texts`` by the run's metric (euclidean: distances, ascending)."""
        if self.metric == "cosine":
            return chunked_topk(texts, self.images.embeddings, k)
        return chunked_topk(texts, self.images.embeddings, k, metric=self.metric)

    def _own_scores(self, captions: np.ndarray) -> np.ndarray:
        """Each caption's score with its own image (cosine, dot or L2 distance)."""
        if self.metric == "cosine":
            return (l2_normalize(self.text_emb[captions]) * l2_normalize(self.images.embeddings[
                self.caption_image[captions]])).sum(1)
        return readable_scores(self.text_emb[captions], self.images.embeddings,
                               self.caption_image[captions][:, None], self.metric)[:, 0]

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.data, int(len(self.images.indices)))

    @property
    def params(self) -> dict:
        return {"ks": list(self.ks), "near_duplicate": self.near_duplicate, "metric": self.metric}

    def failure_analysis(self, depth: int = 50) -> pd.DataFrame:
        """Per caption whose own image is not ranked first: how many images score above it, the gap between its
        score and the best one (by the run's metric, negative: the own image scores worse; with euclidean the best
        distance minus the own one), and how close the images above it are to it (image-image cosine of the nearest,
        and how many are near-duplicates at ``near_duplicate``, whatever the metric), looking at the first ``depth``
        images above it."""
        ranks = np.asarray(self.result.t2i_ranks)
        fail = np.flatnonzero(ranks > 1)
        out = pd.DataFrame({"caption": fail, "images_above": ranks[fail] - 1})
        if not len(fail):
            return out.assign(score_gap=[], nearest_above=[], near_duplicates_above=[])
        s, idx = self._topk(self.text_emb[fail], min(depth + 1, len(self.images.indices)))
        U = l2_normalize(self.images.embeddings)
        own = self.caption_image[fail]
        own_score = self._own_scores(fail)
        sims = np.einsum("fd,fkd->fk", U[own], U[idx])
        above = (np.arange(idx.shape[1])[None, :] < (ranks[fail] - 1)[:, None]) & (idx != own[:, None])
        sims = np.where(above, sims, -np.inf)
        out["score_gap"] = own_score - s[:, 0] if self.metric != "euclidean" else s[:, 0] - own_score
        out["nearest_above"] = sims.max(1)
        out["near_duplicates_above"] = (sims >= self.near_duplicate).sum(1)
        return out

    @property
    def failures(self) -> list[Failure]:
        return Failure.from_embedding(self.images.failures)

    def metric_rows(self) -> pd.DataFrame:
        """Every recall@k and rank metric, variant = direction; n = captions (text->image) or images."""
        m = self.result.metrics
        rows = Rows()
        for key, v in m.items():
            for direction in DIRECTIONS:
                if key.startswith(direction + "_"):
                    rows.add(task=self.task, model=self.model, dataset=self.data, variant=direction + self._suffix(),
                             metric=key[len(direction) + 1:], value=v,
                             n=m["num_captions"] if direction == "text_to_image" else m["num_images"])
        fa = self.failure_analysis()
        kw = dict(task=self.task, model=self.model, dataset=self.data,
                  variant="text_to_image failures" + self._suffix(), n=len(fa))
        if len(fa):
            rows.add(metric="median_images_above", value=float(fa.images_above.median()), **kw)
            rows.add(metric="median_score_gap", value=float(fa.score_gap.median()), **kw)
            rows.add(metric="near_duplicate_share", value=float((fa.near_duplicates_above > 0).mean()), **kw)
        return rows.frame()

    def summary(self) -> str:
        m = self.result.metrics
        return (f"caption retrieval {self.model.name} on {self.data.name} ({m['num_images']} images, "
                f"{m['num_captions']} captions): text → image R@1 {pct(m.get('text_to_image_recall@1'))} %, "
                f"image → text R@1 {pct(m.get('image_to_text_recall@1'))} %"
                + ("" if self.metric == "cosine" else f" (by {self.metric})"))

    def tables(self) -> list[Table]:
        m = self.result.metrics
        ks = sorted(int(k.split("@")[1]) for k in m if k.startswith("text_to_image_recall@"))
        cols = [f"R@{k} %" for k in ks] + ["median rank", "mean rank"]
        table = Table(f"caption retrieval · {self.model.name} · {self.data.name} ({m['num_images']} images, "
                      f"{m['num_captions']} captions)" + ("" if self.metric == "cosine" else f" · {self.metric}"), ["direction", *cols], right=frozenset(cols),
                      caption=f"chance R@1: text → image {100 / max(1, m['num_images']):.2f} %")
        for d, label in (("text_to_image_", "text → image"), ("image_to_text_", "image → text")):
            table.rows.append([label, *[pct(m[f"{d}recall@{k}"]) for k in ks], f"{m[d + 'median_rank']:g}",
                               f"{m[d + 'mean_rank']:.1f}"])
        fa = self.failure_analysis()
        if not len(fa):
            return [table]
        ft = Table(f"captions that miss their image ({len(fa)} of {m['num_captions']})",
                   ["images above the own image (median)", "score gap to the top (median)",
                    f"with a near-duplicate above (cos ≥ {self.near_duplicate:g})", "nearest image above (median cos)"],
                   right=frozenset(["images above the own image (median)", "score gap to the top (median)",
                                    f"with a near-duplicate above (cos ≥ {self.near_duplicate:g})",
                                    "nearest image above (median cos)"]))
        ft.rows.append([f"{fa.images_above.median():g}", f"{fa.score_gap.median():+.3f}",
                        f"{pct(float((fa.near_duplicates_above > 0).mean()))} %",
                        f"{np.median(fa.nearest_above[np.isfinite(fa.nearest_above)]):.3f}"
                        if np.isfinite(fa.nearest_above).any() else "—"])
        ft.caption = ("a near-duplicate above the own image: the caption fits several near-identical pictures "
                      "('many similar pictures'), not a wrong one")
        return [table, ft]

    def record(self) -> dict:
        """CLIP_benchmark's zero-shot retrieval record: ``dataset``, ``model``, ``pretrained``, ``task``,
        ``metrics`` (both directions), the split, fingerprints and the skipped images."""
        return {"dataset": self.data.name, "model": self.model.name, "pretrained": self.model.pretrained,
                "task": "zeroshot_retrieval", "metrics": self.result.metrics, "split": self.data.split,
                **({} if self.metric == "cosine" else {"metric": self.metric}),
                "model_fingerprint": self.model.fingerprint, "dataset_fingerprint": self.data.fingerprint,
                "skipped_images": skipped(self.failures)}

    def artifacts(self) -> dict:
        out = {"captions": self.caption_frame(), "failures": self.failures_figure()}
        if self.chosen:
            out["chosen"] = self.chosen_figure()
        return out

    def caption_frame(self, k: int = 5) -> pd.DataFrame:
        """One row per caption: its image, rank of that image, and the top-k retrieved images with scores."""
        s, idx = self._topk(self.text_emb, k)
        src = self.data.source
        ids = [printable(src.id(int(i))) for i in self.images.indices]
        df = pd.DataFrame({"caption_id": self._ids(), "caption": self.captions,
                           "image": [ids[j] for j in self.caption_image],
                           "rank": self.result.t2i_ranks})
        fa = self.failure_analysis().set_index("caption")
        df["images_above"] = np.asarray(self.result.t2i_ranks) - 1
        df["score_gap"] = fa.score_gap.reindex(range(len(df))).to_numpy()
        df["nearest_above"] = fa.nearest_above.reindex(range(len(df))).to_numpy()
        df["near_duplicates_above"] = fa.near_duplicates_above.reindex(range(len(df))).fillna(0).astype(int).to_numpy()
        for j in range(idx.shape[1]):
            df[f"top{j + 1}_image"] = [ids[i] for i in idx[:, j]]
            df[f"top{j + 1}_score"] = s[:, j]
        return df

    def failures_figure(self, n: int = 6, k: int = 3) -> Figure:
        """The ``n`` worst-ranked captions: each row shows the true image, then the top-k images retrieved
        instead (a PNG)."""
        caption = "caption → image failures (worst-ranked captions)"

        def draw(path: Path) -> list[tuple[Path, str]]:
            return [(self._draw_failures(path, n, k), caption)]

        return Figure(caption, draw)

    def chosen_figure(self, k: int = 3) -> Figure:
        """The captions picked by ``show_captions``, in the order given: each row shows the caption's own image,
        then the top-k images retrieved for it (a PNG)."""
        caption = "chosen captions → images"

        def draw(path: Path) -> list[tuple[Path, str]]:
            ids = self._ids()
            note = (f"{len(self.chosen)} chosen caption(s) (ids {', '.join(str(int(ids[c])) for c in self.chosen)}); "
                    f"each row: the caption's own image, then the top {k} retrieved")
            rows = np.asarray(self.chosen, dtype=np.int64)
            return [(self._draw_rows(path, rows, k, f"chosen captions · {self.model.name} · {self.data.name}", note),
                     caption)]

        return Figure(caption, draw)

    def _draw_failures(self, path: Path, n: int, k: int) -> Path:
        worst = np.argsort(-self.result.t2i_ranks, kind="stable")[:n]
        note = (f"the {len(worst)} captions whose own image ranks lowest, of {len(self.captions)}; each row: the "
                f"true image, then the top {k} retrieved")
        return self._draw_rows(path, worst, k, f"caption -> image failures · {self.model.name} · {self.data.name}",
                               note)

    def _draw_rows(self, path: Path, worst: np.ndarray, k: int, title: str, note: str) -> Path:
        """One grid row per caption of ``worst``: its own image (rank and score), then its top-k images."""
        s, idx = self._topk(self.text_emb[worst], k)
        src = self.data.source
        true_scores = self._own_scores(worst)
        fa = self.failure_analysis().set_index("caption")
        U = l2_normalize(self.images.embeddings)
        imgs, caps, ok, titles = [], [], [], []
        for row, c in enumerate(worst):
            true_pos = int(self.caption_image[c])
            imgs.append(src.load(int(self.images.indices[true_pos])))
            caps.append(f"own image · rank {self.result.t2i_ranks[c]}\nscore {true_scores[row]:.3f}")
            ok.append(True)
            for j in range(idx.shape[1]):
                imgs.append(src.load(int(self.images.indices[idx[row, j]])))
                caps.append(f"retrieved #{j + 1}\nscore {s[row, j]:.3f} · like own {float(U[idx[row, j]] @ U[true_pos]):.2f}")
                ok.append(int(idx[row, j]) == true_pos)
            dup = int(fa.near_duplicates_above.get(c, 0)) if c in fa.index else 0
            titles.append(self.captions[c] + (f"\n({dup} near-duplicate(s) above)" if dup else ""))
        fig = image_grid(imgs, caps, cols=k + 1, row_titles=titles, highlight=ok, title=f"{title}\n{note}")
        return save_figure(fig, [path], description=note)[0]


def run_retrieval(inputs: Inputs, params: RetrievalParams = RetrievalParams()) -> RetrievalResult:
    """Recall@k and ranks both ways between the dataset's images and captions: a :class:`RetrievalResult`."""
    model, dataset, options, ks = inputs.model, inputs.dataset, inputs.options, tuple(params.ks)
    if getattr(dataset, "missing", 0):
        warn(f"{dataset.missing} images listed in {dataset.name} are not on disk and were left out")
    if not dataset.captions or not any(dataset.captions):
        raise CliplabError(f"dataset {dataset.name!r} has no captions; caption retrieval needs a caption file "
                           "(.csv/.jsonl), a COCO captions .json or a Karpathy split .json")
    first = np.concatenate([[0], np.cumsum([len(c or ()) for c in dataset.captions])])  # id of each image's 1st
    picks = None
    if params.show_captions:  # checked before any embedding: a typo costs nothing
        picks = pick_captions(params.show_captions, [c for cs in dataset.captions for c in (cs or ())])
        if picks.total > len(picks.ids):
            many = ", ".join(f"{c!r}: {n}" for c, n in picks.matched.items() if n > 1)
            warn(f"{{p:show_captions}} picked {picks.total} captions ({many}); the grid shows the first "
                 f"{len(picks.ids)} (choose others by caption_id, from the captions table)")
    t0 = time.perf_counter()
    images = embed_images(model, dataset, options)
    captions, owner, ids = [], [], []
    for pos, i in enumerate(images.indices):
        for j, c in enumerate(dataset.captions[int(i)]):
            captions.append(c)
            owner.append(pos)
            ids.append(int(first[int(i)]) + j)
    if not captions:
        raise CliplabError(f"dataset {dataset.name!r}: none of the embedded images has a caption")
    text_emb = embed_texts(model, captions, options)
    owner_arr = np.asarray(owner, dtype=np.int64)
    metric = inputs.values.get("metric", "cosine")
    res = caption_retrieval(images.embeddings, text_emb, owner_arr, ks, device=model.device, metric=metric)
    chosen: tuple[int, ...] = ()
    if picks is not None:
        where = {c: pos for pos, c in enumerate(ids)}
        chosen = tuple(where[c] for c in picks.ids if c in where)
        if len(chosen) < len(picks.ids):
            lost = [c for c in picks.ids if c not in where]
            warn(f"{{p:show_captions}}: {len(lost)} chosen caption(s) (id {', '.join(map(str, lost[:5]))}) belong to images "
                 "that were not embedded (skipped or unreadable) and are not shown")
    return RetrievalResult(model, dataset, images, captions, owner_arr, text_emb, res, time.perf_counter() - t0,
                           tuple(ks), params.near_duplicate, metric, np.asarray(ids, dtype=np.int64), chosen)


# ---- how the HTML report shows this task (rows of a results store, any number of runs) ----
def clip_benchmark_records(df: pd.DataFrame) -> list[dict]:
    """One CLIP_benchmark zero-shot retrieval record per run of the store."""
    out = []
    for (run_id, model, pre, ds), g in df.groupby(["run_id", "model", "pretrained", "dataset"], dropna=False,
                                                  sort=False):
        m = {}
        for v, k, val in zip(g.variant, g.metric, g.value):
            if k.startswith("recall@"):
                prefix = "image_retrieval" if v.startswith("text_to_image") else "text_retrieval"
                m[f"{prefix}_{k}"] = val
        out.append({"dataset": ds, "model": model, "pretrained": pre, "task": "zeroshot_retrieval", "metrics": m,
                    "language": "en", "run_id": run_id})
    return out


def from_clip_benchmark(key: str, value: float) -> list[dict]:
    """One metric of a CLIP_benchmark zero-shot retrieval record as store rows (others are not retrieval)."""
    if "_retrieval_" not in key:
        return []
    direction, metric = key.split("_retrieval_")
    variant = "text_to_image" if direction == "image" else "image_to_text"
    return [{"task": "caption_retrieval", "variant": variant + " (CLIP_benchmark)", "metric": metric,
             "value": float(value)}]


REPORT_SECTIONS = [ReportSection(
    "caption_retrieval", ("recall@1", "recall@5", "recall@10", "median_rank", "mean_rank"),
              rates=r"recall@\d+", clip_benchmark=clip_benchmark_records,
              from_clip_benchmark=("zeroshot_retrieval", from_clip_benchmark), order=40)]


STUDY = register(Study(
    "retrieval", run_retrieval, "Caption retrieval: text→image and image→text recall@k, median and mean rank "
    "(chunked, bounded memory).",
    params=RetrievalParams,
    inputs=(*ONE_MODEL, DATASET_P.with_(help="captioned images: a caption file (.csv/.jsonl), a COCO captions .json, "
                                        "a Karpathy split .json, or shapes."),
            SPLIT_P.with_(help="Karpathy files: test (default), val, train, all."),
            DATA_ROOT_P.with_(flag="--image-root", keyword="image_root", help="image folder of a COCO/Karpathy JSON "
                              "(default: guessed from the file's location)."), LIMIT_P, METRIC_P, *RUN, *TEXTS),
    outputs=(Output("captions", "captions", "per-caption ranks and top-5 images (.csv/.parquet/.jsonl).",
                    TABLE_SUFFIXES),
             Output("failures", "failures", "PNG grid of the worst-ranked captions with their true and retrieved "
                    "images.", (".png",)),
             Output("chosen", "chosen", "PNG grid of the captions picked by {p:show_captions}: each caption's own "
                    "image, then the images retrieved for it.", (".png",), requires="show_captions"),
             Output("output", "record", "results JSON.", (".json",), short="-o")),
    group="Retrieval studies", sections=tuple(REPORT_SECTIONS), order=110,
    returns="``.metrics``; ``.artifacts()[\"captions\"]`` holds each caption's rank and top-5 images.",
    example='cliplab.retrieval("tiny-shapes", "shapes", limit=200, quiet=True)'))
