"""Tar shards (webdataset, CLIP_benchmark's layout) read in place: the same images as a class folder give the same
cache keys, embeddings and zero-shot numbers; the set's class names and templates come with it; every spelling of
shards works; a bad input is one clear error naming it."""
from __future__ import annotations

import gzip
import os
import shutil
import tarfile

import numpy as np
import pytest
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.data import open_dataset
from cliplab.data.filehash import MEMO_NAME, file_hash_memo
from cliplab.data.sources import FileSource
from cliplab.data.webdataset import TarSource, expand_braces
from cliplab.embed import embed_images
from cliplab.errors import CliplabError
from layouts import COLOURS, KW, TEMPLATES, clip_benchmark_layout, folder, model, write_shards  # noqa: F401
from test_splits import error_line


@pytest.fixture(scope="module")
def sets(folder):
    """(class folder with a test split, the same images in CLIP_benchmark's layout, in two shards)."""
    return folder, clip_benchmark_layout(folder, folder.parent / "wds_colours")


def test_clip_benchmark_layout_brings_its_classnames_and_templates(sets):
    folder, root = sets
    ds = open_dataset(str(root), split="test")
    ref = open_dataset(str(folder), split="test")
    assert (ds.name, ds.split, len(ds)) == ("wds_colours", "test", len(ref))
    assert ds.classnames == ref.classnames == sorted(COLOURS)
    assert ds.labels.tolist() == ref.labels.tolist()
    assert ds.templates == tuple(TEMPLATES)
    assert ds.subset([0, 2], tag="x").templates == ds.templates  # carried by subsets (and --limit)
    assert ref.templates is None


def test_shards_give_the_folders_embeddings_and_zeroshot_numbers(model, sets, tmp_path):
    folder, root = sets
    a = cliplab.embed(model, str(folder), split="test", cache_dir=tmp_path / "folder-cache", **KW)
    b = cliplab.embed(model, str(root), split="test", cache_dir=tmp_path / "wds-cache", **KW)  # computed anew
    assert a.shape == (12, model.embed_dim) and np.array_equal(a, b)
    ds = open_dataset(str(root), split="test")
    runs = [cliplab.zeroshot(model, str(spec), split="test", templates=list(ds.templates), ensemble=True,
                             cache_dir=tmp_path / cache, **KW).metrics for spec, cache in
            ((folder, "folder-cache"), (root, "wds-cache"))]
    numbers = [m[m.metric != "images_per_second"].set_index("metric")["value"] for m in runs]  # all but timing
    assert "mean_correct_similarity" in numbers[0] and numbers[0].equals(numbers[1])


def test_shards_share_the_folders_cache_entries(model, sets, tmp_path):
    folder, root = sets
    first = embed_images(model, open_dataset(str(folder), split="test"), tmp_path)
    again = embed_images(model, open_dataset(str(root), split="test"), tmp_path)
    assert first.computed == 12 and again.computed == 0
    assert np.array_equal(first.embeddings, again.embeddings)


@pytest.mark.parametrize("form", ["root", "split folder", "wds prefix", "file url", "shard url", "shard", "braces",
                                  "glob", "folder of shards"])
def test_every_spelling_of_shards_gives_the_same_keys(sets, form, tmp_path):
    if "url" in form:
        pytest.importorskip("fsspec")
    folder, root = sets
    want = open_dataset(str(folder), split="test").source.keys()
    names = str(root / "classnames.txt")
    test = root / "test"
    plain = tmp_path / "plain"  # the shards alone, without CLIP_benchmark's files
    shutil.copytree(test, plain, ignore=shutil.ignore_patterns("nshards.txt"))
    spec, kw, keys = {
        "root": (str(root), {"split": "test"}, want),
        "split folder": (str(test), {}, want),
        "wds prefix": (f"wds:{root}", {"split": "test"}, want),
        "file url": (f"wds:file://{root}", {"split": "test"}, want),
        "shard url": (f"file://{test}/1.tar", {"classnames": names}, want[6:]),
        "shard": (str(test / "1.tar"), {"classnames": names}, want[6:]),
        "braces": (str(test / "{0..1}.tar"), {"classnames": names}, want),
        "glob": (str(test / "*.tar"), {"classnames": names}, want),
        "folder of shards": (str(plain), {"classnames": names}, want),
    }[form]
    ds = open_dataset(spec, **kw)
    assert ds.source.keys() == keys and ds.classnames == sorted(COLOURS)
    assert ds.source.load(len(keys) - 1).size == (48, 40)


