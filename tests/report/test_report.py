"""The HTML report: built from a real results store, rendered in headless Chromium."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from cliplab.report.html import clip_benchmark_records, format_value, import_clip_benchmark
from cliplab.results.store import read_results


@pytest.fixture(scope="module")
def demo_report(trained_cache, tmp_path_factory):
    from typer.testing import CliRunner

    from cliplab.cli import app

    out = tmp_path_factory.mktemp("demo")
    res = CliRunner().invoke(app, ["demo", "--output-dir", str(out), "--cache-dir", str(trained_cache), "--quiet"])
    assert res.exit_code == 0, res.output
    return out / "report.html", read_results(out / "results")


def test_format_value():
    assert format_value("acc1", 0.5634) == "56.34" and format_value("recall@5", 1.0) == "100.00"
    assert format_value("median_rank", 3.0) == "3" and format_value("nmi", 0.123456) == "0.1235"
    assert format_value("acc1", float("nan")) == "—"


def test_demo_store_has_every_study(demo_report):
    path, df = demo_report
    assert {"zeroshot_classification", "prompt_study", "linear_probe", "kshot_probe", "caption_retrieval",
            "search", "image_retrieval", "clustering", "typographic_attack"} <= set(df.task)
    assert df.artifact.notna().sum() >= 5 and all(pd.notna(a) and a.endswith(".png")
                                                   for a in df.artifact.dropna())
    assert path.with_suffix(".csv").is_file() and len(pd.read_parquet(path.with_suffix(".parquet"))) == len(df)
    cb = list(path.with_name(path.stem + "-clip_benchmark").glob("*.json"))
    recs = [json.loads(p.read_text()) for p in cb]
    assert any(r["task"] == "zeroshot_classification" and r["metrics"]["acc1"] > 0.5 for r in recs)
    assert any(r["task"] == "zeroshot_retrieval" and "image_retrieval_recall@1" in r["metrics"] for r in recs)


def test_clip_benchmark_round_trip(demo_report, tmp_path):
    _, df = demo_report
    recs = clip_benchmark_records(df)
    files = []
    for i, r in enumerate(recs[:3]):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(r))
    back = import_clip_benchmark(files)
    assert set(back.command) == {"clip_benchmark"} and len(back) >= 3
    assert sorted(back[back.metric == "acc1"].value) == sorted(r["metrics"]["acc1"] for r in recs[:3])
    (tmp_path / "bad.json").write_text("{}")
    from cliplab.errors import CliplabError

    with pytest.raises(CliplabError, match="CLIP_benchmark"):
        import_clip_benchmark([tmp_path / "bad.json"])


@pytest.mark.slow
def test_report_renders_in_headless_chromium(demo_report):
    from browser import available, driver

    why = available()
    if why:
        pytest.skip(why)
    path, df = demo_report
    d = driver()
    try:
        d.get(path.resolve().as_uri())
        d.execute_script("document.querySelector('table.sortable th:nth-child(4)').click()")  # sorting runs
        errors = [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        sizes = d.execute_script(
            "return Array.from(document.images).map(i => [i.naturalWidth, i.getBoundingClientRect().width,"
            " i.complete])")
        assert len(sizes) >= 10 and all(nw > 0 and w > 0 and done for nw, w, done in sizes), sizes
        text = d.find_element("tag name", "body").text
    finally:
        d.quit()
    # numbers from the store appear in the tables, formatted as the report formats them
    zs = df[(df.task == "zeroshot_classification") & (df.metric == "acc1")]
    for v in zs.value:
        assert format_value("acc1", v) in text
    lp = df[(df.task == "linear_probe") & (df.metric == "acc1")].value.iloc[0]
    r1 = df[(df.task == "caption_retrieval") & (df.metric == "recall@1")].value
    assert format_value("acc1", lp) in text and all(format_value("recall@1", v) in text for v in r1)
    assert "provenance" in text and not any(math.isnan(v) for v in zs.value)


def test_report_cli_errors_and_output(demo_report, tmp_path):
    from typer.testing import CliRunner

    from cliplab.cli import app

    runner = CliRunner()
    path, _ = demo_report
    res = runner.invoke(app, ["report", str(path.parent / "results"), "-o", str(tmp_path / "r.html"), "--no-exports"])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text()
    assert page.count("<img") >= 10 and "http://" not in page.replace("http://www.w3.org", "")  # self-contained
    assert not (tmp_path / "r.csv").exists()
    (tmp_path / "empty").mkdir()
    for args, msg in ((["report", str(tmp_path / "empty"), "-o", str(tmp_path / "x.html")], "empty"),
                      (["report", str(tmp_path / "nope")], "not found"),
                      (["report", str(path.parent / "results"), "-o", str(tmp_path / "x.pdf")], ".html")):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and msg in res.output, res.output


def test_grid_captions_wrap_instead_of_being_cut():
    import numpy as np

    from cliplab.report.plots import _plt, image_grid, wrap_text

    caption = "A man riding a wave on top of a surfboard in the ocean near the beach at sunset"
    cell = "retrieved #2 with a caption long enough to need three lines under its image"
    img = np.zeros((40, 60, 3), np.uint8)
    fig = image_grid([img, img], ["#1 0.300", cell], cols=2, row_titles=[caption])
    axes = fig.get_axes()
    title, label = axes[0].get_ylabel(), axes[1].get_xlabel()
    _plt().close(fig)
    assert title.split() == caption.split() and "\n" in title and "..." not in title  # every word kept
    assert label.split() == cell.split() and label.count("\n") >= 2
    assert max(len(line) for line in label.splitlines()) <= 30
    assert wrap_text("word " * 100, 20, 3).endswith("…") and wrap_text("word " * 100, 20, 3).count("\n") == 2


def test_demo_report_and_grids_are_small(demo_report):
    """Thumbnails, not originals: the whole report <= 3 MB, each search grid <= 300 KB, images <= 1200 px wide."""
    import base64
    import io
    import re

    from PIL import Image

    path, df = demo_report
    assert path.stat().st_size <= 3_000_000, path.stat().st_size
    grids = [a for a in df[df.task == "search"].artifact.dropna()]
    assert grids and all(Path(a).stat().st_size <= 300_000 for a in grids)
    for uri in re.findall(r'src="data:image/(?:png|jpeg);base64,([^"]+)"', path.read_text()):
        with Image.open(io.BytesIO(base64.b64decode(uri))) as im:
            assert im.width <= 1200


def test_search_grid_of_photos_is_a_thumbnail_png(tmp_path):
    from conftest import SHARED_DATA

    from cliplab.data.imageio import open_rgb
    from cliplab.report.plots import image_grid, save_figure

    photos = sorted((SHARED_DATA / "coco-mini" / "val2017").glob("*.jpg"))[:20]
    if len(photos) < 20:
        pytest.skip("shared COCO photos not available")
    imgs = [open_rgb(str(p)) for p in photos]
    one = save_figure(image_grid(imgs[:10], [f"#{j + 1}  0.3{j}" for j in range(10)], cols=10,
                                 title="a dog on a couch"), [tmp_path / "one.png"])[0]
    two = save_figure(image_grid(imgs, [f"#{j % 10 + 1}" for j in range(20)], cols=10,
                                 row_titles=["model A", "model B"]), [tmp_path / "two.png"])[0]
    assert one.stat().st_size <= 300_000 and two.stat().st_size <= 300_000, (one.stat(), two.stat())


def _store_run(folder, split, n, acc, config=None, fingerprint="d1", ts=None):
    from types import SimpleNamespace

    from cliplab.results.store import RunRecorder

    rec = RunRecorder("zeroshot", config or {"model": "m", "dataset": "cifar10", "split": split, "templates": None})
    if ts:
        rec.timestamp = rec.base["timestamp"] = ts
    ds = SimpleNamespace(name="cifar10", split=split, fingerprint=fingerprint)
    model = {"name": "ViT-B-32", "pretrained": "openai", "fingerprint": "m1"}
    add_row(rec, task="zeroshot_classification", model=model, dataset=ds, variant="simple", metric="acc1", value=acc, n=n)
    rec.write(folder)


def test_summary_keeps_runs_on_different_splits_and_sample_counts(tmp_path):
    """Regression: the latest-run table ignored split and n, so such runs replaced each other."""
    from cliplab.report.html import build_report, summary_tables

    _store_run(tmp_path / "r", "test", 10000, 0.91, ts="2026-01-01T00:00:01+00:00")
    _store_run(tmp_path / "r", "train", 10000, 0.97, ts="2026-01-01T00:00:02+00:00")
    _store_run(tmp_path / "r", "test", 500, 0.88, ts="2026-01-01T00:00:03+00:00")
    df = read_results(tmp_path / "r")
    (table,) = summary_tables(df)
    assert table.columns[:5] == ["dataset", "split", "n", "model", "variant"]
    rows = {(r[1], r[2]): r[table.columns.index("acc1")] for r in table.rows}
    assert rows == {("test", "10000"): "91.00", ("train", "10000"): "97.00", ("test", "500"): "88.00"}
    # a newer run with the same key replaces only its own row
    _store_run(tmp_path / "r", "test", 500, 0.89, ts="2026-01-01T00:00:04+00:00")
    (table,) = summary_tables(read_results(tmp_path / "r"))
    assert sorted(r[table.columns.index("acc1")] for r in table.rows) == ["89.00", "91.00", "97.00"]
    page = build_report(read_results(tmp_path / "r"), tmp_path / "r.html", exports=False).read_text()
    assert "<th class=\"text\">split</th>" in page and "97.00" in page and "91.00" in page


def test_summary_keeps_runs_with_different_parameters_or_data(tmp_path):
    from cliplab.report.html import summary_tables

    base = {"model": "m", "dataset": "cifar10", "split": "test", "batch_size": 64}
    _store_run(tmp_path / "r", "test", 100, 0.5, {**base, "pipeline": "pil"}, ts="2026-01-01T00:00:01+00:00")
    _store_run(tmp_path / "r", "test", 100, 0.6, {**base, "pipeline": "tensor", "batch_size": 8},
               ts="2026-01-01T00:00:02+00:00")
    _store_run(tmp_path / "r", "test", 100, 0.7, {**base, "pipeline": "pil"}, fingerprint="d2",
               ts="2026-01-01T00:00:03+00:00")
    (table,) = summary_tables(read_results(tmp_path / "r"))
    params = table.columns.index("parameters")
    cells = sorted((r[params], r[-1]) for r in table.rows)
    assert len(cells) == 3 and [c[1] for c in cells] == ["50.00", "70.00", "60.00"]
    assert cells[2][0] == 'pipeline="tensor"'  # batch size is not a parameter of the result
    assert "data d1" in cells[0][0] and "data d2" in cells[1][0]  # same visible cells: fingerprints tell apart


def add_row(rec, **kw) -> None:
    """One hand-made metric row into a run of the results store."""
    from cliplab.results.result import Rows

    rows = Rows()
    rows.add(**kw)
    rec.add_rows(rows.frame())
