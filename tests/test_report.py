"""The HTML report: built from a real results store, rendered in headless Chromium."""
import json
import math

import pandas as pd
import pytest

from cliplab.report.html import clip_benchmark_records, format_value, import_clip_benchmark
from cliplab.report.store import read_results


@pytest.fixture(scope="module")
def demo_report(trained_cache, tmp_path_factory):
    from cliplab.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    path = run_demo(trained_cache, quiet=True, output_dir=out)
    return path, read_results(out / "results")


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
