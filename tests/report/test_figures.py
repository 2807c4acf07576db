"""The report's figures show each model's own numbers under that model's name (issue 24): stores holding several
models, datasets, splits and runs; the matplotlib artists are read back and compared with the stored rows."""
from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest

from cliplab.report.html import report_figures
from cliplab.report.plots import MIN_TEXT_PX, PAGE_PX, REPORT_DPI, _plt
from cliplab.results.store import RunRecorder, read_results

LIMIT = 200


@pytest.fixture(scope="module")
def two_models(trained_cache, tiny_checkpoint, tmp_path_factory):
    """A store of ``cliplab.compare`` on two datasets with the shipped tiny-shapes and a random tiny ViT (one run,
    two models, two datasets), then a zero-shot run of tiny-shapes with two template sets."""
    import cliplab

    cfg, ckpt, _ = tiny_checkpoint
    store = tmp_path_factory.mktemp("two-models") / "results"
    kw = dict(limit=LIMIT, cache_dir=trained_cache, backend="torch", quiet=True)
    cliplab.compare(["tiny-shapes", str(cfg)], ["shapes:color", "shapes:size"], pretrained=["none", str(ckpt)],
                    **kw).save(store)
    cliplab.zeroshot("tiny-shapes", "shapes:color", templates=["simple", "bare"], **kw).save(store)
    return read_results(store)


def figures_of(df, task):
    from cliplab.registry import sections_for
    from cliplab.studies import discover

    discover()
    return [f for s in sections_for(task) if s.figures for f in s.figures(df)]


def close(figs):
    for f in figs:
        _plt().close(f.figure)


def axes_labelled(fig, label):
    return [ax for ax in fig.axes if ax.get_label() == label]


