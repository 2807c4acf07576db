"""The tensor pipeline reads files as the PIL path does: alpha composited on white with PIL's rounding, and the
same files skipped for the same reasons (empty, truncated, not an image, too large, extreme aspect ratio)."""
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bombs import write_bombs
from conftest import make_image
from cliplab.data import open_dataset
from cliplab.embed import embed_images
from cliplab.embed.tensor_pipeline import JPEG, PIL_PATH, PNG, PNG_ALPHA, header, on_white
from cliplab.models import open_model


@pytest.fixture()
def tiny(tiny_checkpoint, tmp_path):
    cfg, ckpt, _ = tiny_checkpoint
    return open_model(str(cfg), str(ckpt), device="cpu", cache_dir=tmp_path / "c")


def test_on_white_equals_pils_alpha_composite_for_every_colour_and_alpha():
    c, a = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    rgba = np.stack([c, 255 - c, c // 2, a], -1)
    img = Image.fromarray(rgba, "RGBA")
    want = np.asarray(Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB"))
    got = on_white(torch.from_numpy(rgba).permute(2, 0, 1).contiguous(), rows=37)
    assert np.array_equal(got.permute(1, 2, 0).numpy(), want)


def _png(img: Image.Image, **save) -> torch.Tensor:
    buf = io.BytesIO()
    img.save(buf, format=save.pop("format", "PNG"), **save)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def _palette_with_transparency(size=(8, 8)) -> Image.Image:
    img = Image.new("P", size, 1)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    return img


# (what, file bytes, how the tensor pipeline reads it)
HEADERS = [
    ("RGB JPEG", lambda: _png(Image.new("RGB", (9, 7)), format="JPEG"), JPEG),
    ("grey JPEG", lambda: _png(Image.new("L", (9, 7)), format="JPEG"), JPEG),
    ("CMYK JPEG", lambda: _png(Image.new("CMYK", (9, 7)), format="JPEG"), PIL_PATH),
    ("RGB PNG", lambda: _png(Image.new("RGB", (9, 7))), PNG),
    ("RGB PNG with a transparent colour", lambda: _png(Image.new("RGB", (9, 7)), transparency=(1, 2, 3)), PNG),
    ("palette PNG", lambda: _png(Image.new("P", (9, 7))), PNG),
    ("palette PNG with transparency", lambda: _png(_palette_with_transparency(), transparency=0), PIL_PATH),
    ("RGBA PNG", lambda: _png(Image.new("RGBA", (9, 7))), PNG_ALPHA),
    ("LA PNG", lambda: _png(Image.new("LA", (9, 7))), PNG_ALPHA),
    ("16-bit PNG", lambda: _png(Image.fromarray(np.zeros((7, 9), np.uint16))), PIL_PATH),
    ("GIF", lambda: _png(Image.new("P", (9, 7)), format="GIF"), PIL_PATH),
    ("WebP", lambda: _png(Image.new("RGBA", (9, 7)), format="WEBP"), PIL_PATH),
    ("empty", lambda: torch.zeros(0, dtype=torch.uint8), PIL_PATH),
    ("text", lambda: torch.frombuffer(bytearray(b"not an image at all"), dtype=torch.uint8), PIL_PATH),
]


@pytest.mark.parametrize("what, data, how", HEADERS, ids=[h[0] for h in HEADERS])
def test_header_sends_what_torchvision_cannot_read_exactly_to_the_pil_path(what, data, how):
    assert header(data())[2] == how


def _transparent_pngs(folder: Path) -> list[Path]:
    """Transparent PNGs whose hidden pixels are coloured (dropping alpha shows them; PIL shows white)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    alpha = np.zeros((70, 90), np.uint8)
    alpha[20:50, 25:65] = 255
    alpha[:, :10] = np.linspace(0, 255, 70, dtype=np.uint8)[:, None]  # partial transparency too
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(folder / "rgba.png")
    Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA").save(folder / "la.png")
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.save(folder / "palette.png", transparency=int(np.asarray(pal)[0, 0]))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(folder / "alpha.webp", lossless=True)
    return sorted(folder.iterdir())


def test_transparent_images_embed_alike_in_both_pipelines(tiny, tmp_path):
    """Regression: the tensor pipeline dropped alpha (the hidden colours, black where they are black) while the PIL
    path composites on white: cosine 0.987 between the pipelines on a transparent PNG."""
    _transparent_pngs(tmp_path / "imgs")
    ds = open_dataset(str(tmp_path / "imgs"))
    a = embed_images(tiny, ds, tmp_path / "c", workers=0, pipeline="pil")
    b = embed_images(tiny, ds, tmp_path / "c", pipeline="tensor")
    assert len(a.indices) == len(b.indices) == 4 and not a.failures and not b.failures
    cos = (a.embeddings * b.embeddings).sum(1) / np.linalg.norm(a.embeddings, axis=1) / np.linalg.norm(
        b.embeddings, axis=1)
    assert cos.min() >= 0.99999, dict(zip((Path(p).name for p in ds.paths), cos))


def _truncated(path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(buf, format=fmt)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])


def test_bad_files_are_skipped_with_the_same_reasons_in_both_pipelines(tiny, tmp_path):
    """Regression: a zero-byte file ended a --pipeline tensor run (torch.frombuffer raised in the reading thread)
    that the PIL path finishes, skipping the file."""
    d = tmp_path / "mixed"
    for i in range(3):
        make_image(d / f"good{i}.jpg", fmt="JPEG")
    make_image(d / "good.png")
    (d / "empty.jpg").write_bytes(b"")
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("this is text, not a PNG")
    _truncated(d / "truncated.jpg", "JPEG")
    _truncated(d / "truncated.png", "PNG")
    write_bombs(d)
    ds = open_dataset(str(d))
    runs = {pipeline: embed_images(tiny, ds, tmp_path / "c", pipeline=pipeline, workers=0)
            for pipeline in ("pil", "tensor")}
    reasons = {p: {Path(i).name: r for _, i, r in res.failures} for p, res in runs.items()}
    assert reasons["pil"] == reasons["tensor"]
    assert set(reasons["pil"]) == {"empty.jpg", "empty.png", "text.png", "truncated.jpg", "truncated.png",
                                   "wide.png", "tall.png", "declared-huge.png", "sixteen-bit-huge.png",
                                   "rgba-huge.png"}
    assert "empty file" in reasons["pil"]["empty.jpg"] and "truncated" in reasons["pil"]["truncated.png"]
    assert "extreme aspect ratio" in reasons["pil"]["wide.png"]
    assert "too large to decode" in reasons["pil"]["sixteen-bit-huge.png"]
    ok = [{Path(ds.paths[i]).name for i in res.indices} for res in runs.values()]
    assert ok[0] == ok[1] == {"good0.jpg", "good1.jpg", "good2.jpg", "good.png", "panorama.png"}
