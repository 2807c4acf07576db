"""Analyses the original hand-made studies made (issue 27): any top-k accuracy, images from URLs (served by a local
HTTP server started here), and a preview of the data."""
from __future__ import annotations

import http.server
import json
import re
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import top_k_accuracy_score
from typer.testing import CliRunner

import cliplab
from cliplab import CliplabError
from cliplab.cli import app
from cliplab.tasks.metrics import classification_metrics

KW = dict(backend="torch", quiet=True)


# ---- top-k accuracy ----

def test_top3_on_a_hand_computed_score_matrix():
    s = np.array([[0.9, 0.5, 0.3, 0.1],   # true 2: third -> in top-3, not top-2
                  [0.1, 0.2, 0.3, 0.4],   # true 0: last -> in no top-3
                  [0.3, 0.9, 0.1, 0.2]])  # true 1: first
    y = np.array([2, 0, 1])
    m = classification_metrics(s, y, (1, 2, 3))
    assert (m["acc1"], m["acc2"], m["acc3"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3), pytest.approx(2 / 3))
    for k in (1, 2, 3):
        assert m[f"acc{k}"] == pytest.approx(top_k_accuracy_score(y, s, k=k, labels=range(4)))


def test_acc_at_reaches_the_table_the_store_the_json_and_the_report(trained_cache, tmp_path):
    from cliplab.report.html import build_report

    store, out = tmp_path / "store", tmp_path / "zs.json"
    res = CliRunner().invoke(app, ["zeroshot", "-d", "shapes:shape", "--limit", "80", "--acc-at", "1,3,5",
                                   "--results", str(store), "-o", str(out), "--cache-dir", str(trained_cache),
                                   "--backend", "torch", "--quiet"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "top-3 %" in res.output and "top-1 %" in res.output
    rows = cliplab.read_results(store)
    assert {"acc1", "acc3", "acc5"} <= set(rows.metric)
    assert set(json.loads(out.read_text())["metrics"]) >= {"acc1", "acc3", "acc5"}
    page = build_report(rows, tmp_path / "r.html", exports=False).read_text()
    assert "acc3" in page
    r = cliplab.zeroshot("tiny-shapes", "shapes:shape", limit=80, acc_at=[3], cache_dir=trained_cache, **KW)
    a3 = r.metrics.query("metric == 'acc3'").value.iloc[0]
    assert a3 == rows.query("metric == 'acc3'").value.iloc[0]


# ---- images from URLs ----

@pytest.fixture()
def server(tmp_path):
    """A local HTTP server (127.0.0.1, a free port) serving tmp_path, stopped after the test."""
    from conftest import make_image

    make_image(tmp_path / "www" / "red.png", size=(48, 48), color=(220, 30, 30))
    (tmp_path / "www" / "big.png").write_bytes(b"\0" * 2048)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        thread.join(timeout=10)


def test_inspect_search_and_similar_take_urls(server, trained_cache, tmp_path):
    url = f"{server}/red.png"
    cache = tmp_path / "cache"
    from cliplab.train.tiny import ensure_tiny_model

    ensure_tiny_model(cache)
    by_url = cliplab.inspect("tiny-shapes", [url], classes=["red shape", "blue shape"], cache_dir=cache, **KW)
    by_file = cliplab.inspect("tiny-shapes", [str(tmp_path / "www" / "red.png")],
                              classes=["red shape", "blue shape"], cache_dir=cache, **KW)
    np.testing.assert_array_equal(by_url.scores, by_file.scores)
    assert len(list((cache / "urls").iterdir())) == 1  # fetched once, kept in the cache
    # named as its address names it (was the cache's hash, '39bd3fd7....png'), in the table and the figures
    shown = by_url.paths[0].name
    assert re.fullmatch(r"red-[0-9a-f]{8}\.png", shown) and by_url.tables()[0].rows[0][0] == shown
    s = cliplab.search("tiny-shapes", "shapes:color", image=url, limit=40, k=3, cache_dir=cache, **KW)
    assert s.queries[0].label == f"[{url}]"
    sim = cliplab.similar("tiny-shapes", "shapes:color", query=url, limit=40, k=3, cache_dir=cache, **KW)
    assert sim.queries.positions.shape == (1, 3)


@pytest.mark.parametrize("path, name", [("/a/cat.jpg", "cat.jpg"), ("/a/cat%20photo.JPG", "cat_photo.JPG"),
                                        ("/", "image.img"), ("/x/..", "image.img"), ("/img", "img.img"),
                                        ("/" + "n" * 300 + ".png", "n" * 100 + ".png")])
def test_a_fetched_image_keeps_the_file_name_of_its_address(path, name):
    import urllib.parse

    from cliplab.data.urls import shown_name

    assert shown_name(urllib.parse.urlparse("http://h" + path + "?id=3").path) == name
    stem, dot, ext = name.rpartition(".")
    assert shown_name(urllib.parse.urlparse("http://h" + path).path, "1a2b3c4d") == f"{stem}-1a2b3c4d.{ext}"


def test_two_addresses_with_one_file_name_are_told_apart(server, tmp_path):
    from cliplab.data.urls import local_copy

    a, b = (local_copy(f"{server}/red.png?v={v}", tmp_path, "images") for v in (1, 2))
    assert a != b and a.name != b.name and a.name.startswith("red-") and b.name.startswith("red-")


def test_url_errors_are_one_line(server, tmp_path, monkeypatch):
    from cliplab.data.urls import local_copy

    with pytest.raises(CliplabError, match="cannot download it .*404"):
        local_copy(f"{server}/missing.png", tmp_path, "images")
    with pytest.raises(CliplabError, match="over the 1,000-byte limit"):
        local_copy(f"{server}/big.png", tmp_path, "images", max_bytes=1000)
    monkeypatch.setenv("CLIPLAB_OFFLINE", "1")
    with pytest.raises(CliplabError, match="cliplab is offline"):
        local_copy("https://example.org/cat.jpg", tmp_path, "images")
    res = CliRunner().invoke(app, ["inspect", "https://example.org/cat.jpg", "--classes", "cat,dog",
                                   "--cache-dir", str(tmp_path / "c"), "--backend", "torch"])
    assert res.exit_code == 2 and res.output.strip().startswith("error: IMAGES https://example.org/cat.jpg: cannot")


# ---- a preview of the data ----

def test_preview_counts_classes_and_samples_them_without_a_model(trained_cache, tmp_path):
    r = cliplab.preview("shapes:color", per_class=4, limit=120, cache_dir=trained_cache, quiet=True)
    assert int(r.counts.images.sum()) == 120 and len(r.counts) == 6
    assert all(len(p) == 4 for p in r.picks.values())
    page = r._repr_html_()
    assert "sample images per class" in page and "<img src='data:image/png;base64," in page
    res = CliRunner().invoke(app, ["preview", "-d", "shapes:color", "--limit", "120", "--grid", str(tmp_path / "g.png"),
                                   "--cache-dir", str(trained_cache), "--quiet"])
    assert res.exit_code == 0 and (tmp_path / "g.png").is_file(), res.output
    assert "models" not in (trained_cache / "embeddings").name  # nothing embedded for a preview


def test_preview_rows_name_the_class_in_the_class_column_and_the_report_shows_one_row(trained_cache, tmp_path):
    """Regression: a preview stored each class's size with the class name as its *variant* ('circle', 'square', ...),
    so the tidy frame had no class column for them and the report's summary showed one row per class."""
    from cliplab.report.html import summary_tables
    from cliplab.results.store import RunRecorder

    r = cliplab.preview("shapes:color", per_class=2, limit=120, cache_dir=trained_cache, quiet=True)
    m = r.metrics
    assert set(m.variant) == {"class sizes"}
    per_class = m[m.metric == "images"].dropna(subset=["class"])
    assert dict(zip(per_class["class"], per_class.value)) == dict(zip(r.counts["class"], r.counts.images))
    overall = m[m["class"].isna()].set_index("metric").value
    assert overall["images"] == 120 and overall["classes"] == 6
    assert overall["smallest_class"] == r.counts.images.min() and overall["largest_class"] == r.counts.images.max()
    run = RunRecorder("preview")
    run.add_result(r)
    (table,) = [t for t in summary_tables(run.frame()) if t.title == "preview"]
    assert len(table.rows) == 1 and table.rows[0][table.columns.index("images")] == "120", table.rows


def test_the_report_shows_a_previews_sample_grid_drawn_again_and_says_when_it_cannot(tmp_path):
    """Issue 27: the report's preview section had the class table only. Its sample grid is drawn again from the
    dataset the run recorded (same picks); a dataset whose files changed since, or that is gone, gets a note instead of
    a grid that would show other images."""
    from conftest import make_image
    from cliplab.progress import use
    from cliplab.studies.preview import sample_grid_figures
    from recording import Recording

    folder = tmp_path / "pets"
    for c, color in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
        for i in range(5):
            make_image(folder / c / f"{i}.png", size=(40 + i, 32), color=color)
    store = tmp_path / "store"
    res = CliRunner().invoke(app, ["preview", "-d", str(folder), "--per-class", "3", "--results", str(store),
                                   "--cache-dir", str(tmp_path / "cache"), "-q"])
    assert res.exit_code == 0, res.output
    rows = cliplab.read_results(store)
    rows = rows[rows.task == "preview"]
    (fig,) = sample_grid_figures(rows)
    assert fig.title == "sample images per class · " + rows.dataset.iloc[0] and "seed 0" in fig.caption
    from cliplab.report.plots import MIN_TEXT_PX, REPORT_DPI
    from report.test_figures import smallest_text_px

    assert smallest_text_px(fig.figure, REPORT_DPI) >= MIN_TEXT_PX  # readable at the page's width
    assert len([ax for ax in fig.figure.axes if ax.images]) == 6  # 2 classes x 3 picks
    page = tmp_path / "r.html"
    assert CliRunner().invoke(app, ["report", str(store), "-o", str(page)]).exit_code == 0
    assert "sample images per class" in page.read_text()
    make_image(folder / "dog" / "5.png", size=(44, 32), color=(0, 255, 0))  # a set other than the one the run read
    with use(Recording()) as said:
        assert sample_grid_figures(rows) == []
    assert "its files changed since the preview ran" in said.notes[0]
    import shutil

    shutil.rmtree(folder)
    with use(Recording()) as said:
        assert sample_grid_figures(rows) == []
    assert "cannot be opened again" in said.notes[0]


def test_a_preview_in_a_notebook_says_nothing_about_reopening_its_dataset(tmp_path):
    """Review: a preview result's own rows (no store config) made the report hook note 'cannot be opened again'."""
    from cliplab.progress import use
    from cliplab.studies.preview import sample_grid_figures
    from recording import Recording

    r = cliplab.preview("shapes:color", per_class=2, limit=30, cache_dir=tmp_path, quiet=True)
    with use(Recording()) as said:
        assert sample_grid_figures(r.metrics) == []
    assert said.notes == []