def all_text(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def models_of(df):
    """{label shown in figures: model name in the store}: the random ViT is named by its config file."""
    return {m.rsplit("/", 1)[-1]: m for m in df.model.unique()}


# ---- zero-shot per-class figures ----------------------------------------------------------------------------------
def test_per_class_figures_show_each_models_own_recall(two_models):
    """Regression: a compare run's per-class figure drew both models' recalls (20 bars for 10 classes) under the
    first model's title, and its confusion list held correct predictions ('X → X')."""
    df = two_models
    figs = figures_of(df, "zeroshot_classification")
    shown = models_of(df)
    try:
        assert [f.title.split(" on ")[-1] for f in figs] == ["shapes:color (test)", "shapes:size (test)"]
        for f in figs:
            dataset = f.title.split(" on ")[-1].split(" (")[0]
            (heat,) = axes_labelled(f.figure, "per-class recall")
            classes = [t.get_text().split(". ", 1)[-1] for t in heat.get_yticklabels()]
            columns = [t.get_text().replace("\n", " ") for t in heat.get_xticklabels()]
            cells = heat.images[0].get_array()
            assert cells.shape == (len(classes), len(columns))
            for j, col in enumerate(columns):
                owners = [label for label in shown if col.startswith(label + " ")]
                assert len(owners) == 1, col  # every column names one model
                variant = col[len(owners[0]) + 3:]
                rows = df[(df.model == shown[owners[0]]) & (df.dataset == dataset) & (df.variant == variant)
                          & (df.run_id == df[(df.model == shown[owners[0]]) & (df.dataset == dataset)].run_id.iloc[-1])]
                stored = dict(zip(rows.metric_name, rows.value))  # the stored names: read_results keeps them
                assert np.allclose(cells[:, j], [100 * stored[f"recall[{c}]"] for c in classes]), (col, dataset)
            confusions = axes_labelled(f.figure, "confusion")
            assert len(confusions) == 2  # one per model, each titled with it
            for ax in confusions:
                owner = [label for label in shown if f"\n{label} · " in ax.get_title()]
                assert len(owner) == 1, ax.get_title()
                rows = df[(df.model == shown[owner[0]]) & (df.dataset == dataset) & (df.variant == "simple")
                          & (df.metric == "confusion")]
                rows = rows[rows.run_id == rows.run_id.iloc[-1]]
                cm = np.array([[rows[(rows["true"] == t) & (rows.predicted == p)].value.iloc[0] for p in classes]
                               for t in classes])
                assert np.allclose(ax.images[0].get_array(), 100 * cm / cm.sum(1, keepdims=True))
            for text in all_text(f.figure):
                for line in text.splitlines():
                    t, arrow, p = line.partition(" → ")
                    assert not arrow or t.split(". ", 1)[-1] != p, line
    finally:
        close(figs)


def test_per_class_figure_takes_the_latest_run_and_puts_template_sets_side_by_side(two_models):
    """The later zero-shot run (simple, bare) replaces the compare run's tiny-shapes column on shapes:color; the
    random model keeps its column."""
    df = two_models
    figs = figures_of(df, "zeroshot_classification")
    try:
        (heat,) = axes_labelled(figs[0].figure, "per-class recall")
        columns = [t.get_text().replace("\n", " ") for t in heat.get_xticklabels()]
        assert columns == ["tiny-shapes · simple", "tiny-shapes · bare", "tiny-vit.json · simple"]
        latest = df[(df.model == "tiny-shapes") & (df.dataset == "shapes:color") & (df.variant == "bare")]
        assert latest.run_id.nunique() == 1 and latest.run_id.iloc[0] == df.run_id.iloc[-1]
    finally:
        close(figs)


def test_top_confusions_never_list_a_class_as_its_own_confusion():
    """More than 30 classes: only the largest cells are stored; the panel lists off-diagonal ones only."""
    from cliplab.results.result import Rows
    from cliplab.studies.zeroshot import confusion_rows

    names = [f"class {i}" for i in range(35)]
    cm = np.diag(np.full(35, 50))
    cm[3, 4], cm[7, 1] = 9, 4
    rows = Rows()
    kw = dict(task="zeroshot_classification", model={"name": "m", "fingerprint": "f"}, dataset=_Data("d"),
              variant="simple", n=35 * 50)
    for c in names:
        rows.add(metric=f"recall[{c}]", value=0.9, **kw)
    confusion_rows(rows, cm, names, **kw)
    figs = figures_of(rows.frame().assign(run_id="r", timestamp="t"), "zeroshot_classification")
    try:
        (ax,) = axes_labelled(figs[0].figure, "confusion")
        assert [t.get_text() for t in ax.get_yticklabels()] == ["class 7 → class 1", "class 3 → class 4"]
        assert [p.get_width() for p in ax.patches] == [4, 9]
    finally:
        close(figs)


class _Data:
    def __init__(self, name, split="test", fingerprint="d1"):
        self.name, self.split, self.fingerprint = name, split, fingerprint


# ---- one run with several models; models sharing a name; splits -------------------------------------------------
def _store(rows_by_run: list[list[dict]]) -> pd.DataFrame:
    """A store made by hand: one run per list of rows (``Rows.add`` keywords)."""
    from cliplab.results.result import Rows

    frames = []
    for i, run in enumerate(rows_by_run):
        rec = RunRecorder("hand", {})
        rec.run_id, rec.timestamp = f"run{i}", f"2026-01-01T00:00:0{i}+00:00"
        rec.base.update(run_id=rec.run_id, timestamp=rec.timestamp)
        rows = Rows()
        for r in run:
            rows.add(**r)
        rec.add_rows(rows.frame())
        frames.append(rec.frame())
    return pd.concat(frames, ignore_index=True)


OPENAI = {"name": "ViT-B-32", "pretrained": "openai", "fingerprint": "aaa"}
LAION = {"name": "ViT-B-32", "pretrained": "laion2b", "fingerprint": "bbb"}


def test_comparison_bars_keep_models_that_share_a_name_and_splits_apart():
    """Regression: bars were keyed by model name and dataset only, so two ViT-B-32 weights (and a test and a
    train split) were one bar holding whichever row came last."""
    zs = dict(task="zeroshot_classification", metric="acc1", variant="simple")
    df = _store([[dict(model=OPENAI, dataset=_Data("cifar10"), value=0.8, **zs),
                  dict(model=LAION, dataset=_Data("cifar10"), value=0.9, **zs)],
                 [dict(model=OPENAI, dataset=_Data("cifar10", "train"), value=0.95, **zs)]])
    (f,) = figures_of(df, "compare")
    try:
        ax = f.figure.axes[0]
        groups = [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()]
        heights = {c.get_label(): [round(b.get_height(), 6) for b in c] for c in ax.containers}
        assert groups == ["cifar10 · test", "cifar10 · train"]
        assert heights == {"ViT-B-32 (openai) · zero-shot": [80.0, 95.0],
                           "ViT-B-32 (laion2b) · zero-shot": [90.0, 0.0]}
    finally:
        close([f])


def test_kshot_and_prompt_figures_of_a_run_with_two_models_are_one_per_model():
    """Regression: k-shot and prompt figures grouped rows by run, so a run holding two models drew both in one
    figure titled with the first."""
    ks = dict(task="kshot_probe", metric="acc1", dataset=_Data("cifar10"))
    pr = dict(task="prompt_study", dataset=_Data("cifar10"))
    run = []
    for model, base in ((OPENAI, 0.5), (LAION, 0.2)):
        run += [dict(model=model, variant=f"probe k={k}", value=base + k / 100, seed=s, **ks)
                for k in (1, 2, 4, 16) for s in (0, 1)]
        run += [dict(model=model, variant=f"template: {t}", metric="acc1_diff_vs_baseline", value=base / 10 + i / 100,
                     ci=(base / 10, base / 10 + 0.02), **pr) for i, t in enumerate(("a", "b"))]
    df = _store([run])
    kfigs, pfigs = figures_of(df, "kshot_probe"), figures_of(df, "prompt_study")
    try:
        assert [f.title for f in kfigs] == ["k-shot probes: ViT-B-32 (openai) on cifar10",
                                            "k-shot probes: ViT-B-32 (laion2b) on cifar10"]
        for f, base in zip(kfigs, (0.5, 0.2)):
            (probe,) = [c for c in f.figure.axes[0].containers if c.get_label() == "probe"]
            line = probe.lines[0]
            assert list(line.get_xdata()) == [1, 2, 4, 16]
            assert np.allclose(line.get_ydata(), [100 * (base + k / 100) for k in (1, 2, 4, 16)])
        assert [f.title for f in pfigs] == ["Prompt study: ViT-B-32 (openai) on cifar10",
                                            "Prompt study: ViT-B-32 (laion2b) on cifar10"]
        for f, base in zip(pfigs, (0.5, 0.2)):
            assert np.allclose([p.get_width() for p in f.figure.axes[0].patches],
                               [100 * (base / 10 + i / 100) for i in range(2)])
    finally:
        close(kfigs + pfigs)


def test_search_scores_of_two_galleries_are_not_merged():
    """Regression: the score figure pivoted on (model, query) and kept the last value of each metric, mixing the
    galleries (and runs) a query was asked of."""
    s = dict(task="search", variant="a red circle", model=OPENAI)
    rows = [[dict(dataset=_Data(d), metric=m, value=v + (0.1 if d == "coco" else 0), **s)
             for m, v in (("all_scores_mean", 0.1), ("all_scores_std", 0.05), ("all_scores_p99", 0.3),
                          ("top1_score", 0.4))] for d in ("shapes", "coco")]
    figs = figures_of(_store(rows), "search")
    try:
        assert [f.title for f in figs] == ["Score distributions per query: ViT-B-32 on shapes (test)",
                                           "Score distributions per query: ViT-B-32 on coco (test)"]
        for f, shift in zip(figs, (0, 0.1)):
            ax = f.figure.axes[0]
            top1 = [c for c in ax.collections if c.get_label() == "top-1"][0]
            assert np.allclose(top1.get_offsets()[:, 0], [0.4 + shift])
    finally:
        close(figs)


# ---- every label reads at the page's width ----------------------------------------------------------------------
def smallest_text_px(fig, dpi: int) -> float:
    """The smallest text of ``fig`` in page pixels: drawn at ``dpi`` (bbox tight), shown at most ``PAGE_PX``
    wide."""
    from matplotlib.text import Text

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    from PIL import Image

    width = Image.open(io.BytesIO(buf.getvalue())).width
    scale = min(1.0, PAGE_PX / width)
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes) * dpi / 72 * scale


