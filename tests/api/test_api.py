"""The Python API as a notebook user meets it: errors are exceptions that name the keyword, progress is tqdm bars
(none with quiet=True) and warnings are Python warnings, results show themselves (text, HTML with figures) and
export (JSON, parquet, a results store), models and datasets go in as objects or strings, and the keywords are the
CLI's flags."""
from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cliplab
from cliplab import CliplabError
from cliplab.progress import CliplabWarning, NotebookProgress, use, warn
from cliplab.report import notebook
from cliplab.report.notebook import Notebook
from cliplab.results.result import pct
from golden.harness import _images

LIMIT = 60


@pytest.fixture(scope="module")
def cache(trained_cache):
    return trained_cache


@pytest.fixture(scope="module")
def model(cache):
    return cliplab.load_model("tiny-shapes", backend="torch", cache_dir=cache, quiet=True)


@pytest.fixture(scope="module")
def color(cache):
    return cliplab.load_dataset("shapes:color", limit=LIMIT, cache_dir=cache)


@pytest.fixture(scope="module")
def zs(model, color, cache):
    return cliplab.zeroshot(model, color, cache_dir=cache, quiet=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three drawn images, and a class-folder dataset without splits (two classes, one file that is no image)."""
    from conftest import make_image

    d = tmp_path_factory.mktemp("api-files")
    images = [str(p) for p in _images(d)]
    folder = d / "folder"
    for c, colour in enumerate([(220, 30, 30), (30, 40, 220)]):
        for j in range(3):
            make_image(folder / f"class{c}" / f"img{c}{j}.png", size=(64, 64), color=colour)
    broken = d / "broken"
    for c in range(2):
        for j in range(2):
            make_image(broken / f"class{c}" / f"img{c}{j}.png", size=(64, 64), color=(200, 40 + 150 * c, 40))
    (broken / "class0" / "corrupt.png").write_bytes(b"not a png")
    return {"images": images, "folder": str(folder), "broken": str(broken), "dir": d}


# ---- errors: Python exceptions naming the API's keywords ----

def error_cases(m, ds, f):
    """(what, call, text the message must hold, texts it must not hold)."""
    kw = dict(quiet=True, backend="torch")
    return [
        ("split typo", lambda: cliplab.zeroshot(m, "shapes:color", split="tset", **kw), ["split 'tset'", "test"],
         []),
        ("split of a loaded dataset", lambda: cliplab.zeroshot(m, ds, split="train", **kw), ["split 'train'"], []),
        ("attack target", lambda: cliplab.attack(m, ds, target="sideways", **kw), ["target 'sideways'"],
         ["rule", "--target"]),
        ("attack text", lambda: cliplab.attack(m, ds, text="hello", **kw), ["text 'hello'"], ["text_format"]),
        ("cluster kmeans", lambda: cliplab.cluster(m, ds, kmeans="x", **kw), ["kmeans 'x'"], ["implementation"]),
        ("cluster k", lambda: cliplab.cluster(m, ds, k="6,x", **kw), ["k '6,x'"], []),
        ("search without a query", lambda: cliplab.search(m, ds, **kw), ["no query", "queries", "image"], []),
        ("search: queries is the file", lambda: cliplab.search(m, ds, queries=["a red circle"], **kw),
         ["queries is a file", "query=[...]"], []),
        ("search image missing", lambda: cliplab.search(m, ds, image="missing.png", **kw),
         ["image missing.png", "not found"], []),
        ("inspect one class", lambda: cliplab.inspect(m, f["images"], classes=["red"], **kw),
         ["classes ['red']: give at least two"], []),
        ("inspect image missing", lambda: cliplab.inspect(m, ["missing.png"], **kw), ["images missing.png"], []),
        ("similar query missing", lambda: cliplab.similar(m, ds, query="missing.png", **kw),
         ["query missing.png"], ["query_images"]),
        ("similar descriptor", lambda: cliplab.similar(m, ds, descriptor="vlad", **kw), ["descriptor 'vlad'"],
         ["pooling"]),
        ("prompts select, no such split",
         lambda: cliplab.prompts(m, f["folder"], select=True, **kw), ["select_split 'train'", "no splits"],
         []),
        ("prompts select_split typo",
         lambda: cliplab.prompts(m, "shapes:color", select=True, select_split="val", limit=LIMIT, **kw),
         ["select_split 'val'", "train"], []),
        ("prompts select from a loaded dataset", lambda: cliplab.prompts(m, ds, select=True, **kw),
         ["select_split 'train'", "already loaded"], []),
        ("prompts templates", lambda: cliplab.prompts(m, ds, templates="no placeholder", **kw), ["templates"], []),
        ("probe needs train with a loaded dataset", lambda: cliplab.probe(m, ds, **kw), ["train=", "already loaded"],
         []),
        ("probe train_split typo", lambda: cliplab.probe(m, "shapes:color", train_split="tset", **kw),
         ["train_split 'tset'"], []),
        ("probe train_limit", lambda: cliplab.probe(m, "shapes:color", train_limit=0, **kw),
         ["train_limit 0: must be at least 1"], []),
        ("probe seeds", lambda: cliplab.probe(m, "shapes:color", seeds=0, **kw), ["seeds 0: must be at least 1"], []),
        ("probe val_fraction", lambda: cliplab.probe(m, "shapes:color", val_fraction=0.95, **kw),
         ["val_fraction 0.95: must be between 0.01 and 0.9"], []),
        ("zeroshot topk", lambda: cliplab.zeroshot(m, ds, topk=0, **kw), ["topk 0: must be at least 1"], []),
        ("cluster per_cluster", lambda: cliplab.cluster(m, ds, per_cluster=0, **kw),
         ["per_cluster 0: must be at least 1"], []),
        ("search k", lambda: cliplab.search(m, ds, "a red circle", k=0, **kw), ["k 0: must be at least 1"], []),
        ("compare train_limit", lambda: cliplab.compare("tiny-shapes", "shapes:color", probe=True, train_limit=0,
                                                        **kw), ["train_limit 0: must be at least 1"], []),
        ("compare: models is the file", lambda: cliplab.compare(models=["tiny-shapes"], **kw),
         ["models is a file", "model=[...]"], []),
        ("compare probe of a loaded dataset", lambda: cliplab.compare(m, ds, probe=True, **kw),
         ["train_split 'train'", "already loaded"], []),
        ("loaded model, other backend", lambda: cliplab.zeroshot(m, ds, backend="openvino", quiet=True),
         ["backend openvino", "already loaded"], []),
        ("device", lambda: cliplab.zeroshot("tiny-shapes", ds, device="tpu", quiet=True), ["device tpu"], []),
        ("limit", lambda: cliplab.zeroshot(m, "shapes:color", limit=0, **kw), ["limit 0: must be at least 1"], []),
        ("dataset", lambda: cliplab.zeroshot(m, "no-such-dataset", **kw), ["dataset 'no-such-dataset'"], []),
        ("retrieval ks", lambda: cliplab.retrieval(m, ks="1,x", **kw), ["ks '1,x'"], []),
    ]


ERROR_NAMES = [c[0] for c in error_cases(None, None, {"folder": ""})]


@pytest.mark.parametrize("what", ERROR_NAMES)
def test_errors_are_exceptions_that_name_the_keyword(model, color, files, what):
    _, call, wanted, unwanted = next(c for c in error_cases(model, color, files) if c[0] == what)
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - SystemExit (typer.Exit) must not get through either
        assert isinstance(exc, CliplabError), f"{type(exc).__name__}: {exc}"
        message = str(exc)
    else:
        pytest.fail("no error")
    for text in wanted:
        assert text in message, message
    for text in [*unwanted, "--"]:
        assert text not in message, message


def frames_below(excinfo) -> int:
    """Frames of the traceback under the test's own line (the user's call)."""
    return len(traceback.extract_tb(excinfo.tb)) - 1


def test_errors_arrive_from_the_functions_frame(model, files, cache):
    """A notebook shows the user's call and the API function's line, not cliplab's internals."""
    with pytest.raises(CliplabError, match="split 'tset'") as bad_split:  # checked while loading the inputs
        cliplab.zeroshot(model, "shapes:color", split="tset", cache_dir=cache, quiet=True)
    unreadable = files["dir"] / "unreadable"
    for c in range(2):
        (unreadable / f"class{c}").mkdir(parents=True, exist_ok=True)
        (unreadable / f"class{c}" / "x.png").write_bytes(b"not a png")
    with pytest.raises(cliplab.DatasetError, match="none of the 2 images could be read") as deep:  # in the engine
        cliplab.zeroshot(model, str(unreadable), cache_dir=cache, no_cache=True, quiet=True)
    with pytest.raises(TypeError, match="did you mean 'templates'") as typo:
        cliplab.zeroshot(templte="a photo of a {}.")
    assert [frames_below(e) for e in (bad_split, deep, typo)] == [1, 1, 1]
    assert all(traceback.extract_tb(e.tb)[-1].name == "call" for e in (bad_split, deep, typo))


