"""The HTML report: built from a real results store, rendered in headless Chromium."""
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from cliplab.report.html import clip_benchmark_records, format_value, import_clip_benchmark
from cliplab.results.store import read_results


@pytest.fixture(autouse=True, scope="module")
def studies():
    """The report shows the registered studies (the CLI discovers them before it builds a report)."""
    from cliplab.studies import discover

    discover()


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
    from browser import errors, opened

    path, df = demo_report
    with opened(path) as d:
        d.execute_script("document.querySelector('table.sortable th:nth-child(4)').click()")  # sorting runs
        logged = errors(d)
        assert not logged, logged
        sizes = d.execute_script(  # images of a picker's other figures are decoded but not laid out
            "return Array.from(document.images).map(i => [i.naturalWidth, i.getBoundingClientRect().width,"
            " i.complete, !!i.closest('div.pick[hidden]')])")
        assert len(sizes) >= 10 and all(nw > 0 and (w > 0 or hidden) and done for nw, w, done, hidden in sizes), \
            sizes
        text = d.find_element("tag name", "body").text
    # numbers from the store appear in the tables, formatted as the report formats them
    zs = df[(df.task == "zeroshot_classification") & (df.metric == "acc1")]
    for v in zs.value:
        assert format_value("acc1", v) in text
    lp = df[(df.task == "linear_probe") & (df.metric == "acc1")].value.iloc[0]
    r1 = df[(df.task == "caption_retrieval") & (df.metric == "recall@1")].value
    assert format_value("acc1", lp) in text and all(format_value("recall@1", v) in text for v in r1)
    assert "provenance" in text and not any(math.isnan(v) for v in zs.value)


@pytest.mark.slow
def test_tables_fit_the_page_and_sort_numbers_as_numbers_in_headless_chromium(demo_report):
    """Regression: the zero-shot table repeated the template list in every row (~110 px a row) and ran past the
    page, hiding images_per_second and provenance; the k-shot table sorted k as text (1, 16, 2, 4, 8)."""
    from browser import errors, opened

    path, _ = demo_report
    with opened(path, 1280, 900) as d:
        widths = d.execute_script("""
            const body = document.body, style = getComputedStyle(body);
            const inner = body.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
            return {page: document.documentElement.scrollWidth, window: window.innerWidth, inner: inner,
                    tables: Array.from(document.querySelectorAll('table.sortable')).map(t => [t.dataset.table,
                      t.scrollWidth, t.getBoundingClientRect().width,
                      Math.max(...Array.from(t.tBodies[0].rows).map(r => r.getBoundingClientRect().height))])};""")
        order = d.execute_script("""
            const t = document.querySelector('table[data-table="kshot probe"]');
            const col = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent === 'variant');
            const read = () => Array.from(t.tBodies[0].rows).map(r => r.cells[col].textContent);
            const before = read();
            t.tHead.rows[0].cells[col].click(); const up = read();
            t.tHead.rows[0].cells[col].click(); return [before, up, read()];""")
        logged = errors(d)
    assert not logged, logged
    assert widths["page"] <= widths["window"], widths
    for name, scroll, width, tallest in widths["tables"]:
        assert scroll <= widths["inner"] + 1 and width <= widths["inner"] + 1, (name, scroll, width, widths["inner"])
        assert tallest <= 40, (name, tallest)  # one line a row
    probe = [f"probe k={k}" for k in (1, 2, 4, 8, 16)]
    before, up, down = order
    for rows in (before, up):  # the page's order and a click on the header: numbers as numbers
        assert [r for r in rows if r.startswith("probe k=")] == probe, rows
    assert [r for r in down if r.startswith("probe k=")] == probe[::-1]


