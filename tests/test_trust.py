"""Trust by construction, by family (issue 22): no output writes over an input of its run (named outputs and every
file written beside them), an existing file is replaced only with the named output's warning, options that would
silently mean something else are errors (or warnings that say what happened), and the Python API refuses values of
the wrong type or outside their bounds with an error naming the keyword. Every case checks that the user's files are
unchanged (checksums before and after), apart from the outputs the case names."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cliplab
from cliplab import CliplabError
from cliplab.cli import app
from conftest import make_image

runner = CliRunner()
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A user's folder: a class folder with splits, a caption file beside its images, template / class-name /
    description / query files, and a results store."""
    d = tmp_path_factory.mktemp("trust")
    for split, n in (("train", 6), ("test", 4)):
        for c, colour in COLOURS.items():
            for j in range(n):
                make_image(d / "colours" / split / c / f"{split}-{c}{j}.png", size=(48, 48), color=colour)
    flat = d / "flat"
    for c, colour in COLOURS.items():
        for j in range(3):
            make_image(flat / c / f"{c}{j}.png", size=(48, 48), color=colour)
    caps = d / "caps"
    rows = ["image,caption"]
    for j, (c, colour) in enumerate(COLOURS.items()):
        make_image(caps / f"{j}.png", size=(48, 48), color=colour)
        rows.append(f"{j}.png,a {c} square")
    (caps / "caps.csv").write_text("\n".join(rows) + "\n")
    (d / "templates.json").write_text(json.dumps({"mine": ["a photo of a {}.", "a {} thing"]}))
    (d / "names.json").write_text(json.dumps(["red", "green", "blue"]))
    (d / "descriptions.json").write_text(json.dumps({c: [f"something {c}"] for c in COLOURS}))
    (d / "queries.txt").write_text("a red square\na blue square\n")
    return d