def test_one_bar_serves_every_step_of_a_call_and_is_gone_after(model, color, cache, monkeypatch):
    import tqdm.std

    from cliplab import progress

    made = []

    class Counted(tqdm.std.tqdm):
        def __init__(self, *args, **kwargs):
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(progress, "interactive", lambda: True)
    monkeypatch.setattr(progress, "_tqdm_class", lambda: Counted)
    cliplab.zeroshot(model, color, cache_dir=cache, no_cache=True)  # embeds images, then texts: two steps
    assert len(made) == 1 and made[0].disable  # one bar, closed when the call returned
    made.clear()
    monkeypatch.setattr(progress, "interactive", lambda: False)  # an executed notebook, a log file
    cliplab.zeroshot(model, color, cache_dir=cache, no_cache=True)
    assert made == []


def test_warnings_point_at_the_callers_line(model, files, cache):
    with pytest.warns(CliplabWarning) as caught:
        cliplab.embed(model, files["broken"], cache_dir=cache, quiet=True)
    assert {Path(w.filename).resolve() for w in caught} == {Path(__file__).resolve()}


def test_save_names_its_own_keywords(zs, tmp_path):
    with pytest.raises(CliplabError, match="^format 'xml': choose parquet or jsonl"):
        zs.save(tmp_path, format="xml")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CliplabError, match="^results_dir .*a-file: exists and is not a folder"):
        zs.save(tmp_path / "a-file")


