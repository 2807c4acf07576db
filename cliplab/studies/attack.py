"""Typographic attack study: zero-shot on clean images vs the same images with a wrong class name written on them."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from typing import TYPE_CHECKING

from cliplab.attacks.typographic import POSITIONS, RULES, AttackedSource, TypographicParams, choose_targets, \
    render_text
from cliplab.data.base import ImageDataset
from cliplab.embed import EmbeddingResult, class_text_embeddings, embed_images
from cliplab.errors import ParameterError
from cliplab.inputs import TEXTS, IMAGES, ONE_MODEL, RUN, TEMPLATE_P, Inputs, Templates
from cliplab.params import param
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import image_grid, save_figure
from cliplab.results.result import DatasetInfo, Failure, Figure, ReportSection, Rows, SingleModel, Table, pct
from cliplab.tasks.metrics import classification_metrics
from cliplab.tasks.zeroshot import build_classifier, scores

if TYPE_CHECKING:
    from cliplab.models.base import LoadedModel
    from cliplab.prompts import TemplateSet


@dataclass(frozen=True)
class AttackParams:
    """What the typographic attack writes, where and how."""
    target: str = param("random", "which wrong class is written: random (seeded), next (label + 1), "
                                   "most-confused (the clean classifier's most frequent confusion).", choices=RULES)
    text: str = param("{}", "what is written, {} = the class name (e.g. 'this is a {}').")
    font_size: float = param(0.22, "text height as a fraction of the image side.", min=0.01, max=1.0)
    position: str = param("center", "where the text goes (random: seeded per image).", choices=POSITIONS)
    opacity: float = param(1.0, "opacity of the text, 0 < opacity <= 1.", max=1.0)
    color: str = param("white", "text colour (outlined in black).")
    font: Path | None = param(None, ".ttf/.otf font file (default: Pillow's bundled font).")
    seed: int = param(0, "the seed of random targets, positions and example images.")
    n_examples: int = param(8, "image pairs in the examples figure, drawn at random (seeded by {p:seed}).", min=1)

    def typographic(self) -> TypographicParams:
        return TypographicParams(font_size=self.font_size, position=self.position, opacity=self.opacity,
                                 color=self.color, font=str(self.font) if self.font else None, seed=self.seed)


@dataclass(repr=False)  # Notebook's repr: the summary and tables, not every field
class AttackResult(SingleModel, Notebook):
    """Zero-shot predictions on clean images and on the same images with a wrong class name written on them (the
    study contract: :mod:`cliplab.results.result`)."""
    model: LoadedModel
    data: ImageDataset
    template_set: TemplateSet
    typographic: TypographicParams
    rule: str
    indices: np.ndarray  # dataset items embedded both clean and attacked
    labels: np.ndarray
    targets: np.ndarray  # class written on each image
    clean_scores: np.ndarray
    attacked_scores: np.ndarray
    clean: EmbeddingResult
    attacked: EmbeddingResult
    texts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    text_format: str = "{}"
    n_examples: int = 8  # image pairs in the examples figure
    task = "typographic_attack"

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.data, int(len(self.labels)))

    @property
    def params(self) -> dict:
        return {"templates": self.template_set.name, "target": self.rule, "text": self.text_format,
                **self.typographic.__dict__, "n_examples": self.n_examples}

    @property
    def failures(self) -> list[Failure]:
        return Failure.from_embedding(self.clean.failures)

    @property
    def clean_pred(self) -> np.ndarray:
        return self.clean_scores.argmax(1)

    @property
    def attacked_pred(self) -> np.ndarray:
        return self.attacked_scores.argmax(1)

    def scores(self) -> dict:
        """Every measure of the attack by name (``metrics`` is the rows' DataFrame)."""
        c, a = self.clean_pred, self.attacked_pred
        cm = classification_metrics(self.clean_scores, self.labels, (1,))
        am = classification_metrics(self.attacked_scores, self.labels, (1,))
        return {
            "clean_acc1": cm["acc1"], "attacked_acc1": am["acc1"], "acc1_drop": cm["acc1"] - am["acc1"],
            "clean_mean_per_class_recall": cm["mean_per_class_recall"],
            "attacked_mean_per_class_recall": am["mean_per_class_recall"],
            # how often the model answers the written word, after vs before writing it (the latter is the base rate)
            "predicts_written_label": float(np.mean(a == self.targets)),
            "predicts_written_label_clean": float(np.mean(c == self.targets)),
            "prediction_changed": float(np.mean(a != c)),
            "correct_flipped_to_written": float(np.mean((c == self.labels) & (a == self.targets))),
            "n": int(len(self.labels)),
        }

    def metric_rows(self) -> pd.DataFrame:
        """Every measure of :meth:`scores` (variant: template set and target rule; seed: the attack's)."""
        m = self.scores()
        rows = Rows()
        kw = dict(task=self.task, model=self.model, dataset=self.data, n=m["n"], seed=self.typographic.seed,
                  variant=f"{self.template_set.name}; target={self.rule}")
        for k, v in m.items():
            if k != "n":
                rows.add(metric=k, value=v, **kw)
        return rows.frame()

    def summary(self) -> str:
        m = self.scores()
        return (f"typographic attack {self.model.name} on {self.data.name} ({m['n']} images, {self.rule} target): "
                f"top-1 {pct(m['clean_acc1'])} % -> {pct(m['attacked_acc1'])} %, written label predicted "
                f"{pct(m['predicts_written_label'])} %")

    def tables(self) -> list[Table]:
        m = self.scores()
        p = self.typographic
        table = Table(f"typographic attack · {self.model.name} · {self.data.name} ({m['n']} images, target rule: "
                      f"{self.rule}, templates: {self.template_set.name})",
                      ["measure", "clean", "attacked", "change (pt)"],
                      right=frozenset(["clean", "attacked", "change (pt)"]))
        table.rows += [
            ["top-1 %", pct(m["clean_acc1"]), pct(m["attacked_acc1"]), f"{-100 * m['acc1_drop']:+.2f}"],
            ["mean class recall %", pct(m["clean_mean_per_class_recall"]), pct(m["attacked_mean_per_class_recall"]),
             f"{100 * (m['attacked_mean_per_class_recall'] - m['clean_mean_per_class_recall']):+.2f}"],
            ["predicts the written label %", pct(m["predicts_written_label_clean"]), pct(m["predicts_written_label"]),
             f"{100 * (m['predicts_written_label'] - m['predicts_written_label_clean']):+.2f}"]]
        table.caption = (f"prediction changed on {100 * m['prediction_changed']:.1f} % of images; "
                         f"{100 * m['correct_flipped_to_written']:.1f} % went from correct to the written label · "
                         f"font {p.font_size:g} of the side, {p.position}, opacity {p.opacity:g}")
        return [table]

    def record(self) -> dict:
        return {"task": self.task, "model": self.model.name, "pretrained": self.model.pretrained,
                "dataset": self.data.name, "split": self.data.split, "metrics": self.scores(),
                "model_fingerprint": self.model.fingerprint}

    def artifacts(self) -> dict:
        """``examples``: original vs attacked pairs (a PNG)."""
        def draw(path: Path) -> list[tuple[Path, str]]:
            return [(attack_examples_figure(self, path, self.n_examples), caption)]

        caption = f"typographic attack examples ({self.rule} target)"
        return {"examples": Figure(caption, draw)}

    def examples(self, n: int = 8) -> list[int]:
        """Positions (into ``indices``) of the pairs the examples figure shows: ``n`` images drawn uniformly at
        random (numpy ``default_rng([seed, 1])``, the attack's seed), in dataset order. Not chosen by outcome, so
        the pairs show the attack working about as often as it does (:meth:`examples_note` says how often)."""
        rng = np.random.default_rng([self.typographic.seed, 1])
        return sorted(int(i) for i in rng.choice(len(self.labels), min(n, len(self.labels)), replace=False))

    def examples_note(self, picks: list[int]) -> str:
        """How the example pairs were chosen, and how their outcome compares with the rate over every image."""
        written = self.attacked_pred == self.targets
        return (f"{len(picks)} of {len(self.labels)} images drawn at random (seed {self.typographic.seed}), not by "
                f"outcome: the written label is predicted on {int(written[picks].sum())} of these {len(picks)}, on "
                f"{100 * written.mean():.1f} % of all {len(self.labels)} images")


def run_attack(inputs: Inputs, params: AttackParams = AttackParams()) -> AttackResult:
    """Zero-shot on clean and on attacked copies of the dataset's images: an :class:`AttackResult`."""
    model, dataset, template_set, options = inputs.model, inputs.dataset, inputs.templates[0], inputs.options
    rule, text_format, n_examples = params.target, params.text, params.n_examples
    dataset.require_classes("the typographic attack")
    if "{}" not in text_format:
        raise ParameterError("text", text_format, f"{{p:text}} {text_format!r} must contain {{}} where the class "
                             "name goes", prefix=False)
    params = params.typographic()
    params.validate()
    t0 = time.perf_counter()
    names = dataset.classnames
    clf = build_classifier(class_text_embeddings(model, names, template_set, options))
    clean = embed_images(model, dataset, options, description="embedding clean images")
    clean_scores_all = scores(clean.embeddings, clf)
    all_labels = dataset.labels
    confusion = None
    if rule == "most-confused":
        confusion = classification_metrics(clean_scores_all, all_labels[clean.indices], (1,))["confusion"]
    targets_all = choose_targets(all_labels, len(names), rule, seed=params.seed, confusion=confusion)
    texts = [text_format.format(names[t]) for t in targets_all]
    attacked_ds = ImageDataset(name=f"{dataset.name}+typographic", split=dataset.split,
                               source=AttackedSource(dataset.source, texts, params),
                               fingerprint=f"{dataset.fingerprint}:typo", classnames=names, labels=all_labels)
    attacked = embed_images(model, attacked_ds, options, description="embedding attacked images")
    common, ci, ai = np.intersect1d(clean.indices, attacked.indices, return_indices=True)
    return AttackResult(model, dataset, template_set, params, rule, common, all_labels[common], targets_all[common],
                        clean_scores_all[ci], scores(attacked.embeddings[ai], clf), clean, attacked,
                        texts=[texts[i] for i in common], seconds=time.perf_counter() - t0,
                        text_format=text_format, n_examples=n_examples)


def attack_examples_figure(res: AttackResult, path: str | Path, n: int = 8) -> Path:
    """Original (top) and attacked (bottom) images with their predictions: ``n`` pairs drawn at random
    (:meth:`AttackResult.examples`), the title and the file's description say so."""
    names = res.data.classnames
    picks = res.examples(n)
    src = res.data.source
    top, bottom, cap_top, cap_bottom, ok_top, ok_bottom = [], [], [], [], [], []
    for p in picks:
        i = int(res.indices[p])
        img = src.load(i)
        top.append(img)
        bottom.append(render_text(img, res.texts[p], res.typographic, index=i))
        c, a = int(res.clean_pred[p]), int(res.attacked_pred[p])
        cap_top.append(f"true: {names[res.labels[p]]}\npred: {names[c]} ({res.clean_scores[p, c]:.2f})")
        cap_bottom.append(f"wrote: {names[res.targets[p]]}\npred: {names[a]} ({res.attacked_scores[p, a]:.2f})")
        ok_top.append(c == res.labels[p])
        ok_bottom.append(a == res.labels[p])
    cols = max(1, len(picks))
    note = res.examples_note(picks)
    fig = image_grid(top + bottom, cap_top + cap_bottom, cols=cols, row_titles=["original", "attacked"],
                     highlight=ok_top + ok_bottom,
                     title=f"typographic attack · {res.model.name} · {res.data.name} (green = correct)\n{note}")
    return save_figure(fig, [path], description=note)[0]


# ---- how the HTML report shows this task (rows of a results store, any number of runs) ----
REPORT_SECTIONS = [
    ReportSection("typographic_attack", ("clean_acc1", "attacked_acc1", "acc1_drop", "predicts_written_label",
                                     "predicts_written_label_clean"),
              rates=r"clean_acc1|attacked_acc1|acc1_drop|predicts_written_label.*|prediction_changed|"
                    r"correct_flipped_to_written|clean_mean.*|attacked_mean.*", order=70),
]


STUDY = register(Study(
    "attack", run_attack, "Write a wrong class name on every image; report the accuracy drop and flips to the written "
    "label.",
    description="Attacked images are embedded once and cached under their own keys.",
    params=AttackParams,
    inputs=(*ONE_MODEL, *IMAGES, TEMPLATE_P, *RUN, *TEXTS),
    templates=Templates(ensemble=True, one=True),
    outputs=(Output("examples", "examples", "PNG with original vs attacked example pairs.", (".png",)),
             Output("output", "record", "summary JSON.", (".json",), short="-o")),
    command=("attack", "typographic"), group="Classification studies", sections=tuple(REPORT_SECTIONS), order=60,
    returns="Inline: the clean/attacked table and original vs attacked example pairs.",
    example='cliplab.attack("tiny-shapes", "shapes:color", target="next", limit=200, quiet=True)'))
