"""Datasets: shapes determinism, folders, caption files, class names, --limit; real samples when present."""
import json

import numpy as np
import pytest

from conftest import SHARED_DATA, make_image
from cliplab.data import open_dataset
from cliplab.data.classnames import clean_classname, clean_classnames
from cliplab.errors import DatasetError


def test_classname_cleaning():
    assert clean_classname("aquarium_fish") == "aquarium fish"
    assert clean_classname("AnnualCrop") == "annual crop"
    assert clean_classnames(["AnnualCrop", "Forest", "SeaLake"]) == ["annual crop", "forest", "sea lake"]
    assert clean_classnames(["Abyssinian", "Bengal"]) == ["Abyssinian", "Bengal"]  # proper nouns stay


def test_shapes_is_deterministic_and_labelled(tmp_path):
    from cliplab.data.shapes import ATTRIBUTE_CLASSNAMES, render

    a = np.asarray(render("star", "red", "large", "top left", "striped", seed=7))
    b = np.asarray(render("star", "red", "large", "top left", "striped", seed=7))
    assert np.array_equal(a, b) and a.shape == (64, 64, 3)
    ds = open_dataset("shapes:color", split="test", cache_dir=tmp_path)
    assert len(ds) == 1000 and ds.classnames == ATTRIBUTE_CLASSNAMES["color"]
    assert set(np.unique(ds.labels)) == set(range(6))
    # the colour word of the label appears in the full caption of every image
    colours = [n.split()[0] for n in ds.classnames]
    assert all(colours[lab] in caps[0] for lab, caps in zip(ds.labels, ds.captions))
    # the red channel dominates in images labelled red (a pixel-level check of the labels)
    red = [i for i in range(200) if ds.labels[i] == 0]
    img = np.asarray(ds.source.load(red[0])).astype(int)
    assert (img[..., 0] - img[..., 2] > 100).sum() > 20


def test_folder_with_classes_and_classnames_file(tmp_path):
    for c in ("aquarium_fish", "maple_tree"):
        for i in range(3):
            make_image(tmp_path / "root" / c / f"{i}.png")
    ds = open_dataset(str(tmp_path / "root"))
    assert ds.classnames == ["aquarium fish", "maple tree"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"aquarium_fish": "goldfish", "maple_tree": "maple"}))
    assert open_dataset(str(tmp_path / "root"), classnames=str(names)).classnames == ["goldfish", "maple"]
    bad = tmp_path / "bad.txt"
    bad.write_text("only one\n")
    with pytest.raises(DatasetError, match="has 1 names but the dataset has 2"):
        open_dataset(str(tmp_path / "root"), classnames=str(bad))


def test_caption_files_csv_and_jsonl(tmp_path):
    for i in range(3):
        make_image(tmp_path / "img" / f"{i}.png")
    (tmp_path / "caps.csv").write_text("image,caption\nimg/0.png,a cat\nimg/0.png,a small cat\nimg/1.png,a dog\n"
                                       "img/2.png,a bird\n")
    ds = open_dataset(str(tmp_path / "caps.csv"))
    assert len(ds) == 3 and ds.captions[0] == ["a cat", "a small cat"] and ds.labels is None
    (tmp_path / "caps.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"image": "img/0.png", "captions": ["x", "y"], "label": "cat"},
        {"image": "img/1.png", "caption": "z", "label": "dog"}]))
    ds = open_dataset(str(tmp_path / "caps.jsonl"))
    assert ds.captions == [["x", "y"], ["z"]] and ds.classnames == ["cat", "dog"] and ds.labels.tolist() == [0, 1]
    (tmp_path / "nocap.csv").write_text("image,foo\nimg/0.png,1\n")
    with pytest.raises(DatasetError, match="no caption column"):
        open_dataset(str(tmp_path / "nocap.csv"))


def test_limit_is_a_stable_subset_covering_classes(tmp_path):
    for c in "abcd":
        for i in range(10):
            make_image(tmp_path / "r" / c / f"{i}.png")
    a = open_dataset(str(tmp_path / "r"), limit=12)
    b = open_dataset(str(tmp_path / "r"), limit=12)
    assert a.paths == b.paths and len(a) == 12 and len(set(a.labels.tolist())) == 4


def test_unknown_dataset_and_offline_torchvision(tmp_path):
    with pytest.raises(DatasetError, match="not a known dataset"):
        open_dataset("imagenet-typo-xyz", cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="could not be downloaded"):
        open_dataset("cifar10", data_root=str(tmp_path / "tv"), cache_dir=tmp_path)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data (real image samples) not present")
def test_real_samples_load():
    ds = open_dataset(str(SHARED_DATA / "eurosat"), split="test")
    assert len(ds) == 2700 and ds.classnames[0] == "annual crop" and ds.classnames[-1] == "sea lake"
    cifar = open_dataset(str(SHARED_DATA / "cifar10-test"), limit=50)
    assert len(cifar) == 50 and "airplane" in cifar.classnames
    img = cifar.source.load(0)
    assert img.mode == "RGB" and img.size == (32, 32)