# ---- progress: quiet, bars, notes, warnings ----

def test_quiet_prints_nothing(model, color, cache, capfd):
    capfd.readouterr()
    cliplab.zeroshot(model, color, cache_dir=cache, no_cache=True, quiet=True)
    cliplab.similar(model, color, pca_dim=8, cache_dir=cache, quiet=True)  # has a note
    assert capfd.readouterr() == ("", "")


def test_bars_and_notes_go_to_stderr(model, color, cache, capfd, monkeypatch):
    from cliplab import progress

    monkeypatch.setattr(progress, "interactive", lambda: True)  # a terminal, or a notebook a person runs
    capfd.readouterr()
    cliplab.zeroshot(model, color, cache_dir=cache, no_cache=True)
    out, err = capfd.readouterr()
    assert out == "" and "embedding images" in err and "%|" in err  # a tqdm bar
    cliplab.similar(model, color, pca_dim=8, cache_dir=cache)
    out, err = capfd.readouterr()
    assert out == "" and "note: PCA-whitening learned on the gallery itself" in err


@pytest.mark.parametrize("quiet", [False, True])
def test_skipped_images_are_a_cliplab_warning_also_when_quiet(model, files, cache, quiet):
    with pytest.warns(CliplabWarning, match="could not be read"):
        X = cliplab.embed(model, files["broken"], cache_dir=cache, quiet=quiet)
    assert len(X) == 4
    with pytest.warns(CliplabWarning, match=r"1 input\(s\) could not be used .*corrupt.png"):
        r = cliplab.zeroshot(model, files["broken"], templates="a photo of a {}.", cache_dir=cache, quiet=quiet)
    assert "1 input(s) skipped" in repr(r) and "corrupt.png" in r._repr_html_()


