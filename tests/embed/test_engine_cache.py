"""The embedding cache: no recomputation, resume after kill -9, changed files, broken files."""
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image
from cliplab.data import open_dataset
from cliplab.embed import embed_images
from cliplab.embed.cache import EmbeddingCache
from cliplab.models import open_model


@pytest.fixture()
def tiny(tiny_checkpoint, cache_dir):
    cfg, ckpt, _ = tiny_checkpoint
    return open_model(str(cfg), str(ckpt), cache_dir=cache_dir)


def _folder(root: Path, n: int, size=(40, 30)) -> Path:
    for i in range(n):
        make_image(root / ("a" if i % 2 else "b") / f"{i:04d}.png", size=size, color=(i * 7 % 255, 90, 160))
    return root


def test_second_run_recomputes_nothing(tiny, tmp_path):
    ds = open_dataset(str(_folder(tmp_path / "imgs", 20)))
    first = embed_images(tiny, ds, tmp_path / "c", batch_size=8)
    second = embed_images(tiny, ds, tmp_path / "c", batch_size=8)
    assert first.computed == 20 and second.computed == 0
    assert np.array_equal(first.embeddings, second.embeddings)
    assert not np.isnan(second.images_per_second)  # throughput is recorded in the cache


def test_changed_file_is_reembedded(tiny, tmp_path):
    root = _folder(tmp_path / "imgs", 10)
    ds = open_dataset(str(root))
    first = embed_images(tiny, ds, tmp_path / "c")
    target = Path(ds.paths[3])
    make_image(target, size=(40, 30), color=(0, 255, 0))  # same name, new content
    again = embed_images(tiny, open_dataset(str(root)), tmp_path / "c")
    assert again.computed == 1
    changed = np.where(~np.all(np.isclose(first.embeddings, again.embeddings), axis=1))[0].tolist()
    assert changed == [3]


def test_identical_content_is_embedded_once(tiny, tmp_path):
    a = make_image(tmp_path / "imgs" / "x.png")
    (tmp_path / "imgs" / "copy.png").write_bytes(a.read_bytes())
    res = embed_images(tiny, open_dataset(str(tmp_path / "imgs")), tmp_path / "c")
    assert res.computed == 1 and len(res.indices) == 2
    assert np.array_equal(res.embeddings[0], res.embeddings[1])


