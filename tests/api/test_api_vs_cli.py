"""The Python API gives the CLI's numbers: every study run both ways on the same inputs (tiny-shapes, small subsets
of shapes, one cache) has the same metric rows (keys, values, CIs, n, fingerprints), the same stored ``command`` and
``config``, the same ``--output`` JSON as ``.to_json()`` (apart from what changes on every run: timings, versions,
timestamps), and ``embed`` the array ``cliplab embed -o`` writes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from golden.harness import VOLATILE_KEYS, _images

runner = CliRunner()

LIMIT = 60
KEY = ["task", "model", "dataset", "split", "variant", "metric_name", "seed"]  # metric_name: the store's name, one per number
COMPARED = ["value", "ci_low", "ci_high", "n", "pretrained", "model_fingerprint", "dataset_fingerprint"]
TIMING_METRICS = {"images_per_second"}  # wall-clock: differs between any two runs
VOLATILE = VOLATILE_KEYS  # timestamps, versions, timings


@pytest.fixture(scope="module")
def work(tmp_path_factory, trained_cache):
    """One cache for both sides (so both see the same embeddings), the query images, a prompts file."""
    d = tmp_path_factory.mktemp("api-vs-cli")
    images = _images(d)
    prompts = d / "prompts.txt"
    prompts.write_text("a red circle\na blue square\na green shape\n")
    return {"dir": d, "cache": trained_cache, "images": [str(p) for p in images], "prompts": str(prompts)}


def cases(w) -> dict[str, tuple[list[str], callable, bool]]:
    """name -> (CLI arguments, the same call in Python, whether the command writes an --output JSON record)."""
    img, imgs, common = w["images"], w["images"], dict(backend="torch", cache_dir=w["cache"], quiet=True)
    lim = ["--limit", str(LIMIT)]
    return {
        "zeroshot": (["zeroshot", "-d", "shapes:color", *lim, "-t", "simple", "-t", "openai-cifar", "--topk", "3"],
                     lambda: cliplab.zeroshot("tiny-shapes", "shapes:color", limit=LIMIT,
                                              templates=["simple", "openai-cifar"], topk=3, **common), True),
        "zeroshot_ensemble": (["zeroshot", "-d", "shapes:shape", *lim, "-t", "simple", "-t", "openai-cifar",
                               "--ensemble"],
                              lambda: cliplab.zeroshot("tiny-shapes", "shapes:shape", limit=LIMIT, ensemble=True,
                                                       templates=["simple", "openai-cifar"], **common), True),
        "prompts": (["prompts", "-d", "shapes:color", *lim, "--bootstrap", "100", "--select", "--seed", "3",
                     "-t", "simple", "-t", "openai-cifar"],
                    lambda: cliplab.prompts("tiny-shapes", "shapes:color", limit=LIMIT, bootstrap=100, select=True,
                                            seed=3, templates=["simple", "openai-cifar"], **common), True),
        "probe": (["probe", "-d", "shapes:color", *lim, "--train-limit", "120", "--kshot", "1,2", "--seeds", "1",
                   "--wd", "0.01", "--no-zeroshot-init"],
                  lambda: cliplab.probe("tiny-shapes", "shapes:color", limit=LIMIT, train_limit=120, kshot="1,2",
                                        seeds=1, wd=0.01, zeroshot_init=False, **common), True),
        "compare": (["compare", "-m", "tiny-shapes", "-d", "shapes:color", "-d", "shapes:size", *lim],
                    lambda: cliplab.compare("tiny-shapes", ["shapes:color", "shapes:size"], limit=LIMIT, **common),
                    False),
        "inspect": (["inspect", *imgs, "-d", "shapes:color", "--topk", "3"],
                    lambda: cliplab.inspect("tiny-shapes", imgs, dataset="shapes:color", topk=3, **common), False),
        "inspect_default_classes": (["inspect", *imgs],
                                    lambda: cliplab.inspect("tiny-shapes", imgs, **common), False),
        "inspect_prompts": (["inspect", *imgs, "--prompts", w["prompts"]],
                            lambda: cliplab.inspect("tiny-shapes", imgs, prompts=w["prompts"], **common), False),
        "attack": (["attack", "typographic", "-d", "shapes:color", *lim, "--target", "next", "--text",
                    "this is {}", "--seed", "2"],
                   lambda: cliplab.attack("tiny-shapes", "shapes:color", limit=LIMIT, target="next",
                                          text="this is {}", seed=2, **common), True),
        "retrieval": (["retrieval", *lim, "--ks", "1,5"],
                      lambda: cliplab.retrieval("tiny-shapes", "shapes", limit=LIMIT, ks=[1, 5], **common), True),
        "search": (["search", "a red circle", "a small blue square", "-d", "shapes:color", *lim, "-k", "4",
                    "--image", img[0], "--plus", "blue"],
                   lambda: cliplab.search("tiny-shapes", "shapes:color", ["a red circle", "a small blue square"],
                                          image=img[0], plus="blue", limit=LIMIT, k=4, **common), False),
        "similar": (["similar", "-d", "shapes:color", *lim, "--pca-dim", "16", "--qe", "2", "-k", "5",
                     "--query", img[1]],
                    lambda: cliplab.similar("tiny-shapes", "shapes:color", limit=LIMIT, pca_dim=16, qe=2, k=5,
                                            query=img[1], **common), True),
        "similar_rmac": (["similar", "-d", "shapes:shape", *lim, "--descriptor", "rmac", "--levels", "2"],
                         lambda: cliplab.similar("tiny-shapes", "shapes:shape", limit=LIMIT, descriptor="rmac",
                                                 levels=2, **common), True),
        "queries": (["queries", "-d", "shapes:shape", *lim, "-t", "a photo of a {}.", "-t", "a {} shape",
                     "--chain", "shapes", "--bootstrap", "100", "--ks", "3,5"],
                    lambda: cliplab.queries("tiny-shapes", "shapes:shape", limit=LIMIT,
                                            templates=["a photo of a {}.", "a {} shape"], chain="shapes",
                                            bootstrap=100, ks=[3, 5], **common), True),
        "cluster": (["cluster", "-d", "shapes:color", *lim, "--k", "3,6", "--pca-dim", "8", "--seed", "1"],
                    lambda: cliplab.cluster("tiny-shapes", "shapes:color", limit=LIMIT, k=[3, 6], pca_dim=8,
                                            seed=1, **common), False),
    }


NAMES = ["zeroshot", "zeroshot_ensemble", "prompts", "probe", "compare", "inspect", "inspect_default_classes",
         "inspect_prompts", "attack", "retrieval", "search", "similar", "similar_rmac", "queries", "cluster"]


def run_cli(args: list[str], cache) -> None:
    result = runner.invoke(app, [*map(str, args), "--cache-dir", str(cache), "--backend", "torch", "--quiet"])
    assert result.exit_code == 0, f"cliplab {' '.join(map(str, args))} failed:\n{result.output}\n{result.exception!r}"


def keyed(rows: pd.DataFrame) -> pd.DataFrame:
    """Metric rows indexed by their key, timing metrics left out, missing values as NaN (one spelling)."""
    rows = rows[~rows.metric.isin(TIMING_METRICS)].copy()
    rows["seed"] = rows["seed"].astype("Int64").astype(str)
    rows["split"] = rows["split"].astype(str)
    rows["n"] = rows["n"].astype("Int64").astype("float64")
    for c in ("value", "ci_low", "ci_high"):
        rows[c] = pd.to_numeric(rows[c], errors="coerce").astype("float64")
    for c in ("pretrained", "model_fingerprint", "dataset_fingerprint"):
        rows[c] = rows[c].fillna("").astype(str)
    return rows.set_index(KEY)[COMPARED].sort_index()


def assert_same_rows(cli: pd.DataFrame, api: pd.DataFrame) -> None:
    a, b = keyed(cli), keyed(api)
    assert not a.index.duplicated().any(), "the CLI's rows have duplicate keys"
    assert list(a.index) == list(b.index), (f"different keys\nCLI only: {sorted(set(a.index) - set(b.index))[:10]}"
                                            f"\nAPI only: {sorted(set(b.index) - set(a.index))[:10]}")
    for col in COMPARED:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype.kind == "f":
            same = (x == y) | (np.isnan(x) & np.isnan(y))
        else:
            same = x == y
        bad = [(k, u, v) for k, u, v, s in zip(a.index, x, y, same) if not s]
        assert not bad, f"{col} differs (key, CLI, API): {bad[:5]}"


def strip(obj):
    """A JSON document without what changes on every run."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return "NaN"
    return obj


