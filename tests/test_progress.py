"""Every step that can take a second or more reports a bar (text embedding, ranking, index building, k-means sweeps,
PCA and whitening, bootstraps, figure drawing), and steps too small to need one show none; notes and warnings spell
parameters as the door does."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cliplab import progress
from cliplab.progress import ConsoleProgress, Silent, bar_total, note, use, warn
from recording import Recording

RNG = np.random.default_rng(0)
X = RNG.normal(size=(300, 16)).astype(np.float32)
LABELS = np.arange(300) % 5


@pytest.fixture
def every_step(monkeypatch):
    """Every step counts as long (the threshold is for real sizes), and what reports is recorded."""
    monkeypatch.setattr(progress, "BAR_MIN_WORK", 0)
    rec = Recording()
    with use(rec):
        yield rec


def test_caption_ranks_report_both_directions(every_step):
    from cliplab.tasks.caption_retrieval import caption_retrieval

    caption_retrieval(X[:100], X[100:300], np.arange(200) % 100, row_chunk=64, device="cpu")
    assert every_step.bars == ["ranking images for captions", "ranking captions for images"]


def test_ranking_steps_report(every_step):
    from cliplab.tasks.image_retrieval import labelled_retrieval_metrics
    from cliplab.tasks.ranking import chunked_topk, evaluate_rankings

    chunked_topk(X[:50], X, 5, device="cpu")
    evaluate_rankings(X[:50], X, LABELS[:50], LABELS, device="cpu")
    labelled_retrieval_metrics(X[:60], LABELS[:60])
    assert every_step.bars == ["ranking", "ranking the gallery", "ranking", "scoring rankings"]


def test_pca_whitening_and_kmeans_report(every_step):
    from cliplab.tasks.clustering import prepare
    from cliplab.tasks.image_retrieval import Whitening

    Whitening.fit(X, 8)
    Whitening.fit(X, 8, whiten=False)
    prepare(X, pca_dim=8)
    assert every_step.bars == ["PCA-whitening", "PCA", "PCA"]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_building_reports(every_step, kind):
    from cliplab.index import VectorIndex

    idx = VectorIndex.build(X, [str(i) for i in range(len(X))], kind)
    assert every_step.bars == [f"building the {kind} index"] and idx.index.ntotal == len(X)


def test_bootstrap_reports(every_step):
    from cliplab.tasks.stats import bootstrap_diff_ci

    bootstrap_diff_ci(LABELS == 0, LABELS == 1, n_boot=300)
    assert every_step.bars == ["bootstrap"]


def test_small_steps_show_no_bar():
    from cliplab.tasks.ranking import chunked_topk
    from cliplab.tasks.stats import bootstrap_diff_ci

    rec = Recording()
    with use(rec):
        chunked_topk(X[:50], X, 5, device="cpu")
        bootstrap_diff_ci(LABELS == 0, LABELS == 1, n_boot=300)
    assert rec.bars == []
    assert bar_total(7, progress.BAR_MIN_WORK) == 7 and bar_total(7, progress.BAR_MIN_WORK - 1) == 0


@pytest.fixture(scope="module")
def model(trained_cache):
    import cliplab

    return cliplab.load_model("tiny-shapes", backend="torch", cache_dir=trained_cache, quiet=True)


def test_kmeans_sweep_text_embedding_and_figures_report(every_step, model, trained_cache, tmp_path):
    import cliplab
    from cliplab.results.exports import write_artifact

    r = cliplab.cluster(model, "shapes:color", k=[3, 6], limit=60, cache_dir=trained_cache, no_cache=True)
    assert "k-means" in every_step.bars and "embedding images" in every_step.bars
    every_step.bars.clear()
    cliplab.embed_texts(model, ["a red circle", "a blue square"], cache_dir=tmp_path)
    assert every_step.bars == ["embedding texts"]
    every_step.bars.clear()
    write_artifact(tmp_path / "grid.png", r, "grid", r.artifacts(), {})
    assert every_step.bars == ["drawing cluster samples (k = 3)"]


def test_figures_of_many_files_and_the_report_report(every_step, model, trained_cache, tmp_path):
    import cliplab
    from cliplab.report.html import build_report

    from conftest import make_image

    images = [str(make_image(tmp_path / f"{i}.png", color=(200, 40 * i, 30))) for i in range(3)]
    r = cliplab.inspect(model, images, classes=["red", "green"], cache_dir=trained_cache)
    every_step.bars.clear()
    r.artifacts()["figures"].write(tmp_path / "figures")
    assert every_step.bars == ["drawing figures"]
    z = cliplab.zeroshot(model, "shapes:color", limit=60, cache_dir=trained_cache)
    z.save(tmp_path / "store")
    every_step.bars.clear()
    build_report(cliplab.read_results(tmp_path / "store"), tmp_path / "report.html")
    assert every_step.bars == ["drawing figures"]


def test_notes_and_warnings_spell_parameters_as_the_door_does(capsys):
    import io

    from rich.console import Console

    from cliplab.params import Spelling

    rec = Recording()
    with use(rec):
        note("give {p:data_root}")
        warn("or {p:pretrained}")
    assert rec.notes == ["give data_root"] and rec.warnings == ["or pretrained"]
    out = io.StringIO()
    with use(ConsoleProgress(Console(file=out, width=200), spell=Spelling((), "cli"))):
        warn("give {p:pretrained}")
    with use(Silent()):
        note("{p:x}")  # nothing shown, nothing raised
    assert out.getvalue().strip() == "warning: give --pretrained"


def test_a_warning_from_a_with_blocks_exit_names_the_callers_line():
    """Regression: a warning raised as one of cliplab's ``with`` blocks ends (the cache's one report of damaged
    entries) was attributed to contextlib.py, not to the notebook cell or script line that called cliplab."""
    import warnings
    from pathlib import Path

    from cliplab import quarantine
    from cliplab.progress import CliplabWarning, NotebookProgress, use

    moved = quarantine.Moved(Path("/tmp"), "embedding shard", (Path("/tmp/x.npy"),), None, "bad checksum")
    with warnings.catch_warnings(record=True) as caught, use(NotebookProgress(quiet=True)):
        warnings.simplefilter("always")
        with quarantine.one_report():
            quarantine.record([moved])
    (w,) = [w for w in caught if issubclass(w.category, CliplabWarning)]
    assert w.filename == __file__ and "damaged entr" in str(w.message)


def test_the_terminal_bar_shows_done_rate_and_time_left():
    """Issue 26: one bar for the whole job with rows done, rows per second and the time left (the rate column was
    missing)."""
    import io
    import re

    from rich.console import Console

    from cliplab.progress import ConsoleProgress

    out = io.StringIO()
    with ConsoleProgress(Console(file=out, force_terminal=True, width=140)).bar(40, "embedding images") as bar:
        for _ in range(40):
            bar.advance()
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).replace("\r", "\n").strip().splitlines()[-1]
    assert re.search(r"40/40 img [\d,.]+ img/s \d+:\d\d:\d\d", last), last


@given(st.integers(0, 100_000))
def test_text_batches_move_the_bar_about_twenty_times(n):
    from cliplab.embed.texts import BAR_STEPS, TEXT_BATCH_MAX, TEXT_BATCH_MIN, text_batch

    b = text_batch(n)
    assert TEXT_BATCH_MIN <= b <= TEXT_BATCH_MAX
    steps = -(-n // b)
    if TEXT_BATCH_MIN * BAR_STEPS <= n <= TEXT_BATCH_MAX * BAR_STEPS:
        assert steps == BAR_STEPS
    elif n > TEXT_BATCH_MAX * BAR_STEPS:
        assert b == TEXT_BATCH_MAX and steps > BAR_STEPS
    else:
        assert b == TEXT_BATCH_MIN


def test_the_text_bar_moves_in_steps_and_the_embeddings_do_not_change(model, tmp_path):
    """A few hundred captions used to be one batch of 256 and one step: the bar sat still for most of a real run."""
    from cliplab.embed.texts import embed_texts
    from cliplab.progress import Bar

    class Counting(Recording):
        def __init__(self):
            super().__init__()
            self.steps = []

        @contextlib.contextmanager
        def bar(self, total, description, unit="img"):
            self.bars.append(description)
            owner = self

            class Counted(Bar):
                def advance(self, n=1):
                    owner.steps.append(n)

            yield Counted()

    texts = [f"a photo of shape number {i}" for i in range(300)]
    rec = Counting()
    with use(rec):
        got = embed_texts(model, texts, tmp_path / "a")
    assert rec.bars == ["embedding texts"] and sum(rec.steps) == 300 and len(rec.steps) == 10  # 32 a batch
    one_batch = embed_texts(model, texts, tmp_path / "b", batch_size=300)
    np.testing.assert_allclose(got, one_batch, rtol=0, atol=1e-5)
