"""Retrieval ground truth as a table (issue 27): `similar --gt FILE.csv|.tsv` with the columns query, relevant[, junk],
scored with the Oxford/Paris mAP: a hand-computed mAP, the same numbers as the equivalent Oxford folder, and one
error line (file, row and line, field) for a bad row or an unknown image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.data.oxford import read_oxford_gt, read_table_gt
from cliplab.errors import DatasetParameterError
from cliplab.studies.image_retrieval import gt_metrics
from tests.conftest import make_image

KW = dict(backend="torch", quiet=True, device="cpu")
STEMS = ["a", "b", "c", "d", "e"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_per_pair_and_lists_merge(tmp_path):
    gt = _write(tmp_path / "gt.csv", "query,relevant,junk\na.jpg,b;c,\na,,d\ne,c,\n")
    qs = read_table_gt(gt, set(STEMS))
    assert [(q.name, q.good, q.junk) for q in qs] == [("a", ["b", "c"], ["d", "a"]), ("e", ["c"], ["e"])]
    tsv = _write(tmp_path / "gt.tsv", "query\trelevant\na\tb\na\tc\n")
    assert [(q.name, q.good, q.junk) for q in read_oxford_gt(tsv)] == [("a", ["b", "c"], ["a"])]
    # listed as relevant, the query stays in its ranking
    assert read_table_gt(_write(tmp_path / "self.csv", "query,relevant\na,a;b\n"))[0].junk == []


def test_hand_computed_map(tmp_path):
    gt = _write(tmp_path / "gt.csv", "query,relevant,junk\na,b;c,\na,,d\ne,c,\n")
    qs = read_table_gt(gt, set(STEMS))
    pos = {s: i for i, s in enumerate(STEMS)}
    rankings = [np.array([0, 3, 2, 4, 1]),  # a: a and d are junk -> c e b: c rank 1, b rank 3
                np.array([1, 2, 4, 0, 3])]  # e: e is junk -> b c a d: c rank 2
    m, notes = gt_metrics(qs, rankings, pos)
    # trapezoid AP: a: (1/2) [(1 + 1) / 2 + (1/2 + 2/3) / 2] = 0.791667; e: (0 + 1/2) / 2 = 0.25
    assert m["per_query_ap"] == {"a": pytest.approx(0.7916667), "e": pytest.approx(0.25)}
    assert m["mAP"] == pytest.approx((0.7916667 + 0.25) / 2)
    assert m["mP@1"] == pytest.approx(0.5)  # a: its first is relevant; e: not
    assert not notes


@pytest.mark.parametrize("text, where, what", [
    ("query,relevant\na,b;zz\n", "row 1 (line 2)", "field relevant: image 'zz' is not in the gallery"),
    ("query,relevant\na,b\nq9,b\n", "row 2 (line 3)", "field query: image 'q9' is not in the gallery"),
    ("query,relevant,junk\na,b,\nb,,\n", "row 2 (line 3)", "field relevant: should name at least one image"),
    ("query,relevant,extra\na,b,c\n", "row 1 (line 2)", "field extra: is not a known field"),
    ("query,good\na,b\n", "line 1", "needs the columns query and relevant"),
    ("query,relevant\n,b\n", "row 1 (line 2)", "field query: should not be empty"),
])
def test_a_bad_row_is_one_error_naming_file_row_and_field(tmp_path, text, where, what):
    gt = _write(tmp_path / "gt.csv", text)
    with pytest.raises(DatasetParameterError) as err:
        read_table_gt(gt, set(STEMS))
    message = str(err.value)
    assert err.value.param == "gt" and str(gt) in message and where in message and what in message


@pytest.fixture
def gallery(tmp_path):
    colours = {"a": (200, 30, 30), "b": (210, 40, 30), "c": (190, 30, 50), "d": (30, 40, 200), "e": (40, 30, 210),
               "f": (30, 200, 40)}
    for name, colour in colours.items():
        make_image(tmp_path / "gallery" / f"{name}.png", color=colour)
    return tmp_path / "gallery"


def test_the_table_scores_as_the_oxford_folder_does(gallery, tmp_path, trained_cache):
    gt = _write(tmp_path / "gt.csv", "query,relevant,junk\na,b;c,f\nd,e,\nd,,a\n")
    folder = tmp_path / "oxford"
    folder.mkdir()
    for q, good, junk in (("a", "b\nc", "f\na"), ("d", "e", "a\nd")):
        _write(folder / f"{q}_query.txt", f"{q}\n")
        _write(folder / f"{q}_good.txt", good + "\n")
        _write(folder / f"{q}_junk.txt", junk + "\n")
    by_table = cliplab.similar("tiny-shapes", str(gallery), gt=gt, cache_dir=trained_cache, **KW)
    by_folder = cliplab.similar("tiny-shapes", str(gallery), gt=folder, cache_dir=trained_cache, **KW)
    assert by_table.scores["queries"] == 2
    for key in ("mAP", "mP@1", "mP@5", "mP@10"):
        assert by_table.scores[key] == pytest.approx(by_folder.scores[key]), key
    # and by hand from the descriptors: each query is its gallery image (no box)
    d = by_table.descriptors
    ids = [Path(by_table.gallery.source.id(int(i))).stem for i in by_table.indices]
    pos = {s: i for i, s in enumerate(ids)}
    rankings = [np.argsort(-(d @ d[pos[q]]), kind="stable") for q in ("a", "d")]
    m, _ = gt_metrics(read_table_gt(gt, set(ids)), rankings, pos)
    assert by_table.scores["mAP"] == pytest.approx(m["mAP"], abs=1e-6)


def test_cli_unknown_image_is_one_error_line(gallery, tmp_path, trained_cache):
    gt = _write(tmp_path / "gt.csv", "query,relevant\na,b\nc,nope.jpg\n")
    out = CliRunner().invoke(app, ["similar", "--dataset", str(gallery), "--gt", str(gt), "--cache-dir",
                                   str(trained_cache), "--backend", "torch", "--device", "cpu"])
    assert out.exit_code == 2
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1, out.output
    assert lines[0].startswith("error: --gt") and "row 2 (line 3)" in lines[0] and "'nope'" in lines[0]