def test_a_retrieval_layout_gives_captions_and_runs_caption_retrieval(model, sets, tmp_path):
    files = [p for p in sorted((sets[0] / "test").glob("*/*"))]
    samples = [{p.suffix.lstrip("."): p.read_bytes(), "txt": f"a {p.parent.name} thing\nsomething {i}\n".encode()}
               for i, p in enumerate(files)]
    write_shards(tmp_path / "ret" / "test", samples, 3)
    (tmp_path / "ret" / "dataset_type.txt").write_text("retrieval\n")
    ds = open_dataset(str(tmp_path / "ret"), split="test")
    assert ds.labels is None and ds.templates is None and ds.captions[0] == ["a blue thing", "something 0"]
    res = cliplab.retrieval(model, ds, cache_dir=tmp_path / "cache", **KW)
    assert (res.metrics.metric == "recall@1").sum() == 2  # text->image and image->text, over 24 captions


def test_plain_shards_take_class_names_and_one_caption_per_text_member(sets, tmp_path):
    files = [p for p in sorted((sets[0] / "test").glob("*/*"))][::4]
    samples = [{"png" if p.suffix == ".png" else "jpeg": p.read_bytes(), "cls": p.parent.name.encode(),
                "txt": b"one caption\nstill the same one", "json": b"{}"} for p in files]
    write_shards(tmp_path / "plain", samples, 1, count_file=False)
    ds = open_dataset(str(tmp_path / "plain" / "0.tar"))
    assert ds.classnames == sorted({p.parent.name for p in files}) and ds.split == "all"
    assert ds.captions[0] == ["one caption\nstill the same one"]
    assert ds.source.keys() == FileSource([str(p) for p in files]).keys()


def test_expand_braces():
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}/{1..2}.tar") == ["a/1.tar", "a/2.tar", "b/1.tar", "b/2.tar"]
    assert expand_braces("x{2..0}") == ["x2", "x1", "x0"] and expand_braces("{9..10}") == ["9", "10"]
    assert expand_braces("plain.tar") == ["plain.tar"] and expand_braces("odd{x}.tar") == ["odd{x}.tar"]


def test_unchanged_shards_are_not_read_again(sets, tmp_path, monkeypatch):
    root = shutil.copytree(sets[1], tmp_path / "wds")
    reads = []
    read = TarSource._read
    monkeypatch.setattr(TarSource, "_read", lambda self, i: reads.append(i) or read(self, i))
    memo = tmp_path / "cache" / MEMO_NAME
    with file_hash_memo(memo):
        keys = open_dataset(str(root), split="test").source.keys()
    assert len(reads) == 12
    with file_hash_memo(memo):
        assert open_dataset(str(root), split="test").source.keys() == keys and len(reads) == 12
    shard = root / "test" / "1.tar"
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: its images are read again
    with file_hash_memo(memo):
        assert open_dataset(str(root), split="test").source.keys() == keys and len(reads) == 18


def test_an_unreadable_image_in_a_shard_is_skipped_with_its_reason(model, sets, tmp_path):
    folder = sets[0]
    files = sorted((folder / "test" / "red").iterdir())
    write_shards(tmp_path / "s", [{"png": files[1].read_bytes()}, {"png": b"not a png"}], 1, count_file=False)
    res = embed_images(model, open_dataset(str(tmp_path / "s" / "0.tar")), tmp_path / "cache")
    assert res.indices.tolist() == [0]
    assert len(res.failures) == 1 and res.failures[0][1].endswith("0.tar/s00001.png")
    assert "not an image" in res.failures[0][2]


def _rewrite(name, change):
    """Damage: replace the bytes of ROOT/``name`` with ``change(bytes)``."""
    return lambda root: (root / name).write_bytes(change((root / name).read_bytes()))


def _text(name, text):
    return lambda root: (root / name).write_text(text)


def _corrupt_second_header(root):
    """Damage: garbage over the header of the second member of ROOT/test/0.tar."""
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as tar:
        at = tar.getmembers()[1].offset
    data = shard.read_bytes()
    shard.write_bytes(data[:at] + b"garbage!" * 8 + data[at + 64:])
    return at