@pytest.mark.parametrize("name", NAMES)
def test_api_gives_the_cli_metric_rows(work, name, tmp_path):
    args, call, has_record = cases(work)[name]
    store, record = tmp_path / "store", tmp_path / "record.json"
    run_cli([*args, "--results", store, "--results-format", "jsonl", *(["-o", record] if has_record else [])],
            work["cache"])
    cli_rows = cliplab.read_results(store)
    assert len(cli_rows) > 0
    r = call()
    assert_same_rows(cli_rows[cli_rows.metric != "figure"], r.metrics)
    if has_record:
        assert strip(json.loads(r.to_json())) == strip(json.loads(record.read_text()))
    # its own store holds the same rows, under the function's name as the command
    r.save(tmp_path / "api-store", format="jsonl")
    saved = cliplab.read_results(tmp_path / "api-store")
    assert_same_rows(cli_rows[cli_rows.metric != "figure"], saved)
    assert set(saved.command) == {r.command} == set(cli_rows.command)  # attack: "attack-typographic" both ways
    # the same config, whichever door: every declared parameter by its library name, models and datasets as named
    assert {json.dumps(json.loads(c), sort_keys=True) for c in cli_rows.config} == \
        {json.dumps(r.config, sort_keys=True)} == {json.dumps(json.loads(c), sort_keys=True) for c in saved.config}
    # and every study exports and shows itself: JSON, the summary and tables as text, and as HTML
    assert json.loads(r.to_json())["config"] == r.config
    assert repr(r).startswith(r.summary()) and "<table>" in r._repr_html_()


