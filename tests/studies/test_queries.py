"""Query studies (text->image retrieval with numbers): the image-resampling statistics against hand-computed and
scikit-learn values, the study's per-query metrics against scikit-learn on the same scores, the adjective chain on the
trained tiny model (every step's lift above its base rate) against a random-weight model (the negative control),
noun swaps, models side by side, and the errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

import cliplab
from cliplab import CliplabError
from cliplab.tasks.query_stats import (bootstrap_mean, bootstrap_p, percentile_ci, random_ap, resample_weights,
                                       weighted_ap)
from cliplab.tasks.ranking import metrics_from_ranks, relevant_ranks

KW = dict(backend="torch", quiet=True)


# ---- the statistics ----

def test_weighted_ap_with_unit_weights_is_the_step_ap():
    rel = np.array([1, 0, 1, 0, 0, 1], bool)  # relevant at ranks 1, 3, 6: AP = (1/1 + 2/3 + 3/6) / 3
    assert weighted_ap(rel, np.ones((1, 6)))[0] == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    rng = np.random.default_rng(0)
    for _ in range(50):
        r = rng.random(40) < 0.3
        if not r.any():
            continue
        ranks = relevant_ranks(np.arange(40), np.flatnonzero(r))
        step = metrics_from_ranks([ranks], [r.sum()], (5,)).ap[0]
        assert weighted_ap(r, np.ones((1, 40)))[0] == pytest.approx(step, abs=1e-12)


def test_weighted_ap_counts_copies_and_drops_images():
    rel = np.array([0, 1, 1], bool)
    # the first (irrelevant) image drawn twice, the last dropped: relevant copy at weighted position 3 -> AP = 1/3
    assert weighted_ap(rel, np.array([[2, 1, 0]]))[0] == pytest.approx(1 / 3)
    # no relevant image drawn: NaN (left out of means)
    assert np.isnan(weighted_ap(rel, np.array([[3, 0, 0]]))[0])


@pytest.mark.parametrize("n,r", [(6, 1), (6, 2), (7, 3), (8, 8), (9, 4)])
def test_random_ap_is_the_mean_ap_over_every_placement_of_the_relevant_items(n, r):
    import itertools

    aps = [np.mean([(i + 1) / p for i, p in enumerate(pos)]) for pos in itertools.combinations(range(1, n + 1), r)]
    assert random_ap(r, n) == pytest.approx(np.mean(aps), abs=1e-12)
    assert random_ap(1, 1000) > 1 / 1000  # above the base rate when few items are relevant


def test_resamples_draw_n_images_and_are_seeded():
    w = resample_weights(10, 200, seed=3)
    assert w.shape == (200, 10) and (w.sum(1) == 10).all()
    np.testing.assert_array_equal(w, resample_weights(10, 200, seed=3))


def test_ci_and_p():
    assert percentile_ci(np.arange(1001)) == pytest.approx((25.0, 975.0))
    assert bootstrap_p(np.ones(99)) == pytest.approx(1 / 100)  # every resample on one side: the floor 1/(B+1)
    assert bootstrap_p(np.r_[np.ones(50), -np.ones(50)]) == pytest.approx(1.0)
    assert np.nanmean(bootstrap_mean(np.ones(5), 100)) == 1.0


# ---- the study ----

@pytest.fixture(scope="module")
def study(trained_cache):
    return cliplab.queries("tiny-shapes", "shapes:shape", templates=["a photo of a {}.", "a drawing of a {}."],
                           chain="shapes", bootstrap=300, cache_dir=trained_cache, **KW)


def test_per_query_ap_is_scikit_learns_on_the_same_scores(study, trained_cache):
    model = cliplab.load_model("tiny-shapes", cache_dir=trained_cache, **KW)
    ds = cliplab.load_dataset("shapes:shape", cache_dir=trained_cache)
    G = cliplab.embed(model, ds, normalize=True, cache_dir=trained_cache, quiet=True)
    T = cliplab.embed_texts(model, [f"a photo of a {c}." for c in ds.classnames], normalize=True, quiet=True,
                            cache_dir=trained_cache)
    frame = study.queries_frame()
    ours = frame[(frame.template == "a photo of a {}.")].AP.to_numpy()
    ref = [average_precision_score(ds.labels == c, G @ T[c]) for c in range(len(ds.classnames))]
    np.testing.assert_allclose(ours, ref, atol=1e-6)  # no ties on real-valued scores
    rows = study.metrics
    m = rows[(rows.metric == "mAP") & (rows.variant == "a photo of a {}.")].iloc[0]
    assert m.value == pytest.approx(np.mean(ref), abs=1e-6) and m.ci_low < m.value < m.ci_high


def test_the_adjective_chain_refines_on_the_trained_model(study):
    """colour -> size -> shape on shapes: every step's lift over its base rate has a CI above 0."""
    stats = study.chain_stats(study.runs[0])
    assert [s["template"] for s in stats] == ["a {color} shape", "a {size} {color} shape", "a {size} {color} {shape}"]
    assert [s["chains"] for s in stats] == [60, 60, 60]  # 6 colours x 2 sizes x 5 shapes present
    for s in stats:
        assert s["AP_lift_ci"][0] > 0 and s["P@10_lift_ci"][0] > 0, s
    assert stats[0]["base_rate"] > stats[1]["base_rate"] > stats[2]["base_rate"]


