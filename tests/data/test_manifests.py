"""Manifests (CSV, TSV, JSONL, parquet; local or through fsspec) listing a class folder's images give the folder's
cache keys, labels and embeddings; labels are class names or class numbers named by a classnames file; a bad
manifest is one clear error naming it, and a row whose file is missing is a skipped image with its reason."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.data import open_dataset
from cliplab.embed import embed_images
from cliplab.errors import CliplabError
from layouts import COLOURS, KW, folder, folder_files, model  # noqa: F401 - fixtures
from test_splits import error_line

FORMATS = ("csv", "tsv", "jsonl", "parquet")


def rows(folder, label="name") -> list[dict]:
    """One row per image of the folder's test split, paths relative to the folder."""
    names = sorted(COLOURS)
    return [{"filepath": str(p.relative_to(folder)), "caption": f"a {names[c]} thing",
             "label": names[c] if label == "name" else c} for p, c in folder_files(folder)]


def write(path, table: list[dict]):
    """``table`` as a manifest in the format of ``path``'s suffix."""
    suffix = path.suffix.lstrip(".")
    if suffix == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in table))
    elif suffix == "parquet":
        pd.DataFrame(table).to_parquet(path)
    else:
        pd.DataFrame(table).to_csv(path, index=False, sep="\t" if suffix == "tsv" else ",")
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_manifest_gives_the_folders_labels_keys_and_embeddings(model, folder, fmt, tmp_path):
    manifest = write(folder / f"manifest-{fmt}.{fmt}", rows(folder))
    ds, ref = open_dataset(str(manifest)), open_dataset(str(folder), split="test")
    assert (ds.name, ds.split, ds.classnames) == (f"manifest-{fmt}", "all", ref.classnames)
    assert ds.labels.tolist() == ref.labels.tolist() and ds.captions[0] == ["a blue thing"]
    assert ds.source.keys() == ref.source.keys()
    a = cliplab.embed(model, str(folder), split="test", cache_dir=tmp_path / "folder", **KW)
    b = cliplab.embed(model, str(manifest), cache_dir=tmp_path / "manifest", **KW)
    assert a.shape[0] == 12 and np.array_equal(a, b)


def test_a_remote_manifest_is_read_through_fsspec(model, folder, tmp_path):
    pytest.importorskip("fsspec")
    manifest = write(folder / "remote.parquet", rows(folder))
    ds = open_dataset(f"file://{manifest}")
    assert type(ds.source).__name__ == "UrlSource" and ds.source.id(0).startswith("file://")
    ref = open_dataset(str(folder), split="test")
    assert ds.source.keys() == ref.source.keys() and ds.labels.tolist() == ref.labels.tolist()
    a = cliplab.embed(model, str(folder), split="test", cache_dir=tmp_path / "folder", **KW)
    assert np.array_equal(a, cliplab.embed(model, f"file://{manifest}", cache_dir=tmp_path / "remote", **KW))


def test_class_numbers_are_named_by_a_classnames_file(folder, tmp_path):
    manifest = write(folder / "numbers.csv", rows(folder, label="number"))
    names = tmp_path / "names.txt"
    names.write_text("navy\nforest\nbrick\n")
    ds = open_dataset(str(manifest), classnames=str(names))
    assert ds.classnames == ["navy", "forest", "brick"]
    assert ds.labels.tolist() == open_dataset(str(folder), split="test").labels.tolist()
    renamed = tmp_path / "names.json"  # class names (strings) mapped by a JSON object
    renamed.write_text(json.dumps({"blue": "navy", "green": "forest", "red": "brick"}))
    assert open_dataset(str(write(folder / "names.jsonl", rows(folder))), classnames=str(renamed)).classnames == \
        ["navy", "forest", "brick"]


def test_columns_are_chosen_with_the_spec(folder):
    table = [{"file": r["filepath"], "colour": r["label"], "alt": r["caption"], "note": "x"} for r in rows(folder)]
    manifest = write(folder / "chosen.parquet", table)
    ds = open_dataset(f"{manifest}#image=file,label=colour,caption=alt")
    assert ds.classnames == sorted(COLOURS) and ds.captions[-1] == ["a red thing"] and len(ds) == 12
    only_paths = write(folder / "paths.csv", [{"image": r["filepath"]} for r in rows(folder)])
    plain = open_dataset(str(only_paths))  # a plain list of images
    assert plain.labels is None and plain.captions is None and len(plain) == 12