def test_every_report_figure_reads_at_the_page_width(two_models):
    figs = report_figures(two_models)
    try:
        assert len(figs) >= 3
        for f in figs:
            assert smallest_text_px(f.figure, REPORT_DPI) >= MIN_TEXT_PX, f.title
    finally:
        close(figs)


@pytest.mark.parametrize("cols", [2, 8, 10])
def test_image_grid_text_grows_with_the_grid(cols):
    from cliplab.report.plots import GRID_DPI, image_grid

    img = np.zeros((40, 40, 3), np.uint8)
    caption = "true: shape in the bottom right\npred: shape in the top left (0.31)"
    fig = image_grid([img] * 2 * cols, [caption] * 2 * cols, cols=cols, row_titles=["original", "attacked"], title="typographic attack")
    try:
        assert smallest_text_px(fig, GRID_DPI) >= MIN_TEXT_PX
    finally:
        _plt().close(fig)


# ---- example images: drawn at random, and the figure says so -----------------------------------------------------
def test_attack_examples_are_drawn_at_random_and_say_so():
    """Regression: the examples figure showed successful flips first (8/8 when the rate was 14.2 %)."""
    from cliplab.attacks.typographic import TypographicParams
    from cliplab.studies.attack import AttackResult

    n, C = 500, 5
    labels = np.arange(n) % C
    targets = (labels + 1) % C
    clean = np.eye(C)[labels]
    attacked = clean.copy()
    attacked[:40] = np.eye(C)[targets[:40]]  # the written label wins on the first 40 images (8 %)
    res = AttackResult(None, None, None, TypographicParams(seed=3), "next", np.arange(n), labels, targets, clean,
                       attacked, None, None)
    picks = res.examples(8)
    assert len(set(picks)) == 8 and picks == sorted(picks) and picks == res.examples(8)
    assert picks != list(range(8))  # not the flips first
    assert res.examples(8) != AttackResult(None, None, None, TypographicParams(seed=4), "next", np.arange(n),
                                           labels, targets, clean, attacked, None, None).examples(8)
    note = res.examples_note(picks)
    flips = int(sum(p < 40 for p in picks))
    assert note == (f"8 of 500 images drawn at random (seed 3), not by outcome: the written label is predicted on "
                    f"{flips} of these 8, on 8.0 % of all 500 images")


def test_figure_files_carry_their_description_into_the_report(tmp_path):
    from cliplab.report.html import image_figures
    from cliplab.report.plots import image_grid, save_figure

    img = np.zeros((20, 20, 3), np.uint8)
    path = save_figure(image_grid([img, img], ["a", "b"]), [tmp_path / "g.png"], description="drawn at random")[0]
    df = pd.DataFrame([{"artifact": str(path), "variant": "examples", "model": "m", "dataset": "d", "command": "c",
                        "run_id": "r"}])
    (fig,) = image_figures(df)
    assert fig.title == "examples" and fig.caption.startswith("drawn at random · m · d")
