"""Hugging Face datasets (saved with save_to_disk) holding a class folder's images give the folder's cache keys,
labels and embeddings; ClassLabel names are the class names; columns are found or chosen; the hub spelling fails
at once offline; every bad input is one clear error naming it."""
from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from PIL import Image

import cliplab
from cliplab.data import open_dataset
from cliplab.errors import CliplabError
from layouts import COLOURS, KW, folder, folder_files, model  # noqa: F401 - fixtures

datasets = pytest.importorskip("datasets")
NAMES = sorted(COLOURS)


def table(folder, **columns) -> dict:
    """The folder's test images as PIL images (opened from their files), their class numbers, and more columns."""
    files = folder_files(folder)
    return {"image": [Image.open(p) for p, _ in files], "label": [c for _, c in files],
            **{k: v(files) for k, v in columns.items()}}


def save(data: dict, path, features: dict | None = None):
    ds = datasets.Dataset.from_dict(data, features=datasets.Features(features) if features else None)
    ds.save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="module")
def saved(folder, tmp_path_factory):
    """A save_to_disk folder: Image column + ClassLabel column + captions."""
    features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES), "text": datasets.Value("string")}
    data = table(folder, text=lambda files: [f"a {NAMES[c]} thing" for _, c in files])
    return save(data, tmp_path_factory.mktemp("saved") / "colours-hf", features)


def test_a_saved_dataset_gives_the_folders_labels_keys_and_embeddings(model, folder, saved, tmp_path):
    ds, ref = open_dataset(saved), open_dataset(str(folder), split="test")
    assert (ds.name, ds.split, ds.classnames) == ("colours-hf", "all", NAMES)
    assert ds.labels.tolist() == ref.labels.tolist() and ds.captions[0] == ["a blue thing"]
    assert ds.source.keys() == ref.source.keys()
    a = cliplab.embed(model, str(folder), split="test", cache_dir=tmp_path / "folder", **KW)
    b = cliplab.embed(model, saved, cache_dir=tmp_path / "hf", **KW)
    assert a.shape[0] == 12 and np.array_equal(a, b)
    assert open_dataset(f"hf-datasets:{saved}").fingerprint == ds.fingerprint  # the prefix is optional for a folder


def test_splits_of_a_saved_dataset_dict(folder, tmp_path):
    one = datasets.Dataset.from_dict(table(folder), features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)}))
    path = tmp_path / "dict"
    datasets.DatasetDict({"train": one.select(range(6)), "test": one.select(range(6, 12))}).save_to_disk(str(path))
    test = open_dataset(str(path), split="test")
    assert (test.split, len(test)) == ("test", 6)
    assert test.source.keys() == open_dataset(str(folder), split="test").source.keys()[6:]
    assert not set(test.source.id(i) for i in range(6)) & set(open_dataset(str(path), split="train").source.id(i)
                                                             for i in range(6))  # ids differ across splits
    with pytest.raises(CliplabError, match=r"no split 'val'; its splits: train, test"):
        cliplab.load_dataset(str(path), split="val")
    with pytest.raises(CliplabError, match=r"holds splits \(train, test\): choose one with split"):
        cliplab.load_dataset(str(path))


def test_bytes_path_structs_string_labels_and_chosen_columns(folder, tmp_path):
    files = folder_files(folder)
    data = {"picture": [{"bytes": p.read_bytes(), "path": None} for p, _ in files],
            "thumb": [{"bytes": p.read_bytes(), "path": None} for p, _ in files],
            "colour": [NAMES[c] for _, c in files], "caption": [["one", "two"]] * len(files)}
    path = save(data, tmp_path / "structs")
    with pytest.raises(CliplabError, match=r"several image columns \(picture, thumb\); choose one: .*#image=COLUMN"):
        open_dataset(path)
    with pytest.raises(CliplabError, match=r"column 'caption' holds .*, not one class label per row"):
        open_dataset(f"{path}#image=picture,label=caption")
    ds = open_dataset(f"{path}#image=picture,label=colour")
    assert ds.classnames == NAMES and ds.captions[0] == ["one", "two"]
    assert ds.source.keys() == open_dataset(str(folder), split="test").source.keys()


def test_class_numbers_need_names(folder, tmp_path):
    path = save(table(folder), tmp_path / "ints", {"image": datasets.Image(), "label": datasets.Value("int64")})
    with pytest.raises(CliplabError, match=r"has class numbers in its labels \(column 'label'\); name the classes "
                                           "with classnames"):
        open_dataset(path)
    names = tmp_path / "names.txt"
    names.write_text("navy\nforest\nbrick\n")
    assert open_dataset(path, classnames=str(names)).classnames == ["navy", "forest", "brick"]


CASES = {  # name: (spec after the saved folder, keywords, what the message says)
    "unknown image column": ("#image=photo", {}, ["no column 'photo' for the images", "image, label, text"]),
    "unknown label column": ("#label=fine_label", {}, ["no column 'fine_label' for the labels"]),
    "not an image column": ("#image=text", {}, ["column 'text' holds", "not images"]),
    "not a caption column": ("#caption=label", {}, ["column 'label' holds", "not caption text"]),
    "unknown option": ("#columns=image", {}, ["unknown option 'columns' for a Hugging Face dataset"]),
    "config of a folder": ("#config=x", {}, ["#config= is for hub datasets"]),
    "a split it does not have": ("", {"split": "test"}, ["has no splits", "split 'test'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_inputs_are_one_clear_error(case, saved):
    tail, kw, says = CASES[case]
    with pytest.raises(CliplabError) as err:
        cliplab.load_dataset(saved + tail, **kw)
    assert all(s in str(err.value) for s in says) and saved in str(err.value), str(err.value)


def test_the_hub_spelling_fails_at_once_offline(monkeypatch):
    monkeypatch.setenv("CLIPLAB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(CliplabError, match=r"hf-datasets:someorg/no-such-set: cannot get Hugging Face dataset "
                                           r"'someorg/no-such-set' \(offline and not in the local Hugging Face cache"):
        cliplab.load_dataset("hf-datasets:someorg/no-such-set", split="test")
    assert time.monotonic() - start < 20
    with pytest.raises(CliplabError, match="hf: names a model; a Hugging Face dataset is hf-datasets:org/name"):
        cliplab.load_dataset("hf:someorg/no-such-set")


def test_without_the_datasets_package_the_error_says_what_to_install(saved, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    with pytest.raises(CliplabError, match=r"need the datasets package: pip install 'cliplab\[hf\]'"):
        cliplab.load_dataset(saved)