def test_demo_tables_say_shared_parameters_once_and_sort_k_as_numbers(demo_report):
    from cliplab.report.html import summary_tables
    from cliplab.studies.demo import DEMO_TEMPLATE_SETS

    _, df = demo_report
    tables = {t.title: t for t in summary_tables(df)}
    zs = tables["zeroshot classification"]
    templates = "templates=" + json.dumps(DEMO_TEMPLATE_SETS)
    assert "model" not in zs.columns and "split" not in zs.columns and "dataset" in zs.columns
    assert any(line.startswith("every row:") and "tiny-shapes" in line and "split test" in line for line in zs.caption)
    assert sum(line.count(templates) for line in zs.caption) == 1  # the template list, said once above the table
    params = [r[zs.columns.index("parameters")] for r in zs.rows]
    assert max(len(p) for p in params) <= 4 and len(set(params)) == 2  # [1]: the zero-shot runs, [2]: the probe's
    assert not any(templates in cell for row in zs.rows for cell in row)
    kshot = tables["kshot probe"]
    variants = [r[kshot.columns.index("variant")] for r in kshot.rows]
    assert [v for v in variants if v.startswith("probe k=")] == [f"probe k={k}" for k in (1, 2, 4, 8, 16)]


def test_summary_caption_holds_shared_parameters_and_long_ones_by_reference(tmp_path):
    from cliplab.report.html import summary_tables

    base = {"model": "m", "dataset": "cifar10", "split": "test", "topk": 5}
    sets = ["simple", "openai-imagenet-80-templates", "a long list of template sets that does not fit"]
    _store_run(tmp_path / "r", "test", 100, 0.5, {**base, "pipeline": "pil"}, ts="2026-01-01T00:00:01+00:00")
    _store_run(tmp_path / "r", "test", 100, 0.6, {**base, "pipeline": "tensor"}, ts="2026-01-01T00:00:02+00:00")
    (table,) = summary_tables(read_results(tmp_path / "r"))
    assert "parameters of every row: topk=5" in table.caption  # shared: said once, not a column
    assert sorted(r[table.columns.index("parameters")] for r in table.rows) == ['pipeline="pil"', 'pipeline="tensor"']
    _store_run(tmp_path / "s", "test", 100, 0.5, {**base, "templates": sets}, ts="2026-01-01T00:00:01+00:00")
    _store_run(tmp_path / "s", "test", 100, 0.6, {**base, "templates": sets[:1]}, ts="2026-01-01T00:00:02+00:00")
    (table,) = summary_tables(read_results(tmp_path / "s"))
    cells = [r[table.columns.index("parameters")] for r in table.rows]
    legend = [line for line in table.caption if line.startswith("parameters: ")]
    assert sorted(cells) == ["[1]", "[2]"] and len(legend) == 1  # too long for a cell: given once, above
    assert legend[0].count(json.dumps(sets)) == 1 and 'templates=["simple"]' in legend[0]


def test_demo_figures_are_few_and_read_at_the_page_width(demo_report):
    """Regression: 25 near-identical per-class figures (one per template set and dataset) with ~6 px confusion
    labels; now one per dataset, the template sets side by side, and no text under 9 px on the page."""
    from cliplab.report.html import report_figures
    from cliplab.report.plots import MIN_TEXT_PX, REPORT_DPI, _plt
    from cliplab.studies.demo import DEMO_ATTRIBUTES, DEMO_TEMPLATE_SETS
    from test_figures import smallest_text_px

    _, df = demo_report
    figs = report_figures(df)
    try:
        per_class = [f for f in figs if f.title.startswith("Per-class")]
        assert len(per_class) == len(DEMO_ATTRIBUTES) == 5
        for f in per_class:
            (heat,) = [ax for ax in f.figure.axes if ax.get_label() == "per-class recall"]
            assert [t.get_text() for t in heat.get_xticklabels()] == DEMO_TEMPLATE_SETS
        for f in figs:
            assert smallest_text_px(f.figure, REPORT_DPI) >= MIN_TEXT_PX, f.title
    finally:
        for f in figs:
            _plt().close(f.figure)


