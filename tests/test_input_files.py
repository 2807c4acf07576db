"""Every file the user gives is read by one reader (cliplab/files.py): a bad one is one ``error:`` line naming the
file and what is wrong (exit code 2, no traceback) through the command line, the same CliplabError through Python,
and the user's files are left as they were.

One table of faults across every reader (templates, class names, manifests, COCO / Karpathy JSON, Oxford/Paris
ground truth, queries, prompts, descriptions, model files, model configs, CLIP_benchmark's layout, results stores,
CLIP_benchmark JSONs), then what must work (a byte-order mark, stores of both formats), then file names that are not
UTF-8 through every command. The property tests (every reader, arbitrary input) are in tests/test_input_properties.py.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.errors import CliplabError
from conftest import make_image

runner = CliRunner()
LATIN1 = "caf\xe9".encode("latin-1")  # b"caf\xe9": Latin-1, not UTF-8


def parquet_bytes(columns: dict) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def store_row(**kw) -> dict:
    return {"run_id": "r1", "timestamp": "2026-01-01T00:00:00+00:00", "cliplab_version": "0", "command": "zeroshot",
            "task": "zeroshot_classification", "model": "m", "pretrained": "", "dataset": "d", "split": "test",
            "variant": "simple", "metric": "top1", "value": 0.5, "n": 4, **kw}


def jsonl(*rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


GOOD_PARQUET = parquet_bytes({"image": ["a.png", "b.png"], "caption": ["x", "y"]})
GND = {"imlist": ["red0", "red1"], "qimlist": ["red0"], "gnd": [{"easy": [1], "hard": [], "junk": []}]}
TAR = None  # a one-sample shard, made by the data fixture


@dataclass
class Case:
    """A fault: the files of the case (relative path -> bytes; None makes a folder), the command line (``@name``:
    a file of the case, ``@data``: the class folder, ``@store``: a good results store), the same call in Python
    (``api(path, data, cache)``), what both messages say, and how each door names the parameter."""
    name: str
    files: dict[str, bytes | None]
    cli: list[str]
    api: Callable
    says: list[str]
    flag: str
    keyword: str
    cache: bool = True  # the command takes --cache-dir (report does not)
    extra: dict = field(default_factory=dict)


def Z(name, files, flag, keyword, says, cli_value, api_kw, command="zeroshot", api_fn="zeroshot", extra_cli=(),
      extra_api=None, dataset="@data"):
    """A case run as ``command --dataset DATA --FLAG VALUE``, and in Python ``api_fn(dataset=..., keyword=...)``."""
    def api(path, data, cache):
        kw = {"dataset": data if dataset == "@data" else path(dataset[1:])}
        kw.update({k: (path(v[1:]) if isinstance(v, str) and v.startswith("@") else v)
                   for k, v in {**api_kw, **(extra_api or {})}.items()})
        return getattr(cliplab, api_fn)("tiny-shapes", cache_dir=cache, quiet=True, **kw)
    return Case(name, files, [command, "--dataset", dataset, flag, cli_value, *extra_cli], api, says, flag, keyword)


def templates(name, files, says, value="@t.txt"):
    return Z(name, files, "--templates", "templates", says, value, {"templates": value})


def classnames(name, files, says, value):
    return Z(name, files, "--classnames", "classnames", says, value, {"classnames": value})


def manifest(name, files, says, value):
    return Case(name, files, ["embed", "--dataset", value], lambda path, data, cache: cliplab.embed(
        "tiny-shapes", path(value[1:]), cache_dir=cache, quiet=True), says, "--dataset", "dataset")


def caption_json(name, files, says):
    return Case(name, files, ["retrieval", "--dataset", "@c.json"], lambda path, data, cache: cliplab.retrieval(
        "tiny-shapes", path("c.json"), cache_dir=cache, quiet=True), says, "--dataset", "dataset")


def ground_truth(name, files, says, value="@gt"):
    return Z(name, files, "--gt", "gt", says, value, {"gt": value}, command="similar", api_fn="similar")


def queries(name, files, says, value):
    return Z(name, files, "--queries", "queries", says, value, {"queries": value}, command="search",
             api_fn="search")


def prompts_file(name, files, says):
    def api(path, data, cache):
        return cliplab.inspect("tiny-shapes", str(Path(data) / "red" / "red0.png"), prompts=path("p.txt"),
                               cache_dir=cache, quiet=True)
    return Case(name, files, ["inspect", "@data/red/red0.png", "--prompts", "@p.txt"], api, says, "--prompts",
                "prompts")


def descriptions(name, files, says):
    return Z(name, files, "--descriptions", "descriptions", says, "@d.json", {"descriptions": "@d.json"},
             command="prompts", api_fn="prompts")


def models_file(name, files, says, value):
    def api(path, data, cache):
        return cliplab.compare(models=path(value[1:]), dataset=data, cache_dir=cache, quiet=True)
    return Case(name, files, ["compare", "--dataset", "@data", "--models", value], api, says, "--models", "models")


def model_config(name, files, says):
    def api(path, data, cache):
        return cliplab.zeroshot(path("cfg.json"), data, cache_dir=cache, quiet=True)
    return Case(name, files, ["zeroshot", "--dataset", "@data", "--model", "@cfg.json"], api, says, "--model",
                "model")


def layout(name, files, says):
    """CLIP_benchmark's layout ROOT/{classnames.txt, ...}, ROOT/test/{nshards.txt, 0.tar} with ``files`` over it."""
    base = {"root/test/nshards.txt": b"1\n", "root/test/0.tar": "TAR", "root/classnames.txt": b"red\nblue\n",
            "root/dataset_type.txt": b"classification\n"}
    case = Z(name, {**base, **files}, "--split", "split", says, "test", {"split": "test"}, dataset="@root")
    case.flag, case.keyword = "--dataset", "dataset"
    return case