def _huge_png(path: Path, width=30000, height=30000):
    """A valid-looking PNG whose header claims a huge size (the decoder must refuse before allocating)."""
    small = path.with_suffix(".small.png")
    Image.new("RGB", (4, 4)).save(small)
    data = bytearray(small.read_bytes())
    small.unlink()
    ihdr = data[12:29]  # b'IHDR' + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def test_broken_files_are_listed_and_run_completes(tiny, tmp_path):
    d = tmp_path / "mixed"
    for i in range(3):
        make_image(d / f"good{i}.jpg", fmt="JPEG")
    (d / "empty.jpg").write_bytes(b"")
    (d / "notimage.png").write_text("this is text, not a PNG")
    full = (d / "good0.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    make_image(d / "cmyk.jpg", mode="CMYK", fmt="JPEG")
    make_image(d / "palette.png", mode="P")
    Image.fromarray((np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50)).save(d / "sixteen.png")
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 128))
    rgba.save(d / "alpha.png")
    _huge_png(d / "huge.png")
    ds = open_dataset(str(d))
    res = embed_images(tiny, ds, tmp_path / "c", batch_size=4)
    reasons = {Path(i).name: r for _, i, r in res.failures}
    assert set(reasons) == {"empty.jpg", "notimage.png", "truncated.jpg", "huge.png"}
    assert "empty" in reasons["empty.jpg"]
    assert "not an image" in reasons["notimage.png"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "too large" in reasons["huge.png"]
    ok = {Path(ds.paths[i]).name for i in res.indices}
    assert ok == {"good0.jpg", "good1.jpg", "good2.jpg", "cmyk.jpg", "palette.png", "sixteen.png", "alpha.png"}
    assert np.isfinite(res.embeddings).all()
    # failures are cached too: the second run retries nothing and reports the same reasons
    again = embed_images(tiny, ds, tmp_path / "c")
    assert again.computed == 0 and {Path(i).name: r for _, i, r in again.failures} == reasons


def test_sixteen_bit_is_rescaled_not_clipped():
    from cliplab.data.imageio import to_rgb

    img = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert np.asarray(to_rgb(img)).max() == 255
    img = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert abs(int(np.asarray(to_rgb(img))[0, 0, 0]) - 128) <= 1


def test_kill_minus_nine_then_resume_is_bit_identical(tiny_checkpoint, tmp_path):
    """A real `cliplab embed` process is SIGKILLed mid-run; the rerun finishes from the cached shards and the
    result equals an uninterrupted run bit for bit."""
    cfg, ckpt, _ = tiny_checkpoint
    root = tmp_path / "photos"
    for i in range(240):
        make_image(root / f"{i:04d}.jpg", size=(320, 240), color=(i % 255, 80, 200), fmt="JPEG")
    args = [sys.executable, "-m", "cliplab.cli", "embed", "--model", str(cfg), "--pretrained", str(ckpt),
            "--dataset", str(root), "--batch-size", "4", "--shard-batches", "1", "--workers", "0", "--quiet",
            "--backend", "torch"]  # pinned: `auto` chooses per run and per machine, and the shards below are the
    # torch model's (regression: this model loaded on its own calibrated auto into OpenVINO where it measured
    # faster, the 240-image run chose PyTorch, and the test watched the wrong fingerprint's folder)
    killed_cache = tmp_path / "killed"
    ds = open_dataset(str(root))
    model = open_model(str(cfg), str(ckpt), cache_dir=killed_cache, backend="torch")
    shard_dir = EmbeddingCache(killed_cache, model.fingerprint, "image").dir
    proc = subprocess.Popen(args + ["--cache-dir", str(killed_cache)])
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shard_dir.glob("shard-*.npz"))) < 3 and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(shard_dir.glob("shard-*.npz")))
    assert proc.returncode == -signal.SIGKILL and 3 <= done < 60, f"kill landed after {done} of 60 shards"
    resumed = embed_images(model, ds, killed_cache, batch_size=4, shard_batches=1, workers=0)
    assert resumed.computed == 240 - 4 * done - 0  # only the unfinished shards were computed
    clean = embed_images(open_model(str(cfg), str(ckpt), cache_dir=tmp_path / "clean", backend="torch"), ds, tmp_path / "clean",
                         batch_size=4, shard_batches=1, workers=0)
    assert np.array_equal(resumed.indices, clean.indices)
    assert np.array_equal(resumed.embeddings, clean.embeddings)


def test_tensor_pipeline_matches_pil_reference(tiny_checkpoint, tmp_path):
    """JPEG/PNG of odd sizes through both pipelines: same preprocessing within tolerance, near-identical
    embeddings, separate cache entries, bad files still reported."""
    import torch

    from cliplab.data import open_dataset
    from cliplab.embed import embed_images
    from cliplab.embed.tensor_pipeline import TensorPreprocess, decode_batch, read_bytes
    from cliplab.models import open_model
    from conftest import make_image

    cfg, ckpt, _ = tiny_checkpoint
    m = open_model(str(cfg), str(ckpt), device="cpu", cache_dir=tmp_path / "c")
    paths = [make_image(tmp_path / "imgs" / f"a{i}.jpg", size=(200 + 37 * i, 150 + 11 * i)) for i in range(5)]
    paths += [make_image(tmp_path / "imgs" / "b.png", size=(90, 300)),
              make_image(tmp_path / "imgs" / "cmyk.jpg", size=(120, 80), mode="CMYK")]
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = open_dataset(str(tmp_path / "imgs"))
    prep = TensorPreprocess.from_cfg(m.preprocess_cfg)
    from cliplab.data.imageio import open_rgb

    good = [str(p) for p in paths[:6]]
    x = prep.batch(decode_batch(read_bytes(good), torch.device("cpu")), "cpu")
    y = torch.stack([m.preprocess(open_rgb(p)) for p in good])
    assert x.shape == y.shape == (6, 3, 64, 64) and x.dtype == torch.float32
    # torchvision's uint8 antialiased bicubic follows Pillow's: measured mean 6e-4, max 0.015 (normalised units);
    # another interpolation or a float resize would give ~1e-2
    assert (x - y).abs().mean() < 2e-3 and (x - y).abs().max() < 0.05
    a = embed_images(m, ds, tmp_path / "c", workers=0)
    b = embed_images(m, ds, tmp_path / "c", pipeline="tensor")
    assert b.computed == len(b.indices)  # not served from the PIL path's cache
    assert np.array_equal(a.indices, b.indices) and len(b.indices) == 7  # CMYK handled (PIL fallback)
    cos = (a.embeddings * b.embeddings).sum(1) / np.linalg.norm(a.embeddings, axis=1) / np.linalg.norm(
        b.embeddings, axis=1)
    assert cos.min() > 0.9999  # measured 0.9999996
    assert [Path(f[1]).name for f in b.failures] == ["broken.jpg"]


