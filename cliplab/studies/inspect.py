"""Per-image inspection: rank every class (or user prompt) for a few images, with scores and figures."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliplab.data.base import ImageDataset
from cliplab.data.sources import FileSource
from cliplab.data.folder import IMAGE_EXTENSIONS, list_images
from cliplab.embed import EmbeddingResult, embed_images, embed_texts
from cliplab.errors import CliplabError
from cliplab.models.base import LoadedModel
from cliplab.prompts import TemplateSet
from cliplab.embed.texts import class_text_embeddings
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.zeroshot import build_classifier, scores


def image_paths(args: list[str]) -> list[Path]:
    """Files as given; folders expanded to the images in them (sorted, recursive)."""
    out: list[Path] = []
    for a in args:
        p = Path(a).expanduser()
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise CliplabError(f"{a}: folder has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise CliplabError(f"{a}: no such image file or folder")
    if not out:
        raise CliplabError("no images given")
    return out


def read_prompts(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise CliplabError(f"--prompts {path}: file not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    prompts = [ln for ln in lines if ln and not ln.startswith("#")]
    if len(prompts) < 2:
        raise CliplabError(f"--prompts {path}: need at least two prompts, one per line")
    return prompts


@dataclass
class Inspection:
    model: LoadedModel
    paths: list[Path]
    labels: list[str]  # class names or prompts, in score-column order
    images: EmbeddingResult
    scores: np.ndarray  # (n_ok, L) cosine similarities
    probs: np.ndarray  # softmax(logit_scale * cosine), as CLIP reports probabilities

    def ranking(self, row: int, k: int) -> list[tuple[str, float, float]]:
        order = np.argsort(-self.scores[row], kind="stable")[:k]
        return [(self.labels[j], float(self.scores[row, j]), float(self.probs[row, j])) for j in order]


def inspect_images(model: LoadedModel, paths: list[Path], cache_dir=None, *, classnames: list[str] | None = None,
                   template_set: TemplateSet | None = None, prompts: list[str] | None = None,
                   quiet: bool = False) -> Inspection:
    """Scores of each image against class names (through ``template_set``) or raw ``prompts``."""
    ds = ImageDataset(name="inspect", split="-", source=FileSource(paths), fingerprint="inspect")
    images = embed_images(model, ds, cache_dir, quiet=quiet, num_workers=0)
    if prompts:
        labels = list(prompts)
        weights = l2_normalize(embed_texts(model, labels, cache_dir))
    else:
        if not classnames or template_set is None:
            raise CliplabError("give class names (--dataset/--classes) or --prompts to rank")
        labels = list(classnames)
        weights = build_classifier(class_text_embeddings(model, labels, template_set, cache_dir))
    s = scores(images.embeddings, weights)
    logits = model.logit_scale * s
    e = np.exp(logits - logits.max(1, keepdims=True))
    return Inspection(model, paths, labels, images, s, e / e.sum(1, keepdims=True))


def inspection_figures(ins: Inspection, folder: str | Path, k: int = 5) -> list[Path]:
    from cliplab.report.plots import image_with_bars, save_figure

    folder = Path(folder)
    out = []
    seen: dict[str, int] = {}
    for row, idx in enumerate(ins.images.indices):
        path = ins.paths[int(idx)]
        rank = ins.ranking(row, k)
        fig = image_with_bars(_load(path), [r[0] for r in rank], [r[1] for r in rank],
                              title=f"{path.name} · {ins.model.name}")
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
        out += save_figure(fig, [folder / f"{name}-top{k}.png"])
    return out


def _load(path: Path):
    from cliplab.data.imageio import open_rgb

    return open_rgb(path)