def test_notebook_progress_warns_through_warnings():
    for progress in (NotebookProgress(), NotebookProgress(quiet=True)):
        with use(progress), pytest.warns(CliplabWarning, match="probe fit unconverged"):
            warn("probe fit unconverged: hit max_iter")
    with use(NotebookProgress()), warnings.catch_warnings():
        warnings.simplefilter("error", CliplabWarning)  # a user can make them errors
        with pytest.raises(CliplabWarning):
            warn("x")


def test_a_progress_the_caller_installed_gets_the_bars_notes_and_warnings(model, color, files, cache, capfd):
    from recording import Recording

    capfd.readouterr()
    rec = Recording()
    with use(rec), warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing goes through Python's warnings
        cliplab.zeroshot(model, color, cache_dir=cache, no_cache=True)
        cliplab.similar(model, color, pca_dim=8, cache_dir=cache)
        cliplab.embed(model, files["broken"], cache_dir=cache)
    assert "embedding images" in rec.bars and any("PCA-whitening" in n for n in rec.notes)
    assert any("could not be read" in w for w in rec.warnings)
    assert capfd.readouterr() == ("", "")


# ---- display ----

def test_repr_holds_the_summary_and_the_numbers(zs):
    acc = zs.metrics.query("metric == 'acc1'").value.iloc[0]
    text = repr(zs)
    assert text.startswith(zs.summary()) and pct(acc) in text and str(zs) == text


def test_html_has_tables_numbers_and_the_per_class_figure(zs):
    acc = zs.metrics.query("metric == 'acc1'").value.iloc[0]
    page = zs._repr_html_()
    assert "<table>" in page and pct(acc) in page
    assert page.count("<img src='data:image/png;base64,") >= 1


def test_search_html_embeds_one_grid_per_query(model, color, cache):
    r = cliplab.search(model, color, ["a red circle", "a blue square"], k=3, cache_dir=cache, quiet=True)
    page = r._repr_html_()
    assert "<table>" in page and page.count("<figcaption>search: ") == 2
    assert page.count("<img src='data:image/png;base64,") >= 2


def test_inspect_draws_and_shows_only_the_first_figures(model, files, cache, monkeypatch):
    import cliplab.studies.inspect as inspect_study

    drawn = []
    real = inspect_study.image_with_bars
    monkeypatch.setattr(inspect_study, "image_with_bars", lambda *a, **k: drawn.append(1) or real(*a, **k))
    monkeypatch.setattr(notebook, "MAX_FIGURE_FILES", 1)
    r = cliplab.inspect(model, files["images"], cache_dir=cache, quiet=True)
    page = r._repr_html_()
    assert page.count("<figcaption>ranking for ") == 1 and "the first 1 figures shown" in page
    assert len(drawn) == 2  # one shown, one to know there are more; not all three


# ---- exports ----

def test_to_json_is_the_record_with_models_config_and_provenance(zs, tmp_path):
    doc = json.loads(zs.to_json())
    assert {k: doc[k] for k in zs.record()} == json.loads(json.dumps(zs.record(), default=str))
    assert doc["models"][0]["name"] == "tiny-shapes" and doc["models"][0]["backend"] == "torch"
    assert doc["config"]["dataset"] == "shapes:color" and doc["config"]["split"] == "test"
    assert doc["config"]["limit"] == LIMIT  # the loaded dataset's subset, as the CLI's --limit records it
    assert {"cliplab_version", "timestamp", "torch", "python"} <= set(doc)
    zs.to_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["metrics"] == doc["metrics"]


