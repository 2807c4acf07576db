"""The text x image similarity matrix (issue 27): ``inspect --heatmap`` (CLI), the inline display (Python), the
report (through the store's figure); the order of its images and the numbers in its cells."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.report.plots import similarity_matrix, similarity_order

runner = CliRunner()


@pytest.mark.parametrize("scores, expected", [
    ([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], [1, 3, 0, 2]),  # candidate 0's images first, best first
    ([[0.5, 0.5], [0.5, 0.5]], [0, 1]),  # a tie goes to the first candidate; equal scores keep their order
    ([[0.2, 0.3, 0.1]], [0]),
    (np.zeros((0, 3)), []),
])
def test_images_are_grouped_by_their_best_candidate(scores, expected):
    assert similarity_order(scores) == expected


def _cells(fig) -> dict[tuple[int, int], str]:
    ax = next(a for a in fig.axes if a.get_label() == "similarity")
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}


def test_every_cell_says_its_cosine_in_the_drawn_order():
    rng = np.random.default_rng(0)
    scores = rng.uniform(-0.2, 0.6, size=(5, 3))
    names = [f"img{i}.png" for i in range(5)]
    fig = similarity_matrix(scores, [np.zeros((8, 8, 3), np.uint8)] * 5, names, ["a", "b", "c"], title="t")
    order = similarity_order(scores)
    cells = _cells(fig)
    assert len(cells) == 15
    for col, i in enumerate(order):
        for row in range(3):
            assert cells[(row, col)] == f"{scores[i, row]:.2f}"
    ax = next(a for a in fig.axes if a.get_label() == "similarity")
    assert [t.get_text() for t in ax.get_xticklabels()] == [names[i] for i in order]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert len(fig.axes) == 1 + 5  # the matrix and a thumbnail over each column


def test_a_large_matrix_has_a_colour_bar_instead_of_numbers():
    scores = np.random.default_rng(1).uniform(size=(30, 4))
    fig = similarity_matrix(scores, [None] * 30, [f"{i}.png" for i in range(30)], list("abcd"), title="t")
    assert _cells(fig) == {} and len(fig.axes) == 2  # the matrix and its colour bar
    width, _ = fig.get_size_inches()
    assert width <= 10.5


def test_inspect_writes_the_heatmap_and_the_report_shows_it(trained_cache, tmp_path):
    from cliplab.data import open_dataset
    from cliplab.report.html import build_report

    ds = open_dataset("shapes:color", split="test", cache_dir=trained_cache)
    paths = ds.paths[:5]
    store = tmp_path / "store"
    res = runner.invoke(app, ["inspect", *paths, "-d", "shapes:color", "--heatmap", str(tmp_path / "h.png"),
                              "-o", str(tmp_path / "s.csv"), "--results", str(store), "--backend", "torch",
                              "--quiet", "--cache-dir", str(trained_cache)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "h.png").stat().st_size > 5000
    rows = cliplab.read_results(store)
    figs = rows[rows.artifact.notna()]
    assert len(figs) == 1 and "cosine similarity" in figs.variant.iloc[0]
    page = build_report(rows, tmp_path / "r.html", exports=False).read_text()
    assert "cosine similarity · tiny-shapes · 6 candidates × 5 images" in page
    assert "images grouped by the candidate each scores highest" in page  # how the images were chosen and ordered
    scores = pd.read_csv(tmp_path / "s.csv")  # the figure's numbers are the table's
    assert len(scores) == 30


def test_the_notebook_shows_the_matrix(trained_cache):
    from cliplab.data import open_dataset

    ds = open_dataset("shapes:color", split="test", cache_dir=trained_cache)
    r = cliplab.inspect("tiny-shapes", ds.paths[:3], dataset="shapes:color", backend="torch",
                        cache_dir=trained_cache, quiet=True)
    html = r._repr_html_()
    assert "cosine similarity · tiny-shapes · 6 candidates × 3 images" in html


def test_the_heatmap_refuses_other_formats(trained_cache, tmp_path):
    res = runner.invoke(app, ["inspect", str(tmp_path / "x.png"), "--heatmap", str(tmp_path / "h.jpg"),
                              "--cache-dir", str(trained_cache)])
    assert res.exit_code == 2 and "--heatmap" in res.output