def test_a_missing_file_is_a_skipped_image_with_its_reason(model, folder, tmp_path):
    table = rows(folder)[:3] + [{"filepath": "test/red/gone.png", "caption": "lost", "label": "red"}]
    ds = open_dataset(str(write(folder / "missing.csv", table)))
    res = embed_images(model, ds, tmp_path)
    assert res.indices.tolist() == [0, 1, 2] and len(res.failures) == 1
    index, where, reason = res.failures[0]
    assert index == 3 and where.endswith("gone.png") and "No such file" in reason


def _bad(name: str, table, tail: str = ""):
    """A case: a manifest ``name`` holding ``table`` (rows, or raw text), spelled with ``tail``."""
    def make(folder):
        path = folder / name
        if isinstance(table, str):
            path.write_text(table)
        else:
            write(path, table)
        return str(path) + tail
    return make


ROWS = [{"filepath": "test/red/red-1.png", "caption": "a", "label": "red"}]
CASES = {  # name: (make(folder) -> spec, keywords, what the message says)
    "no path column": (_bad("nopath.csv", [{"caption": "a", "label": "red"}]), {},
                       ["has no image path column", "found caption, label", "#image=COLUMN"]),
    "unknown label column": (_bad("m1.csv", ROWS, "#label=colour"), {},
                             ["no column 'colour' for the labels", "filepath, caption, label"]),
    "unknown image column": (_bad("m2.parquet", ROWS, "#image=file"), {}, ["no column 'file' for the image paths"]),
    "unknown caption column": (_bad("m3.jsonl", ROWS, "#caption=alt"), {}, ["no column 'alt' for the captions"]),
    "unknown option": (_bad("m4.csv", ROWS, "#colour=label"), {}, ["unknown option 'colour' for a manifest"]),
    "class numbers without names": (_bad("m5.csv", [dict(ROWS[0], label=2)]), {},
                                    ["has class numbers in its labels (column 'label')", "classnames"]),
    "no caption or label": (_bad("m6.csv", [{"filepath": "a.png", "note": "x"}]), {},
                            ["has no caption column and no label column", "#caption=COLUMN,label=COLUMN"]),
    "two labels for one image": (_bad("m7.csv", ROWS + [dict(ROWS[0], label="blue")]), {},
                                 ["row 2 (line 3): gives test/red/red-1.png the label 'blue', an earlier "
                                  "row 'red'"]),
    "row without path": (_bad("m8.jsonl", ROWS + [{"caption": "b", "label": "red"}]), {},
                         ["line 2: field filepath: is missing"]),
    "invalid JSON": (_bad("m9.jsonl", '{"image": "a.png", "caption": "x"}\n{oops\n'), {}, ["m9.jsonl: line 2, column 2: invalid JSON"]),
    "not parquet": (_bad("m10.parquet", "not a parquet file"), {}, ["m10.parquet: not a readable parquet file"]),
    "a split": (_bad("m11.csv", ROWS), {"split": "test"}, ["has no split", "leave the split out"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_manifests_are_one_clear_error(case, folder):
    make, kw, says = CASES[case]
    spec = make(folder)
    with pytest.raises(CliplabError) as err:
        cliplab.load_dataset(spec, **kw)
    message = str(err.value)
    assert all(s in message for s in says), message
    assert spec.split("#")[0] in message  # names the input


def test_column_choices_are_only_for_tables(folder):
    with pytest.raises(CliplabError, match="column choices .* are for manifests"):
        open_dataset(f"{folder}#label=x", split="test")


@pytest.mark.parametrize("case", ["no path column", "unknown label column"])
def test_the_command_line_prints_one_error_line(case, folder, trained_cache):
    make, _, says = CASES[case]
    spec = make(folder)
    line = error_line(CliRunner().invoke(app, ["embed", "--dataset", spec, "--cache-dir", str(trained_cache),
                                               "--quiet"]))
    assert says[0] in line and "--dataset" in line
