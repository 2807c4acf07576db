"""retrieval --show-captions ID|TEXT (issue 27): captions chosen by id or by a text match, drawn with their own image
and the images retrieved for them; ids are the dataset's caption numbers (the captions table's caption_id), stable
when an image cannot be read; a choice that names no caption is one error line before any embedding."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.errors import ParameterError
from cliplab.tasks.caption_retrieval import MAX_CHOSEN, pick_captions
from conftest import make_image

KW = dict(backend="torch", quiet=True, device="cpu")
CAPTIONS = ["A red circle on white.", "a BLUE square", "two red  circles", "a green triangle", "A red circle on white."]


@pytest.mark.parametrize("choices, ids", [
    (["0"], (0,)),
    (["3", "1"], (3, 1)),  # the order given
    (["red circle"], (0, 2, 4)),  # every caption containing it, any case ("red circles" too)
    (["RED   CIRCLES"], (2,)),  # runs of spaces and case do not matter
    (["blue", "1", "square"], (1,)),  # one caption chosen three ways is shown once
    (["4", "red"], (4, 0, 2)),
    ([" 2 "], (2,)),
])
def test_choices_pick_captions_by_id_or_text(choices, ids):
    assert pick_captions(choices, CAPTIONS).ids == ids


@pytest.mark.parametrize("choice, says", [
    ("5", "there is no caption 5: the captions are numbered 0 to 4"),
    ("purple", "none of the 5 captions contains this text"),
    ("a blue sqare", "closest: 'a BLUE square'"),
    ("   ", "give a caption id or a text"),
])
def test_a_choice_naming_no_caption_is_a_parameter_error(choice, says):
    with pytest.raises(ParameterError) as e:
        pick_captions([choice], CAPTIONS)
    assert e.value.param == "show_captions" and says in str(e.value)


def test_picks_stop_at_the_cap_and_say_how_many_matched():
    caps = [f"photo {i}" for i in range(40)]
    p = pick_captions(["photo"], caps)
    assert p.ids == tuple(range(MAX_CHOSEN)) and p.total == 40 and p.matched == {"photo": 40}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text("abc AB", min_size=1, max_size=8), min_size=1, max_size=30), st.data())
def test_a_text_picks_exactly_the_captions_containing_it(captions, data):
    """Property: a text taken from one caption picks that caption and every caption that contains it (folded), in
    caption order, up to the cap -- never one that does not."""
    src = data.draw(st.sampled_from(captions))
    lo = data.draw(st.integers(0, len(src) - 1))
    piece = src[lo:data.draw(st.integers(lo + 1, len(src)))]
    if not piece.strip() or piece.strip().isdigit():
        return
    fold = (lambda t: " ".join(t.casefold().split()))
    want = [i for i, c in enumerate(captions) if fold(piece) in fold(c)]
    p = pick_captions([piece], captions)
    assert p.ids == tuple(want[:MAX_CHOSEN]) and p.total == len(want)


def _rows_drawn(monkeypatch):
    import cliplab.studies.caption_retrieval as cr

    drawn = []
    real = cr.image_grid

    def spy(imgs, caps, **kw):
        drawn.append(kw["row_titles"])
        return real(imgs, caps, **kw)

    monkeypatch.setattr(cr, "image_grid", spy)
    return drawn


def test_the_chosen_grid_shows_the_chosen_captions_in_order(trained_cache, tmp_path, monkeypatch):
    with pytest.warns(UserWarning, match=r"picked \d+ captions \('circle': \d+\); the grid shows the first 12"):
        r = cliplab.retrieval("tiny-shapes", "shapes", limit=40, cache_dir=trained_cache,
                              show_captions=["7", "circle"], **KW)
    frame = r.caption_frame()
    assert list(frame.caption_id) == list(range(len(r.captions)))  # nothing skipped: ids are positions
    circles = [i for i, c in enumerate(r.captions) if "circle" in c.casefold()]
    want = list(dict.fromkeys([7, *circles]))[:MAX_CHOSEN]
    assert list(r.chosen) == want
    drawn = _rows_drawn(monkeypatch)
    (path, _), = r.artifacts()["chosen"].draw(tmp_path / "chosen.png")
    assert path.is_file() and [t.split("\n")[0] for t in drawn[0]] == [r.captions[i] for i in want]
    # without a choice there is no chosen grid
    plain = cliplab.retrieval("tiny-shapes", "shapes", limit=40, cache_dir=trained_cache, **KW)
    assert "chosen" not in plain.artifacts() and plain.chosen == ()


def test_ids_are_the_dataset_numbers_when_an_image_is_skipped(tmp_path, trained_cache):
    """A caption's id counts every caption of the file, so an unreadable image does not renumber the others; a chosen
    caption of that image is said, not silently dropped or swapped for its neighbour."""
    lines = ["image,caption"]
    for i, color in enumerate([(220, 20, 20), (20, 20, 220), (20, 200, 20), (200, 200, 20)]):
        make_image(tmp_path / f"{i}.png", color=color)
        lines += [f"{i}.png,picture {i} first", f"{i}.png,picture {i} second"]
        if i == 1:
            (tmp_path / "broken.png").write_bytes(b"not an image")
            lines += ["broken.png,the broken one"]
    (tmp_path / "caps.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"1 chosen caption\(s\) \(id 4\).*not embedded"):
        r = cliplab.retrieval("tiny-shapes", str(tmp_path / "caps.csv"), cache_dir=trained_cache,
                              show_captions=["4", "5", "picture 3 second"], backend="torch", device="cpu")
    frame = r.caption_frame()
    assert dict(zip(frame.caption_id, frame.caption))[5] == "picture 2 first"
    assert [int(r.caption_ids[c]) for c in r.chosen] == [5, 8]
    assert [r.captions[c] for c in r.chosen] == ["picture 2 first", "picture 3 second"]


def test_cli_writes_the_grid_and_a_bad_choice_is_one_line_before_embedding(trained_cache, tmp_path):
    base = ["retrieval", "-d", "shapes", "--limit", "40", "--cache-dir", str(trained_cache), "--backend", "torch",
            "--quiet"]
    ok = CliRunner().invoke(app, [*base, "--show-captions", "3", "--show-captions", "square",
                                  "--chosen", str(tmp_path / "c.png"), "--results", str(tmp_path / "store")])
    assert ok.exit_code == 0 and (tmp_path / "c.png").is_file(), ok.output
    # the grid is a figure of the run: the report shows it in the caption retrieval section
    rows = cliplab.read_results(tmp_path / "store")
    assert list(rows[rows.metric == "figure"].variant) == ["chosen captions → images"]
    rep = CliRunner().invoke(app, ["report", str(tmp_path / "store"), "-o", str(tmp_path / "r.html"), "--quiet"])
    assert rep.exit_code == 0, rep.output
    assert "chosen captions → images" in (tmp_path / "r.html").read_text()
    fresh = tmp_path / "fresh-cache"
    bad = CliRunner().invoke(app, ["retrieval", "-d", "shapes", "--limit", "40", "--cache-dir", str(fresh),
                                   "--model", "tiny-shapes", "--quiet", "--show-captions", "hexagonal pyramid"])
    lines = bad.output.strip().splitlines()
    assert bad.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: --show-captions"), bad.output
    assert not any(fresh.rglob("*.npy")) and not any(fresh.rglob("*.safetensors"))  # nothing was embedded
    alone = CliRunner().invoke(app, [*base, "--chosen", str(tmp_path / "d.png")])
    assert alone.exit_code == 2 and "--show-captions" in alone.output and not (tmp_path / "d.png").exists()
