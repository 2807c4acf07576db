"""Properties of the one reader (cliplab/files.py) and of every reader built on it: arbitrary bytes, arbitrary JSON
values, arbitrary CSV rows either read as the documented shape or raise a CliplabError naming the file; never any
other exception. The fault table with the command line and the Python API is tests/test_input_files.py."""
from __future__ import annotations

import codecs
import csv
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError
from hypothesis import HealthCheck, event, example, given, settings, strategies as st

from cliplab.errors import CliplabError
from cliplab.files import Shape, UserFile, printable

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])

# ---- strategies ----------------------------------------------------------------------------------------------
KEYS = ["image", "caption", "captions", "label", "filepath", "model", "pretrained", "embed_dim", "vision_cfg",
        "text_cfg", "model_cfg", "preprocess_cfg", "images", "annotations", "id", "file_name", "image_id",
        "sentences", "raw", "filename", "split", "dataset", "task", "metrics", "run_id", "command", "metric",
        "value", "n", "seed", "models", "red", "blue", "set", "mean", "std"]
TEXT = st.lists(st.sampled_from(list("ab {}c#\n\t\"é,") + ["{c}", "\ufeff", "\x00", "\udce9"]),
               max_size=8).map("".join)  # with '{}' and '{c}' often, and a BOM, a NUL, a surrogate escape
LEAVES = st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True) | TEXT
JSON_VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5), max_leaves=25)


def json_bytes(value) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogateescape")


def jsonl_bytes(values) -> bytes:
    return b"".join(json_bytes(v) + b"\n" for v in values)


def csv_bytes(rows, delimiter=",") -> bytes:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter).writerows(rows)
    return buf.getvalue().encode("utf-8", "surrogateescape")


CSV_ROWS = st.lists(st.lists(TEXT | st.sampled_from(KEYS), min_size=1, max_size=4), max_size=6)
ENCODED_TEXT = st.one_of(
    TEXT.map(lambda t: t.encode("utf-8", "surrogateescape")),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(alphabet=st.characters(max_codepoint=255), max_size=40).map(lambda t: t.encode("latin-1")),
    st.text(max_size=20).map(lambda t: t.encode("utf-16")),
    st.text(max_size=20).map(lambda t: codecs.BOM_UTF8 + t.encode("utf-8", "surrogatepass")),
)
ANY_BYTES = st.one_of(st.binary(max_size=200), ENCODED_TEXT, JSON_VALUES.map(json_bytes),
                      st.lists(JSON_VALUES, max_size=4).map(jsonl_bytes), CSV_ROWS.map(csv_bytes))