def _retar(*samples):
    """Damage: ROOT/test becomes one shard of ``samples`` ({suffix: bytes} each)."""
    def write(root):
        shutil.rmtree(root / "test")
        write_shards(root / "test", list(samples), 1)
    return write


ROOT = str  # the spec: the layout's ROOT
SHARD = lambda root: str(root / "test" / "0.tar")  # noqa: E731 - the spec: its first shard alone
TEST = {"split": "test"}
CASES = {  # name: (damage to a copy of the layout, spec, keywords, what the message says beside the input's name)
    "missing split": (None, ROOT, {"split": "train"}, ["split 'train'", "no split 'train'; its splits: test"]),
    "no split given": (None, ROOT, {}, ["holds splits (test)", "choose one with split"]),
    "corrupt tar": (_rewrite("test/1.tar", lambda b: b"\x00junk" * 300), ROOT, TEST,
                    ["1.tar", "not a readable uncompressed tar file"]),
    "damaged header": (_corrupt_second_header, ROOT, TEST, ["0.tar", "no valid tar header at byte"]),
    "truncated tar": (_rewrite("test/0.tar", lambda b: b[:2000]), ROOT, TEST,
                      ["0.tar", "truncated tar (a member runs past the end of the file)"]),
    "gzipped tar": (_rewrite("test/0.tar", gzip.compress), ROOT, TEST, ["0.tar", "not a readable uncompressed tar"]),
    "image without label": (_retar({"png": b"a", "cls": b"0"}, {"png": b"b"}), ROOT, TEST,
                            ["0.tar: s00001.png has no .cls label", "classification set"]),
    "labels on some images": (_retar({"png": b"a", "cls": b"0"}, {"png": b"b"}), SHARD, {},
                              ["s00001.png has no .cls label", "label every image or none"]),
    "class number beyond classnames": (_retar({"png": b"a", "cls": b"7"}), ROOT, TEST,
                                       ["include class 7", "3 class names"]),
    "class numbers without names": (None, SHARD, {}, ["has class numbers in its .cls labels", "classnames"]),
    "sample without image": (_retar({"txt": b"a caption"}), ROOT, TEST,
                             ["sample 's00000' has no image (s00000.txt)"]),
    "two images": (_retar({"png": b"a", "jpg": b"b", "cls": b"0"}), ROOT, TEST, ["sample 's00000' has 2 images"]),
    "missing shard": (_text("test/nshards.txt", "3"), ROOT, TEST, ["says 3 shards", "2.tar"]),
    "multilabel": (_text("dataset_type.txt", "multilabel"), ROOT, TEST, ["dataset_type.txt says 'multilabel'"]),
    "template without placeholder": (_text("zeroshot_classification_templates.txt", "a photo\n"), ROOT, TEST,
                                     ["template 'a photo'", "has no {c}"]),
    "no such shard": (None, lambda root: f"wds:{root}/nope.tar", {}, ["no such shard, shard pattern or folder"]),
    "pattern matching nothing": (None, lambda root: f"{root}/shard-{{0..3}}.tar", {},
                                 ["no shard matches", "shard-0.tar"]),
}


def _case(case, sets, tmp_path):
    """(spec, keywords, expected phrases) of a case, on a damaged copy of the layout."""
    damage, spec, kw, says = CASES[case]
    root = shutil.copytree(sets[1], tmp_path / "wds")
    if damage:
        damage(root)
    return spec(root), kw, says


@pytest.mark.parametrize("case", list(CASES))
def test_bad_shard_inputs_are_one_clear_error(case, sets, tmp_path):
    spec, kw, says = _case(case, sets, tmp_path)
    with pytest.raises(CliplabError) as err:
        cliplab.load_dataset(spec, **kw)
    message = str(err.value)
    assert all(s in message for s in says), message
    assert str(tmp_path) in message  # names the input


@pytest.mark.parametrize("case", ["missing split", "corrupt tar", "image without label"])
def test_the_command_line_prints_one_error_line(case, sets, tmp_path, trained_cache):
    spec, kw, says = _case(case, sets, tmp_path)
    args = ["embed", "--dataset", spec, "--cache-dir", str(trained_cache), "--quiet"]
    line = error_line(CliRunner().invoke(app, args + (["--split", kw["split"]] if "split" in kw else [])))
    assert says[-1] in line and str(tmp_path) in line
