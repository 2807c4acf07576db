"""inspect with several models side by side (issue 27: "the medical study compares model sizes on a few images"):
each model's ranking equal to its own one-model run, the top-1 agreement from those rankings, the scores table with a
model column, one figure per image and model, the similarity matrices as panels -- from the CLI and from Python."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.studies.inspect import InspectModelsResult, InspectResult

KW = dict(backend="torch", quiet=True, device="cpu")


@pytest.fixture(scope="module")
def paths(trained_cache):
    from cliplab.data import open_dataset

    return open_dataset("shapes:color", split="test", cache_dir=trained_cache).paths[:4]


def test_two_models_rank_as_each_alone_and_agree_where_their_top1_is_the_same(trained_cache, tiny_checkpoint,
                                                                              paths):
    cfg, ckpt, _ = tiny_checkpoint
    both = cliplab.inspect(["tiny-shapes", str(cfg)], paths, pretrained=["none", str(ckpt)], dataset="shapes:color",
                           cache_dir=trained_cache, **KW)
    assert isinstance(both, InspectModelsResult) and both.labels == ["tiny-shapes", "tiny-vit.json"]
    alone = [cliplab.inspect("tiny-shapes", paths, dataset="shapes:color", cache_dir=trained_cache, **KW),
             cliplab.inspect(str(cfg), paths, pretrained=str(ckpt), dataset="shapes:color", cache_dir=trained_cache,
                             **KW)]
    for run, single in zip(both.runs, alone):
        assert isinstance(single, InspectResult)
        assert run.labels == single.labels and np.array_equal(run.scores, single.scores)
        assert np.array_equal(run.probs, single.probs)
    top = [np.argmax(s.scores, axis=1) for s in alone]
    same = top[0] == top[1]
    assert list(both.agreement()) == list(same)
    m = both.metric_rows()
    agree = m[m.metric == "top1_agreement"]
    assert len(agree) == 1 and agree.value.iloc[0] == pytest.approx(same.mean()) and agree.model.iloc[0] == "several"
    assert set(m[m.metric == "top1_cosine"].model) == {"tiny-shapes", str(cfg)}
    side, *own = both.tables()
    assert side.columns[-1] == "same top-1" and [r[-1] for r in side.rows] == ["yes" if s else "no" for s in same]
    assert len(own) == 2  # each model's full ranking table
    for row, (t0, t1) in enumerate(zip(*top)):
        assert side.rows[row][1].startswith(alone[0].labels[t0] + " (")
        assert side.rows[row][2].startswith(alone[1].labels[t1] + " (")
    scores = both.artifacts()["scores"]
    assert list(scores.columns[:2]) == ["model", "image"] and set(scores.model) == set(both.labels)
    assert len(scores) == 2 * len(paths) * len(alone[0].labels)
    assert "cosine similarity · 2 models" in both._repr_html_()


def test_the_same_model_twice_is_one_error_naming_it(trained_cache, paths):
    from cliplab.errors import ParameterError

    with pytest.raises(ParameterError, match=r"same name \(\['tiny-shapes', 'tiny-shapes'\]\): give each model once"):
        cliplab.inspect(["tiny-shapes", "tiny-shapes"], paths[:2], classes="red,blue", cache_dir=trained_cache, **KW)
    res = CliRunner().invoke(app, ["inspect", *paths[:2], "-m", "tiny-shapes", "-m", "tiny-shapes",
                                   "--classes", "red,blue", "--cache-dir", str(trained_cache)])
    assert res.exit_code == 2 and res.output.startswith("error: two compared models have the same name")
    assert res.output.count("\n") == 1


def test_cli_writes_a_figure_per_image_and_model_and_the_matrices_as_panels(trained_cache, tiny_checkpoint, paths,
                                                                            tmp_path, monkeypatch):
    import cliplab.report.plots as plots

    cfg, ckpt, _ = tiny_checkpoint
    panels = []
    real = plots.similarity_matrix
    monkeypatch.setattr(plots, "similarity_matrix", lambda *a, **kw: panels.append(kw.get("panels")) or real(*a, **kw))
    res = CliRunner().invoke(app, ["inspect", *paths, "-d", "shapes:color", "-m", "tiny-shapes", "-m", str(cfg),
                                   "-p", "none", "-p", str(ckpt), "--figures", str(tmp_path / "figs"),
                                   "-o", str(tmp_path / "s.csv"), "--heatmap", str(tmp_path / "h.png"),
                                   "--cache-dir", str(trained_cache), "--backend", "torch", "--quiet"])
    assert res.exit_code == 0, res.output
    assert panels == [["tiny-shapes", "tiny-vit.json"]] and (tmp_path / "h.png").is_file()
    figs = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert len(figs) == 2 * len(paths)
    assert sum(f.endswith("-tiny-shapes.png") for f in figs) == len(paths)
    assert sum(f.endswith("-tiny-vit.json.png") for f in figs) == len(paths)
    scores = pd.read_csv(tmp_path / "s.csv")
    assert set(scores.model) == {"tiny-shapes", "tiny-vit.json"} and len(scores) == 2 * len(paths) * 6
