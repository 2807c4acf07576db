"""Issue 24 part 4: ``.metrics`` and ``cliplab.read_results`` are tidy. A number of one class keeps its base name in
``metric`` and names its class in ``class`` (a confusion cell: ``true`` and ``predicted``), whatever the class names
hold (' -> ', brackets, unicode); ``metric``, ``variant`` and ``value`` come before whose numbers they are; the store's
packed name stays in ``metric_name``; a probe stores its zero-shot numbers once, under the zero-shot run's names; and a
pivot of a zero-shot run by variant and metric is the table its summary shows."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import cliplab
from cliplab.report.html import format_value, summary_tables
from cliplab.results.result import (METRIC_NAME, PROVENANCE, TIDY_FRONT, AmbiguousPairWarning, Rows, packed_name, pct,
                                    tidy_metrics)
from cliplab.results.store import read_results
from cliplab.studies.zeroshot import confusion_rows
from conftest import make_image

ODD = ["apple pie", "annual crop -> forest", "forest", "annual crop", "x [1]", "]b[", "café ☕ -> ü", "日本 [猫]"]
LIMIT = 60


def _rows(classes: list[str]) -> pd.DataFrame:
    """A zero-shot evaluation's rows as a study stores them: a recall per class and the whole confusion matrix."""
    rows, kw = Rows(), dict(task="zeroshot_classification", model=cliplab.results.result.ModelInfo("m"),
                            dataset=cliplab.results.result.DatasetInfo("d", "test", 10), variant="simple", n=10)
    rows.add(metric="acc1", value=0.5, **kw)
    for i, c in enumerate(classes):
        rows.add(metric=packed_name("recall", c), value=i / 10, **kw)
    cm = np.arange(len(classes) ** 2).reshape(len(classes), len(classes))
    confusion_rows(rows, cm, classes, **kw)
    return rows.frame()


@pytest.mark.parametrize("classes", [["cat", "dog"], ODD, ["a -> b", "a", "b -> c", "c"][:3],
                                     ["[x]", "x]", "[x", "→ -> ←"]], ids=["plain", "odd", "arrows", "brackets"])
def test_packed_names_split_into_class_columns_whatever_the_class_names_hold(classes):
    df = tidy_metrics(_rows(classes))
    assert list(df.columns[:len(TIDY_FRONT)]) == TIDY_FRONT and df.columns[-1] == METRIC_NAME
    assert set(df.metric) == {"acc1", "recall", "confusion"}
    recall = df[df.metric == "recall"]
    assert list(recall["class"]) == classes and list(recall.value) == [i / 10 for i in range(len(classes))]
    conf = df[df.metric == "confusion"]
    cells = {(t, p): v for t, p, v in zip(conf["true"], conf["predicted"], conf.value)}
    assert cells == {(t, p): float(i * len(classes) + j) for i, t in enumerate(classes) for j, p in enumerate(classes)}
    # every row says what the store calls it, and derives back to it
    for r in df.to_dict(orient="records"):
        get = (lambda k: None if pd.isna(r[k]) else r[k])
        assert packed_name(r["metric"], get("class"), get("true"), get("predicted")) == r[METRIC_NAME]
    assert df[["class", "true", "predicted"]].isna().all(axis=1).tolist() == (df.metric == "acc1").tolist()


