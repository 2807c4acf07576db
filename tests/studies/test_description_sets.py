"""Several description sets in one prompt study (cliplab/studies/prompts.py): repeated files and files of named sets,
each a row tested against the baseline and against each other with the paired test template sets get."""
import json

import numpy as np
import pytest

import cliplab
from cliplab.data.shapes import COLORS
from cliplab.errors import ParameterError
from cliplab.progress import use
from cliplab.studies.prompts import load_description_sets
from cliplab.tasks.stats import compare_paired
from recording import Recording

CLASSES = [f"{c} shape" for c in COLORS]


def write(path, data):
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("descriptions")
    return {
        "good": write(d / "good.json", {c: [f"a {c}", f"something {c.split()[0]}"] for c in CLASSES}),
        "vague": write(d / "vague.json", {c: ["a shape"] for c in CLASSES}),
        # "same": the baseline template's own prompts, so its row must equal the baseline's exactly
        "sets": write(d / "sets.json", {"same": {c: [f"a photo of a {c}."] for c in CLASSES},
                                        "bare": {c: c.split()[0] for c in CLASSES}}),
    }


def run(files, trained_cache, *names, **kw):
    with use(Recording()):
        return cliplab.prompts("tiny-shapes", "shapes:color", templates="simple", limit=240, bootstrap=200,
                               descriptions=[str(files[n]) for n in names], cache_dir=trained_cache, quiet=True, **kw)


def test_several_files_and_named_sets_are_rows_compared_pairwise(files, trained_cache):
    res = run(files, trained_cache, "good", "vague", "sets")
    rows = {r.name: r for r in res.rows}
    assert [r.name for r in res.rows if r.kind == "descriptions"] == ["good (mean)", "vague (mean)", "same (mean)",
                                                                      "bare (mean)"]
    base = rows["a photo of a {}."]
    # the set made of the baseline's own prompts: the same embeddings, the same answers
    assert np.array_equal(rows["same (mean)"].correct, base.correct)
    same = rows["same (mean)"].vs_baseline
    assert (same.diff, same.only_a, same.only_b, same.p_value) == (0.0, 0, 0, 1.0)
    # every pair once, in order, each the paired test on the two rows' answers
    pairs = [(p.a, p.b) for p in res.pairwise]
    assert pairs == [("good (mean)", "vague (mean)"), ("good (mean)", "same (mean)"), ("good (mean)", "bare (mean)"),
                     ("vague (mean)", "same (mean)"), ("vague (mean)", "bare (mean)"), ("same (mean)", "bare (mean)")]
    for p in res.pairwise:
        a, b = rows[p.a].correct, rows[p.b].correct
        assert p.comparison.diff == pytest.approx(b.mean() - a.mean())
        assert (p.comparison.only_a, p.comparison.only_b) == (int((a & ~b).sum()), int((b & ~a).sum()))
        assert p.comparison == compare_paired(a, b, n_boot=200, seed=0)
    vague = next(p for p in res.pairwise if p.a == "good (mean)" and p.b == "vague (mean)").comparison
    assert vague.diff < -0.5 and vague.significant  # one text for every class: a coin toss among six
    rec = res.record()
    assert len(rec["pairwise"]) == 6 and rec["pairwise"][0]["first"] == "good (mean)"
    df = res.metric_rows()
    pw = df[df.metric == "acc1_diff_pairwise"]
    assert len(pw) == 6 and set(df[df.metric == "mcnemar_p_pairwise"].variant) == set(pw.variant)
    assert any("against each other" in t.title for t in res.tables() if hasattr(t, "title"))


def test_one_plain_file_keeps_its_row_name_and_has_no_pairs(files, trained_cache):
    res = run(files, trained_cache, "good")
    assert [r.name for r in res.rows if r.kind == "descriptions"] == ["descriptions (mean)"]
    assert res.pairwise == [] and "pairwise" not in res.record()


def test_a_set_can_be_the_baseline(files, trained_cache):
    res = run(files, trained_cache, "good", "vague", baseline="good (mean)")
    assert res.baseline == "good (mean)"
    assert next(r for r in res.rows if r.name == "vague (mean)").vs_baseline.diff < -0.5


def test_set_names_must_differ(tmp_path):
    (tmp_path / "a").mkdir()
    a = write(tmp_path / "a" / "x.json", {c: ["t"] for c in CLASSES})
    b = write(tmp_path / "x.json", {c: ["u"] for c in CLASSES})
    with pytest.raises(ParameterError, match="the description set 'x' is also in"):
        load_description_sets([a, b], CLASSES)
    named = write(tmp_path / "n.json", {"x": {c: ["v"] for c in CLASSES}})
    with pytest.raises(ParameterError, match="the description set 'x' is also in"):
        load_description_sets([a, named], CLASSES)


def test_a_named_set_without_a_class_names_the_set(tmp_path):
    bad = write(tmp_path / "n.json", {"ok": {c: ["v"] for c in CLASSES}, "short": {CLASSES[0]: ["v"]}})
    with pytest.raises(ParameterError, match="set 'short': no descriptions for class 'green shape'") as err:
        load_description_sets([bad], CLASSES)
    assert err.value.param == "descriptions"


def test_long_descriptions_in_a_prompt_study_truncate_vs_windows(trained_cache, tmp_path):
    # tiny-shapes reads 24 tokens: every description here is longer (the colour named only at its end); with the
    # 6 prompts of the template, 12 distinct prompts
    filler = "this is a drawing of a figure on a plain background in the middle of a small picture " * 2
    path = write(tmp_path / "long.json", {c: [f"{filler}and its colour is {c.split()[0]}"] for c in CLASSES})
    out = {}
    for mode in ("truncate", "windows"):
        rec = Recording()
        with use(rec):
            out[mode] = cliplab.prompts("tiny-shapes", "shapes:color", templates="simple", limit=120, bootstrap=200,
                                        descriptions=str(path), long_text=mode, cache_dir=trained_cache)
        out[mode + " said"] = rec
        assert out[mode].config["long_text"] == mode
    cut = [w for w in out["truncate said"].warnings if "longer than the text context" in w]
    assert len(cut) == 1 and "6 of 12 prompts are longer than the text context of tiny-shapes (24 tokens)" in cut[0]
    assert not any("longer than the text context" in w for w in out["windows said"].warnings)
    assert any("embedded whole" in n for n in out["windows said"].notes)
    t, w = (next(r for r in out[m].rows if r.kind == "descriptions") for m in ("truncate", "windows"))
    # truncated, every class keeps the same first 22 tokens (the colour is cut off): one prompt for all, chance
    assert t.metrics["acc1"] < 0.3 and w.metrics["acc1"] > t.metrics["acc1"]
