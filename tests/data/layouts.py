"""One class folder, and the same images written as the other dataset inputs (tar shards in CLIP_benchmark's layout,
manifests), for the tests that check every input gives the folder's embeddings and numbers; their shared fixtures
(import them into the test module)."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

import cliplab
from conftest import make_image

COLOURS = {"blue": (20, 20, 220), "green": (20, 200, 20), "red": (220, 20, 20)}  # sorted: the folder's class order
TEMPLATES = ["a photo of a {c}.", "a blurry photo of the {c}."]
KW = dict(backend="torch", quiet=True)  # how the equality tests embed


@pytest.fixture(scope="module")
def model(trained_cache):
    """The shipped tiny-shapes model on PyTorch."""
    return cliplab.load_model("tiny-shapes", cache_dir=trained_cache, **KW)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A class folder (split test) made for the test module."""
    return class_folder(tmp_path_factory.mktemp("sources") / "colours")


def class_folder(root: Path, n: int = 4, split: str = "test") -> Path:
    """``root/<split>/<colour>/`` with ``n`` images per colour (PNGs, and one JPEG per class)."""
    for c, rgb in COLOURS.items():
        for i in range(n):
            fmt = "JPEG" if i == 0 else None
            make_image(root / split / c / f"{c}-{i}.{'jpg' if fmt else 'png'}", color=rgb, fmt=fmt)
    return root


def folder_files(root: Path, split: str = "test") -> list[tuple[Path, int]]:
    """(image file, class index) in the folder's own order."""
    names = sorted(COLOURS)
    return [(p, names.index(p.parent.name)) for p in sorted((root / split).glob("*/*")) if p.is_file()]


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(folder: Path, samples: list[dict[str, bytes]], nshards: int, count_file: bool = True) -> list[Path]:
    """``samples`` (each {member suffix: bytes}, keyed s00000...) spread in order over ``nshards`` tar files."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(samples) // nshards)
    shards = []
    for s in range(nshards):
        path = folder / f"{s}.tar"
        with tarfile.open(path, "w") as tar:
            for k, sample in enumerate(samples[s * per:(s + 1) * per], start=s * per):
                for suffix, data in sample.items():
                    add_member(tar, f"s{k:05d}.{suffix}", data)
        shards.append(path)
    if count_file:
        (folder / "nshards.txt").write_text(f"{nshards}\n")
    return shards


def clip_benchmark_layout(folder_root: Path, root: Path, split: str = "test", nshards: int = 2,
                          templates: list[str] | None = None) -> Path:
    """CLIP_benchmark's webdataset layout of a class folder: ROOT/<split>/{nshards.txt, 0.tar...}, classnames.txt,
    zeroshot_classification_templates.txt, dataset_type.txt."""
    samples = [{p.suffix.lstrip("."): p.read_bytes(), "cls": str(label).encode()}
               for p, label in folder_files(folder_root, split)]
    write_shards(root / split, samples, nshards)
    (root / "classnames.txt").write_text("\n".join(sorted(COLOURS)) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates or TEMPLATES) + "\n")
    (root / "dataset_type.txt").write_text("classification\n")
    return root
