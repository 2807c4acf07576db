"""Image->image retrieval and clustering: regions, whitening, AP with junk, purity, hooks, CLI."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cliplab.cli import app
from cliplab.tasks.clustering import kmeans, purity
from cliplab.tasks.image_retrieval import (Whitening, average_precision, average_query_expansion,
                                           labelled_retrieval_metrics, precision_and_ap_at_k, rmac_aggregate)
from cliplab.tasks.pooling import gem, mac, region_max, rmac_regions

runner = CliRunner()


def _overlap(a, b, axis):
    (ya, xa, ha, wa), (yb, xb, _, _) = a, b
    s0, l0, s1 = (ya, ha, yb) if axis == 0 else (xa, wa, xb)
    return max(0, s0 + l0 - s1) / l0


def test_rmac_regions_count_and_overlap():
    assert len(rmac_regions(7, 7, levels=3)) == 1 + 4 + 9  # l x l regions at level l on a square map
    r = rmac_regions(30, 30, levels=3)
    assert len(r) == 14 and r[0] == (0, 0, 30, 30)
    assert r[1][2] == 20 and r[5][2] == 15  # side 2 * min(H, W) / (l + 1)
    for lvl_regions in (r[1:5], r[5:]):
        side = lvl_regions[0][2]
        assert all(reg[2] == reg[3] == side for reg in lvl_regions)
        xs = sorted({reg[1] for reg in lvl_regions})
        ovl = [_overlap((0, a, side, side), (0, b, side, side), 1) for a, b in zip(xs, xs[1:])]
        # the region count closest to 40 % overlap that still covers the map: 50 % (+- a cell) on a square map
        assert all(0.4 <= o <= 0.55 for o in ovl), ovl
    wide = rmac_regions(10, 30, levels=1)
    assert len(wide) > 1 and all(y == 0 and h == 10 for y, _, h, _ in wide)  # more regions along the long side
    covered = np.zeros((10, 30), bool)
    for y, x, h, w in wide:
        assert 0 <= x and x + w <= 30
        covered[y:y + h, x:x + w] = True
    assert covered.all()


def test_pooling_by_hand():
    f = torch.zeros(1, 2, 3, 3)
    f[0, 0, 2, 2] = 5.0
    f[0, 1] = 1.0
    f[0, 1, 0, 0] = 3.0
    assert mac(f).tolist() == [[5.0, 3.0]]
    assert region_max(f, [(0, 0, 2, 2)]).tolist() == [[[0.0, 3.0]]]
    g1 = gem(f.clamp(min=0) + 1.0, p=1.0)
    assert torch.allclose(g1, (f + 1.0).mean(dim=(2, 3)))
    assert torch.allclose(gem(f, p=50.0), mac(f), rtol=0.1)  # large p approaches max


def test_whitening_gives_identity_covariance_on_fit_set():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16)) + 3.0
    w = Whitening.fit(X, dim=8)
    Z = w.transform(X, normalize=False)
    assert Z.shape == (500, 8)
    np.testing.assert_allclose(np.cov(Z, rowvar=False), np.eye(8), atol=1e-3)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-4)


def test_rmac_aggregate_sums_whitened_regions():
    regions = np.abs(np.random.default_rng(1).normal(size=(3, 4, 5))).astype(np.float32)
    out = rmac_aggregate(regions)
    unit = regions / np.linalg.norm(regions, axis=2, keepdims=True)
    ref = unit.sum(1)
    np.testing.assert_allclose(out, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-6)


def test_average_precision_oxford_protocol_by_hand():
    # ranking: 10(pos) 11(junk) 12(neg) 13(pos) -> junk removed: pos at ranks 0 and 2 (0-based)
    # trapezoid: j=0,r=0: (1 + 1)/2 = 1 ; j=1,r=2: (1/2 + 2/3)/2 = 7/12 ; AP = (1 + 7/12) / 2 = 19/24
    assert average_precision(np.array([10, 11, 12, 13]), [10, 13], junk=[11]) == pytest.approx(19 / 24)
    # without removing junk, the junk image costs precision
    assert average_precision(np.array([10, 11, 12, 13]), [10, 13]) < 19 / 24
    assert average_precision(np.array([1, 2]), [3]) == 0.0  # positive never retrieved
    p, ap = precision_and_ap_at_k(np.arange(5), np.array([1, 0, 1, 0, 0], bool), k=4, n_relevant=3)
    assert p == 0.5 and ap == pytest.approx((1 + 2 / 3) / 3)


def test_labelled_metrics_and_query_expansion():
    X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    y = np.array([0, 0, 1, 1])
    m = labelled_retrieval_metrics(X, y, k=1)
    assert m["mAP"] == 1.0 and m["P@1"] == 1.0
    q = average_query_expansion(X[:1], X, 2)
    assert np.allclose(np.linalg.norm(q, axis=1), 1) and q[0, 0] > q[0, 1]


def test_purity_and_kmeans_recover_blobs():
    assert purity(np.array([0, 0, 1, 1, 1]), np.array([5, 5, 5, 7, 7])) == pytest.approx(4 / 5)
    rng = np.random.default_rng(0)
    centers = np.eye(4, 8) * 5
    y = np.repeat(np.arange(4), 50)
    X = centers[y] + rng.normal(size=(200, 8)) * 0.3
    for backend in ("sklearn", "faiss"):
        c = kmeans(X, 4, implementation=backend, labels=y)
        assert c.metrics["nmi"] > 0.99 and c.metrics["ari"] > 0.99 and c.metrics["purity"] == 1.0


@pytest.mark.parametrize("pooling", ["mac", "rmac", "gem"])
def test_descriptor_hook_on_vit_matches_manual_tokens(tiny_checkpoint, cache_dir, pooling):
    from cliplab.embed.descriptors import DescriptorSpec, make_encoder, region_count
    from cliplab.models import open_model

    cfg, ckpt, ref = tiny_checkpoint
    m = open_model(str(cfg), str(ckpt), device="cpu", cache_dir=cache_dir)
    px = torch.rand(2, 3, 64, 64)
    out = make_encoder(m, DescriptorSpec(pooling))(px)
    grabbed = {}
    h = ref.visual.transformer.register_forward_hook(lambda mod, i, o: grabbed.setdefault("t", o))
    with torch.no_grad():
        ref.encode_image(px)
    h.remove()
    fmap = grabbed["t"][:, 1:, :].transpose(1, 2).reshape(2, -1, 4, 4)  # 64 px / 16 px patches = 4 x 4
    ref_vec = {"mac": mac(fmap), "gem": gem(fmap),
               "rmac": region_max(fmap, rmac_regions(4, 4)).flatten(1)}[pooling]
    np.testing.assert_allclose(out, ref_vec.numpy(), rtol=1e-4, atol=1e-5)
    assert region_count(m, DescriptorSpec(pooling)) == (len(rmac_regions(4, 4)) if pooling == "rmac" else 1)


def _gt_folder(tmp_path, ds):
    """Oxford-format ground truth over a labelled folder: query = first image of a class, good = same class."""
    from pathlib import Path

    gt = tmp_path / "gt"
    gt.mkdir()
    stems = [Path(ds.source.id(i)).stem for i in range(len(ds))]
    for c in range(2):
        members = [stems[i] for i in range(len(ds)) if ds.labels[i] == c]
        (gt / f"q{c}_query.txt").write_text(f"oxc1_{members[0]} 0 0 40 40\n")
        (gt / f"q{c}_good.txt").write_text("\n".join(members[1:3]))
        (gt / f"q{c}_ok.txt").write_text("\n".join(members[3:]))
        (gt / f"q{c}_junk.txt").write_text(members[0])
    return gt


@pytest.mark.slow
def test_similar_and_cluster_cli(trained_cache, tmp_path):
    from conftest import make_image

    from cliplab.data import open_dataset

    for c, colour in enumerate([(220, 30, 30), (30, 60, 220)]):
        for j in range(6):
            make_image(tmp_path / "gal" / f"class{c}" / f"img{c}{j}.png", size=(64, 64), color=colour)
    ds = open_dataset(str(tmp_path / "gal"), cache_dir=trained_cache)
    gt = _gt_folder(tmp_path, ds)
    base = ["similar", "-d", str(tmp_path / "gal"), "--cache-dir", str(trained_cache), "-q"]
    res = runner.invoke(app, base + ["--descriptor", "rmac", "--gt", str(gt), "-o", str(tmp_path / "s.json"),
                                     "--index", str(tmp_path / "g.faiss"), "--pca-dim", "8"])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "s.json").read_text())
    assert rec["metrics"]["queries"] == 2 and rec["metrics"]["mAP"] > 0.9  # red vs blue is easy
    assert (tmp_path / "g.faiss").is_file() and (tmp_path / "g.faiss.pca.npz").is_file()
    q = str(next((tmp_path / "gal" / "class0").glob("*.png")))
    res = runner.invoke(app, base + ["--descriptor", "mac", "--query", q, "-k", "3", "--grid",
                                     str(tmp_path / "q.png")])
    assert res.exit_code == 0, res.output and (tmp_path / "q.png").is_file()
    assert "mAP@3" in res.output
    bad = runner.invoke(app, base + ["--descriptor", "vlad"])
    assert bad.exit_code == 2 and "--descriptor" in bad.output
    res = runner.invoke(app, ["cluster", "-d", str(tmp_path / "gal"), "--k", "2,3", "--grid",
                              str(tmp_path / "c.png"), "-o", str(tmp_path / "c.csv"), "--cache-dir",
                              str(trained_cache), "-q"])
    assert res.exit_code == 0, res.output
    import pandas as pd

    df = pd.read_csv(tmp_path / "c.csv")
    assert len(df) == 12 and {"cluster_k2", "cluster_k3"} <= set(df.columns)
    assert df.groupby("label").cluster_k2.nunique().max() == 1  # each colour in one cluster


# ---- Oxford / revisited Oxford protocols (hand-computed) --------------------------------------------------------
def _q(name, easy, hard, junk):
    from cliplab.data.oxford import OxfordQuery

    e, h, j = ([f"a{i}" if isinstance(i, int) else i for i in x] for x in (easy, hard, junk))
    return OxfordQuery(name, "a0", None, e, h, j, easy=e, hard=h)


POSITION = {f"a{i}": i for i in range(10)}
RANK_1 = np.array([3, 7, 1, 9, 0, 2, 4, 5, 6, 8])
RANK_2 = np.array([2, 5, 0, 1, 3, 4, 6, 7, 8, 9])


def test_revisited_protocols_by_hand():
    from cliplab.studies.image_retrieval import gt_metrics

    # q1: easy a3, a0; hard a1 and 'zz' (not in the gallery); junk a7.  q2: no easy, hard a5.
    queries = [_q("q1", [3, 0], [1, "zz"], [7]), _q("q2", [], [5], [])]
    m, notes = gt_metrics(queries, np.stack([RANK_1, RANK_2]), POSITION)
    # Easy, q1: positives {3, 0}, ignored {7, 1, zz}: ranking 3 9 0 ... -> ranks 0, 2:
    #   AP = [(1 + 1)/2 + (1/2 + 2/3)/2] / 2 = 19/24 ; P@1 = 1 ; P@5 = P@10 = 2/3 (k cut at the last positive, 3)
    #   q2 has no easy positive: left out of the Easy means
    assert m["mAP_easy"] == pytest.approx(19 / 24)
    assert (m["mP@1_easy"], m["mP@5_easy"], m["mP@10_easy"]) == pytest.approx((1, 2 / 3, 2 / 3))
    assert m["queries_without_positives_easy"] == 1 and np.isnan(m["per_query_ap_easy"]["q2"])
    # Medium, q1: positives {3, 0, 1, zz}, junk {7}: ranking 3 1 9 0 ... -> ranks 0, 1, 3; zz is a miss (n = 4):
    #   AP = [1 + 1 + (2/3 + 3/4)/2] / 4 = 65/96 (65/72 if the missing positive were dropped)
    # Medium, q2: positive 5 at rank 1: AP = (0 + 1/2)/2 = 1/4 ; P@1 = 0 ; P@5 = P@10 = 1/2 (k cut at 2)
    assert m["per_query_ap_medium"]["q1"] == pytest.approx(65 / 96)
    assert m["mAP_medium"] == pytest.approx((65 / 96 + 1 / 4) / 2)
    assert (m["mP@1_medium"], m["mP@5_medium"], m["mP@10_medium"]) == pytest.approx((1 / 2, (3 / 4 + 1 / 2) / 2,
                                                                                      (3 / 4 + 1 / 2) / 2))
    # Hard, q1: positives {1, zz}, ignored {7, 3, 0}: ranking 1 9 2 ... -> rank 0, zz missed: AP = 1/2, P@k = 1
    # Hard, q2: as Medium (no easy images to ignore): 1/4
    assert m["mAP_hard"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert (m["mP@1_hard"], m["mP@5_hard"], m["mP@10_hard"]) == pytest.approx((1 / 2, 3 / 4, 3 / 4))
    assert m["queries_without_positives_medium"] == 0 and "mAP" not in m
    assert any("not in the gallery" in n and "'zz'" in n for n in notes)
    assert any("Easy" in n or "easy" in n for n in notes if "no positives" in n)


def test_classic_oxford_missing_positive_is_a_miss():
    from cliplab.data.oxford import OxfordQuery
    from cliplab.studies.image_retrieval import gt_metrics

    # good a3, ok a0 + 'gone' (not in the gallery), junk a7: ranking without junk 3 1 9 0 -> ranks 0, 3 of n = 3
    # AP = [1 + (1/3 + 2/4)/2] / 3 = 17/36 ; P@1 = 1 ; P@5 = P@10 = 2/4 (k cut at 4)
    q = OxfordQuery("q", "a3", None, ["a3"], ["a0", "gone"], ["a7"])
    m, notes = gt_metrics([q], RANK_1[None], POSITION)
    assert m["mAP"] == pytest.approx(17 / 36) and m["per_query_ap"]["q"] == pytest.approx(17 / 36)
    assert (m["mP@1"], m["mP@5"], m["mP@10"]) == pytest.approx((1, 1 / 2, 1 / 2))
    assert notes and "'gone'" in notes[0]
    # no positives at all: excluded, mean over the rest
    empty = OxfordQuery("e", "a3", None, [], [], ["a1"])
    m2, _ = gt_metrics([q, empty], np.stack([RANK_1, RANK_1]), POSITION)
    assert m2["mAP"] == pytest.approx(17 / 36) and m2["queries_without_positives"] == 1


def test_gt_map_matches_a_direct_implementation_of_revisitop():
    """Random rankings and ground truths against a transcription of the benchmark's loop (junk shifts ranks)."""
    from cliplab.tasks.image_retrieval import gt_map

    def reference(ranking, pos, junk, kappas):
        positions = np.flatnonzero(np.isin(ranking, pos))
        jpos = np.flatnonzero(np.isin(ranking, junk))
        ranks = np.array([p - (jpos < p).sum() for p in positions])
        ap = 0.0
        for j, r in enumerate(ranks):
            ap += ((1.0 if r == 0 else j / r) + (j + 1) / (r + 1)) / 2 / len(pos)
        p1 = ranks + 1
        return ap, [(p1 <= min(p1.max(), k)).sum() / min(p1.max(), k) for k in kappas]

    rng = np.random.default_rng(0)
    for _ in range(30):
        ranking = rng.permutation(50)
        ids = rng.permutation(60)  # ids >= 50 are not in the ranking (missing from the gallery)
        pos, junk = ids[:rng.integers(1, 12)], ids[20:20 + rng.integers(0, 8)]
        if not np.isin(ranking, pos).any():
            continue
        m = gt_map([ranking], [(pos, junk)])
        ap, prs = reference(ranking, pos, junk, (1, 5, 10))
        assert m["mAP"] == pytest.approx(ap) and [m["mP@1"], m["mP@5"], m["mP@10"]] == pytest.approx(prs)