def test_to_json_writes_numpy_values_as_the_cli_does(zs, tmp_path, monkeypatch):
    monkeypatch.setattr(type(zs), "record", lambda self: {"n": np.int64(3), "acc": np.float32(0.5),
                                                         "per_class": np.arange(3), "path": tmp_path})
    text = zs.to_json(tmp_path / "r.json")
    doc = json.loads(text)
    assert (doc["n"], doc["acc"], doc["per_class"], doc["path"]) == (3, 0.5, [0, 1, 2], str(tmp_path))
    assert (tmp_path / "r.json").read_text() == text


def test_to_parquet_round_trips_the_metrics(zs, tmp_path):
    for name in ("m.parquet", "m"):
        path = zs.to_parquet(tmp_path / name)
        assert path == tmp_path / "m.parquet" and path.is_file()
        pd.testing.assert_frame_equal(pd.read_parquet(path), zs.metrics)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_save_writes_a_store_read_results_reads(zs, model, color, cache, tmp_path, fmt):
    attack = cliplab.attack(model, color, target="next", cache_dir=cache, quiet=True)
    for r in (zs, attack):
        path = r.save(tmp_path, format=fmt)
        assert path.parent == tmp_path and path.suffix == f".{fmt}"
    rows = cliplab.read_results(tmp_path)
    assert set(rows.command) == {"zeroshot", "attack-typographic"}  # the CLI's command path
    for r in (zs, attack):
        mine = rows[rows.command == r.command]
        np.testing.assert_array_equal(mine.value.to_numpy(float), r.metrics.value.to_numpy(float))  # exactly
        assert list(mine.metric) == list(r.metrics.metric)
        config = json.loads(mine.config.iloc[0])
        assert config["model"] == "tiny-shapes" and "quiet" not in config
    assert json.loads(rows[rows.command == "attack-typographic"].config.iloc[0])["target"] == "next"


# ---- embeddings ----