def test_a_random_weight_model_fails_the_same_test(tiny_checkpoint, trained_cache, tmp_path):
    """The negative control: random weights give no lift on some step (its CI holds 0, or lies below). (Random
    features do sort images by colour a little, so its first step may show a small lift.)"""
    cfg, ckpt, _ = tiny_checkpoint
    r = cliplab.queries(str(cfg), "shapes:shape", pretrained=str(ckpt), templates="a photo of a {}.",
                        chain="shapes", bootstrap=300, cache_dir=tmp_path, limit=400, **KW)
    stats = r.chain_stats(r.runs[0])
    assert any(s["AP_lift_ci"][0] <= 0 for s in stats), stats


def test_noun_swaps_share_each_top_k_between_the_classes(study):
    c = study.runs[0].contamination
    np.testing.assert_allclose(c.sum(1), 1.0)
    p10 = study.runs[0].metrics["a photo of a {}."].precision[10]
    np.testing.assert_allclose(np.diag(c), p10)  # the query's own class: its P@10
    assert any("contamination@10" == m for m in study.metrics.metric)


def test_the_paired_comparison_names_the_baseline_and_says_when_a_query_test_could_not_work(study):
    rows = study.metrics
    diff = rows[rows.metric == "mAP_diff_vs_baseline"]
    assert list(diff.variant) == ["a drawing of a {}."] and diff.ci_low.iloc[0] <= diff.ci_high.iloc[0]
    assert any("5 classes" in n and "0.0625" in n for n in study.notes)


def test_models_side_by_side(trained_cache):
    m = cliplab.load_model("tiny-shapes", cache_dir=trained_cache, **KW)
    r = cliplab.queries([m, m], "shapes:color", templates="a photo of a {}.", bootstrap=100, limit=200,
                        cache_dir=trained_cache, **KW)
    (ag,) = r.agreement()
    assert ag["overlap@10"] == 1.0 and ag["RBO"] == pytest.approx(1.0) and ag["mAP_diff"] == 0.0


def test_a_chain_over_a_users_folder_with_an_attribute_table(trained_cache, tmp_path):
    from conftest import make_image

    colours = {"red": (220, 30, 30), "blue": (30, 40, 220)}
    rows = ["image,attribute,value"]
    for c, rgb in colours.items():
        for size, px in (("small", 20), ("large", 56)):
            for j in range(3):
                name = f"{c}-{size}-{j}.png"
                make_image(tmp_path / "objs" / c / name, size=(px, px), color=rgb)
                rows += [f"{c}/{name},colour,{c}", f"{c}/{name},size,{size}"]
    (tmp_path / "attrs.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "chain.json").write_text(json.dumps({"steps": ["a {colour} thing", "a {size} {colour} thing"]}))
    r = cliplab.queries("tiny-shapes", str(tmp_path / "objs"), templates="a photo of a {}.",
                        chain=str(tmp_path / "chain.json"), attributes=str(tmp_path / "attrs.csv"), bootstrap=100,
                        cache_dir=trained_cache, **KW)
    stats = r.chain_stats(r.runs[0])
    assert [s["chains"] for s in stats] == [4, 4] and stats[1]["base_rate"] == pytest.approx(0.25)
    assert r.chain_queries[1][0] in {"a small red thing", "a large red thing", "a small blue thing",
                                     "a large blue thing"}


@pytest.mark.parametrize("kwargs,message", [
    (dict(baseline="a sketch of a {}."), "baseline 'a sketch of a {}.': not among the evaluated templates"),
    (dict(chain="nowhere.yaml"), "chain 'nowhere.yaml': not a chain file or a built-in chain"),
    (dict(ks=[0]), "ks 0: must be at least 1"),
    (dict(bootstrap=50), "bootstrap 50: must be at least 100"),
])
def test_errors_name_the_keyword(kwargs, message, trained_cache):
    with pytest.raises(CliplabError) as info:
        cliplab.queries("tiny-shapes", "shapes:shape", limit=50, cache_dir=trained_cache, **KW, **kwargs)
    assert message in str(info.value)


def test_chain_errors(trained_cache, tmp_path):
    bad = tmp_path / "chain.yaml"
    bad.write_text("steps: ['a {flavour} shape']\n")
    with pytest.raises(CliplabError, match=r"chain names attributes the dataset has no labels for \(flavour"):
        cliplab.queries("tiny-shapes", "shapes:shape", limit=50, chain=str(bad), cache_dir=trained_cache, **KW)
    bad.write_text("steps: [a {flavour} shape]\n")  # unquoted braces: YAML cannot parse it
    with pytest.raises(CliplabError, match="cannot parse"):
        cliplab.queries("tiny-shapes", "shapes:shape", limit=50, chain=str(bad), cache_dir=trained_cache, **KW)
    bad.write_text("steps: 3\n")
    with pytest.raises(CliplabError, match="expected 'steps': a list of templates"):
        cliplab.queries("tiny-shapes", "shapes:shape", limit=50, chain=str(bad), cache_dir=trained_cache, **KW)
    table = tmp_path / "a.csv"
    table.write_text("file,attr\nx,y\n")
    with pytest.raises(CliplabError, match="needs the columns image, attribute, value"):
        cliplab.queries("tiny-shapes", "shapes:shape", limit=50, chain="shapes", attributes=str(table),
                        cache_dir=trained_cache, **KW)