def test_embed_gives_the_array_cliplab_embed_writes(work, tmp_path):
    out = tmp_path / "x.npy"
    run_cli(["embed", "-d", "shapes:color", "--limit", str(LIMIT), "-o", out], work["cache"])
    X = cliplab.embed("tiny-shapes", "shapes:color", limit=LIMIT, backend="torch", cache_dir=work["cache"], quiet=True)
    np.testing.assert_array_equal(X, np.load(out))
    ids = pd.read_csv(tmp_path / "x.ids.csv")
    frame = cliplab.embed("tiny-shapes", "shapes:color", limit=LIMIT, backend="torch", cache_dir=work["cache"],
                          quiet=True, frame=True)
    assert list(frame["id"]) == list(ids["id"]) and list(frame["label"]) == list(ids["label"])


def test_the_comparison_sees_a_changed_number_and_a_missing_row():
    """assert_same_rows itself: equal frames pass; a changed value, a NaN against a number, or a lost row fail."""
    rows = pd.DataFrame({"task": ["t", "t"], "model": "m", "dataset": "d", "split": "test", "variant": "",
                         "metric": ["a", "b"], "value": [0.5, float("nan")], "ci_low": None, "ci_high": None,
                         "seed": pd.array([None, None], dtype="Int64"), "n": pd.array([10, 10], dtype="Int64"),
                         "pretrained": "", "model_fingerprint": "f", "dataset_fingerprint": "g"})
    rows["metric_name"] = rows["metric"]
    assert_same_rows(rows, rows.copy())
    for broken in (rows.assign(value=[0.5 + 1e-12, float("nan")]), rows.assign(value=[0.5, 0.0]), rows.iloc[:1],
                   rows.assign(n=pd.array([10, 11], dtype="Int64"))):
        with pytest.raises(AssertionError):
            assert_same_rows(rows, broken)