def test_embed_array_frame_and_normalize(model, color, cache):
    X = cliplab.embed(model, color, cache_dir=cache, quiet=True)
    assert X.shape == (LIMIT, model.embed_dim)
    frame = cliplab.embed(model, color, frame=True, normalize=True, cache_dir=cache, quiet=True)
    assert {"row", "id", "label", "classname", "embedding"} <= set(frame.columns) and len(frame) == LIMIT
    assert list(frame.label) == list(color.labels)
    assert list(frame.classname) == [color.classnames[i] for i in color.labels]
    U = np.stack(frame.embedding)
    np.testing.assert_allclose(np.linalg.norm(U, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(U, X / np.linalg.norm(X, axis=1, keepdims=True), rtol=1e-6)


def test_embed_texts_keeps_the_order(model, cache):
    texts = ["a red circle", "a blue square", "a green star"]
    T = cliplab.embed_texts(model, texts, cache_dir=cache, quiet=True)
    R = cliplab.embed_texts(model, texts[::-1], cache_dir=cache, quiet=True)
    assert T.shape == (3, model.embed_dim) and not np.allclose(T[0], T[1])
    np.testing.assert_array_equal(T, R[::-1])
    np.testing.assert_array_equal(cliplab.embed_texts(model, "a blue square", cache_dir=cache, quiet=True), T[1:2])
    U = cliplab.embed_texts(model, texts, normalize=True, cache_dir=cache, quiet=True)
    np.testing.assert_allclose(np.linalg.norm(U, axis=1), 1.0, rtol=1e-5)


# ---- objects or strings ----

def test_loaded_model_and_dataset_give_the_numbers_of_names(zs, cache):
    by_name = cliplab.zeroshot("tiny-shapes", "shapes:color", limit=LIMIT, backend="torch", cache_dir=cache,
                               quiet=True)
    pd.testing.assert_frame_equal(by_name.metrics, zs.metrics)
    assert by_name.config["model"] == "tiny-shapes" and by_name.config["dataset"] == "shapes:color"


def test_probe_trains_on_the_train_split_of_a_spec_or_a_loaded_train(model, color, cache):
    train = cliplab.load_dataset("shapes:color", split="train", limit=120, cache_dir=cache)
    kw = dict(kshot=[], wd=0.01, cache_dir=cache, quiet=True)
    loaded = cliplab.probe(model, color, train=train, **kw)
    spec = cliplab.probe(model, color, train="shapes:color", train_limit=120, **kw)  # the spec's train split
    default = cliplab.probe(model, "shapes:color", limit=LIMIT, train_limit=120, **kw)
    assert loaded.train.split == spec.train.split == default.train.split == "train"
    pd.testing.assert_frame_equal(loaded.metrics, spec.metrics)
    pd.testing.assert_frame_equal(loaded.metrics, default.metrics)


def test_compare_takes_one_model_name(cache):
    r = cliplab.compare("tiny-shapes", "shapes:color", limit=LIMIT, backend="torch", cache_dir=cache, quiet=True)
    assert [m.name for m in r.models] == ["tiny-shapes"] and len(r.rows) == 1


def test_prompts_selects_on_a_loaded_split(model, color, cache):
    train = cliplab.load_dataset("shapes:color", split="train", limit=200, cache_dir=cache)
    r = cliplab.prompts(model, color, templates=["simple", "openai-cifar"], select=True, select_split=train,
                        bootstrap=100, cache_dir=cache, quiet=True)
    assert r.selection is not None and r.config["select_split"] == "train"


# ---- the package ----

def test_import_cliplab_is_light_and_the_functions_resolve():
    code = ("import sys, cliplab\n"
            "assert 'torch' not in sys.modules and 'tqdm' not in sys.modules, 'heavy import'\n"
            "assert callable(cliplab.zeroshot) and 'torch' not in sys.modules, 'the functions are light too'\n"
            "import cliplab.prompts\n"
            "from cliplab.embed import embed_images\n"
            "from cliplab import api\n"
            "assert cliplab.prompts is api.prompts and cliplab.embed is api.embed, (cliplab.prompts, cliplab.embed)\n"
            "assert sorted(cliplab.__all__) == sorted(set(cliplab.__all__))\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_functions_named_like_submodules_stay_the_functions():
    import cliplab.embed.engine  # noqa: F401 - a submodule import must not replace cliplab.embed
    import cliplab.prompts  # noqa: F401

    assert cliplab.prompts is cliplab.api.prompts and cliplab.embed is cliplab.api.embed
    from cliplab import embed, prompts

    assert embed is cliplab.api.embed and prompts is cliplab.api.prompts


def result_classes():
    """The result class of every registered study (the return annotation of its run function)."""
    import typing

    from cliplab.registry import studies
    from cliplab.studies import discover

    discover()
    out = []
    for s in studies():
        if not s.tool:
            hint = typing.get_type_hints(s.run)["return"]
            out += list(typing.get_args(hint)) or [hint]  # a study with two result shapes (inspect: one model, several)
    return out


@pytest.mark.parametrize("cls", result_classes(), ids=lambda c: c.__name__)
def test_no_result_class_hides_the_notebook_members(cls):
    members = ["metrics", "to_json", "to_parquet", "save", "figures", "_repr_html_", "__repr__", "__str__"]
    for name in members:
        assert inspect.getattr_static(cls, name) is inspect.getattr_static(Notebook, name), f"{cls.__name__}.{name}"
    clash = {f.name for f in dataclasses.fields(cls)} & {*members, "command", "config"}
    assert not clash, f"{cls.__name__} fields {clash} hide Notebook members or what the API sets"
    assert cls.__name__.endswith("Result"), "result classes are named <Study>Result"


# ---- the keywords and the flags come from one declaration ----

def declared_studies():
    from cliplab.registry import studies
    from cliplab.studies import discover

    discover()
    return studies()


@pytest.mark.parametrize("study", [s for s in declared_studies() if "api" in s.doors], ids=lambda s: s.name)
def test_every_declared_parameter_is_a_keyword_with_its_default(study):
    api = inspect.signature(getattr(cliplab, study.name)).parameters
    want = {p.api_name: p for p in study.parameters("api")}
    assert set(api) == set(want), f"cliplab.{study.name}: {set(api) ^ set(want)}"
    for key, p in want.items():
        if p.required or (api[key].default is inspect.Parameter.empty and key in study.positional):
            continue
        assert api[key].default == p.default, (study.name, key)


@pytest.mark.parametrize("study", [s for s in declared_studies() if "cli" in s.doors], ids=lambda s: s.name)
def test_every_declared_parameter_is_a_flag_in_help(study):
    from typer.testing import CliRunner

    from cliplab.cli import app

    res = CliRunner().invoke(app, [*study.path, "--help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    for p in study.parameters("cli"):
        shown = (p.metavar or p.name.upper()).rstrip(".") if p.argument else p.cli_flag
        assert shown in res.output, (study.name, shown)


def bounded(study):
    """(parameter, a value just outside its bounds) for every declared bound of the study."""
    out = []
    for p in study.parameters("api"):
        if p.min is not None and p.kind.name in ("int", "float", "ints"):
            out.append((p, (p.min - 1 if p.kind.name != "float" else p.min - 0.005)))
        if p.max is not None and p.kind.name in ("int", "float"):
            out.append((p, p.max + 1 if p.kind.name == "int" else p.max + 0.05))
    return out


BOUND_CASES = [(s, p, v) for s in declared_studies() if "api" in s.doors and not s.tool for p, v in bounded(s)]


@pytest.mark.parametrize("study,param,value", BOUND_CASES, ids=[f"{s.name}-{p.name}" for s, p, _ in BOUND_CASES])
def test_both_doors_refuse_a_value_outside_its_bounds_with_the_same_message(study, param, value, tmp_path):
    """Checked before any work (a fresh cache stays empty), the same words through the CLI and Python, each naming
    the parameter its own way."""
    from typer.testing import CliRunner

    from cliplab.cli import app

    cache = tmp_path / "cache"
    args = {"model": "tiny-shapes", "images": ["x.png"]} if "images" in {p.name for p in study.parameters("api")} \
        else {}
    kwargs = {param.api_name: [value] if param.kind.name == "ints" else value, **args, "cache_dir": cache,
              "quiet": True}
    with pytest.raises(CliplabError) as info:
        getattr(cliplab, study.name)(**kwargs)
    api_msg = str(info.value)
    assert api_msg.startswith(f"{param.api_name} ") and "must be" in api_msg, api_msg
    flag_value = str(value)
    cli_args = [*study.path, *args.get("images", []), param.cli_flag, flag_value, "--cache-dir", str(cache)]
    res = CliRunner().invoke(app, cli_args)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0] == "error: " + api_msg.replace(param.api_name, param.cli_flag, 1), (lines[0], api_msg)
    assert not (cache / "embeddings").exists()


def test_a_second_probe_reuses_the_fits_and_a_changed_input_fits_again(model, cache, tmp_path):
    """Issue 24: rerunning a probe study (as `make demo` does) reuses its fitted results when nothing they depend on
    changed, and gives the same numbers; another training split or parameter fits again; no cache, no memo."""
    from cliplab.progress import use
    from recording import Recording

    kw = dict(limit=LIMIT, train_limit=80, kshot=[1, 2], seeds=2, cache_dir=tmp_path / "c", backend="torch")
    with use(Recording()) as cold_said:
        cold = cliplab.probe(model, "shapes:color", **kw)
    with use(Recording()) as warm_said:
        warm = cliplab.probe(model, "shapes:color", **kw)
    assert cold.reused == 0 and warm.reused == 2
    assert any("probe fits reused: 2 of 2" in n for n in warm_said.notes)
    assert not any("reused" in n for n in cold_said.notes)
    pd.testing.assert_frame_equal(cold.metrics.drop(columns="run", errors="ignore"),
                                  warm.metrics.drop(columns="run", errors="ignore"))
    assert cliplab.probe(model, "shapes:color", **{**kw, "train_limit": 90}).reused == 0  # other shots drawn
    assert cliplab.probe(model, "shapes:color", **{**kw, "seeds": 3}).reused == 1  # the linear probe is the same
    assert cliplab.probe(model, "shapes:color", **{**kw, "no_cache": True}).reused == 0