@st.composite
def parquet_files(draw) -> bytes:
    """A parquet file of a few columns (text, numbers, nulls, lists), sometimes cut short."""
    n = draw(st.integers(0, 3))
    names = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True))
    kinds = [st.lists(st.none() | TEXT.map(printable), min_size=n, max_size=n),
             st.lists(st.none() | st.integers(-2, 5), min_size=n, max_size=n),
             st.lists(st.floats(allow_nan=True), min_size=n, max_size=n),
             st.lists(st.lists(TEXT.map(printable), max_size=2), min_size=n, max_size=n)]
    table = pa.table({name: draw(st.one_of(*kinds)) for name in names})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    return data[:draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def named(exc: CliplabError, *names: str) -> bool:
    """Whether the error's one-line message names one of ``names`` (file names); counted as an ``error`` outcome
    (``pytest --hypothesis-show-statistics`` shows how often each reader read and refused)."""
    event("error")
    text = str(exc)
    return "\n" not in text and any(printable(n) in text for n in names)


def read(reader, *names: str):
    """``reader()``'s result (counted as ``read``), or None when it raised a CliplabError whose one-line message
    names one of ``names``; any other exception fails the test."""
    try:
        out = reader()
    except CliplabError as exc:
        assert named(exc, *names), str(exc)
        return None
    event("read")
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


# ---- the reader itself ---------------------------------------------------------------------------------------

@SETTINGS
@given(data=ANY_BYTES)
@example(data=b"a\n\xe9b")
@example(data=codecs.BOM_UTF8 + b"x")
@example(data=codecs.BOM_UTF8 * 2)  # found by Hypothesis: a second mark stayed in the text
def test_text_is_utf8_with_or_without_a_bom_or_an_error_naming_line_and_byte(folder, data):
    path = write(folder, "t.txt", data)
    try:
        text = UserFile(path, "templates").text()
    except CliplabError as exc:
        assert named(exc, "t.txt")
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            assert "UTF-16" in str(exc)
            return
        body = data[3:] if data.startswith(codecs.BOM_UTF8) else data
        try:
            decoded = body.decode("utf-8")
        except UnicodeDecodeError as bad:
            at = bad.start + len(data) - len(body)
            line = data.count(b"\n", 0, at) + 1
            assert f"line {line}:" in str(exc) and f"byte {at + 1} of the file" in str(exc)
        else:
            assert "\x00" in decoded or data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        return
    assert text == data.decode("utf-8-sig").lstrip("\ufeff") and "\x00" not in text


@SETTINGS
@given(data=ANY_BYTES, kind=st.sampled_from([".json", ".jsonl", ".csv", ".tsv", ".yaml", ".toml", ".parquet"]))
def test_structured_files_read_as_their_shape_or_name_the_file(folder, data, kind):
    path = write(folder, f"f{kind}", data)
    file = UserFile(path, "dataset")
    shape = Shape(dict[str, list[int]], "an object of lists of numbers")
    try:
        if kind in (".json", ".yaml", ".toml"):
            value = file.data(shape)
            assert isinstance(value, dict) and all(isinstance(v, list) and all(isinstance(i, int) for i in v)
                                                   for v in value.values())
        else:
            records = file.table()
            assert len(records.rows) == len(records.places)
            assert all(isinstance(r, dict) and all(isinstance(k, str) for k in r) for r in records.rows)
    except CliplabError as exc:
        assert named(exc, path.name)


@SETTINGS
@given(rows=st.lists(st.dictionaries(st.sampled_from(KEYS), LEAVES, max_size=4), max_size=5))
def test_a_row_error_names_its_line_and_field(folder, rows):
    path = write(folder, "rows.jsonl", b"\n" + jsonl_bytes(rows))  # a blank first line: line numbers are lines
    records = UserFile(path, "dataset").jsonl()
    shape = Shape(dict[str, int], "numbers")
    try:
        checked = records.validate(shape)
        assert all(isinstance(v, int) for r in checked for v in r.values())
    except CliplabError as exc:
        one = TypeAdapter(dict[str, int])

        def fits(row) -> bool:
            try:
                one.validate_python(row)
                return True
            except ValidationError:
                return False

        first = next(i for i, r in enumerate(rows) if not fits(r))  # the first row pydantic refuses
        assert named(exc, "rows.jsonl") and f"line {first + 2}: field " in str(exc)


# ---- every reader --------------------------------------------------------------------------------------------

@SETTINGS
@given(data=ANY_BYTES, suffix=st.sampled_from([".txt", ".json"]))
def test_template_files(folder, data, suffix):
    from cliplab.prompts import read_template_file

    path = write(folder, f"templates{suffix}", data)
    sets = read(lambda: read_template_file(path), path.name)
    if sets is None:
        return
    assert sets and all(s.templates and all("{}" in t or "{c}" in t for t in s.templates) for s in sets)


@SETTINGS
@given(data=ANY_BYTES, suffix=st.sampled_from([".txt", ".json"]), expected=st.none() | st.integers(1, 3))
def test_class_name_files(folder, data, suffix, expected):
    from cliplab.data.classnames import map_classnames, read_classnames

    path = write(folder, f"classnames{suffix}", data)
    both = read(lambda: (read_classnames(path, expected=expected), map_classnames(path, ["red", "blue"])), path.name)
    if both is None:
        return
    names, mapped = both
    assert names and all(isinstance(n, str) and n == n.strip() and n for n in names)
    assert expected in (None, len(names)) and len(mapped) == 2


@SETTINGS
@given(data=ANY_BYTES | parquet_files(), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet"]))
def test_manifests(folder, data, suffix):
    from cliplab.data.captions import load_caption_file

    path = write(folder, f"manifest{suffix}", data)
    ds = read(lambda: load_caption_file(str(path)), path.name)
    if ds is None:
        return
    assert len(ds) >= 1 and all(isinstance(p, str) for p in ds.source.paths)
    assert ds.captions is None or all(isinstance(c, str) and c for cs in ds.captions for c in cs)
    assert ds.labels is None or (ds.labels.min() >= 0 and ds.labels.max() < len(ds.classnames))


@SETTINGS
@given(data=ANY_BYTES, table=parquet_files())
def test_manifests_from_csv_rows_and_parquet_columns(folder, data, table):
    from cliplab.data.captions import load_caption_file

    for name, content in (("rows.csv", data), ("cols.parquet", table)):
        path = write(folder, name, content)
        read(lambda: load_caption_file(str(path)), name)


@SETTINGS
@given(value=JSON_VALUES | st.builds(lambda imgs, anns: {"images": imgs, "annotations": anns},
                                     st.lists(st.dictionaries(st.sampled_from(["id", "file_name"]), LEAVES), max_size=3),
                                     st.lists(st.dictionaries(st.sampled_from(["image_id", "caption"]), LEAVES),
                                              max_size=3)),
       raw=st.none() | st.binary(max_size=60))
def test_coco_and_karpathy_files(folder, value, raw):
    from cliplab.data.coco import load_caption_json

    path = write(folder, "captions.json", json_bytes(value) if raw is None else raw)
    ds = read(lambda: load_caption_json(path, image_root=folder), path.name)
    if ds is None:
        return
    assert all(isinstance(c, str) for cs in ds.captions for c in cs)


@SETTINGS
@given(query=ANY_BYTES, good=st.none() | ANY_BYTES, gnd=st.binary(max_size=80) | JSON_VALUES.map(pickle.dumps) |
       st.builds(lambda e, h: pickle.dumps({"imlist": ["a", "b"], "qimlist": ["a"],
                                            "gnd": [{"easy": e, "hard": h, "bbx": [0, 0, 1, 1]}]}),
                 st.lists(st.integers(-1, 3)) | JSON_VALUES, st.lists(st.integers(0, 1))))
def test_oxford_ground_truth(folder, query, good, gnd):
    from cliplab.data.oxford import read_oxford_gt

    gt = folder / "gt"
    for p in gt.glob("*"):
        p.unlink()
    write(gt, "q_query.txt", query)
    if good is not None:
        write(gt, "q_good.txt", good)
    queries = read(lambda: read_oxford_gt(gt), "q_query.txt", "q_good.txt")
    for q in queries or ():
        assert q.image and (q.box is None or len(q.box) == 4) and all(isinstance(n, str) and n for n in q.good)
    path = write(folder, "gnd.pkl", gnd)
    for q in read(lambda: read_oxford_gt(path), "gnd.pkl") or ():
        assert set(q.easy) | set(q.hard) | set(q.junk) <= {"a", "b"}


@SETTINGS
@given(data=ANY_BYTES, suffix=st.sampled_from([".txt", ".json"]))
def test_query_files(folder, data, suffix):
    from cliplab.studies.search import read_queries

    path = write(folder, f"queries{suffix}", data)
    queries = read(lambda: read_queries(path), path.name)
    if queries is None:
        return
    assert queries and all(q.text and q.text == q.text.strip() for q in queries)


@SETTINGS
@given(data=ANY_BYTES)
def test_prompt_files(folder, data):
    from cliplab.studies.inspect import read_prompts

    path = write(folder, "prompts.txt", data)
    prompts = read(lambda: read_prompts(path), path.name)
    if prompts is None:
        return
    assert len(prompts) >= 2 and all(p and not p.startswith("#") for p in prompts)


@SETTINGS
@given(data=ANY_BYTES | st.dictionaries(st.sampled_from(["red", "blue", "Red"]), JSON_VALUES).map(json_bytes))
def test_description_files(folder, data):
    from cliplab.studies.prompts import load_descriptions

    path = write(folder, "descriptions.json", data)
    texts = read(lambda: load_descriptions(path, ["red", "blue"]), path.name)
    if texts is None:
        return
    assert len(texts) == 2 and all(ts and all(isinstance(t, str) and t for t in ts) for ts in texts)


@SETTINGS
@given(value=JSON_VALUES, raw=st.none() | ANY_BYTES, suffix=st.sampled_from([".yaml", ".toml", ".json", ".txt"]))
def test_model_files(folder, value, raw, suffix):
    from cliplab.models.specs import read_model_file

    if raw is None:
        raw = yaml.safe_dump(value).encode("utf-8", "surrogateescape") if suffix == ".yaml" else json_bytes(value)
    path = write(folder, f"models{suffix}", raw)
    specs = read(lambda: read_model_file(path), path.name)
    if specs is None:
        return
    assert specs and all(s.model and isinstance(s.label, str) for s in specs)


@SETTINGS
@given(value=JSON_VALUES | st.fixed_dictionaries({"embed_dim": LEAVES, "vision_cfg": JSON_VALUES,
                                                  "text_cfg": JSON_VALUES}, optional={"preprocess_cfg": JSON_VALUES}),
       raw=st.none() | st.binary(max_size=60))
def test_model_configs(folder, value, raw):
    from cliplab.models.specs import read_model_config

    path = write(folder, "config.json", json_bytes(value) if raw is None else raw)
    both = read(lambda: read_model_config(path), path.name)
    if both is None:
        return
    model_cfg, preprocess = both
    assert isinstance(model_cfg["embed_dim"], int) and model_cfg["embed_dim"] > 0
    assert isinstance(model_cfg["vision_cfg"], dict) and isinstance(preprocess, dict)


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> bytes:
    from conftest import make_image

    png = make_image(tmp_path_factory.mktemp("shard") / "x.png").read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, payload in (("s0.png", png), ("s0.cls", b"0")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@SETTINGS
@given(names=ANY_BYTES, templates=ANY_BYTES, kind=st.sampled_from([b"classification\n", b"retrieval\n", b""]),
       count=st.sampled_from([b"1\n", b"x", b"\xe9"]))
def test_clip_benchmark_layout_files(folder, shard, names, templates, kind, count):
    from cliplab.data.webdataset import load_webdataset

    root = folder / "layout"
    write(root, "test/0.tar", shard)
    write(root, "test/nshards.txt", count)
    write(root, "classnames.txt", names)
    write(root, "zeroshot_classification_templates.txt", templates)
    write(root, "dataset_type.txt", kind)
    ds = read(lambda: load_webdataset(str(root), str(root), "test"), "classnames.txt", "dataset_type.txt",
              "zeroshot_classification_templates.txt", "nshards.txt", str(root))
    if ds is None:
        return
    assert ds.templates is None or all("{c}" in t or "{}" in t for t in ds.templates)
    assert ds.classnames is None or (ds.labels.max() < len(ds.classnames) and all(ds.classnames))


@SETTINGS
@given(data=ANY_BYTES | parquet_files() | st.lists(st.fixed_dictionaries(
    {k: st.just("x") for k in ("run_id", "command", "task", "model", "dataset", "metric")},
    optional={"value": LEAVES, "n": LEAVES, "seed": LEAVES, "timestamp": LEAVES}), max_size=3).map(jsonl_bytes),
       suffix=st.sampled_from([".jsonl", ".parquet"]))
def test_results_stores(folder, data, suffix):
    from cliplab.results.store import COLUMNS, read_results

    store = folder / "store"
    for p in store.glob("*"):
        p.unlink()
    write(store, f"run{suffix}", data)
    df = read(lambda: read_results(store), f"run{suffix}")
    if df is None:
        return
    from cliplab.results.result import TIDY_FRONT

    # the tidy frame (issue 24): every store column, what a number is first, the stored name in metric_name
    assert set(COLUMNS) <= set(df.columns) and list(df.columns[:len(TIDY_FRONT)]) == TIDY_FRONT
    assert df["value"].dtype == np.float64
    assert str(df["n"].dtype) == "Int64" and all(isinstance(v, str) for v in df["metric_name"])


@SETTINGS
@given(value=JSON_VALUES | st.fixed_dictionaries({k: LEAVES for k in ("dataset", "model", "task")},
                                                 optional={"metrics": JSON_VALUES, "split": LEAVES}),
       raw=st.none() | st.binary(max_size=60))
def test_clip_benchmark_results(folder, value, raw):
    from cliplab.report.html import import_clip_benchmark
    from cliplab.results.store import COLUMNS
    from cliplab.studies import discover

    discover()
    path = write(folder, "cb.json", json_bytes(value) if raw is None else raw)
    df = read(lambda: import_clip_benchmark([path]), path.name)
    if df is None:
        return
    from cliplab.results.result import TIDY_FRONT

    assert set(df.columns) == {*COLUMNS, "class", "true", "predicted", "metric_name"}
    assert list(df.columns[:len(TIDY_FRONT)]) == TIDY_FRONT and set(df.command) <= {"clip_benchmark"}