def store(name, files, says):
    def api(path, data, cache):
        return cliplab.read_results(path("store"))
    return Case(name, files, ["report", "@store", "-o", "@out/report.html"], api, says, "results folder",
                "results folder", cache=False)


def clip_benchmark(name, content: bytes, says):
    def api(path, data, cache):
        from cliplab.report.html import import_clip_benchmark

        return import_clip_benchmark([path("cb.json")])
    return Case(name, {"cb.json": content, "good/x.jsonl": jsonl(store_row())},
                ["report", "@good", "--clip-benchmark", "@cb.json", "-o", "@out/report.html"], api, says,
                "--clip-benchmark", "clip_benchmark", cache=False)


NOT_UTF8 = ["not UTF-8", "save it as UTF-8"]

CASES = [
    # templates (cliplab/prompts.py)
    templates("templates: Latin-1 text", {"t.txt": b"a photo of a {}.\nune photo de " + LATIN1 + b" {}\n"},
              ["t.txt", "line 2", "byte 17", *NOT_UTF8]),
    templates("templates: UTF-16 text", {"t.txt": "a photo of a {}.\n".encode("utf-16")}, ["t.txt", "UTF-16"]),
    templates("templates: only a comment line", {"t.txt": b"# my templates\n"},
              ["t.txt", "has no templates", "comments"]),
    templates("templates: empty file", {"t.txt": b""}, ["t.txt", "is empty"]),
    templates("templates: a line without {}", {"t.txt": b"a photo of a {}.\n# c\nno slot here\n"},
              ["t.txt", "line 3", "no slot here", "placeholder"]),
    templates("templates: BOM kept out of the template", {"t.txt": b"\xef\xbb\xbfno slot\n"},
              ["t.txt", "line 1", 'template "no slot" has']),
    templates("templates: NUL bytes", {"t.txt": b"a {}\x00\x00\n"}, ["t.txt", "NUL byte"]),
    templates("templates: a folder", {"t.txt": None}, ["t.txt", "is a folder"]),
    templates("templates: malformed JSON", {"t.json": b'{"set": ["a {}"'}, ["t.json", "line 1", "invalid JSON"],
              "@t.json"),
    templates("templates: a number in a JSON set", {"t.json": b'{"set": ["a {}", 3]}'},
              ["t.json", "field set[1]", "should be text", "number 3"], "@t.json"),
    templates("templates: a JSON set that is text", {"t.json": b'{"set": "a photo of a {}."}'},
              ["t.json", "field set", "should be a list"], "@t.json"),
    templates("templates: an empty JSON list", {"t.json": b"[]"}, ["t.json", "should not be empty"], "@t.json"),
    templates("templates: JSON null", {"t.json": b"null"}, ["t.json", "should be a list of templates"], "@t.json"),
    # class names (cliplab/data/classnames.py)
    classnames("class names: Latin-1 text", {"c.txt": b"red\nbl" + LATIN1 + b"\n"}, ["c.txt", "line 2", *NOT_UTF8],
               "@c.txt"),
    classnames("class names: malformed JSON", {"c.json": b'["red", "blue"'}, ["c.json", "invalid JSON"], "@c.json"),
    classnames("class names: a number in a JSON list", {"c.json": b'["red", 2]'},
               ["c.json", "field [1]", "should be text"], "@c.json"),
    classnames("class names: a folder missing from a JSON object", {"c.json": b'{"red": "a red thing"}'},
               ["c.json", "lacks names for: blue"], "@c.json"),
    classnames("class names: no names", {"c.txt": b"\n \n"}, ["c.txt", "is empty", "class names"], "@c.txt"),
    classnames("class names: only a comment", {"c.txt": b"# names\n"}, ["c.txt", "has no class names"], "@c.txt"),
    classnames("class names: one too many", {"c.txt": b"red\nblue\ngreen\n"}, ["c.txt", "has 3 names", "2 classes"],
               "@c.txt"),
    classnames("class names: JSON number", {"c.json": b"5"}, ["c.json", "should be a list of class names"],
               "@c.json"),
    classnames("class names: a blank name", {"c.json": b'["red", " "]'}, ["c.json", "field [1]", "not be empty"],
               "@c.json"),
    # manifests (cliplab/data/captions.py, CSV/TSV/JSONL/parquet)
    manifest("manifest: a JSONL line that is a number", {"m.jsonl": b'{"image": "a.png", "caption": "x"}\n5\n'},
             ["m.jsonl", "line 2", "JSON object", "number 5"], "@m.jsonl"),
    manifest("manifest: a JSONL line that is null", {"m.jsonl": b'{"image": "a.png", "caption": "x"}\nnull\n'},
             ["m.jsonl", "line 2", "not null"], "@m.jsonl"),
    manifest("manifest: a JSONL line that is a list", {"m.jsonl": b'["a.png", "x"]\n'},
             ["m.jsonl", "line 1", "not a list"], "@m.jsonl"),
    manifest("manifest: an integer image", {"m.jsonl": b'{"image": "a.png", "caption": "x"}\n{"image": 7}\n'},
             ["m.jsonl", "line 2", "field image", "should be text", "number 7"], "@m.jsonl"),
    manifest("manifest: invalid JSON on a line", {"m.jsonl": b'{"image": "a.png", "caption": "x"}\n{oops\n'},
             ["m.jsonl", "line 2, column 2", "invalid JSON"], "@m.jsonl"),
    manifest("manifest: a key given twice", {"m.jsonl": b'{"image": "a.png", "image": "b.png", "caption": "x"}\n'},
             ["m.jsonl", "line 1", "\"image\" is given twice"], "@m.jsonl"),
    manifest("manifest: a caption that is a number", {"m.jsonl": b'{"image": "a.png", "caption": 5}\n'},
             ["m.jsonl", "field caption", "caption or a list of captions"], "@m.jsonl"),
    manifest("manifest: a label that is a fraction", {"m.jsonl": b'{"image": "a.png", "label": 1.5}\n'},
             ["m.jsonl", "field label", "should be a whole number", "number 1.5"], "@m.jsonl"),
    manifest("manifest: a label that is a list", {"m.jsonl": b'{"image": "a.png", "label": ["red"]}\n'},
             ["m.jsonl", "field label", "class name or a class number"], "@m.jsonl"),
    manifest("manifest: Latin-1 CSV", {"m.csv": b"image,caption\na.png," + LATIN1 + b"\n"},
             ["m.csv", "line 2", *NOT_UTF8], "@m.csv"),
    manifest("manifest: a CSV row with an extra field", {"m.csv": b"image,caption\na.png,x,y\n"},
             ["m.csv", "row 1 (line 2)", "has 3 fields", "header row has 2"], "@m.csv"),
    manifest("manifest: a short TSV row", {"m.tsv": b"image\tcaption\na.png\n"},
             ["m.tsv", "row 1 (line 2)", "has 1 fields"], "@m.tsv"),
    manifest("manifest: a CSV column twice", {"m.csv": b"image,caption,caption\na.png,x,y\n"},
             ["m.csv", "column 'caption' appears twice"], "@m.csv"),
    manifest("manifest: an empty CSV", {"m.csv": b""}, ["m.csv", "is empty", "header row"], "@m.csv"),
    manifest("manifest: a truncated parquet", {"m.parquet": GOOD_PARQUET[: len(GOOD_PARQUET) // 2]},
             ["m.parquet", "not a readable parquet file"], "@m.parquet"),
    manifest("manifest: parquet image paths that are numbers",
             {"m.parquet": parquet_bytes({"image": [1, 2], "caption": ["x", "y"]})},
             ["m.parquet", "row 1", "field image", "should be text"], "@m.parquet"),
    # COCO / Karpathy JSON (cliplab/data/coco.py)
    caption_json("COCO: a caption that is a number",
                 {"c.json": json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                                        "annotations": [{"image_id": 1, "caption": 5}]}).encode()},
                 ["c.json", "field annotations[0].caption", "should be text"]),
    caption_json("Karpathy: an image without a file name",
                 {"c.json": json.dumps({"images": [{"sentences": [{"raw": "x"}], "split": "test"}]}).encode()},
                 ["c.json", "field images[0].filename", "is missing"]),
    caption_json("COCO: a list, not an object", {"c.json": b"[1, 2]"}, ["c.json", "COCO captions file"]),
    caption_json("COCO: truncated JSON", {"c.json": b'{"images": ['}, ["c.json", "invalid JSON"]),
    caption_json("COCO: Latin-1", {"c.json": b'{"images": [], "annotations": [{"caption": "' + LATIN1 + b'"}]}'},
                 ["c.json", "line 1", *NOT_UTF8]),
    # Oxford/Paris ground truth (cliplab/data/oxford.py)
    ground_truth("ground truth: a box that is not numbers", {"gt/q1_query.txt": b"red0 a b c d\n"},
                 ["q1_query.txt", "line 1", "field box[0]", "should be a number"]),
    ground_truth("ground truth: a Latin-1 query file", {"gt/q1_query.txt": LATIN1 + b" 1 2 3 4\n"},
                 ["q1_query.txt", *NOT_UTF8]),
    ground_truth("ground truth: a Latin-1 good list",
                 {"gt/q1_query.txt": b"red0 1 2 3 4\n", "gt/q1_good.txt": b"red1\n" + LATIN1 + b"\n"},
                 ["q1_good.txt", "line 2", *NOT_UTF8]),
    ground_truth("ground truth: three values on the query line", {"gt/q1_query.txt": b"red0 1 2\n"},
                 ["q1_query.txt", "expected IMAGE or IMAGE x1 y1 x2 y2"]),
    ground_truth("ground truth: an empty query file", {"gt/q1_query.txt": b"\n"}, ["q1_query.txt", "is empty"]),
    ground_truth("ground truth: a truncated pickle", {"gnd.pkl": pickle.dumps(GND)[:20]},
                 ["gnd.pkl", "cannot read the ground-truth pickle"], "@gnd.pkl"),
    ground_truth("ground truth: easy positives that are text",
                 {"gnd.pkl": pickle.dumps({**GND, "gnd": [{"easy": "x", "hard": []}]})},
                 ["gnd.pkl", "field gnd[0].easy", "should be a list"], "@gnd.pkl"),
    # queries (cliplab/studies/search.py)
    queries("queries: only family lines", {"q.txt": b"# animals\n# plants\n"}, ["q.txt", "has no queries"], "@q.txt"),
    queries("queries: a number in JSON", {"q.json": b'{"a": ["cat", 3]}'}, ["q.json", "field a[1]", "should be text"],
            "@q.json"),
    queries("queries: Latin-1", {"q.txt": LATIN1 + b"\n"}, ["q.txt", "line 1", *NOT_UTF8], "@q.txt"),
    queries("queries: an empty JSON object", {"q.json": b"{}"}, ["q.json", "has no queries"], "@q.json"),
    queries("queries: an empty file", {"q.txt": b""}, ["q.txt", "is empty"], "@q.txt"),
    # prompts (cliplab/studies/inspect.py)
    prompts_file("prompts: one prompt", {"p.txt": b"# c\na photo of a cat\n"}, ["p.txt", "at least two prompts"]),
    prompts_file("prompts: Latin-1", {"p.txt": b"a " + LATIN1 + b"\nb\n"}, ["p.txt", "line 1", *NOT_UTF8]),
    prompts_file("prompts: only comments", {"p.txt": b"# a\n# b\n"}, ["p.txt", "has no prompts"]),
    # descriptions (cliplab/studies/prompts.py)
    descriptions("descriptions: a number", {"d.json": b'{"red": ["a red thing"], "blue": 5}'},
                 ["d.json", "field blue", "text or a list of texts"]),
    descriptions("descriptions: malformed JSON", {"d.json": b'{"red": ['}, ["d.json", "invalid JSON"]),
    descriptions("descriptions: a class without any", {"d.json": b'{"red": "a red thing"}'},
                 ["d.json", "no descriptions for class 'blue'"]),
    descriptions("descriptions: a list, not an object", {"d.json": b'["x"]'}, ["d.json", "should be an object"]),
    # model files (cliplab/models/specs.py)
    models_file("models file: invalid YAML", {"m.yaml": b"- model: [unclosed\n"}, ["m.yaml", "invalid YAML", "line"],
                "@m.yaml"),
    models_file("models file: invalid TOML", {"m.toml": b"[[models]]\nmodel = \n"}, ["m.toml", "invalid TOML"],
                "@m.toml"),
    models_file("models file: a misspelt key", {"m.json": b'[{"model": "tiny-shapes", "pretrianed": "x"}]'},
                ["m.json", "field [0].pretrianed", "is not a known field"], "@m.json"),
    models_file("models file: an empty model name", {"m.yaml": b"- model: ''\n"},
                ["m.yaml", "field [0].model", "not be empty"], "@m.yaml"),
    models_file("models file: Latin-1", {"m.yaml": b"- model: " + LATIN1 + b"\n"}, ["m.yaml", *NOT_UTF8],
                "@m.yaml"),
    models_file("models file: no models", {"m.json": b"[]"}, ["m.json", "should not be empty"], "@m.json"),
    models_file("models file: not YAML, TOML or JSON", {"m.txt": b"tiny-shapes\n"}, ["m.txt", "cannot read .txt"],
                "@m.txt"),
    # model configs (cliplab/models/specs.py: read_model_config, used by openclip.register_config_file)
    model_config("model config: no text_cfg", {"cfg.json": b'{"embed_dim": 32, "vision_cfg": {}}'},
                 ["cfg.json", "field text_cfg", "is missing"]),
    model_config("model config: a list", {"cfg.json": b"[1]"}, ["cfg.json", "open_clip model config"]),
    model_config("model config: embed_dim as text",
                 {"cfg.json": b'{"embed_dim": "32", "vision_cfg": {}, "text_cfg": {}}'},
                 ["cfg.json", "field embed_dim", "whole number"]),
    model_config("model config: invalid JSON", {"cfg.json": b'{"embed_dim": 32,'}, ["cfg.json", "invalid JSON"]),
    # CLIP_benchmark's layout (cliplab/data/webdataset.py)
    layout("layout: Latin-1 classnames.txt", {"root/classnames.txt": b"red\n" + LATIN1 + b"\n"},
           ["classnames.txt", "line 2", *NOT_UTF8]),
    layout("layout: empty templates file", {"root/zeroshot_classification_templates.txt": b"\n"},
           ["zeroshot_classification_templates.txt", "is empty"]),
    layout("layout: Latin-1 nshards.txt", {"root/test/nshards.txt": LATIN1}, ["nshards.txt", *NOT_UTF8]),
    layout("layout: empty dataset_type.txt", {"root/dataset_type.txt": b""}, ["dataset_type.txt", "is empty"]),
    # results stores (cliplab/results/store.py)
    store("store: a truncated parquet file", {"store/a.parquet": GOOD_PARQUET[:300]},
          ["store", "a.parquet", "not a readable parquet file"]),
    store("store: a JSONL line that is null", {"store/a.jsonl": b"null\n"}, ["a.jsonl", "line 1", "not null"]),
    store("store: a row without its metric", {"store/a.jsonl": jsonl({k: v for k, v in store_row().items()
                                                                      if k != "metric"})},
          ["a.jsonl", "line 1", "field metric", "is missing"]),
    store("store: parquet values that are text",
          {"store/a.parquet": parquet_bytes({k: [v if k != "value" else "high"] for k, v in store_row().items()})},
          ["a.parquet", "row 1", "field value", "should be a number"]),
    store("store: Latin-1 JSONL", {"store/a.jsonl": b'{"model": "' + LATIN1 + b'"}\n'}, ["a.jsonl", *NOT_UTF8]),
    # CLIP_benchmark result JSONs (cliplab/report/html.py)
    clip_benchmark("CLIP_benchmark: metrics that are a list",
                   json.dumps({"dataset": "d", "model": "m", "task": "zeroshot_classification",
                               "metrics": [1]}).encode(), ["cb.json", "field metrics", "should be an object"]),
    clip_benchmark("CLIP_benchmark: invalid JSON", b'{"dataset": ', ["cb.json", "invalid JSON"]),
    clip_benchmark("CLIP_benchmark: Latin-1", b'{"dataset": "' + LATIN1 + b'"}', ["cb.json", *NOT_UTF8]),
    clip_benchmark("CLIP_benchmark: no task", json.dumps({"dataset": "d", "model": "m", "metrics": {}}).encode(),
                   ["cb.json", "field task", "is missing"]),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A class folder: red/ and blue/, two images each (the dataset of most cases)."""
    root = tmp_path_factory.mktemp("input-files") / "colours"
    for c, rgb in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        for i in range(2):
            make_image(root / c / f"{c}{i}.png", color=rgb)
    return root


def _tar(data: Path) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, payload in (("s0.png", (data / "red" / "red0.png").read_bytes()), ("s0.cls", b"0")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def make_case(case: Case, folder: Path, data: Path) -> Callable[[str], str]:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, content in case.files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            target.mkdir()
        else:
            target.write_bytes(_tar(data) if content == "TAR" else content)
    return lambda rel: str(folder / rel)


def checksums(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.rglob("*"))
            if p.is_file()}


def cli_args(case: Case, path, data: Path, cache: Path) -> list[str]:
    out = []
    for a in case.cli:
        if a.startswith("@data"):
            a = str(data) + a[len("@data"):]
        elif a.startswith("@"):
            a = path(a[1:])
        out.append(a)
    return out + (["--cache-dir", str(cache), "--quiet"] if case.cache else ["--quiet"])


def test_the_table_covers_every_reader():
    kinds = {c.name.split(":")[0] for c in CASES}
    assert len(CASES) >= 40
    assert kinds >= {"templates", "class names", "manifest", "COCO", "Karpathy", "ground truth", "queries", "prompts",
                     "descriptions", "models file", "model config", "layout", "store", "CLIP_benchmark"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_file_is_one_error_naming_it(case, data, trained_cache, tmp_path):
    folder = tmp_path / "case"
    path = make_case(case, folder, data)
    before = checksums(folder, data)

    res = runner.invoke(app, cli_args(case, path, data, trained_cache))
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and (res.exception is None or isinstance(res.exception, SystemExit))
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert case.flag in lines[0] and all(s in lines[0] for s in case.says), lines[0]

    with pytest.raises(CliplabError) as err:
        case.api(path, str(data), trained_cache)
    message = str(err.value)
    assert "\n" not in message and case.keyword in message and all(s in message for s in case.says), message
    assert lines[0][len("error: "):].replace(case.flag, case.keyword, 1) == message  # only the spelling differs

    assert checksums(folder, data) == before  # the user's files are left as they were
    assert not (folder / "out").exists()  # nothing written


# ---- what must work ------------------------------------------------------------------------------------------

def test_an_excel_csv_utf8_file_with_a_bom_is_read(data, tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark: its first column is still ``image`` (it was refused with
    'no image path column; expected one of image... (found image, ...)')."""
    m = tmp_path / "m.csv"
    m.write_bytes("\ufeffimage,label\n".encode() + f"{data}/red/red0.png,red\n{data}/blue/blue0.png,blue\n".encode())
    ds = cliplab.load_dataset(str(m))
    assert ds.classnames == ["blue", "red"] and ds.labels.tolist() == [1, 0]


def test_bom_template_and_class_name_files_are_read(data, tmp_path):
    from cliplab.data.classnames import read_classnames
    from cliplab.prompts import resolve_templates

    t = tmp_path / "t.txt"
    t.write_bytes(b"\xef\xbb\xbfa photo of a {}.\n")
    assert resolve_templates(str(t))[0].templates == ("a photo of a {}.",)
    c = tmp_path / "c.json"
    c.write_bytes(b'\xef\xbb\xbf["red", "blue"]')
    assert read_classnames(c) == ["red", "blue"]


def _recorded_store(folder: Path, fmt: str, value: float, timestamp: str) -> None:
    from cliplab.results.result import DatasetInfo, ModelInfo, Rows
    from cliplab.results.store import RunRecorder

    rec = RunRecorder("zeroshot", {"k": 5})
    rec.timestamp = rec.base["timestamp"] = timestamp
    rows = Rows()
    rows.add(task="zeroshot_classification", model=ModelInfo("m", pretrained="p"), dataset=DatasetInfo("d", "test", 4),
             metric="top1", value=value, variant="simple", n=4, seed=1)
    rows.add(task="zeroshot_classification", model=ModelInfo("m"), dataset=DatasetInfo("d", "test", 4),
             metric="top5", value=None, variant="", n=None)
    rec.add_rows(rows.frame())
    rec.write(folder, fmt)


@pytest.mark.parametrize("layout_", ["one folder", "two folders"])
def test_parquet_and_jsonl_stores_read_as_one_frame(tmp_path, layout_):
    """A store holding both formats, or a parquet and a JSONL store together, is one frame with the store's column
    types (it was a pyarrow error: JSONL timestamps read back as dates)."""
    a = tmp_path / "a"
    b = a if layout_ == "one folder" else tmp_path / "b"
    _recorded_store(a, "parquet", 0.25, "2026-01-01T00:00:00+00:00")
    _recorded_store(b, "jsonl", 0.75, "2026-01-02T00:00:00+00:00")
    folders = [a] if a == b else [a, b]
    df = cliplab.read_results(*folders)
    assert len(df) == 4 and df.run_id.nunique() == 2
    assert df["value"].tolist()[0] == 0.25 and df["value"].tolist()[2] == 0.75 and df["value"].isna().sum() == 2
    assert str(df["n"].dtype) == "Int64" and str(df["seed"].dtype) == "Int64" and df["value"].dtype == "float64"
    assert df["timestamp"].tolist() == sorted(df["timestamp"].tolist())
    assert {type(t) for t in df["timestamp"]} == {str}
    out = tmp_path / "out" / "report.html"
    res = runner.invoke(app, ["report", *map(str, folders), "-o", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert out.is_file()


# ---- file names that are not UTF-8 ---------------------------------------------------------------------------

CAFE = os.fsdecode(b"caf\xe9.png")  # 'caf\udce9.png': Python keeps the byte as a surrogate escape


@pytest.fixture(scope="module")
def cafe_folder(tmp_path_factory) -> Path:
    """train/ and test/ splits of red/ and blue/ images, with b'caf\\xe9.png' (not UTF-8) among the red ones."""
    root = tmp_path_factory.mktemp("not-utf8") / "set"
    for s, split in enumerate(("train", "test")):  # no image of train is a copy of one of test (a probe refuses)
        for c, rgb in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            for i in range(3):
                make_image(root / split / c / f"{c}{i}.png", color=tuple(v + 3 * i + 10 * s for v in rgb))
        make_image(root / split / "red" / CAFE, color=(200 + 10 * s, 30, 30), fmt="PNG")
    return root


def test_the_image_id_is_kept_exactly(cafe_folder):
    ds = cliplab.load_dataset(str(cafe_folder), split="test")
    ids = [ds.source.id(i) for i in range(len(ds))]
    assert str(cafe_folder / "test" / "red" / CAFE) in ids
    assert os.path.isfile(os.fsencode(next(i for i in ids if CAFE in i)))  # the same bytes open the same file


COMMANDS = {  # command -> (arguments after --dataset SET --split test, output files that must hold the spelling)
    "zeroshot": (["-o", "@z.json", "--predictions", "@z.csv"], ["z.csv"]),
    "prompts": (["-o", "@p.json"], []),
    "probe": (["-o", "@pr.json", "--allow-fewer"], []),
    "compare": (["--model", "tiny-shapes", "-o", "@c.csv"], []),
    "search": (["red", "--image", "@set/test/red/" + CAFE, "-o", "@s.jsonl", "--grids", "@grids"], ["s.jsonl"]),
    "similar": (["--query", "@set/test/red/" + CAFE, "-o", "@si.json", "--grid", "@si.png"], []),
    "cluster": (["-o", "@cl.parquet", "--grid", "@cl.png"], ["cl.parquet"]),
    "embed": (["-o", "@e.npy"], ["e.ids.csv"]),
    "attack": (["-o", "@a.json", "--examples", "@a.png"], []),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_works_on_a_folder_with_a_file_name_that_is_not_utf8(command, cafe_folder, trained_cache,
                                                                           tmp_path):
    """Each writer spells the name caf\\xe9.png (its byte as \\xNN) instead of failing to encode it."""
    extra, spelled = COMMANDS[command]
    args = [a.replace("@set", str(cafe_folder)) if a.startswith("@set") else
            str(tmp_path / a[1:]) if a.startswith("@") else a for a in extra]
    head = ["attack", "typographic"] if command == "attack" else [command]
    store = tmp_path / "store"
    results = ["--results", str(store)] if command != "embed" else []
    res = runner.invoke(app, [*head, "--dataset", str(cafe_folder), "--split", "test", *args, *results,
                              "--cache-dir", str(trained_cache), "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    for name in spelled:
        if name.endswith(".parquet"):
            text = pq.read_table(tmp_path / name).to_pandas().to_csv()
        elif name.endswith(".jsonl"):
            text = " ".join(str(v) for line in (tmp_path / name).read_text(encoding="utf-8").splitlines()
                            for v in json.loads(line).values())
        else:
            text = (tmp_path / name).read_text(encoding="utf-8")
        assert "caf\\xe9.png" in text, text[:500]
    if command != "embed":
        assert len(cliplab.read_results(store))


def test_the_store_the_report_and_a_record_spell_the_name(cafe_folder, trained_cache, tmp_path):
    query = str(cafe_folder / "test" / "red" / CAFE)
    res = runner.invoke(app, ["search", "--image", query, "--dataset", str(cafe_folder), "--split", "test", "-o",
                              str(tmp_path / "hits.csv"), "--results", str(tmp_path / "store"), "--cache-dir",
                              str(trained_cache), "--quiet"])
    assert res.exit_code == 0, res.output
    df = cliplab.read_results(tmp_path / "store")
    assert any("caf\\xe9.png" in v for v in df["variant"])  # the query, spelled, in the store
    out = tmp_path / "report.html"
    assert runner.invoke(app, ["report", str(tmp_path / "store"), "-o", str(out), "--quiet"]).exit_code == 0
    assert "caf\\xe9.png" in out.read_text(encoding="utf-8")
    r = cliplab.similar("tiny-shapes", str(cafe_folder), split="test", query=[query], cache_dir=trained_cache,
                        quiet=True)
    r.save(tmp_path / "py-store")  # the Python door's store writer
    assert "caf\\xe9.png" in (tmp_path / "hits.csv").read_text(encoding="utf-8")
    assert len(cliplab.read_results(tmp_path / "py-store"))


def test_a_real_process_prints_the_name_spelled(cafe_folder, trained_cache):
    """The terminal gets the same spelling (the command sets it on stdout and stderr), not an encoding error."""
    image = os.fsencode(cafe_folder / "test" / "red" / CAFE)
    env = {**os.environ, "CLIPLAB_CACHE_DIR": str(trained_cache), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "cliplab.cli", "similar", "--dataset", os.fsencode(cafe_folder),
                           "--split", "test", "--query", image, "--quiet"], capture_output=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-2000:]
    assert b"caf\\xe9.png" in proc.stdout and b"Traceback" not in proc.stderr


def test_a_class_folder_that_is_not_utf8_is_a_warned_class_name(tmp_path, trained_cache):
    root = tmp_path / "set"
    for name in ("blue", os.fsdecode(b"r\xe9d")):
        for i in range(2):
            make_image(root / name / f"x{i}.png", color=(20, 20, 220) if name == "blue" else (220, 20, 20))
    from cliplab.progress import Progress, use

    class Keep(Progress):
        def __init__(self):
            self.warnings = []

        def warn(self, message):
            self.warnings.append(message)

    with use(Keep()) as seen:
        ds = cliplab.load_dataset(str(root))
    assert ds.classnames == ["blue", "r\\xe9d"]
    assert any("r\\xe9d" in w and "--classnames" in w for w in seen.warnings)
    res = runner.invoke(app, ["zeroshot", "--dataset", str(root), "--cache-dir", str(trained_cache), "--quiet",
                              "--predictions", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    assert "r\\xe9d" in (tmp_path / "p.csv").read_text(encoding="utf-8")