def _write_gnd(path, imlist, qimlist, gnd, np_arrays=True):
    import pickle

    conv = (lambda v: np.asarray(v)) if np_arrays else list
    data = {"imlist": imlist, "qimlist": qimlist,
            "gnd": [{k: conv(v) for k, v in g.items()} for g in gnd]}
    path.write_bytes(pickle.dumps(data))
    return path


@pytest.mark.parametrize("np_arrays", [True, False])
def test_read_revisited_gnd_pickle(tmp_path, np_arrays):
    from cliplab.data.oxford import read_oxford_gt

    p = _write_gnd(tmp_path / "gnd_roxford5k.pkl", ["a0", "a1", "a2", "a3"], ["a0"],
                   [{"bbx": [1.0, 2.0, 30.0, 40.0], "easy": [1], "hard": [2, 3], "junk": [0]}], np_arrays)
    (q,) = read_oxford_gt(p, {"a0", "a1", "a2", "a3"})
    assert q.revisited and q.image == "a0" and q.box == (1.0, 2.0, 30.0, 40.0)
    assert (q.easy, q.hard, q.junk) == (["a1"], ["a2", "a3"], ["a0"])


def test_revisited_gnd_pickle_refuses_code_and_bad_content(tmp_path):
    import os
    import pickle

    from cliplab.data.oxford import read_oxford_gt
    from cliplab.errors import DatasetError

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": Evil()}))
    with pytest.raises(DatasetError, match="refusing to load"):
        read_oxford_gt(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()
    bad = _write_gnd(tmp_path / "bad.pkl", ["a0"], ["a0"], [{"easy": [5], "hard": [], "junk": []}])
    with pytest.raises(DatasetError, match="outside imlist"):
        read_oxford_gt(bad)
    (tmp_path / "gt.txt").write_text("x")
    with pytest.raises(DatasetError, match="gnd_"):
        read_oxford_gt(tmp_path / "gt.txt")
    ok = _write_gnd(tmp_path / "ok.pkl", ["a0", "a1"], ["b9"], [{"easy": [1], "hard": [], "junk": []}])
    with pytest.raises(DatasetError, match="not in the gallery"):
        read_oxford_gt(ok, {"a0", "a1"})


def _colour_gallery(tmp_path):
    from conftest import make_image

    for c, colour in enumerate([(220, 30, 30), (30, 60, 220)]):
        for j in range(5):
            make_image(tmp_path / "gal" / f"class{c}" / f"img{c}{j}.png", size=(64, 64), color=colour)
    return tmp_path / "gal"


def test_run_similar_counts_missing_positives_as_misses(tiny_checkpoint, cache_dir, tmp_path):
    """Regression: a ground-truth positive missing from the gallery was dropped from the AP denominator."""
    from cliplab.data import open_dataset
    from cliplab.embed.descriptors import DescriptorSpec
    from cliplab.models import open_model
    from cliplab.inputs import RunOptions
    from cliplab.studies.image_retrieval import retrieve_similar

    cfg, ckpt, _ = tiny_checkpoint
    m = open_model(str(cfg), str(ckpt), device="cpu", cache_dir=cache_dir)
    ds = open_dataset(str(_colour_gallery(tmp_path)), cache_dir=cache_dir)
    full, extra = tmp_path / "full", tmp_path / "extra"
    for d, more in ((full, []), (extra, ["not_in_gallery"])):
        d.mkdir()
        for c in range(2):
            (d / f"q{c}_query.txt").write_text(f"img{c}0\n")
            (d / f"q{c}_good.txt").write_text("\n".join([f"img{c}{j}" for j in (1, 2)] + more))
            (d / f"q{c}_ok.txt").write_text(f"img{c}3")
    runs = [retrieve_similar(m, ds, DescriptorSpec("global"), RunOptions.of(cache_dir, workers=0), gt=g,
                             crop_queries=False) for g in (full, extra)]
    for q in ("q0", "q1"):  # the same trapezoids over 4 instead of 3 positives
        a, b = (r.scores["per_query_ap"][q] for r in runs)
        assert 0 < a and b == pytest.approx(a * 3 / 4)
    assert runs[1].scores["mAP"] == pytest.approx(runs[0].scores["mAP"] * 3 / 4)
    assert any("not_in_gallery" in n for n in runs[1].notes) and not runs[0].notes


def test_similar_cli_reports_the_three_protocols(tiny_checkpoint, cache_dir, tmp_path):
    cfg, ckpt, _ = tiny_checkpoint
    gal = _colour_gallery(tmp_path)
    imlist = [f"img{c}{j}" for c in range(2) for j in range(5)]
    gnd = _write_gnd(tmp_path / "gnd_test.pkl", imlist, ["img00", "img10"],
                     [{"bbx": [0, 0, 40, 40], "easy": [1, 2], "hard": [3, 4], "junk": [0]},
                      {"bbx": [0, 0, 40, 40], "easy": [6, 7], "hard": [8, 9], "junk": [5]}])
    res = runner.invoke(app, ["similar", "--model", str(cfg), "--pretrained", str(ckpt), "-d", str(gal),
                              "--gt", str(gnd), "--cache-dir", str(cache_dir), "-q", "-o", str(tmp_path / "s.json"),
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert all(p in res.output for p in ("Easy", "Medium", "Hard", "mP@10"))
    m = json.loads((tmp_path / "s.json").read_text())["metrics"]
    assert {f"{k}_{p}" for k in ("mAP", "mP@1", "mP@5", "mP@10") for p in ("easy", "medium", "hard")} <= set(m)
    assert all(0 <= m[f"mAP_{p}"] <= 1 for p in ("easy", "medium", "hard"))