def test_a_pair_that_cannot_be_told_apart_is_left_empty_with_a_warning():
    """Classes 'a', 'a -> b', 'b -> c', 'c': 'confusion[a -> b -> c]' is (a, b -> c) or (a -> b, c)."""
    classes = ["a", "a -> b", "b -> c", "c"]
    with pytest.warns(AmbiguousPairWarning, match="could not be split"):
        df = tidy_metrics(_rows(classes))
    bad = df[(df.metric == "confusion") & df["true"].isna()]
    assert set(bad[METRIC_NAME]) == {"confusion[a -> b -> c]"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tidy_metrics(_rows(["a", "a -> b", "c"]))  # 'a -> b -> c' has one split into two classes: no warning


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """A folder dataset whose class folders are named with ' -> ', brackets and unicode."""
    root = tmp_path_factory.mktemp("odd-classes")
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    names = ["annual crop -> forest", "x [1]", "café ☕", "forest"]
    for name, colour in zip(names, colours):
        for i in range(6):
            make_image(root / name / f"{i}.png", color=colour)
    return root


def test_a_zero_shot_run_of_odd_class_names_has_a_class_column(odd_folder, trained_cache, tmp_path):
    r = cliplab.zeroshot("tiny-shapes", str(odd_folder), backend="torch", cache_dir=trained_cache, quiet=True)
    m = r.metrics
    classes = list(r.data.classnames)
    assert {"annual crop -> forest", "x [1]", "café ☕"} <= set(classes)
    assert list(m.loc[m.metric == "recall", "class"]) == classes
    assert dict(zip(m.loc[m.metric == "recall", "class"], m.loc[m.metric == "recall", "value"])) == \
        dict(zip(classes, r.evaluations[0].result.metrics["per_class_recall"]))
    conf = m[m.metric == "confusion"]
    cm = np.array(r.evaluations[0].result.metrics["confusion"])
    assert {(t, p): v for t, p, v in zip(conf["true"], conf["predicted"], conf.value)} == \
        {(t, p): float(cm[i, j]) for i, t in enumerate(classes) for j, p in enumerate(classes)}
    # the store keeps packed names; read_results gives .metrics' frame back, with the run's columns
    r.save(tmp_path / "store")
    stored = read_results(tmp_path / "store")
    assert stored.metric_name.str.contains(r"\[").any()
    pd.testing.assert_frame_equal(stored[list(m.columns)], m, check_dtype=False)


def _runs():
    kw = dict(backend="torch", quiet=True, limit=LIMIT)
    return {
        "zeroshot": lambda c: cliplab.zeroshot("tiny-shapes", "shapes:color", templates=["simple", "openai-cifar"],
                                               cache_dir=c, **kw),
        "prompts": lambda c: cliplab.prompts("tiny-shapes", "shapes:color", bootstrap=100, templates=["simple",
                                             "openai-cifar"], cache_dir=c, **kw),
        "probe": lambda c: cliplab.probe("tiny-shapes", "shapes:color", train_limit=120, kshot="1,2", seeds=1,
                                         wd=0.01, cache_dir=c, **kw),
        "compare": lambda c: cliplab.compare("tiny-shapes", ["shapes:color", "shapes:size"], cache_dir=c, **kw),
        "inspect": lambda c: cliplab.inspect("tiny-shapes", [str(p) for p in _images(c)], dataset="shapes:color",
                                             backend="torch", quiet=True, cache_dir=c),
        "attack": lambda c: cliplab.attack("tiny-shapes", "shapes:color", target="next", cache_dir=c, **kw),
        "retrieval": lambda c: cliplab.retrieval("tiny-shapes", "shapes", ks=[1, 5], cache_dir=c, **kw),
        "search": lambda c: cliplab.search("tiny-shapes", "shapes:color", ["a red circle"], k=4, cache_dir=c, **kw),
        "similar": lambda c: cliplab.similar("tiny-shapes", "shapes:color", k=5, cache_dir=c, **kw),
        "queries": lambda c: cliplab.queries("tiny-shapes", "shapes:shape", templates=["a photo of a {}."],
                                             bootstrap=100, ks=[3], cache_dir=c, **kw),
        "cluster": lambda c: cliplab.cluster("tiny-shapes", "shapes:color", k=[3], cache_dir=c, **kw),
        "preview": lambda c: cliplab.preview("shapes:color", per_class=2),
    }


def test_the_table_has_every_study_with_metrics():
    from cliplab.registry import studies
    from cliplab.studies import discover

    discover()
    without = {"load_model", "load_dataset", "embed", "embed_texts"}  # objects and arrays, not metric rows
    assert {s.name for s in studies() if "api" in s.doors} - without == set(_runs())


def _images(cache):
    from golden.harness import _images as draw

    return draw(cache.parent / "tidy-images")


@pytest.mark.parametrize("name", list(_runs()))
def test_every_study_has_tidy_metrics(name, trained_cache):
    """metric, variant and value before provenance; a class column where a number belongs to a class; the packed name
    derives back from the tidy columns; one row per number (no two rows with the same key)."""
    m = _runs()[name](trained_cache).metrics
    cols = list(m.columns)
    assert cols[:2] == ["metric", "variant"] and cols.index("value") < min(cols.index(c) for c in PROVENANCE)
    assert cols[-1] == METRIC_NAME and set(TIDY_FRONT + PROVENANCE) <= set(cols)
    assert not m.metric.astype(str).str.contains(r"\[").any(), "a packed name left in metric"
    for r in m.to_dict(orient="records"):
        get = (lambda k: None if pd.isna(r[k]) else r[k])
        assert packed_name(r["metric"], get("class"), get("true"), get("predicted")) == r[METRIC_NAME]
    key = ["task", "model", "dataset", "split", "variant", "metric", "class", "true", "predicted", "seed"]
    assert not m[key].astype(str).duplicated().any()
    assert not (m.variant.str.contains(r"^zero-shot(?: \(|.* k=0)", regex=True)).any(), set(m.variant)


def test_a_probe_stores_its_zero_shot_numbers_once_under_the_zero_shot_names(trained_cache):
    """Regression: a probe stored its zero-shot top-1 as 'zero-shot (simple)' (zeroshot_classification) and again as
    'zero-shot k=0' (kshot_probe); a zero-shot run calls the same evaluation 'simple'."""
    kw = dict(backend="torch", quiet=True, limit=LIMIT, cache_dir=trained_cache)
    p = cliplab.probe("tiny-shapes", "shapes:color", train_limit=120, kshot="1", seeds=1, wd=0.01, linear=False,
                      templates="simple", **kw)
    z = cliplab.zeroshot("tiny-shapes", "shapes:color", templates="simple", **kw)
    m = p.metrics
    zs = m[m.task == "zeroshot_classification"]
    assert set(zs.variant) == {"simple"} and set(m[m.task == "kshot_probe"].variant) == {"probe k=1",
                                                                                       "probe (zero-shot init) k=1"}
    assert not m.variant.str.startswith("zero-shot").any(), set(m.variant)
    # the zero-shot run names it the same way, with the same numbers
    zm = z.metrics
    for metric in ("acc1", "acc5", "mean_per_class_recall"):
        assert zs.loc[zs.metric == metric, "value"].iloc[0] == zm.loc[zm.metric == metric, "value"].iloc[0]
    # the k-shot figure still draws the zero-shot baseline, from the zeroshot_classification row
    from cliplab.studies.probe import kshot_figures

    (fig,) = kshot_figures(m.assign(run_id="r"))
    lines = [ln for ln in fig.figure.axes[0].get_lines() if ln.get_label() == "zero-shot"]
    assert len(lines) == 1 and lines[0].get_ydata()[0] == pytest.approx(100 * zs.loc[zs.metric == "acc1",
                                                                                        "value"].iloc[0])


def test_the_pivot_of_a_zero_shot_run_is_its_summary_table(trained_cache, tmp_path):
    """``metrics`` without the per-class rows, pivoted by variant and metric, has the numbers of the table the result
    shows (percent there, fractions here) and of the report's summary table."""
    r = cliplab.zeroshot("tiny-shapes", "shapes:color", templates=["simple", "openai-cifar"], limit=LIMIT,
                         backend="torch", quiet=True, cache_dir=trained_cache)
    m = r.metrics
    overall = m[m[["class", "true", "predicted"]].isna().all(axis=1)]
    pivot = overall.pivot(index="variant", columns="metric", values="value")
    assert set(pivot.columns) == {"acc1", "acc5", "mean_per_class_recall", "mean_correct_similarity",
                                  "images_per_second"}
    (table,) = r.tables()
    shown = {row[0]: dict(zip(table.columns, row)) for row in table.rows}
    assert set(shown) == set(pivot.index) == {"simple", "openai-cifar"}
    for variant, row in pivot.iterrows():
        cells = shown[variant]
        assert cells["top-1 %"] == pct(row["acc1"]) and cells["top-5 %"] == pct(row["acc5"])
        assert cells["mean class recall %"] == pct(row["mean_per_class_recall"])
        assert cells["sim(true)"] == f"{row['mean_correct_similarity']:.3f}"
    # the per-class numbers pivot by class
    per_class = m[m.metric == "recall"].pivot(index="class", columns="variant", values="value")
    assert list(per_class.index) == sorted(r.data.classnames)
    assert np.allclose(per_class.mean(), pivot["mean_per_class_recall"][per_class.columns])
    # and the report's summary table of the stored run holds the same numbers
    r.save(tmp_path / "store")
    (report,) = [t for t in summary_tables(read_results(tmp_path / "store")) if t.title == "zeroshot classification"]
    for row in report.rows:
        cells = dict(zip(report.columns, row))
        for metric in ("acc1", "acc5", "mean_per_class_recall", "mean_correct_similarity"):
            assert cells[metric] == format_value(metric, pivot.loc[cells["variant"], metric])
