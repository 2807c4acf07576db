"""Datasets never silently change meaning: named splits exist, split folders are never classes, one class is an
error, and whatever is fitted or selected never sees an evaluated image."""
import json

import pytest
from typer.testing import CliRunner

from conftest import make_image
from cliplab.cli import app
from cliplab.data import SplitError, open_dataset
from cliplab.data.base import check_disjoint, image_ids
from cliplab.errors import DatasetError

runner = CliRunner()
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def make_split_folder(root, splits=("test", "validation"), classes=("red", "green"), n=4):
    for split in splits:
        for c in classes:
            for i in range(n):
                make_image(root / split / c / f"{split}-{c}-{i}.png", color=COLOURS[c])
    return root


def tiny_model_args(tiny_checkpoint):
    cfg, ckpt, _ = tiny_checkpoint
    return ["--model", str(cfg), "--pretrained", str(ckpt)]


def error_line(res) -> str:
    """The one `error:` line of a failed command (and proof there is nothing else of note)."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def test_split_folders_are_never_classes(tmp_path):
    root = make_split_folder(tmp_path / "eurosat")
    with pytest.raises(DatasetError,
                       match=r"holds split folders \(test, validation\).*choose one with split \(e\.g\. split test\)"):
        open_dataset(str(root), cache_dir=tmp_path)
    ds = open_dataset(str(root), split="validation", cache_dir=tmp_path)
    assert ds.classnames == ["green", "red"] and len(ds) == 8 and ds.split == "validation"
    assert ds.name == "eurosat"  # named after the collection, not the split folder


def test_a_split_folder_itself_is_named_after_its_collection(tmp_path):
    root = make_split_folder(tmp_path / "eurosat")
    ds = open_dataset(str(root / "test"), cache_dir=tmp_path)
    assert (ds.name, ds.split, len(ds)) == ("eurosat", "test", 8)
    same = open_dataset(str(root / "test"), split="test", cache_dir=tmp_path)
    assert same.fingerprint == ds.fingerprint and same.name == "eurosat"


def test_a_missing_split_names_the_ones_that_exist(tmp_path):
    root = make_split_folder(tmp_path / "eurosat")
    with pytest.raises(SplitError, match=r"no split 'tset'; its splits: test, validation"):
        open_dataset(str(root), split="tset", cache_dir=tmp_path)
    flat = tmp_path / "flat"
    for c in ("red", "green"):
        make_image(flat / c / "a.png", color=COLOURS[c])
    with pytest.raises(SplitError, match="has no splits"):
        open_dataset(str(flat), split="train", cache_dir=tmp_path)


def test_torchvision_split_typo_fails_before_anything_is_loaded(tmp_path):
    # cifar10 maps split to train=(split == "train"): a typo used to evaluate the test set silently
    with pytest.raises(SplitError, match=r"cifar10 has no split 'tset'; its splits: train, test"):
        open_dataset("cifar10", split="tset", data_root=str(tmp_path), cache_dir=tmp_path, download=False)
    with pytest.raises(SplitError, match="its splits: train, val, test"):
        open_dataset("dtd", split="validation", data_root=str(tmp_path), cache_dir=tmp_path, download=False)


def test_shapes_and_caption_files_reject_unknown_splits(tmp_path):
    with pytest.raises(SplitError, match="shapes has no split 'tset'"):
        open_dataset("shapes", split="tset", cache_dir=tmp_path)
    img = make_image(tmp_path / "c" / "a.png")
    (tmp_path / "c" / "caps.csv").write_text(f"image,caption\n{img.name},a red thing\n")
    with pytest.raises(SplitError, match="manifest .* has no splits"):
        open_dataset(str(tmp_path / "c" / "caps.csv"), split="test", cache_dir=tmp_path)
    assert len(open_dataset(str(tmp_path / "c" / "caps.csv"), cache_dir=tmp_path)) == 1


def test_coco_file_split_must_match_the_file(tmp_path):
    from cliplab.data.coco import load_caption_json

    img = make_image(tmp_path / "val2017" / "1.jpg", fmt="JPEG")
    ann = tmp_path / "annotations" / "captions_val2017.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": img.name}],
                               "annotations": [{"image_id": 1, "caption": "a red square"}]}))
    assert load_caption_json(ann, split="val").split == "val2017"
    with pytest.raises(SplitError, match="one split: val2017"):
        load_caption_json(ann, split="train")


def test_fewer_than_two_classes_is_an_error(tmp_path, tiny_checkpoint):
    one = tmp_path / "one"
    for i in range(3):
        make_image(one / "cat" / f"{i}.png")
    res = runner.invoke(app, ["zeroshot", "--dataset", str(one), "--cache-dir", str(tmp_path / "cache"),
                              "--quiet", *tiny_model_args(tiny_checkpoint)])
    assert "only one class ('cat')" in error_line(res)  # used to report 100 %
    res = runner.invoke(app, ["inspect", str(one / "cat" / "0.png"), "--dataset", str(one), "--quiet",
                              "--cache-dir", str(tmp_path / "cache"), *tiny_model_args(tiny_checkpoint)])
    assert "only one class ('cat')" in error_line(res)


def test_cli_split_errors_name_the_flag(tmp_path, tiny_checkpoint):
    root = make_split_folder(tmp_path / "eurosat")
    common = ["--cache-dir", str(tmp_path / "cache"), "--quiet", *tiny_model_args(tiny_checkpoint)]
    line = error_line(runner.invoke(app, ["zeroshot", "--dataset", str(root), *common]))
    assert "split folders (test, validation)" in line and "--split" in line
    line = error_line(runner.invoke(app, ["zeroshot", "--dataset", str(root), "--split", "tset", *common]))
    assert line.startswith("error: --split 'tset':") and "its splits: test, validation" in line
    # selection needs a train split: none here, so it stops instead of carving one out of the test images
    line = error_line(runner.invoke(app, ["prompts", "--dataset", str(root), "--split", "test", "--select",
                                          "--templates", "a photo of a {}.", "--templates", "{}", *common]))
    assert line.startswith("error: --select-split 'train':") and "its splits: test, validation" in line
    line = error_line(runner.invoke(app, ["probe", "--dataset", str(root), "--split", "test", "--kshot", "0",
                                          *common]))
    assert line.startswith("error: --train-split 'train':") and "validation (choose one with --train-split)" in line


def test_selection_never_sees_an_evaluated_image(tmp_path, tiny_checkpoint):
    """The old leak: --select with a limited test set and the same split as the selection source (fingerprints
    differed by the limit tag, so the guard did not fire) selected on test images."""
    from cliplab.models import open_model
    from cliplab.prompts import resolve_all
    from cliplab.inputs import Inputs
    from cliplab.studies.prompts import PromptsParams, run_prompts

    root = make_split_folder(tmp_path / "colours", splits=("train", "test"), classes=("red", "green", "blue"), n=6)
    cfg, ckpt, _ = tiny_checkpoint
    model = open_model(str(cfg), str(ckpt), cache_dir=tmp_path / "cache")
    sets = resolve_all(["a photo of a {}.", "{}", "a drawing of a {}."])
    test = open_dataset(str(root), split="test", limit=10, cache_dir=tmp_path)
    leaky = open_dataset(str(root), split="test", cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="shares 10 image"):
        run_prompts(Inputs.of(model, test, train=leaky, template_sets=sets, options=tmp_path / "cache"),
                    PromptsParams(bootstrap=100, select=True))
    train = open_dataset(str(root), split="train", cache_dir=tmp_path)
    study = run_prompts(Inputs.of(model, test, train=train, template_sets=sets, options=tmp_path / "cache"),
                        PromptsParams(bootstrap=100, select=True, val_fraction=0.5))
    seen = set(study.selection_ids)
    test_paths = {test.source.id(i) for i in range(len(test))}
    assert len(seen) == 9 and seen <= set(train.source.paths)
    assert not seen & test_paths and not image_ids(train) & image_ids(test)


def test_probe_cannot_train_on_evaluated_images(tmp_path, tiny_checkpoint):
    """Regression: --train-split test --split test --limit N passed the fingerprint guard."""
    root = make_split_folder(tmp_path / "colours", splits=("train", "test"), classes=("red", "green"), n=5)
    line = error_line(runner.invoke(app, [
        "probe", "--dataset", str(root), "--split", "test", "--limit", "6", "--train-split", "test", "--kshot", "0",
        "--cache-dir", str(tmp_path / "cache"), "--quiet", *tiny_model_args(tiny_checkpoint)]))
    assert "shares 6 image(s) with the evaluated split" in line


def test_fitting_split_with_other_classes_is_refused(tmp_path):
    root = tmp_path / "d"
    make_split_folder(root, splits=("train",), classes=("red", "green", "blue"), n=2)
    make_split_folder(root, splits=("test",), classes=("red", "green"), n=2)
    train = open_dataset(str(root), split="train", cache_dir=tmp_path)
    test = open_dataset(str(root), split="test", cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="other classes .*only there: blue"):
        check_disjoint(train, test, "probe training")


def test_unreadable_images_only_is_one_error_line(tmp_path, tiny_checkpoint):
    root = tmp_path / "broken"
    for c in ("a", "b"):
        for i in range(2):
            p = root / c / f"{i}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"not a jpeg at all")
    res = runner.invoke(app, ["cluster", "--dataset", str(root), "--cache-dir", str(tmp_path / "cache"), "--quiet",
                              *tiny_model_args(tiny_checkpoint)])
    assert "none of the 4 images could be read" in error_line(res)