def test_tensor_preprocess_batches_by_size_with_per_image_results():
    """Same-size images are resized in one call; the result must equal resizing each image alone, in order."""
    import torch

    from cliplab.embed.tensor_pipeline import TensorPreprocess

    prep = TensorPreprocess((64, 64), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    g = torch.Generator().manual_seed(0)
    shapes = [(32, 32), (480, 640), (32, 32), (300, 200), (480, 640), (32, 32)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in shapes]
    got = prep.batch(images, "cpu")
    mean, std = torch.tensor(prep.mean).view(3, 1, 1), torch.tensor(prep.std).view(3, 1, 1)
    want = torch.stack([(prep.one(im).float() / 255.0 - mean) / std for im in images])
    assert got.shape == (6, 3, 64, 64) and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got[0], got[2])  # distinct images kept apart (no mix-up within a size group)


def test_shards_are_also_flushed_by_time(tiny, tmp_path):
    """A slow model must not hold 16 batches in memory: a shard is written once flush_seconds have passed (a fake
    clock advancing 40 s per reading stands in for slow batches), and the shards give the same embeddings."""
    ds = open_dataset(str(_folder(tmp_path / "imgs", 24)))
    readings = iter(range(0, 100_000, 40))
    res = embed_images(tiny, ds, tmp_path / "c", batch_size=4, shard_batches=1000, flush_seconds=30.0,
                       workers=0, clock=lambda: next(readings))
    shards = EmbeddingCache(tmp_path / "c", tiny.fingerprint, "image").shards()
    assert res.computed == 24 and len(shards) == 6  # one shard per 4-image batch, not one at the end
    with np.load(shards[0]) as z:
        assert len(z["keys"]) == 4
    by_count = embed_images(tiny, ds, tmp_path / "c2", batch_size=4, shard_batches=1000, workers=0)
    assert len(EmbeddingCache(tmp_path / "c2", tiny.fingerprint, "image").shards()) == 1  # fast: one shard at the end
    assert np.array_equal(res.embeddings, by_count.embeddings)
    # 10 s per batch: the write happens when the next batch would end past 30 s since the last one, so no shard
    # holds more than 30 s of work (2 batches here; waiting for 30 s to pass would make 3-batch, 30 s shards)
    ticks = iter(range(0, 100_000, 10))
    embed_images(tiny, ds, tmp_path / "c3", batch_size=4, shard_batches=1000, flush_seconds=30.0, workers=0,
                 clock=lambda: next(ticks))
    shards = EmbeddingCache(tmp_path / "c3", tiny.fingerprint, "image").shards()
    assert sorted(len(np.load(p)["keys"]) for p in shards) == [8, 8, 8]


@pytest.mark.parametrize("side", [21_000, 30_000])  # 441 MP: PIL's warning; 900 MP: PIL's error (its limit x 2)
def test_large_image_limit_is_one_number(tmp_path, side):
    """Regression: a 900 MP image was refused with PIL's '800000000 pixels' while the README says 400 MP."""
    from cliplab.data.imageio import MAX_MEGAPIXELS, BadImage, open_rgb

    _huge_png(tmp_path / "huge.png", side, side)
    with pytest.raises(BadImage) as info:
        open_rgb(str(tmp_path / "huge.png"))
    assert f"{side * side:,} pixels; the limit is 400 MP" in str(info.value) and "800" not in str(info.value)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert MAX_MEGAPIXELS == 400 and "over 400 MP" in readme
