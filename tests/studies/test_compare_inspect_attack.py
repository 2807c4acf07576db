"""compare, inspect and the typographic attack: units and the CLI as a user runs it."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cliplab.attacks.typographic import AttackedSource, TypographicParams, choose_targets, render_text
from cliplab.cli import app
from cliplab.errors import CliplabError
from cliplab.models.specs import model_specs

runner = CliRunner()


def test_targets_never_the_true_class():
    y = np.arange(200) % 7
    for rule in ("random", "next"):
        t = choose_targets(y, 7, rule, seed=3)
        assert (t != y).all() and ((t >= 0) & (t < 7)).all()
    assert np.array_equal(choose_targets(y, 7, "random", 3), choose_targets(y, 7, "random", 3))
    cm = np.eye(3, dtype=int) * 10
    cm[0, 2] = 5  # class 0 is mostly confused with class 2; classes 1 and 2 never confused -> next
    assert choose_targets(np.array([0, 1, 2]), 3, "most-confused", confusion=cm).tolist() == [2, 2, 0]
    with pytest.raises(CliplabError, match="^target 'sideways': choose one of"):
        choose_targets(y, 7, "sideways")


def test_render_text_changes_pixels_where_it_writes():
    img = Image.new("RGB", (64, 64), (30, 60, 90))
    for pos in ("center", "top", "bottom"):
        out = np.asarray(render_text(img, "red shape", TypographicParams(position=pos))).astype(int)
        changed = np.abs(out - np.asarray(img).astype(int)).sum(-1) > 0
        rows = np.flatnonzero(changed.any(1))
        assert out.shape == (64, 64, 3) and 0.05 < changed.mean() < 0.6
        centre = rows.mean()
        assert {"center": 20 < centre < 44, "top": centre < 32, "bottom": centre > 32}[pos]
    faint = np.asarray(render_text(img, "red", TypographicParams(opacity=0.3))).astype(int)
    full = np.asarray(render_text(img, "red", TypographicParams(opacity=1.0))).astype(int)
    base = np.asarray(img).astype(int)
    assert np.abs(faint - base).max() < np.abs(full - base).max()
    with pytest.raises(CliplabError, match="^position 'left': choose one of"):
        TypographicParams(position="left").validate()


def test_attacked_keys_differ_from_clean_and_by_params():
    from cliplab.data.sources import IndexedSource

    base = IndexedSource(3, lambda i: Image.new("RGB", (8, 8)), "fp", "toy")
    a = AttackedSource(base, ["x", "y", "z"], TypographicParams())
    b = AttackedSource(base, ["x", "y", "z"], TypographicParams(opacity=0.5))
    c = AttackedSource(base, ["x", "y", "q"], TypographicParams())
    assert len(set(a.keys()) | set(base.keys())) == 6
    assert not set(a.keys()) & set(b.keys())
    assert a.keys()[:2] == c.keys()[:2] and a.keys()[2] != c.keys()[2]


def test_model_specs_pairs_and_files(tmp_path):
    s = model_specs(["A", "B"], ["openai"], None)
    assert [(x.model, x.pretrained) for x in s] == [("A", "openai"), ("B", None)]
    (tmp_path / "m.toml").write_text('[[models]]\nmodel = "RN50"\npretrained = "openai"\nlabel = "rn"\n')
    (tmp_path / "m.yaml").write_text("- model: ViT-B-32\n  pretrained: none\n")
    assert model_specs(None, None, tmp_path / "m.toml")[0].name == "rn"
    assert model_specs(["X"], None, tmp_path / "m.yaml")[0].pretrained is None
    with pytest.raises(CliplabError, match="pairs"):
        model_specs(["A"], ["x", "y"], None)
    with pytest.raises(CliplabError, match="same name"):
        model_specs(["A", "A"], None, None)
    (tmp_path / "bad.yaml").write_text("model: [")
    with pytest.raises(CliplabError, match=r"bad.yaml: line 1, column \d+: invalid YAML"):
        model_specs(None, None, tmp_path / "bad.yaml")


def test_compare_two_models(trained_cache, tiny_checkpoint, tmp_path):
    cfg, ckpt, _ = tiny_checkpoint
    out, plot, res_dir = tmp_path / "cmp.csv", tmp_path / "cmp", tmp_path / "res"
    res = runner.invoke(app, ["compare", "-m", "tiny-shapes", "-p", "none", "-m", str(cfg), "-p", str(ckpt),
                              "-d", "shapes:color", "-d", "shapes:size", "--probe", "--train-limit", "600",
                              "-o", str(out), "--plot", str(plot), "--results", str(res_dir), "-q",
                              "--cache-dir", str(trained_cache)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert len(df) == 4 and set(df.dataset) == {"shapes:color", "shapes:size"}
    trained = df[df.model == "tiny-shapes"].set_index("dataset")
    rand = df[df.model != "tiny-shapes"].set_index("dataset")
    assert (trained.acc1 > rand.acc1 + 0.3).all()  # the trained model wins by far on both datasets
    assert (trained.probe_acc1 > 0.9).all() and (df.embed_dim.isin([32, 64])).all()
    assert (tmp_path / "cmp.png").stat().st_size > 5000 and (tmp_path / "cmp.svg").read_text().startswith("<?xml")
    from cliplab.results.store import read_results

    rows = read_results(res_dir)
    metrics = rows[rows.artifact.isna()]
    assert set(metrics.task) == {"zeroshot_classification", "linear_probe"} and metrics.model_fingerprint.nunique() == 2
    fig = rows[rows.artifact.notna()].artifact
    assert len(fig) == 1 and fig.iloc[0].endswith("cmp.png") and (res_dir / "_figures").is_dir()


def test_inspect_ranks_and_draws(trained_cache, tmp_path):
    from cliplab.data import open_dataset

    ds = open_dataset("shapes:color", split="test", cache_dir=trained_cache)
    paths = ds.paths[:4]
    res = runner.invoke(app, ["inspect", *paths, "-d", "shapes:color", "--figures", str(tmp_path / "fig"),
                              "-o", str(tmp_path / "r.csv"), "--cache-dir", str(trained_cache)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "r.csv")
    assert len(df) == 4 * 6 and (df.groupby("image").probability.sum().round(4) == 1).all()
    top = df[df["rank"] == 1].set_index("image").candidate
    truth = [ds.classnames[ds.labels[i]] for i in range(4)]
    assert sum(top[p] == t for p, t in zip(paths, truth)) >= 3
    assert len(list((tmp_path / "fig").glob("*-top5.png"))) == 4
    res = runner.invoke(app, ["inspect", str(tmp_path / "missing.png"), "--cache-dir", str(trained_cache)])
    assert res.exit_code == 2 and "missing.png" in res.output


def test_typographic_attack_flips_tiny_model(trained_cache, tmp_path):
    out = tmp_path / "atk.json"
    res = runner.invoke(app, ["attack", "typographic", "-d", "shapes:position", "--limit", "300", "-o", str(out),
                              "--examples", str(tmp_path / "ex.png"), "-q", "--cache-dir", str(trained_cache)])
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())["metrics"]
    # shipped tiny-shapes, full test split (README): 99.8 % -> 40.4 %, the written label predicted 0.1 % -> 14.2 %
    assert m["clean_acc1"] > 0.9 and m["acc1_drop"] > 0.2
    assert m["predicts_written_label"] > m["predicts_written_label_clean"] + 0.05
    assert (tmp_path / "ex.png").stat().st_size > 10000
    bad = runner.invoke(app, ["attack", "typographic", "--opacity", "2", "--cache-dir", str(trained_cache)])
    assert bad.exit_code == 2 and "--opacity" in bad.output