def test_demo_attack_examples_say_how_they_were_chosen(demo_report):
    from cliplab.report.html import image_figures

    path, df = demo_report
    (fig,) = [f for f in image_figures(df) if f.title.startswith("typographic attack")]
    rate = df[(df.task == "typographic_attack") & (df.metric == "predicts_written_label")].value.iloc[0]
    assert re.match(r"8 of 1000 images drawn at random \(seed 0\), not by outcome: the written label is predicted on "
                    rf"\d of these 8, on {100 * rate:.1f} % of all 1000 images · tiny-shapes", fig.caption), \
        fig.caption
    assert fig.caption.split(" · ")[0] in path.read_text()


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
    assert table.columns[:3] == ["split", "n", "variant"]  # what differs is a column, what every row shares is not
    assert table.caption[0] == "every row: dataset cifar10 · model ViT-B-32 (openai)"
    rows = {(r[0], r[1]): r[table.columns.index("acc1")] for r in table.rows}
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


def test_figures_of_many_files_are_one_picker_per_run(demo_report):
    """Regression (issue 24, part 5): the demo's seven search grids (one per query) and four per-image rankings
    were eleven near-identical figures one under the other. A run's figures of many files are stored in one folder
    and the page shows each such set as one picker; single figures stay as they are."""
    from cliplab.report.html import figure_sets, image_figures

    path, df = demo_report
    sets = figure_sets(image_figures(df))
    many = {s.figures[0].caption.split(" · cliplab ")[1].split(" · ")[0]: s for s in sets if len(s.figures) > 1}
    assert set(many) == {"demo search", "demo inspect"}
    assert [f.title for f in many["demo search"].figures] == list(
        df[(df.command == "demo search") & (df.metric == "figure")].variant)  # in the order of the queries
    assert len(many["demo search"].figures) == 7 and len(many["demo inspect"].figures) == 4
    assert many["demo inspect"].caption.startswith("4 figures · tiny-shapes · shapes:color · cliplab demo inspect")
    singles = [s.figures[0].title for s in sets if len(s.figures) == 1]
    assert any(t.startswith("typographic attack") for t in singles) and "cluster samples (k = 6)" in singles
    page = path.read_text()
    assert page.count('<figure class="picker">') == 2 and page.count('<div class="pick" hidden>') == 7 - 1 + 4 - 1


def test_a_store_of_flat_figure_files_shows_each_figure(tmp_path):
    """A store written before figure sets had folders (every file flat in _figures/) shows one figure each."""
    from cliplab.report.html import Figure, figure_sets

    flat = [Figure(f"search: q{i}", "data:,", "tiny-shapes · shapes · cliplab search · run r1") for i in range(3)]
    assert [len(s.figures) for s in figure_sets(flat)] == [1, 1, 1]
    grouped = [Figure(f"t{i}", "data:,", f"m · d{i % 2} · cliplab x · run r", group=g)
               for i, g in enumerate(["a", "a", "", "a", "b", "b"])]
    sets = figure_sets(grouped)
    assert [[f.title for f in s.figures] for s in sets] == [["t0", "t1"], ["t2"], ["t3"], ["t4", "t5"]]
    assert sets[0].caption == "2 figures · m · cliplab x · run r"  # what every figure of the set shares


@pytest.mark.slow
def test_a_picker_shows_one_figure_and_steps_through_all_in_headless_chromium(demo_report):
    from browser import errors, opened

    path, _ = demo_report
    with opened(path) as d:
        seen = d.execute_script("""
            const set = document.querySelector('figure.picker');
            const shown = () => Array.from(set.querySelectorAll('div.pick')).map(p => !p.hidden);
            const out = [shown()];
            set.querySelector('button.next').click(); out.push(shown());
            set.querySelector('button.prev').click(); set.querySelector('button.prev').click(); out.push(shown());
            const sel = set.querySelector('select'); sel.value = '2'; sel.dispatchEvent(new Event('change'));
            out.push(shown());
            out.push(set.querySelectorAll('div.pick')[2].querySelector('img').getBoundingClientRect().width);
            return out;""")
        logged = errors(d)
    assert not logged, logged
    first, after_next, wrapped, picked, width = seen
    n = len(first)
    assert n == 7 and first == [True] + [False] * (n - 1) and after_next == [False, True] + [False] * (n - 2)
    assert wrapped == [False] * (n - 1) + [True]  # back past the first: the last
    assert picked == [False, False, True] + [False] * (n - 3) and width > 0
