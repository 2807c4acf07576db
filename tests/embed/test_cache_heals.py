"""A cache that heals: damaged embedding shards and converted OpenVINO models are moved aside (never deleted),
reported in one warning and computed again, so the healed run gives a clean run's numbers bit for bit; a cache that
cannot be written, or a disk too small, stops the run before any image is embedded; a disk that fills up mid-run is
one ``error:`` line and keeps every finished shard for the rerun.

Each fault case checks: the healed numbers equal a clean run's exactly, the quarantine holds the damaged file as it
was, the warning appears once, a second run is served from the cache without a warning, and the user's files are
unchanged."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import make_image
from recording import Recording
from cliplab.data import open_dataset
from cliplab.embed import embed_images, embed_texts
from cliplab.embed import cache as cache_mod
from cliplab.embed.cache import EmbeddingCache
from cliplab.errors import ParameterError
from cliplab.inputs import as_options
from cliplab.models import open_model
from cliplab.progress import use
from cliplab.quarantine import FOLDER, move_aside

TEXTS = ["a red circle", "a blue square", "a photo of a cat", "x", "a large green triangle in the top left"]
RUN = dict(batch_size=4, shard_batches=1, workers=0)  # 24 images: 6 shards of one 4-image batch each


# ---- the user's files, a model, and a clean run ----

@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(24):
        make_image(root / ("a" if i % 2 else "b") / f"{i:04d}.png", size=(40, 30), color=(i * 9 % 255, 90, 160))
    return root


def user_files(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: its content hash and modification time."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model(tiny_checkpoint, tmp_path_factory):
    cfg, ckpt, _ = tiny_checkpoint
    return open_model(str(cfg), str(ckpt), device="cpu", backend="torch",
                      cache_dir=tmp_path_factory.mktemp("model-configs"))


@pytest.fixture(scope="module")
def clean(model, photos, tmp_path_factory):
    """(cache, image result, text embeddings) of a run on an empty cache."""
    cache = tmp_path_factory.mktemp("clean")
    images = embed_images(model, open_dataset(str(photos)), cache, **RUN)
    texts = embed_texts(model, TEXTS, cache)
    assert images.computed == 24 and len(shard_files(cache, model, "image")) == 6
    return cache, images, texts


def shard_files(cache: Path, model, kind: str) -> list[Path]:
    return EmbeddingCache(cache, model.fingerprint, kind).shards()


# ---- ways a shard gets damaged ----

def member_data(path: Path, name: str) -> tuple[int, int]:
    """(offset, length) of the array bytes of member ``name`` (after its zip and .npy headers) in the npz ``path``."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(f"{name}.npy")
    data = path.read_bytes()
    start = info.header_offset + 30 + sum(struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30]))
    head = (10 + struct.unpack("<H", data[start + 8:start + 10])[0] if data[start + 6] == 1
            else 12 + struct.unpack("<I", data[start + 8:start + 12])[0])
    return start + head, info.file_size - head


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def flip_in(name: str, mask: int = 0x01) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        offset, length = member_data(path, name)
        flip(path, offset + length // 2, mask)
    return damage


def truncate(keep: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[:keep(len(data))])
    return damage


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def rewrite(change: Callable[[dict], dict]) -> Callable[[Path], None]:
    """Write the shard again as a valid npz (every CRC right) after ``change`` to its arrays."""
    def damage(path: Path) -> None:
        arrays = change(arrays_of(path))
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    return damage


def shifted_row(a: dict) -> dict:  # a valid archive whose vectors are not what was written (checksum kept)
    a["emb"] = a["emb"].copy()
    a["emb"][0] += 0.25
    return a


def without_checksum(a: dict) -> dict:  # what cliplab wrote before shards carried a checksum
    a.pop("checksum")
    return a


def one_row_short(a: dict) -> dict:
    a = without_checksum(a)
    a["emb"] = a["emb"][:-1]
    return a


def as_float64(a: dict) -> dict:
    a = without_checksum(a)
    a["emb"] = a["emb"].astype(np.float64)
    return a


def from_another_model(path: Path) -> None:
    """A valid shard with a valid checksum, written for another model's folder and moved here."""
    a = arrays_of(path)
    other = EmbeddingCache(path.parents[3], "another-model", "image")
    written = other.write(list(a["keys"]), a["emb"] + 0.5, {}, float(a["seconds"]))
    os.replace(written, path)


def folder_in_its_place(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "keys.npy").write_bytes(b"not an array")


def plain_npy(path: Path) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.zeros((4, 32), np.float32))


def garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def empty_archive(path: Path) -> None:
    with open(path, "wb") as fh:
        np.savez(fh)


@dataclass(frozen=True)
class Fault:
    name: str
    damage: Callable[[Path], None]
    kind: str = "image"  # which cache it hits: the image or the text embeddings
    healed: bool = True  # moved aside and recomputed (False: a shard that is read as it is)
    why: str = ""  # words the warning gives for it
    every: bool = False  # every image shard at once


FAULTS = [
    Fault("truncated to half", truncate(lambda n: n // 2), why="unreadable"),
    Fault("last byte cut", truncate(lambda n: n - 1), why="unreadable"),
    Fault("flipped byte in the embedding array", flip_in("emb"), why="Bad CRC-32 for file 'emb.npy'"),
    Fault("flipped byte in the keys", flip_in("keys"), why="Bad CRC-32 for file 'keys.npy'"),
    Fault("flipped exponent bit in the embedding array", flip_in("emb", 0x40), why="unreadable"),
    Fault("zero-length file", truncate(lambda n: 0), why="unreadable"),
    Fault("empty archive", empty_archive, why="no keys, emb, fail_keys, fail_reasons, seconds array"),
    Fault("a folder named like a shard", folder_in_its_place, why="IsADirectoryError"),
    Fault("wrong checksum (valid archive, changed vector)", rewrite(shifted_row), why="checksum mismatch"),
    Fault("shard of another model moved in", from_another_model, why="checksum mismatch"),
    Fault("a plain .npy", plain_npy, why="not an npz archive"),
    Fault("random bytes", garbage, why="unreadable"),
    Fault("old format without checksum", rewrite(without_checksum), healed=False),
    Fault("old format, flipped byte", lambda p: (rewrite(without_checksum)(p), flip_in("emb")(p)), why="Bad CRC-32"),
    Fault("old format, a row short", rewrite(one_row_short), why="do not fit 4 keys"),
    Fault("old format, float64 rows", rewrite(as_float64), why="float64"),
    Fault("every shard truncated", truncate(lambda n: n // 3), why="unreadable", every=True),
    Fault("text shard truncated", truncate(lambda n: n // 2), kind="text", why="unreadable"),
    Fault("text shard with a wrong checksum", rewrite(shifted_row), kind="text", why="checksum mismatch"),
    Fault("text shard in the old format", rewrite(without_checksum), kind="text", healed=False),
]


def run_both(model, photos: Path, cache: Path, progress: Recording):
    with use(progress):
        images = embed_images(model, open_dataset(str(photos)), cache, **RUN)
        texts = embed_texts(model, TEXTS, cache)
    return images, texts


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_a_damaged_shard_is_moved_aside_and_recomputed(fault, model, photos, clean, tmp_path):
    clean_cache, clean_images, clean_texts = clean
    cache = tmp_path / "cache"
    shutil.copytree(clean_cache, cache)
    before = user_files(photos)
    shards = shard_files(cache, model, fault.kind)
    targets = shards if fault.every else [shards[len(shards) // 2]]
    damaged = {}
    for shard in targets:
        fault.damage(shard)
        damaged[shard] = shard.read_bytes() if shard.is_file() else "folder"

    progress = Recording()
    images, texts = run_both(model, photos, cache, progress)

    assert np.array_equal(images.embeddings, clean_images.embeddings)  # bit for bit
    assert np.array_equal(images.indices, clean_images.indices) and images.failures == clean_images.failures
    assert np.array_equal(texts, clean_texts)
    quarantine = cache / FOLDER
    if fault.healed:
        assert images.computed == (4 * len(targets) if fault.kind == "image" else 0)
        assert len(progress.warnings) == 1, progress.warnings
        warning = progress.warnings[0]
        assert f"{len(targets)} damaged entr" in warning and str(quarantine) in warning and fault.why in warning
        assert targets[0].name in warning and "kept, not deleted" in warning
        for shard, content in damaged.items():
            kept = quarantine / shard.relative_to(cache)
            assert (kept.is_dir() if content == "folder" else kept.read_bytes() == content), kept
        log = [json.loads(line) for line in (quarantine / "log.jsonl").read_text().splitlines()]
        assert len(log) == len(targets) and all(fault.why.split(" (")[0] in e["reason"] for e in log)
    else:  # an old shard is read (its CRC-32s and shapes checked): nothing moved, nothing said
        assert images.computed == 0 and progress.warnings == [] and not quarantine.exists()
    assert user_files(photos) == before

    again = Recording()
    images2, texts2 = run_both(model, photos, cache, again)  # healed: all from the cache, nothing to say
    assert images2.computed == 0 and again.warnings == [] and again.bars == []
    assert np.array_equal(images2.embeddings, clean_images.embeddings) and np.array_equal(texts2, clean_texts)


def test_old_shards_are_counted_as_unverified(model, photos, clean, tmp_path):
    """Shards without a checksum are read, and a lookup says how many it could not verify."""
    cache = tmp_path / "cache"
    shutil.copytree(clean[0], cache)
    shards = shard_files(cache, model, "image")
    for shard in shards[:2]:
        rewrite(without_checksum)(shard)
    keys = [str(k) for s in shards for k in arrays_of(s)["keys"]]
    hits = EmbeddingCache(cache, model.fingerprint, "image").lookup(keys)
    assert len(hits.vectors) == 24 and hits.unverified == 2 and hits.moved == []


def test_a_shard_that_serves_nothing_is_not_read_whole(model, clean, tmp_path):
    """Lookups stay cheap: a shard holding none of the keys is not read past its keys (its damage waits until it is
    used)."""
    cache = tmp_path / "cache"
    shutil.copytree(clean[0], cache)
    shard = shard_files(cache, model, "image")[0]
    flip_in("emb")(shard)
    hits = EmbeddingCache(cache, model.fingerprint, "image").lookup(["f:" + "0" * 32])
    assert hits.vectors == {} and hits.moved == [] and shard.is_file()


# ---- random damage: never a crash, never a wrong vector ----

def _shard(tmp: Path) -> tuple[EmbeddingCache, Path, list[str], np.ndarray]:
    rng = np.random.default_rng(1)
    keys = [f"f:{i:032x}" for i in range(6)]
    emb = rng.standard_normal((6, 8)).astype(np.float32)
    cache = EmbeddingCache(tmp, "fp", "image")
    return cache, cache.write(keys, emb, {"f:bad": "cannot read"}, 1.5), keys, emb


with tempfile.TemporaryDirectory() as _tmp:
    SHARD_BYTES = _shard(Path(_tmp))[1].read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, len(SHARD_BYTES) - 1), st.integers(1, 255)), max_size=3),
       keep=st.one_of(st.none(), st.integers(0, len(SHARD_BYTES))))
def test_random_damage_never_crashes_or_returns_a_wrong_vector(flips, keep):
    with tempfile.TemporaryDirectory() as tmp:
        cache, path, keys, emb = _shard(Path(tmp))
        data = bytearray(path.read_bytes())
        for offset, mask in flips:
            data[offset] ^= mask
        path.write_bytes(bytes(data[:keep]))
        progress = Recording()
        with use(progress):
            hits = cache.lookup(keys + ["f:bad"])
        for i, k in enumerate(keys):
            if k in hits.vectors:
                assert np.array_equal(hits.vectors[k], emb[i])
        assert hits.failures in ({}, {"f:bad": "cannot read"})
        whole = len(hits.vectors) == len(keys) and hits.failures
        moved = (Path(tmp) / FOLDER / path.relative_to(tmp)).is_file()
        assert whole != moved  # all of it served, or none of it and the file moved aside
        assert len(progress.warnings) == (1 if moved else 0)
        assert whole or not path.exists()


# ---- converted OpenVINO models ----

ov = pytest.importorskip("openvino")
from cliplab.models.backends import openvino as ov_backend  # noqa: E402

MANY = [f"a photo of shape number {i}" for i in range(ov_backend.TEXT_CONVERT_MIN)]  # enough to convert the text tower


@pytest.fixture(scope="module")
def ov_clean(tiny_checkpoint, photos, tmp_path_factory):
    """(cache with both towers converted, image embeddings, text embeddings) on OpenVINO."""
    cfg, ckpt, _ = tiny_checkpoint
    cache = tmp_path_factory.mktemp("ov-clean")
    m = open_model(str(cfg), str(ckpt), device="cpu", backend="openvino", cache_dir=cache)
    m.encode_texts(MANY)
    assert m.runtime.converted == ["text"]
    options = as_options(cache, use_cache=False)  # the towers come from the cache, the embeddings are computed
    images = embed_images(m, open_dataset(str(photos)), options, **RUN)
    texts = embed_texts(m, TEXTS, options)
    assert m.runtime.converted == ["text", "image"]
    return cache, images.embeddings, texts


def tower_files(cache: Path, tower: str) -> dict[str, Path]:
    (xml,) = (cache / "openvino").glob(f"*-{tower}-dynbatch-*.xml")
    return {s: xml.with_suffix(s) for s in (".xml", ".bin", ".sum")}


def exponent_flip(suffix: str):
    def damage(files: dict[str, Path]) -> None:
        n = files[suffix].stat().st_size
        flip(files[suffix], n // 2 - n // 2 % 4 + 3, 0x40)  # a float's exponent (same size, different weights)
    return damage


def reversed_weights(files: dict[str, Path]) -> None:
    """The largest float weight tensor written backwards (the files still load), and the checksum gone: only the
    check against PyTorch can tell."""
    files[".sum"].unlink()
    consts = re.findall(r'element_type="f32" shape="[^"]*" offset="(\d+)" size="(\d+)"', files[".xml"].read_text())
    offset, size = max(((int(o), int(n)) for o, n in consts), key=lambda c: c[1])
    data = bytearray(files[".bin"].read_bytes())
    data[offset:offset + size] = np.frombuffer(data[offset:offset + size], np.float32)[::-1].tobytes()
    files[".bin"].write_bytes(bytes(data))


@dataclass(frozen=True)
class ModelFault:
    name: str
    damage: Callable[[dict[str, Path]], None]
    tower: str = "image"
    why: str = ""
    healed: bool = True


MODEL_FAULTS = [
    ModelFault("damaged .bin (same size)", exponent_flip(".bin"), why="checksum mismatch (.bin)"),
    ModelFault("damaged .xml (same size)", lambda f: flip(f[".xml"], f[".xml"].stat().st_size // 2),
               why="checksum mismatch (.xml)"),
    ModelFault("missing .bin", lambda f: f[".bin"].unlink(), why="weights (.bin) are missing"),
    ModelFault("truncated .bin", lambda f: truncate(lambda n: n - 4)(f[".bin"]), why="checksum mismatch (.bin)"),
    ModelFault("unreadable checksum", lambda f: f[".sum"].write_text("{not json"), why="checksum cannot be read"),
    ModelFault("no checksum, weights reversed", reversed_weights, why="disagrees with PyTorch"),
    ModelFault("damaged text .bin", exponent_flip(".bin"), tower="text", why="checksum mismatch (.bin)"),
    ModelFault("no checksum (converted by an older cliplab)", lambda f: f[".sum"].unlink(), healed=False),
]


@pytest.mark.parametrize("fault", MODEL_FAULTS, ids=[f.name for f in MODEL_FAULTS])
def test_a_damaged_converted_model_is_moved_aside_and_converted_again(fault, tiny_checkpoint, photos, ov_clean,
                                                                      tmp_path):
    cfg, ckpt, _ = tiny_checkpoint
    cache = tmp_path / "cache"
    shutil.copytree(ov_clean[0], cache)
    before = user_files(photos)
    files = tower_files(cache, fault.tower)
    fault.damage(files)
    damaged = {s: p.read_bytes() for s, p in files.items() if p.exists()}

    progress = Recording()
    with use(progress):
        m = open_model(str(cfg), str(ckpt), device="cpu", backend="openvino", cache_dir=cache)
        options = as_options(cache, use_cache=False)
        images = embed_images(m, open_dataset(str(photos)), options, **RUN)
        texts = embed_texts(m, TEXTS, options)

    assert np.array_equal(images.embeddings, ov_clean[1]) and np.array_equal(texts, ov_clean[2])  # bit for bit
    assert user_files(photos) == before
    if not fault.healed:  # checked against PyTorch, then sealed with its checksum
        assert progress.warnings == [] and m.runtime.converted == [] and not (cache / FOLDER).exists()
        assert ov_backend._verify_files(files[".xml"]) is True
        return
    assert m.runtime.converted == [fault.tower]
    assert len(progress.warnings) == 1, progress.warnings
    warning = progress.warnings[0]
    assert "1 damaged entry" in warning and f"converted OpenVINO {fault.tower} tower" in warning
    assert fault.why in warning and str(cache / FOLDER) in warning
    for suffix, content in damaged.items():
        assert (cache / FOLDER / files[suffix].relative_to(cache)).read_bytes() == content
    assert ov_backend._verify_files(files[".xml"]) is True  # converted again, with its checksum

    again = Recording()
    with use(again):
        m2 = open_model(str(cfg), str(ckpt), device="cpu", backend="openvino", cache_dir=cache)
        assert np.array_equal(embed_images(m2, open_dataset(str(photos)), options, **RUN).embeddings, ov_clean[1])
    assert again.warnings == [] and m2.runtime.converted == []


def test_a_cached_model_is_checked_against_pytorch_at_every_load(tiny_checkpoint, ov_clean, tmp_path, monkeypatch):
    """Regression: only a freshly converted tower was compared with PyTorch. A cached one that disagrees (its
    checksum intact) is moved aside and converted again."""
    cfg, ckpt, _ = tiny_checkpoint
    cache = tmp_path / "cache"
    shutil.copytree(ov_clean[0], cache)
    calls = []
    real = ov_backend._check

    def check(compiled, module, probe, precision):
        calls.append(len(probe))
        if len(calls) == 1:
            raise RuntimeError("the converted tower disagrees with PyTorch (min cosine 0.500000000 on 3 inputs)")
        real(compiled, module, probe, precision)

    monkeypatch.setattr(ov_backend, "_check", check)
    progress = Recording()
    with use(progress):
        m = open_model(str(cfg), str(ckpt), device="cpu", backend="openvino", cache_dir=cache)
        assert m.runtime.image is not None
    assert calls == [ov_backend.LOAD_PROBE, 3] and m.runtime.converted == ["image"]  # the cached one, the new one
    assert len(progress.warnings) == 1 and "disagrees with PyTorch" in progress.warnings[0]
    files = tower_files(cache, "image")
    assert (cache / FOLDER / files[".bin"].relative_to(cache)).is_file()
    m2 = open_model(str(cfg), str(ckpt), device="cpu", backend="openvino", cache_dir=cache)
    assert m2.runtime.image is not None and m2.runtime.converted == [] and calls[2:] == [ov_backend.LOAD_PROBE]


def test_quarantine_keeps_every_copy_of_a_name(tmp_path):
    """The same entry damaged twice: both copies are kept, numbered, with matching names within a group."""
    root = tmp_path / "cache"
    for n in range(2):
        for suffix in (".xml", ".bin"):
            (root / "openvino").mkdir(parents=True, exist_ok=True)
            (root / "openvino" / f"m-ov2026.4.1{suffix}").write_text(f"copy {n}")
        move_aside(root, [root / "openvino" / "m-ov2026.4.1.xml", root / "openvino" / "m-ov2026.4.1.bin"],
                   "converted OpenVINO image tower", "checksum mismatch")
    kept = sorted(p.name for p in (root / FOLDER / "openvino").iterdir())
    assert kept == ["m-ov2026.4.1.1.bin", "m-ov2026.4.1.1.xml", "m-ov2026.4.1.bin", "m-ov2026.4.1.xml"]
    assert (root / FOLDER / "openvino" / "m-ov2026.4.1.1.bin").read_text() == "copy 1"


# ---- through the CLI: one warning per run, a cache that cannot be written, a full disk ----

def cli(*args):
    from typer.testing import CliRunner

    from cliplab.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def model_args(tiny_checkpoint):
    cfg, ckpt, _ = tiny_checkpoint
    return ["--model", cfg, "--pretrained", ckpt, "--device", "cpu", "--backend", "torch"]


def test_damage_anywhere_in_a_run_is_one_warning(tiny_checkpoint, model, photos, clean, tmp_path):
    """An image shard and the text shard damaged: the zero-shot run gives the clean numbers and says so once."""
    cache = tmp_path / "cache"
    shutil.copytree(clean[0], cache)
    args = ["zeroshot", *model_args(tiny_checkpoint), "--dataset", photos, "--batch-size", 4, "--workers", 0,
            "--cache-dir", cache, "--quiet"]
    first = cli(*args, "-o", tmp_path / "clean.json")
    assert first.exit_code == 0, first.output
    truncate(lambda n: n // 2)(shard_files(cache, model, "image")[2])
    known = {s.name for s in shard_files(clean[0], model, "text")}
    (prompts,) = [s for s in shard_files(cache, model, "text") if s.name not in known]  # the class prompts
    rewrite(shifted_row)(prompts)
    healed = cli(*args, "-o", tmp_path / "healed.json")
    assert healed.exit_code == 0, healed.output
    warnings = [line for line in healed.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "2 damaged entries" in warnings[0], healed.output
    assert "image embedding shard, 1 text embedding shard" in warnings[0]
    a, b = (untimed(json.loads((tmp_path / f"{n}.json").read_text())) for n in ("clean", "healed"))
    assert a["metrics"] == b["metrics"] and a["template_sets"] == b["template_sets"]


def untimed(record):
    """A results record without its throughput figures (timings, not results)."""
    if isinstance(record, dict):
        return {k: untimed(v) for k, v in record.items() if k != "images_per_second"}
    return [untimed(v) for v in record] if isinstance(record, list) else record


def test_cache_under_a_file_is_one_error_before_any_work(tiny_checkpoint, photos, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    encoded = spy_encoder(monkeypatch)
    res = cli("embed", *model_args(tiny_checkpoint), "--dataset", photos, "--cache-dir", blocker / "cache", "--quiet")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0] == (f"error: --cache-dir {blocker / 'cache'}: cannot write in the cache: {blocker} is a file, "
                        "not a folder; pass --no-cache to run without the embedding cache, or choose another "
                        "--cache-dir")
    assert encoded == [] and blocker.read_text() == "mine"


def spy_encoder(monkeypatch) -> list[int]:
    """The number of images in each batch the image tower embeds (in this process)."""
    from cliplab.embed import engine

    batches: list[int] = []
    real = engine.make_encoder

    def make(model, descriptor):
        encode = real(model, descriptor)
        return lambda pixels: (batches.append(len(pixels)), encode(pixels))[1]

    monkeypatch.setattr(engine, "make_encoder", make)
    return batches


def read_only(monkeypatch, inside: str = "") -> None:
    """Writing in any folder whose path contains ``inside`` fails as on a read-only mount (works as root too)."""
    from cliplab import paths

    real = paths._write_probe

    def probe(folder):
        if inside in str(folder):
            raise OSError(errno.EROFS, "Read-only file system")
        real(folder)

    monkeypatch.setattr(paths, "_write_probe", probe)


def test_read_only_cache_is_one_error_before_any_work(tiny_checkpoint, photos, tmp_path, monkeypatch):
    read_only(monkeypatch)
    encoded = spy_encoder(monkeypatch)
    res = cli("zeroshot", *model_args(tiny_checkpoint), "--dataset", photos, "--cache-dir", tmp_path / "c", "--quiet")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith(f"error: --cache-dir {tmp_path / 'c'}: cannot write in the cache: Read-only file "
                               "system; pass --no-cache")
    assert encoded == []
    ok = cli("zeroshot", *model_args(tiny_checkpoint), "--dataset", photos, "--cache-dir", tmp_path / "c", "--quiet",
             "--no-cache")
    assert ok.exit_code == 0, ok.output  # what the message offers works


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through permission bits "
                    "(the monkeypatched and under-a-file cases cover root)")
def test_cache_without_write_permission_is_one_error(tiny_checkpoint, photos, tmp_path):
    cache = tmp_path / "c"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        res = cli("embed", *model_args(tiny_checkpoint), "--dataset", photos, "--cache-dir", cache, "--quiet")
    finally:
        cache.chmod(0o755)
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        f"error: --cache-dir {cache}: cannot write in the cache: Permission denied; pass --no-cache to run without "
        "the embedding cache, or choose another --cache-dir"]


def test_read_only_shard_folder_fails_before_embedding(model, photos, clean, tmp_path, monkeypatch):
    """The cache folder writable but its shard folder not: the Python call fails before the first batch."""
    EmbeddingCache(tmp_path / "c", model.fingerprint, "image").dir.mkdir(parents=True)  # left by an earlier run
    read_only(monkeypatch, inside=f"{model.fingerprint}{os.sep}image")
    encoded = spy_encoder(monkeypatch)
    progress = Recording()
    with use(progress), pytest.raises(ParameterError) as info:
        embed_images(model, open_dataset(str(photos)), tmp_path / "c", **RUN)
    assert info.value.param == "cache_dir" and "cannot write in the cache (in " in str(info.value)
    assert encoded == [] and progress.bars == []


def test_short_disk_is_one_error_before_any_work(tiny_checkpoint, photos, tmp_path, monkeypatch):
    from cliplab import paths

    monkeypatch.setattr(paths, "free_bytes", lambda folder: 50_000)
    encoded = spy_encoder(monkeypatch)
    res = cli("embed", *model_args(tiny_checkpoint), "--dataset", photos, "--cache-dir", tmp_path / "c", "--quiet")
    lines = res.output.strip().splitlines()
    need = cache_mod.estimate_bytes(24, 32)
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0] == (f"error: --cache-dir {tmp_path / 'c'}: the disk holding the cache has 50.0 kB free and this "
                        f"run needs about {paths.human_bytes(need)} for 24 image embeddings of dimension 32; free "
                        "some space, or pass --no-cache to run without the embedding cache, or choose another "
                        "--cache-dir")
    assert encoded == [] and not list((tmp_path / "c").rglob("shard-*"))


def test_space_estimate_covers_what_is_written(model, photos, tmp_path):
    """The estimate is at least what a run writes (rows, keys, zip headers, the file-hash memo)."""
    cache = tmp_path / "c"
    embed_images(model, open_dataset(str(photos)), cache, **RUN)
    written = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert written <= cache_mod.estimate_bytes(24, model.embed_dim) < 4 * written + cache_mod.MARGIN


def filling_disk(monkeypatch, after: int, code: int = errno.ENOSPC) -> None:
    """The shard writer meets ``code`` on its ``after + 1``-th shard."""
    real = cache_mod._savez
    calls = []

    def savez(fh, arrays):
        calls.append(1)
        if len(calls) > after:
            fh.write(b"partial")
            raise OSError(code, os.strerror(code))
        real(fh, arrays)

    monkeypatch.setattr(cache_mod, "_savez", savez)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_full_disk_mid_run_is_one_error_and_the_rerun_resumes(code, tiny_checkpoint, model, photos, clean, tmp_path,
                                                              monkeypatch):
    cache = tmp_path / "c"
    before = user_files(photos)
    filling_disk(monkeypatch, after=2, code=code)
    res = cli("embed", *model_args(tiny_checkpoint), "--dataset", photos, "--batch-size", 4, "--shard-batches", 1,
              "--workers", 0, "--cache-dir", cache, "--quiet")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith(f"error: --cache-dir {cache}: the disk holding the cache is full ({os.strerror(code)};")
    assert ("the 2 shards (8 embeddings) this run wrote before are kept, and a rerun resumes after them; free some "
            "space and run again, or pass --no-cache") in lines[0]
    folder = EmbeddingCache(cache, model.fingerprint, "image").dir
    assert sorted(p.name.startswith("shard-") for p in folder.iterdir()) == [True, True]  # no partial file left
    monkeypatch.undo()
    progress = Recording()
    with use(progress):
        resumed = embed_images(model, open_dataset(str(photos)), cache, **RUN)
    assert resumed.computed == 16 and progress.warnings == []  # the committed shards verified and reused
    assert np.array_equal(resumed.embeddings, clean[1].embeddings)
    assert user_files(photos) == before


def test_other_write_errors_mid_run_name_the_cache(model, photos, tmp_path, monkeypatch):
    filling_disk(monkeypatch, after=0, code=errno.EROFS)
    with pytest.raises(ParameterError) as info:
        embed_images(model, open_dataset(str(photos)), tmp_path / "c", **RUN)
    assert info.value.param == "cache_dir"
    assert "cannot write in the cache (Read-only file system: " in str(info.value)
    assert "nothing this run computed was cached yet" in str(info.value)


def test_full_disk_while_caching_texts_names_the_cache(model, tmp_path, monkeypatch):
    filling_disk(monkeypatch, after=0)
    with pytest.raises(ParameterError) as info:
        embed_texts(model, TEXTS, tmp_path / "c")
    assert info.value.param == "cache_dir" and "the disk holding the cache is full" in str(info.value)
    monkeypatch.undo()
    assert EmbeddingCache(tmp_path / "c", model.fingerprint, "text").shards() == []