@pytest.fixture(scope="module")
def store(work, trained_cache):
    out = work / "store"
    res = runner.invoke(app, ["zeroshot", "-d", str(work / "flat"), "--results", str(out), "--quiet",
                              "--backend", "torch", "--cache-dir", str(trained_cache)])
    assert res.exit_code == 0, res.output
    return out


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(args, cache) -> tuple[int, list[str]]:
    res = runner.invoke(app, [*map(str, args), "--cache-dir", str(cache), "--backend", "torch", "--quiet"]
                        if args[0] != "report" else [*map(str, args), "--quiet"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert "Traceback" not in res.output and (res.exception is None or isinstance(res.exception, SystemExit)), \
        (args, res.output, res.exception)
    return res.exit_code, lines


def error_cases(w: Path, store: Path):
    """(case, CLI arguments, the flag the one error line must name, text it must hold)."""
    colours, flat, caps = w / "colours", w / "flat", w / "caps"
    return [
        ("captions table over the caption file", ["retrieval", "-d", caps / "caps.csv", "--captions",
                                                  caps / "caps.csv"], "--captions", "is an input of this run"),
        ("captions table over the caption file, relative spelling", ["retrieval", "-d", caps / "caps.csv",
                                                                     "--captions", caps / "." / "caps.csv"],
         "--captions", "is an input of this run"),
        ("JSON record over the templates file", ["zeroshot", "-d", flat, "-t", w / "templates.json", "-o",
                                                 w / "templates.json"], "--output", "is an input"),
        ("JSON record over the class names file", ["zeroshot", "-d", flat, "--classnames", w / "names.json", "-o",
                                                   w / "names.json"], "--output", "is an input"),
        ("prompt study JSON over the descriptions", ["prompts", "-d", flat, "--descriptions",
                                                     w / "descriptions.json", "-o", w / "descriptions.json"],
         "--output", "is an input"),
        ("embeddings sidecar over the caption file", ["embed", "-d", caps / "caps.csv", "-o", caps / "caps.npy"],
         None, None),  # caps.ids.csv is not caps.csv: allowed (checked below as a success)
        ("index over a dataset file", ["similar", "-d", caps / "caps.csv", "--index", caps / "caps.csv"],
         "--index", "is an input"),
        ("predictions over the caption file", ["zeroshot", "-d", caps / "caps.csv", "--predictions",
                                               caps / "caps.csv"], "--predictions", "is an input"),
        ("cluster grid among the dataset's images", ["cluster", "-d", flat, "--k", "3", "--grid",
                                                     flat / "red" / "grid.png"], "--grid", "among the images"),
        ("attack examples among the dataset's images", ["attack", "typographic", "-d", flat, "--examples",
                                                        flat / "blue" / "ex.png"], "--examples", "among the images"),
        ("similar query grid among the gallery's images", ["similar", "-d", flat, "--query",
                                                           flat / "red" / "red0.png", "--grid",
                                                           flat / "green" / "g.png"], "--grid", "among the images"),
        ("compare plot among the dataset's images", ["compare", "-d", flat, "--plot", flat / "red" / "bars"],
         "--plot", "among the images"),
        ("inspect figures into the inspected folder", ["inspect", flat / "red", "--figures", flat / "red"],
         "--figures", "among the images"),
        ("search grids into the dataset folder", ["search", "a red square", "-d", flat, "--grids", flat / "green"],
         "--grids", "among the images"),
        ("report rows into the store it reads", ["report", store, "-o", store / "report.html"], "--output",
         "results store"),
        ("report page alone into the store it reads", ["report", store, "-o", store / "page.html", "--no-exports"],
         None, None),  # an .html file is not a row file: allowed
        ("--split names a class folder", ["zeroshot", "-d", flat, "--split", "red"], "--split", "class folder"),
        ("--split names a class folder of a split", ["zeroshot", "-d", colours / "test", "--split", "red"],
         "--split", "class folder"),
        ("--split typo", ["zeroshot", "-d", colours, "--split", "tset"], "--split", "its splits: test, train"),
        ("k-shot above what a class has", ["probe", "-d", colours, "--split", "test", "--kshot", "8", "--no-linear"], "--kshot",
         "--allow-fewer"),
        ("--ks 0", ["retrieval", "-d", caps / "caps.csv", "--ks", "0,5"], "--ks", "at least 1"),
        ("--topk 0 (zeroshot)", ["zeroshot", "-d", flat, "--topk", "0"], "--topk", "at least 1"),
        ("--topk 0 (search)", ["search", "x", "-d", flat, "--topk", "0"], "--topk", "at least 1"),
        ("--topk 0 (similar)", ["similar", "-d", flat, "--topk", "0"], "--topk", "at least 1"),
        ("--topk 0 (inspect)", ["inspect", flat / "red", "--topk", "0"], "--topk", "at least 1"),
        ("--k 1 (one cluster)", ["cluster", "-d", flat, "--k", "1"], "--k", "at least 2"),
        ("--k 0,3", ["cluster", "-d", flat, "--k", "0,3"], "--k", "at least 2"),
        ("--seeds 0", ["probe", "-d", colours, "--split", "test", "--seeds", "0"], "--seeds", "at least 1"),
        ("--bootstrap 10", ["prompts", "-d", flat, "--bootstrap", "10"], "--bootstrap", "at least 100"),
        ("--val-fraction 0", ["probe", "-d", colours, "--split", "test", "--val-fraction", "0"], "--val-fraction", "between"),
        ("--limit 0", ["zeroshot", "-d", flat, "--limit", "0"], "--limit", "at least 1"),
        ("--batch-size -1", ["zeroshot", "-d", flat, "--batch-size", "-1"], "--batch-size", "at least 0"),
        ("--pipeline typo", ["zeroshot", "-d", flat, "--pipeline", "tensr"], "--pipeline", "did you mean"),
        ("--aggregate typo", ["prompts", "-d", flat, "--descriptions", w / "descriptions.json", "--aggregate",
                              "maxx"], "--aggregate", "did you mean"),
        ("--target typo", ["attack", "typographic", "-d", flat, "--target", "nxt"], "--target", "choose one of"),
        ("--descriptor typo", ["similar", "-d", flat, "--descriptor", "rmca"], "--descriptor", "did you mean"),
        ("--kmeans typo", ["cluster", "-d", flat, "--kmeans", "fais"], "--kmeans", "did you mean"),
        ("--index-type typo", ["search", "x", "-d", flat, "--index-type", "hnws"], "--index-type", "choose one of"),
        ("--grid without --query", ["similar", "-d", flat, "--grid", w / "g.png"], "--grid", "--query"),
    ]


CASES = [c[0] for c in error_cases(Path("/w"), Path("/s"))]


@pytest.mark.parametrize("case", CASES)
def test_outputs_and_options(case, work, store, trained_cache, tmp_path):
    _, args, flag, text = next(c for c in error_cases(work, store) if c[0] == case)
    before = checksums(work)
    code, lines = cli(args, trained_cache)
    if flag is None:  # an allowed case: no error, and no user file changed
        assert code == 0, lines
        written = set(checksums(work)) - set(before)
        assert {k: v for k, v in checksums(work).items() if k not in written} == before
        for name in written:  # what it wrote is gone again, so the other cases see the same folder
            (work / name).unlink()
        return
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert flag in lines[0] and text in lines[0], lines[0]
    assert checksums(work) == before  # nothing the user owns changed
    assert not (trained_cache / "embeddings" / "never").exists()


def test_an_existing_file_beside_a_named_output_gets_the_named_outputs_warning(work, trained_cache, tmp_path):
    out = tmp_path / "x.npy"
    side = tmp_path / "x.ids.csv"
    side.write_text("mine\n")
    res = runner.invoke(app, ["embed", "-d", str(work / "flat"), "-o", str(out), "--cache-dir", str(trained_cache),
                              "--backend", "torch", "--quiet"])
    assert res.exit_code == 0, res.output
    assert f"writes {side} beside it, which exists and will be replaced" in res.output
    assert side.read_text() != "mine\n"  # replaced as the warning said, only after the run finished
    # the same rule as for the named file itself
    res = runner.invoke(app, ["embed", "-d", str(work / "flat"), "-o", str(out), "--cache-dir", str(trained_cache),
                              "--backend", "torch", "--quiet"])
    assert f"--output {out} exists and will be replaced" in res.output


def test_report_exports_beside_the_page_are_guarded_like_the_page(work, store, tmp_path):
    page = tmp_path / "r.html"
    (tmp_path / "r.csv").write_text("mine\n")
    res = runner.invoke(app, ["report", str(store), "-o", str(page), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "writes" in res.output and "r.csv beside it, which exists and will be replaced" in res.output


def test_allow_fewer_trains_on_what_a_class_has_and_the_rows_say_so(work, trained_cache):
    r = cliplab.probe("tiny-shapes", str(work / "colours"), split="test", kshot=[8], seeds=1, linear=False, zeroshot_init=False,
                      allow_fewer=True, backend="torch", cache_dir=trained_cache, quiet=True)
    variants = set(r.metrics.variant)
    assert any("k=8 (fewer for 3 classes, min 5)" in v for v in variants), variants  # 6 a class, 1 held out
    with pytest.raises(CliplabError, match=r"^kshot 8: class '.*' has only 5 image\(s\)"):
        cliplab.probe("tiny-shapes", str(work / "colours"), split="test", kshot=[8], linear=False, backend="torch",
                      cache_dir=trained_cache, quiet=True)


def test_byte_identical_copies_across_train_and_test_are_refused(work, trained_cache, tmp_path):
    root = tmp_path / "copies"
    shutil.copytree(work / "colours", root)
    src = root / "test" / "red" / "test-red0.png"
    shutil.copy(src, root / "train" / "red" / "renamed-copy.png")  # the same bytes under another name
    for call in (lambda: cliplab.probe("tiny-shapes", str(root), split="test", kshot=[1], linear=False,
                                       backend="torch", cache_dir=trained_cache, quiet=True),
                 lambda: cliplab.prompts("tiny-shapes", str(root), split="test", select=True,
                                         templates=["{}", "a {}"], bootstrap=100, backend="torch",
                                         cache_dir=trained_cache, quiet=True)):
        with pytest.raises(CliplabError, match="same content as images of the evaluated split .*renamed-copy.png"):
            call()


def test_empty_class_folders_and_loose_images_are_named_in_a_warning(work, trained_cache, tmp_path):
    root = tmp_path / "loose"
    shutil.copytree(work / "flat", root)
    (root / "empty").mkdir()
    shutil.copy(work / "flat" / "red" / "red0.png", root / "stray.png")
    res = runner.invoke(app, ["zeroshot", "-d", str(root), "--cache-dir", str(trained_cache), "--backend", "torch",
                              "--quiet"])
    assert res.exit_code == 0, res.output
    assert "1 class folder(s) without images left out (empty)" in res.output
    assert "1 image(s) beside the class folders left out (e.g. stray.png)" in res.output


@pytest.mark.parametrize("names", [["red", "red", "blue"], ["Annual_Crop", "annual crop", "x"]])
def test_duplicate_class_names_are_refused(work, trained_cache, tmp_path, names):
    root = tmp_path / "dupes"
    for name, colour in zip(names, COLOURS.values()):
        make_image(root / f"folder{len(list(root.glob('*')))}" / "a.png", size=(40, 40), color=colour)
    names_file = tmp_path / "names.json"
    names_file.write_text(json.dumps([n.replace("_", " ").lower() for n in names]))
    with pytest.raises(CliplabError, match="duplicate class names"):
        cliplab.zeroshot("tiny-shapes", str(root), classnames=str(names_file), backend="torch",
                         cache_dir=trained_cache, quiet=True)


# ---- the Python API's types: a ParameterError naming the keyword, before any work ----

API_TYPE_CASES = [
    ("zeroshot", dict(limit=2.5), "limit 2.5: expected an integer, got float"),
    ("zeroshot", dict(limit="10"), "limit '10': expected an integer, got str"),
    ("zeroshot", dict(batch_size=2.5), "batch_size 2.5: expected an integer"),
    ("zeroshot", dict(topk=True), "topk True: expected an integer, got bool"),
    ("zeroshot", dict(templates=3), "templates 3: expected a string or a list of strings"),
    ("zeroshot", dict(ensemble="yes"), "ensemble 'yes': expected True or False"),
    ("zeroshot", dict(pipeline="tensr"), "pipeline 'tensr': choose one of pil, tensor, auto (did you mean"),
    ("zeroshot", dict(backend="ov"), "backend 'ov': choose one of"),
    ("zeroshot", dict(precision="fp8"), "precision 'fp8': choose one of"),
    ("zeroshot", dict(workers=-1), "workers -1: must be at least 0"),
    ("zeroshot", dict(model=3), "model int: expected a model name"),
    ("zeroshot", dict(dataset=3), "dataset int: expected a dataset spec"),
    ("probe", dict(seeds=1.0), "seeds 1.0: expected an integer, got float"),
    ("probe", dict(kshot="1,x"), "kshot '1,x': expected comma-separated integers"),
    ("probe", dict(kshot=[1.5]), "kshot [1.5]: expected integers"),
    ("probe", dict(kshot=[-1]), "kshot -1: must be at least 0"),
    ("probe", dict(val_fraction="0.2"), "val_fraction '0.2': expected a number, got str"),
    ("probe", dict(val_fraction=float("nan")), "val_fraction nan: expected a number, got NaN"),
    ("probe", dict(wd=-1.0), "wd -1.0: must be at least 0"),
    ("prompts", dict(bootstrap=99), "bootstrap 99: must be at least 100"),
    ("prompts", dict(aggregate="median"), "aggregate 'median': choose one of mean, max"),
    ("retrieval", dict(ks=[0]), "ks 0: must be at least 1"),
    ("retrieval", dict(ks="1,,x"), "ks '1,,x': expected comma-separated integers"),
    ("search", dict(k=0, query=["x"]), "k 0: must be at least 1"),
    ("search", dict(index_type="flt", query=["x"]), "index_type 'flt': choose one of"),
    ("search", dict(queries=["a red circle"]), "queries is a file"),
    ("similar", dict(descriptor="vlad"), "descriptor 'vlad': choose one of"),
    ("similar", dict(levels=0), "levels 0: must be at least 1"),
    ("similar", dict(gem_p=0.5), "gem_p 0.5: must be at least 1"),
    ("similar", dict(qe=-2), "qe -2: must be at least 0"),
    ("cluster", dict(k=[1]), "k 1: must be at least 2"),
    ("cluster", dict(kmeans="torch"), "kmeans 'torch': choose one of sklearn, faiss"),
    ("cluster", dict(per_cluster=0), "per_cluster 0: must be at least 1"),
    ("attack", dict(target="sideways"), "target 'sideways': choose one of random, next, most-confused"),
    ("attack", dict(font_size=2.0), "font_size 2.0: must be between 0.01 and 1"),
    ("attack", dict(n_examples=0), "n_examples 0: must be at least 1"),
    ("compare", dict(models=["tiny-shapes"]), "models is a file"),
    ("embed", dict(shard_batches=0), "shard_batches 0: must be at least 1"),
    ("load_dataset", dict(limit=-3), "limit -3: must be at least 1"),
    ("load_model", dict(compile="no"), "compile 'no': expected True or False"),
]


@pytest.mark.parametrize("function,kwargs,message", API_TYPE_CASES,
                         ids=[f"{f}-{next(iter(k))}" for f, k, _ in API_TYPE_CASES])
def test_api_values_of_the_wrong_type_or_out_of_bounds(function, kwargs, message, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(CliplabError) as info:
        getattr(cliplab, function)(**kwargs, cache_dir=cache, quiet=True)
    assert message in str(info.value), str(info.value)
    assert not (cache / "embeddings").exists() and not (cache / "models").exists()  # before any work
